// bhyve's hda (pci_hda.c + hda_codec.c) played as a driver plays it:
// controller reset, the codec's state change, CORB commands and RIRB
// responses, codec enumeration, an output stream with IOC entries played
// into a PCM file byte for byte (LPIB, the position buffer, the INTx line),
// recording from a file, and hostile rings, descriptors and verbs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import { initConfig, parseSlotOption } from '../../src/config/bhyve-args.js';
import type { DeviceContext, DeviceTimer, InterruptSink } from '../../src/devices/device.js';
import { buildPlatform } from '../../src/devices/platform.js';
import {
  CORBCTL_RUN, CORBSTS_CMEI, GCTL_CRST, HDA_DEVICE, HDA_VENDOR, HdaController, INTCTL_CIE, INTCTL_GIE, R, RIRBCTL_DMAEN,
  RIRBCTL_RINTCTL, RIRBSTS_RINTFL, RIRBSTS_RIRBOIS, SD, SDCTL_DEIE, SDCTL_IOCE, SDCTL_RUN, SDCTL_SRST, SDSTS_BCIS,
  SDSTS_DESE, sdBase,
} from '../../src/devices/hda/hda.js';
import { parseFormat } from '../../src/devices/hda/hda-codec.js';
import { findPciDevice, isBuilt, pciHelpText } from '../../src/devices/registry.js';
import { computeLayout } from '../../src/sys/memory-map.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';
import '../support/device-models.js'; // the device models buildPlatform needs

const SLOT = 5;
const RAM = 4 << 20;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hda-unit-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

class Lines implements InterruptSink {
  levels = new Map<number, boolean>();
  rises = 0;
  setLevel(gsi: number, high: boolean): void {
    if (high && !this.levels.get(gsi)) this.rises++;
    this.levels.set(gsi, high);
  }
  pulse(): void {}
  signalMsi(): void { throw new Error('bhyve\'s hda has no MSI'); }
  anyHigh(): boolean { return [...this.levels.values()].some((v) => v); }
}

/** Device timers on a clock the test moves. */
class Clock {
  now = 1_000_000_000n;
  private timers: Array<{ cb: () => void; at: bigint | undefined }> = [];
  create(cb: () => void): DeviceTimer {
    const t = { cb, at: undefined as bigint | undefined };
    this.timers.push(t);
    return { armAt: (d) => { t.at = d; }, cancel: () => { t.at = undefined; }, now: () => this.now };
  }
  advance(ns: bigint): void {
    const end = this.now + ns;
    for (;;) {
      const due = this.timers.filter((t) => t.at !== undefined && t.at <= end).sort((a, b) => (a.at! < b.at! ? -1 : 1))[0];
      if (!due) break;
      this.now = due.at! > this.now ? due.at! : this.now;
      due.at = undefined;
      due.cb();
    }
    this.now = end;
  }
  get armed(): number { return this.timers.filter((t) => t.at !== undefined).length; }
}

const CORB = 0x10000;
const RIRB = 0x11000;
const DPIB = 0x12000;
const BDL = 0x13000;
const BUF = 0x20000;

function rig(settings: Record<string, string> = {}, split?: number) {
  const config = new ConfigTree();
  const all = { 'pci.0.0.0.device': 'hostbridge', 'pci.0.31.0.device': 'lpc', [`pci.0.${SLOT}.0.device`]: 'hda', ...settings };
  for (const [k, v] of Object.entries(all)) config.set(k, v);
  const ram = new Uint8Array(RAM);
  // `split`: RAM in two chunks that touch there, as the VMM maps it.
  const mem = new GuestMemory(split === undefined ? [{ gpa: 0, bytes: ram }]
    : [{ gpa: 0, bytes: ram.subarray(0, split) }, { gpa: split, bytes: ram.subarray(split) }]);
  const irq = new Lines();
  const clock = new Clock();
  const ctx: DeviceContext = {
    io: new LocalIoBus(), irq, config, mem, machine: { requestExit: () => {}, vcpuCount: 1 },
    stream: () => undefined, timer: (cb) => clock.create(cb),
  };
  const platform = buildPlatform(ctx, computeLayout(256 << 20));
  const hda = platform.devices.find((d): d is HdaController => d instanceof HdaController)!;
  const rd = (off: number, size: 1 | 2 | 4 = 4): number => hda.read(off, size);
  const wr = (off: number, v: number, size: 1 | 2 | 4 = 4): void => hda.write(off, size, v);
  return { platform, hda, mem, ram, irq, clock, rd, wr };
}
type Rig = ReturnType<typeof rig>;

