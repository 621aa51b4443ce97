// The NVMe controller, bhyve's pci_nvme.c (NVMe 1.4): PCI FB5D:0A0A, class
// 01/08/02, registers and doorbells in 64-bit BAR 0 (16 KiB), MSI-X (one
// vector per queue plus the admin queue's) in BAR 4, a PCI Express
// capability, one namespace on the block backend or in RAM.
//
//   -s 4,nvme,/img/disk.raw[,maxq=16,qsz=2048,ioslots=8,sectsz=512,ser=..,eui64=..,dsm=auto]
//   -s 4,nvme,ram=64[,...]
//
// Admin commands: identify (controller, namespace, active namespace list,
// namespace descriptors, controller list), create/delete I/O SQ/CQ, get/set
// features (number of queues, interrupt coalescing and vector
// configuration, arbitration, power management, temperature threshold,
// error recovery, write atomicity, async event configuration), get log page
// (error, SMART / health, firmware slot, changed namespaces), abort, async
// event request, format NVM; firmware activate / security / sanitize are
// refused as bhyve refuses them; Doorbell Buffer Config (OACS bit 8, as
// QEMU 7.1+ offers it; `dbbuf=false` hides it). I/O: read, write, flush,
// write zeroes, dataset management (deallocate), through PRP entries and
// PRP lists (nvme-io.ts).
//
// Once the driver has sent Doorbell Buffer Config and created an I/O SQ,
// an I/O thread may own the I/O queues (`iothread`, default true;
// nvme-iothread.ts): their doorbells signal its eventfd in KVM, it reads
// the tails from the shadow page, and this thread keeps the admin queue
// and registers, pausing it around each. Without the buffers (or without
// the thread) the I/O queues are served as below, reading the shadow
// tails and heads when the buffers are set.
//
// Commands run synchronously when the driver rings a submission doorbell:
// the completion is posted (and its MSI-X vector raised) before the write
// returns; with `iopool=N` (default 0; bhyve's blockif does its I/O on
// worker threads too) a read or write of at least `iopool_min` bytes reserves its
// completion entry there and goes to an I/O thread, which moves the data
// straight between the image and guest RAM and then writes the entry
// itself (the driver sees it with no exit; only a queue with interrupts
// rings this thread, which raises the vector). Hostile input is bounded: doorbell values beyond the queue, for
// queues that do not exist or on a disabled controller are ignored, queues
// and PRPs outside guest RAM fail the command (INVALID FIELD, DATA TRANSFER
// ERROR) or the controller (CSTS.CFS, for the admin queues), and a full
// completion queue holds the submission queue until the driver consumes.

import type { DeviceContext } from '../device.js';
import type { PciDeviceModel } from '../pci-device.js';
import {
  BlockDeviceError, BlockFile, blockBackendOptionsFromConfig,
} from '../block/block-backend.js';
import { IOPOOL_MIN_DEFAULT, IOPOOL_THREADS_DEFAULT, IOTHREAD_DEFAULT, IOTHREAD_POLL_US_DEFAULT, NVME_IOSLOTS, NVME_MAX_QENTRIES, NVME_QUEUES } from './nvme-record.js';
import { PCIY_EXPRESS } from '../pci/config-space.js';
import { PciEmulFunction } from '../pci/pci-emul.js';
import {
  ERROR_LOG_SIZE, NS_LIST_SIZE, NVME_IDENTIFY_SIZE, NVME_PAGE, NVME_TEMPERATURE, ONCS_DSM,
  defaultEui64, firmwareLog, healthLog, identifyController, identifyNamespace,
} from './nvme-data.js';
import { fileStore, ramStore, type NvmeStore } from './nvme-store.js';
import { DNR, IO_OPC, NvmeIoEngine, SC, writeCompletion, type IoCounts } from './nvme-io.js';
import { NvmeIothread, STAT_KEYS, tableSize } from './nvme-iothread.js';
import { QueueIrqfds } from '../virtio/queue-irqfd.js';
import { OffloadStartWatch } from '../virtio/offload-start-watch.js';
import { BlockIoPool, POOL_MAX_SEGS } from '../block/io-pool.js';
import { ConfigError, type ConfigTree } from '../../config/tree.js';

export const NVME_VENDOR = 0xfb5d;
export const NVME_DEVICE = 0x0a0a;
export const NVME_MSIX_BAR = 4;
export { SC };
// The defaults its record documents (nvme-record.ts).
export { NVME_IOSLOTS, NVME_MAX_QENTRIES, NVME_QUEUES };
const NVME_MMIO_SPACE_MIN = 1 << 14;
const DOORBELL = 0x1000;

// Register offsets.
const CAP_LO = 0x00, CAP_HI = 0x04, VS = 0x08, CC = 0x14, CSTS = 0x1c, AQA = 0x24, ASQ_LO = 0x28, ASQ_HI = 0x2c;
const ACQ_LO = 0x30, ACQ_HI = 0x34;
const CSTS_RDY = 1, CSTS_CFS = 2, CSTS_SHST_COMPLETE = 2 << 2;
// CC fields the driver may write while enabled / only while disabled.
const CC_WRITE_MASK = 0x1 | (0xf << 16) | (0xf << 20);
const CC_NEN_WRITE_MASK = (0x7 << 4) | (0xf << 7) | (0x7 << 11);

/** Command completes later (an AER). */
const NO_STATUS = -1;
/** Command is on the I/O pool, its completion entry reserved. */
const ON_POOL = -2;

const OPC = {
  DELETE_IO_SQ: 0x00, CREATE_IO_SQ: 0x01, GET_LOG_PAGE: 0x02, DELETE_IO_CQ: 0x04, CREATE_IO_CQ: 0x05, IDENTIFY: 0x06,
  ABORT: 0x08, SET_FEATURES: 0x09, GET_FEATURES: 0x0a, ASYNC_EVENT_REQUEST: 0x0c, FIRMWARE_ACTIVATE: 0x10,
  FORMAT_NVM: 0x80, SECURITY_SEND: 0x81, SECURITY_RECEIVE: 0x82, SANITIZE: 0x84, GET_LBA_STATUS: 0x86,
  DOORBELL_BUFFER_CONFIG: 0x7c,
} as const;

const FEAT = {
  ARBITRATION: 0x01, POWER_MANAGEMENT: 0x02, TEMPERATURE_THRESHOLD: 0x04, ERROR_RECOVERY: 0x05, NUMBER_OF_QUEUES: 0x07,
  INTERRUPT_COALESCING: 0x08, INTERRUPT_VECTOR_CONFIGURATION: 0x09, WRITE_ATOMICITY: 0x0a, ASYNC_EVENT_CONFIGURATION: 0x0b,
} as const;
const NVME_FID_MAX = 0x19;
const AEN_DEFAULT_MASK = 0x11f;
const GLOBAL_NS = 0xffffffff;

interface Sq { base: number; size: number; head: number; tail: number; cqid: number; }
interface Cq { base: number; size: number; head: number; tail: number; phase: number; vector: number; intrEnabled: boolean; }
interface Feature { cdw11: number; kind: 'plain' | 'invalid' | 'temperature' | 'queues' | 'iv' | 'aen'; nsSpecific: boolean; }

