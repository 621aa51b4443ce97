// The High Definition Audio controller, bhyve's pci_hda.c: PCI 8086:27d8
// (Intel 82801G, ICH7), class 04/03, HDCTL (config 0x40) = 1 (HDA mode),
// its registers in 32-bit memory BAR 0 (0x2184 bytes), a legacy INTx line
// (bhyve has no MSI for hda). Four input streams (0-3) then four output
// streams (4-7), 64-bit addressing, CORB and RIRB of 256 entries, one
// codec (hda-codec.ts) when play= or rec= is set.
//
//   -s 5,hda,play=PATH,rec=PATH     (pci.B.S.F.play, pci.B.S.F.rec)
//
// Registers are a byte array (any access size reaches the right bytes;
// bhyve keeps one word per byte offset instead); the writes with side
// effects are bhyve's hda_set_reg_table: GCTL (CRST=0 resets the
// controller and the codec, which reports in STATESTS), STATESTS /
// RIRBSTS / SDnSTS (write 1 to clear), CORBWP (runs the CORB: each verb
// goes to the codec, each response into the RIRB), CORBRP (RST),
// CORBCTL (CORBRUN), RIRBWP (RST), RIRBCTL (RIRBDMAEN), DPLBASE (the DMA
// position buffer), SDnCTL (SRST, RUN). Besides bhyve's: INTCTL and
// WAKEEN writes re-evaluate the interrupt line, read-only registers stay
// read-only, and the stream interrupt bits follow the spec (BCIS with
// IOCE, FIFOE with FEIE, DESE with DEIE; bhyve raises on BCIS alone).
//
// Hostile guests (bhyve's later hardening, and the spec's error bits): a
// CORB or RIRB outside guest RAM does not start (CORBCTL.CORBRUN or
// RIRBCTL.RIRBDMAEN reads back 0; CORBSTS.CMEI or RIRBSTS.RIRBOIS set); a
// verb for a codec address with no codec stops the CORB with CMEI; a DMA
// position buffer outside RAM is not enabled; a stream whose BDL is
// outside RAM, has more than 256 entries (LVI > 255), an entry of length
// 0 or not a multiple of 4, a buffer outside RAM, or a cyclic buffer
// length of 0, not a multiple of 4 or longer than its BDL, does not run:
// RUN reads back 0 and SDnSTS.DESE is set (an interrupt with DEIE). A
// stream tag of 0, or one another stream of the same direction runs
// with, is refused the same way.

import type { ConfigTree } from '../../config/tree.js';
import { GuestMemoryError } from '../../sys/guest-memory.js';
import type { Device, DeviceContext } from '../device.js';
import type { PciDeviceModel } from '../pci-device.js';
import { PciEmulFunction } from '../pci/pci-emul.js';
import { PcmFile } from './hda-audio.js';
import { HdaCodec, type HdaOps } from './hda-codec.js';

export const HDA_VENDOR = 0x8086;
export const HDA_DEVICE = 0x27d8;
export const PCIC_MULTIMEDIA = 0x04;
export const PCIS_MULTIMEDIA_HDA = 0x03;
const PCIR_HDCTL = 0x40;

export const HDA_ISS_NO = 4;
export const HDA_OSS_NO = 4;
export const HDA_IOSS_NO = 8;
const HDA_CODEC_MAX = 0x0f;
/** bhyve's HDA_LAST_OFFSET: the LPIB aliases end the register block. */
export const HDA_LAST_OFFSET = 0x2084 + HDA_ISS_NO * 0x20 + HDA_OSS_NO * 0x20;
const HDA_CORB_ENTRY_LEN = 4;
const HDA_RIRB_ENTRY_LEN = 8;
const HDA_BDL_ENTRY_LEN = 16;
const HDA_DMA_PIB_ENTRY_LEN = 8;
const HDA_STREAM_TAGS_CNT = 16;
const HDA_BDL_MAX_LEN = 0x100;
const HDA_DMA_ACCESS_LEN = 4;
export const HDA_FIFO_SIZE = 0x100;
const NO_STREAM = 0xff;

