// bhyve's vga.c with vga=on: registers, the planar memory window and the
// screen drawn from them (vga-render.ts), with the VGA font of Debian's
// console fonts (vga-font.ts).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { fake } from '../support/fake-device.js';
import { FLAG_VGAMODE, ST_FLAGS, Vga, VGA_MEM_BASE, VGA_MEM_SIZE, VGA_PLANE, VGA_RAM_SIZE } from '../../src/devices/display/vga.js';
import { renderVga, vgaSize } from '../../src/devices/display/vga-render.js';
import { CP437, loadVgaFont, parsePsf, VGA_FONT_PATHS } from '../../src/devices/display/vga-font.js';
import { ramSlots } from '../../src/sys/guest-ram.js';
import type { Mapping } from '../../src/sys/libc.js';

const FONT_MISSING = VGA_FONT_PATHS.some((p) => fs.existsSync(p)) ? undefined : `${VGA_FONT_PATHS[0]} is missing (apt-get install console-setup-linux)`;
if (FONT_MISSING) console.warn(`skipping VGA tests: ${FONT_MISSING}`);
const FONT = FONT_MISSING ? new Uint8Array(8192) : loadVgaFont();

function vgaOn() {
  const f = fake();
  const ram = new Uint8Array(VGA_RAM_SIZE);
  const vga = new Vga(f.ctx, undefined, ram, FONT);
  f.io.registerMmio('vga-memory', VGA_MEM_BASE, VGA_MEM_SIZE, vga.memory);
  const out = new Uint32Array(2304 * 1024);
  const render = () => renderVga(vga.state, ram, out);
  const put = (row: number, col: number, text: string, attr: number): void => {
    for (let i = 0; i < text.length; i++) f.io.mmioWrite(0xb8000 + 2 * (row * 80 + col + i), Uint8Array.of(text.charCodeAt(i), attr));
  };
  const crtc = (i: number, v: number): void => { f.outp(0x3d4, i); f.outp(0x3d5, v); };
  return { f, vga, ram, out, render, put, crtc };
}

/** The cell's pixels as rows of '#' (foreground) and '.' (anything else). */
function cell(out: Uint32Array, width: number, row: number, col: number, fg: number): string[] {
  const lines: string[] = [];
  for (let y = 0; y < 16; y++) {
    let l = '';
    for (let x = 0; x < 9; x++) l += out[(row * 16 + y) * width + col * 9 + x] === fg ? '#' : '.';
    lines.push(l);
  }
  return lines;
}

/** What a character should look like: its glyph rows, the 9th column a copy of the 8th (as vga.c draws it). */
function glyph(ch: number): string[] {
  return [...FONT.subarray(ch * 32, ch * 32 + 16)].map((b) => {
    let l = '';
    for (let x = 0; x < 9; x++) l += b & (0x80 >> Math.min(x, 7)) ? '#' : '.';
    return l;
  });
}

const WHITE = 0xffffff;
const BLUE = 0x0000a8; // vga.c widens 6-bit 0x2a to 0xa8 (v << 2 | (v & 1) * 3)