export interface NvmeOptions {
  store: NvmeStore;
  sectorSize: number;
  maxQueues: number;
  maxQEntries: number;
  ioslots: number;
  serial: string;
  eui64: bigint;
  dsm: 'auto' | 'enable' | 'disable';
  /** Completion queue head doorbells through KVM's coalesced MMIO ring
   * (no exit each; see doorbellZones). */
  cqCoalesce?: boolean;
  /** I/O threads for large reads and writes (0: all in the doorbell exit). */
  ioThreads?: number;
  /** Smallest transfer, in bytes, handed to them. */
  ioMin?: number;
  /** Offer Doorbell Buffer Config (OACS bit 8; default true). */
  dbbuf?: boolean;
  /** Hand the I/O queues to an I/O thread once the driver sent Doorbell
   * Buffer Config (default true). */
  iothread?: boolean;
  /** Its longest spin, in microseconds, before it sleeps (adaptive). */
  iothreadPollUs?: number;
}

/** The I/O commands' counts (both engines) and the device thread's own. */
export interface NvmeStats extends IoCounts {
  adminCommands: number;
  errors: number;
  cqDoorbells: number;
  cqDoorbellsCoalesced: number;
  poolRequests: number;
  /** I/O queue doorbells that exited while the I/O thread owned the queues. */
  ioDoorbellExits: number;
}

export class NvmeController extends PciEmulFunction {
  readonly store: NvmeStore;
  readonly sectorSize: number;
  readonly maxQueues: number;
  readonly maxQEntries: number;
  /** What the device thread counted itself (the I/O commands' counts are
   * the engines': this thread's and the I/O threads'). */
  private readonly own = { adminCommands: 0, errors: 0, cqDoorbells: 0, cqDoorbellsCoalesced: 0, poolRequests: 0, ioDoorbellExits: 0, ioSqDoorbellExits: 0, dbbufConfigs: 0 };
  readonly ctrlData: Uint8Array;
  readonly nsData: Uint8Array;
  private readonly sectBits: number;
  private readonly deallocate: boolean;
  private readonly regs = new DataView(new ArrayBuffer(DOORBELL));
  private sqs: Array<Sq | undefined> = [];
  private cqs: Array<Cq | undefined> = [];
  private numSq: number;
  private numCq: number;
  private numQIsSet = false;
  private readonly feat: Feature[] = [];
  private aers: number[] = [];
  private readonly aenPosted = new Map<number, number>();
  private criticalWarning = 0;
  /** I/O commands on this thread (the exit path), and admin PRP copies. */
  private readonly io: NvmeIoEngine;
  /** Doorbell Buffer Config: the shadow doorbell and EventIdx pages, once
   * the driver sent it (I/O queues' doorbells are then read there). */
  private dbs: number | undefined;
  private eis: number | undefined;
  private readonly dbbufOffered: boolean;
  /** The I/O thread (nvme-iothread.ts) while it owns the I/O queues. */
  private readonly iothreadWanted: boolean;
  private readonly iothreadPollUs: number;
  private thread: NvmeIothread | undefined;
  private threadStarts = 0;
  /** Doorbell addresses routed to its eventfd. */
  private threadBells: number[] = [];
  private irqfds: QueueIrqfds | undefined;
  private irqfdMessages = 0;
  /** The thread could not start or failed: the exit path serves the I/O
   * queues until the controller is reset. */
  private threadGaveUp = false;
  private threadStartWatch: { watch: OffloadStartWatch; check: () => boolean } | undefined;
  /** Counters of I/O threads that have ended. */
  private readonly threadTotals = new Float64Array(STAT_KEYS.length);
  /** Doorbell zones: where BAR 0 decodes, the CQ head doorbells KVM
   * buffers in its coalesced ring (a driver's head update needs no exit:
   * the head only matters when a completion is posted, and every exit
   * replays the ring first), and the CQs whose doorbell must exit again
   * because an SQ waits for room in them. */
  private readonly cqCoalesce: boolean;
  private bar0: number | undefined;
  private readonly cqZones = new Set<number>();
  private readonly cqMustExit = new Set<number>();
  /** Queue processing is not re-entered (a replayed doorbell while it
   * runs asks for another pass instead). */
  private busy = false;
  private rerun = false;
  /** With `iopool`: I/O threads for the large reads and writes. */
  readonly pool: BlockIoPool | undefined;
  private readonly ioMin: number;
  /** The queue pair of the command being processed. */
  private curSqid = 0;
  private curCq: Cq | undefined;
  /** Vectors to raise for pool completions reaped. */
  private readonly poolVectors = new Set<number>();

  constructor(ctx: DeviceContext, o: NvmeOptions) {
    super('nvme', ctx);
    this.store = o.store;
    this.sectorSize = o.sectorSize;
    this.sectBits = Math.log2(o.sectorSize);
    this.maxQueues = o.maxQueues;
    this.maxQEntries = o.maxQEntries;
    this.numSq = this.numCq = o.maxQueues;
    this.cqCoalesce = o.cqCoalesce ?? false;
    this.deallocate = o.store.canDelete;
    const dsm = o.dsm === 'enable' || (o.dsm === 'auto' && this.deallocate);
    this.nsData = identifyNamespace({ size: o.store.size, sectorSize: o.sectorSize, eui64: o.eui64 });
    this.dbbufOffered = o.dbbuf ?? true;
    this.iothreadWanted = o.iothread ?? IOTHREAD_DEFAULT;
    this.iothreadPollUs = o.iothreadPollUs ?? IOTHREAD_POLL_US_DEFAULT;
    this.ctrlData = identifyController({ serial: o.serial, dsm, dbbuf: this.dbbufOffered });
    this.io = new NvmeIoEngine({ mem: ctx.mem, store: o.store, sectorSize: o.sectorSize, dsm, deallocate: this.deallocate });
    for (let fid = 0; fid < NVME_FID_MAX; fid++) {
      let kind: Feature['kind'] = 'invalid';
      if (([FEAT.ARBITRATION, FEAT.POWER_MANAGEMENT, FEAT.INTERRUPT_COALESCING, FEAT.WRITE_ATOMICITY, FEAT.ERROR_RECOVERY] as number[]).includes(fid)) kind = 'plain';
      else if (fid === FEAT.TEMPERATURE_THRESHOLD) kind = 'temperature';
      else if (fid === FEAT.NUMBER_OF_QUEUES) kind = 'queues';
      else if (fid === FEAT.INTERRUPT_VECTOR_CONFIGURATION) kind = 'iv';
      else if (fid === FEAT.ASYNC_EVENT_CONFIGURATION) kind = 'aen';
      this.feat.push({ cdw11: fid === FEAT.ASYNC_EVENT_CONFIGURATION ? AEN_DEFAULT_MASK : 0, kind, nsSpecific: fid === FEAT.ERROR_RECOVERY });
    }

    this.cfg.setIdentity({ vendor: NVME_VENDOR, device: NVME_DEVICE, classCode: 0x01, subclass: 0x08, progIf: 0x02 });
    const barSize = Math.max(DOORBELL + 8 * (o.maxQueues + 1), NVME_MMIO_SPACE_MIN);
    this.allocBar(0, 'mem64', barSize, {
      read: (off, s) => this.bar0Read(off, s),
      write: (off, s, v) => this.bar0Write(off, s, v),
      decoded: (base) => this.placeDoorbellZones(base),
    });
    this.addMsixCap(o.maxQueues + 1, NVME_MSIX_BAR);
    // PCI Express capability, version 2, root complex integrated endpoint.
    const pcie = new Uint8Array(60);
    pcie[2] = 2 | (9 << 4);
    this.cfg.addCapability(PCIY_EXPRESS, pcie, new Uint8Array(60));
    this.requestIntx();
    // I/O threads map guest RAM from the VM's memory file (the helper
    // data); without one (unit tests) the pool keeps its bookkeeping and
    // this thread does the requests at the next exit or poll().
    const threads = o.ioThreads ?? 0;
    this.ioMin = o.ioMin ?? IOPOOL_MIN_DEFAULT;
    if (threads > 0 && o.store.file) {
      const helper = ctx.kvm?.helper;
      this.pool = new BlockIoPool(threads, helper?.memoryPath ? helper : undefined, [o.store.file], () => this.ctx.mem);
    }
    this.controllerReset();
  }

