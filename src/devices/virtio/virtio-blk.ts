// virtio-blk (virtio spec 5.2), bhyve's pci_virtio_block.c behind the
// transport-independent VirtioDevice interface.
//
// Options (bhyve's block_if / virtio-blk keys): path, ro, nocache (O_DIRECT),
// direct / sync (O_SYNC), sectorsize=L[/P], nodelete, ser= (or serial=).
// The image (../block/block-backend.ts) is locked as QEMU locks images, so
// neither a second VM nor a QEMU can write it while this one runs.
//
// Requests: IN, OUT, FLUSH (fdatasync before completing), GET_ID, DISCARD
// (punch hole), WRITE_ZEROES (punch hole with UNMAP, else zero range, else
// written zeros). Every request is validated (header, status byte, data
// length a multiple of 512, sector range within capacity); a bad request
// completes with IOERR or UNSUPP, never an exception. A malformed descriptor
// chain (VirtqueueError) puts the device in DEVICE_NEEDS_RESET.
//
// I/O is synchronous (preadv/pwritev straight between the file and the
// guest-memory views, no copies). By default it runs on the device thread
// inside the notify exit: the vCPU that notified waits for the disk. With
// iothread=true (blk-iothread.ts) the queue belongs to a worker thread woken
// by a KVM ioeventfd on the notify address: no exit per notify, the vCPU
// runs on while any number of requests (up to the queue size) are in flight.
// Which is faster depends on the host (BENCHMARKS.md).

import type { ConfigTree } from '../../config/tree.js';
import { isUnsupported } from '../../sys/file.js';
import {
  BlockDeviceError, BlockFile, bhyveSerial, blockBackendOptionsFromConfig, parseSectorSize,
  type BlockBackendOptions,
} from '../block/block-backend.js';
import {
  VIRTIO_BLK_DWZ_SEG_SIZE, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_TOPOLOGY, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_HDR_SIZE, VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_SECTOR_SIZE, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP, VIRTIO_ID_BLOCK, featureBit,
} from './virtio-constants.js';
import type { HelperThreadData } from '../device.js';
import { BlkIothread } from './blk-iothread.js';
import type { PciDeviceModel } from '../pci-device.js';
import { createVirtioPci } from './virtio-pci.js';
import { VirtioDeviceBase, type VirtioActivation } from './virtio-device.js';
import { VirtqueueError, type DescriptorChain, type Virtqueue } from './virtqueue.js';
import { POOL_MAX_SEGS, type BlockIoPool } from '../block/io-pool.js';
import type { GuestMemory } from '../../sys/guest-memory.js';

// The record's defaults (virtio-blk-record.ts), used here.
import { IOTHREAD_DEFAULT, IOTHREAD_POLL_US, IOTHREAD_READERS, IOTHREAD_READERS_MAX } from './virtio-blk-record.js';
export { IOTHREAD_DEFAULT, IOTHREAD_POLL_US, IOTHREAD_READERS, IOTHREAD_READERS_MAX };

/** The smallest read (data bytes) the iothread hands to its reader
 * threads: smaller ones cost less done at once than the hand-over. */
export const READER_MIN_BYTES = 64 * 1024;
/** A read no reader took for this long (they wait for a CPU) is done by
 * the iothread (io-pool.ts stealStale; as AHCI and NVMe). */
const READER_STEAL_AFTER_MS = 0.5;
/** handle(): the request went to a reader thread; it completes later. */
const DEFERRED = -1;

// The backend moved to ../block/; its names stay importable from here.
export { BlockDeviceError, BlockFile, parseSectorSize };

/** bhyve's VTBLK_RINGSZ. */
export const VTBLK_RINGSZ = 128;
/** bhyve's limits for one DISCARD / WRITE_ZEROES request: 16 MiB, 1 segment. */
export const VTBLK_MAX_DISCARD_SECT = (16 << 20) / VIRTIO_BLK_SECTOR_SIZE;
export const VTBLK_MAX_WRITE_ZEROES_SECT = (16 << 20) / VIRTIO_BLK_SECTOR_SIZE;
export const VTBLK_MAX_DISCARD_SEG = 1;
export const VTBLK_MAX_WRITE_ZEROES_SEG = 1;
/** sizeof(struct virtio_blk_config) up to write_zeroes_may_unmap + padding. */
export const VTBLK_CONFIG_SIZE = 60;