/** Controller reset, CORB and RIRB of 256 entries, interrupts on. */
function bringUp(r: Rig): void {
  r.wr(R.GCTL, 0);
  r.wr(R.GCTL, GCTL_CRST);
  expect(r.rd(R.GCTL) & GCTL_CRST).toBe(GCTL_CRST);
  r.wr(R.CORBLBASE, CORB);
  r.wr(R.CORBUBASE, 0);
  r.wr(R.CORBRP, 0x8000, 2);
  r.wr(R.CORBWP, 0, 2);
  r.wr(R.CORBCTL, CORBCTL_RUN, 1);
  r.wr(R.RIRBLBASE, RIRB);
  r.wr(R.RIRBUBASE, 0);
  r.wr(R.RIRBWP, 0x8000, 2);
  r.wr(R.RINTCNT, 1, 2);
  r.wr(R.RIRBCTL, RIRBCTL_DMAEN | RIRBCTL_RINTCTL, 1);
  r.wr(R.INTCTL, (INTCTL_GIE | INTCTL_CIE | 0xff) >>> 0);
}

/** Sends verbs through the CORB; returns the responses from the RIRB. */
function commands(r: Rig, verbs: number[]): number[] {
  let wp = r.rd(R.CORBWP, 2);
  let rirbWp = r.rd(R.RIRBWP, 2);
  const out: number[] = [];
  for (const v of verbs) {
    wp = (wp + 1) % 256;
    r.mem.writeU32(CORB + 4 * wp, v >>> 0);
    r.wr(R.CORBWP, wp, 2);
    const now = r.rd(R.RIRBWP, 2);
    expect(now, `a response to ${v.toString(16)}`).toBe((rirbWp + 1) % 256);
    rirbWp = now;
    out.push(r.mem.readU32(RIRB + 8 * now));
    expect(r.mem.readU32(RIRB + 8 * now + 4)).toBe(0); // codec 0, solicited
    r.wr(R.RIRBSTS, RIRBSTS_RINTFL, 1);
  }
  return out;
}

const verb12 = (nid: number, verb: number, payload = 0): number => ((nid << 20) | (verb << 8) | payload) >>> 0;
const verb4 = (nid: number, verb: number, payload: number): number => ((nid << 20) | (verb << 16) | payload) >>> 0;
const getParam = (nid: number, p: number): number => verb12(nid, 0xf00, p);

/** Output stream 0 (descriptor 4): tag 1, the BDL at BDL, format 0x11. */
function setupOutput(r: Rig, entries: Array<{ len: number; ioc: boolean }>, o: { cbl?: number; lvi?: number } = {}): number {
  const sd = sdBase(4);
  let at = BUF;
  entries.forEach((e, i) => {
    r.mem.writeU32(BDL + 16 * i, at);
    r.mem.writeU32(BDL + 16 * i + 4, 0);
    r.mem.writeU32(BDL + 16 * i + 8, e.len);
    r.mem.writeU32(BDL + 16 * i + 12, e.ioc ? 1 : 0);
    at += e.len;
  });
  r.wr(sd + SD.CTL, SDCTL_SRST, 1);
  r.wr(sd + SD.CTL, 0, 1);
  r.wr(sd + SD.BDPL, BDL);
  r.wr(sd + SD.BDPU, 0);
  r.wr(sd + SD.LVI, o.lvi ?? entries.length - 1, 2);
  r.wr(sd + SD.CBL, o.cbl ?? at - BUF);
  r.wr(sd + SD.FMT, 0x11, 2);
  r.wr(sd + SD.CTL + 2, 1 << 4, 1); // stream tag 1
  return sd;
}

