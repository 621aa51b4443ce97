// One port of the AHCI HBA with its SATA disk or ATAPI CD-ROM, as bhyve's
// pci_ahci.c runs it: the port registers, the command list and received-FIS
// area in guest memory, ATA commands (IDENTIFY, READ/WRITE (DMA) (EXT),
// FPDMA QUEUED, FLUSH, DSM TRIM, SET FEATURES, READ LOG, power stubs) and
// ATAPI packets (atapi.ts) for CD ports.
//
// Commands run synchronously when the driver sets PxCI (the block backend
// does the I/O straight between the image and the PRDT's guest buffers), so
// a command is complete, with its FIS posted and interrupt raised, when the
// register write returns. NCQ commands still complete as NCQ does: a D2H
// FIS clearing PxCI, then a Set Device Bits FIS clearing the PxSACT bit.
//
// Guest memory is reached only through GuestMemory: a command header, a
// command table or a PRDT buffer outside guest RAM ends that command with
// ABORT (and PxIS.HBDS), where bhyve would dereference a NULL host pointer.

import type { BlockFile } from '../block/block-backend.js';
import type { BlockIoPool } from '../block/io-pool.js';
import { GuestMemoryError, type GuestMemory } from '../../sys/guest-memory.js';
import {
  AHCI_CL_SIZE, AHCI_CT_ACMD, AHCI_CT_PRDT, AHCI_P_CLB, AHCI_P_CLBU, AHCI_P_CI, AHCI_P_CMD, AHCI_P_CMD_ALPE,
  AHCI_P_CMD_APSTE, AHCI_P_CMD_ASP, AHCI_P_CMD_ATAPI, AHCI_P_CMD_CCS_MASK, AHCI_P_CMD_CCS_SHIFT, AHCI_P_CMD_CLO,
  AHCI_P_CMD_CPS, AHCI_P_CMD_CR, AHCI_P_CMD_DLAE, AHCI_P_CMD_FR, AHCI_P_CMD_FRE, AHCI_P_CMD_ICC_MASK, AHCI_P_CMD_POD,
  AHCI_P_CMD_ST, AHCI_P_CMD_SUD, AHCI_P_FB, AHCI_P_FBS, AHCI_P_FBU, AHCI_P_IE, AHCI_P_IS, AHCI_P_IX_DHR,
  AHCI_P_IX_HBD, AHCI_P_IX_PS, AHCI_P_IX_SDB, AHCI_P_IX_TFE, AHCI_P_SACT, AHCI_P_SCTL, AHCI_P_SERR, AHCI_P_SIG,
  AHCI_P_SNTF, AHCI_P_SSTS, AHCI_P_TFD, AHCI_PRDT_ENTRY, AHCI_RFIS_SIZE, ATA_ATA_IDENTIFY, ATA_ATAPI_IDENTIFY,
  ATA_CHECK_POWER_MODE, ATA_DATA_SET_MANAGEMENT, ATA_DSM_TRIM, ATA_E_ABORT, ATA_FLUSHCACHE, ATA_FLUSHCACHE48,
  ATA_I_CMD, ATA_I_IN, ATA_IDLE_CMD, ATA_IDLE_IMMEDIATE, ATA_NOP, ATA_PACKET_CMD, ATA_PIO, ATA_PIO0, ATA_READ,
  ATA_READ48, ATA_READ_DMA, ATA_READ_DMA48, ATA_READ_FPDMA_QUEUED, ATA_READ_LOG_DMA_EXT, ATA_READ_LOG_EXT,
  ATA_READ_MUL, ATA_READ_MUL48, ATA_READ_VERIFY, ATA_READ_VERIFY48, ATA_S_BUSY, ATA_S_DMA, ATA_S_DRQ, ATA_S_DSC,
  ATA_S_ERROR, ATA_S_READY, ATA_SATA_SF_AN, ATA_SC_DET_RESET, ATA_SC_SPD_MASK, ATA_SECURITY_FREEZE_LOCK,
  ATA_SEND_FPDMA_QUEUED, ATA_SENSE_ILLEGAL_REQUEST, ATA_SET_MULTI, ATA_SETFEATURES, ATA_SF_DIS_RCACHE,
  ATA_SF_DIS_WCACHE, ATA_SF_ENAB_RCACHE, ATA_SF_ENAB_SATA_SF, ATA_SF_ENAB_WCACHE, ATA_SF_SETXFER, ATA_SFPDMA_DSM,
  ATA_SLEEP, ATA_SMART_CMD, ATA_SS_DET_NO_DEVICE, ATA_SS_DET_PHY_ONLINE, ATA_SS_IPM_ACTIVE, ATA_SS_SPD_GEN3,
  ATA_STANDBY_CMD, ATA_STANDBY_IMMEDIATE, ATA_UDMA0, ATA_UDMA6, ATA_WDMA0, ATA_WRITE, ATA_WRITE48, ATA_WRITE_DMA,
  ATA_WRITE_DMA48, ATA_WRITE_FPDMA_QUEUED, ATA_WRITE_MUL, ATA_WRITE_MUL48, DBCMASK, FIS_TYPE_PIOSETUP,
  FIS_TYPE_REGD2H, FIS_TYPE_REGH2D, FIS_TYPE_SETDEVBITS, PxSIG_ATA, PxSIG_ATAPI,
} from './ahci-constants.js';
import { ataChecksum, buildIdentify, type IdentifyOptions } from './ata-identify.js';
import { atapiCommand, type AtapiResult } from './atapi.js';