describe.skipIf(FONT_MISSING !== undefined)('VGA text mode (vga=on)', () => {
  it('starts in mode 3 (720x400, 9x16 cells) and draws characters with the font in plane 2', () => {
    const v = vgaOn();
    expect(vgaSize(v.vga.state)).toEqual({ width: 720, height: 400 });
    expect(v.vga.vgaMode).toBe(true);
    v.put(2, 5, 'Hi', 0x1f); // bright white on blue
    expect(v.render()).toEqual({ width: 720, height: 400 });
    expect(cell(v.out, 720, 2, 5, WHITE)).toEqual(glyph(0x48));
    expect(cell(v.out, 720, 2, 6, WHITE)).toEqual(glyph(0x69));
    expect(glyph(0x48).join('')).toContain('#'); // the font is not blank
    // background of the cell is blue, elsewhere black (character 0, attribute 0)
    expect(v.out[(2 * 16) * 720 + 5 * 9]).toBe(BLUE);
    expect(v.out[0]).toBe(0);
  });

  it('draws the cursor where the CRTC puts it, on its lines, and not when it is off', () => {
    const v = vgaOn();
    v.put(1, 1, ' ', 0x0e); // yellow on black
    v.crtc(0x0e, 0); v.crtc(0x0f, 81);
    v.render();
    const yellow = 0xffff57;
    const c = cell(v.out, 720, 1, 1, yellow);
    expect(c.slice(0, 13).join('')).not.toContain('#');
    expect(c[13]).toBe('#########');
    expect(c[14]).toBe('#########');
    expect(c[15]).toBe('.........');
    v.crtc(0x0a, 0x20 | 0x0d); // cursor off
    v.render();
    expect(cell(v.out, 720, 1, 1, yellow).join('')).not.toContain('#');
  });

  it('follows the start address, the attribute palette and the DAC', () => {
    const v = vgaOn();
    v.put(1, 0, 'X', 0x07);
    v.crtc(0x0c, 0); v.crtc(0x0d, 80); // start one row down
    v.render();
    const grey = 0xa8a8a8;
    expect(cell(v.out, 720, 0, 0, grey)).toEqual(glyph(0x58));
    v.f.outp(0x3c8, 7); v.f.outp(0x3c9, 0x3f); v.f.outp(0x3c9, 0); v.f.outp(0x3c9, 0); // DAC 7 = red
    v.render();
    expect(cell(v.out, 720, 0, 0, 0xff0000)).toEqual(glyph(0x58));
    v.f.inp(0x3da); v.f.outp(0x3c0, 7); v.f.outp(0x3c0, 0x3f); // attribute colour 7 -> DAC 63 (white)
    v.render();
    expect(cell(v.out, 720, 0, 0, WHITE)).toEqual(glyph(0x58));
  });

  it('is black while the sequencer is in reset, at the same size', () => {
    const v = vgaOn();
    v.put(0, 0, 'A', 0x1f);
    v.f.outp(0x3c4, 0); v.f.outp(0x3c5, 0x01); // synchronous reset
    expect(renderVga(v.vga.state, v.ram, v.out, { width: 720, height: 400 })).toEqual({ width: 720, height: 400 });
    expect(v.out.subarray(0, 720 * 400).every((p) => p === 0)).toBe(true);
  });

  it('a write of the graphics mode register shows the VGA again (vga.c), the generation counts changes', () => {
    const v = vgaOn();
    v.vga.vgaMode = false;
    expect(v.vga.state[ST_FLAGS] & FLAG_VGAMODE).toBe(0);
    const g0 = v.vga.stateView.getUint32(0x64, true);
    v.f.outp(0x3ce, 5); v.f.outp(0x3cf, 0x10);
    expect(v.vga.vgaMode).toBe(true);
    expect(v.vga.stateView.getUint32(0x64, true)).toBeGreaterThan(g0);
  });
});