function pcmPattern(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) { x = (x * 1103515245 + 12345) >>> 0; b[i] = x >>> 24; }
  return b;
}

describe('hda: the PCI function', () => {
  it('is bhyve\'s 8086:27d8, class 04/03, HDCTL=1, a 32-bit memory BAR 0 and INTA; built and listed by -s help', () => {
    const r = rig();
    const cfg = r.hda.cfg;
    expect(cfg.get16(0)).toBe(HDA_VENDOR);
    expect(cfg.get16(2)).toBe(HDA_DEVICE);
    expect(cfg.get8(0x0b)).toBe(0x04);
    expect(cfg.get8(0x0a)).toBe(0x03);
    expect(cfg.get8(0x40)).toBe(0x01);
    expect(cfg.get8(0x3d)).toBe(1);
    expect(cfg.get32(0x10) & 0xf).toBe(0); // mem32
    expect(r.hda.declaredBars()).toEqual([{ idx: 0, kind: 'mem32', size: 0x4000 }]);
    expect(isBuilt(findPciDevice('hda')!)).toBe(true);
    expect(pciHelpText()).toContain('hda\n');
    expect(pciHelpText()).not.toContain('hda (not');
    const c = initConfig();
    parseSlotOption(c, '5,hda,play=/tmp/p,rec=/tmp/r');
    expect(c.get('pci.0.5.0.play')).toBe('/tmp/p');
    expect(c.get('pci.0.5.0.rec')).toBe('/tmp/r');
  });

  it('resets like bhyve: GCAP 4 in 4 out 64OK, v1.0, 256-entry rings, FIFOS; no codec without play/rec', () => {
    const r = rig();
    expect(r.rd(R.GCAP, 2)).toBe(0x4401);
    expect(r.rd(R.VMAJ, 1)).toBe(1);
    expect(r.rd(R.OUTPAY, 2)).toBe(0x3c);
    expect(r.rd(R.INPAY, 2)).toBe(0x1d);
    expect(r.rd(R.CORBSIZE, 1)).toBe(0x42);
    expect(r.rd(sdBase(0) + SD.FIFOS, 2)).toBe(0x100);
    // Read-only stays read-only.
    r.wr(R.GCTL, GCTL_CRST);
    r.wr(R.GCAP, 0, 2);
    expect(r.rd(R.GCAP, 2)).toBe(0x4401);
    r.wr(R.GCTL, 0);
    r.wr(R.GCTL, GCTL_CRST);
    expect(r.rd(R.STATESTS, 2)).toBe(0); // no codec
    const w1 = r.rd(R.WALCLK);
    expect(r.rd(R.WALCLK)).toBeGreaterThanOrEqual(w1);
  });
});