// Register offsets (hdac_reg.h)
export const R = {
  GCAP: 0x00, VMIN: 0x02, VMAJ: 0x03, OUTPAY: 0x04, INPAY: 0x06, GCTL: 0x08, WAKEEN: 0x0c, STATESTS: 0x0e,
  GSTS: 0x10, INTCTL: 0x20, INTSTS: 0x24, WALCLK: 0x30, SSYNC: 0x38, CORBLBASE: 0x40, CORBUBASE: 0x44,
  CORBWP: 0x48, CORBRP: 0x4a, CORBCTL: 0x4c, CORBSTS: 0x4d, CORBSIZE: 0x4e, RIRBLBASE: 0x50, RIRBUBASE: 0x54,
  RIRBWP: 0x58, RINTCNT: 0x5a, RIRBCTL: 0x5c, RIRBSTS: 0x5d, RIRBSIZE: 0x5e, ICOI: 0x60, ICII: 0x64, ICIS: 0x68,
  DPLBASE: 0x70, DPUBASE: 0x74,
} as const;
/** Stream descriptor registers, from the stream's base 0x80 + 0x20 * n. */
export const SD = { CTL: 0x00, STS: 0x03, LPIB: 0x04, CBL: 0x08, LVI: 0x0c, FIFOS: 0x10, FMT: 0x12, BDPL: 0x18, BDPU: 0x1c } as const;
export const sdBase = (n: number): number => 0x80 + 0x20 * n;

export const GCTL_CRST = 0x1;
export const INTCTL_CIE = 0x40000000;
export const INTCTL_GIE = 0x80000000;
export const INTSTS_CIS = 0x40000000;
export const INTSTS_GIS = 0x80000000;
export const CORBRP_RST = 0x8000;
export const CORBCTL_CMEIE = 0x01;
export const CORBCTL_RUN = 0x02;
export const CORBSTS_CMEI = 0x01;
export const RIRBWP_RST = 0x8000;
export const RIRBCTL_RINTCTL = 0x01;
export const RIRBCTL_DMAEN = 0x02;
export const RIRBSTS_RINTFL = 0x01;
export const RIRBSTS_RIRBOIS = 0x04;
export const DPLBASE_ENABLE = 0x1;
export const SDCTL_SRST = 0x01;
export const SDCTL_RUN = 0x02;
export const SDCTL_IOCE = 0x04;
export const SDCTL_FEIE = 0x08;
export const SDCTL_DEIE = 0x10;
export const SDSTS_BCIS = 0x04;
export const SDSTS_FIFOE = 0x08;
export const SDSTS_DESE = 0x10;
export const SDSTS_FIFORDY = 0x20;
const SDSTS_IRQ_MASK = SDSTS_DESE | SDSTS_FIFOE | SDSTS_BCIS;

const CORB_SIZES = [2, 16, 256, 0];

/** Read-only bytes (guest writes leave them as they are). */
function readOnlyByte(off: number): boolean {
  if (off < 0x08) return true; // GCAP, VMIN, VMAJ, OUTPAY, INPAY
  if (off >= R.INTSTS && off < R.INTSTS + 4) return true;
  if (off >= R.WALCLK && off < R.WALCLK + 4) return true;
  if (off >= 0x2000) return true; // LPIB aliases
  if (off >= 0x80 && off < 0x80 + HDA_IOSS_NO * 0x20) {
    const o = (off - 0x80) & 0x1f;
    return (o >= SD.LPIB && o < SD.LPIB + 4) || (o >= SD.FIFOS && o < SD.FIFOS + 2);
  }
  return false;
}

/** The side-effect registers: offset and width, in the order their
 * handlers run when one access writes several: a status register (write 1
 * to clear) before the control register beside it, which may set a new
 * error bit there (a dword write of SDnCTL with SDnSTS, as Linux does);
 * CORBRP before CORBWP, whose run moves the read pointer. */
const HANDLED: Array<{ off: number; len: number }> = [
  { off: R.GCTL, len: 4 }, { off: R.WAKEEN, len: 2 }, { off: R.STATESTS, len: 2 }, { off: R.INTCTL, len: 4 },
  { off: R.CORBRP, len: 2 }, { off: R.CORBWP, len: 2 }, { off: R.CORBSTS, len: 1 }, { off: R.CORBCTL, len: 1 },
  { off: R.CORBSIZE, len: 1 }, { off: R.RIRBWP, len: 2 }, { off: R.RIRBSTS, len: 1 }, { off: R.RIRBCTL, len: 1 },
  { off: R.RIRBSIZE, len: 1 }, { off: R.DPLBASE, len: 4 },
  ...Array.from({ length: HDA_IOSS_NO }, (_, i) => [
    { off: sdBase(i) + SD.STS, len: 1 }, { off: sdBase(i) + SD.CTL, len: 3 },
  ]).flat(),
];

