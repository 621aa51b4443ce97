// The AHCI SATA controller, bhyve's pci_ahci.c: an Intel ICH8 AHCI function
// (8086:2821, class 01/06/01) with up to 32 ports, each a SATA disk (hd) or
// an ATAPI CD-ROM (cd) on the shared block backend (../block/).
//
//   -s 4,ahci,hd:/img/disk.raw,cd:/img/install.iso     ports 0 and 1
//   -s 4,ahci-hd,/img/disk.raw[,opts]                    port 0, a disk
//   -s 4,ahci-cd,/img/install.iso                        port 0, a CD-ROM
//
// Config (bhyve_config(5)): pci.B.S.F.port.N.{type,path,ro,nocache,direct,
// sectorsize,nodelete,nmrr,ser,rev,model}. The HBA has at least 6 ports
// (ICH8's), more when a port number above 5 is configured; PxSSTS of an
// unconfigured port says "no device". Registers live in BAR 5 (ABAR):
// generic host control at 0, port N at 0x100 + 0x80 * N.
//
// Interrupts as bhyve: MSI with as many messages as ports (a power of two,
// at most 16; the last one shared by the remaining ports), else INTx while
// GHC.IE is set and any port's PxIS & PxIE is non-zero (level, cleared when
// the driver clears IS).

import { ConfigError, type ConfigTree } from '../../config/tree.js';
import type { DeviceContext } from '../device.js';
import type { PciDeviceModel } from '../pci-device.js';
import {
  BlockDeviceError, BlockFile, bhyveSerial, blockBackendOptionsFromConfig,
} from '../block/block-backend.js';
import { AHCI_MAX_PORTS, IOPOOL_MERGE_DEFAULT, IOPOOL_MIN_DEFAULT, IOPOOL_THREADS_DEFAULT } from './ahci-record.js';
import { PciEmulFunction } from '../pci/pci-emul.js';
import {
  AHCI_CAP, AHCI_CAP2, AHCI_CAP2_APST, AHCI_CAP_64BIT, AHCI_CAP_ISS_SHIFT, AHCI_CAP_NCS_SHIFT, AHCI_CAP_PMD,
  AHCI_CAP_PSC, AHCI_CAP_SAL, AHCI_CAP_SALP, AHCI_CAP_SCLO, AHCI_CAP_SMPS, AHCI_CAP_SNCQ, AHCI_CAP_SSC,
  AHCI_CAP_SSNTF, AHCI_CAP_SSS, AHCI_CAP_SXS, AHCI_CCCC, AHCI_CCCP, AHCI_EM_CTL, AHCI_EM_LOC, AHCI_GHC,
  AHCI_GHC_AE, AHCI_GHC_HR, AHCI_GHC_IE, AHCI_IS, AHCI_OFFSET, AHCI_P_CMD, AHCI_P_CMD_POD, AHCI_P_CMD_SUD,
  AHCI_P_CI, AHCI_P_FBS, AHCI_P_IE, AHCI_P_IS, AHCI_P_SACT, AHCI_P_SERR, AHCI_P_SIG, AHCI_P_SSTS, AHCI_P_TFD, AHCI_PI,
  AHCI_STEP, AHCI_VS,
} from './ahci-constants.js';
import { BlockIoPool } from '../block/io-pool.js';
import { barSize } from '../pci/bar-alloc.js';
import { PAGE_SIZE } from '../../sys/memory-map.js';

/** The last implemented register of a port block (PxFBS); the rest read 0. */
const PORT_LAST_REG = AHCI_P_FBS;
import { AhciPort } from './ahci-port.js';

export const AHCI_DEF_PORTS = 6;
// The defaults its record documents (ahci-record.ts).
export { AHCI_MAX_PORTS, IOPOOL_MERGE_DEFAULT, IOPOOL_MIN_DEFAULT, IOPOOL_THREADS_DEFAULT };
export const AHCI_BAR = 5;
export const AHCI_VENDOR = 0x8086;
export const AHCI_DEVICE = 0x2821;
const PCIC_STORAGE = 0x01;
const PCIS_STORAGE_SATA = 0x06;
const PCIP_STORAGE_SATA_AHCI_1_0 = 0x01;

export interface AhciPortConfig {
  index: number;
  type: 'hd' | 'cd';
  backend: BlockFile;
  sectorSize: number;
  physicalSectorSize: number;
  nodelete: boolean;
  serial: string;
  revision?: string;
  model?: string;
  nmrr?: number;
}

