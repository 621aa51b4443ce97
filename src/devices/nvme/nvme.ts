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
// refused as bhyve refuses them. I/O: read, write, flush, write zeroes,
// dataset management (deallocate), through PRP entries and PRP lists.
//
// Commands run synchronously when the driver rings a submission doorbell:
// the completion is posted (and its MSI-X vector raised) before the write
// returns; with `iopool=N` (default 1; bhyve's blockif does its I/O on
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
import { IOPOOL_MIN_DEFAULT, IOPOOL_THREADS_DEFAULT, NVME_IOSLOTS, NVME_MAX_QENTRIES, NVME_QUEUES } from './nvme-record.js';
import { PCIY_EXPRESS } from '../pci/config-space.js';
import { PciEmulFunction } from '../pci/pci-emul.js';
import {
  ERROR_LOG_SIZE, NS_LIST_SIZE, NVME_IDENTIFY_SIZE, NVME_MAX_DATA_SIZE, NVME_PAGE, NVME_TEMPERATURE, ONCS_DSM,
  defaultEui64, firmwareLog, healthLog, identifyController, identifyNamespace,
} from './nvme-data.js';
import { fileStore, ramStore, type NvmeStore } from './nvme-store.js';
import { BlockIoPool, POOL_MAX_SEGS } from '../block/io-pool.js';
import { ConfigError, type ConfigTree } from '../../config/tree.js';

export const NVME_VENDOR = 0xfb5d;
export const NVME_DEVICE = 0x0a0a;
export const NVME_MSIX_BAR = 4;
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

// Status: (SCT << 8) | SC; the DNR bit is added separately.
export const SC = {
  SUCCESS: 0x00, INVALID_OPCODE: 0x01, INVALID_FIELD: 0x02, DATA_TRANSFER_ERROR: 0x04, INTERNAL_DEVICE_ERROR: 0x06,
  INVALID_NAMESPACE_OR_FORMAT: 0x0b, COMMAND_SEQUENCE_ERROR: 0x0c, LBA_OUT_OF_RANGE: 0x80,
  // command specific (SCT 1)
  COMPLETION_QUEUE_INVALID: 0x100, INVALID_QUEUE_IDENTIFIER: 0x101, MAXIMUM_QUEUE_SIZE_EXCEEDED: 0x102,
  ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED: 0x105, INVALID_FIRMWARE_SLOT: 0x106, INVALID_INTERRUPT_VECTOR: 0x108,
  INVALID_LOG_PAGE: 0x109, INVALID_FORMAT: 0x10a, INVALID_QUEUE_DELETION: 0x10c, FEATURE_NOT_NS_SPECIFIC: 0x10f,
} as const;
const DNR = 0x4000; // in the status field above SC/SCT (bit 15 of the CQE status, after the phase shift)
/** Command completes later (an AER). */
const NO_STATUS = -1;
/** Command is on the I/O pool, its completion entry reserved. */
const ON_POOL = -2;

const OPC = {
  DELETE_IO_SQ: 0x00, CREATE_IO_SQ: 0x01, GET_LOG_PAGE: 0x02, DELETE_IO_CQ: 0x04, CREATE_IO_CQ: 0x05, IDENTIFY: 0x06,
  ABORT: 0x08, SET_FEATURES: 0x09, GET_FEATURES: 0x0a, ASYNC_EVENT_REQUEST: 0x0c, FIRMWARE_ACTIVATE: 0x10,
  FORMAT_NVM: 0x80, SECURITY_SEND: 0x81, SECURITY_RECEIVE: 0x82, SANITIZE: 0x84, GET_LBA_STATUS: 0x86,
  // I/O
  FLUSH: 0x00, WRITE: 0x01, READ: 0x02, WRITE_ZEROES: 0x08, DATASET_MANAGEMENT: 0x09,
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
}

export interface NvmeStats {
  adminCommands: number;
  ioCommands: number;
  reads: number;
  writes: number;
  bytesRead: number;
  bytesWritten: number;
  flushes: number;
  deallocates: number;
  errors: number;
  cqDoorbells: number;
  cqDoorbellsCoalesced: number;
  poolRequests: number;
}

