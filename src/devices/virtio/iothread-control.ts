// What every virtio I/O thread (a worker_thread that owns a device's
// queues while the driver runs: net-iothread.ts, blk-iothread.ts) shares
// with the device thread that started it: a control block in a
// SharedArrayBuffer, the notify eventfd, and the start/stop handshake.
//
// Control block: word STATE (IOTHREAD_STATE.*), IRQ (queue interrupts the
// thread asked for since the device thread last looked; each device says
// whether it is a bit per queue or a count), BROKEN and REASON_LEN (the
// device needs a reset, or the worker could not start: the reason's UTF-8
// bytes follow the words), then words of the device's own counters from
// IOTHREAD_FIRST_COUNTER.
//
// Starting: the worker loads, maps guest RAM, then moves STATE from
// STARTING to RUNNING (it owns the queues) unless the device thread has
// already asked it to STOP; a worker that fails before that ends FAILED
// and the device thread serves the queues itself.
// Stopping (reset, close): the device thread sets STOP, writes the
// eventfd and waits until the worker says STOPPED, so no request is
// half-done and guest memory is no longer touched when the transport
// resets the queues.

import { Worker } from 'node:worker_threads';
import type { HelperThreadData } from '../device.js';
import { DEVICE_REQUEST, Doorbell } from '../../sys/doorbell.js';
import { closeFd, eventfd, eventfdWrite } from '../../sys/eventfd.js';
import type { GuestMemory } from '../../sys/guest-memory.js';
import { openGuestMemory } from '../../sys/guest-ram.js';

/** Words of the control block every I/O thread has. */
export const IOTHREAD_WORD = {
  /** IOTHREAD_STATE.* */
  STATE: 0,
  /** Queue interrupts asked for since the device thread last looked. */
  IRQ: 1,
  /** Nonzero once the device needs a reset; reason after the words. */
  BROKEN: 2,
  REASON_LEN: 3,
} as const;
/** The first word a device may use for its own counters. */
export const IOTHREAD_FIRST_COUNTER = 4;
export const IOTHREAD_STATE = { STARTING: 0, RUNNING: 1, STOP: 2, STOPPED: 3, FAILED: 4 } as const;
const CONTROL_WORDS = 16;
const REASON_OFF = CONTROL_WORDS * 4;
const REASON_MAX = 512;

/** What the device thread adds to the worker's data. */
export interface IothreadChannel {
  control: SharedArrayBuffer;
  notifyFd: number;
  /** Where dist/bundle/loader.cjs reports a worker whose module could not
   * load (STARTING -> FAILED with the reason): see WorkerLoadFailure. */
  loadFailure: WorkerLoadFailure;
}

/** scripts/bundle-loader.cjs's reportLoadFailure: where in `sab` a worker
 * that could not load writes why, and the state word it moves. */
export interface WorkerLoadFailure {
  sab: SharedArrayBuffer;
  stateWord: number;
  from: number;
  to: number;
  reasonOffset: number;
  reasonMax: number;
  reasonLenWord: number;
  flagWord?: number;
}

/** Records why the device needs a reset (or why the worker could not
 * start) and sets BROKEN. */
export function writeIothreadReason(control: SharedArrayBuffer, reason: string): void {
  const w = new Int32Array(control);
  const b = Buffer.from(reason, 'utf8').subarray(0, REASON_MAX);
  new Uint8Array(control, REASON_OFF, REASON_MAX).set(b);
  Atomics.store(w, IOTHREAD_WORD.REASON_LEN, b.length);
  Atomics.store(w, IOTHREAD_WORD.BROKEN, 1);
}

function readReason(control: SharedArrayBuffer): string {
  const n = Atomics.load(new Int32Array(control), IOTHREAD_WORD.REASON_LEN);
  return Buffer.from(new Uint8Array(control, REASON_OFF, n)).toString('utf8');
}

/** The device thread's handle on a running I/O thread. */
export class IothreadHandle {
  readonly notifyFd: number;
  protected readonly control = new SharedArrayBuffer(REASON_OFF + REASON_MAX);
  protected readonly words = new Int32Array(this.control);
  private worker: Worker | undefined;
  private stopped = false;

  /** Starts `workerUrl` with `data` plus the control block and the notify
   * eventfd (IothreadChannel). */
  constructor(workerUrl: URL, data: object) {
    this.notifyFd = eventfd();
    const loadFailure: WorkerLoadFailure = {
      sab: this.control, stateWord: IOTHREAD_WORD.STATE, from: IOTHREAD_STATE.STARTING, to: IOTHREAD_STATE.FAILED,
      reasonOffset: REASON_OFF, reasonMax: REASON_MAX, reasonLenWord: IOTHREAD_WORD.REASON_LEN, flagWord: IOTHREAD_WORD.BROKEN,
    };
    const full: IothreadChannel = { ...data, control: this.control, notifyFd: this.notifyFd, loadFailure };
    try {
      this.worker = new Worker(workerUrl, { workerData: full, stdout: false, stderr: false });
    } catch (e) {
      closeFd(this.notifyFd);
      throw e;
    }
    // The device thread does not return to its event loop while the guest
    // runs: the worker reports through the control block only (FAILED
    // when it could not start; the bundle loader writes that for a module
    // that could not load, and the transport looks while it is STARTING:
    // virtio-pci.ts). Where the loop does run (shutdown, tests), an error
    // that ended the worker before it took the queues is recorded too,
    // rather than thrown from an unhandled 'error' event.
    this.worker.on('error', (e) => {
      if (this.state !== IOTHREAD_STATE.STARTING) return;
      const b = Buffer.from(`I/O thread: ${e instanceof Error ? e.message : String(e)}`, 'utf8').subarray(0, REASON_MAX);
      new Uint8Array(this.control, REASON_OFF, REASON_MAX).set(b);
      Atomics.store(this.words, IOTHREAD_WORD.REASON_LEN, b.length);
      if (Atomics.compareExchange(this.words, IOTHREAD_WORD.STATE, IOTHREAD_STATE.STARTING, IOTHREAD_STATE.FAILED) === IOTHREAD_STATE.STARTING) {
        Atomics.store(this.words, IOTHREAD_WORD.BROKEN, 1);
      }
    });
    this.worker.unref();
  }