  /** The I/O threads' finished requests (their entries are posted
   * already): count them and raise the vectors of queues with interrupts. */
  poll(): void {
    if (this.pool && this.pool.pending > 0) {
      this.pool.stealStale(STEAL_AFTER_MS);
      this.pool.reap();
      this.raisePoolVectors();
    }
    if (this.thread) this.pollThread();
  }

  /** What the I/O thread asked for: interrupts it could not send by irqfd,
   * and whether it failed (then the queues come back to this thread). */
  private pollThread(): void {
    const t = this.thread!;
    const bits = t.takeInterrupts();
    if (bits) {
      for (let q = 1; q <= this.maxQueues; q++) {
        if (!(bits & (1 << q))) continue;
        const cq = this.cqs[q];
        if (cq?.intrEnabled) this.generateMsix(cq.vector);
      }
    }
    if (t.failedToStart) {
      // It never took the queues: they are as the table has them.
      process.stderr.write(`bhyve: warning: nvme: I/O thread could not start (${t.startError() || 'no reason given'}); the I/O queues are served in their doorbell exits\n`);
      this.stopThread();
      this.threadGaveUp = true;
      for (let i = 1; i < this.sqs.length; i++) if (this.sqs[i]) this.runSq(i);
      return;
    }
    const broken = t.brokenReason();
    if (broken !== undefined) {
      // Stopped in the middle of the queues: the controller's fatal status.
      process.stderr.write(`bhyve: warning: nvme: ${broken}; controller fatal status (CSTS.CFS) until reset\n`);
      this.stopThread();
      this.threadGaveUp = true;
      this.regs.setUint32(CSTS, this.regs.getUint32(CSTS, true) | CSTS_CFS, true);
    }
  }

  // ---- the I/O thread ----

  /** I/O counts: this thread's engine, the running I/O thread's, ended ones'. */
  get counts(): NvmeStats {
    const c: Record<string, number> = { ...this.io.counts };
    STAT_KEYS.forEach((k, i) => {
      const n = this.threadTotals[i] + (this.thread?.stat(i) ?? 0);
      if (k === 'errors' || k === 'interrupts') return;
      c[k] += n;
    });
    const e = STAT_KEYS.indexOf('errors');
    return {
      ...(c as unknown as IoCounts), ...this.own,
      errors: this.own.errors + this.threadTotals[e] + (this.thread?.stat(e) ?? 0),
    };
  }

  /** Starts the I/O thread when the driver has set up what it needs:
   * Doorbell Buffer Config sent, an I/O SQ, BAR 0 decoded, and this host
   * able to route the doorbells to an eventfd. */
  private maybeStartThread(): void {
    if (this.thread || this.threadGaveUp || !this.iothreadWanted || this.dbs === undefined || this.eis === undefined) return;
    if (!this.enabled || this.bar0 === undefined || !this.sqs.some((q, i) => i > 0 && q)) return;
    const kvm = this.ctx.kvm;
    const file = this.store.file;
    if (!kvm || !kvm.helper?.memoryPath || !file) return;
    this.drainPool();
    const table = new SharedArrayBuffer(tableSize(this.maxQueues));
    const stats = new SharedArrayBuffer(STAT_KEYS.length * 8);
    this.irqfds = QueueIrqfds.open(kvm, Array.from({ length: this.maxQueues + 1 }, (_, q) => q > 0), {
      msixActive: () => this.msixEnabledNow(),
      vectorOf: (q) => this.cqVector(q),
      entry: (v) => this.msixEntry(v),
      raiseVector: (v) => { this.generateMsix(v); },
      raiseQueue: (q) => { const v = this.cqVector(q); if (v !== undefined) this.generateMsix(v); },
    });
    let t: NvmeIothread;
    try {
      t = new NvmeIothread({
        helper: kvm.helper, imageFd: file.descriptor, imageSize: file.size, blockOptions: file.options,
        nodelete: !this.store.canDelete, sectorSize: this.sectorSize, dsm: (this.ctrlData[520] & ONCS_DSM) !== 0,
        maxQueues: this.maxQueues, table, stats, irqfds: this.irqfds?.channel, pollUs: this.iothreadPollUs,
      });
    } catch {
      this.irqfds?.close();
      this.irqfds = undefined;
      this.threadGaveUp = true;
      return;
    }
    this.thread = t;
    this.threadStarts++;
    t.table.put(this.sqs, this.cqs, this.dbs, this.eis);
    this.routeThreadBells(true);
    // A worker that cannot load cannot ring this thread: look now and then.
    const watch = OffloadStartWatch.of(this.ctx);
    if (watch && t.starting) {
      const check = (): boolean => {
        if (this.thread !== t) return false;
        if (t.starting) return true;
        this.threadStartWatch = undefined;
        this.poll();
        return false;
      };
      this.threadStartWatch = { watch, check };
      watch.watch(check);
    }
  }

  /** The MSI-X vector CQ `q`'s interrupts go to, if it has one. */
  private cqVector(q: number): number | undefined {
    const cq = this.cqs[q];
    return cq?.intrEnabled && cq.vector < this.msixVectorCount ? cq.vector : undefined;
  }

  /** The I/O queues' SQ tail and CQ head doorbells to the thread's eventfd
   * (on) or back to exits (off); the CQ doorbells leave the coalesced ring
   * meanwhile (a head update must wake a thread waiting for room). */
  private routeThreadBells(on: boolean): void {
    const kvm = this.ctx.kvm;
    if (!kvm) return;
    for (const addr of this.threadBells) kvm.ioeventfd(this.thread!.notifyFd, addr, true);
    this.threadBells = [];
    if (!on || this.bar0 === undefined || !this.thread) {
      if (!on && this.bar0 !== undefined && this.cqCoalesce) for (let q = 1; q <= this.maxQueues; q++) if (!this.cqMustExit.has(q)) this.setCqZone(q, true);
      return;
    }
    for (let q = 1; q <= this.maxQueues; q++) {
      this.setCqZone(q, false);
      for (const addr of [this.bar0 + DOORBELL + 8 * q, this.bar0 + DOORBELL + 8 * q + 4]) {
        if (kvm.ioeventfd(this.thread.notifyFd, addr)) this.threadBells.push(addr);
      }
    }
  }

  /** Pauses the thread (its queue state back in sqs/cqs) for what changes
   * the I/O queues or the controller; resumeThread() hands them back. */
  private pauseThread(): void {
    const t = this.thread;
    if (!t || t.paused) return;
    if (!t.pause()) {
      // Stuck: the queues cannot be taken back safely.
      this.stopThread();
      this.threadGaveUp = true;
      this.regs.setUint32(CSTS, this.regs.getUint32(CSTS, true) | CSTS_CFS, true);
      return;
    }
    t.table.takeBack(this.sqs, this.cqs);
  }

  private resumeThread(): void {
    const t = this.thread;
    if (!t || !t.paused) return;
    if (!this.sqs.some((q, i) => i > 0 && q) || this.dbs === undefined || this.eis === undefined) {
      this.stopThread(); // nothing left for it (restarted with the next SQ)
      return;
    }
    t.table.put(this.sqs, this.cqs, this.dbs, this.eis);
    t.resume();
    this.irqfds?.sync();
  }

