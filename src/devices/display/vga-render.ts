// Draws the VGA's screen from its registers and planes (vga.ts) as bhyve's
// vga_render() does, into 32-bit pixels 0x00RRGGBB:
//   size    (CRTC horizontal display end + 1) x character width (9 dots,
//           8 when the sequencer's clocking mode says so) by CRTC vertical
//           display end (with its overflow bits 8 and 9) + 1;
//   reset   while the sequencer is held in reset, the screen is off or the
//           CRTC is stopped: black, the size unchanged;
//   text    characters in plane 0, attributes in plane 1 (odd/even), from
//           the CRTC start address; glyphs 16 lines high from plane 2 at
//           32 bytes per character, character map A or B by attribute bit
//           3 when the sequencer selects two maps; the 9th column repeats
//           the 8th (vga.c does so for every character); the cursor as a
//           block of the foreground colour from its start to its end line;
//   graphics (graphics mode and attribute graphics enable) 16 colours from
//           four planes, through the colour plane enable, the attribute
//           palette and colour select;
// and every colour through the DAC (6 bits a gun widened to 8).
// vga.c has no 256-colour (chain 4, mode 13h) rendering; nor has this.

import { ST_ATC, ST_CRTC, ST_PALETTE, ST_SEQ, ST_GC, VGA_PLANE } from './vga.js';

export interface VgaSize { width: number; height: number }

export function vgaInReset(state: Uint8Array): boolean {
  const seq = (i: number): number => state[ST_SEQ + i];
  return (seq(1) & 0x20) !== 0 || (seq(0) & 1) === 0 || (seq(0) & 2) === 0 || (state[ST_CRTC + 0x17] & 0x80) === 0;
}

export function vgaSize(state: Uint8Array): VgaSize {
  const crtc = (i: number): number => state[ST_CRTC + i];
  const dots = state[ST_SEQ + 1] & 1 ? 8 : 9;
  const of = crtc(7);
  return {
    width: (crtc(1) + 1) * dots,
    height: (crtc(0x12) | (((of >> 1) & 1) << 8) | (((of >> 6) & 1) << 9)) + 1,
  };
}

function dacColors(state: Uint8Array): Uint32Array {
  const rgb = new Uint32Array(256);
  const widen = (v: number): number => ((v << 2) | ((v & 1) << 1) | (v & 1)) & 0xff;
  for (let i = 0; i < 256; i++) {
    const p = ST_PALETTE + 3 * i;
    rgb[i] = (widen(state[p]) << 16) | (widen(state[p + 1]) << 8) | widen(state[p + 2]);
  }
  return rgb;
}

/**
 * Renders into `out` (at least width * height pixels). Returns the size
 * drawn; in reset, `previous` (or 640x400) filled with black.
 */
export function renderVga(state: Uint8Array, ram: Uint8Array, out: Uint32Array, previous?: VgaSize): VgaSize {
  if (vgaInReset(state)) {
    const size = previous ?? { width: 640, height: 400 };
    out.fill(0, 0, size.width * size.height);
    return size;
  }
  const size = vgaSize(state);
  const { width, height } = size;
  const dac = dacColors(state);
  const atc = state.subarray(ST_ATC, ST_ATC + 32);
  if ((state[ST_GC + 6] & 1) && (atc[0x10] & 1)) {
    const planeEnable = atc[0x12];
    const cs45 = (atc[0x14] & 0x03) << 4;
    const cs67 = ((atc[0x14] & 0x0c) >> 2) << 6;
    const ips = (atc[0x10] & 0x80) !== 0;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const off = ((y * width) >> 3) + (x >> 3) & 0xffff;
        const bit = 7 - (x & 7);
        let data = 0;
        for (let p = 0; p < 4; p++) data |= ((ram[p * VGA_PLANE + off] >> bit) & 1) << p;
        data &= planeEnable;
        let idx = ips ? (atc[data] & 0x0f) | cs45 : atc[data];
        idx |= cs67;
        out[y * width + x] = dac[idx & 0xff];
      }
    }
    return size;
  }
  const crtc = (i: number): number => state[ST_CRTC + i];
  const dots = state[ST_SEQ + 1] & 1 ? 8 : 9;
  const cols = Math.floor(width / dots);
  const start = (crtc(0x0c) << 8) | crtc(0x0d);
  const cursorOn = (crtc(0x0a) & 0x20) === 0;
  const cursorOff = 2 * ((crtc(0x0e) << 8) | crtc(0x0f));
  const cursorStart = crtc(0x0a) & 0x1f;
  const cursorEnd = crtc(0x0b) & 0x1f;
  const cms = state[ST_SEQ + 3];
  const mapA = ((((cms & 0x0c) >> 2) * 2) + ((cms & 0x20) >> 5)) * 8192;
  const mapB = (((cms & 0x03) * 2) + ((cms & 0x10) >> 4)) * 8192;
  const twoMaps = (state[ST_SEQ + 4] & 0x02) !== 0 && mapA !== mapB;
  const font = ram.subarray(2 * VGA_PLANE, 3 * VGA_PLANE);
  for (let y = 0; y < height; y++) {
    const line = y & 15;
    const rowBase = 2 * start + Math.floor(y / 16) * cols * 2;
    const inCursorLines = cursorOn && line >= cursorStart && line <= cursorEnd;
    let o = y * width;
    for (let col = 0; col < cols; col++) {
      const off = (rowBase + col * 2) & 0xffff;
      const ch = ram[off];
      let attr = ram[VGA_PLANE + off];
      const fg = dac[atc[attr & 0xf]];
      if (inCursorLines && off === cursorOff) {
        for (let d = 0; d < dots; d++) out[o++] = fg;
        continue;
      }
      let glyphAt: number;
      if (twoMaps) {
        glyphAt = (attr & 8 ? mapA : mapB) + (ch << 5) + line;
        attr &= ~8;
      } else {
        glyphAt = (ch << 5) + line;
      }
      const bits = font[glyphAt & 0xffff];
      const fgc = dac[atc[attr & 0xf]];
      const bgc = dac[atc[attr >> 4]];
      for (let d = 0; d < dots; d++) out[o++] = bits & (0x80 >> (d > 7 ? 7 : d)) ? fgc : bgc;
    }
    for (; o < (y + 1) * width; o++) out[o] = 0;
  }
  return size;
}
