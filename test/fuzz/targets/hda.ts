// Fuzz target for bhyve's hda (src/devices/hda/): the controller built by
// buildPlatform with a duplex codec (play= /dev/null, rec= a scratch PCM
// file), driven through BAR 0 as a driver does, with hostile traffic:
// controller resets, CORB and RIRB anywhere (in RAM, straddling its end,
// outside it) with any size, read and write pointers and RINTCNT; verbs of
// any codec address, NID, verb and payload (mostly the ones an OS sends);
// stream descriptors of every direction with BDLs anywhere, any LVI, entry
// lengths (0, odd, huge), buffers anywhere, any CBL, tag, format and
// SRST/RUN sequence; the DMA position buffer anywhere; register accesses
// of every size at any offset; RAM scribbled under running streams; time
// passing (on time and late) so the converters' timers move data.
// Invariants: a running stream's LPIB stays below the CBL it took at RUN; GIS is set
// exactly when another INTSTS bit is; the INTx line is wanted exactly when
// GIE is on and an enabled INTSTS bit is set.
import * as fs from 'node:fs';
import { buildPlatform } from '../../../src/devices/platform.js';
import { HdaController, R, SD, sdBase } from '../../../src/devices/hda/hda.js';
import { FuzzMachine, FUZZ_LAYOUT, RAM_SIZE } from '../machine.js';
import { InvariantError, type FuzzInstance, type FuzzTarget } from '../harness.js';
import type { Rng } from '../rng.js';
import { scratchPath } from '../scratch.js';

const SLOT = 5;
let seq = 0;

class HdaFuzz implements FuzzInstance {
  private readonly m: FuzzMachine;
  private readonly hda: HdaController;
  private readonly bar: number;
  private corb = 0;
  private corbWp = 0;
  lastOp?: string;
  private readonly counts = { verbs: 0, streamStarts: 0, resets: 0, ticks: 0 };

  constructor(private readonly r: Rng) {
    const rec = scratchPath(`hda-rec${seq++}.pcm`);
    fs.writeFileSync(rec, r.bytes(r.pick([0, 3, 4096, 65536])));
    this.m = new FuzzMachine(r, {
      config: {
        'pci.0.0.0.device': 'hostbridge', 'pci.0.31.0.device': 'lpc', [`pci.0.${SLOT}.0.device`]: 'hda',
        [`pci.0.${SLOT}.0.play`]: '/dev/null', [`pci.0.${SLOT}.0.rec`]: rec,
      },
    });
    const p = buildPlatform(this.m.ctx, FUZZ_LAYOUT);
    this.hda = p.devices.find((d): d is HdaController => d instanceof HdaController)!;
    this.bar = (this.m.cfgRead(0, SLOT, 0, 0x10, 4) & ~0xf) >>> 0;
    this.m.cfgWrite(0, SLOT, 0, 0x04, 2, 0x6);
    if (r.chance(0.9)) this.bringUp();
  }

  /** A dword into guest RAM (through the buffer: it may straddle the
   * machine's two RAM regions). */
  private w32(at: number, v: number): void {
    if (at >= 0 && at + 4 <= RAM_SIZE) new DataView(this.m.ram.buffer, this.m.ram.byteOffset).setUint32(at, v >>> 0, true);
  }

  private rd(off: number, size: number): number { return this.m.mmioRead(this.bar + off, size); }
  private wr(off: number, size: number, v: number): void { this.m.mmioWrite(this.bar + off, size, v); }

  /** A buffer in RAM (mostly), or anywhere. */
  private addr(len: number, align = 128): number {
    const r = this.r;
    if (r.chance(0.85)) return (r.below(Math.max(1, RAM_SIZE - len - align)) + align - 1) & ~(align - 1);
    return this.m.address();
  }

  private bringUp(): void {
    const r = this.r;
    this.wr(R.GCTL, 4, 0);
    this.wr(R.GCTL, 4, 1);
    this.corb = this.addr(1024);
    this.wr(R.CORBLBASE, 4, this.corb);
    this.wr(R.CORBUBASE, 4, r.chance(0.95) ? 0 : r.u32());
    this.wr(R.CORBRP, 2, 0x8000);
    this.wr(R.CORBWP, 2, 0);
    this.corbWp = 0;
    this.wr(R.CORBCTL, 1, 2);
    this.wr(R.RIRBLBASE, 4, this.addr(2048));
    this.wr(R.RIRBWP, 2, 0x8000);
    this.wr(R.RINTCNT, 2, r.pick([1, 1, 0, 255, r.below(0x10000)]));
    this.wr(R.RIRBCTL, 1, 3);
    this.wr(R.INTCTL, 4, r.chance(0.8) ? 0xc00000ff : r.u32());
    if (r.chance(0.7)) this.wr(R.DPLBASE, 4, (this.addr(64) | 1) >>> 0);
  }