/** The command table up to the PRDT: the command FIS (0x00) and the ATAPI packet (0x40). */
const CFIS_AREA = AHCI_CT_PRDT;

export interface AhciPortOptions {
  index: number;
  atapi: boolean;
  backend: BlockFile;
  /** identify strings and rotation rate from the port's config. */
  ident: Pick<IdentifyOptions, 'serial' | 'revision' | 'model' | 'mediaRotationRate'>;
  sectorSize: number;
  physicalSectorSize: number;
  canDelete: boolean;
}

export interface AhciPortStats {
  commands: number;
  /** NCQ transfers an I/O thread completed itself (PxSACT in the register page). */
  threadCompletions: number;
  reads: number;
  writes: number;
  bytesRead: number;
  bytesWritten: number;
  flushes: number;
  trims: number;
  errors: number;
}

const NCQ_CMDS = new Set([ATA_READ_FPDMA_QUEUED, ATA_WRITE_FPDMA_QUEUED, ATA_SEND_FPDMA_QUEUED]);
const WRITE_CMDS = new Set([ATA_WRITE, ATA_WRITE48, ATA_WRITE_MUL, ATA_WRITE_MUL48, ATA_WRITE_DMA, ATA_WRITE_DMA48, ATA_WRITE_FPDMA_QUEUED]);
const LBA48_CMDS = new Set([ATA_READ48, ATA_WRITE48, ATA_READ_MUL48, ATA_WRITE_MUL48, ATA_READ_DMA48, ATA_WRITE_DMA48]);
const ERR_ABORT = (ATA_E_ABORT << 8) | ATA_S_READY | ATA_S_ERROR;
const OK = ATA_S_READY | ATA_S_DSC;

/** A guest-memory fault in a command's structures or buffers. */
class HostBusError extends Error {}

export class AhciPort {
  readonly index: number;
  readonly atapi: boolean;
  readonly backend: BlockFile;
  readonly stats: AhciPortStats = { commands: 0, threadCompletions: 0, reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, flushes: 0, trims: 0, errors: 0 };
  private readonly sectorSize: number;
  private readonly physicalSectorSize: number;
  private readonly canDelete: boolean;
  private readonly identOpts: AhciPortOptions['ident'];
  ident: Uint8Array = new Uint8Array(512);

  // Port registers, in register order.
  clb = 0; clbu = 0; fb = 0; fbu = 0; is = 0; ie = 0; cmd = 0;
  tfd = 0; sig = 0; ssts = 0; sctl = 0; serr = 0; ci = 0; sntf = 0; fbs = 0;
  /** PxSACT: a field, or (with I/O threads that complete NCQ commands
   * themselves, `sharedSact`) the word of the register page the driver
   * polls, which both threads change with atomic operations only. */
  private sactField = 0;
  private sactCell: { words: Int32Array; index: number } | undefined;
  get sact(): number { return this.sactCell ? Atomics.load(this.sactCell.words, this.sactCell.index) >>> 0 : this.sactField; }
  set sact(v: number) {
    if (this.sactCell) Atomics.store(this.sactCell.words, this.sactCell.index, v | 0);
    else this.sactField = v >>> 0;
  }
  private orSact(bits: number): void {
    if (this.sactCell) Atomics.or(this.sactCell.words, this.sactCell.index, bits | 0);
    else this.sactField = (this.sactField | bits) >>> 0;
  }
  private clearSact(bits: number): void {
    if (this.sactCell) Atomics.and(this.sactCell.words, this.sactCell.index, ~bits);
    else this.sactField = (this.sactField & ~bits) >>> 0;
  }
  /** Whether PxSACT is the register page's word (the page must not be
   * refreshed from it: an I/O thread may clear bits meanwhile). */
  get sactShared(): boolean { return this.sactCell !== undefined; }

  private resetPending = false;
  private waitforclear = false;
  private multSectors = 128;
  private xfermode = ATA_UDMA6;
  private readonly errCfis = new Uint8Array(20);
  private senseKey = 0;
  private asc = 0;
  private ccs = 0;
  /** The CFIS + ACMD of the command being run (a copy: guest memory is not written back). */
  private readonly cfis = new Uint8Array(CFIS_AREA);
  private readonly iov: Uint8Array[] = [];
  /** FIS buffers (writeFis copies them into the received-FIS area at once). */
  private readonly d2hFis = new Uint8Array(20);
  private readonly sdbFis = new Uint8Array(8);
  /** With the controller's I/O threads (`iopool`): NCQ transfers of at
   * least `min` bytes go to `pool` (this port's image is file `file`) and
   * complete in the controller's poll(); smaller ones run here. */
  private offload: { pool: BlockIoPool; file: number; min: number } | undefined;

  constructor(o: AhciPortOptions, private readonly mem: () => GuestMemory, private readonly raise: (port: AhciPort) => void) {
    this.index = o.index;
    this.atapi = o.atapi;
    this.backend = o.backend;
    this.sectorSize = o.sectorSize;
    this.physicalSectorSize = o.physicalSectorSize;
    this.canDelete = o.canDelete;
    this.identOpts = o.ident;
  }