interface CmdRing { run: boolean; rp: number; wp: number; size: number; addr: number; }
interface BdlEntry { addr: number; len: number; ioc: boolean; }
interface StreamDesc {
  dir: 0 | 1;
  run: boolean;
  stream: number;
  /** Bytes moved in the current entry, and the current entry. */
  bp: number;
  be: number;
  cbl: number;
  bdl: BdlEntry[];
}

const idleStream = (): StreamDesc => ({ dir: 0, run: false, stream: 0, bp: 0, be: 0, cbl: 0, bdl: [] });

export class HdaController extends PciEmulFunction implements Device {
  readonly regs = new Uint8Array(HDA_LAST_OFFSET);
  private readonly dv = new DataView(this.regs.buffer);
  private lineUp = false;
  private rirbCnt = 0;
  private wallClockStart = process.hrtime.bigint();
  private corb: CmdRing = { run: false, rp: 0, wp: 0, size: 0, addr: 0 };
  private rirb: CmdRing = { run: false, rp: 0, wp: 0, size: 0, addr: 0 };
  private dmaPib: number | undefined;
  private readonly streams: StreamDesc[] = Array.from({ length: HDA_IOSS_NO }, idleStream);
  private readonly streamMap = [new Uint8Array(HDA_STREAM_TAGS_CNT).fill(NO_STREAM), new Uint8Array(HDA_STREAM_TAGS_CNT).fill(NO_STREAM)];
  readonly codecs: HdaCodec[] = [];
  private readonly scratch: Uint8Array[] = [];

  readonly counts = { verbs: 0, responses: 0, iocInterrupts: 0, descriptorErrors: 0, commandErrors: 0, bytesPlayed: 0, bytesRecorded: 0 };

  constructor(ctx: DeviceContext, play?: string, rec?: string) {
    super('hda', ctx);
    this.cfg.setIdentity({ vendor: HDA_VENDOR, device: HDA_DEVICE, classCode: PCIC_MULTIMEDIA, subclass: PCIS_MULTIMEDIA_HDA });
    this.cfg.set8(PCIR_HDCTL, 0x01); // Intel HDA mode
    this.allocBar(0, 'mem32', HDA_LAST_OFFSET, {
      read: (off, size) => this.read(off, size),
      write: (off, size, value) => this.write(off, size, value),
    });
    this.requestIntx();
    this.resetRegs();
    // hda_init: one codec when play or rec is set.
    if (play !== undefined || rec !== undefined) {
      const p = play !== undefined ? PcmFile.open(play, true) : undefined;
      let r: PcmFile | undefined;
      try {
        r = rec !== undefined ? PcmFile.open(rec, false) : undefined;
      } catch (e) {
        p?.close();
        throw e;
      }
      const ops: HdaOps = {
        signal: (cad) => this.signalStateChange(cad),
        response: (cad, resp, unsol) => this.response(cad, resp, unsol),
        transfer: (stream, dir, buf, count) => this.transfer(stream, dir, buf, count),
        untilIoc: (stream, dir) => this.untilIoc(stream, dir),
      };
      this.codecs.push(new HdaCodec(this.codecs.length, p, r, (cb) => ctx.timer(cb), ops));
    }
  }

  // ---- register file ----

  private get8(off: number): number { return this.regs[off]; }
  private get16(off: number): number { return this.dv.getUint16(off, true); }
  private get32(off: number): number { return this.dv.getUint32(off, true); }
  private set8(off: number, v: number): void { this.regs[off] = v & 0xff; }
  private set16(off: number, v: number): void { this.dv.setUint16(off, v & 0xffff, true); }
  private set32(off: number, v: number): void { this.dv.setUint32(off, v >>> 0, true); }

  read(off: number, size: 1 | 2 | 4): number {
    if (off < 0 || off + size > HDA_LAST_OFFSET) return size === 4 ? 0xffffffff : size === 2 ? 0xffff : 0xff;
    if (off >= R.WALCLK && off < R.WALCLK + 4) this.set32(R.WALCLK, this.wallClock());
    return size === 1 ? this.get8(off) : size === 2 ? this.get16(off) : this.get32(off);
  }

  /** 24 MHz since the last controller reset (hda_read of HDAC_WALCLK). */
  private wallClock(): number {
    return Number(((process.hrtime.bigint() - this.wallClockStart) * 24n / 1000n) & 0xffffffffn);
  }