/** The blockif options (block-backend.ts) and virtio-blk's own. */
export interface BlockOptions extends BlockBackendOptions {
  queueSize?: number;
  /** Process the queue on an iothread (blk-iothread.ts) fed by a KVM
   * ioeventfd, when the vmm offers one (default: IOTHREAD_DEFAULT). */
  iothread?: boolean;
  /** Longest window the iothread spins on the ring for the next request
   * before it sleeps (adaptive-poll.ts), microseconds; 0: never spins. */
  iothreadPollUs?: number;
  /** Reader threads of the iothread for large reads (0: the iothread does
   * every read itself). */
  iothreadReaders?: number;
}

/** The iothread's reader threads (blk-iothread-worker.ts): reads of at
 * least `minBytes` go to `pool`, which moves the data between the image
 * and its own mapping of guest RAM; the iothread completes them. */
export interface ParallelReads {
  pool: BlockIoPool;
  mem: GuestMemory;
  minBytes: number;
}

/** Largest iothread_poll_us accepted (1 ms). */
export const IOTHREAD_POLL_US_MAX = 1000;

/** Reads a virtio-blk slot's options from its config node (pci.B.S.F). */
export function blockOptionsFromConfig(tree: ConfigTree, node: string): BlockOptions {
  const opts: BlockOptions = blockBackendOptionsFromConfig(tree, node, 'virtio-blk');
  // Absent means IOTHREAD_DEFAULT.
  if (tree.get(`${node}.iothread`) !== undefined) opts.iothread = tree.getBool(`${node}.iothread`, IOTHREAD_DEFAULT);
  const poll = tree.get(`${node}.iothread_poll_us`);
  if (poll !== undefined) {
    const us = /^\d+$/.test(poll) ? Number(poll) : NaN;
    if (!(us <= IOTHREAD_POLL_US_MAX)) {
      throw new BlockDeviceError(`virtio-blk at ${node}: iothread_poll_us=${poll}: use 0 (no polling) to ${IOTHREAD_POLL_US_MAX} microseconds`);
    }
    opts.iothreadPollUs = us;
  }
  const readers = tree.get(`${node}.iothread_readers`);
  if (readers !== undefined) {
    const n = /^\d+$/.test(readers) ? Number(readers) : NaN;
    if (!(n <= IOTHREAD_READERS_MAX)) {
      throw new BlockDeviceError(`virtio-blk at ${node}: iothread_readers=${readers}: use 0 (the iothread reads) to ${IOTHREAD_READERS_MAX}`);
    }
    opts.iothreadReaders = n;
  }
  return opts;
}

/** bhyve's identifier: the given serial (truncated to 20 bytes), else
 * "BHYVE-XXXX-XXXX-XXXX" from the first 6 bytes of the MD5 of the path. */
export function blockIdent(path: string, serial?: string): Uint8Array {
  const id = new Uint8Array(VIRTIO_BLK_ID_BYTES);
  if (serial !== undefined) {
    id.set(Buffer.from(serial, 'utf8').subarray(0, VIRTIO_BLK_ID_BYTES));
    return id;
  }
  id.set(Buffer.from(bhyveSerial(path), 'latin1'));
  return id;
}

export interface BlockStats {
  /** Every request this instance completed (any type, any status). */
  requests: number;
  reads: number;
  writes: number;
  bytesRead: number;
  bytesWritten: number;
  flushes: number;
  discards: number;
  writeZeroes: number;
  ioErrors: number;
  unsupported: number;
}