describe.skipIf(FONT_MISSING !== undefined)('VGA planar memory and 16-colour graphics (mode 12h)', () => {
  function mode12(v: ReturnType<typeof vgaOn>): void {
    v.f.outp(0x3c4, 1); v.f.outp(0x3c5, 0x01); // 8-dot characters
    v.f.outp(0x3c4, 4); v.f.outp(0x3c5, 0x06); // no odd/even
    v.f.outp(0x3ce, 5); v.f.outp(0x3cf, 0x00); // write mode 0, read mode 0
    v.f.outp(0x3ce, 6); v.f.outp(0x3cf, 0x05); // graphics, A0000 64 KiB
    v.crtc(0x11, 0x0e); // unprotect 0-7
    v.crtc(0x01, 0x4f); v.crtc(0x12, 0xdf); v.crtc(0x07, 0x3e); // 640 x 480 (VDE bit 8)
    v.f.inp(0x3da); v.f.outp(0x3c0, 0x10); v.f.outp(0x3c0, 0x01); // attribute mode: graphics
    v.f.inp(0x3da); v.f.outp(0x3c0, 0x12); v.f.outp(0x3c0, 0x0f); // all planes enabled
    v.f.outp(0x3c0, 0x20); // palette address source: screen on
  }

  it('write mode 2 with a bit mask sets one pixel per colour plane; the screen shows it in its EGA colour', () => {
    const v = vgaOn();
    mode12(v);
    expect(vgaSize(v.vga.state)).toEqual({ width: 640, height: 480 });
    v.f.outp(0x3c4, 2); v.f.outp(0x3c5, 0x0f); // map mask: all planes
    v.f.outp(0x3ce, 5); v.f.outp(0x3cf, 0x02); // write mode 2
    v.f.outp(0x3ce, 8); v.f.outp(0x3cf, 0x80); // bit mask: leftmost pixel
    const b = new Uint8Array(1);
    v.f.io.mmioRead(0xa0000, b); // load the latches
    v.f.io.mmioWrite(0xa0000, Uint8Array.of(4)); // colour 4: red
    v.f.io.mmioRead(0xa0000 + 80, b);
    v.f.io.mmioWrite(0xa0000 + 80, Uint8Array.of(14)); // second line: colour 14 (yellow, attribute 0x3e)
    expect(v.ram[2 * VGA_PLANE]).toBe(0x80);
    expect(v.ram[0]).toBe(0);
    v.render();
    expect(v.out[0]).toBe(0xa80000);
    expect(v.out[1]).toBe(0);
    expect(v.out[640]).toBe(0xffff57);
  });

  it('set/reset, logical operations, write mode 1 latch copies and read mode 1 colour compare', () => {
    const v = vgaOn();
    mode12(v);
    v.f.outp(0x3c4, 2); v.f.outp(0x3c5, 0x0f);
    v.f.outp(0x3ce, 0); v.f.outp(0x3cf, 0x05); // set/reset colour 5
    v.f.outp(0x3ce, 1); v.f.outp(0x3cf, 0x0f); // enabled on all planes
    v.f.outp(0x3ce, 8); v.f.outp(0x3cf, 0xf0);
    v.f.io.mmioWrite(0xa0010, Uint8Array.of(0x00));
    expect([0, 1, 2, 3].map((p) => v.ram[p * VGA_PLANE + 0x10])).toEqual([0xf0, 0, 0xf0, 0]);
    v.f.outp(0x3ce, 3); v.f.outp(0x3cf, 0x18); // XOR
    v.f.outp(0x3ce, 8); v.f.outp(0x3cf, 0xff);
    const b = new Uint8Array(1);
    v.f.io.mmioRead(0xa0010, b);
    v.f.io.mmioWrite(0xa0010, Uint8Array.of(0));
    expect([0, 1, 2, 3].map((p) => v.ram[p * VGA_PLANE + 0x10])).toEqual([0x0f, 0, 0x0f, 0]);
    v.f.outp(0x3ce, 3); v.f.outp(0x3cf, 0x00);
    v.f.outp(0x3ce, 5); v.f.outp(0x3cf, 0x01); // write mode 1: copy the latches
    v.f.io.mmioRead(0xa0010, b);
    v.f.io.mmioWrite(0xa0020, Uint8Array.of(0x55));
    expect([0, 1, 2, 3].map((p) => v.ram[p * VGA_PLANE + 0x20])).toEqual([0x0f, 0, 0x0f, 0]);
    v.f.outp(0x3ce, 5); v.f.outp(0x3cf, 0x08); // read mode 1
    v.f.outp(0x3ce, 2); v.f.outp(0x3cf, 0x05); // colour compare 5
    v.f.outp(0x3ce, 7); v.f.outp(0x3cf, 0x0f);
    v.f.io.mmioRead(0xa0020, b);
    expect(b[0]).toBe(0x0f);
  });

  it('hostile accesses: outside the mapped window, odd sizes, every port and index, never throw', () => {
    const v = vgaOn();
    const b = new Uint8Array(8);
    v.f.io.mmioRead(0xa0000, b); // text mode maps only 0xB8000-0xBFFFF
    expect([...b]).toEqual(new Array(8).fill(0xff));
    v.f.io.mmioWrite(0xa0000, new Uint8Array(8).fill(0x41));
    expect(v.ram.subarray(0, 8).every((x) => x === 0)).toBe(true);
    for (let port = 0x3c0; port <= 0x3df; port++) {
      for (let i = 0; i < 256; i += 17) { v.f.outp(port, i); v.f.inp(port); v.f.outp(port, i * 257, 2); v.f.inp(port, 2); }
    }
    for (const mm of [0, 1, 2, 3]) {
      v.f.outp(0x3ce, 6); v.f.outp(0x3cf, mm << 2);
      v.f.io.mmioWrite(0xbfff8, new Uint8Array(8).fill(0xaa));
      v.f.io.mmioRead(0xbfff8, b);
    }
    v.crtc(0x01, 0xff); v.crtc(0x12, 0xff); v.crtc(0x07, 0xff); v.crtc(0x0c, 0xff); v.crtc(0x0d, 0xff);
    v.f.outp(0x3c4, 0); v.f.outp(0x3c5, 3);
    const size = v.render();
    expect(size.width * size.height).toBeLessThanOrEqual(2304 * 1024);
  });
});

