// Timers for device models (RTC periodic interrupt, HPET, ...). The device
// thread spends its time inside KVM_RUN and has no event loop of its own, so
// the main thread keeps the clock: a device arms a timer by writing its
// deadline into shared memory; the main thread waits on it (no polling) and,
// when the earliest deadline passes, kicks the device thread, which runs the
// callbacks of every expired timer. Deadlines are CLOCK_MONOTONIC
// nanoseconds (process.hrtime.bigint()), the same clock on every thread.

import type { DeviceTimer } from '../devices/device.js';

const MAX_TIMERS = 32;
const RECHECK_MS = 5;
/** Int32 words: [0] change counter; then per timer [armed]. */
const CHANGE = 0;
const HEADER = 1;

function layout(sab: SharedArrayBuffer): { words: Int32Array; deadlines: BigInt64Array } {
  return {
    words: new Int32Array(sab, 0, HEADER + MAX_TIMERS),
    deadlines: new BigInt64Array(sab, 8 * Math.ceil((4 * (HEADER + MAX_TIMERS)) / 8), MAX_TIMERS),
  };
}

export function createTimerTable(): SharedArrayBuffer {
  return new SharedArrayBuffer(8 * Math.ceil((4 * (HEADER + MAX_TIMERS)) / 8) + 8 * MAX_TIMERS);
}

/** Device-thread side: hands out timers and runs the expired ones. */
export class DeviceTimers {
  private readonly words: Int32Array;
  private readonly deadlines: BigInt64Array;
  private readonly callbacks: Array<() => void> = [];

  constructor(sab: SharedArrayBuffer) {
    ({ words: this.words, deadlines: this.deadlines } = layout(sab));
  }

  create(callback: () => void): DeviceTimer {
    const id = this.callbacks.length;
    if (id >= MAX_TIMERS) throw new RangeError(`more than ${MAX_TIMERS} device timers`);
    this.callbacks.push(callback);
    const changed = (): void => { Atomics.add(this.words, CHANGE, 1); Atomics.notify(this.words, CHANGE); };
    return {
      armAt: (deadlineNs: bigint) => {
        this.deadlines[id] = deadlineNs;
        Atomics.store(this.words, HEADER + id, 1);
        changed();
      },
      cancel: () => {
        if (Atomics.exchange(this.words, HEADER + id, 0) !== 0) changed();
      },
      now: () => process.hrtime.bigint(),
    };
  }

  /** Runs the callbacks of timers whose deadline has passed, earliest
   * deadline first (a late wake-up may find several expired). */
  runExpired(): void {
    const now = process.hrtime.bigint();
    const due: number[] = [];
    for (let id = 0; id < this.callbacks.length; id++) {
      if (Atomics.load(this.words, HEADER + id) !== 0 && this.deadlines[id] <= now) due.push(id);
    }
    if (due.length > 1) due.sort((a, b) => (this.deadlines[a] < this.deadlines[b] ? -1 : this.deadlines[a] > this.deadlines[b] ? 1 : a - b));
    let fired = false;
    for (const id of due) {
      // (an earlier callback may have cancelled or re-armed this one)
      if (Atomics.load(this.words, HEADER + id) === 0 || this.deadlines[id] > now) continue;
      Atomics.store(this.words, HEADER + id, 0);
      fired = true;
      this.callbacks[id]();
    }
    // Tell the main thread to look again (a callback that re-armed has
    // already done so; this covers one-shot timers).
    if (fired) { Atomics.add(this.words, CHANGE, 1); Atomics.notify(this.words, CHANGE); }
  }
}

/** Main-thread side: sleeps until the earliest armed deadline, then fires. */
export class DeviceTimerHost {
  private readonly words: Int32Array;
  private readonly deadlines: BigInt64Array;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(sab: SharedArrayBuffer, private readonly fire: () => void) {
    ({ words: this.words, deadlines: this.deadlines } = layout(sab));
  }

  start(): void {
    void this.watch();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    Atomics.add(this.words, CHANGE, 1);
    Atomics.notify(this.words, CHANGE);
  }

  private async watch(): Promise<void> {
    while (!this.stopped) {
      const seen = Atomics.load(this.words, CHANGE);
      this.schedule();
      const w = Atomics.waitAsync(this.words, CHANGE, seen);
      if (w.async) await w.value;
    }
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    let earliest: bigint | undefined;
    for (let id = 0; id < MAX_TIMERS; id++) {
      if (Atomics.load(this.words, HEADER + id) === 0) continue;
      const d = this.deadlines[id];
      if (earliest === undefined || d < earliest) earliest = d;
    }
    if (earliest === undefined) return;
    // Node's timers have millisecond granularity and may run up to 1 ms
    // early against hrtime: round up, plus one.
    const ms = Math.max(0, Math.ceil(Number(earliest - process.hrtime.bigint()) / 1e6) + 1);
    // On expiry the device thread runs the callbacks and bumps the change
    // counter, which brings us back here for the next deadline; the second
    // look covers a kick that found nothing expired yet.
    this.timer = setTimeout(() => {
      this.fire();
      this.timer = setTimeout(() => { if (!this.stopped) this.schedule(); }, RECHECK_MS);
    }, ms);
  }
}