export class VirtioBlock extends VirtioDeviceBase {
  readonly deviceType = VIRTIO_ID_BLOCK;
  readonly queueMaxSizes: readonly number[];
  protected readonly ownFeatures: bigint;
  protected readonly config = new Uint8Array(VTBLK_CONFIG_SIZE);
  readonly file: BlockFile;
  readonly capacity: number;
  readonly ident: Uint8Array;
  readonly stats: BlockStats = {
    requests: 0, reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, flushes: 0, discards: 0, writeZeroes: 0, ioErrors: 0, unsupported: 0,
  };
  private readonly discardEnabled: boolean;
  private readonly hdr = new Uint8Array(VIRTIO_BLK_HDR_SIZE);
  private readonly hdrView = new DataView(this.hdr.buffer);
  private readonly iov: Uint8Array[] = [];
  private readonly opts: BlockOptions;
  private act: VirtioActivation | undefined;
  /** Removes the transport's ioeventfds (NotifyOffload's release). */
  private releaseOffload: () => void = () => {};
  /** The iothread's module (tests start one that cannot load). */
  protected iothreadWorkerUrl: URL | undefined;
  /** Its reader threads' module (likewise). */
  protected readerWorkerUrl: URL | undefined;
  /** The iothread that owns the queue while the driver runs, if any. */
  iothread: BlkIothread | undefined;
  /** Counters of iothreads that have stopped, and notifies this thread
   * handed to one (bhyvectl --get-stats). */
  private readonly offloaded = { requests: 0, wakeups: 0, pollHits: 0, forwarded: 0, toReaders: 0, takenBack: 0 };
  /** On the iothread: where large reads go (none: done in place). */
  readers: ParallelReads | undefined;
  /** Reads handed to the reader threads. */
  readsToReaders = 0;
  private readonly segs: Array<[number, number]> = [];

  /** Opens (and locks) the image; throws BlockDeviceError with one clear
   * line when it cannot. */
  static open(opts: BlockOptions): VirtioBlock {
    return new VirtioBlock(new BlockFile(opts), opts);
  }

  constructor(file: BlockFile, opts: BlockOptions) {
    super();
    this.file = file;
    this.opts = opts;
    const qsize = opts.queueSize ?? VTBLK_RINGSZ;
    this.queueMaxSizes = [qsize];
    const logical = opts.sectorSize ?? VIRTIO_BLK_SECTOR_SIZE;
    const physical = opts.physicalSectorSize ?? logical;
    this.capacity = Math.floor(file.size / VIRTIO_BLK_SECTOR_SIZE);
    this.ident = blockIdent(opts.path, opts.serial);
    this.discardEnabled = !file.readOnly && !(opts.nodelete ?? false);

    let f = featureBit(VIRTIO_BLK_F_SEG_MAX) | featureBit(VIRTIO_BLK_F_BLK_SIZE)
      | featureBit(VIRTIO_BLK_F_FLUSH) | featureBit(VIRTIO_BLK_F_TOPOLOGY);
    if (file.readOnly) f |= featureBit(VIRTIO_BLK_F_RO);
    else f |= featureBit(VIRTIO_BLK_F_WRITE_ZEROES);
    if (this.discardEnabled) f |= featureBit(VIRTIO_BLK_F_DISCARD);
    this.ownFeatures = f;

    const c = new DataView(this.config.buffer);
    c.setBigUint64(0, BigInt(this.capacity), true);
    c.setUint32(8, 0, true); // size_max: not offered
    c.setUint32(12, Math.max(1, qsize - 2), true); // seg_max: header and status take two
    // geometry (16..19) left zero: not offered
    c.setUint32(20, logical, true);
    c.setUint8(24, Math.log2(physical / logical)); // physical_block_exp
    c.setUint8(25, 0); // alignment_offset
    c.setUint16(26, 0, true); // min_io_size
    c.setUint32(28, 0, true); // opt_io_size
    c.setUint8(32, 0); // writeback (CONFIG_WCE not offered)
    c.setUint16(34, 1, true); // num_queues
    if (this.discardEnabled) {
      c.setUint32(36, VTBLK_MAX_DISCARD_SECT, true);
      c.setUint32(40, VTBLK_MAX_DISCARD_SEG, true);
      c.setUint32(44, logical / VIRTIO_BLK_SECTOR_SIZE, true); // discard_sector_alignment
    }
    if (!file.readOnly) {
      c.setUint32(48, VTBLK_MAX_WRITE_ZEROES_SECT, true);
      c.setUint32(52, VTBLK_MAX_WRITE_ZEROES_SEG, true);
      c.setUint8(56, this.discardEnabled ? 1 : 0); // write_zeroes_may_unmap
    }
  }