export class NvmeController extends PciEmulFunction {
  readonly store: NvmeStore;
  readonly sectorSize: number;
  readonly maxQueues: number;
  readonly maxQEntries: number;
  readonly counts: NvmeStats = {
    adminCommands: 0, ioCommands: 0, reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, flushes: 0, deallocates: 0, errors: 0,
    cqDoorbells: 0, cqDoorbellsCoalesced: 0, poolRequests: 0,
  };
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
  private readonly counters = { dataUnitsRead: 0n, dataUnitsWritten: 0n, readCommands: 0n, writeCommands: 0n, readRem: 999, writeRem: 999 };
  private readonly iov: Uint8Array[] = [];
  private readonly cmd = new DataView(new ArrayBuffer(64));
  private readonly cmdBytes = new Uint8Array(this.cmd.buffer);
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
  private readonly segs: Array<[number, number]> = [];

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
    this.ctrlData = identifyController({ serial: o.serial, dsm });
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
    this.bar0 = base;
    if (base === undefined || !this.cqCoalesce) return;
    for (let qid = 0; qid <= this.maxQueues; qid++) if (!this.cqMustExit.has(qid)) this.setCqZone(qid, true);
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
    if (isSq) {
      const sq = this.sqs[qid];
      if (!sq || qid > this.numSq || value >= sq.size) return; // invalid doorbell write: ignored
      sq.tail = value;
      this.runSq(qid);
    } else {
      this.counts.cqDoorbells++;
      if (this.ctx.kvm?.replayingCoalesced?.()) this.counts.cqDoorbellsCoalesced++;
      const cq = this.cqs[qid];
      if (!cq || qid > this.numCq || value >= cq.size) return;
      cq.head = value;
      // Room in the CQ again: resume the submission queues that wait for it.
      for (let i = 0; i < this.sqs.length; i++) if (this.sqs[i]?.cqid === qid) this.runSq(i);
    }
  }

  // ---- queues ----

  private cqFull(cq: Cq): boolean {
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
    const sq = this.sqs[qid];
    if (!sq) return;
    const cq = this.cqs[sq.cqid];
    if (!cq) return;
    // Admin commands change queues and namespace state: nothing of the
    // I/O pool's may be in flight then.
    if (qid === 0 && sq.head !== sq.tail) this.drainPool();
    this.curSqid = qid;
    this.curCq = cq;
    let posted = false;
    for (let n = 0; sq.head !== sq.tail && n < sq.size; n++) {
      if (this.cqFull(cq)) { this.cqStalled(sq.cqid); break; }
      const at = sq.base + sq.head * 64;
      this.cmdBytes.set(this.ctx.mem.slice(at, 64));
      sq.head = (sq.head + 1) % sq.size;
      const status = qid === 0 ? this.adminCommand() : this.ioCommand();
      if (status === NO_STATUS || status === ON_POOL) continue;
      this.complete(cq, qid, sq.head, this.cmd.getUint16(2, true), status, this.cdw0);
      posted = true;
      if (!this.sqs[qid]) break; // the command deleted its own queue
    }
    if (posted && cq.intrEnabled) this.generateMsix(cq.vector);
    // Async events complete after the commands that caused them, as bhyve's
    // event thread completes them after the admin queue is processed.
    if (qid === 0) this.deliverEvents();
  }

  private cdw0 = 0;

  /** pci_nvme_cq_update(): one completion entry, phase tag flipped per pass. */
  private complete(cq: Cq, sqid: number, sqhd: number, cid: number, status: number, cdw0: number): void {
    const at = cq.base + cq.tail * 16;
    const e = this.ctx.mem.slice(at, 16);
    const v = new DataView(e.buffer, e.byteOffset, 16);
    v.setUint32(0, cdw0 >>> 0, true);
    v.setUint32(4, 0, true);
    v.setUint16(8, sqhd, true);
    v.setUint16(10, sqid, true);
    v.setUint16(12, cid, true);
    const dnr = status & DNR ? 0x8000 : 0;
    v.setUint16(14, (((status & 0x7ff) << 1) | dnr | cq.phase) & 0xffff, true);
    if (status & 0x7ff) this.counts.errors++;
    cq.tail++;
    if (cq.tail >= cq.size) { cq.tail = 0; cq.phase ^= 1; }
  }

  private get cdw10(): number { return this.cmd.getUint32(40, true); }
  private get cdw11(): number { return this.cmd.getUint32(44, true); }
  private get cdw12(): number { return this.cmd.getUint32(48, true); }
  private get cdw13(): number { return this.cmd.getUint32(52, true); }
  private get nsid(): number { return this.cmd.getUint32(4, true); }
  private get prp1(): number { return this.cmd.getUint32(28, true) * 0x100000000 + ((this.cmd.getUint32(24, true) & ~3) >>> 0); }
  private get prp2(): number { return this.cmd.getUint32(36, true) * 0x100000000 + ((this.cmd.getUint32(32, true) & ~3) >>> 0); }

  // ---- PRPs ----

  /** Guest-physical segments of a data transfer of `bytes` described by
   * PRP1/PRP2 (PRP2 a second page or a PRP list, lists chained by their
   * last entry), physically contiguous pages merged; each page checked to
   * be guest RAM. Undefined when any of it is not. */
  private prpSegments(bytes: number): Array<[number, number]> | undefined {
    const mem = this.ctx.mem;
    const segs = this.segs;
    segs.length = 0;
    try {
      const prp1 = this.prp1;
      const first = Math.min(NVME_PAGE - (prp1 % NVME_PAGE), bytes);
      // The run of contiguous pages being built; checked when it ends.
      let runAt = prp1;
      let runLen = first;
      let left = bytes - first;
      if (left > 0 && left <= NVME_PAGE) {
        const gpa = this.prp2;
        if (runAt + runLen === gpa) runLen += left;
        else { segs.push([runAt, runLen]); runAt = gpa; runLen = left; }
        left = 0;
      }
      let list = this.prp2;
      let entries = Math.floor((NVME_PAGE - (list % NVME_PAGE)) / 8);
      // The list's entries up to its page's end, read through one view (a
      // page is guest RAM as a whole or not at all).
      let words = left > 0 && entries >= 1 ? this.listWords(list, entries) : undefined;
      let wordsAt = list;
      while (left > 0) {
        if (entries === 1 && left > NVME_PAGE) { // the last entry points to the next list
          list = this.prpEntry(words, wordsAt, list);
          entries = Math.floor((NVME_PAGE - (list % NVME_PAGE)) / 8);
          words = entries >= 1 ? this.listWords(list, entries) : undefined;
          wordsAt = list;
          continue;
        }
        const size = Math.min(left, NVME_PAGE);
        const gpa = this.prpEntry(words, wordsAt, list);
        if (runAt + runLen === gpa) runLen += size;
        else { segs.push([runAt, runLen]); runAt = gpa; runLen = size; }
        left -= size;
        list += 8;
        entries--;
      }
      segs.push([runAt, runLen]);
      for (let i = 0; i < segs.length; i++) if (!this.isRam(segs[i][0], segs[i][1])) return undefined;
      return segs;
    } catch {
      return undefined;
    }
  }

  /** The PRP list entries from `list` to its page's end, as a view. */
  private listWords(list: number, entries: number): DataView {
    const b = this.ctx.mem.slice(list, entries * 8);
    return new DataView(b.buffer, b.byteOffset, b.byteLength);
  }

  /** The PRP entry at `at`, from `words` (read at `wordsAt`) when it holds it. */
  private prpEntry(words: DataView | undefined, wordsAt: number, at: number): number {
    const o = at - wordsAt;
    if (words && o >= 0 && o + 8 <= words.byteLength) return words.getUint32(o + 4, true) * 0x100000000 + ((words.getUint32(o, true) & ~3) >>> 0);
    const mem = this.ctx.mem;
    return mem.readU32(at + 4) * 0x100000000 + ((mem.readU32(at) & ~3) >>> 0);
  }

  /** Whether every page of [gpa, gpa+len) is guest RAM (the range may run
   * on across RAM chunks that touch). */
  private isRam(gpa: number, len: number): boolean {
    const mem = this.ctx.mem;
    if (mem.contains(gpa, len)) return true;
    for (let at = gpa; at < gpa + len;) {
      const n = Math.min(gpa + len - at, NVME_PAGE - (at % NVME_PAGE));
      if (!mem.contains(at, n)) return false;
      at += n;
    }
    return true;
  }

  /** Guest buffers of a data transfer of `bytes` (prpSegments as views).
   * Undefined when any of it is not guest RAM. */
  private prpViews(bytes: number): Uint8Array[] | undefined {
    const segs = this.prpSegments(bytes);
    if (!segs) return undefined;
    const views = this.iov;
    views.length = 0;
    try {
      for (const [gpa, len] of segs) this.ctx.mem.slices(gpa, len, views);
      return views;
    } catch {
      return undefined;
    }
  }

  /** nvme_prp_memcpy(): admin data (at most 8 KiB) to or from PRP1/PRP2. */
  private prpCopy(buf: Uint8Array, toGuest: boolean): boolean {
    const views = this.prpViews(buf.length);
    if (!views) return false;
    let off = 0;
    for (const v of views) {
      if (toGuest) v.set(buf.subarray(off, off + v.length));
      else buf.set(v, off);
      off += v.length;
    }
    return true;
  }

  // ---- admin ----

  private adminCommand(): number {
    this.counts.adminCommands++;
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
        const c = this.counters;
        log = healthLog({ criticalWarning: this.criticalWarning, dataUnitsRead: c.dataUnitsRead, dataUnitsWritten: c.dataUnitsWritten, readCommands: c.readCommands, writeCommands: c.writeCommands });
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
      if (this.aers.length === 0 || this.cqFull(cq)) return;
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

  private ioCommand(): number {
    this.counts.ioCommands++;
    this.cdw0 = 0;
    const nsid = this.nsid;
    if (nsid === 0 || nsid > 1) return SC.INVALID_NAMESPACE_OR_FORMAT | DNR;
    const opc = this.cmd.getUint8(0);
    // Flush covers the writes before it; write zeroes and deallocate keep
    // their order with writes on the pool as they would without it.
    if (opc !== OPC.READ && opc !== OPC.WRITE) this.drainPool();
    switch (opc) {
      case OPC.FLUSH:
        try { this.store.flush(); } catch { return SC.INTERNAL_DEVICE_ERROR; }
        this.counts.flushes++;
        return SC.SUCCESS;
      case OPC.READ:
      case OPC.WRITE:
        return this.readWrite(this.cmd.getUint8(0) === OPC.WRITE);
      case OPC.WRITE_ZEROES: {
        const lba = this.cdw11 * 0x100000000 + this.cdw10;
        const n = (this.cdw12 & 0xffff) + 1;
        if (this.outOfRange(lba, n)) return SC.LBA_OUT_OF_RANGE;
        if (this.store.readOnly) return SC.INVALID_FIELD;
        try { this.store.writeZeroes(lba * this.sectorSize, n * this.sectorSize); } catch { return SC.DATA_TRANSFER_ERROR; }
        return SC.SUCCESS;
      }
      case OPC.DATASET_MANAGEMENT:
        return this.datasetManagement();
      default:
        return SC.INVALID_OPCODE;
    }
  }

  private outOfRange(lba: number, blocks: number): boolean {
    const off = lba * this.sectorSize;
    return !Number.isSafeInteger(off) || off >= this.store.size || this.store.size - off < blocks * this.sectorSize;
  }

  /** SMART data units: thousands of 512-byte blocks, rounded up. */
  private account(write: boolean, bytes: number, ok: boolean): void {
    const c = this.counters;
    if (write) {
      c.writeCommands++;
      if (!ok) return;
      c.writeRem += bytes / 512;
      while (c.writeRem >= 1000) { c.dataUnitsWritten++; c.writeRem -= 1000; }
    } else {
      c.readCommands++;
      if (!ok) return;
      c.readRem += bytes / 512;
      while (c.readRem >= 1000) { c.dataUnitsRead++; c.readRem -= 1000; }
    }
  }

  private readWrite(write: boolean): number {
    const lba = this.cdw11 * 0x100000000 + this.cdw10;
    const blocks = (this.cdw12 & 0xffff) + 1;
    const bytes = blocks * this.sectorSize;
    if (bytes > NVME_MAX_DATA_SIZE) { this.account(write, bytes, false); return SC.INVALID_FIELD; }
    if (this.outOfRange(lba, blocks)) { this.account(write, bytes, false); return SC.LBA_OUT_OF_RANGE; }
    if (write && this.store.readOnly) { this.account(write, bytes, false); return SC.INVALID_FIELD; }
    if (this.pool && bytes >= this.ioMin) {
      const segs = this.prpSegments(bytes);
      if (!segs) { this.account(write, bytes, false); return SC.DATA_TRANSFER_ERROR; }
      if (segs.length <= POOL_MAX_SEGS && this.submitToPool(write, lba * this.sectorSize, bytes, segs)) return ON_POOL;
    }
    const views = this.prpViews(bytes);
    let ok = views !== undefined;
    if (views) {
      try {
        const n = write ? this.store.writev(views, lba * this.sectorSize) : this.store.readv(views, lba * this.sectorSize);
        ok = n === bytes;
      } catch {
        ok = false;
      }
    }
    this.account(write, bytes, ok);
    if (!ok) return SC.DATA_TRANSFER_ERROR;
    if (write) { this.counts.writes++; this.counts.bytesWritten += bytes; } else { this.counts.reads++; this.counts.bytesRead += bytes; }
    return SC.SUCCESS;
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
      this.account(write, bytes, good);
      if (!good) this.counts.errors++;
      else if (write) { this.counts.writes++; this.counts.bytesWritten += bytes; } else { this.counts.reads++; this.counts.bytesRead += bytes; }
      if (intr) this.poolVectors.add(vector);
    }, {
      post: { gpa: cq.base + cq.tail * 16, ok: [0, 0, dw2, dw3(SC.SUCCESS)], errLast: dw3(SC.DATA_TRANSFER_ERROR) },
      // A polled queue needs nothing more from this thread.
      kick: intr,
    });
    if (!ok) return false;
    this.counts.poolRequests++;
    cq.tail++;
    if (cq.tail >= cq.size) { cq.tail = 0; cq.phase ^= 1; }
    return true;
  }

  private datasetManagement(): number {
    if (!(this.ctrlData[520] & ONCS_DSM)) return SC.INVALID_OPCODE;
    const nr = (this.cdw10 & 0xff) + 1;
    const ranges = new Uint8Array(4096);
    if (!this.prpCopy(ranges.subarray(0, nr * 16), false)) return SC.DATA_TRANSFER_ERROR;
    const v = new DataView(ranges.buffer);
    const list: Array<[number, number]> = [];
    for (let r = 0; r < nr; r++) {
      const len = v.getUint32(r * 16 + 4, true);
      const slba = Number(v.getBigUint64(r * 16 + 8, true));
      if (this.outOfRange(slba, len) && !(len === 0 && slba * this.sectorSize <= this.store.size)) return SC.LBA_OUT_OF_RANGE;
      if (len) list.push([slba * this.sectorSize, len * this.sectorSize]);
    }
    if (!(this.cdw11 & 0x4)) return SC.SUCCESS; // only deallocate does anything
    if (!this.deallocate || list.length === 0) return SC.SUCCESS; // advisory
    for (const [off, len] of list) {
      if (this.store.discard(off, len) < 0) {
        try { this.store.writeZeroes(off, len); } catch { return SC.INTERNAL_DEVICE_ERROR; }
      }
      this.counts.deallocates++;
    }
    return SC.SUCCESS;
  }

  // ---- device ----

  reset(): void {
    this.drainPool();
    this.controllerReset();
    this.resetInterrupts();
  }

  close(): void {
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
      store, sectorSize, maxQueues, maxQEntries, ioslots, serial, dsm: dsmText, cqCoalesce, ioThreads, ioMin,
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