  private verb(): number {
    const r = this.r;
    const cad = r.chance(0.9) ? 0 : r.below(16);
    const nid = r.chance(0.85) ? r.below(7) : r.below(256);
    let low: number;
    if (r.chance(0.8)) {
      const v12 = r.pick([0xf00, 0xf02, 0xf06, 0x706, 0xf07, 0x707, 0xf09, 0xf1c, 0xf20, 0x7ff, r.below(0x1000)]);
      low = (v12 << 8) | (v12 === 0xf00 ? r.pick([0, 2, 4, 5, 9, 0x0a, 0x0c, 0x0e, 0x12, 0x13, 0x14, r.below(256)]) : v12 === 0x706 ? r.pick([0x10, 0x20, 0, r.below(256)]) : r.below(256));
    } else {
      const v4 = r.pick([0x2, 0xa, 0x3, 0xb, r.below(16)]);
      low = (v4 << 16) | (v4 === 0x2 ? r.pick([0x11, 0x4011, 0x1811, 0x0047, 0x0021, r.below(0x10000)]) : r.below(0x10000));
    }
    return ((cad << 28) | (nid << 20) | (low & 0xfffff)) >>> 0;
  }

  private sendVerbs(): void {
    const r = this.r;
    const n = r.range(1, 8);
    for (let i = 0; i < n; i++) {
      this.corbWp = (this.corbWp + 1) & 0xff;
      const at = this.corb + 4 * this.corbWp;
      if (at + 4 <= RAM_SIZE) this.w32(at, this.verb());
    }
    this.wr(R.CORBWP, 2, r.chance(0.95) ? this.corbWp : r.below(0x10000));
    if (r.chance(0.5)) this.wr(R.RIRBSTS, 1, 0x05);
    if (!(this.rd(R.CORBCTL, 1) & 2) && r.chance(0.5)) this.wr(R.CORBCTL, 1, 2);
    this.counts.verbs += n;
  }

  /** Programs stream descriptor `i` with a BDL, mostly sane, then RUN. */
  private stream(): void {
    const r = this.r;
    const i = r.below(8);
    const sd = sdBase(i);
    // Point the converter at this stream's tag and a format, as a driver does.
    const tag = r.chance(0.9) ? r.range(1, 15) : 0;
    const nid = i >= 4 ? 2 : 4;
    this.corbWp = (this.corbWp + 1) & 0xff;
    if (this.corb + 4 * this.corbWp + 4 <= RAM_SIZE) this.w32(this.corb + 4 * this.corbWp, ((nid << 20) | (0x706 << 8) | (tag << 4)) >>> 0);
    this.corbWp = (this.corbWp + 1) & 0xff;
    const fmt = r.pick([0x11, 0x4011, 0x1811, 0x0500, 0x0047, 0x3f, r.below(0x10000)]);
    if (this.corb + 4 * this.corbWp + 4 <= RAM_SIZE) this.w32(this.corb + 4 * this.corbWp, ((nid << 20) | (0x2 << 16) | fmt) >>> 0);
    this.wr(R.CORBWP, 2, this.corbWp);
    this.wr(R.RIRBSTS, 1, 0x05);
    if (r.chance(0.7)) { this.wr(sd + SD.CTL, 1, 1); this.wr(sd + SD.CTL, 1, 0); }
    const n = r.chance(0.9) ? r.range(1, 8) : r.below(300);
    const bdl = this.addr(16 * Math.min(n, 256));
    let total = 0;
    for (let e = 0; e < Math.min(n, 256); e++) {
      const at = bdl + 16 * e;
      if (at + 16 > RAM_SIZE) break;
      const len = r.chance(0.85) ? r.pick([64, 256, 1024, 4096, 16384]) : r.pick([0, 2, 3, 0xfffffffc, r.u32()]);
      const buf = this.addr(Math.min(len, RAM_SIZE), 4);
      this.w32(at, buf >>> 0);
      this.w32(at + 4, r.chance(0.95) ? 0 : r.u32());
      this.w32(at + 8, len >>> 0);
      this.w32(at + 12, r.chance(0.6) ? 1 : r.u32());
      total += len;
    }
    this.wr(sd + SD.BDPL, 4, bdl >>> 0);
    this.wr(sd + SD.BDPU, 4, r.chance(0.95) ? 0 : r.u32());
    this.wr(sd + SD.LVI, 2, r.chance(0.9) ? Math.max(0, Math.min(n, 256) - 1) : r.below(0x10000));
    this.wr(sd + SD.CBL, 4, r.chance(0.8) ? total >>> 0 : r.chance(0.5) ? r.below(total + 1) & ~3 : r.u32());
    this.wr(sd + SD.FMT, 2, fmt);
    this.wr(sd + SD.CTL + 2, 1, (tag << 4) | r.below(16));
    this.lastOp = `stream ${i} tag ${tag} fmt 0x${fmt.toString(16)} BDL 0x${bdl.toString(16)} x${n}`;
    this.wr(sd + SD.CTL, 1, r.chance(0.9) ? 0x1e : r.below(256));
    this.counts.streamStarts++;
  }