describe.skipIf(FONT_MISSING !== undefined)('the VGA font (Debian console fonts) and the RAM hole', () => {
  it('code page 437 as iconv knows it', () => {
    const r = spawnSync('iconv', ['-f', 'CP437', '-t', 'UTF-8'], { input: Buffer.from(Array.from({ length: 224 }, (_, i) => i + 0x20)) });
    if (r.status !== 0) return; // iconv without CP437: nothing to compare against
    expect([...CP437].slice(0x20).join('').replace('\u007f', '⌂')).toBe(r.stdout.toString('utf8').replace('\u007f', '⌂'));
  });

  it('reads PSF fonts with Unicode tables and refuses a missing one with one line', () => {
    const f = parsePsf(fs.readFileSync(VGA_FONT_PATHS[0]));
    expect([f.width, f.height]).toEqual([8, 16]);
    expect(f.unicode.get(0x41)).toBeDefined();
    expect(() => loadVgaFont(['/nonexistent/font.psf.gz'])).toThrow(/^fbuf vga=on: no 8x16 VGA console font .*install Debian's console-setup-linux/);
    expect(() => parsePsf(new Uint8Array(64))).toThrow(/not a PC Screen Font/);
    // Box drawing (CP437 0xC4) is a horizontal line across the cell.
    expect(FONT[0xc4 * 32 + 8] | FONT[0xc4 * 32 + 7]).toBe(0xff);
  });

  it('vga=on leaves 0xA0000-0xBFFFF out of the RAM slots (and the BIOS window with lpc.fwcfg=qemu)', () => {
    const map = { length: 256 << 20, address: 0x7f0000000000n } as unknown as Mapping;
    const chunk = [{ gpa: 0, fileOffset: 0, map }];
    const spans = (s: ReturnType<typeof ramSlots>) => s.map((x) => [x.gpa, x.gpa + x.size]);
    expect(spans(ramSlots(chunk, false, true))).toEqual([[0, 0xa0000], [0xc0000, 256 << 20]]);
    expect(spans(ramSlots(chunk, true, true))).toEqual([[0, 0xa0000], [0x100000, 256 << 20]]);
    expect(spans(ramSlots(chunk, true, false))).toEqual([[0, 0xc0000], [0x100000, 256 << 20]]);
    expect(spans(ramSlots(chunk, false, false))).toEqual([[0, 256 << 20]]);
    expect(ramSlots(chunk, false, true)[1].address).toBe(0x7f0000000000n + 0xc0000n);
  });
});
