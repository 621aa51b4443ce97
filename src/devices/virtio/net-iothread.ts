// virtio-net's I/O thread: a worker_thread that owns the receive queue
// (and with iothread_tx=true the transmit queue) and reading the backend's
// descriptor (the tap, or slirp's packet socket) while the driver runs
// (DRIVER_OK until reset). It blocks in poll(2) on two descriptors at once:
//
//   guest notify on its queues (MMIO write to a notify address)
//     -> KVM_IOEVENTFD signals the notify eventfd inside the kernel; the
//        vCPU goes straight back into the guest, no exit to userspace
//   a frame arrives on the tap
//     -> the tap fd turns readable
//   -> the thread wakes, sends what the transmit queue holds if it has it
//      (one writev per frame) and reads the tap into the receive buffers in
//      guest RAM (its
//      own mapping of the VM's memory file), pushes the used entries, and
//      polls again.
//
// The device model is the same VirtioNet the device thread runs otherwise,
// so notification suppression (receive notifications wanted only while a
// frame waits for buffers, EVENT_IDX) and the needs-reset checks on guest
// input are the same code. While a frame waits for buffers the tap is left
// out of the poll set (else it would stay readable and the thread would
// spin); the driver's notify when it adds buffers resumes receiving.
//
// Interrupts and errors go back to the device thread, which owns the
// transport's interrupt state (ISR, MSI-X vectors, masks, pending bits): the
// thread ORs the queue's bit into a shared word and kicks the device thread
// (DEVICE_REQUEST.POLL); VirtioNet.poll() raises those queue interrupts or
// enters DEVICE_NEEDS_RESET with the thread's reason. A driver that polls
// its used rings (NO_INTERRUPT, used_event) costs no kick at all.
//
// Without iothread_tx the device thread keeps the transmit queue and writes
// frames to the same descriptor on each transmit notify exit: the queues
// are independent, and a tap takes writes from any thread.
//
// Notifies that still reach the device thread (a legacy I/O-port notify, a
// host without ioeventfd for that address) are forwarded by writing the
// same eventfd. Stopping (reset, close): the device thread sets STOP, writes
// the eventfd and waits until the thread has left its loop, so guest memory
// and the queues are no longer touched when the transport resets them.

import { Worker } from 'node:worker_threads';
import type { HelperThreadData } from '../device.js';
import { closeFd, eventfd, eventfdWrite } from '../../sys/eventfd.js';
import type { VirtqueueLayout } from './virtqueue.js';

/** Words of the shared control block. */
export const NIOT = {
  /** NIOT_STATE.* */
  STATE: 0,
  /** Bit per queue: interrupts the thread asked for since the device thread
   * last looked. */
  IRQ: 1,
  /** Nonzero once the device needs a reset; reason at REASON_OFF. */
  BROKEN: 2,
  REASON_LEN: 3,
  /** Frames moved by the thread (diagnostics, tests). */
  RX_FRAMES: 4,
  TX_FRAMES: 5,
  /** Returns from poll(2). */
  WAKEUPS: 6,
} as const;
export const NIOT_STATE = { STARTING: 0, RUNNING: 1, STOP: 2, STOPPED: 3, FAILED: 4 } as const;
const CONTROL_WORDS = 16;
const REASON_OFF = CONTROL_WORDS * 4;
const REASON_MAX = 512;

/** The device model's options, as the thread rebuilds it. */
export interface NetIothreadDevice {
  mac: Uint8Array;
  mtu?: number;
}

/** Everything the worker gets, structured-clonable. */
export interface NetIothreadData {
  helper: HelperThreadData;
  control: SharedArrayBuffer;
  notifyFd: number;
  /** The tap fd or slirp's packet socket (non-blocking). */
  netFd: number;
  device: NetIothreadDevice;
  /** The transmit queue is the thread's too (else only the receive queue:
   * the device thread sends on each transmit notify exit). */
  transmit: boolean;
  ackedFeatures: bigint;
  queueMaxSizes: number[];
  layouts: Array<VirtqueueLayout | null>;
  /** For unit tests: do not kick the device thread (no vCPU to kick). */
  noKick?: boolean;
}