  /** Hands this port's large NCQ transfers to an I/O pool (io-pool.ts).
   * With `sact` (PxSACT's word in the register page the pool shares) the
   * pool's threads complete a successful NCQ transfer themselves: PRDBC,
   * then the PxSACT bit; the rest (Set Device Bits FIS, PxIS, interrupt)
   * follows on the device thread, which they ring only when PxIE wants
   * the interrupt. */
  useIoPool(pool: BlockIoPool, file: number, min: number, sact?: { words: Int32Array; index: number }): void {
    this.offload = { pool, file, min };
    if (sact && pool.canClear) {
      const v = this.sactField;
      this.sactCell = sact;
      this.sact = v;
    }
  }

  private buildIdent(): void {
    this.ident = buildIdentify({
      ...this.identOpts, atapi: this.atapi, size: this.backend.size, sectorSize: this.sectorSize,
      physicalSectorSize: this.physicalSectorSize, canDelete: this.canDelete, readOnly: this.backend.readOnly,
      ssts: this.ssts, xfermode: this.xfermode, multSectors: this.multSectors,
    });
  }

  /** ahci_reset()'s part for one port (controller reset, power-on). */
  hbaReset(): void {
    this.ie = 0;
    this.is = 0;
    this.cmd = AHCI_P_CMD_SUD | AHCI_P_CMD_POD | AHCI_P_CMD_CPS;
    this.sctl = 0;
    this.portReset();
  }

  /** ahci_port_reset(): COMRESET (PxSCTL.DET=1 while stopped, or a
   * software reset through a control FIS). */
  portReset(): void {
    this.serr = 0;
    this.sact = 0;
    this.xfermode = ATA_UDMA6;
    this.multSectors = 128;
    this.ssts = ATA_SS_DET_PHY_ONLINE | ATA_SS_IPM_ACTIVE;
    this.ssts |= (this.sctl & ATA_SC_SPD_MASK) ? (this.sctl & ATA_SC_SPD_MASK) : ATA_SS_SPD_GEN3;
    this.tfd = (1 << 8) | ATA_S_DSC | ATA_S_DMA;
    if (!this.atapi) {
      this.sig = PxSIG_ATA;
      this.tfd |= ATA_S_READY;
    } else {
      this.sig = PxSIG_ATAPI;
    }
    this.buildIdent();
    const fis = new Uint8Array(20);
    fis[0] = FIS_TYPE_REGD2H;
    fis[3] = 1;
    fis[4] = 1;
    if (this.atapi) { fis[5] = 0x14; fis[6] = 0xeb; }
    fis[12] = 1;
    this.writeFis(FIS_TYPE_REGD2H, fis);
  }

  static emptyPortRegs(): { ssts: number; sig: number; tfd: number } {
    return { ssts: ATA_SS_DET_NO_DEVICE, sig: 0xffffffff, tfd: 0x7f };
  }

  // ---- registers ----

  read(off: number): number {
    switch (off) {
      case AHCI_P_CLB: return this.clb;
      case AHCI_P_CLBU: return this.clbu;
      case AHCI_P_FB: return this.fb;
      case AHCI_P_FBU: return this.fbu;
      case AHCI_P_IS: return this.is >>> 0;
      case AHCI_P_IE: return this.ie >>> 0;
      case AHCI_P_CMD: return this.cmd >>> 0;
      case AHCI_P_TFD: return this.tfd;
      case AHCI_P_SIG: return this.sig >>> 0;
      case AHCI_P_SSTS: return this.ssts;
      case AHCI_P_SCTL: return this.sctl >>> 0;
      case AHCI_P_SERR: return this.serr >>> 0;
      case AHCI_P_SACT: return this.sact >>> 0;
      case AHCI_P_CI: return this.ci >>> 0;
      case AHCI_P_SNTF: return this.sntf;
      case AHCI_P_FBS: return this.fbs;
      default: return 0;
    }
  }

  /** Writes the registers into a register page at `base` (the port's
   * block), as read() gives them: PxSACT (unless it is the page's word,
   * `sactShared`) and PxCI last. */
  syncPage(v: DataView, base: number): void {
    v.setUint32(base + AHCI_P_CLB, this.clb >>> 0, true);
    v.setUint32(base + AHCI_P_CLBU, this.clbu >>> 0, true);
    v.setUint32(base + AHCI_P_FB, this.fb >>> 0, true);
    v.setUint32(base + AHCI_P_FBU, this.fbu >>> 0, true);
    v.setUint32(base + AHCI_P_IS, this.is >>> 0, true);
    v.setUint32(base + AHCI_P_IE, this.ie >>> 0, true);
    v.setUint32(base + AHCI_P_CMD, this.cmd >>> 0, true);
    v.setUint32(base + AHCI_P_CMD + 4, 0, true); // reserved
    v.setUint32(base + AHCI_P_TFD, this.tfd >>> 0, true);
    v.setUint32(base + AHCI_P_SIG, this.sig >>> 0, true);
    v.setUint32(base + AHCI_P_SSTS, this.ssts >>> 0, true);
    v.setUint32(base + AHCI_P_SCTL, this.sctl >>> 0, true);
    v.setUint32(base + AHCI_P_SERR, this.serr >>> 0, true);
    v.setUint32(base + AHCI_P_SNTF, this.sntf >>> 0, true);
    v.setUint32(base + AHCI_P_FBS, this.fbs >>> 0, true);
    if (!this.sactCell) v.setUint32(base + AHCI_P_SACT, this.sactField >>> 0, true);
    v.setUint32(base + AHCI_P_CI, this.ci >>> 0, true);
  }