  /** Ends the thread; the I/O queues are this thread's again (as the
   * thread left them). */
  private stopThread(): void {
    const t = this.thread;
    if (!t) return;
    if (this.threadStartWatch) { this.threadStartWatch.watch.unwatch(this.threadStartWatch.check); this.threadStartWatch = undefined; }
    this.routeThreadBells(false);
    const wasPaused = t.paused;
    t.stop();
    if (!wasPaused && !t.failedToStart) t.table.takeBack(this.sqs, this.cqs);
    STAT_KEYS.forEach((_, i) => { this.threadTotals[i] += t.stat(i); });
    // Interrupts it asked for and the irqfds' messages.
    const bits = t.takeInterrupts();
    for (let q = 1; q <= this.maxQueues; q++) if (bits & (1 << q)) { const v = this.cqVector(q); if (v !== undefined) this.generateMsix(v); }
    if (this.irqfds) { this.irqfdMessages += this.irqfds.sent; this.irqfds.close(); this.irqfds = undefined; }
    this.thread = undefined;
  }

  protected interruptSetupChanged(): void {
    this.irqfds?.sync();
  }

  protected msixPbaReading(): void {
    this.irqfds?.collectPending();
  }

  // ---- Doorbell Buffer Config ----

  /** The shadow doorbell of I/O queue `qid` (its tail, or `cq`: head), or
   * -1 when it is not an index of a queue of `size` entries. */
  private shadow(qid: number, cq: boolean, size: number): number {
    const v = this.ctx.mem.readU32(this.dbs! + 8 * qid + (cq ? 4 : 0));
    return v < size ? v : -1;
  }

  private setEventIdx(qid: number, cq: boolean, value: number): void {
    this.ctx.mem.writeU32(this.eis! + 8 * qid + (cq ? 4 : 0), value);
  }

  /** Admin opcode 7Ch: PRP1 the shadow doorbell buffer, PRP2 the EventIdx
   * buffer, each a memory page of guest RAM (NVMe 1.4 5.7). */
  private doorbellBufferConfig(): number {
    if (!this.dbbufOffered) return SC.INVALID_OPCODE;
    const dbs = this.cmd.getUint32(28, true) * 0x100000000 + this.cmd.getUint32(24, true);
    const eis = this.cmd.getUint32(36, true) * 0x100000000 + this.cmd.getUint32(32, true);
    if (dbs % NVME_PAGE || eis % NVME_PAGE) return SC.INVALID_FIELD | DNR;
    if (dbs === eis || !this.ctx.mem.contains(dbs, NVME_PAGE) || !this.ctx.mem.contains(eis, NVME_PAGE)) return SC.INVALID_FIELD | DNR;
    this.dbs = dbs;
    this.eis = eis;
    // The queues that exist already: their doorbells as they stand.
    for (let q = 1; q <= this.maxQueues; q++) {
      const sq = this.sqs[q];
      if (sq) { this.ctx.mem.writeU32(dbs + 8 * q, sq.tail); this.setEventIdx(q, false, sq.tail); }
      const cq = this.cqs[q];
      if (cq) { this.ctx.mem.writeU32(dbs + 8 * q + 4, cq.head); this.setEventIdx(q, true, cq.head); }
    }
    this.own.dbbufConfigs++;
    return SC.SUCCESS;
  }

  /** Finishes every pool request now (before what would change the
   * queues, the namespace's data order or the controller's state). */
  private drainPool(): void {
    if (this.pool && this.pool.pending > 0) {
      this.pool.drain();
      this.raisePoolVectors();
    }
  }

  private raisePoolVectors(): void {
    if (this.poolVectors.size === 0) return;
    for (const v of this.poolVectors) this.generateMsix(v);
    this.poolVectors.clear();
  }

  // ---- registers ----

  /** pci_nvme_reset_locked(). */
  private controllerReset(): void {
    const r = this.regs;
    r.setUint32(CAP_LO, ((this.maxQEntries - 1) & 0xffff) | (1 << 16) | (60 << 24), true);
    r.setUint32(CAP_HI, 1 << 5, true); // CSS: NVM command set
    r.setUint32(VS, 0x00010400, true);
    r.setUint32(CC, 0, true);
    this.stopThread();
    this.threadGaveUp = false;
    this.dbs = this.eis = undefined;
    this.sqs = [];
    this.cqs = [];
    this.numSq = this.numCq = this.maxQueues;
    this.numQIsSet = false;
    this.aers = [];
    this.aenPosted.clear();
    r.setUint32(CSTS, 0, true);
    for (const qid of [...this.cqMustExit]) this.setCqZone(qid, true);
  }

  // ---- coalesced CQ doorbells ----

  private cqDoorbellAddr(qid: number): number {
    return this.bar0! + DOORBELL + 8 * qid + 4;
  }

  /** BAR 0 now decodes at `base` (undefined: nowhere): the CQ doorbell
   * zones move with it. */
  private placeDoorbellZones(base: number | undefined): void {
    for (const qid of [...this.cqZones]) this.setCqZone(qid, false);
    if (this.thread) this.routeThreadBells(false);
    this.bar0 = base;
    if (base === undefined) return;
    if (this.cqCoalesce) for (let qid = 0; qid <= this.maxQueues; qid++) if (!this.cqMustExit.has(qid)) this.setCqZone(qid, true);
    if (this.thread) this.routeThreadBells(true);
  }

  private setCqZone(qid: number, on: boolean): void {
    if (on) this.cqMustExit.delete(qid);
    if (this.bar0 === undefined || on === this.cqZones.has(qid)) return;
    if (on) {
      if (this.cqCoalesce && this.ctx.kvm?.coalesce?.(this.cqDoorbellAddr(qid), 4, true)) this.cqZones.add(qid);
    } else {
      this.cqZones.delete(qid);
      // Removing the zone replays what KVM buffered for it.
      this.ctx.kvm?.coalesce?.(this.cqDoorbellAddr(qid), 4, false);
    }
  }

  /** An SQ waits for room in CQ `qid`: its next head update must reach us
   * at once, so its doorbell exits again (until the CQ is deleted or the
   * controller reset). */
  private cqStalled(qid: number): void {
    if (!this.cqZones.has(qid)) return;
    this.cqMustExit.add(qid);
    this.setCqZone(qid, false);
  }

  private bar0Read(off: number, size: number): number {
    if (off >= DOORBELL || off + size > DOORBELL) return 0;
    if (size === 1) return this.regs.getUint8(off);
    if (size === 2) return this.regs.getUint16(off, true);
    return this.regs.getUint32(off, true);
  }