  write(off: number, size: 1 | 2 | 4, value: number): void {
    if (off < 0 || off + size > HDA_LAST_OFFSET) return;
    // In reset (CRST=0) only GCTL can be written (the spec; bhyve stores all).
    if (!(this.get32(R.GCTL) & GCTL_CRST) && (off + size <= R.GCTL || off >= R.GCTL + 4)) return;
    const touched = HANDLED.filter((h) => off < h.off + h.len && h.off < off + size);
    const old = touched.map((h) => this.getN(h.off, h.len));
    for (let i = 0; i < size; i++) {
      const o = off + i;
      if (!readOnlyByte(o)) this.regs[o] = (value >>> (8 * i)) & 0xff;
    }
    touched.forEach((h, i) => this.onWrite(h.off, old[i]));
  }

  private getN(off: number, len: number): number {
    return len === 1 ? this.get8(off) : len === 2 ? this.get16(off) : len === 3 ? this.get32(off) & 0xffffff : this.get32(off);
  }

  /** hda_set_reg_table. */
  private onWrite(off: number, old: number): void {
    switch (off) {
      case R.GCTL: if (!(this.get32(R.GCTL) & GCTL_CRST)) this.controllerReset(); return;
      case R.WAKEEN: case R.INTCTL: this.updateIntr(); return;
      case R.STATESTS: this.w1c16(off, old, 0x7fff); this.updateIntr(); return;
      case R.CORBWP: this.set16(off, this.get16(off) & 0xff); this.corbRun(); return;
      case R.CORBRP: this.setCorbRp(old); return;
      case R.CORBCTL: this.setCorbCtl(old); return;
      case R.CORBSTS: this.w1c8(off, old, CORBSTS_CMEI); this.updateIntr(); return;
      case R.CORBSIZE: case R.RIRBSIZE: this.set8(off, (old & 0xf0) | (this.get8(off) & 0x03)); return;
      case R.RIRBWP: this.setRirbWp(old); return;
      case R.RIRBCTL: this.setRirbCtl(); return;
      case R.RIRBSTS: this.w1c8(off, old, RIRBSTS_RINTFL | RIRBSTS_RIRBOIS); this.updateIntr(); return;
      case R.DPLBASE: this.setDplbase(old); return;
      default: {
        const idx = (off - 0x80) >> 5;
        if ((off & 0x1f) === SD.CTL) this.setSdCtl(idx, old);
        else { this.w1c8(off, old, SDSTS_IRQ_MASK); this.updateIntr(); }
      }
    }
  }

  /** Write-1-to-clear: the bits written as 1 (within mask) clear. */
  private w1c8(off: number, old: number, mask: number): void { this.set8(off, old & ~(this.get8(off) & mask)); }
  private w1c16(off: number, old: number, mask: number): void { this.set16(off, old & ~(this.get16(off) & mask)); }

  // ---- reset ----

  /** hda_reset_regs(). */
  private resetRegs(): void {
    this.regs.fill(0);
    for (const m of this.streamMap) m.fill(NO_STREAM);
    this.set16(R.GCAP, 0x0001 | (HDA_ISS_NO << 8) | (HDA_OSS_NO << 12)); // 64OK
    this.set8(R.VMAJ, 0x01);
    this.set16(R.OUTPAY, 0x3c);
    this.set16(R.INPAY, 0x1d);
    this.set8(R.CORBSIZE, 0x40 | 0x02); // 256 entries (and the only size offered)
    this.set8(R.RIRBSIZE, 0x40 | 0x02);
    for (let i = 0; i < HDA_IOSS_NO; i++) this.set16(sdBase(i) + SD.FIFOS, HDA_FIFO_SIZE);
  }

  /** hda_reset(): CRST=0. Streams stop, rings and the position buffer go,
   * registers to their defaults, then each codec resets and reports. */
  private controllerReset(): void {
    this.lowerLine();
    for (let i = 0; i < HDA_IOSS_NO; i++) {
      if (this.streams[i].run) this.streamStop(i);
      this.streams[i] = idleStream();
    }
    this.corb = { run: false, rp: 0, wp: 0, size: 0, addr: 0 };
    this.rirb = { run: false, rp: 0, wp: 0, size: 0, addr: 0 };
    this.dmaPib = undefined;
    this.rirbCnt = 0;
    this.resetRegs();
    for (const c of this.codecs) c.reset();
    this.wallClockStart = process.hrtime.bigint();
  }


  // ---- interrupts ----