  write(off: number, value: number): void {
    value >>>= 0;
    switch (off) {
      case AHCI_P_CLB: this.clb = value; break;
      case AHCI_P_CLBU: this.clbu = value; break;
      case AHCI_P_FB: this.fb = value; break;
      case AHCI_P_FBU: this.fbu = value; break;
      case AHCI_P_IS:
        this.is = (this.is & ~value) >>> 0;
        this.raise(this);
        break;
      case AHCI_P_IE:
        this.ie = (value & 0xfdc000ff) >>> 0;
        this.raise(this);
        break;
      case AHCI_P_CMD: this.writeCmd(value); break;
      case AHCI_P_SCTL:
        this.sctl = value;
        if (!(this.cmd & AHCI_P_CMD_ST) && (value & ATA_SC_DET_RESET)) this.portReset();
        break;
      case AHCI_P_SERR: this.serr = (this.serr & ~value) >>> 0; break;
      case AHCI_P_SACT: this.orSact(value); break;
      case AHCI_P_CI:
        this.ci = (this.ci | value) >>> 0;
        this.handlePort();
        break;
      default: break; // TFD, SIG, SSTS are read-only; SNTF, FBS unused
    }
  }

  private writeCmd(value: number): void {
    const rw = AHCI_P_CMD_ST | AHCI_P_CMD_SUD | AHCI_P_CMD_POD | AHCI_P_CMD_CLO | AHCI_P_CMD_FRE | AHCI_P_CMD_APSTE
      | AHCI_P_CMD_ATAPI | AHCI_P_CMD_DLAE | AHCI_P_CMD_ALPE | AHCI_P_CMD_ASP | AHCI_P_CMD_ICC_MASK;
    this.cmd = ((this.cmd & ~rw) | (rw & value)) >>> 0;
    if (!(value & AHCI_P_CMD_ST)) this.checkStopped();
    else {
      this.cmd = (this.cmd | AHCI_P_CMD_CR) >>> 0;
      this.offload?.pool.startWorkers(); // up by the first large transfer
    }
    if (value & AHCI_P_CMD_FRE) this.cmd = (this.cmd | AHCI_P_CMD_FR) >>> 0;
    else this.cmd = (this.cmd & ~AHCI_P_CMD_FR) >>> 0;
    if (value & AHCI_P_CMD_CLO) {
      this.tfd &= ~(ATA_S_BUSY | ATA_S_DRQ);
      this.cmd = (this.cmd & ~AHCI_P_CMD_CLO) >>> 0;
    }
    if (value & AHCI_P_CMD_ICC_MASK) this.cmd = (this.cmd & ~AHCI_P_CMD_ICC_MASK) >>> 0;
    this.handlePort();
  }

  /** ahci_check_stopped(): nothing is ever in flight between register
   * accesses here, so a cleared ST stops the port at once. */
  private checkStopped(): void {
    if (this.cmd & AHCI_P_CMD_ST) return;
    this.ccs = 0;
    this.cmd = (this.cmd & ~(AHCI_P_CMD_CR | AHCI_P_CMD_CCS_MASK)) >>> 0;
    this.ci = 0;
    this.sact = 0;
    this.waitforclear = false;
  }

  // ---- FIS ----

  private get clbAddr(): number { return this.clbu * 0x100000000 + this.clb; }
  private get fbAddr(): number { return this.fbu * 0x100000000 + this.fb; }

  /** ahci_write_fis(): posts a FIS in the received-FIS area (when FRE is
   * on and the area is guest RAM) and raises the matching interrupt. */
  private writeFis(type: number, fis: Uint8Array): void {
    let offset: number;
    let irq: number;
    switch (type) {
      case FIS_TYPE_REGD2H: offset = 0x40; irq = (fis[1] & 0x40) ? AHCI_P_IX_DHR : 0; break;
      case FIS_TYPE_SETDEVBITS: offset = 0x58; irq = (fis[1] & 0x40) ? AHCI_P_IX_SDB : 0; break;
      default: offset = 0x20; irq = (fis[1] & 0x40) ? AHCI_P_IX_PS : 0; break; // PIO setup
    }
    // An error stops command processing until the driver clears it, FIS
    // area or not (bhyve only does so with FRE on, and would then spin).
    if (fis[2] & ATA_S_ERROR) {
      this.waitforclear = true;
      irq |= AHCI_P_IX_TFE;
    }
    if (!(this.cmd & AHCI_P_CMD_FRE)) return;
    const mem = this.mem();
    if (!mem.contains(this.fbAddr, AHCI_RFIS_SIZE)) return;
    mem.write(this.fbAddr + offset, fis);
    if (irq && (~this.is & irq)) {
      this.is = (this.is | irq) >>> 0;
      this.raise(this);
    }
  }

  private fisPioSetup(): void {
    const fis = new Uint8Array(20);
    fis[0] = FIS_TYPE_PIOSETUP;
    this.writeFis(FIS_TYPE_PIOSETUP, fis);
  }

