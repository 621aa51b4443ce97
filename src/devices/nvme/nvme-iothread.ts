// NVMe's I/O thread: a worker_thread that owns the controller's I/O
// submission and completion queues once the driver has sent Doorbell
// Buffer Config (the shadow doorbells tell it the tails and heads), so
// neither the doorbell nor the disk I/O holds up a vCPU.
//
//   guest SQ tail doorbell (MMIO write, after it updated the shadow tail)
//     -> KVM_IOEVENTFD (no datamatch: the value is in the shadow doorbell)
//     -> this thread, blocked in read() on the eventfd, wakes, reads every
//        I/O SQ's shadow tail, runs the commands (preadv/pwritev straight
//        between the image and guest RAM, its own mapping of the VM's
//        memory file), writes the completion entries, raises the CQs'
//        MSI-X vectors through irqfds (queue-irqfd.ts), and sets each SQ's
//        EventIdx to the tail it reached, so the driver rings once per
//        batch it adds after the thread caught up (nvme_dbbuf_need_event);
//        a CQ's EventIdx is set only while the CQ is full, so the driver's
//        head updates cost nothing until the thread waits for room.
//
// The controller (nvme.ts, the device thread) keeps the admin queue, the
// registers and the interrupt set-up. Queue state moves between the two
// through a table in shared memory: the device thread pauses the thread
// (PAUSE, then waits for PAUSED: the thread is between commands and has
// written its heads, tails and phases back) around every admin command
// batch and register write, changes what it must (create/delete queues,
// Doorbell Buffer Config, shutdown), writes the table and resumes it.
// Reset and close stop it (iothread-control.ts). A thread that could not
// start hands the queues back (the exit path serves them); interrupts it
// cannot send by irqfd (a CQ without MSI-X, a vector in transition) are
// bits in IRQ and a kick of the device thread, which raises them.

import type { HelperThreadData } from '../device.js';
import {
  IOTHREAD_FIRST_COUNTER, IOTHREAD_STATE, IOTHREAD_WORD, IothreadHandle, type IothreadChannel,
} from '../virtio/iothread-control.js';
import type { QueueIrqfdChannel } from '../virtio/queue-irqfd.js';
import { eventfdWrite } from '../../sys/eventfd.js';
import type { BlockBackendOptions } from '../block/block-backend.js';
import { IO_COUNT_KEYS } from './nvme-io.js';

/** Words of the shared control block (iothread-control.ts, then ours).
 * IRQ is a bit per CQ id. */
export const NIOT = {
  ...IOTHREAD_WORD,
  /** Set by the device thread: stop between commands and wait. */
  PAUSE: IOTHREAD_FIRST_COUNTER,
  /** Set by the I/O thread while it waits paused (queue state written back). */
  PAUSED: IOTHREAD_FIRST_COUNTER + 1,
  /** eventfd reads. */
  WAKEUPS: IOTHREAD_FIRST_COUNTER + 2,
  /** Passes that found a CQ full (the SQ then waits for the driver). */
  STALLS: IOTHREAD_FIRST_COUNTER + 3,
  /** Batches found by spinning on the shadow tails (no wake-up). */
  POLL_HITS: IOTHREAD_FIRST_COUNTER + 4,
} as const;

/** Slots of a queue pair in the table (Float64Array): the SQ's then the CQ's. */
export const QT = {
  STRIDE: 16,
  SQ_VALID: 0, SQ_BASE: 1, SQ_SIZE: 2, SQ_HEAD: 3, SQ_CQID: 4,
  CQ_VALID: 8, CQ_BASE: 9, CQ_SIZE: 10, CQ_HEAD: 11, CQ_TAIL: 12, CQ_PHASE: 13, CQ_INTR: 14,
} as const;

/** The thread's counters (Float64Array): IO_COUNT_KEYS, then these. */
export const STAT_KEYS = [...IO_COUNT_KEYS, 'errors', 'interrupts'] as const;

export interface SqState { base: number; size: number; head: number; tail: number; cqid: number; }
export interface CqState { base: number; size: number; head: number; tail: number; phase: number; vector: number; intrEnabled: boolean; }

/** Everything the worker gets, structured-clonable. */
export interface NvmeIothreadData extends IothreadChannel {
  helper: HelperThreadData;
  imageFd: number;
  imageSize: number;
  blockOptions: BlockBackendOptions;
  nodelete: boolean;
  sectorSize: number;
  dsm: boolean;
  maxQueues: number;
  /** Queue pairs 0..maxQueues (0 unused), then the shadow doorbell and
   * EventIdx buffer addresses. */
  table: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  irqfds?: QueueIrqfdChannel;
  /** Longest window, in microseconds, the thread spins on the shadow tails
   * before it sleeps (adaptive-poll.ts; 0: never). */
  pollUs?: number;
  /** Batches without polling after a preempted spin (adaptive-poll.ts). */
  pollHoldOff?: number;
  /** For unit tests: do not kick the device thread. */
  noKick?: boolean;
}