  /** hda_update_intr(), with the spec's per-stream enables and CMEI. */
  private updateIntr(): void {
    const intctl = this.get32(R.INTCTL);
    let intsts = 0;
    if (this.get8(R.RIRBSTS) & (RIRBSTS_RINTFL | RIRBSTS_RIRBOIS)) intsts |= INTSTS_CIS;
    if ((this.get8(R.CORBSTS) & CORBSTS_CMEI) && (this.get8(R.CORBCTL) & CORBCTL_CMEIE)) intsts |= INTSTS_CIS;
    if (this.get16(R.STATESTS) & this.get16(R.WAKEEN)) intsts |= INTSTS_CIS;
    for (let i = 0; i < HDA_IOSS_NO; i++) {
      const sts = this.get8(sdBase(i) + SD.STS);
      const ctl = this.get8(sdBase(i) + SD.CTL);
      if (((sts & SDSTS_BCIS) && (ctl & SDCTL_IOCE)) || ((sts & SDSTS_FIFOE) && (ctl & SDCTL_FEIE))
        || ((sts & SDSTS_DESE) && (ctl & SDCTL_DEIE))) intsts |= 1 << i;
    }
    if (intsts) intsts |= INTSTS_GIS;
    this.set32(R.INTSTS, intsts);
    const level = (intctl & INTCTL_GIE) !== 0 && ((intsts & ~INTSTS_GIS) & intctl) !== 0;
    if (level && !this.lineUp) { this.lineUp = true; this.intxAssert(); }
    else if (!level) this.lowerLine();
  }

  private lowerLine(): void {
    if (this.lineUp) { this.lineUp = false; this.intxDeassert(); }
  }

  /** hda_response_interrupt(). */
  private responseInterrupt(): void {
    if ((this.get8(R.RIRBCTL) & RIRBCTL_RINTCTL) && this.rirbCnt !== 0) {
      this.rirbCnt = 0;
      this.set8(R.RIRBSTS, this.get8(R.RIRBSTS) | RIRBSTS_RINTFL);
      this.updateIntr();
    }
  }

  // ---- CORB / RIRB ----

  private ringAddr(lo: number, hi: number): number { return hi * 0x100000000 + ((lo & ~0x7f) >>> 0); }

  /** Whether [addr, addr+len) is guest RAM (bhyve's paddr_guest2host). */
  private inRam(addr: number, len: number): boolean {
    if (len <= 0 || !Number.isSafeInteger(addr + len)) return false;
    try {
      this.scratch.length = 0;
      this.ctx.mem.slices(addr, len, this.scratch);
      return true;
    } catch (e) {
      if (e instanceof GuestMemoryError) return false;
      throw e;
    }
  }

  /** hda_corb_start(). */
  private corbStart(): boolean {
    const size = CORB_SIZES[this.get8(R.CORBSIZE) & 0x03];
    if (!size) return false;
    const addr = this.ringAddr(this.get32(R.CORBLBASE), this.get32(R.CORBUBASE));
    if (!this.inRam(addr, HDA_CORB_ENTRY_LEN * size)) return false;
    this.corb = { run: true, size, addr, wp: this.get16(R.CORBWP) & 0xff, rp: this.get16(R.CORBRP) & 0xff };
    return true;
  }

  /** hda_corb_run(): every verb between RP and WP goes to its codec. */
  private corbRun(): boolean {
    const corb = this.corb;
    if (!corb.run) return true;
    corb.wp = this.get16(R.CORBWP) & 0xff;
    if (corb.wp >= corb.size) return false;
    while (corb.rp !== corb.wp && corb.run) {
      corb.rp = (corb.rp + 1) % corb.size;
      const verb = this.ctx.mem.readU32(corb.addr + HDA_CORB_ENTRY_LEN * corb.rp);
      this.counts.verbs++;
      const cad = verb >>> 28;
      const codec = cad < this.codecs.length ? this.codecs[cad] : undefined;
      if (!codec) {
        // No codec at that address: the CORB stops with a memory error.
        this.counts.commandErrors++;
        this.set8(R.CORBSTS, this.get8(R.CORBSTS) | CORBSTS_CMEI);
        corb.run = false;
        this.set16(R.CORBRP, corb.rp);
        this.set8(R.CORBCTL, this.get8(R.CORBCTL) & ~CORBCTL_RUN);
        this.updateIntr();
        return false;
      }
      codec.command(verb);
    }
    this.set16(R.CORBRP, corb.rp);
    if (corb.run) this.responseInterrupt();
    return true;
  }

  /** hda_set_corbrp(): RST clears the read pointer (at once, as bhyve). */
  private setCorbRp(old: number): void {
    if (this.get16(R.CORBRP) & CORBRP_RST) {
      this.set16(R.CORBRP, 0);
      this.corb.rp = 0;
    } else {
      this.set16(R.CORBRP, old);
    }
  }