export class AhciController extends PciEmulFunction {
  readonly ports: Array<AhciPort | undefined> = new Array(AHCI_MAX_PORTS).fill(undefined);
  /** Port register blocks decoded (at least AHCI_DEF_PORTS). */
  readonly portCount: number;
  readonly cap: number;
  readonly pi: number;
  readonly cap2 = AHCI_CAP2_APST;
  readonly vs = 0x10300;
  ghc = AHCI_GHC_AE;
  is = 0;
  /** sc->lintr: whether this controller asserted its INTx line. */
  private lintrAsserted = false;
  /** With `regpage`: ABAR as the guest reads it, from a read-only page
   * (no exit per register read: drivers poll PxCI, PxSACT, PxTFD, PxIS).
   * Every write still exits to abarWrite, which refreshes the page. */
  private readonly regPage: DataView | undefined;
  private regPageMapped = false;
  /** Guest register reads that reached abarRead (an exit each). */
  private readExits = 0;
  /** With `sactcoalesce`: PxSACT writes go into KVM's coalesced MMIO ring
   * (no exit); the PxCI write that issues the NCQ command exits and the
   * device host replays the buffered PxSACT writes before it, in order. */
  private readonly sactCoalesce: boolean;
  /** ABAR offsets of the PxSACT registers that have a zone now. */
  private readonly sactZones = new Set<number>();
  private abarBase: number | undefined;
  /** With `iopool`: I/O threads for the disk ports' large NCQ transfers. */
  readonly pool: BlockIoPool | undefined;

  constructor(ctx: DeviceContext, configs: AhciPortConfig[],
    opts: { regPage?: boolean; sactCoalesce?: boolean; ioThreads?: number; ioMin?: number; ioMerge?: number; threadSact?: boolean } = {}) {
    super('ahci', ctx);
    let pi = 0;
    let last = -1;
    for (const c of configs) {
      this.ports[c.index] = new AhciPort({
        index: c.index,
        atapi: c.type === 'cd',
        backend: c.backend,
        ident: { serial: c.serial, revision: c.revision, model: c.model, mediaRotationRate: c.nmrr },
        sectorSize: c.sectorSize,
        physicalSectorSize: c.physicalSectorSize,
        canDelete: !c.nodelete && !c.backend.readOnly,
      }, () => this.ctx.mem, (p) => this.portIntr(p));
      pi |= 1 << c.index;
      last = Math.max(last, c.index);
    }
    this.pi = pi >>> 0;
    this.portCount = Math.max(last + 1, AHCI_DEF_PORTS);
    const slots = 32 - 1;
    this.cap = (AHCI_CAP_64BIT | AHCI_CAP_SNCQ | AHCI_CAP_SSNTF | AHCI_CAP_SMPS | AHCI_CAP_SSS | AHCI_CAP_SALP
      | AHCI_CAP_SAL | AHCI_CAP_SCLO | (0x3 << AHCI_CAP_ISS_SHIFT) | AHCI_CAP_PMD | AHCI_CAP_SSC | AHCI_CAP_PSC
      | (slots << AHCI_CAP_NCS_SHIFT) | AHCI_CAP_SXS | (this.portCount - 1)) >>> 0;
    this.cfg.setIdentity({
      vendor: AHCI_VENDOR, device: AHCI_DEVICE, classCode: PCIC_STORAGE, subclass: PCIS_STORAGE_SATA,
      progIf: PCIP_STORAGE_SATA_AHCI_1_0,
    });
    // MSI messages: the next power of two >= ports, at most 16.
    const p = Math.min(this.portCount, 16);
    this.addMsiCap(1 << Math.ceil(Math.log2(p)));
    // The register page makes ABAR at least a page (as QEMU's 4 KiB ABAR),
    // so that no other BAR shares it.
    const abarBytes = AHCI_OFFSET + this.portCount * AHCI_STEP;
    const pages = opts.regPage ? ctx.kvm?.registerPages?.(barSize('mem32', Math.max(abarBytes, PAGE_SIZE))) : undefined;
    if (pages) this.regPage = new DataView(pages.bytes.buffer, pages.bytes.byteOffset, pages.bytes.byteLength);
    this.sactCoalesce = opts.sactCoalesce ?? false;
    this.allocBar(AHCI_BAR, 'mem32', pages ? pages.bytes.byteLength : abarBytes, {
      read: (o, s) => this.abarRead(o, s),
      write: (o, s, v) => this.abarWrite(o, s, v),
      decoded: (base) => this.placeSactZones(base),
      pages: pages && {
        bytes: pages.bytes,
        map: (gpa) => (this.regPageMapped = pages.map(gpa)),
        unmap: () => { pages.unmap(); this.regPageMapped = false; },
      },
    });
    this.requestIntx();
    // I/O threads map guest RAM from the VM's memory file (the helper
    // data); without one (unit tests) the pool keeps its bookkeeping but
    // runs each request on this thread at the next poll() or exit.
    const disks = this.ports.filter((p): p is AhciPort => p !== undefined && !p.atapi);
    // Unset: one thread where it can complete commands itself (a register
    // page its threads can map), none otherwise (each completion would
    // need a ring of vCPU 0, which costs about what the thread saves).
    const threads = opts.ioThreads ?? IOPOOL_THREADS_DEFAULT;
    if (threads > 0 && disks.length > 0) {
      const helper = ctx.kvm?.helper;
      // With the register page the threads complete NCQ transfers
      // themselves (PxSACT is a word of that page; ahci-port.ts).
      const words = pages && opts.threadSact !== false ? new Int32Array(pages.bytes.buffer, pages.bytes.byteOffset, pages.bytes.byteLength >> 2) : undefined;
      this.pool = new BlockIoPool(threads, helper?.memoryPath ? helper : undefined, disks.map((p) => p.backend), () => this.ctx.mem,
        { page: words && { words, fd: pages!.fd }, mergeMax: opts.ioMerge ?? IOPOOL_MERGE_DEFAULT });
      disks.forEach((p, i) => p.useIoPool(this.pool!, i, opts.ioMin ?? IOPOOL_MIN_DEFAULT,
        words && { words, index: (AHCI_OFFSET + p.index * AHCI_STEP + AHCI_P_SACT) >> 2 }));
    }
    this.hbaReset();
    this.syncRegPage();
  }

