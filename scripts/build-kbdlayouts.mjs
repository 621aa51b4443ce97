#!/usr/bin/env node
// Builds the -K keyboard layouts (share/bhyve/kbdlayout/NAME) in the
// format of bhyve's ps2kbd.c layout files, from the XKB keyboard
// descriptions of Debian's xkb-data compiled by libxkbcommon (both Debian
// packages; libxkbcommon is reached through koffi).
//
// A layout file tells the PS/2 keyboard which key types a character on
// the guest's keyboard: for every keysym on a key of the main block
// (levels 1-4: plain, Shift, AltGr, Shift+AltGr; the lowest level and then
// the lowest key wins), one line
//     'c',0xSS;          printable ASCII c -> set-2 scancode SS
//     0xKKKK,0xSS;       other keysym (Latin-1, dead keys, Cyrillic...)
// exactly what bhyve's ps2kbd_setkbdlayout() reads. The client sends
// Shift and AltGr as keys of their own, so only the key is named.
//
// bhyve names its layouts after FreeBSD's console keymaps; LAYOUTS below
// maps each name this script can build faithfully to the XKB layout and
// variant with the same keys. Run: node scripts/build-kbdlayouts.mjs
// (the files are committed; rerun after changing the table).

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const koffi = createRequire(import.meta.url)('koffi');
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const OUT = path.join(ROOT, 'share', 'bhyve', 'kbdlayout');

/** bhyve layout name -> [XKB layout, variant, description]. */
export const LAYOUTS = {
  default: ['us', '', 'US'],
  am: ['am', '', 'Armenian'],
  be: ['be', 'nodeadkeys', 'Belgian'],
  be_acc: ['be', '', 'Belgian (accent keys)'],
  bg_bds: ['bg', '', 'Bulgarian (BDS)'],
  bg_phonetic: ['bg', 'phonetic', 'Bulgarian (phonetic)'],
  br: ['br', '', 'Brazilian (accent keys)'],
  br_noacc: ['br', 'nodeadkeys', 'Brazilian (no accent keys)'],
  by: ['by', '', 'Belarusian'],
  ch: ['ch', 'de_nodeadkeys', 'Swiss-German'],
  ch_acc: ['ch', '', 'Swiss-German (accent keys)'],
  'ch-fr': ['ch', 'fr_nodeadkeys', 'Swiss-French'],
  'ch-fr_acc': ['ch', 'fr', 'Swiss-French (accent keys)'],
  ch_macbook_acc: ['ch', 'de_mac', 'Swiss-German Macbook/Macbook Pro (accent keys)'],
  cz: ['cz', '', 'Czech'],
  de: ['de', 'nodeadkeys', 'German'],
  de_acc: ['de', '', 'German (accent keys)'],
  de_noacc: ['de', 'nodeadkeys', 'German (no accent keys)'],
  dk: ['dk', 'nodeadkeys', 'Danish'],
  dk_macbook: ['dk', 'mac_nodeadkeys', 'Danish (Macbook)'],
  ee: ['ee', '', 'Estonian'],
  es: ['es', 'nodeadkeys', 'Spanish (no accent keys)'],
  es_acc: ['es', '', 'Spanish (accent keys)'],
  es_dvorak: ['es', 'dvorak', 'Spanish Dvorak'],
  fi: ['fi', '', 'Finnish'],
  fr: ['fr', 'nodeadkeys', 'French'],
  fr_acc: ['fr', '', 'French (accent keys)'],
  fr_dvorak: ['fr', 'dvorak', 'French Dvorak-like'],
  fr_macbook: ['fr', 'mac', 'French Macbook/Macbook Pro'],
  gr: ['gr', '', 'Greek'],
  hr: ['hr', '', 'Croatian'],
  hu_101: ['hu', '101_qwertz_comma_nodead', 'Hungarian (101 keys)'],
  hu_102: ['hu', '102_qwertz_comma_nodead', 'Hungarian (102 keys)'],
  is: ['is', '', 'Icelandic'],
  it: ['it', '', 'Italian'],
  jp: ['jp', '', 'Japanese 106'],
  kz_kst: ['kz', 'kazrus', 'Kazakh'],
  latinamerican: ['latam', 'nodeadkeys', 'Latin American'],
  latinamerican_acc: ['latam', '', 'Latin American (accent keys)'],
  lt: ['lt', '', 'Lithuanian'],
  nl: ['nl', '', 'Dutch'],
  no: ['no', 'nodeadkeys', 'Norwegian'],
  no_dvorak: ['no', 'dvorak', 'Norwegian Dvorak'],
  pl_dvorak: ['pl', 'dvorak', 'Polish Dvorak'],
  pt: ['pt', 'nodeadkeys', 'Portuguese'],
  pt_acc: ['pt', '', 'Portuguese (accent keys)'],
  ru: ['ru', '', 'Russian'],
  se: ['se', '', 'Swedish'],
  si: ['si', '', 'Slovenian'],
  tr: ['tr', '', 'Turkish (Q)'],
  tr_f: ['tr', 'f', 'Turkish (F)'],
  ua: ['ua', '', 'Ukrainian'],
  uk: ['gb', '', 'United Kingdom'],
  uk_dvorak: ['gb', 'dvorak', 'United Kingdom Dvorak'],
  uk_macbook: ['gb', 'mac', 'United Kingdom Macbook/Macbook Pro'],
  us_dvorak: ['us', 'dvorak', 'US Dvorak'],
  us_dvorakl: ['us', 'dvorak-l', 'US Dvorak left-handed'],
  us_dvorakr: ['us', 'dvorak-r', 'US Dvorak right-handed'],
  us_dvorakp: ['us', 'dvp', 'US Programmer Dvorak'],
  us_emacs: ['us', '', 'US'],
  us_unix: ['us', '', 'US'],
};