  private fisSdb(slot: number, tfd: number, sactCleared = false): void {
    const error = (tfd >> 8) & 0xff;
    tfd &= 0x77;
    const fis = this.sdbFis.fill(0);
    fis[0] = FIS_TYPE_SETDEVBITS;
    fis[1] = 0x40;
    fis[2] = tfd;
    fis[3] = error;
    if (fis[2] & ATA_S_ERROR) {
      this.errCfis.fill(0);
      this.errCfis[0] = slot;
      this.errCfis[2] = tfd;
      this.errCfis[3] = error;
      this.errCfis.set(this.cfis.subarray(4, 20), 4);
    } else {
      const bit = (1 << slot) >>> 0;
      fis[4] = bit & 0xff; fis[5] = (bit >>> 8) & 0xff; fis[6] = (bit >>> 16) & 0xff; fis[7] = bit >>> 24;
      // An I/O thread that cleared the bit already may have let the driver
      // issue the tag again: the bit is the new command's then.
      if (!sactCleared) this.clearSact(1 << slot);
    }
    this.tfd = (this.tfd & ~0x77) | tfd;
    this.writeFis(FIS_TYPE_SETDEVBITS, fis);
  }

  private fisD2h(slot: number, tfd: number): void {
    const error = (tfd >> 8) & 0xff;
    const fis = this.d2hFis.fill(0);
    fis[0] = FIS_TYPE_REGD2H;
    fis[1] = 0x40;
    fis[2] = tfd & 0xff;
    fis[3] = error;
    fis.set(this.cfis.subarray(4, 14), 4);
    if (fis[2] & ATA_S_ERROR) {
      this.errCfis.fill(0);
      this.errCfis[0] = 0x80;
      this.errCfis[2] = tfd & 0xff;
      this.errCfis[3] = error;
      this.errCfis.set(this.cfis.subarray(4, 20), 4);
    } else {
      this.ci = (this.ci & ~(1 << slot)) >>> 0;
    }
    this.tfd = tfd;
    this.writeFis(FIS_TYPE_REGD2H, fis);
  }

  private fisD2hNcq(slot: number): void {
    this.tfd = ATA_S_READY | ATA_S_DSC;
    const fis = this.d2hFis.fill(0);
    fis[0] = FIS_TYPE_REGD2H;
    fis[2] = this.tfd;
    this.ci = (this.ci & ~(1 << slot)) >>> 0;
    this.writeFis(FIS_TYPE_REGD2H, fis);
  }

  // ---- command list ----

  /** ahci_handle_port(): runs every issued slot, from the current one
   * round-robin, until the list is empty or the port waits for an error to
   * be cleared. Every pass either completes a slot or moves on, and a
   * completed slot's CI bit is clear, so the loop ends. */
  private handlePort(): void {
    if (!(this.cmd & AHCI_P_CMD_ST)) return;
    for (let guard = 0; this.ci !== 0 && guard < 4 * 32; this.ccs = (this.ccs + 1) & 31, guard++) {
      if (this.tfd & (ATA_S_BUSY | ATA_S_DRQ)) break;
      if (this.waitforclear) break;
      if (this.ci & (1 << this.ccs)) {
        this.cmd = ((this.cmd & ~AHCI_P_CMD_CCS_MASK) | (this.ccs << AHCI_P_CMD_CCS_SHIFT)) >>> 0;
        this.handleSlot(this.ccs);
      }
    }
  }

  private header(slot: number): { flags: number; prdtl: number; ctba: number; at: number } {
    const mem = this.mem();
    const at = this.clbAddr + slot * AHCI_CL_SIZE;
    if (!mem.contains(at, AHCI_CL_SIZE)) throw new HostBusError();
    const dw0 = mem.readU32(at);
    const ctba = mem.readU32(at + 12) * 0x100000000 + mem.readU32(at + 8);
    return { flags: dw0 & 0xffff, prdtl: dw0 >>> 16, ctba, at };
  }

  private handleSlot(slot: number): void {
    this.stats.commands++;
    let hdr: ReturnType<AhciPort['header']>;
    try {
      hdr = this.header(slot);
      const mem = this.mem();
      if (!mem.contains(hdr.ctba, CFIS_AREA + hdr.prdtl * AHCI_PRDT_ENTRY)) throw new HostBusError();
      this.cfis.set(mem.slice(hdr.ctba, CFIS_AREA));
    } catch {
      this.hostBusError(slot);
      return;
    }
    const cfis = this.cfis;
    if (cfis[0] !== FIS_TYPE_REGH2D) {
      // Not a command FIS: bhyve leaves the slot issued (and spins); end it.
      this.fisD2h(slot, ERR_ABORT);
      return;
    }
    if (cfis[1] & 0x80) {
      try {
        this.handleCmd(slot, hdr);
      } catch (e) {
        if (!(e instanceof HostBusError || e instanceof GuestMemoryError)) throw e;
        this.hostBusError(slot);
      }
    } else {
      // Control FIS: SRST set then cleared is a software reset.
      if (cfis[15] & (1 << 2)) this.resetPending = true;
      else if (this.resetPending) { this.resetPending = false; this.portReset(); }
      this.ci = (this.ci & ~(1 << slot)) >>> 0;
    }
  }

  /** A command's structures or buffers are not guest RAM: the command
   * ends with ABORT and PxIS.HBDS (host bus data error). */
  private hostBusError(slot: number): void {
    this.stats.errors++;
    this.is = (this.is | AHCI_P_IX_HBD) >>> 0;
    const ncq = NCQ_CMDS.has(this.cfis[2]) && (this.sact & (1 << slot)) !== 0;
    this.cfis.fill(0);
    if (ncq) this.fisSdb(slot, ERR_ABORT);
    else this.fisD2h(slot, ERR_ABORT);
    this.raise(this);
  }

  private setPrdbc(hdr: { at: number }, n: number): void {
    this.mem().writeU32(hdr.at + 4, n >>> 0);
  }

