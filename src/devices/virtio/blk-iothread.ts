// virtio-blk's iothread: a worker_thread that owns the device's request
// queue while the driver runs (DRIVER_OK until reset), so that neither the
// notify nor the disk I/O holds up a vCPU.
//
//   guest notify (MMIO write to the queue's notify address)
//     -> KVM_IOEVENTFD: the kernel signals an eventfd; the vCPU goes straight
//        back into the guest, no exit to userspace
//     -> the iothread, blocked in read() on that eventfd, wakes, pops every
//        available chain, does the preadv/pwritev straight between the image
//        and guest RAM (its own mapping of the VM's memory file), pushes the
//        used entries, and sleeps again.
//
// Notifies that still reach the device thread (a legacy I/O-port notify, a
// BAR the guest moved after DRIVER_OK, a host without ioeventfd) are
// forwarded by writing the same eventfd, so the iothread is the only
// consumer of the queue either way.
//
// Interrupts and errors go back to the device thread, which owns the
// transport's interrupt state (ISR, MSI-X vectors, masks, pending bits): the
// iothread bumps a counter in shared memory and kicks the device thread
// (DEVICE_REQUEST.POLL, as host backends do); VirtioBlock.poll() raises the
// queue interrupt or enters DEVICE_NEEDS_RESET with the iothread's reason.
// Guests that poll the used ring (and set VIRTQ_AVAIL_F_NO_INTERRUPT or use
// event idx) cost no kick at all.
//
// Stopping (reset, close): the device thread sets STOP, writes the eventfd
// and waits (Atomics.wait) until the iothread says it has left its loop, so
// no request is half-done and guest memory is no longer touched when the
// transport resets the queues.

import { Worker } from 'node:worker_threads';
import type { HelperThreadData } from '../device.js';
import { closeFd, eventfd, eventfdWrite } from '../../sys/eventfd.js';
import type { BlockOptions } from './virtio-blk.js';
import type { VirtqueueLayout } from './virtqueue.js';

/** Words of the shared control block. */
export const IOT = {
  /** IOT_STATE_* */
  STATE: 0,
  /** Queue interrupts the iothread asked for since the device thread last looked. */
  IRQ: 1,
  /** Nonzero once the iothread's device needs a reset; reason at REASON_OFF. */
  BROKEN: 2,
  REASON_LEN: 3,
  /** Requests the iothread completed (diagnostics, tests). */
  COMPLETED: 4,
  /** Wake-ups of the iothread (eventfd reads). */
  WAKEUPS: 5,
  /** Batches the iothread found by spinning on the ring (no wake-up). */
  POLL_HITS: 6,
} as const;
export const IOT_STATE = { STARTING: 0, RUNNING: 1, STOP: 2, STOPPED: 3, FAILED: 4 } as const;
const CONTROL_WORDS = 16;
const REASON_OFF = CONTROL_WORDS * 4;
const REASON_MAX = 512;

/** Everything the iothread worker gets, structured-clonable. */
export interface IothreadData {
  helper: HelperThreadData;
  control: SharedArrayBuffer;
  notifyFd: number;
  imageFd: number;
  imageSize: number;
  options: BlockOptions;
  ackedFeatures: bigint;
  queueMaxSizes: number[];
  layouts: Array<VirtqueueLayout | null>;
  /** Longest window, in microseconds, the iothread spins on the avail
   * ring before it blocks on the eventfd (adaptive-poll.ts; 0: never). */
  pollUs?: number;
  /** Batches without polling after a preempted spin (adaptive-poll.ts
   * HOLD_OFF when absent; unit tests on a loaded host use 0). */
  pollHoldOff?: number;
  /** For unit tests: do not kick the device thread (no vCPU to kick). */
  noKick?: boolean;
}

export function writeReason(control: SharedArrayBuffer, reason: string): void {
  const w = new Int32Array(control);
  const b = Buffer.from(reason, 'utf8').subarray(0, REASON_MAX);
  new Uint8Array(control, REASON_OFF, REASON_MAX).set(b);
  Atomics.store(w, IOT.REASON_LEN, b.length);
  Atomics.store(w, IOT.BROKEN, 1);
}