  /** hda_set_corbctl(). */
  private setCorbCtl(old: number): void {
    const v = this.get8(R.CORBCTL);
    if (v & CORBCTL_RUN) {
      if (!(old & CORBCTL_RUN) && !this.corbStart()) {
        this.counts.commandErrors++;
        this.set8(R.CORBCTL, v & ~CORBCTL_RUN);
        this.set8(R.CORBSTS, this.get8(R.CORBSTS) | CORBSTS_CMEI);
        this.updateIntr();
        return;
      }
      this.corbRun();
    } else {
      this.corb = { run: false, rp: 0, wp: 0, size: 0, addr: 0 };
    }
  }

  /** hda_set_rirbwp(): RST clears the write pointer; otherwise read-only. */
  private setRirbWp(old: number): void {
    if (this.get16(R.RIRBWP) & RIRBWP_RST) {
      this.set16(R.RIRBWP, 0);
      this.rirb.wp = 0;
      this.rirbCnt = 0;
    } else {
      this.set16(R.RIRBWP, old);
    }
  }

  /** hda_set_rirbctl() / hda_rirb_start(). */
  private setRirbCtl(): void {
    if (this.get8(R.RIRBCTL) & RIRBCTL_DMAEN) {
      const size = CORB_SIZES[this.get8(R.RIRBSIZE) & 0x03];
      const addr = this.ringAddr(this.get32(R.RIRBLBASE), this.get32(R.RIRBUBASE));
      if (!size || !this.inRam(addr, HDA_RIRB_ENTRY_LEN * size)) {
        this.counts.commandErrors++;
        this.set8(R.RIRBCTL, this.get8(R.RIRBCTL) & ~RIRBCTL_DMAEN);
        this.set8(R.RIRBSTS, this.get8(R.RIRBSTS) | RIRBSTS_RIRBOIS);
        this.updateIntr();
        return;
      }
      this.rirb = { run: true, size, addr, wp: this.get16(R.RIRBWP) & 0xff, rp: 0 };
    } else {
      this.rirb = { run: false, rp: 0, wp: 0, size: 0, addr: 0 };
    }
  }

  /** hda_signal_state_change(). */
  private signalStateChange(cad: number): void {
    this.set16(R.STATESTS, this.get16(R.STATESTS) | (1 << cad));
    this.updateIntr();
  }

  /** hda_response(): the response and its extended word (codec address,
   * unsolicited bit) into the next RIRB entry. */
  private response(cad: number, response: number, unsol: boolean): void {
    const rirb = this.rirb;
    if (rirb.run) {
      rirb.wp = (rirb.wp + 1) % rirb.size;
      const at = rirb.addr + HDA_RIRB_ENTRY_LEN * rirb.wp;
      this.ctx.mem.writeU32(at, response >>> 0);
      this.ctx.mem.writeU32(at + 4, cad | (unsol ? 0x10 : 0));
      this.set16(R.RIRBWP, rirb.wp);
      this.rirbCnt++;
      this.counts.responses++;
    }
    let rintcnt = this.get16(R.RINTCNT) & 0xff;
    if (rintcnt === 0) rintcnt = 256;
    if (this.rirbCnt >= rintcnt) this.responseInterrupt();
  }

  // ---- DMA position buffer ----

  /** hda_set_dpiblbase(). */
  private setDplbase(old: number): void {
    const v = this.get32(R.DPLBASE);
    if ((v & DPLBASE_ENABLE) === (old & DPLBASE_ENABLE)) return;
    if (v & DPLBASE_ENABLE) {
      const addr = this.get32(R.DPUBASE) * 0x100000000 + ((v & 0xffffff80) >>> 0);
      if (this.inRam(addr, HDA_DMA_PIB_ENTRY_LEN * HDA_IOSS_NO)) this.dmaPib = addr;
      else this.set32(R.DPLBASE, v & ~DPLBASE_ENABLE);
    } else {
      this.dmaPib = undefined;
    }
  }

  /** hda_set_pib(): LPIB, its alias, and the position buffer. */
  private setPib(i: number, pib: number): void {
    this.set32(sdBase(i) + SD.LPIB, pib);
    this.set32(0x2000 + sdBase(i) + SD.LPIB, pib);
    if (this.dmaPib !== undefined) this.ctx.mem.writeU32(this.dmaPib + i * HDA_DMA_PIB_ENTRY_LEN, pib);
  }

  // ---- streams ----