  step(): void {
    const r = this.r;
    const k = r.below(100);
    if (k < 5) {
      this.lastOp = 'controller reset and bring-up';
      this.bringUp();
      this.counts.resets++;
    } else if (k < 25) {
      this.lastOp = 'verbs';
      this.sendVerbs();
    } else if (k < 40) {
      this.stream();
    } else if (k < 65) {
      const ns = BigInt(r.pick([1_000_000, 10_000_000, 50_000_000, 200_000_000, r.below(500_000_000)]));
      this.lastOp = `time ${ns} ns`;
      this.counts.ticks += this.m.clock.advance(ns, r.chance(0.3));
    } else if (k < 72) {
      this.lastOp = 'scribble';
      this.m.scribble();
    } else if (k < 80) {
      // Status write-1-to-clear as an interrupt handler does.
      const i = r.below(8);
      this.wr(sdBase(i) + SD.STS, 1, 0x1c);
      this.wr(R.RIRBSTS, 1, 0x05);
      this.wr(R.STATESTS, 2, 0x7fff);
      this.wr(R.CORBSTS, 1, 1);
      this.lastOp = `clear status of stream ${i}`;
    } else {
      const off = r.chance(0.7) ? r.pick([R.GCTL, R.INTCTL, R.WAKEEN, R.CORBWP, R.CORBRP, R.CORBCTL, R.CORBSIZE, R.RIRBWP,
        R.RIRBCTL, R.RINTCNT, R.RIRBSIZE, R.DPLBASE, R.DPUBASE, R.CORBLBASE, R.RIRBLBASE, sdBase(r.below(8)) + r.below(0x20)])
        : r.below(0x4000);
      const size = this.m.mmioSize();
      const v = r.chance(0.5) ? r.u32() : r.pick([0, 1, 2, 3, 0x8000, 0xffff, 0x1e, 0x80000000]);
      this.lastOp = `reg 0x${off.toString(16)}/${size} = 0x${v.toString(16)}`;
      if (r.chance(0.8)) this.wr(off, size, v);
      else this.rd(off, size);
    }
  }

  check(): void {
    const h = this.hda;
    const intsts = h.read(R.INTSTS, 4) >>> 0;
    if (((intsts & 0x7fffffff) !== 0) !== ((intsts & 0x80000000) !== 0)) throw new InvariantError(`INTSTS 0x${intsts.toString(16)}: GIS disagrees`);
    const intctl = h.read(R.INTCTL, 4) >>> 0;
    const want = (intctl & 0x80000000) !== 0 && (intsts & intctl & 0x7fffffff) !== 0;
    if (want !== (h.intxState !== 'idle')) throw new InvariantError(`INTx ${h.intxState} with INTCTL 0x${intctl.toString(16)} INTSTS 0x${intsts.toString(16)}`);
    for (let i = 0; i < 8; i++) {
      const sd = sdBase(i);
      const cbl = h.runningCbl(i);
      if (cbl === undefined) continue;
      const lpib = h.read(sd + SD.LPIB, 4) >>> 0;
      if (lpib >= cbl) throw new InvariantError(`stream ${i}: LPIB 0x${lpib.toString(16)} >= CBL 0x${cbl.toString(16)}`);
    }
  }

  close(): void { this.hda.close(); }

  stats(): Record<string, number> {
    const s = this.hda.stats();
    return {
      ...this.counts, responses: s['codec responses'], iocs: s['ioc interrupts'], 'descriptor errors': s['descriptor errors'],
      'command errors': s['command errors'], 'bytes played': s['bytes played'], 'bytes recorded': s['bytes recorded'],
    };
  }
}

export const HDA_TARGET: FuzzTarget = {
  name: 'hda',
  surface: 'bhyve\'s hda: BAR 0 registers, CORB/RIRB anywhere, verbs of any codec/NID/verb/payload, stream descriptors with BDLs anywhere (any LVI, lengths, CBL, tag, format), the DMA position buffer, converters moving data on their timers',
  create: (rng) => new HdaFuzz(rng),
  instanceOps: 3000,
};