  /** The I/O threads' finished transfers: complete their commands (FIS,
   * PxSACT, interrupt) and refresh the register page. */
  poll(): void {
    if (this.pool && this.pool.pending > 0) {
      this.pool.stealStale(STEAL_AFTER_MS);
      if (this.pool.reap() > 0) this.syncRegPage();
    }
  }

  /** Before a write that stops, resets or moves what commands in flight
   * use: finish them first, so the write sees what it would without the
   * pool (every command done before the next register access). */
  private drainPool(): void {
    if (this.pool && this.pool.pending > 0) {
      this.pool.drain();
      this.syncRegPage();
    }
  }

  /** ABAR now decodes at `base` (undefined: nowhere): the PxSACT zones of
   * the ports with a device move with it. Removing a zone replays what KVM
   * buffered for it. */
  private placeSactZones(base: number | undefined): void {
    for (const off of [...this.sactZones]) {
      this.sactZones.delete(off);
      if (this.abarBase !== undefined) this.ctx.kvm?.coalesce?.(this.abarBase + off, 4, false);
    }
    this.abarBase = base;
    if (base === undefined || !this.sactCoalesce) return;
    for (const p of this.ports) {
      if (!p || p.atapi) continue; // ATAPI has no NCQ: its drivers never write PxSACT
      const off = AHCI_OFFSET + p.index * AHCI_STEP + AHCI_P_SACT;
      if (this.ctx.kvm?.coalesce?.(base + off, 4, true)) this.sactZones.add(off);
    }
  }

  /** PxSACT registers whose writes are coalesced now (stats, tests). */
  get coalescedSactPorts(): number { return this.sactZones.size; }

  /** Whether register reads come from the read-only page. */
  get registerPage(): boolean { return this.regPage !== undefined; }

  /** Refreshes the register page from the registers: every port and the
   * whole host block (`only` undefined), or port `only` and the host
   * registers that change at run time (GHC, IS; a write to one port's
   * block). Within a port, PxSACT and PxCI go last, so a reader that sees
   * a command done also sees its status (PxTFD, PxIS). */
  private syncRegPage(only?: number): void {
    const v = this.regPage;
    if (!v) return;
    if (only === undefined) {
      for (let n = 0; n < this.portCount; n++) this.syncPortPage(v, n);
      for (let reg = 0; reg <= AHCI_CAP2; reg += 4) v.setUint32(reg, this.hostRead(reg), true);
      return;
    }
    this.syncPortPage(v, only);
    this.syncHostWords();
  }