  private bar0Write(off: number, size: number, value: number): void {
    value >>>= 0;
    this.poll();
    if (off >= DOORBELL) {
      const bell = off - DOORBELL;
      if (bell > (this.maxQueues + 1) * 8 - 4) return; // past the last doorbell
      if (size !== 4 || (bell & 3)) return;
      this.doorbell(bell >> 3, (bell & 7) < 4, value & 0xffff);
      return;
    }
    if (size !== 4) return; // bhyve: "guest wrote invalid size"
    const r = this.regs;
    switch (off) {
      case CC: {
        this.drainPool();
        this.pauseThread();
        const old = r.getUint32(CC, true);
        if ((value >>> 14) & 3) { // shutdown notification: make the data durable
          try { this.store.flush(); } catch { /* reported through CSTS below all the same */ }
          r.setUint32(CSTS, (r.getUint32(CSTS, true) & ~(3 << 2)) | CSTS_SHST_COMPLETE, true);
        }
        const enable = value & 1;
        if (enable !== (old & 1)) {
          if (!enable) this.controllerReset();
          else this.initController();
        }
        let cc = (r.getUint32(CC, true) & ~CC_WRITE_MASK) | (value & CC_WRITE_MASK);
        if (!enable) {
          cc = (cc & ~CC_NEN_WRITE_MASK) | (value & CC_NEN_WRITE_MASK);
          r.setUint32(CSTS, r.getUint32(CSTS, true) & ~CSTS_RDY, true);
        } else if (!(r.getUint32(CSTS, true) & CSTS_CFS)) {
          r.setUint32(CSTS, r.getUint32(CSTS, true) | CSTS_RDY, true);
        }
        r.setUint32(CC, cc >>> 0, true);
        this.resumeThread();
        break;
      }
      case AQA: r.setUint32(AQA, value, true); break;
      case ASQ_LO: r.setUint32(ASQ_LO, value & 0xfffff000, true); break;
      case ASQ_HI: r.setUint32(ASQ_HI, value, true); break;
      case ACQ_LO: r.setUint32(ACQ_LO, value & 0xfffff000, true); break;
      case ACQ_HI: r.setUint32(ACQ_HI, value, true); break;
      default: break; // CAP, VS, CSTS read-only; INTMS/INTMC ignored (MSI-X); NSSR unsupported
    }
  }

  private get enabled(): boolean {
    return (this.regs.getUint32(CC, true) & 1) === 1 && (this.regs.getUint32(CSTS, true) & CSTS_CFS) === 0;
  }

  /** pci_nvme_init_controller(): the admin queues from AQA/ASQ/ACQ. An
   * admin queue outside guest RAM is a controller fatal status. */
  private initController(): void {
    const r = this.regs;
    const aqa = r.getUint32(AQA, true);
    const asqs = (aqa & 0xfff) + 1;
    const acqs = ((aqa >>> 16) & 0xfff) + 1;
    const asq = r.getUint32(ASQ_HI, true) * 0x100000000 + r.getUint32(ASQ_LO, true);
    const acq = r.getUint32(ACQ_HI, true) * 0x100000000 + r.getUint32(ACQ_LO, true);
    if (asqs < 2 || acqs < 2 || !this.ctx.mem.contains(asq, asqs * 64) || !this.ctx.mem.contains(acq, acqs * 16)) {
      r.setUint32(CSTS, r.getUint32(CSTS, true) | CSTS_CFS, true);
      return;
    }
    this.sqs[0] = { base: asq, size: asqs, head: 0, tail: 0, cqid: 0 };
    this.cqs[0] = { base: acq, size: acqs, head: 0, tail: 0, phase: 1, vector: 0, intrEnabled: true };
  }

  private doorbell(qid: number, isSq: boolean, value: number): void {
    if (!this.enabled) return;
    if (qid > 0 && isSq) this.own.ioSqDoorbellExits++;
    if (qid > 0 && this.thread) {
      // An I/O doorbell that exited (BAR moved, no ioeventfd): the value
      // is in the shadow doorbell, the queues are the thread's.
      this.own.ioDoorbellExits++;
      this.thread.notify();
      return;
    }
    if (qid > 0 && this.dbs !== undefined) {
      const q = isSq ? this.sqs[qid] : this.cqs[qid];
      if (!q) return;
      value = this.shadow(qid, !isSq, q.size);
      if (value < 0) return;
    }
    if (isSq) {
      const sq = this.sqs[qid];
      if (!sq || qid > this.numSq || value >= sq.size) return; // invalid doorbell write: ignored
      sq.tail = value;
      this.runSq(qid);
    } else {
      this.own.cqDoorbells++;
      if (this.ctx.kvm?.replayingCoalesced?.()) this.own.cqDoorbellsCoalesced++;
      const cq = this.cqs[qid];
      if (!cq || qid > this.numCq || value >= cq.size) return;
      cq.head = value;
      // Room in the CQ again: resume the submission queues that wait for it.
      for (let i = 0; i < this.sqs.length; i++) if (this.sqs[i]?.cqid === qid) this.runSq(i);
    }
  }

  // ---- queues ----

  /** Whether CQ `qid` has no room; with shadow doorbells, after the
   * driver's latest head, and a full one asks the driver to ring at its
   * next head update (its EventIdx). */
  private cqFull(cq: Cq, qid: number): boolean {
    if ((cq.tail + 1) % cq.size !== cq.head) return false;
    if (qid === 0 || this.dbs === undefined) return true;
    let h = this.shadow(qid, true, cq.size);
    if (h >= 0) cq.head = h;
    if ((cq.tail + 1) % cq.size !== cq.head) return false;
    this.setEventIdx(qid, true, cq.head);
    h = this.shadow(qid, true, cq.size);
    if (h >= 0) cq.head = h;
    return (cq.tail + 1) % cq.size === cq.head;
  }

  /** Processes the SQ's new entries while its CQ has room (and any SQ a
   * doorbell replayed meanwhile made runnable). */
  private runSq(qid: number): void {
    if (this.busy) { this.rerun = true; return; }
    this.busy = true;
    try {
      this.processSq(qid);
      for (let pass = 0; this.rerun && pass < 64; pass++) {
        this.rerun = false;
        for (let i = 0; i < this.sqs.length; i++) if (this.sqs[i]) this.processSq(i);
      }
    } finally {
      this.busy = false;
      this.rerun = false;
    }
  }

  private processSq(qid: number): void {
    if (qid > 0 && this.thread) return; // the I/O thread's
    const sq = this.sqs[qid];
    if (!sq) return;
    const cq = this.cqs[sq.cqid];
    if (!cq) return;
    // Admin commands change queues and namespace state: nothing of the
    // I/O pool's may be in flight then, and the I/O thread waits.
    if (qid === 0 && sq.head !== sq.tail) {
      this.drainPool();
      this.pauseThread();
    }
    if (qid > 0 && this.dbs !== undefined) {
      const t = this.shadow(qid, false, sq.size);
      if (t >= 0) sq.tail = t;
    }
    this.curSqid = qid;
    this.curCq = cq;
    let posted = false;
    for (let n = 0; sq.head !== sq.tail && n < sq.size; n++) {
      if (this.cqFull(cq, sq.cqid)) { this.cqStalled(sq.cqid); break; }
      this.io.fetch(sq.base + sq.head * 64);
      sq.head = (sq.head + 1) % sq.size;
      const status = qid === 0 ? this.adminCommand() : this.ioCommand();
      if (status === NO_STATUS || status === ON_POOL) continue;
      this.complete(cq, qid, sq.head, this.cmd.getUint16(2, true), status, this.cdw0);
      posted = true;
      if (!this.sqs[qid]) break; // the command deleted its own queue
    }
    if (posted && cq.intrEnabled) this.generateMsix(cq.vector);
    // The driver rings again for entries past the ones taken.
    if (qid > 0 && this.dbs !== undefined && this.sqs[qid]) this.setEventIdx(qid, false, sq.head);
    // Async events complete after the commands that caused them, as bhyve's
    // event thread completes them after the admin queue is processed.
    if (qid === 0) {
      this.deliverEvents();
      this.resumeThread();
      this.maybeStartThread();
    }
  }

  private get cdw0(): number { return this.io.cdw0; }
  private set cdw0(v: number) { this.io.cdw0 = v; }

