// The 8x16 font a VGA's character generator starts with (plane 2 of its
// memory, 32 bytes per character, in code page 437 order, as a VGA BIOS
// loads it for text mode 3). bhyve has no VGA BIOS of its own; with
// vga=on we load this font at reset so that text a guest writes to
// 0xB8000 shows before (or without) any VGA BIOS. A VGA BIOS that loads
// its own font (SeaBIOS's vgabios) simply overwrites it.
//
// The glyphs come from the Linux console fonts of Debian's
// console-setup-linux (pulled in by the kbd package): the VGA fonts with a
// Unicode table, read at start (PSF 1 or 2, gzipped or not). Each code
// page 437 character is looked up by its Unicode code point in
// Uni2-VGA16, then in FullGreek-VGA16 (Uni2 lacks the block elements and
// the dingbats of codes 1-31); only ► and ◄ are in neither and stay blank.

import fs from 'node:fs';
import zlib from 'node:zlib';
import { ConfigError } from '../../config/tree.js';

export const FONT_HEIGHT = 16;
/** Bytes per character in plane 2 (the VGA character generator's slot). */
export const FONT_SLOT = 32;

/** The fonts, in the order a character is looked up (missing files are skipped). */
export const VGA_FONT_PATHS = [
  '/usr/share/consolefonts/Uni2-VGA16.psf.gz',
  '/usr/share/consolefonts/FullGreek-VGA16.psf.gz',
];

/** Code page 437 (the VGA's character set) as Unicode, codes 0x00-0xff. */
export const CP437 =
  '\u0000☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼' +
  ' !"#$%&\'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~⌂' +
  'ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»' +
  '░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀' +
  'αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u00a0';

export interface PsfFont {
  width: number;
  height: number;
  /** Glyph bitmaps, `bytesPerGlyph` each, rows of ceil(width/8) bytes. */
  glyphs: Uint8Array;
  bytesPerGlyph: number;
  count: number;
  /** Unicode code point -> glyph index (empty without a Unicode table). */
  unicode: Map<number, number>;
}

/** Parses a PC Screen Font (version 1 or 2; gzip is undone first). */
export function parsePsf(data: Uint8Array): PsfFont {
  let b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (b[0] === 0x1f && b[1] === 0x8b) b = zlib.gunzipSync(b);
  const unicode = new Map<number, number>();
  if (b[0] === 0x36 && b[1] === 0x04) {
    const mode = b[2];
    const height = b[3];
    const count = mode & 1 ? 512 : 256;
    const glyphs = b.subarray(4, 4 + count * height);
    if (glyphs.length !== count * height) throw new Error('PSF1 font is truncated');
    if (mode & 2) {
      let p = 4 + count * height;
      for (let g = 0; g < count && p + 1 < b.length; g++) {
        let seq = false;
        for (; p + 1 < b.length; p += 2) {
          const u = b.readUInt16LE(p);
          if (u === 0xffff) { p += 2; break; }
          if (u === 0xfffe) seq = true;
          else if (!seq && !unicode.has(u)) unicode.set(u, g);
        }
      }
    }
    return { width: 8, height, glyphs: new Uint8Array(glyphs), bytesPerGlyph: height, count, unicode };
  }
  if (b.readUInt32LE(0) === 0x864ab572) {
    const headerSize = b.readUInt32LE(8);
    const flags = b.readUInt32LE(12);
    const count = b.readUInt32LE(16);
    const bytesPerGlyph = b.readUInt32LE(20);
    const height = b.readUInt32LE(24);
    const width = b.readUInt32LE(28);
    const glyphs = b.subarray(headerSize, headerSize + count * bytesPerGlyph);
    if (glyphs.length !== count * bytesPerGlyph) throw new Error('PSF2 font is truncated');
    if (flags & 1) {
      let p = headerSize + count * bytesPerGlyph;
      for (let g = 0; g < count && p < b.length; g++) {
        const end = b.indexOf(0xff, p);
        const entry = b.subarray(p, end < 0 ? b.length : end);
        const singles = entry.subarray(0, entry.indexOf(0xfe) < 0 ? entry.length : entry.indexOf(0xfe));
        for (const ch of singles.toString('utf8')) { const u = ch.codePointAt(0)!; if (!unicode.has(u)) unicode.set(u, g); }
        p = end < 0 ? b.length : end + 1;
      }
    }
    return { width, height, glyphs: new Uint8Array(glyphs), bytesPerGlyph, count, unicode };
  }
  throw new Error('not a PC Screen Font (PSF 1 or 2)');
}

/**
 * The 256 characters of code page 437 as the VGA's plane 2 holds them:
 * 32 bytes per character, 16 rows used. Characters the font lacks (and
 * code 0) are blank.
 */
export function vgaPlane2Font(fonts: readonly PsfFont[]): Uint8Array {
  const out = new Uint8Array(256 * FONT_SLOT);
  const chars = [...CP437];
  for (let c = 1; c < 256; c++) {
    for (const font of fonts) {
      if (font.width !== 8 || font.height !== FONT_HEIGHT) throw new Error(`a VGA font must be 8x16, not ${font.width}x${font.height}`);
      const g = font.unicode.size > 0 ? font.unicode.get(chars[c].codePointAt(0)!) : c;
      if (g === undefined || g >= font.count) continue;
      out.set(font.glyphs.subarray(g * font.bytesPerGlyph, g * font.bytesPerGlyph + FONT_HEIGHT), c * FONT_SLOT);
      break;
    }
  }
  return out;
}

/** Reads the fonts of VGA_FONT_PATHS; none there is a ConfigError naming the package. */
export function loadVgaFont(paths: readonly string[] = VGA_FONT_PATHS): Uint8Array {
  const fonts: PsfFont[] = [];
  for (const p of paths) {
    let data: Buffer;
    try { data = fs.readFileSync(p); } catch { continue; }
    fonts.push(parsePsf(data));
  }
  if (fonts.length === 0) throw new ConfigError(`fbuf vga=on: no 8x16 VGA console font (${paths[0]}); install Debian's console-setup-linux (or kbd) package`);
  return vgaPlane2Font(fonts);
}