  /** The PRDT's buffers, up to `len` bytes, as live guest-memory views;
   * throws HostBusError for a buffer outside guest RAM. */
  private prdtViews(hdr: { prdtl: number; ctba: number }, len: number): { views: Uint8Array[]; total: number } {
    const mem = this.mem();
    const views = this.iov;
    views.length = 0;
    let total = 0;
    for (let i = 0; i < hdr.prdtl && total < len; i++) {
      const e = hdr.ctba + AHCI_CT_PRDT + i * AHCI_PRDT_ENTRY;
      const dba = mem.readU32(e + 4) * 0x100000000 + mem.readU32(e);
      const dbc = (mem.readU32(e + 12) & DBCMASK) + 1;
      const n = Math.min(dbc, len - total);
      try {
        mem.slices(dba, n, views);
      } catch {
        throw new HostBusError();
      }
      total += n;
    }
    return { views, total };
  }

  /** write_prdt(): copies `buf` into the PRDT's buffers; PRDBC = bytes. */
  private writePrdt(hdr: { prdtl: number; ctba: number; at: number }, buf: Uint8Array): void {
    const { views } = this.prdtViews(hdr, buf.length);
    let off = 0;
    for (const v of views) { v.set(buf.subarray(off, off + v.length)); off += v.length; }
    this.setPrdbc(hdr, off);
  }

  /** read_prdt(): up to `size` bytes from the PRDT's buffers. */
  private readPrdt(hdr: { prdtl: number; ctba: number }, size: number): Uint8Array {
    const out = new Uint8Array(size);
    const { views } = this.prdtViews(hdr, size);
    let off = 0;
    for (const v of views) { out.set(v, off); off += v.length; }
    return out;
  }

  private handleCmd(slot: number, hdr: ReturnType<AhciPort['header']>): void {
    const cfis = this.cfis;
    this.tfd |= ATA_S_BUSY;
    switch (cfis[2]) {
      case ATA_ATA_IDENTIFY:
        if (this.atapi || hdr.prdtl === 0) { this.fail(slot); break; }
        this.fisPioSetup();
        this.writePrdt(hdr, this.ident);
        this.fisD2h(slot, OK);
        break;
      case ATA_SETFEATURES: {
        let tfd = OK;
        switch (cfis[3]) {
          case ATA_SF_ENAB_SATA_SF:
            if (cfis[12] !== ATA_SATA_SF_AN) tfd = ERR_ABORT;
            break;
          case ATA_SF_ENAB_WCACHE: case ATA_SF_DIS_WCACHE: case ATA_SF_ENAB_RCACHE: case ATA_SF_DIS_RCACHE:
            break;
          case ATA_SF_SETXFER:
            switch (cfis[12] & 0xf8) {
              case ATA_PIO: case ATA_PIO0: break;
              case ATA_WDMA0: case ATA_UDMA0: this.xfermode = cfis[12] & 0x7; break;
              default: break;
            }
            break;
          default:
            tfd = ERR_ABORT;
        }
        this.fisD2h(slot, tfd);
        break;
      }
      case ATA_SET_MULTI: {
        const n = cfis[12];
        if (n !== 0 && (n > 128 || (n & (n - 1)))) {
          this.fisD2h(slot, ERR_ABORT);
        } else {
          this.multSectors = n;
          this.buildIdent();
          this.fisD2h(slot, OK);
        }
        break;
      }
      case ATA_READ: case ATA_WRITE: case ATA_READ48: case ATA_WRITE48:
      case ATA_READ_MUL: case ATA_WRITE_MUL: case ATA_READ_MUL48: case ATA_WRITE_MUL48:
      case ATA_READ_DMA: case ATA_WRITE_DMA: case ATA_READ_DMA48: case ATA_WRITE_DMA48:
      case ATA_READ_FPDMA_QUEUED: case ATA_WRITE_FPDMA_QUEUED:
        if (this.atapi) { this.fail(slot); break; }
        this.handleRw(slot, hdr);
        break;
      case ATA_FLUSHCACHE:
      case ATA_FLUSHCACHE48: {
        let tfd = OK;
        try { if (!this.backend.readOnly) this.backend.flush(); } catch { tfd = ERR_ABORT; }
        this.stats.flushes++;
        this.fisD2h(slot, tfd);
        break;
      }
      case ATA_DATA_SET_MANAGEMENT:
        if (cfis[11] === 0 && cfis[3] === ATA_DSM_TRIM && cfis[13] === 0 && cfis[12] === 1 && !this.atapi) {
          this.handleTrim(slot, hdr, false);
        } else {
          this.fail(slot);
        }
        break;
      case ATA_SEND_FPDMA_QUEUED:
        if ((cfis[13] & 0x1f) === ATA_SFPDMA_DSM && cfis[17] === 0 && cfis[16] === ATA_DSM_TRIM
          && cfis[11] === 0 && cfis[3] === 1 && !this.atapi) {
          this.handleTrim(slot, hdr, true);
        } else {
          this.fail(slot);
        }
        break;
      case ATA_READ_LOG_EXT:
      case ATA_READ_LOG_DMA_EXT:
        this.handleReadLog(slot, hdr);
        break;
      case ATA_SECURITY_FREEZE_LOCK:
      case ATA_SMART_CMD:
      case ATA_NOP:
        // As bhyve: not supported, aborted (drivers probe them and move on).
        this.fail(slot);
        break;
      case ATA_CHECK_POWER_MODE:
        cfis[12] = 0xff; // always active
        this.fisD2h(slot, OK);
        break;
      case ATA_STANDBY_CMD: case ATA_STANDBY_IMMEDIATE: case ATA_IDLE_CMD: case ATA_IDLE_IMMEDIATE:
      case ATA_SLEEP: case ATA_READ_VERIFY: case ATA_READ_VERIFY48:
        this.fisD2h(slot, OK);
        break;
      case ATA_ATAPI_IDENTIFY:
        if (!this.atapi) { this.fail(slot); break; }
        this.fisPioSetup();
        this.writePrdt(hdr, this.ident);
        this.fisD2h(slot, OK);
        break;
      case ATA_PACKET_CMD:
        if (!this.atapi) this.fail(slot);
        else this.handlePacket(slot, hdr);
        break;
      default:
        this.fail(slot);
    }
  }