export function writeNetReason(control: SharedArrayBuffer, reason: string): void {
  const w = new Int32Array(control);
  const b = Buffer.from(reason, 'utf8').subarray(0, REASON_MAX);
  new Uint8Array(control, REASON_OFF, REASON_MAX).set(b);
  Atomics.store(w, NIOT.REASON_LEN, b.length);
  Atomics.store(w, NIOT.BROKEN, 1);
}

function readReason(control: SharedArrayBuffer): string {
  const n = Atomics.load(new Int32Array(control), NIOT.REASON_LEN);
  return Buffer.from(new Uint8Array(control, REASON_OFF, n)).toString('utf8');
}

/** The device thread's handle on a running I/O thread. */
export class NetIothread {
  readonly notifyFd: number;
  private readonly control = new SharedArrayBuffer(REASON_OFF + REASON_MAX);
  private readonly words = new Int32Array(this.control);
  private worker: Worker | undefined;
  private stopped = false;

  constructor(data: Omit<NetIothreadData, 'control' | 'notifyFd'>, workerUrl: URL = new URL('./net-iothread-worker.js', import.meta.url)) {
    this.notifyFd = eventfd();
    const full: NetIothreadData = { ...data, control: this.control, notifyFd: this.notifyFd };
    try {
      this.worker = new Worker(workerUrl, { workerData: full, stdout: false, stderr: false });
    } catch (e) {
      closeFd(this.notifyFd);
      throw e;
    }
    // The device thread does not return to its event loop while the guest
    // runs: the worker reports through the control block only.
    this.worker.unref();
  }

  /** Hands a notify that reached the device thread to the I/O thread. */
  notify(): void {
    if (!this.stopped) eventfdWrite(this.notifyFd);
  }

  get state(): number { return Atomics.load(this.words, NIOT.STATE); }
  get rxFrames(): number { return Atomics.load(this.words, NIOT.RX_FRAMES); }
  get txFrames(): number { return Atomics.load(this.words, NIOT.TX_FRAMES); }
  get wakeups(): number { return Atomics.load(this.words, NIOT.WAKEUPS); }

  /** Queue interrupts requested since the last call, a bit per queue. */
  takeInterrupts(): number { return Atomics.exchange(this.words, NIOT.IRQ, 0); }

  /** The thread's needs-reset reason, once it has one. */
  brokenReason(): string | undefined {
    if (this.failedToStart) return undefined;
    return Atomics.load(this.words, NIOT.BROKEN) ? readReason(this.control) : undefined;
  }

  /** Why the worker could not start. */
  startError(): string { return readReason(this.control); }

  /** True when the worker never took the queues: the device thread serves
   * them itself. */
  get failedToStart(): boolean {
    return this.state === NIOT_STATE.FAILED;
  }

  /** Stops the thread and waits until it no longer touches the queues,
   * guest memory or the tap (bounded: a worker stuck in the kernel is
   * abandoned after `timeoutMs`). */
  stop(timeoutMs = 10_000): void {
    if (this.stopped) return;
    this.stopped = true;
    const deadline = Date.now() + timeoutMs;
    let stillLoading = false;
    for (;;) {
      const s = Atomics.compareExchange(this.words, NIOT.STATE, NIOT_STATE.STARTING, NIOT_STATE.STOP);
      if (s === NIOT_STATE.STARTING) { stillLoading = true; break; } // it sees STOP before taking the queues
      if (s === NIOT_STATE.STOPPED || s === NIOT_STATE.FAILED) break;
      if (s === NIOT_STATE.RUNNING) {
        if (Atomics.compareExchange(this.words, NIOT.STATE, NIOT_STATE.RUNNING, NIOT_STATE.STOP) !== NIOT_STATE.RUNNING) continue;
      }
      eventfdWrite(this.notifyFd);
      while (Atomics.load(this.words, NIOT.STATE) === NIOT_STATE.STOP && Date.now() < deadline) {
        Atomics.wait(this.words, NIOT.STATE, NIOT_STATE.STOP, 50);
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
    if (this.state !== NIOT_STATE.STOP) closeFd(this.notifyFd);
  }
}