function readReason(control: SharedArrayBuffer): string {
  const n = Atomics.load(new Int32Array(control), IOT.REASON_LEN);
  return Buffer.from(new Uint8Array(control, REASON_OFF, n)).toString('utf8');
}

/** The device thread's handle on a running iothread. */
export class BlkIothread {
  readonly notifyFd: number;
  private readonly control = new SharedArrayBuffer(REASON_OFF + REASON_MAX);
  private readonly words = new Int32Array(this.control);
  private worker: Worker | undefined;
  private stopped = false;

  constructor(data: Omit<IothreadData, 'control' | 'notifyFd'>, workerUrl: URL = new URL('./blk-iothread-worker.js', import.meta.url)) {
    this.notifyFd = eventfd();
    const full: IothreadData = { ...data, control: this.control, notifyFd: this.notifyFd };
    try {
      this.worker = new Worker(workerUrl, { workerData: full, stdout: false, stderr: false });
    } catch (e) {
      closeFd(this.notifyFd);
      throw e;
    }
    // The device thread never returns to its event loop while the guest
    // runs, so nothing here waits for the worker's events: the worker
    // reports through the control block (FAILED when it could not start).
    this.worker.unref();
  }

  /** Hands a notify that reached the device thread to the iothread. */
  notify(): void {
    if (!this.stopped) eventfdWrite(this.notifyFd);
  }

  get state(): number { return Atomics.load(this.words, IOT.STATE); }
  get completed(): number { return Atomics.load(this.words, IOT.COMPLETED); }
  get wakeups(): number { return Atomics.load(this.words, IOT.WAKEUPS); }
  get pollHits(): number { return Atomics.load(this.words, IOT.POLL_HITS); }

  /** Queue interrupts requested since the last call. */
  takeInterrupts(): number { return Atomics.exchange(this.words, IOT.IRQ, 0); }

  /** The iothread's needs-reset reason, once it has one (not for a worker
   * that failed before taking the queue: see failedToStart). */
  brokenReason(): string | undefined {
    if (this.failedToStart) return undefined;
    return Atomics.load(this.words, IOT.BROKEN) ? readReason(this.control) : undefined;
  }

  /** Why the worker could not start. */
  startError(): string { return readReason(this.control); }

  /** True when the worker never took the queue (it could not start): the
   * device thread must process the queue itself. */
  get failedToStart(): boolean {
    return this.state === IOT_STATE.FAILED;
  }

  /** Stops the iothread and waits until it no longer touches the queue or
   * guest memory (bounded: a worker stuck in the kernel is abandoned after
   * `timeoutMs`). */
  stop(timeoutMs = 10_000): void {
    if (this.stopped) return;
    this.stopped = true;
    const deadline = Date.now() + timeoutMs;
    let stillLoading = false;
    for (;;) {
      const s = Atomics.compareExchange(this.words, IOT.STATE, IOT_STATE.STARTING, IOT_STATE.STOP);
      if (s === IOT_STATE.STARTING) { stillLoading = true; break; } // it will see STOP before taking the queue
      if (s === IOT_STATE.STOPPED || s === IOT_STATE.FAILED) break;
      if (s === IOT_STATE.RUNNING) {
        if (Atomics.compareExchange(this.words, IOT.STATE, IOT_STATE.RUNNING, IOT_STATE.STOP) !== IOT_STATE.RUNNING) continue;
      }
      eventfdWrite(this.notifyFd);
      while (Atomics.load(this.words, IOT.STATE) === IOT_STATE.STOP && Date.now() < deadline) {
        Atomics.wait(this.words, IOT.STATE, IOT_STATE.STOP, 50);
      }
      break;
    }
    const w = this.worker;
    this.worker = undefined;
    // A worker that may still be loading its modules is left to see STOP
    // and end by itself (it is unref'd): Node 20 aborts the process when a
    // worker is terminated during koffi's initialisation.
    if (!stillLoading) void w?.terminate().catch(() => undefined);
    // The worker may still be between its last read and exiting: keep the
    // fd number from being reused under it until the process ends only if
    // it never acknowledged.
    if (this.state !== IOT_STATE.STOP) closeFd(this.notifyFd);
  }
}