  private fail(slot: number): void {
    this.stats.errors++;
    this.fisD2h(slot, ERR_ABORT);
  }

  /** ahci_handle_rw(): LBA and count from the CFIS, data through the PRDT. */
  private handleRw(slot: number, hdr: ReturnType<AhciPort['header']>): void {
    const c = this.cfis;
    const op = c[2];
    const ncq = op === ATA_READ_FPDMA_QUEUED || op === ATA_WRITE_FPDMA_QUEUED;
    const write = WRITE_CMDS.has(op);
    let lba: number;
    let count: number;
    const lba48 = () => c[10] * 2 ** 40 + c[9] * 2 ** 32 + c[8] * 2 ** 24 + (c[6] << 16) + (c[5] << 8) + c[4];
    if (ncq) {
      lba = lba48();
      count = (c[11] << 8) | c[3];
      if (!count) count = 65536;
    } else if (LBA48_CMDS.has(op)) {
      lba = lba48();
      count = (c[13] << 8) | c[12];
      if (!count) count = 65536;
    } else {
      lba = (c[7] & 0xf) * 2 ** 24 + (c[6] << 16) + (c[5] << 8) + c[4];
      count = c[12];
      if (!count) count = 256;
    }
    const offset = lba * this.sectorSize;
    const len = count * this.sectorSize;
    if (ncq) this.fisD2hNcq(slot);
    let ok = offset + len <= this.backend.size && !(write && this.backend.readOnly);
    let done = 0;
    if (ok && ncq && this.offload && len >= this.offload.min && this.submitRw(slot, hdr, write, offset, len)) return;
    if (ok) {
      const { views, total } = this.prdtViews(hdr, len);
      try {
        done = total === 0 ? 0 : write ? this.backend.writev(views, offset) : this.backend.readv(views, offset);
        ok = done === total;
      } catch {
        ok = false;
      }
    }
    if (ok) {
      this.setPrdbc(hdr, done);
      if (write) { this.stats.writes++; this.stats.bytesWritten += done; } else { this.stats.reads++; this.stats.bytesRead += done; }
    } else {
      this.stats.errors++;
    }
    const tfd = ok ? OK : ERR_ABORT;
    if (ncq) this.fisSdb(slot, tfd);
    else this.fisD2h(slot, tfd);
  }

  /** An NCQ transfer on the I/O pool: the PRDT is walked and checked here
   * (a buffer outside guest RAM ends the command with HBDS at once, as
   * without the pool); the worker moves the data and reap() completes it
   * (finishRw). False: the pool is full, do it here. */
  private submitRw(slot: number, hdr: ReturnType<AhciPort['header']>, write: boolean, offset: number, len: number): boolean {
    const segs: Array<[number, number]> = [];
    const mem = this.mem();
    const scratch = this.iov;
    let total = 0;
    for (let i = 0; i < hdr.prdtl && total < len; i++) {
      const e = hdr.ctba + AHCI_CT_PRDT + i * AHCI_PRDT_ENTRY;
      const dba = mem.readU32(e + 4) * 0x100000000 + mem.readU32(e);
      const n = Math.min((mem.readU32(e + 12) & DBCMASK) + 1, len - total);
      scratch.length = 0;
      try {
        mem.slices(dba, n, scratch);
      } catch {
        throw new HostBusError();
      } finally {
        scratch.length = 0;
      }
      // Buffers that follow each other in guest memory are one segment.
      const last = segs.length > 0 ? segs[segs.length - 1] : undefined;
      if (last && last[0] + last[1] === dba) last[1] += n;
      else segs.push([dba, n]);
      total += n;
    }
    if (total === 0) return false;
    const cfis = this.cfis.slice(0, 20);
    const o = this.offload!;
    if (this.sactCell) {
      // The thread completes it: PRDBC (the header's second word), then PxSACT.
      return o.pool.submit(o.file, write, offset, segs, (n) => this.finishRw(slot, hdr, write, total, n, cfis, true), {
        clear: { gpa: hdr.at + 4, value: total, word: this.sactCell.index, mask: (1 << slot) | 0 },
        kick: (this.ie & AHCI_P_IX_SDB) !== 0,
      });
    }
    return o.pool.submit(o.file, write, offset, segs, (n) => this.finishRw(slot, hdr, write, total, n, cfis, false));
  }