  private syncHostWords(): void {
    const v = this.regPage;
    if (!v) return;
    v.setUint32(AHCI_GHC, this.ghc >>> 0, true);
    v.setUint32(AHCI_IS, this.is >>> 0, true);
  }

  /** Port `n`'s PxSACT into the page (unless it is the page's word). */
  private syncSact(n: number): void {
    const v = this.regPage;
    const p = this.ports[n];
    if (!v || !p || p.sactShared) return;
    v.setUint32(AHCI_OFFSET + n * AHCI_STEP + AHCI_P_SACT, p.sact >>> 0, true);
  }

  private syncPortPage(v: DataView, n: number): void {
    const base = AHCI_OFFSET + n * AHCI_STEP;
    const p = this.ports[n];
    if (!p) {
      for (let off = 0; off <= PORT_LAST_REG; off += 4) v.setUint32(base + off, this.portRead(base + off), true);
      return;
    }
    // The port's registers straight from its fields (this runs at every
    // register write: a read() per register was most of that write's cost).
    p.syncPage(v, base);
  }

  /** ahci_reset(): GHC.HR, and power-on. */
  private hbaReset(): void {
    this.ghc = AHCI_GHC_AE;
    this.is = 0;
    if (this.lintrAsserted) { this.intxDeassert(); this.lintrAsserted = false; }
    for (const p of this.ports) p?.hbaReset();
  }

  /** ahci_port_intr(): a port's PxIS & PxIE changed. */
  private portIntr(p: AhciPort): void {
    if ((p.is & p.ie) === 0) return;
    const nmsg = this.msiMessageCount;
    const bit = (1 << p.index) >>> 0;
    if (this.portCount <= nmsg || p.index < nmsg - 1) {
      // A message of its own.
      this.is = (this.is | bit) >>> 0;
      if (!(this.ghc & AHCI_GHC_IE)) return;
      this.generateMsi(p.index);
      return;
    }
    if (this.is & bit) return;
    this.is = (this.is | bit) >>> 0;
    if (!(this.ghc & AHCI_GHC_IE)) return;
    if (nmsg > 0) this.generateMsi(nmsg - 1);
    else if (!this.lintrAsserted) { this.lintrAsserted = true; this.intxAssert(); }
  }

  /** ahci_generate_intr(): after GHC or IS writes. */
  private generateIntr(mask: number): void {
    for (const p of this.ports) if (p && (p.is & p.ie)) this.is = (this.is | (1 << p.index)) >>> 0;
    if (this.is === 0 || !(this.ghc & AHCI_GHC_IE)) {
      if (this.lintrAsserted) { this.intxDeassert(); this.lintrAsserted = false; }
      return;
    }
    const nmsg = this.msiMessageCount;
    if (nmsg === 0) {
      if (!this.lintrAsserted) { this.lintrAsserted = true; this.intxAssert(); }
      return;
    }
    for (let i = 0; i < nmsg; i++) {
      const mmask = this.portCount <= nmsg || i < nmsg - 1 ? (1 << i) >>> 0 : (0xffffffff << i) >>> 0;
      if ((this.is & mask) && (mmask & mask)) this.generateMsi(i);
    }
  }

  private abarRead(off: number, size: number): number {
    this.readExits++;
    this.poll();
    const reg = off & ~3;
    let v: number;
    if (reg < AHCI_OFFSET) v = this.hostRead(reg);
    else if (reg < AHCI_OFFSET + this.portCount * AHCI_STEP) v = this.portRead(reg);
    else v = 0;
    v = v >>> (8 * (off & 3));
    return size === 4 ? v >>> 0 : v & ((1 << (8 * size)) - 1);
  }