  activate(activation: VirtioActivation): void {
    super.activate(activation);
    this.act = activation;
  }

  /** Called by the transport after activation (virtio-pci.ts
   * NotifyOffload): starts the iothread when configured and returns the
   * eventfd per queue for the transport to register as ioeventfds. */
  startOffload(helper: HelperThreadData, release: () => void = () => {}): Array<number | undefined> | undefined {
    if (!(this.opts.iothread ?? IOTHREAD_DEFAULT) || !this.act || this.iothread) return undefined;
    this.releaseOffload = release;
    const queues = this.act.queues;
    this.iothread = new BlkIothread({
      helper,
      imageFd: this.file.descriptor,
      imageSize: this.file.size,
      options: { ...this.opts, iothread: false },
      ackedFeatures: this.ackedFeatures,
      queueMaxSizes: [...this.queueMaxSizes],
      layouts: queues.map((q) => (q ? { ...q.layout } : null)),
      pollUs: this.opts.iothreadPollUs ?? IOTHREAD_POLL_US,
      readers: this.opts.iothreadReaders ?? IOTHREAD_READERS,
      readerMinBytes: READER_MIN_BYTES,
      readerWorkerUrl: this.readerWorkerUrl?.href,
    }, this.iothreadWorkerUrl);
    return queues.map((q) => (q ? this.iothread!.notifyFd : undefined));
  }

  /** NotifyOffload: the iothread is still loading. */
  offloadStarting(): boolean { return this.iothread?.starting ?? false; }

  /** The iothread could not start: take the queue back (nothing of it was
   * consumed) and serve it here, as without an iothread; its notifies exit
   * here again (the ioeventfd goes: its eventfd is closed with the
   * iothread, and KVM would keep signalling that). */
  private iothreadFallback(): void {
    const why = this.iothread?.startError() || 'no reason given';
    process.stderr.write(`bhyve: warning: virtio-blk: iothread could not start (${why}); the device thread serves the queue\n`);
    this.releaseOffload();
    this.stopIothread();
  }

  private stopIothread(): void {
    this.releaseOffload = () => {};
    const t = this.iothread;
    if (!t) return;
    t.stop();
    this.offloaded.requests += t.completed;
    this.offloaded.wakeups += t.wakeups;
    this.offloaded.pollHits += t.pollHits;
    this.offloaded.toReaders += t.toReaders;
    this.offloaded.takenBack += t.takenBack;
    this.iothread = undefined;
  }

  /** Which thread served the requests, and how notifies reached it. */
  counters(): Record<string, number> {
    const t = this.iothread;
    return {
      'requests served on the device thread': this.stats.requests,
      'requests served on the iothread': this.offloaded.requests + (t?.completed ?? 0),
      'iothread wakeups': this.offloaded.wakeups + (t?.wakeups ?? 0),
      'iothread batches found by polling': this.offloaded.pollHits + (t?.pollHits ?? 0),
      'iothread reads handed to its reader threads': this.offloaded.toReaders + (t?.toReaders ?? 0),
      'iothread reads handed over and done by the iothread': this.offloaded.takenBack + (t?.takenBack ?? 0),
      'notifies forwarded to the iothread': this.offloaded.forwarded,
    };
  }

  /** Kicked by the iothread (or by host input for other devices): raise the
   * queue interrupts it asked for, enter needs-reset when it failed. */
  poll(): void {
    const t = this.iothread;
    if (!t) return;
    if (t.failedToStart) {
      this.iothreadFallback();
      this.queueNotify(0);
      return;
    }
    if (t.takeInterrupts() > 0) this.act?.interrupt.queue(0);
    const reason = t.brokenReason();
    if (reason !== undefined) this.fail(new VirtqueueError(reason));
  }