  /** The pool's completion of submitRw()'s transfer (on this thread);
   * `byThread`: a successful one was completed (PRDBC, PxSACT) by the
   * I/O thread already. */
  private finishRw(slot: number, hdr: { at: number }, write: boolean, total: number, done: number, cfis: Uint8Array, byThread: boolean): void {
    const ok = done === total;
    if (ok && byThread) {
      this.stats.threadCompletions++;
      if (write) { this.stats.writes++; this.stats.bytesWritten += done; } else { this.stats.reads++; this.stats.bytesRead += done; }
      this.fisSdb(slot, OK, true);
      return;
    }
    if (ok) {
      this.setPrdbc(hdr, done);
      if (write) { this.stats.writes++; this.stats.bytesWritten += done; } else { this.stats.reads++; this.stats.bytesRead += done; }
    } else {
      this.stats.errors++;
      this.cfis.set(cfis); // the failed command's FIS for READ LOG EXT's NCQ error log
    }
    this.fisSdb(slot, ok ? OK : ERR_ABORT);
  }

  /** ahci_handle_dsm_trim(): one 512-byte block of 8-byte range entries
   * (48-bit LBA, 16-bit count); empty entries are skipped. */
  private handleTrim(slot: number, hdr: ReturnType<AhciPort['header']>, ncq: boolean): void {
    const buf = this.readPrdt(hdr, 512);
    if (ncq) this.fisD2hNcq(slot);
    let ok = this.canDelete && !this.backend.readOnly;
    for (let e = 0; ok && e < 512; e += 8) {
      const elba = buf[e + 5] * 2 ** 40 + buf[e + 4] * 2 ** 32 + buf[e + 3] * 2 ** 24 + (buf[e + 2] << 16) + (buf[e + 1] << 8) + buf[e];
      const elen = (buf[e + 7] << 8) | buf[e + 6];
      if (elen === 0) continue;
      const off = elba * this.sectorSize;
      const n = elen * this.sectorSize;
      if (off + n > this.backend.size) { ok = false; break; }
      const r = this.backend.discard(off, n);
      // A file system without hole punching: zero the range instead.
      if (r < 0) {
        try { this.backend.writeZeroes(off, n, false); } catch { ok = false; }
      }
      this.stats.trims++;
    }
    if (!ok) this.stats.errors++;
    const tfd = ok ? OK : ERR_ABORT;
    if (ncq) this.fisSdb(slot, tfd);
    else this.fisD2h(slot, tfd);
  }

  private handleReadLog(slot: number, hdr: ReturnType<AhciPort['header']>): void {
    const c = this.cfis;
    if (this.atapi || hdr.prdtl === 0 || c[5] !== 0 || c[9] !== 0 || c[12] !== 1 || c[13] !== 0) {
      this.fail(slot);
      return;
    }
    const buf = new Uint8Array(512);
    const dv = new DataView(buf.buffer);
    if (c[4] === 0x00) { // log directory
      dv.setUint16(0x00, 1, true);
      dv.setUint16(0x20, 1, true); // NCQ command error log: 1 page
      dv.setUint16(0x26, 1, true); // SATA NCQ send and receive log: 1 page
    } else if (c[4] === 0x10) { // NCQ command error log
      buf.set(this.errCfis);
      ataChecksum(buf);
    } else if (c[4] === 0x13) { // SATA NCQ send and receive log
      if (this.canDelete && !this.backend.readOnly) {
        dv.setUint32(0, 1, true); // SFQ DSM supported
        dv.setUint32(4, 1, true); // SFQ DSM TRIM supported
      }
    } else {
      this.fail(slot);
      return;
    }
    if (c[2] === ATA_READ_LOG_EXT) this.fisPioSetup();
    this.writePrdt(hdr, buf);
    this.fisD2h(slot, OK);
  }

  // ---- ATAPI ----

  private handlePacket(slot: number, hdr: ReturnType<AhciPort['header']>): void {
    const acmd = this.cfis.subarray(AHCI_CT_ACMD, AHCI_CT_ACMD + 16);
    const r: AtapiResult = atapiCommand(acmd, { size: this.backend.size, sectorSize: this.sectorSize }, { key: this.senseKey, asc: this.asc });
    this.cfis[4] = (this.cfis[4] & ~7) | ATA_I_CMD | ATA_I_IN;
    switch (r.kind) {
      case 'ok':
        this.fisD2h(slot, OK);
        break;
      case 'data':
        this.writePrdt(hdr, r.data);
        this.fisD2h(slot, OK);
        break;
      case 'error':
        this.senseError(slot, r.senseKey, r.asc);
        break;
      case 'read': {
        if (r.length === 0) { this.fisD2h(slot, OK); break; }
        if (r.offset + r.length > this.backend.size) { this.senseError(slot, ATA_SENSE_ILLEGAL_REQUEST, 0x21); break; }
        const { views, total } = this.prdtViews(hdr, r.length);
        let n = -1;
        try { n = total === 0 ? 0 : this.backend.readv(views, r.offset); } catch { n = -1; }
        if (n !== total) { this.senseError(slot, ATA_SENSE_ILLEGAL_REQUEST, 0x21); break; }
        this.setPrdbc(hdr, n);
        this.stats.reads++;
        this.stats.bytesRead += n;
        this.fisD2h(slot, OK);
        break;
      }
    }
  }

  private senseError(slot: number, key: number, asc: number): void {
    this.stats.errors++;
    this.senseKey = key;
    this.asc = asc;
    this.fisD2h(slot, (key << 12) | ATA_S_READY | ATA_S_ERROR);
  }
}