  private abarWrite(off: number, size: number, value: number): void {
    // bhyve asserts 4-byte aligned dword writes; others are dropped here.
    if (size !== 4 || (off & 3) !== 0) return;
    this.poll();
    if (this.pool && this.pool.pending > 0 && !POOL_SAFE_WRITES.has(off < AHCI_OFFSET ? off : (off - AHCI_OFFSET) % AHCI_STEP + AHCI_OFFSET)) this.drainPool();
    if (off < AHCI_OFFSET) {
      this.hostWrite(off, value >>> 0);
      // IS and GHC (without HR) change only those two words.
      if (off === AHCI_IS || (off === AHCI_GHC && !(value & AHCI_GHC_HR))) this.syncHostWords();
      else this.syncRegPage();
    } else if (off < AHCI_OFFSET + this.portCount * AHCI_STEP) {
      const n = Math.floor((off - AHCI_OFFSET) / AHCI_STEP);
      this.portWrite(off, value >>> 0);
      // A PxSACT write (one per NCQ command) sets bits of that word only.
      if ((off - AHCI_OFFSET) % AHCI_STEP === AHCI_P_SACT) this.syncSact(n);
      else this.syncRegPage(n);
    }
  }

  private hostRead(reg: number): number {
    switch (reg) {
      case AHCI_CAP: return this.cap;
      case AHCI_GHC: return this.ghc >>> 0;
      case AHCI_IS: return this.is >>> 0;
      case AHCI_PI: return this.pi;
      case AHCI_VS: return this.vs;
      case AHCI_CAP2: return this.cap2;
      case AHCI_CCCC: case AHCI_CCCP: case AHCI_EM_LOC: case AHCI_EM_CTL: return 0;
      default: return 0;
    }
  }

  private hostWrite(reg: number, value: number): void {
    switch (reg) {
      case AHCI_GHC:
        if (value & AHCI_GHC_HR) { this.hbaReset(); break; }
        if (value & AHCI_GHC_IE) this.ghc = (this.ghc | AHCI_GHC_IE) >>> 0;
        else this.ghc = (this.ghc & ~AHCI_GHC_IE) >>> 0;
        this.generateIntr(0xffffffff);
        break;
      case AHCI_IS:
        this.is = (this.is & ~value) >>> 0;
        this.generateIntr(value);
        break;
      default: break; // CAP, PI, VS, CAP2 are read-only
    }
  }

  private portRead(reg: number): number {
    const n = Math.floor((reg - AHCI_OFFSET) / AHCI_STEP);
    const off = (reg - AHCI_OFFSET) % AHCI_STEP;
    const p = this.ports[n];
    if (p) return p.read(off);
    // A port with nothing attached (ahci_port_reset without a backend).
    const e = AhciPort.emptyPortRegs();
    switch (off) {
      case AHCI_P_SSTS: return e.ssts;
      case AHCI_P_SIG: return e.sig >>> 0;
      case AHCI_P_TFD: return e.tfd;
      case AHCI_P_CMD: return AHCI_P_CMD_SUD | AHCI_P_CMD_POD;
      default: return 0;
    }
  }

  private portWrite(reg: number, value: number): void {
    const n = Math.floor((reg - AHCI_OFFSET) / AHCI_STEP);
    this.ports[n]?.write((reg - AHCI_OFFSET) % AHCI_STEP, value);
  }

  /** Machine reset: the HBA as at power-on, interrupts off. */
  reset(): void {
    this.drainPool();
    this.hbaReset();
    this.resetInterrupts();
    this.syncRegPage();
  }

  close(): void {
    this.pool?.close();
    for (const p of this.ports) p?.backend.close();
  }

  stats(): Record<string, number> {
    const c = this.interruptCounts;
    const out: Record<string, number> = {
      'msi messages': c.msi, 'intx assertions': c.intx,
      'register page mapped': this.regPageMapped ? 1 : 0, 'register reads by exit': this.readExits,
      'PxSACT writes coalesced (ports)': this.sactZones.size,
      'io pool requests': this.pool?.submitted ?? 0, 'io pool requests done here': this.pool?.stolen ?? 0,
      'io pool threads up': this.pool?.workersUp ?? 0,
      'io pool requests held off': this.pool?.heldOff ?? 0,
      'io pool requests merged': this.pool?.merged ?? 0,
    };
    for (const p of this.ports) {
      if (!p) continue;
      for (const [k, v] of Object.entries(p.stats)) out[`port ${p.index} ${k}`] = v;
    }
    return out;
  }
}

/** Register writes that need no drain of the I/O pool first: issuing
 * (PxCI, PxSACT) and acknowledging (PxIS, PxIE, PxSERR, IS) touch nothing
 * a command in flight uses. Offsets: host registers as they are, port
 * registers as port 0's. */
