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
//        used entries, and sleeps again. While it serves, the driver's
//        notifies are off (VirtioBlock.serveQuiet): a driver that honours
//        that adds chains without an exit of its vCPU.
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
// Starting and stopping (reset, close: the device thread waits until the
// iothread has left its loop, so no request is half-done and guest memory
// is no longer touched when the transport resets the queues):
// iothread-control.ts, shared with virtio-net's I/O thread.

import type { HelperThreadData } from '../device.js';
import {
  IOTHREAD_FIRST_COUNTER, IOTHREAD_WORD, IothreadHandle, type IothreadChannel,
} from './iothread-control.js';
import type { BlockOptions } from './virtio-blk.js';
import type { VirtqueueLayout } from './virtqueue.js';

/** Words of the shared control block (iothread-control.ts, then ours);
 * IRQ counts the queue interrupts asked for. */
export const IOT = {
  ...IOTHREAD_WORD,
  /** Requests the iothread completed (diagnostics, tests). */
  COMPLETED: IOTHREAD_FIRST_COUNTER,
  /** Wake-ups of the iothread (eventfd reads). */
  WAKEUPS: IOTHREAD_FIRST_COUNTER + 1,
  /** Batches the iothread found by spinning on the ring (no wake-up). */
  POLL_HITS: IOTHREAD_FIRST_COUNTER + 2,
  /** Reads it handed to its reader threads. */
  TO_READERS: IOTHREAD_FIRST_COUNTER + 3,
  /** Of those, the ones it did itself after all (no reader had taken
   * them yet when it had nothing else to do, or within 0.5 ms). */
  TAKEN_BACK: IOTHREAD_FIRST_COUNTER + 4,
} as const;

/** Everything the iothread worker gets, structured-clonable. */
export interface BlkIothreadData extends IothreadChannel {
  helper: HelperThreadData;
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
  /** Reader threads for large reads (0: none; virtio-blk.ts ParallelReads). */
  readers?: number;
  /** The smallest read (data bytes) they get. */
  readerMinBytes?: number;
  /** Large reads the iothread does itself after a sign that the readers
   * lack a CPU (io-pool.ts POOL_HOLD_OFF when absent; unit tests on a
   * loaded host use 0). */
  readerHoldOff?: number;
  /** False: the iothread never does a read it handed to them (tests). */
  helpReaders?: boolean;
  /** Their module (io-pool-worker.js unless given: tests). */
  readerWorkerUrl?: string;
}

/** The device thread's handle on a running iothread; takeInterrupts() is
 * a count (one queue). */
export class BlkIothread extends IothreadHandle {
  constructor(data: Omit<BlkIothreadData, keyof IothreadChannel>, workerUrl: URL = new URL('./blk-iothread-worker.js', import.meta.url)) {
    super(workerUrl, data);
  }

  get completed(): number { return this.counter(IOT.COMPLETED); }
  get wakeups(): number { return this.counter(IOT.WAKEUPS); }
  get pollHits(): number { return this.counter(IOT.POLL_HITS); }
  get toReaders(): number { return this.counter(IOT.TO_READERS); }
  get takenBack(): number { return this.counter(IOT.TAKEN_BACK); }
}