/** Set-1 make code (= Linux evdev code for these keys) -> set-2 make code. */
const SET1_TO_SET2 = {
  0x02: 0x16, 0x03: 0x1e, 0x04: 0x26, 0x05: 0x25, 0x06: 0x2e, 0x07: 0x36, 0x08: 0x3d, 0x09: 0x3e, 0x0a: 0x46,
  0x0b: 0x45, 0x0c: 0x4e, 0x0d: 0x55, 0x10: 0x15, 0x11: 0x1d, 0x12: 0x24, 0x13: 0x2d, 0x14: 0x2c, 0x15: 0x35,
  0x16: 0x3c, 0x17: 0x43, 0x18: 0x44, 0x19: 0x4d, 0x1a: 0x54, 0x1b: 0x5b, 0x1e: 0x1c, 0x1f: 0x1b, 0x20: 0x23,
  0x21: 0x2b, 0x22: 0x34, 0x23: 0x33, 0x24: 0x3b, 0x25: 0x42, 0x26: 0x4b, 0x27: 0x4c, 0x28: 0x52, 0x29: 0x0e,
  0x2b: 0x5d, 0x2c: 0x1a, 0x2d: 0x22, 0x2e: 0x21, 0x2f: 0x2a, 0x30: 0x32, 0x31: 0x31, 0x32: 0x3a, 0x33: 0x41,
  0x34: 0x49, 0x35: 0x4a, 0x39: 0x29, 0x56: 0x61,
};
/** The typing keys, by evdev code: the main block, space, the ISO key
 * left of Z, and the two Japanese keys (KEY_RO 89: set 2 0x51, KEY_YEN 124: 0x6a). */
const KEYS = [...Object.keys(SET1_TO_SET2).map(Number).map((c) => [c, SET1_TO_SET2[c]]), [89, 0x51], [124, 0x6a]];
const XKB_EVDEV_OFFSET = 8;

function compile(lib, ctx, layout, variant) {
  const km = lib.newKeymap(ctx, { rules: null, model: 'pc105', layout, variant: variant || null, options: null }, 0);
  if (!km) throw new Error(`libxkbcommon cannot compile layout ${layout}(${variant})`);
  const best = new Map(); // keysym -> [level, order, set2]
  const out = [null];
  KEYS.forEach(([evdev, set2], order) => {
    if (layout === 'us' && evdev === 0x56) return; // US keyboards have no ISO key left of Z
    for (let level = 0; level < 4; level++) {
      const n = lib.getSyms(km, evdev + XKB_EVDEV_OFFSET, 0, level, out);
      if (n <= 0) continue;
      for (const sym of koffi.decode(out[0], 'uint32_t', n)) {
        if (sym === 0 || sym < 0x20) continue;
        const prev = best.get(sym);
        if (!prev || level < prev[0] || (level === prev[0] && order < prev[1])) best.set(sym, [level, order, set2]);
      }
    }
  });
  lib.unrefKeymap(km);
  return best;
}

function render(name, [layout, variant, description], best) {
  const lines = [
    '# bhyve ps2kbd keyboard layout file',
    `#   (${name} : ${description})`,
    '#',
    `# Generated by scripts/build-kbdlayouts.mjs from XKB ${layout}${variant ? `(${variant})` : ''}`,
    '# (Debian xkb-data, compiled by libxkbcommon): keysym -> set-2 scancode of its key.',
    '',
  ];
  for (const [sym, [, , set2]] of [...best].sort((a, b) => a[0] - b[0])) {
    const sc = `0x${set2.toString(16).padStart(2, '0')}`;
    if (sym >= 0x20 && sym < 0x7f) lines.push(`'${String.fromCharCode(sym)}',${sc};`);
    else lines.push(`0x${sym.toString(16)},${sc};`);
  }
  return `${lines.join('\n')}\n`;
}

function main() {
  const xkb = koffi.load('libxkbcommon.so.0');
  koffi.struct('xkb_rule_names', { rules: 'const char *', model: 'const char *', layout: 'const char *', variant: 'const char *', options: 'const char *' });
  const lib = {
    newContext: xkb.func('void *xkb_context_new(int)'),
    newKeymap: xkb.func('void *xkb_keymap_new_from_names(void *, const xkb_rule_names *, int)'),
    unrefKeymap: xkb.func('void xkb_keymap_unref(void *)'),
    getSyms: xkb.func('int xkb_keymap_key_get_syms_by_level(void *, uint32_t, uint32_t, uint32_t, _Out_ uint32_t **)'),
  };
  const ctx = lib.newContext(0);
  fs.mkdirSync(OUT, { recursive: true });
  for (const [name, spec] of Object.entries(LAYOUTS)) {
    const best = compile(lib, ctx, spec[0], spec[1]);
    if (best.size < 40) throw new Error(`layout ${name}: only ${best.size} keysyms from XKB ${spec[0]}(${spec[1]})`);
    fs.writeFileSync(path.join(OUT, name), render(name, spec, best));
  }
  console.log(`build-kbdlayouts: ${Object.keys(LAYOUTS).length} layouts in ${path.relative(ROOT, OUT)}/`);
}

main();
