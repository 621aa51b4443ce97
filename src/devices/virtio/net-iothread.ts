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
// Queue interrupts, with MSI-X in use and KVM irqfds (irqfd=true, the
// default), go straight to KVM: the thread writes the queue's eventfd,
// which the transport wired to the vector's MSI route and keeps in step
// with the guest's table and masks (queue-irqfd.ts). Otherwise (MSI,
// INTx, irqfd=false) and for errors the thread goes through the device
// thread, which owns the transport's interrupt state (ISR, MSI/INTx): it
// ORs the queue's bit into a shared word and kicks the device thread
// (DEVICE_REQUEST.POLL); VirtioNet.poll() raises those queue interrupts or
// enters DEVICE_NEEDS_RESET with the thread's reason. A driver that polls
// its used rings (NO_INTERRUPT, used_event) costs neither.
//
// With iothread_tx=false (the default) the device thread keeps the transmit
// queue and writes frames to the same descriptor on each transmit notify
// exit: the queues are independent, and a tap takes writes from any thread.
// With switch the queue moves between the two while the driver
// runs (net-tx-handover.ts), its notifies exiting and forwarded here while
// it is this thread's, or routed here by an ioeventfd the device thread
// registers while the direction keeps the queue here.
//
// Notifies that still reach the device thread (a legacy I/O-port notify, a
// host without ioeventfd for that address) are forwarded by writing the
// same eventfd. Starting and stopping: iothread-control.ts.

import type { HelperThreadData } from '../device.js';
import {
  IOTHREAD_FIRST_COUNTER, IOTHREAD_STATE, IOTHREAD_WORD, IothreadHandle, writeIothreadReason, type IothreadChannel,
} from './iothread-control.js';
import type { VirtqueueLayout } from './virtqueue.js';
import type { QueueIrqfdChannel } from './queue-irqfd.js';

/** Words of the shared control block (iothread-control.ts, then ours). */
export const NIOT = {
  ...IOTHREAD_WORD,
  /** Frames moved by the thread (diagnostics, tests). */
  RX_FRAMES: IOTHREAD_FIRST_COUNTER,
  TX_FRAMES: IOTHREAD_FIRST_COUNTER + 1,
  /** Returns from poll(2). */
  WAKEUPS: IOTHREAD_FIRST_COUNTER + 2,
} as const;
export const NIOT_STATE = IOTHREAD_STATE;

/** The device model's options, as the thread rebuilds it. */
export interface NetIothreadDevice {
  mac: Uint8Array;
  mtu?: number;
  zeroCopy?: boolean;
  batchIo?: boolean;
}

/** Everything the worker gets, structured-clonable. */
export interface NetIothreadData extends IothreadChannel {
  helper: HelperThreadData;
  /** The tap fd or slirp's packet socket (non-blocking). */
  netFd: number;
  device: NetIothreadDevice;
  /** The transmit queue is the thread's too (else only the receive queue:
   * the device thread sends on each transmit notify exit). */
  transmit: boolean;
  /** iothread_tx=switch: the transmit queue is the thread's while this
   * block says so (net-tx-handover.ts); its notifies come forwarded. */
  txHandover?: SharedArrayBuffer;
  ackedFeatures: bigint;
  queueMaxSizes: number[];
  layouts: Array<VirtqueueLayout | null>;
  /** Microseconds the thread watches the avail ring for receive buffers
   * while a frame waits for them, before it sleeps (0: never). */
  pollUs?: number;
  /** Microseconds the thread sleeps, when the driver adds a receive buffer
   * after running out, for it to add more before receiving resumes (0: at
   * once). */
  refillWaitUs?: number;
  /** Queue interrupts by irqfd where the transport wired them
   * (queue-irqfd.ts); else each goes through the device thread. */
  irqfds?: QueueIrqfdChannel;
  /** For unit tests: do not kick the device thread (no vCPU to kick). */
  noKick?: boolean;
}

export const writeNetReason = writeIothreadReason;

/** The device thread's handle on a running I/O thread; takeInterrupts()
 * is a bit per queue. */
export class NetIothread extends IothreadHandle {
  constructor(data: Omit<NetIothreadData, keyof IothreadChannel>, workerUrl: URL = new URL('./net-iothread-worker.js', import.meta.url)) {
    super(workerUrl, data);
  }

  get rxFrames(): number { return this.counter(NIOT.RX_FRAMES); }
  get txFrames(): number { return this.counter(NIOT.TX_FRAMES); }
  get wakeups(): number { return this.counter(NIOT.WAKEUPS); }
}