export function tableSize(maxQueues: number): number {
  return ((maxQueues + 1) * QT.STRIDE + 2) * 8;
}

/** Where the table keeps the Doorbell Buffer Config addresses. */
export function dbbufSlot(maxQueues: number): number {
  return (maxQueues + 1) * QT.STRIDE;
}

/** Writes queue state into / reads it from a table (both threads). */
export class QueueTable {
  readonly f: Float64Array;
  constructor(buf: SharedArrayBuffer, readonly maxQueues: number) {
    this.f = new Float64Array(buf);
  }

  put(sqs: ReadonlyArray<SqState | undefined>, cqs: ReadonlyArray<CqState | undefined>, dbs: number, eis: number): void {
    const f = this.f;
    for (let q = 1; q <= this.maxQueues; q++) {
      const o = q * QT.STRIDE;
      const s = sqs[q];
      f[o + QT.SQ_VALID] = s ? 1 : 0;
      if (s) { f[o + QT.SQ_BASE] = s.base; f[o + QT.SQ_SIZE] = s.size; f[o + QT.SQ_HEAD] = s.head; f[o + QT.SQ_CQID] = s.cqid; }
      const c = cqs[q];
      f[o + QT.CQ_VALID] = c ? 1 : 0;
      if (c) {
        f[o + QT.CQ_BASE] = c.base; f[o + QT.CQ_SIZE] = c.size; f[o + QT.CQ_HEAD] = c.head; f[o + QT.CQ_TAIL] = c.tail;
        f[o + QT.CQ_PHASE] = c.phase; f[o + QT.CQ_INTR] = c.intrEnabled ? 1 : 0;
      }
    }
    const d = dbbufSlot(this.maxQueues);
    f[d] = dbs;
    f[d + 1] = eis;
  }

  /** The heads, tails and phases the thread moved, into the device's queues. */
  takeBack(sqs: ReadonlyArray<SqState | undefined>, cqs: ReadonlyArray<CqState | undefined>): void {
    const f = this.f;
    for (let q = 1; q <= this.maxQueues; q++) {
      const o = q * QT.STRIDE;
      const s = sqs[q];
      if (s && f[o + QT.SQ_VALID]) { s.head = f[o + QT.SQ_HEAD]; s.tail = s.head; }
      const c = cqs[q];
      if (c && f[o + QT.CQ_VALID]) { c.head = f[o + QT.CQ_HEAD]; c.tail = f[o + QT.CQ_TAIL]; c.phase = f[o + QT.CQ_PHASE]; }
    }
  }
}

/** Unit tests run the compiled worker (dist/) from the sources. */
export const nvmeIothreadWorker: { url: URL | undefined } = { url: undefined };

/** The device thread's handle on a running NVMe I/O thread. */
export class NvmeIothread extends IothreadHandle {
  readonly table: QueueTable;
  private readonly statsView: Float64Array;

  constructor(data: Omit<NvmeIothreadData, keyof IothreadChannel>, workerUrl: URL = nvmeIothreadWorker.url ?? new URL('./nvme-iothread-worker.js', import.meta.url)) {
    super(workerUrl, data);
    this.table = new QueueTable(data.table, data.maxQueues);
    this.statsView = new Float64Array(data.stats);
  }

  /** Stops the thread between commands and waits (bounded) until its
   * queue state is in the table. False when it did not answer in time
   * (it is stuck in the kernel: the caller treats it as broken). */
  pause(timeoutMs = 10_000): boolean {
    const w = this.words;
    Atomics.store(w, NIOT.PAUSE, 1);
    // STARTING: it looks at PAUSE before it touches the queues (seq-cst:
    // if it takes them after this load, it sees the store above).
    if (this.state !== IOTHREAD_STATE.RUNNING) return true;
    eventfdWrite(this.notifyFd);
    const deadline = Date.now() + timeoutMs;
    while (Atomics.load(w, NIOT.PAUSED) === 0 && this.state === IOTHREAD_STATE.RUNNING) {
      if (Date.now() >= deadline) return false;
      Atomics.wait(w, NIOT.PAUSED, 0, 20);
    }
    return true;
  }

  resume(): void {
    Atomics.store(this.words, NIOT.PAUSE, 0);
    Atomics.notify(this.words, NIOT.PAUSE);
  }

  get paused(): boolean { return Atomics.load(this.words, NIOT.PAUSE) !== 0; }
  get wakeups(): number { return this.counter(NIOT.WAKEUPS); }
  get stalls(): number { return this.counter(NIOT.STALLS); }
  get pollHits(): number { return this.counter(NIOT.POLL_HITS); }
  stat(i: number): number { return this.statsView[i]; }
}
