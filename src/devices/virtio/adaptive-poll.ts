// How long an I/O thread spins on its queue before it sleeps on the notify
// eventfd: QEMU's adaptive aio polling (util/aio-posix.c,
// adjust_polling_time), per thread.
//
// Why: a thread asleep in read() costs every notify a wake-up (in KVM the
// vCPU's ioeventfd write wakes the sleeper, an IPI to the other CPU), and
// the request waits for the scheduler. While requests keep coming (queue
// depth 32, sequential streams) a short spin finds the next one with no
// wake-up at all, and the driver's notify finds no waiter. When they stop
// coming, spinning only burns a CPU, so the window follows what the thread
// saw: a wait that ended within the window leaves it alone, one that ended
// within the maximum doubles it (from 4 us), one longer than the maximum
// (an idle guest, or a loaded host where the thread waited for a CPU)
// shrinks it to 0, so an idle or starved device does not spin.
//
// Unlike QEMU, a spin that was preempted (a gap between two looks at the
// ring far longer than one look takes) also stops polling, for the next
// HOLD_OFF batches: the host's CPUs are all busy, and spinning would only
// take CPU time from the vCPU that is to produce the next request.

/** QEMU's first window when growing from 0. */
export const POLL_START_NS = 4000;
/** A gap this long inside a spin means the thread lost its CPU. */
export const PREEMPTED_NS = 200_000;
/** Batches served without polling after a preempted spin. */
export const HOLD_OFF = 256;

export class AdaptivePoll {
  /** The current spin window, ns (0: sleep at once). */
  windowNs = 0;

  /** Batches left before the window may grow again after a preemption. */
  private held = 0;

  /** `maxNs` 0 turns polling off; `holdOff`: batches without polling
   * after a preempted spin. */
  constructor(readonly maxNs: number, private readonly holdOff = HOLD_OFF) {}

  /** Records how long the thread waited (spin plus sleep) for its last
   * batch of work, and adjusts the window. */
  observe(waitedNs: number): void {
    if (this.maxNs <= 0) { this.windowNs = 0; return; }
    if (this.held > 0) { this.held--; this.windowNs = 0; return; }
    if (waitedNs <= this.windowNs) return; // the sweet spot
    if (waitedNs > this.maxNs) {
      this.windowNs = 0; // QEMU's default poll-shrink (0): stop polling
    } else if (this.windowNs < this.maxNs) {
      this.windowNs = Math.min(this.maxNs, this.windowNs === 0 ? POLL_START_NS : this.windowNs * 2);
    }
  }

  /** The spin lost its CPU: stop polling for `holdOff` batches. */
  preempted(): void {
    this.windowNs = 0;
    this.held = this.holdOff;
  }
}