  /** True while the worker is loading (it has neither taken the queues nor
   * failed): the device thread must look again later, as a worker that
   * cannot load cannot ring it (virtio-pci.ts OffloadStartWatch). */
  get starting(): boolean { return this.state === IOTHREAD_STATE.STARTING; }

  /** Hands a notify that reached the device thread to the I/O thread. */
  notify(): void {
    if (!this.stopped) eventfdWrite(this.notifyFd);
  }

  get state(): number { return Atomics.load(this.words, IOTHREAD_WORD.STATE); }

  /** The device's counter word `i` (IOTHREAD_FIRST_COUNTER and up). */
  protected counter(i: number): number { return Atomics.load(this.words, i); }

  /** Queue interrupts requested since the last call. */
  takeInterrupts(): number { return Atomics.exchange(this.words, IOTHREAD_WORD.IRQ, 0); }

  /** The thread's needs-reset reason, once it has one (not for a worker
   * that failed before taking the queues: see failedToStart). */
  brokenReason(): string | undefined {
    if (this.failedToStart) return undefined;
    return Atomics.load(this.words, IOTHREAD_WORD.BROKEN) ? readReason(this.control) : undefined;
  }

  /** Why the worker could not start. */
  startError(): string { return readReason(this.control); }

  /** True when the worker never took the queues (it could not start): the
   * device thread serves them itself. */
  get failedToStart(): boolean {
    return this.state === IOTHREAD_STATE.FAILED;
  }

  /** Stops the thread and waits until it no longer touches the queues or
   * guest memory (bounded: a worker stuck in the kernel is abandoned after
   * `timeoutMs`). */
  stop(timeoutMs = 10_000): void {
    if (this.stopped) return;
    this.stopped = true;
    const w32 = this.words;
    const S = IOTHREAD_STATE;
    const deadline = Date.now() + timeoutMs;
    let stillLoading = false;
    for (;;) {
      const s = Atomics.compareExchange(w32, IOTHREAD_WORD.STATE, S.STARTING, S.STOP);
      if (s === S.STARTING) { stillLoading = true; break; } // it sees STOP before taking the queues
      if (s === S.STOPPED || s === S.FAILED) break;
      if (s === S.RUNNING) {
        if (Atomics.compareExchange(w32, IOTHREAD_WORD.STATE, S.RUNNING, S.STOP) !== S.RUNNING) continue;
      }
      eventfdWrite(this.notifyFd);
      while (Atomics.load(w32, IOTHREAD_WORD.STATE) === S.STOP && Date.now() < deadline) {
        Atomics.wait(w32, IOTHREAD_WORD.STATE, S.STOP, 50);
      }
      break;
    }
    const w = this.worker;
    this.worker = undefined;
    // Node 20 aborts the process when a worker is terminated during koffi's
    // initialisation: one still loading is left to see STOP and end itself.
    if (!stillLoading) void w?.terminate().catch(() => undefined);
    // A worker that never acknowledged may still read the eventfd: its
    // number is not released for reuse under it.
    if (this.state !== S.STOP) closeFd(this.notifyFd);
  }
}

/** The worker's side of the control block. */
export class IothreadWorkerControl {
  readonly words: Int32Array;
  /** Set once this thread owns the queues: after that a failure is the
   * device's (needs-reset), not a reason for the device thread to take
   * over. */
  took = false;

  constructor(readonly control: SharedArrayBuffer) {
    this.words = new Int32Array(control);
  }

  /** STARTING -> RUNNING: false when the device thread asked to stop
   * first (the worker then ends STOPPED). */
  take(): boolean {
    const S = IOTHREAD_STATE;
    if (Atomics.compareExchange(this.words, IOTHREAD_WORD.STATE, S.STARTING, S.RUNNING) !== S.STARTING) {
      this.finish(S.STOPPED);
      return false;
    }
    this.took = true;
    return true;
  }

  get running(): boolean { return Atomics.load(this.words, IOTHREAD_WORD.STATE) === IOTHREAD_STATE.RUNNING; }

  fail(reason: string): void { writeIothreadReason(this.control, reason); }

  add(word: number, n: number): void { if (n !== 0) Atomics.add(this.words, word, n); }

  finish(state: number): void {
    Atomics.store(this.words, IOTHREAD_WORD.STATE, state);
    Atomics.notify(this.words, IOTHREAD_WORD.STATE);
  }

  /** For the worker's top-level catch: the reason, then FAILED before the
   * queues were taken, STOPPED after. */
  crashed(reason: string): void {
    this.fail(reason);
    this.finish(this.took ? IOTHREAD_STATE.STOPPED : IOTHREAD_STATE.FAILED);
  }
}

/** The worker's mapping of guest RAM (the VM's memory file). */
export function mapWorkerGuestMemory(helper: HelperThreadData): GuestMemory {
  return openGuestMemory(helper.memoryPath, helper.layout);
}

/** Rings the device thread (DEVICE_REQUEST.POLL); a no-op without a vCPU
 * to ring (unit tests' noKick). */
export function deviceThreadKick(helper: HelperThreadData, noKick: boolean | undefined): () => void {
  if (noKick) return () => {};
  const doorbell = Doorbell.attach(helper.doorbell);
  return () => doorbell.ring(DEVICE_REQUEST.POLL);
}