  protected processQueue(index: number, queue: Virtqueue): void {
    const t = this.iothread;
    if (t) {
      if (!t.failedToStart) { this.offloaded.forwarded++; t.notify(); return; }
      this.iothreadFallback();
    }
    const chain = this.scratchChain;
    do {
      while (queue.pop(chain) !== null) {
        queue.pushUsed(chain.head, this.handle(chain));
      }
    } while (queue.enableNotification());
    this.signalUsed(index, queue);
  }

  /** For the iothread, at a wake-up: serves the queue with the driver's
   * notifies off (VIRTQ_USED_F_NO_NOTIFY, or avail_event held under
   * EVENT_IDX) until it finds the ring empty with them back on, as QEMU's
   * virtio_blk_handle_vq does: a driver that honours them (Linux) does not
   * kick for chains it adds while the iothread is busy, and each kick it
   * saves is an exit of its vCPU. */
  serveQuiet(index: number): void {
    const queue = this.queues?.[index];
    if (!queue || this.needsResetReason !== undefined) return;
    const chain = this.scratchChain;
    try {
      do {
        queue.disableNotification(true);
        while (queue.pop(chain) !== null) this.serveChain(queue, chain);
        this.signalUsed(index, queue);
      } while (queue.enableNotification());
    } catch (e) {
      this.fail(e);
    }
  }

  /** For a thread that polls the ring (the iothread): serves what is
   * available without asking the driver for notifies again (the caller
   * does that when it stops polling). */
  drain(index: number): void {
    const queue = this.queues?.[index];
    if (!queue || this.needsResetReason !== undefined) return;
    const chain = this.scratchChain;
    try {
      while (queue.pop(chain) !== null) this.serveChain(queue, chain);
      this.signalUsed(index, queue);
    } catch (e) {
      this.fail(e);
    }
  }

  /** Completes a popped chain, or hands it to a reader thread. */
  private serveChain(queue: Virtqueue, chain: DescriptorChain): void {
    const used = this.handle(chain, queue);
    if (used !== DEFERRED) queue.pushUsed(chain.head, used);
  }

  /** For the iothread: completes the reads its reader threads finished
   * (and does those no reader took in time); true when any completed. */
  reapReads(): boolean {
    const r = this.readers;
    const queue = this.queues?.[0];
    if (!r || !queue) return false;
    try {
      // reap() also re-arms the readers' ring, with nothing in flight too.
      if (r.pool.pending === 0) { r.pool.reap(); return false; }
      r.pool.stealStale(READER_STEAL_AFTER_MS);
      if (r.pool.reap() === 0) return false;
      this.signalUsed(0, queue);
    } catch (e) {
      this.fail(e);
    }
    return true;
  }

  /** For the iothread with nothing else to do: does one read that no
   * reader has taken yet (it completes at the next reapReads). */
  helpWithRead(): boolean {
    const r = this.readers;
    if (!r || r.pool.pending === 0) return false;
    try {
      return r.pool.runOneReady();
    } catch (e) {
      this.fail(e);
      return false;
    }
  }

  /** Waits for every read in flight on a reader thread and completes it:
   * before a request that must not overlap one (writes, FLUSH, ...), and
   * before the iothread stops (after that no thread touches guest memory
   * for the device). */
  finishReads(): void {
    const r = this.readers;
    const queue = this.queues?.[0];
    if (!r || r.pool.pending === 0) return;
    r.pool.drain();
    try {
      if (queue) this.signalUsed(0, queue);
    } catch (e) {
      this.fail(e);
    }
  }