  /** hda_set_sdctl(). */
  private setSdCtl(i: number, old: number): void {
    const off = sdBase(i);
    const v = this.get32(off) & 0xffffff;
    if (v & SDCTL_SRST) { this.streamReset(i); return; }
    if ((v & SDCTL_RUN) !== (old & SDCTL_RUN)) {
      if (v & SDCTL_RUN) {
        if (!this.streamStart(i)) {
          this.counts.descriptorErrors++;
          this.set8(off + SD.CTL, this.get8(off + SD.CTL) & ~SDCTL_RUN);
          this.set8(off + SD.STS, this.get8(off + SD.STS) | SDSTS_DESE);
          this.updateIntr();
        }
      } else {
        this.streamStop(i);
      }
    }
  }

  /** hda_stream_reset(): registers to 0, FIFORDY and SRST read back 1. */
  private streamReset(i: number): void {
    if (this.streams[i].run) this.streamStop(i);
    const off = sdBase(i);
    this.regs.fill(0, off, off + 0x20);
    this.streams[i] = idleStream();
    this.set8(off + SD.STS, SDSTS_FIFORDY);
    this.set8(off + SD.CTL, SDCTL_SRST);
    this.set16(off + SD.FIFOS, HDA_FIFO_SIZE);
    this.setPib(i, 0);
    this.updateIntr();
  }

  /** hda_stream_start(): checks and walks the BDL. False: descriptor error. */
  private streamStart(i: number): boolean {
    const st = this.streams[i];
    if (st.run) return false;
    const off = sdBase(i);
    const strm = (this.get32(off + SD.CTL) >>> 20) & 0x0f;
    const dir: 0 | 1 = i >= HDA_ISS_NO ? 1 : 0;
    const mapped = this.streamMap[dir][strm];
    if (strm === 0 || (mapped !== NO_STREAM && mapped !== i)) return false;
    const lvi = this.get16(off + SD.LVI);
    const cbl = this.get32(off + SD.CBL);
    const bdlCnt = lvi + 1;
    if (bdlCnt > HDA_BDL_MAX_LEN || cbl === 0 || cbl % HDA_DMA_ACCESS_LEN !== 0) return false;
    const bdlAddr = this.get32(off + SD.BDPU) * 0x100000000 + ((this.get32(off + SD.BDPL) & ~0x7f) >>> 0);
    if (!this.inRam(bdlAddr, HDA_BDL_ENTRY_LEN * bdlCnt)) return false;
    const bdl: BdlEntry[] = [];
    let total = 0;
    const m = this.ctx.mem;
    for (let e = 0; e < bdlCnt; e++) {
      const at = bdlAddr + e * HDA_BDL_ENTRY_LEN;
      const addr = m.readU32(at + 4) * 0x100000000 + m.readU32(at);
      const len = m.readU32(at + 8);
      const ioc = (m.readU32(at + 12) & 1) !== 0;
      if (len === 0 || len % HDA_DMA_ACCESS_LEN !== 0) return false;
      if (total > 0xffffffff - len || !this.inRam(addr, len)) return false;
      bdl.push({ addr, len, ioc });
      total += len;
    }
    if (total < cbl) return false; // the cyclic buffer must be backed by the BDL
    this.streams[i] = { dir, run: true, stream: strm, bp: 0, be: 0, cbl, bdl };
    this.streamMap[dir][strm] = i;
    this.setPib(i, 0);
    for (const c of this.codecs) if (c.notify(true, strm, dir)) break;
    return true;
  }

  /** hda_stream_stop(). */
  private streamStop(i: number): void {
    const st = this.streams[i];
    st.run = false;
    for (const c of this.codecs) if (c.notify(false, st.stream, st.dir)) break;
    if (this.streamMap[st.dir][st.stream] === i) this.streamMap[st.dir][st.stream] = NO_STREAM;
  }