  /** pci_nvme_cq_update(): one completion entry, phase tag flipped per pass. */
  private complete(cq: Cq, sqid: number, sqhd: number, cid: number, status: number, cdw0: number): void {
    writeCompletion(this.ctx.mem, cq.base + cq.tail * 16, cdw0, sqhd, sqid, cid, status, cq.phase);
    if (status & 0x7ff) this.own.errors++;
    cq.tail++;
    if (cq.tail >= cq.size) { cq.tail = 0; cq.phase ^= 1; }
  }

  private get cmd(): DataView { return this.io.cmd; }
  private get cdw10(): number { return this.io.cdw10; }
  private get cdw11(): number { return this.io.cdw11; }
  private get cdw12(): number { return this.io.cdw12; }
  private get cdw13(): number { return this.io.cdw13; }
  private get nsid(): number { return this.io.nsid; }
  private get prp1(): number { return this.io.prp1; }
  private get prp2(): number { return this.io.prp2; }
  private prpCopy(buf: Uint8Array, toGuest: boolean): boolean { return this.io.prpCopy(buf, toGuest); }

  // ---- admin ----

  private adminCommand(): number {
    this.own.adminCommands++;
    this.cdw0 = 0;
    const opc = this.cmd.getUint8(0);
    switch (opc) {
      case OPC.DELETE_IO_SQ: return this.deleteSq();
      case OPC.CREATE_IO_SQ: return this.createSq();
      case OPC.DELETE_IO_CQ: return this.deleteCq();
      case OPC.CREATE_IO_CQ: return this.createCq();
      case OPC.GET_LOG_PAGE: return this.getLogPage();
      case OPC.IDENTIFY: return this.identify();
      case OPC.ABORT:
        this.cdw0 = 1; // command not aborted
        return SC.SUCCESS;
      case OPC.SET_FEATURES: return this.setFeatures();
      case OPC.GET_FEATURES: return this.getFeatures();
      case OPC.FIRMWARE_ACTIVATE: return SC.INVALID_FIRMWARE_SLOT;
      case OPC.ASYNC_EVENT_REQUEST: return this.asyncEventRequest();
      case OPC.FORMAT_NVM: return this.formatNvm();
      case OPC.DOORBELL_BUFFER_CONFIG: return this.doorbellBufferConfig();
      case OPC.SECURITY_SEND: case OPC.SECURITY_RECEIVE: case OPC.SANITIZE: case OPC.GET_LBA_STATUS:
        return SC.INVALID_FIELD;
      default:
        return SC.INVALID_OPCODE;
    }
  }

  private createSq(): number {
    if (!(this.cdw11 & 1)) return SC.INVALID_FIELD; // only physically contiguous queues
    const qid = this.cdw10 & 0xffff;
    if (qid === 0 || qid > this.numSq || this.sqs[qid]) return SC.INVALID_QUEUE_IDENTIFIER;
    const size = ((this.cdw10 >>> 16) & 0xffff) + 1;
    if (size < 2 || size > this.maxQEntries) return SC.MAXIMUM_QUEUE_SIZE_EXCEEDED;
    const cqid = (this.cdw11 >>> 16) & 0xffff;
    if (cqid === 0 || cqid > this.numCq) return SC.INVALID_QUEUE_IDENTIFIER;
    if (!this.cqs[cqid]) return SC.COMPLETION_QUEUE_INVALID;
    if (!this.ctx.mem.contains(this.prp1, size * 64)) return SC.INVALID_FIELD;
    this.sqs[qid] = { base: this.prp1, size, head: 0, tail: 0, cqid };
    if (this.dbs !== undefined) { this.ctx.mem.writeU32(this.dbs + 8 * qid, 0); this.setEventIdx(qid, false, 0); }
    this.pool?.startWorkers(); // up by the first large transfer
    return SC.SUCCESS;
  }

  private deleteSq(): number {
    const qid = this.cdw10 & 0xffff;
    if (qid === 0 || qid > this.numSq || !this.sqs[qid]) return SC.INVALID_QUEUE_IDENTIFIER;
    this.sqs[qid] = undefined;
    return SC.SUCCESS;
  }

  private createCq(): number {
    if (!(this.cdw11 & 1)) return SC.INVALID_FIELD;
    const qid = this.cdw10 & 0xffff;
    if (qid === 0 || qid > this.numCq || this.cqs[qid]) return SC.INVALID_QUEUE_IDENTIFIER;
    const vector = (this.cdw11 >>> 16) & 0xffff;
    if (vector > this.maxQueues + 1 || vector >= this.msixVectorCount) return SC.INVALID_INTERRUPT_VECTOR;
    const size = ((this.cdw10 >>> 16) & 0xffff) + 1;
    if (size < 2 || size > this.maxQEntries) return SC.MAXIMUM_QUEUE_SIZE_EXCEEDED;
    if (!this.ctx.mem.contains(this.prp1, size * 16)) return SC.INVALID_FIELD;
    this.cqs[qid] = { base: this.prp1, size, head: 0, tail: 0, phase: 1, vector, intrEnabled: (this.cdw11 & 2) !== 0 };
    if (this.dbs !== undefined) { this.ctx.mem.writeU32(this.dbs + 8 * qid + 4, 0); this.setEventIdx(qid, true, 0); }
    return SC.SUCCESS;
  }

  private deleteCq(): number {
    const qid = this.cdw10 & 0xffff;
    if (qid === 0 || qid > this.numCq || !this.cqs[qid]) return SC.INVALID_QUEUE_IDENTIFIER;
    for (let i = 1; i < this.sqs.length; i++) if (this.sqs[i]?.cqid === qid) return SC.INVALID_QUEUE_DELETION;
    this.cqs[qid] = undefined;
    if (this.cqMustExit.has(qid)) this.setCqZone(qid, true);
    return SC.SUCCESS;
  }

  private identify(): number {
    const cns = this.cdw10 & 0xff;
    let data: Uint8Array;
    switch (cns) {
      case 0x00:
        if (this.nsid === GLOBAL_NS) return SC.INVALID_NAMESPACE_OR_FORMAT;
        data = this.nsData;
        break;
      case 0x01:
        data = this.ctrlData;
        break;
      case 0x02: // active namespace IDs above CDW1.NSID
        data = new Uint8Array(NVME_IDENTIFY_SIZE);
        if (this.nsid < 1) data[0] = 1;
        break;
      case 0x03: // namespace identification descriptors: the EUI-64
        if (this.nsid !== 1) return SC.INVALID_NAMESPACE_OR_FORMAT;
        data = new Uint8Array(NVME_IDENTIFY_SIZE);
        data[0] = 1;
        data[1] = 8;
        data.set(this.nsData.subarray(120, 128), 4);
        break;
      case 0x13: // controller list: empty
        data = new Uint8Array(NVME_IDENTIFY_SIZE);
        break;
      default:
        return SC.INVALID_FIELD;
    }
    return this.prpCopy(data, true) ? SC.SUCCESS : SC.DATA_TRANSFER_ERROR;
  }