  /** A read of `len` bytes at `sector` into the chain's writable buffers,
   * handed to a reader thread; false when it cannot take it (too many
   * segments, the pool full, held off, no reader up yet): do it here. */
  private readOnReader(queue: Virtqueue, chain: DescriptorChain, statusSeg: Uint8Array, sector: number, len: number): boolean {
    const r = this.readers!;
    const views = chain.writableViews(0, len, this.iov);
    const segs = this.segs;
    segs.length = 0;
    for (let i = 0; i < views.length; i++) {
      const v = views[i];
      const gpa = r.mem.gpaOf(v);
      if (gpa < 0) return false;
      const last = segs[segs.length - 1];
      if (last !== undefined && last[0] + last[1] === gpa) last[1] += v.length;
      else if (segs.length === POOL_MAX_SEGS) return false;
      else segs.push([gpa, v.length]);
    }
    const head = chain.head;
    const ok = r.pool.submit(0, false, sector * VIRTIO_BLK_SECTOR_SIZE, segs.map((x) => [x[0], x[1]] as const), (n) => {
      const good = n === len;
      statusSeg[statusSeg.length - 1] = good ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
      this.stats.requests++;
      if (good) { this.stats.reads++; this.stats.bytesRead += len; } else this.stats.ioErrors++;
      try {
        queue.pushUsed(head, good ? len + 1 : 1);
      } catch (e) {
        this.fail(e);
      }
    });
    if (ok) this.readsToReaders++;
    return ok;
  }

  /** Executes one request; returns the used length (status byte plus data
   * written into the chain), or DEFERRED for a read a reader thread does
   * (the iothread's readers; `queue` given). */
  private handle(chain: DescriptorChain, queue?: Virtqueue): number {
    const w = chain.writableLength;
    if (w < 1) {
      // Nowhere to put the status byte: hand the chain back untouched.
      this.stats.ioErrors++;
      return 0;
    }
    const statusSeg = chain.writable[chain.writable.length - 1];
    let status = VIRTIO_BLK_S_IOERR;
    let used = 1;
    try {
      if (chain.copyFromReadable(0, this.hdr) === VIRTIO_BLK_HDR_SIZE) {
        const type = this.hdrView.getUint32(0, true);
        const lo = this.hdrView.getUint32(8, true);
        const hi = this.hdrView.getUint32(12, true);
        const sector = hi >= 0x200000 ? Number.MAX_SAFE_INTEGER : hi * 0x100000000 + lo;
        // Reads in flight on reader threads finish before anything that
        // changes the image (or must follow them: FLUSH), as bhyve's
        // blockif holds back a request that overlaps one in flight.
        if (type !== VIRTIO_BLK_T_IN && type !== VIRTIO_BLK_T_GET_ID) this.finishReads();
        switch (type) {
          case VIRTIO_BLK_T_IN: {
            const len = w - 1;
            if (this.rangeOk(sector, len)) {
              if (queue && this.readers && len >= this.readers.minBytes && this.readOnReader(queue, chain, statusSeg, sector, len)) {
                return DEFERRED;
              }
              const views = chain.writableViews(0, len, this.iov);
              const n = this.file.readv(views, sector * VIRTIO_BLK_SECTOR_SIZE);
              if (n === len) {
                status = VIRTIO_BLK_S_OK;
                used += len;
                this.stats.reads++;
                this.stats.bytesRead += len;
              }
            }
            break;
          }
          case VIRTIO_BLK_T_OUT: {
            const len = chain.readableLength - VIRTIO_BLK_HDR_SIZE;
            if (!this.file.readOnly && this.rangeOk(sector, len)) {
              const views = chain.readableViews(VIRTIO_BLK_HDR_SIZE, len, this.iov);
              const n = this.file.writev(views, sector * VIRTIO_BLK_SECTOR_SIZE);
              if (n === len) {
                // Without negotiated FLUSH the driver expects write-through.
                if (!this.hasAcked(VIRTIO_BLK_F_FLUSH)) this.file.flush();
                status = VIRTIO_BLK_S_OK;
                this.stats.writes++;
                this.stats.bytesWritten += len;
              }
            }
            break;
          }
          case VIRTIO_BLK_T_FLUSH:
            if (!this.file.readOnly) this.file.flush();
            this.stats.flushes++;
            status = VIRTIO_BLK_S_OK;
            break;
          case VIRTIO_BLK_T_GET_ID: {
            const n = chain.copyToWritable(0, this.ident.subarray(0, Math.min(VIRTIO_BLK_ID_BYTES, w - 1)));
            used += n;
            status = VIRTIO_BLK_S_OK;
            break;
          }
          case VIRTIO_BLK_T_DISCARD:
          case VIRTIO_BLK_T_WRITE_ZEROES:
            status = this.discardOrZero(chain, type === VIRTIO_BLK_T_DISCARD);
            break;
          default:
            status = VIRTIO_BLK_S_UNSUPP;
        }
      }
    } catch {
      status = VIRTIO_BLK_S_IOERR;
    }
    this.stats.requests++;
    if (status === VIRTIO_BLK_S_IOERR) this.stats.ioErrors++;
    else if (status === VIRTIO_BLK_S_UNSUPP) this.stats.unsupported++;
    statusSeg[statusSeg.length - 1] = status;
    return used;
  }