describe('hda: CORB, RIRB and the codec', () => {
  it('reports the codec in STATESTS after CRST, and answers the enumeration an OS does', () => {
    const play = path.join(tmp, 'enum.pcm');
    const r = rig({ [`pci.0.${SLOT}.0.play`]: play });
    r.wr(R.GCTL, 0);
    r.wr(R.GCTL, GCTL_CRST);
    expect(r.rd(R.STATESTS, 2)).toBe(1);
    r.wr(R.STATESTS, 1, 2);
    expect(r.rd(R.STATESTS, 2)).toBe(0);
    bringUp(r);
    const [vendor, rootNodes, fgNodes, fgType, subsys] = commands(r, [
      getParam(0, 0x00), getParam(0, 0x04), getParam(1, 0x04), getParam(1, 0x05), verb12(1, 0xf20),
    ]);
    expect(vendor).toBe(0x8086);
    expect(rootNodes).toBe(0x00010001);
    expect(fgNodes).toBe(0x00020002); // play only: NIDs 2 and 3
    expect(fgType & 0xff).toBe(1); // audio function group
    expect(subsys).toBe(0x80860001);
    const [dacCap, pinCap, pinPinCap, connLen, conn, cfgDef, sense, ampCap, pcm] = commands(r, [
      getParam(2, 0x09), getParam(3, 0x09), getParam(3, 0x0c), getParam(3, 0x0e), verb12(3, 0xf02),
      verb12(3, 0xf1c), verb12(3, 0xf09), getParam(2, 0x12), getParam(2, 0x0a),
    ]);
    expect(dacCap >>> 20).toBe(0); // audio output
    expect(pinCap >>> 20).toBe(4); // pin complex
    expect(pinPinCap & 0x10).toBe(0x10); // output capable
    expect(connLen).toBe(1);
    expect(conn).toBe(2); // the pin takes the DAC
    expect((cfgDef >>> 20) & 0xf).toBe(0); // line out
    expect(sense >>> 31).toBe(1); // plugged
    expect(ampCap >>> 0).toBe(0x80034a4a);
    expect(pcm).toBe(0x207fc);
    // Format, stream/channel and the amplifier round trip.
    const [, fmt, , sc, , ampL, ampR] = commands(r, [
      verb4(2, 0x2, 0x11), verb4(2, 0xa, 0), verb12(2, 0x706, 0x10), verb12(2, 0xf06), verb4(2, 0x3, 0xb000 | 0x40),
      verb4(2, 0xb, 0xa000), verb4(2, 0xb, 0x8000),
    ]);
    expect(fmt).toBe(0x11);
    expect(sc).toBe(0x10);
    expect(ampL).toBe(0x40); // unmuted, gain 0x40
    expect(ampR).toBe(0x40);
  });

  it('answers 0 to unknown verbs, NIDs past the last node and parameters past the table', () => {
    const r = rig({ [`pci.0.${SLOT}.0.play`]: path.join(tmp, 'bad-verbs.pcm') });
    bringUp(r);
    expect(commands(r, [verb12(0x7f, 0xf00, 0), getParam(0, 0xff), verb12(2, 0xf55), verb12(1, 0x7ff), verb12(6, 0xf09)]))
      .toEqual([0, 0, 0, 0, 0]);
  });

  it('raises the INTx line for a response (RINTCTL, RINTCNT) and drops it when RIRBSTS is cleared', () => {
    const r = rig({ [`pci.0.${SLOT}.0.play`]: path.join(tmp, 'irq.pcm') });
    bringUp(r);
    expect(r.irq.anyHigh()).toBe(false);
    r.mem.writeU32(CORB + 4, getParam(0, 0));
    r.wr(R.CORBWP, 1, 2);
    expect(r.rd(R.RIRBSTS, 1) & RIRBSTS_RINTFL).toBe(RIRBSTS_RINTFL);
    expect(r.rd(R.INTSTS) >>> 0).toBe(0xc0000000); // GIS | CIS
    expect(r.irq.anyHigh()).toBe(true);
    r.wr(R.RIRBSTS, RIRBSTS_RINTFL, 1);
    expect(r.irq.anyHigh()).toBe(false);
    expect(r.rd(R.INTSTS)).toBe(0);
    // GIE off: no line even with a response waiting.
    r.wr(R.INTCTL, INTCTL_CIE);
    r.mem.writeU32(CORB + 8, getParam(0, 0));
    r.wr(R.CORBWP, 2, 2);
    expect(r.irq.anyHigh()).toBe(false);
    r.wr(R.INTCTL, (INTCTL_GIE | INTCTL_CIE) >>> 0);
    expect(r.irq.anyHigh()).toBe(true);
  });

  it('refuses a CORB or RIRB outside guest RAM (RUN/DMAEN read 0, CMEI/RIRBOIS), and stops the CORB on a verb for no codec', () => {
    const r = rig({ [`pci.0.${SLOT}.0.play`]: path.join(tmp, 'hostile-rings.pcm') });
    r.wr(R.GCTL, 0);
    r.wr(R.GCTL, GCTL_CRST);
    r.wr(R.CORBLBASE, RAM - 0x200);
    r.wr(R.CORBCTL, CORBCTL_RUN, 1);
    expect(r.rd(R.CORBCTL, 1) & CORBCTL_RUN).toBe(0);
    expect(r.rd(R.CORBSTS, 1) & CORBSTS_CMEI).toBe(CORBSTS_CMEI);
    r.wr(R.CORBUBASE, 0xffffffff);
    r.wr(R.CORBLBASE, 0);
    r.wr(R.CORBCTL, CORBCTL_RUN, 1);
    expect(r.rd(R.CORBCTL, 1) & CORBCTL_RUN).toBe(0);
    r.wr(R.RIRBLBASE, 0xffffff80);
    r.wr(R.RIRBCTL, RIRBCTL_DMAEN, 1);
    expect(r.rd(R.RIRBCTL, 1) & RIRBCTL_DMAEN).toBe(0);
    expect(r.rd(R.RIRBSTS, 1) & RIRBSTS_RIRBOIS).toBe(RIRBSTS_RIRBOIS);
    // A good CORB, then a verb for codec address 3 (there is only 0).
    bringUp(r);
    r.mem.writeU32(CORB + 4, (3 << 28) | getParam(0, 0));
    r.wr(R.CORBWP, 1, 2);
    expect(r.rd(R.CORBCTL, 1) & CORBCTL_RUN).toBe(0);
    expect(r.rd(R.CORBSTS, 1) & CORBSTS_CMEI).toBe(CORBSTS_CMEI);
    expect(r.rd(R.CORBRP, 2)).toBe(1);
    // A write pointer past the ring size does nothing.
    r.wr(R.CORBCTL, CORBCTL_RUN, 1);
    expect(r.rd(R.CORBCTL, 1) & CORBCTL_RUN).toBe(CORBCTL_RUN);
  });
});