  /** hda_transfer(): moves `count` bytes between `buf` and the running
   * stream with tag `stream`, walking its BDL; LPIB wraps at the cyclic
   * buffer length; a finished entry with IOC sets BCIS. */
  transfer(stream: number, dir: 0 | 1, buf: Uint8Array, count: number): boolean {
    if (stream === 0 || stream >= HDA_STREAM_TAGS_CNT || count <= 0 || count % HDA_DMA_ACCESS_LEN !== 0 || count > buf.length) return false;
    const i = this.streamMap[dir][stream];
    if (i === NO_STREAM || (dir === 0 ? i >= HDA_ISS_NO : i < HDA_ISS_NO)) return false;
    const st = this.streams[i];
    if (!st.run || st.stream !== stream || st.be >= st.bdl.length || st.bp >= st.bdl[st.be].len) return false;
    const off = sdBase(i);
    let lpib = this.get32(off + SD.LPIB);
    let irq = false;
    let pos = 0;
    try {
      while (pos < count) {
        if (lpib >= st.cbl) return false;
        const e = st.bdl[st.be];
        const n = Math.min(count - pos, e.len - st.bp, st.cbl - lpib);
        // (a buffer may run across two chunks of guest RAM)
        this.scratch.length = 0;
        this.ctx.mem.slices(e.addr + st.bp, n, this.scratch);
        let at = pos;
        for (const v of this.scratch) {
          if (dir === 1) buf.set(v, at);
          else v.set(buf.subarray(at, at + v.length));
          at += v.length;
        }
        pos += n;
        st.bp += n;
        lpib += n;
        if (st.bp === e.len) {
          st.bp = 0;
          if (e.ioc) irq = true;
          st.be++;
          if (st.be === st.bdl.length) { st.be = 0; lpib = 0; }
        }
        if (lpib === st.cbl) { st.bp = 0; st.be = 0; lpib = 0; }
      }
    } catch (e) {
      if (!(e instanceof GuestMemoryError)) throw e;
      // A buffer that left guest RAM (it was checked at RUN): a descriptor error.
      this.counts.descriptorErrors++;
      this.set8(off + SD.STS, this.get8(off + SD.STS) | SDSTS_DESE);
      this.streamStop(i);
      this.set8(off + SD.CTL, this.get8(off + SD.CTL) & ~SDCTL_RUN);
      this.updateIntr();
      return false;
    }
    if (dir === 1) this.counts.bytesPlayed += count;
    else this.counts.bytesRecorded += count;
    this.setPib(i, lpib);
    if (irq) {
      this.counts.iocInterrupts++;
      this.set8(off + SD.STS, this.get8(off + SD.STS) | SDSTS_BCIS);
      this.updateIntr();
    }
    return true;
  }

  /** Bytes from a running stream's position to the end of the next BDL
   * entry with IOC (within one lap of the cyclic buffer). */
  untilIoc(stream: number, dir: 0 | 1): number | undefined {
    if (stream === 0 || stream >= HDA_STREAM_TAGS_CNT) return undefined;
    const i = this.streamMap[dir][stream];
    if (i === NO_STREAM) return undefined;
    const st = this.streams[i];
    if (!st.run || st.be >= st.bdl.length) return undefined;
    // The walk transfer() makes, without moving anything.
    let lpib = this.get32(sdBase(i) + SD.LPIB);
    let be = st.be;
    let bp = st.bp;
    let bytes = 0;
    for (let k = 0; k < st.bdl.length + 2; k++) {
      const e = st.bdl[be];
      const left = e.len - bp;
      const toWrap = st.cbl - lpib;
      if (toWrap < left) { // the lap ends inside this entry
        bytes += toWrap;
        lpib = 0; be = 0; bp = 0;
        continue;
      }
      bytes += left;
      lpib += left;
      if (e.ioc) return bytes;
      bp = 0;
      be++;
      if (be === st.bdl.length || lpib === st.cbl) { be = 0; lpib = 0; }
    }
    return undefined;
  }

  /** The cyclic buffer length a running stream took at RUN (the register
   * may change under it), undefined when it is not running. */
  runningCbl(i: number): number | undefined {
    const st = this.streams[i];
    return st?.run ? st.cbl : undefined;
  }

  // ---- device ----

  /** Machine reset: the controller as at power-on (held in reset, no
   * codec state change reported until the driver resets it). */
  reset(): void {
    this.controllerReset();
    this.set16(R.STATESTS, 0);
    this.updateIntr();
    this.resetInterrupts();
  }

  close(): void {
    for (const c of this.codecs) c.close();
  }

  stats(): Record<string, number> {
    const c = this.counts;
    return {
      'intx assertions': this.interruptCounts.intx, 'codec verbs': c.verbs, 'codec responses': c.responses,
      'ioc interrupts': c.iocInterrupts, 'descriptor errors': c.descriptorErrors, 'command errors': c.commandErrors,
      'bytes played': c.bytesPlayed, 'bytes recorded': c.bytesRecorded,
    };
  }
}

function hdaFiles(config: ConfigTree, node: string): { play?: string; rec?: string } {
  return { play: config.get(`${node}.play`), rec: config.get(`${node}.rec`) };
}

/** The emulation of its record (hda-record.ts). */
export const hdaModel: PciDeviceModel = {
  create: (ctx, s) => {
    const { play, rec } = hdaFiles(ctx.config, s.node);
    return new HdaController(ctx, play, rec);
  },
};