  private getLogPage(): number {
    const lid = this.cdw10 & 0xff;
    const bytes = ((((this.cdw11 & 0xffff) * 0x10000) + (this.cdw10 >>> 16)) + 1) * 4;
    const off = this.cdw13 * 0x100000000 + this.cdw12;
    let log: Uint8Array;
    switch (lid) {
      case 0x01: log = new Uint8Array(ERROR_LOG_SIZE); break;
      case 0x02: {
        const c = this.counts;
        // Data units: thousands of 512-byte blocks, rounded up.
        const units = (bytes: number) => BigInt(Math.ceil(bytes / 512 / 1000));
        log = healthLog({
          criticalWarning: this.criticalWarning, dataUnitsRead: units(c.bytesRead), dataUnitsWritten: units(c.bytesWritten),
          readCommands: BigInt(c.readCommands), writeCommands: BigInt(c.writeCommands),
        });
        break;
      }
      case 0x03: log = firmwareLog(); break;
      case 0x04: log = new Uint8Array(NS_LIST_SIZE); break;
      default: return SC.INVALID_LOG_PAGE;
    }
    if (off >= log.length) return SC.INVALID_FIELD;
    const n = Math.min(bytes, log.length - off, 8192);
    return this.prpCopy(log.subarray(off, off + n), true) ? SC.SUCCESS : SC.DATA_TRANSFER_ERROR;
  }

  private setFeatures(): number {
    const fid = this.cdw10 & 0xff;
    if (fid >= NVME_FID_MAX) return SC.INVALID_FIELD;
    const f = this.feat[fid];
    if (f.nsSpecific && this.nsid === GLOBAL_NS) return SC.INVALID_FIELD;
    if (!f.nsSpecific && !(this.nsid === 0 || this.nsid === GLOBAL_NS)) return SC.FEATURE_NOT_NS_SPECIFIC;
    let cdw11 = this.cdw11;
    switch (f.kind) {
      case 'invalid': return SC.INVALID_FIELD;
      case 'queues': {
        if (this.numQIsSet) return SC.COMMAND_SEQUENCE_ERROR;
        const nsqr = cdw11 & 0xffff;
        const ncqr = cdw11 >>> 16;
        if (nsqr === 0xffff || ncqr === 0xffff) return SC.INVALID_FIELD;
        this.numSq = Math.min(nsqr + 1, this.maxQueues);
        this.numCq = Math.min(ncqr + 1, this.maxQueues);
        cdw11 = ((this.numSq - 1) | ((this.numCq - 1) << 16)) >>> 0;
        this.cdw0 = cdw11;
        this.numQIsSet = true;
        break;
      }
      case 'iv': {
        const iv = cdw11 & 0xffff;
        const cd = (cdw11 & (1 << 16)) !== 0;
        if (iv > this.maxQueues + 1) return SC.INVALID_FIELD;
        if (iv === 0 && !cd) return SC.INVALID_FIELD; // no coalescing on the admin queue's vector
        if (!this.cqs.some((q) => q?.vector === iv)) return SC.INVALID_FIELD;
        break;
      }
      case 'aen':
        if (cdw11 & 0x4000) return SC.INVALID_FIELD; // endurance group events
        break;
      case 'temperature': {
        const tmpth = cdw11 & 0xffff;
        const tmpsel = (cdw11 >>> 16) & 0xf;
        const thsel = (cdw11 >>> 20) & 0x3;
        if ((tmpsel !== 0 && tmpsel !== 0xf) || thsel > 1) return SC.INVALID_FIELD;
        const crit = (thsel === 0 && NVME_TEMPERATURE >= tmpth) || (thsel === 1 && NVME_TEMPERATURE <= tmpth);
        if (crit) this.criticalWarning |= 0x2; else this.criticalWarning &= ~0x2;
        f.cdw11 = cdw11;
        if (crit) this.postEvent(1, this.criticalWarning); // SMART / health
        return SC.SUCCESS;
      }
      default: break;
    }
    f.cdw11 = cdw11;
    return SC.SUCCESS;
  }

  private getFeatures(): number {
    const fid = this.cdw10 & 0xff;
    const sel = (this.cdw10 >>> 8) & 0x7;
    if (fid >= NVME_FID_MAX) return SC.INVALID_FIELD;
    const f = this.feat[fid];
    if (f.kind === 'invalid') return SC.INVALID_FIELD;
    this.cdw0 = sel === 3 && f.nsSpecific ? 1 << 1 : f.cdw11;
    return SC.SUCCESS;
  }

  private asyncEventRequest(): number {
    if (this.aers.length === this.ctrlData[259] + 1) return SC.ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED;
    this.aers.push(this.cmd.getUint16(2, true));
    return NO_STATUS;
  }

  /** pci_nvme_aen_post(): one pending event per type. */
  private postEvent(type: number, data: number): void {
    if (this.aenPosted.has(type)) return;
    this.aenPosted.set(type, data);
  }

  /** pci_nvme_aen_process(): completes outstanding AERs with the posted,
   * unmasked events (SMART events masked by the async event configuration). */
  private deliverEvents(): void {
    const cq = this.cqs[0];
    if (!cq) return;
    for (const [type, data] of [...this.aenPosted]) {
      if (this.aers.length === 0 || this.cqFull(cq, 0)) return;
      if (type === 1 && ((this.feat[FEAT.ASYNC_EVENT_CONFIGURATION].cdw11 & 0xff) & data) === 0) continue;
      const lid = type === 1 ? 0x02 : type === 0 ? 0x01 : 0x04;
      const cid = this.aers.shift()!;
      this.complete(cq, 0, this.sqs[0]?.head ?? 0, cid, SC.SUCCESS, ((lid << 16) | (data << 8) | type) >>> 0);
      this.aenPosted.delete(type);
      this.generateMsix(0);
    }
  }

  private formatNvm(): number {
    const ses = (this.cdw10 >>> 9) & 0x7;
    if (ses > 1) return SC.INVALID_FIELD;
    if ((this.cdw10 & 0xf) !== 0) return SC.INVALID_FORMAT;
    if ((this.cdw10 >>> 5) & 0x7) return SC.INVALID_FIELD; // no protection information
    try {
      if (this.store.discard(0, this.store.size) < 0) this.store.writeZeroes(0, this.store.size);
    } catch {
      return SC.INTERNAL_DEVICE_ERROR;
    }
    return SC.SUCCESS;
  }

  // ---- I/O ----

  /** An I/O command: large reads and writes to the pool (with `iopool`),
   * the rest here in the exit. */
  private ioCommand(): number {
    const io = this.io;
    const opc = io.opcode;
    const rw = opc === IO_OPC.READ || opc === IO_OPC.WRITE;
    // Flush covers the writes before it; write zeroes and deallocate keep
    // their order with writes on the pool as they would without it.
    if (!rw) this.drainPool();
    if (!rw || !this.pool || io.nsid !== 1 || io.rwBytes < this.ioMin) return io.execute();
    io.counts.ioCommands++;
    io.cdw0 = 0;
    const write = opc === IO_OPC.WRITE;
    const bad = io.checkReadWrite(write);
    if (bad !== undefined) return bad;
    const bytes = io.rwBytes;
    const segs = io.prpSegments(bytes);
    if (!segs) { io.account(write, bytes, false); return SC.DATA_TRANSFER_ERROR; }
    if (segs.length <= POOL_MAX_SEGS && this.submitToPool(write, io.rwOffset, bytes, segs)) return ON_POOL;
    return io.transfer(write);
  }

