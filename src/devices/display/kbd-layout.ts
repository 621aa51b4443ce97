// bhyve's -K keyboard layouts (keyboard.layout): a file named after the
// layout in the layout directory, read as ps2kbd.c's ps2kbd_setkbdlayout()
// reads it, one entry per line, anything else (comments) ignored:
//   'c',0xSS;          keysym of ASCII character c -> set-2 scancode SS
//   0xKKKK,0xSS;       keysym KKKK -> set-2 scancode SS
//   0xKKKK,0xSS,P;     the same with an E0 prefix when P is non-zero
// bhyve looks in /usr/share/bhyve/kbdlayout; ours ship with the tools in
// share/bhyve/kbdlayout of the installed tree (built from Debian's XKB
// data by scripts/build-kbdlayouts.mjs). Unlike bhyve, which silently
// keeps the US layout when the file is missing, an unknown name is an
// error naming the directory.

import fs from 'node:fs';
import path from 'node:path';
import { installRoot } from '../../install-root.js';
import { ConfigError } from '../../config/tree.js';
import { SET1_TO_SET2, type KeyboardLayout } from './ps2-keymap.js';

/** share/bhyve/kbdlayout of the installed tree. */
export const KBDLAYOUT_DIR = path.join(installRoot(), 'share/bhyve/kbdlayout');

const SET2_TO_SET1 = new Map(Object.entries(SET1_TO_SET2).map(([s1, s2]) => [s2, Number(s1)]));

/** C's "%x": optional blanks, sign, 0x prefix, hex digits; NaN when none. */
function hex(s: string): number {
  const m = /^\s*([+-]?)(?:0[xX])?([0-9a-fA-F]+)/.exec(s);
  if (!m) return Number.NaN;
  const v = Number.parseInt(m[2], 16);
  return m[1] === '-' ? -v : v;
}

/** The entries of a layout file as keysym -> qnum (set-1 code, bit 7 = E0). */
export function parseKeyboardLayout(text: string): Map<number, number> {
  const map = new Map<number, number>();
  const add = (keysym: number, set2: number, e0: boolean): void => {
    const s1 = SET2_TO_SET1.get(set2 & 0xff);
    if (s1 === undefined || keysym < 0) return; // no such key on a PC keyboard
    map.set(keysym >>> 0, (e0 ? 0x80 : 0) | s1);
  };
  for (const line of text.split('\n')) {
    const ch = /^'(.)',([^;]*);/s.exec(line);
    if (ch) {
      const sc = hex(ch[2]);
      if (!Number.isNaN(sc) && ch[1].charCodeAt(0) < 0x80) add(ch[1].charCodeAt(0), sc, false);
      continue;
    }
    const f = /^([^,;]*),([^,;]*)(?:,([^,;]*))?;/.exec(line);
    if (!f) continue;
    const keysym = hex(f[1]);
    const sc = hex(f[2]);
    if (Number.isNaN(keysym) || Number.isNaN(sc)) continue;
    const prefix = f[3] === undefined ? 0 : hex(f[3]);
    add(keysym, sc, !Number.isNaN(prefix) && prefix !== 0);
  }
  return map;
}

/** The layouts shipped (file names in the layout directory). */
export function keyboardLayouts(dir = KBDLAYOUT_DIR): string[] {
  try {
    return fs.readdirSync(dir).filter((n) => !n.startsWith('.')).sort();
  } catch {
    return [];
  }
}

/** Reads layout `name`; a name that is not a file of the directory is a ConfigError. */
export function loadKeyboardLayout(name: string, dir = KBDLAYOUT_DIR): KeyboardLayout {
  const file = path.join(dir, name);
  let text: string | undefined;
  if (name !== '' && !name.includes('/') && name !== '.' && name !== '..') {
    try { text = fs.readFileSync(file, 'latin1'); } catch { /* below */ }
  }
  if (text === undefined) {
    throw new ConfigError(`unknown keyboard layout '${name}' (-K): no such file in ${dir}; use one of its files, e.g. de, fr, uk, us_dvorak`);
  }
  return parseKeyboardLayout(text);
}
