import { describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import type { MemoryBacking, MemoryMapControl } from '../../src/devices/device.js';
import { Fbuf, FBUF_DEVICE, FBUF_VENDOR } from '../../src/devices/display/fbuf.js';
import { parseFbufOptions, parseRfbAddress } from '../../src/devices/display/fbuf-options.js';
import { DMEMSZ, FB_SIZE, FILE_SIZE, HOST_BAR1_ADDR } from '../../src/devices/display/framebuffer-file.js';
import { PCIM_CMD_MEMEN, PCIR_COMMAND } from '../../src/devices/pci/config-space.js';
import { fake } from '../support/fake-device.js';
import fs from 'node:fs';
import { VGA_FONT_PATHS } from '../../src/devices/display/vga-font.js';

function options(settings: Record<string, string>) {
  const c = new ConfigTree();
  for (const [k, v] of Object.entries(settings)) c.set(`pci.0.2.0.${k}`, v);
  return parseFbufOptions(c, 'pci.0.2.0');
}

describe('fbuf options (pci_fbuf_parse_config)', () => {
  it('has bhyve defaults', () => {
    expect(options({})).toEqual({ listen: { kind: 'tcp', host: '127.0.0.1', port: 5900 }, wait: false, vga: 'io', width: 1024, height: 768 });
  });
  it('reads rfb over tcp, IPv6 in brackets, a bare port, unix=', () => {
    expect(parseRfbAddress('0.0.0.0:5901')).toEqual({ host: '0.0.0.0', port: 5901 });
    expect(parseRfbAddress('[::1]:5902')).toEqual({ host: '::1', port: 5902 });
    expect(parseRfbAddress('[fe80::1%em0]')).toEqual({ host: 'fe80::1%em0', port: 5900 });
    expect(parseRfbAddress('5903')).toEqual({ host: '127.0.0.1', port: 5903 });
    expect(options({ rfb: '1.2.3.4:1', tcp: '5.6.7.8:2' }).listen).toEqual({ kind: 'tcp', host: '1.2.3.4', port: 1 });
    expect(options({ unix: '/tmp/v.sock' }).listen).toEqual({ kind: 'unix', path: '/tmp/v.sock' });
  });
  it('refuses what bhyve refuses, with its messages', () => {
    expect(() => parseRfbAddress('[::1')).toThrow('fbuf: Invalid IPv6 address: "[::1"');
    expect(() => parseRfbAddress('1.2.3.4:')).toThrow('fbuf: Missing port number');
    expect(() => options({ vga: 'maybe' })).toThrow('fbuf: Invalid vga setting: "maybe"');
    expect(() => options({ w: '3841' })).toThrow('fbuf: max resolution is 3840x2160');
    expect(() => options({ h: '479' })).toThrow('fbuf: minimum resolution is 640x480');
    expect(() => options({ unix: '/x', tcp: '1' })).toThrow(/either unix= or rfb=/);
  });
});

/** A memory map that records mappings over a plain buffer for the framebuffer file. */
class FakeMemoryMap implements MemoryMapControl {
  readonly file = new Uint8Array(FILE_SIZE);
  mapped = new Map<number, number>();
  refuse = false;
  map(gpa: number, size: number, b: MemoryBacking): void {
    if (this.refuse) throw new RangeError('EEXIST');
    expect(b).toEqual({ kind: 'framebuffer', offset: 0 });
    this.mapped.set(gpa, size);
  }
  unmap(gpa: number): void { this.mapped.delete(gpa); }
  view(b: MemoryBacking, size: number): Uint8Array { return this.file.subarray(b.offset, b.offset + size); }
}

function device(settings: Record<string, string> = {}) {
  const f = fake(Object.fromEntries(Object.entries({ device: 'fbuf', ...settings }).map(([k, v]) => [`pci.0.2.0.${k}`, v])));
  const mm = new FakeMemoryMap();
  const ctx = { ...f.ctx, memoryMap: mm };
  const d = new Fbuf(ctx, 'pci.0.2.0');
  return { f, mm, d };
}

describe('fbuf device (pci_fbuf.c)', () => {
  it('identifies as bhyve fbuf with a 128-byte register BAR and a 32 MiB framebuffer BAR', () => {
    const { d } = device({ w: '800', h: '600' });
    expect(d.cfg.get16(0)).toBe(FBUF_VENDOR);
    expect(d.cfg.get16(2)).toBe(FBUF_DEVICE);
    expect(d.cfg.get8(0x0b)).toBe(0x03);
    expect(d.declaredBars()).toEqual([{ idx: 0, kind: 'mem32', size: DMEMSZ }, { idx: 1, kind: 'mem32', size: FB_SIZE }]);
    expect(d.stats()).toMatchObject({ width: 800, height: 600, depth: 32 });
  });

  it('maps the framebuffer where BAR 1 decodes, unmaps it when it moves or stops', () => {
    const { f, mm, d } = device();
    d.setBarAddress(0, 0xc2000000);
    d.setBarAddress(1, 0xc0000000);
    expect(mm.mapped.size).toBe(0); // not decoding yet
    d.cfg.set16(PCIR_COMMAND, PCIM_CMD_MEMEN);
    d.syncDecoding();
    expect([...mm.mapped]).toEqual([[0xc0000000, FB_SIZE]]);
    expect(new DataView(mm.file.buffer).getUint32(FB_SIZE + HOST_BAR1_ADDR, true)).toBe(0xc0000000);
    // Registers through BAR 0: fbsize reads back, a mode write lands.
    const regs = 0xc2000000;
    const rd = (off: number, n: number): number => { const b = new Uint8Array(n); f.io.mmioRead(regs + off, b); return b.reduce((v, x, i) => v + x * 2 ** (8 * i), 0); };
    expect(rd(0, 4)).toBe(FB_SIZE);
    f.io.mmioWrite(regs + 4, Uint8Array.of(0x20, 0x03)); // width 800
    expect(rd(4, 2)).toBe(800);
    expect(d.stats()['mode changes']).toBe(1);
    // Out of range: ignored, reads 0.
    f.io.mmioWrite(regs + 126, Uint8Array.of(1, 2, 3, 4));
    expect(rd(124, 4)).toBe(0);
    d.setBarAddress(1, 0xd0000000);
    expect([...mm.mapped]).toEqual([[0xd0000000, FB_SIZE]]);
    d.cfg.set16(PCIR_COMMAND, 0);
    d.commandChanged(PCIM_CMD_MEMEN, 0);
    expect(mm.mapped.size).toBe(0);
  });

  it('a BAR 1 the host cannot map (over RAM) decodes nothing, and the VMM goes on', () => {
    const { mm, d } = device();
    mm.refuse = true;
    d.setBarAddress(1, 0x1000000);
    d.cfg.set16(PCIR_COMMAND, PCIM_CMD_MEMEN);
    d.syncDecoding();
    expect(d.stats()['framebuffer map failures']).toBe(1);
  });

  it('vga=io decodes the VGA registers, vga=off does not, vga=on also the memory window', () => {
    const { f } = device();
    f.outp(0x3c4, 2); f.outp(0x3c5, 0x0f);
    expect(f.inp(0x3c5)).toBe(0x0f);
    f.inp(0x3da); // resets the attribute flip-flop
    f.outp(0x3c0, 0x10); f.outp(0x3c0, 0x41);
    f.outp(0x3c0, 0x10);
    expect(f.inp(0x3c1)).toBe(0x41);
    f.outp(0x3c8, 1); f.outp(0x3c9, 0x3f); f.outp(0x3c9, 0x20); f.outp(0x3c9, 0x10);
    f.outp(0x3c7, 1);
    expect([f.inp(0x3c9), f.inp(0x3c9), f.inp(0x3c9)]).toEqual([0x3f, 0x20, 0x10]);
    expect(f.inp(0x3c6, 2)).toBe(0x00ff | (0x03 << 8)); // two 8-bit reads: mask, DAC state
    const off = device({ vga: 'off' });
    expect(() => off.f.inp(0x3c5)).toThrow(/not decoded/);
    expect(off.f.io.mmioRead(0xb8000, new Uint8Array(1))).toBe(false);
    expect(f.io.mmioRead(0xb8000, new Uint8Array(1))).toBe(false); // vga=io: no memory
    if (!VGA_FONT_PATHS.some((p) => fs.existsSync(p))) return; // vga=on needs the console font (vga.test.ts says so)
    const on = device({ vga: 'on' });
    on.f.io.mmioWrite(0xb8000, Uint8Array.of(0x41, 0x1f));
    const b = new Uint8Array(2);
    on.f.io.mmioRead(0xb8000, b);
    expect([...b]).toEqual([0x41, 0x1f]);
    expect(on.d.stats()).toMatchObject({ 'VGA shown': 1, 'VGA memory writes': 2 });
    expect(on.d.vgaMode).toBe(true);
    // bhyve's switch: a non-zero width and height through BAR 0 shows the
    // framebuffer, both 0 the VGA again, and so does a write of the
    // graphics controller's mode register.
    on.d.setBarAddress(0, 0xc2000000);
    on.d.cfg.set16(PCIR_COMMAND, PCIM_CMD_MEMEN);
    on.d.syncDecoding();
    on.f.io.mmioWrite(0xc2000004, Uint8Array.of(0x20, 0x03, 0x58, 0x02)); // 800x600
    expect(on.d.vgaMode).toBe(false);
    on.f.io.mmioWrite(0xc2000004, Uint8Array.of(0, 0, 0, 0));
    expect(on.d.vgaMode).toBe(true);
    on.f.io.mmioWrite(0xc2000004, Uint8Array.of(0x20, 0x03, 0x58, 0x02));
    expect(on.d.vgaMode).toBe(false);
    on.f.outp(0x3ce, 5); on.f.outp(0x3cf, 0x10);
    expect(on.d.vgaMode).toBe(true);
  });
});