  /** Hands a read or write to the I/O pool with its completion entry
   * (reserved here, in queue order: the driver consumes entries in order,
   * and this one turns valid only when the worker writes its phase tag).
   * False: the pool is full or closed, do it here. */
  private submitToPool(write: boolean, offset: number, bytes: number, segs: Array<[number, number]>): boolean {
    const cq = this.curCq!;
    const sq = this.sqs[this.curSqid]!;
    const cid = this.cmd.getUint16(2, true);
    const dw2 = (sq.head | (this.curSqid << 16)) >>> 0;
    const dw3 = (status: number) => (cid | ((((status & 0x7ff) << 1) | cq.phase) << 16)) >>> 0;
    const intr = cq.intrEnabled;
    const vector = cq.vector;
    const ok = this.pool!.submit(0, write, offset, segs, (n) => {
      const good = n === bytes;
      this.io.account(write, bytes, good);
      if (!good) this.own.errors++;
      if (intr) this.poolVectors.add(vector);
    }, {
      post: { gpa: cq.base + cq.tail * 16, ok: [0, 0, dw2, dw3(SC.SUCCESS)], errLast: dw3(SC.DATA_TRANSFER_ERROR) },
      // A polled queue needs nothing more from this thread.
      kick: intr,
    });
    if (!ok) return false;
    this.own.poolRequests++;
    cq.tail++;
    if (cq.tail >= cq.size) { cq.tail = 0; cq.phase ^= 1; }
    return true;
  }

  // ---- device ----

  reset(): void {
    this.drainPool();
    this.controllerReset(); // stops the I/O thread
    this.resetInterrupts();
  }

  close(): void {
    this.stopThread();
    this.pool?.close();
    this.store.close();
  }

  stats(): Record<string, number> {
    this.poll();
    const c = this.interruptCounts;
    return {
      'msi-x messages': c.msix, 'cq doorbell zones': this.cqZones.size, ...this.counts,
      'pool requests before its thread was up': this.pool?.beforeUp ?? 0,
      'pool requests held off': this.pool?.heldOff ?? 0,
      'iothread running': this.thread && !this.thread.starting && !this.thread.failedToStart ? 1 : 0,
      'iothread starts': this.threadStarts,
      'iothread wake-ups': this.thread?.wakeups ?? 0,
      'iothread cq stalls': this.thread?.stalls ?? 0,
      'iothread poll hits': this.thread?.pollHits ?? 0,
      'iothread interrupts': this.threadTotals[STAT_KEYS.indexOf('interrupts')] + (this.thread?.stat(STAT_KEYS.indexOf('interrupts')) ?? 0),
      'msi-x messages by irqfd': this.irqfdMessages + (this.irqfds?.sent ?? 0),
    };
  }
}

/** Reads pci.B.S.F.{path|ram,maxq,qsz,ioslots,sectsz,ser,eui64,dsm} and
 * builds the controller; one clear line when the options or image are bad. */
export function createNvme(ctx: DeviceContext, node: string, where: string): NvmeController {
  const t = ctx.config;
  const err = (msg: string) => new BlockDeviceError(`nvme at pci slot ${where}: ${msg}`);
  const int = (key: string, def: number, ok: (n: number) => boolean, hint: string): number => {
    const v = t.get(`${node}.${key}`);
    if (v === undefined) return def;
    const n = Number(v);
    if (!/^\d+$/.test(v) || !ok(n)) throw err(`invalid ${key} "${v}" (${hint})`);
    return n;
  };
  let maxQueues = int('maxq', NVME_QUEUES, (n) => n >= 0, 'a number of queues');
  if (maxQueues <= 0 || maxQueues > NVME_QUEUES) maxQueues = NVME_QUEUES; // as bhyve: clamped
  const maxQEntries = int('qsz', NVME_MAX_QENTRIES, (n) => n > 0 && n <= 65536, 'entries per queue, 1-65536');
  const ioslots = int('ioslots', NVME_IOSLOTS, (n) => n > 0, 'a positive number');
  const sectsz = int('sectsz', 0, () => true, '512, 4096 or 8192');
  const dsmText = t.get(`${node}.dsm`) ?? 'auto';
  const cqCoalesce = t.getBool(`${node}.cqcoalesce`, true);
  const dbbuf = t.getBool(`${node}.dbbuf`, true);
  const iothread = t.getBool(`${node}.iothread`, IOTHREAD_DEFAULT);
  const iothreadPollUs = int('iothread_poll_us', IOTHREAD_POLL_US_DEFAULT, (n) => n <= 1000, '0 (no polling) to 1000 microseconds');
  const ioThreads = ioPoolThreads(t, node);
  const ioMin = ioPoolMin(t, node);
  if (dsmText !== 'auto' && dsmText !== 'enable' && dsmText !== 'disable') throw err(`invalid dsm "${dsmText}" (use auto, enable or disable)`);
  const [, slot, func] = where.split(':').map(Number);
  const bus = Number(where.split(':')[0]);
  const serial = t.get(`${node}.ser`) ?? `NVME-${slot}-${func}`;
  const euiText = t.get(`${node}.eui64`);
  let eui64: bigint | undefined;
  if (euiText !== undefined) {
    try { eui64 = BigInt(euiText) & 0xffffffffffffffffn; } catch { throw err(`invalid eui64 "${euiText}" (a number, e.g. 0x589cfc0000010001)`); }
  }
  const ram = t.get(`${node}.ram`);
  let store: NvmeStore;
  let sectorSize: number;
  if (ram !== undefined) {
    if (!/^\d+$/.test(ram) || Number(ram) < 1) throw err(`invalid ram "${ram}" (a size in MiB)`);
    try { store = ramStore(Number(ram) * 1024 * 1024); } catch { throw err(`cannot allocate ${ram} MiB for the RAM namespace`); }
    sectorSize = 4096;
  } else {
    let f: BlockFile;
    try {
      const o = blockBackendOptionsFromConfig(t, node, 'nvme');
      f = new BlockFile(o);
      store = fileStore(f, o.nodelete ?? false);
      sectorSize = o.sectorSize ?? 512;
    } catch (e) {
      if (e instanceof BlockDeviceError && !e.message.startsWith('nvme')) throw err(e.message);
      throw e;
    }
  }
  if (sectsz === 512 || sectsz === 4096 || sectsz === 8192) sectorSize = sectsz;
  try {
    return new NvmeController(ctx, {
      store, sectorSize, maxQueues, maxQEntries, ioslots, serial, dsm: dsmText, cqCoalesce, ioThreads, ioMin, dbbuf, iothread, iothreadPollUs,
      eui64: eui64 ?? defaultEui64(t.get('name') ?? '', bus, slot, func, 1),
    });
  } catch (e) {
    store.close();
    throw e;
  }
}

/** A pool request no worker took within this long is done in the next
 * exit instead (the worker waits for a CPU: the synchronous model then). */
const STEAL_AFTER_MS = 0.5;

export { IOPOOL_MIN_DEFAULT, IOPOOL_THREADS_DEFAULT };

function ioPoolThreads(t: ConfigTree, node: string): number {
  const v = t.get(`${node}.iopool`) ?? String(IOPOOL_THREADS_DEFAULT);
  const n = Number(v);
  if (!/^\d+$/.test(v) || n > 8) throw new ConfigError(`nvme at ${node}: invalid iopool "${v}" (0-8 I/O threads)`);
  return n;
}

function ioPoolMin(t: ConfigTree, node: string): number {
  const v = t.get(`${node}.iopool_min`) ?? String(IOPOOL_MIN_DEFAULT);
  const n = Number(v);
  if (!/^\d+$/.test(v) || n > 2 ** 32) throw new ConfigError(`nvme at ${node}: invalid iopool_min "${v}" (bytes)`);
  return n;
}

/** The emulation of nvme's record (nvme-record.ts). */
export const nvmeModel: PciDeviceModel = {
  create: (ctx, s) => createNvme(ctx, s.node, s.where),
};