describe('hda: streams', () => {
  it('plays a known buffer into the play file byte for byte, paced at the rate, with IOC interrupts, LPIB and the position buffer', () => {
    const play = path.join(tmp, 'play.pcm');
    const r = rig({ [`pci.0.${SLOT}.0.play`]: play });
    bringUp(r);
    commands(r, [verb4(2, 0x2, 0x11), verb12(2, 0x706, 0x10), verb4(2, 0x3, 0xb000 | 0x4a)]);
    r.wr(R.DPLBASE, DPIB | 1);
    const entries = [{ len: 4096, ioc: true }, { len: 4096, ioc: false }, { len: 4096, ioc: true }, { len: 4096, ioc: true }];
    const total = 16384;
    const data = pcmPattern(total);
    r.ram.set(data, BUF);
    const sd = setupOutput(r, entries);
    r.wr(sd + SD.CTL, SDCTL_RUN | SDCTL_IOCE | SDCTL_DEIE, 1);
    expect(r.rd(sd + SD.CTL, 1) & SDCTL_RUN).toBe(SDCTL_RUN);
    expect(r.rd(sd + SD.STS, 1) & SDSTS_DESE).toBe(0);
    // 48 kHz, 16-bit, stereo: 192000 bytes/s. 10 ms moves 1920 bytes.
    r.clock.advance(10_000_000n);
    const lpib = r.rd(sd + SD.LPIB);
    expect(lpib).toBeGreaterThanOrEqual(1916);
    expect(lpib).toBeLessThanOrEqual(1924);
    expect(r.rd(0x2000 + sd + SD.LPIB)).toBe(lpib); // the alias
    expect(r.mem.readU32(DPIB + 8 * 4)).toBe(lpib); // the position buffer, stream 4
    expect(r.irq.anyHigh()).toBe(false);
    // Past the first entry: BCIS, SIS bit 4, the line.
    r.clock.advance(20_000_000n); // 30 ms: 5760 bytes
    expect(r.rd(sd + SD.STS, 1) & SDSTS_BCIS).toBe(SDSTS_BCIS);
    expect(r.rd(R.INTSTS) & 0x10).toBe(0x10);
    expect(r.irq.anyHigh()).toBe(true);
    r.wr(sd + SD.STS, SDSTS_BCIS, 1);
    expect(r.irq.anyHigh()).toBe(false);
    // The rest of the buffer: two more IOC entries.
    let iocs = 1;
    for (let t = 0; t < 100 && fs.statSync(play).size < total; t++) {
      r.clock.advance(5_000_000n);
      if (r.rd(sd + SD.STS, 1) & SDSTS_BCIS) { iocs++; r.wr(sd + SD.STS, SDSTS_BCIS, 1); }
    }
    r.wr(sd + SD.CTL, 0, 1);
    const got = fs.readFileSync(play);
    expect(got.length).toBeGreaterThanOrEqual(total);
    expect(Buffer.compare(got.subarray(0, total), Buffer.from(data))).toBe(0);
    // Whatever came after wrapped to the start of the cyclic buffer.
    expect(Buffer.compare(got.subarray(total), Buffer.from(data.subarray(0, got.length - total)))).toBe(0);
    expect(iocs).toBe(3);
    expect(r.hda.stats()['ioc interrupts']).toBe(3);
    // Stopped: the timer is idle and nothing more is written.
    r.clock.advance(100_000_000n);
    expect(fs.statSync(play).size).toBe(got.length);
    expect(r.clock.armed).toBe(0);
  });

  it('plays a buffer that runs across two chunks of guest RAM', () => {
    const play = path.join(tmp, 'split.pcm');
    const r = rig({ [`pci.0.${SLOT}.0.play`]: play }, BUF + 0x802);
    bringUp(r);
    commands(r, [verb4(2, 0x2, 0x11), verb12(2, 0x706, 0x10)]);
    const data = pcmPattern(8192, 3);
    r.ram.set(data, BUF);
    const sd = setupOutput(r, [{ len: 8192, ioc: true }]);
    r.wr(sd + SD.CTL, SDCTL_RUN | SDCTL_IOCE, 1);
    for (let t = 0; t < 10 && fs.statSync(play).size < 8192; t++) r.clock.advance(10_000_000n);
    r.wr(sd + SD.CTL, 0, 1);
    expect(r.rd(sd + SD.STS, 1) & SDSTS_DESE).toBe(0);
    expect(Buffer.compare(fs.readFileSync(play).subarray(0, 8192), Buffer.from(data))).toBe(0);
  });

  it('records from the rec file into the BDL buffers, then silence after its end', () => {
    const rec = path.join(tmp, 'rec.pcm');
    const data = pcmPattern(6000, 7);
    fs.writeFileSync(rec, data);
    const r = rig({ [`pci.0.${SLOT}.0.rec`]: rec });
    bringUp(r);
    const [fgNodes] = commands(r, [getParam(1, 0x04)]);
    expect(fgNodes).toBe(0x00040002); // rec only: NIDs 4 and 5
    commands(r, [verb4(4, 0x2, 0x11), verb12(4, 0x706, 0x20)]);
    r.ram.fill(0xee, BUF, BUF + 16384);
    const sd = sdBase(0); // input stream 0
    for (let i = 0; i < 4; i++) {
      r.mem.writeU32(BDL + 16 * i, BUF + 4096 * i);
      r.mem.writeU32(BDL + 16 * i + 8, 4096);
      r.mem.writeU32(BDL + 16 * i + 12, 1);
    }
    r.wr(sd + SD.BDPL, BDL);
    r.wr(sd + SD.LVI, 3, 2);
    r.wr(sd + SD.CBL, 16384);
    r.wr(sd + SD.CTL + 2, 2 << 4, 1);
    r.wr(sd + SD.CTL, SDCTL_RUN | SDCTL_IOCE, 1);
    for (let t = 0; t < 10; t++) r.clock.advance(5_000_000n); // 50 ms: up to 9600 bytes
    r.wr(sd + SD.CTL, 0, 1);
    const lpib = r.rd(sd + SD.LPIB);
    expect(lpib).toBeGreaterThan(6000 + 4);
    expect(lpib).toBeLessThanOrEqual(9604);
    const got = Buffer.from(r.ram.subarray(BUF, BUF + 16384));
    expect(Buffer.compare(got.subarray(0, 6000), Buffer.from(data))).toBe(0);
    expect(got.subarray(6000, lpib).every((b) => b === 0)).toBe(true); // silence after the file's end
    expect(got.subarray(lpib).every((b) => b === 0xee)).toBe(true); // nothing past LPIB
    expect(r.hda.stats()['ioc interrupts']).toBe(Math.floor(lpib / 4096));
    expect(r.rd(sd + SD.STS, 1) & SDSTS_BCIS).toBe(SDSTS_BCIS);
  });

  it('times its ticks so that an IOC comes when its entry ends, not at the next 10 ms tick', () => {
    const play = path.join(tmp, 'ioc-time.pcm');
    const r = rig({ [`pci.0.${SLOT}.0.play`]: play });
    bringUp(r);
    commands(r, [verb4(2, 0x2, 0x11), verb12(2, 0x706, 0x10)]);
    // 48 kHz 16-bit stereo: an entry of 1920 + 960 bytes ends at 15 ms.
    const sd = setupOutput(r, [{ len: 2880, ioc: true }, { len: 2880, ioc: false }]);
    r.wr(sd + SD.CTL, SDCTL_RUN | SDCTL_IOCE, 1);
    r.clock.advance(14_900_000n);
    expect(r.rd(sd + SD.STS, 1) & SDSTS_BCIS).toBe(0);
    r.clock.advance(200_000n);
    expect(r.rd(sd + SD.STS, 1) & SDSTS_BCIS).toBe(SDSTS_BCIS);
    expect(r.rd(sd + SD.LPIB)).toBe(2880);
  });

  it('refuses hostile stream descriptors with DESE and RUN reading 0, never touching RAM outside the guest', () => {
    const r = rig({ [`pci.0.${SLOT}.0.play`]: path.join(tmp, 'hostile.pcm') });
    bringUp(r);
    commands(r, [verb4(2, 0x2, 0x11), verb12(2, 0x706, 0x10)]);
    const cases: Array<[string, () => number]> = [
      ['a BDL outside RAM', () => { const sd = setupOutput(r, [{ len: 256, ioc: true }]); r.wr(sd + SD.BDPL, 0xffffff00); return sd; }],
      ['an entry of length 0', () => setupOutput(r, [{ len: 256, ioc: true }, { len: 0, ioc: false }], { cbl: 256 })],
      ['an entry not a multiple of 4', () => setupOutput(r, [{ len: 258, ioc: true }])],
      ['a huge entry past RAM', () => setupOutput(r, [{ len: 0xfffffffc, ioc: true }], { cbl: 4096 })],
      ['a buffer above 4 GiB', () => { const sd = setupOutput(r, [{ len: 256, ioc: true }]); r.mem.writeU32(BDL + 4, 1); return sd; }],
      ['LVI past 255 entries', () => setupOutput(r, [{ len: 256, ioc: true }], { lvi: 0x1ff })],
      ['LVI past the BDL in RAM', () => { const sd = setupOutput(r, [{ len: 256, ioc: true }]); r.wr(sd + SD.BDPL, RAM - 0x80); r.wr(sd + SD.LVI, 8, 2); return sd; }],
      ['CBL 0', () => setupOutput(r, [{ len: 256, ioc: true }], { cbl: 0 })],
      ['CBL longer than the BDL', () => setupOutput(r, [{ len: 256, ioc: true }], { cbl: 512 })],
      ['CBL not a multiple of 4', () => setupOutput(r, [{ len: 256, ioc: true }], { cbl: 254 })],
      ['stream tag 0', () => { const sd = setupOutput(r, [{ len: 256, ioc: true }]); r.wr(sd + SD.CTL + 2, 0, 1); return sd; }],
    ];
    for (const [what, make] of cases) {
      const sd = make();
      r.wr(sd + SD.CTL, SDCTL_RUN | SDCTL_DEIE, 1);
      expect(r.rd(sd + SD.CTL, 1) & SDCTL_RUN, what).toBe(0);
      expect(r.rd(sd + SD.STS, 1) & SDSTS_DESE, what).toBe(SDSTS_DESE);
      expect(r.irq.anyHigh(), what).toBe(true); // DESE with DEIE
      r.wr(sd + SD.STS, SDSTS_DESE, 1);
      expect(r.irq.anyHigh(), what).toBe(false);
      r.mem.writeU32(BDL + 4, 0);
    }
    r.clock.advance(50_000_000n);
    expect(r.clock.armed).toBe(0);
    // A tag another output stream runs with is refused too.
    const sd = setupOutput(r, [{ len: 256, ioc: true }]);
    r.wr(sd + SD.CTL, SDCTL_RUN, 1);
    expect(r.rd(sd + SD.CTL, 1) & SDCTL_RUN).toBe(SDCTL_RUN);
    const sd2 = sdBase(5);
    for (const [o, v, s] of [[SD.BDPL, BDL, 4], [SD.LVI, 0, 2], [SD.CBL, 256, 4], [SD.CTL + 2, 0x10, 1]] as const) r.wr(sd2 + o, v, s);
    r.wr(sd2 + SD.CTL, SDCTL_RUN, 1);
    expect(r.rd(sd2 + SD.STS, 1) & SDSTS_DESE).toBe(SDSTS_DESE);
    // SRST stops a running stream and clears its registers.
    r.wr(sd + SD.CTL, SDCTL_SRST, 1);
    expect(r.rd(sd + SD.CTL, 1)).toBe(SDCTL_SRST);
    expect(r.rd(sd + SD.CBL)).toBe(0);
    expect(r.clock.armed).toBe(0);
  });

  it('takes dword writes across registers as drivers make them: SDnCTL with SDnSTS, CORBWP with CORBRP', () => {
    const r = rig({ [`pci.0.${SLOT}.0.play`]: path.join(tmp, 'dword.pcm') });
    bringUp(r);
    commands(r, [verb4(2, 0x2, 0x11), verb12(2, 0x706, 0x10)]);
    // A stream that cannot start, RUN set by a read-modify-write of the
    // dword (SDnSTS comes along as read: 0): DESE stays set.
    const sd = setupOutput(r, [{ len: 256, ioc: true }], { cbl: 0 });
    r.wr(sd + SD.CTL, (r.rd(sd + SD.CTL) & 0x00ffffff) | SDCTL_RUN | SDCTL_DEIE);
    expect(r.rd(sd + SD.STS, 1) & SDSTS_DESE).toBe(SDSTS_DESE);
    expect(r.rd(sd + SD.CTL, 1) & SDCTL_RUN).toBe(0);
    // Writing it back clears it (write 1 to clear), RUN still refused: DESE again.
    r.wr(sd + SD.CTL, r.rd(sd + SD.CTL) | SDCTL_RUN);
    expect(r.rd(sd + SD.STS, 1) & SDSTS_DESE).toBe(SDSTS_DESE);
    r.wr(sd + SD.STS, SDSTS_DESE, 1);
    expect(r.rd(sd + SD.STS, 1) & SDSTS_DESE).toBe(0);
    // CORBWP and CORBRP in one dword: the CORB runs and its read pointer shows.
    const wp = r.rd(R.CORBWP, 2);
    r.mem.writeU32(CORB + 4 * (wp + 1), getParam(0, 0));
    r.wr(R.CORBWP, (r.rd(R.CORBRP, 2) << 16) | (wp + 1));
    expect(r.rd(R.CORBRP, 2)).toBe(wp + 1);
    expect(r.mem.readU32(RIRB + 8 * r.rd(R.RIRBWP, 2))).toBe(0x8086);
  });

  it('parses stream formats as bhyve (rate, size, channels) and refuses the 20-bit and reserved sizes', () => {
    expect(parseFormat(0x0011)).toEqual({ rate: 48000, sampleBytes: 2, channels: 2 });
    expect(parseFormat(0x4011)).toEqual({ rate: 44100, sampleBytes: 2, channels: 2 });
    expect(parseFormat(0x1811)).toEqual({ rate: 192000, sampleBytes: 2, channels: 2 });
    expect(parseFormat(0x0500)).toEqual({ rate: 8000, sampleBytes: 1, channels: 1 });
    expect(parseFormat(0x0047)).toEqual({ rate: 48000, sampleBytes: 4, channels: 8 });
    expect(parseFormat(0x0021)).toBeUndefined();
    expect(parseFormat(0x0071)).toBeUndefined();
  });
});