  /** Data length a multiple of 512 and the whole range inside the disk. */
  private rangeOk(sector: number, len: number): boolean {
    if (len < 0 || len % VIRTIO_BLK_SECTOR_SIZE !== 0) return false;
    if (sector > this.capacity) return false;
    return len / VIRTIO_BLK_SECTOR_SIZE <= this.capacity - sector;
  }

  private discardOrZero(chain: DescriptorChain, discard: boolean): number {
    if (discard ? !this.discardEnabled : this.file.readOnly) {
      return discard ? VIRTIO_BLK_S_UNSUPP : VIRTIO_BLK_S_IOERR;
    }
    const payload = chain.readableLength - VIRTIO_BLK_HDR_SIZE;
    const count = payload / VIRTIO_BLK_DWZ_SEG_SIZE;
    const maxSeg = discard ? VTBLK_MAX_DISCARD_SEG : VTBLK_MAX_WRITE_ZEROES_SEG;
    const maxSect = discard ? VTBLK_MAX_DISCARD_SECT : VTBLK_MAX_WRITE_ZEROES_SECT;
    if (!Number.isInteger(count) || count < 1 || count > maxSeg) return VIRTIO_BLK_S_UNSUPP;
    const seg = this.hdr; // reuse: the header was already parsed
    const v = this.hdrView;
    for (let i = 0; i < count; i++) {
      chain.copyFromReadable(VIRTIO_BLK_HDR_SIZE + i * VIRTIO_BLK_DWZ_SEG_SIZE, seg);
      const lo = v.getUint32(0, true);
      const hi = v.getUint32(4, true);
      const sector = hi >= 0x200000 ? Number.MAX_SAFE_INTEGER : hi * 0x100000000 + lo;
      const num = v.getUint32(8, true);
      const flags = v.getUint32(12, true);
      if (discard ? flags !== 0 : (flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0) return VIRTIO_BLK_S_UNSUPP;
      if (num > maxSect || !this.rangeOk(sector, num * VIRTIO_BLK_SECTOR_SIZE)) return VIRTIO_BLK_S_IOERR;
      if (num === 0) continue;
      const off = sector * VIRTIO_BLK_SECTOR_SIZE;
      const len = num * VIRTIO_BLK_SECTOR_SIZE;
      if (discard) {
        const r = this.file.discard(off, len);
        if (r < 0) return isUnsupported(r) ? VIRTIO_BLK_S_UNSUPP : VIRTIO_BLK_S_IOERR;
        this.stats.discards++;
      } else {
        const unmap = this.discardEnabled && (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0;
        this.file.writeZeroes(off, len, unmap);
        this.stats.writeZeroes++;
      }
    }
    if (!this.hasAcked(VIRTIO_BLK_F_FLUSH) && !discard) this.file.flush();
    return VIRTIO_BLK_S_OK;
  }

  protected onReset(): void {
    this.stopIothread();
    this.act = undefined;
  }

  close(): void {
    this.stopIothread();
    this.file.close();
  }
}

/** PCI class bhyve gives virtio-blk (PCIC_STORAGE). */
const PCIC_STORAGE = 0x01;

/** The emulation of virtio-blk's record (virtio-blk-record.ts). */
export const virtioBlkModel: PciDeviceModel = {
  create: (ctx, s, chipset) => createVirtioPci(ctx, s, chipset, 'virtio-blk', PCIC_STORAGE,
    () => VirtioBlock.open(blockOptionsFromConfig(ctx.config, s.node))),
};