const POOL_SAFE_WRITES = new Set([AHCI_IS, ...[AHCI_P_CI, AHCI_P_SACT, AHCI_P_IS, AHCI_P_SERR].map((r) => AHCI_OFFSET + r)]);
// (Not PxIE: whether a thread rings for its completion follows PxIE at submit.)

/** A pool request no thread took within this long is done at the next exit. */
const STEAL_AFTER_MS = 0.5;

function ioPoolThreads(t: ConfigTree, node: string): number | undefined {
  const v = t.get(`${node}.iopool`);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n > 8) throw new ConfigError(`ahci at ${node}: invalid iopool "${v}" (0-8 I/O threads)`);
  return n;
}

function ioPoolMin(t: ConfigTree, node: string): number {
  const v = t.get(`${node}.iopool_min`) ?? String(IOPOOL_MIN_DEFAULT);
  const n = Number(v);
  if (!/^\d+$/.test(v) || n > 2 ** 32) throw new ConfigError(`ahci at ${node}: invalid iopool_min "${v}" (bytes)`);
  return n;
}

function ioPoolMerge(t: ConfigTree, node: string): number {
  const v = t.get(`${node}.iopool_merge`) ?? String(IOPOOL_MERGE_DEFAULT);
  const n = Number(v);
  if (!/^\d+$/.test(v) || n > 2 ** 30) throw new ConfigError(`ahci at ${node}: invalid iopool_merge "${v}" (bytes, at most 1 GiB; 0: no merging)`);
  return n;
}

/** Reads `pci.B.S.F.port.N.*`, opens and locks every port's image, and
 * builds the controller. One clear line when an image cannot be used. */
export function createAhci(ctx: DeviceContext, node: string, where: string): AhciController {
  const configs = ahciPortConfigs(ctx.config, node, where);
  try {
    return new AhciController(ctx, configs, {
      regPage: ctx.config.getBool(`${node}.regpage`, true),
      sactCoalesce: ctx.config.getBool(`${node}.sactcoalesce`, true),
      ioThreads: ioPoolThreads(ctx.config, node),
      ioMin: ioPoolMin(ctx.config, node),
      ioMerge: ioPoolMerge(ctx.config, node),
    });
  } catch (e) {
    for (const c of configs) c.backend.close();
    throw e;
  }
}

function ahciPortConfigs(tree: ConfigTree, node: string, where: string): AhciPortConfig[] {
  const out: AhciPortConfig[] = [];
  try {
    for (let p = 0; p < AHCI_MAX_PORTS; p++) {
      const pn = `${node}.port.${p}`;
      const type = tree.get(`${pn}.type`);
      if (type === undefined) continue;
      if (type !== 'hd' && type !== 'cd') throw new BlockDeviceError(`ahci at pci slot ${where}: port ${p}: invalid type "${type}" (use hd or cd)`);
      const o = blockBackendOptionsFromConfig(tree, pn, `ahci port ${p}`);
      // ATAPI has no write commands: a CD image is opened read-only, so
      // read-only image files work and several VMs can share one ISO.
      if (type === 'cd') o.readOnly = true;
      const nmrrText = tree.get(`${pn}.nmrr`);
      let nmrr: number | undefined;
      if (nmrrText !== undefined) {
        nmrr = Number(nmrrText);
        if (!/^\d+$/.test(nmrrText) || nmrr > 0xffff) throw new BlockDeviceError(`ahci at pci slot ${where}: port ${p}: invalid nmrr "${nmrrText}" (0-65535; 1 means SSD)`);
      }
      let backend: BlockFile;
      try {
        backend = new BlockFile(o);
      } catch (e) {
        if (e instanceof BlockDeviceError) throw new BlockDeviceError(`ahci at pci slot ${where}: port ${p}: ${e.message}`);
        throw e;
      }
      out.push({
        index: p, type, backend, sectorSize: o.sectorSize ?? 512, physicalSectorSize: o.physicalSectorSize ?? o.sectorSize ?? 512,
        nodelete: o.nodelete ?? false, serial: tree.get(`${pn}.ser`) ?? bhyveSerial(o.path),
        revision: tree.get(`${pn}.rev`), model: tree.get(`${pn}.model`), nmrr,
      });
    }
  } catch (e) {
    for (const c of out) c.backend.close();
    throw e;
  }
  return out;
}

/** The emulation of ahci's record (ahci-record.ts). */
export const ahciModel: PciDeviceModel = {
  create: (ctx, s) => createAhci(ctx, s.node, s.where),
};
