import { describe, expect, it } from 'vitest';
import { fake } from '../support/fake-device.js';
import { AtKbdc, KBD_DATA_PORT, KBD_STS_CTL_PORT } from '../../src/devices/lpc/atkbdc.js';
import { keyOf, keysymToQnum, scancodeBytes } from '../../src/devices/display/ps2-keymap.js';
import { keyboardLayouts, loadKeyboardLayout, parseKeyboardLayout } from '../../src/devices/display/kbd-layout.js';

describe('VNC keys to PS/2 scancodes', () => {
  it('maps keysyms by key (US layout), shifted or not', () => {
    expect(keysymToQnum(0x61)).toBe(0x1e); // a
    expect(keysymToQnum(0x41)).toBe(0x1e); // A: same key
    expect(keysymToQnum(0x21)).toBe(0x02); // ! is on 1
    expect(keysymToQnum(0xff0d)).toBe(0x1c); // Return
    expect(keysymToQnum(0xff52)).toBe(0x80 | 0x48); // Up: E0 48
    expect(keysymToQnum(0xffc9)).toBe(0x58); // F12
    expect(keysymToQnum(0x20ac)).toBe(0); // no euro key on a US keyboard
  });

  it('takes the key of a QEMU extended event over the keysym', () => {
    expect(keyOf(0x61, 0x9c)).toBe(0x9c); // keypad Enter
    expect(keyOf(0x61, 0xe01c)).toBe(0x9c);
    expect(keyOf(0x61, 0)).toBe(0x1e);
  });

  it('makes set 1 and set 2 bytes, with E0 prefixes and break codes', () => {
    expect(scancodeBytes(0x1e, true, 1)).toEqual([0x1e]);
    expect(scancodeBytes(0x1e, false, 1)).toEqual([0x9e]);
    expect(scancodeBytes(0x9c, false, 1)).toEqual([0xe0, 0x9c]);
    expect(scancodeBytes(0x1e, true, 2)).toEqual([0x1c]);
    expect(scancodeBytes(0x1e, false, 2)).toEqual([0xf0, 0x1c]);
    expect(scancodeBytes(0xc8, false, 2)).toEqual([0xe0, 0xf0, 0x75]); // Up released
  });
});

describe('i8042 keyboard with keys from VNC', () => {
  const drain = (f: ReturnType<typeof fake>): number[] => {
    const out: number[] = [];
    while (f.inp(KBD_STS_CTL_PORT) & 1) out.push(f.inp(KBD_DATA_PORT));
    return out;
  };

  it('sends set 2 by default and set 1 when the command byte asks for translation', () => {
    const f = fake();
    const k = new AtKbdc(f.ctx);
    f.outp(KBD_STS_CTL_PORT, 0x60); f.outp(KBD_DATA_PORT, 0x04); // no translation
    k.keyEvent(0x1e, true); k.keyEvent(0x1e, false);
    expect(drain(f)).toEqual([0x1c, 0xf0, 0x1c]);
    f.outp(KBD_STS_CTL_PORT, 0x60); f.outp(KBD_DATA_PORT, 0x44); // translation on
    k.keyEvent(0x9c, true); k.keyEvent(0x9c, false);
    expect(drain(f)).toEqual([0xe0, 0x1c, 0xe0, 0x9c]);
  });

  it('raises IRQ 1 for a key when the command byte enables it', () => {
    const f = fake();
    const k = new AtKbdc(f.ctx);
    f.outp(KBD_STS_CTL_PORT, 0x60); f.outp(KBD_DATA_PORT, 0x45);
    const before = f.irq.pulses.filter((g) => g === 1).length;
    k.keyEvent(0x1e, true);
    expect(f.irq.pulses.filter((g) => g === 1).length).toBeGreaterThan(before);
  });

  it('drops keys while scanning is disabled (0xf5) or the buffer is full', () => {
    const f = fake();
    const k = new AtKbdc(f.ctx);
    f.outp(KBD_DATA_PORT, 0xf5);
    expect(drain(f)).toEqual([0xfa]);
    k.keyEvent(0x1e, true);
    expect(drain(f)).toEqual([]);
    f.outp(KBD_DATA_PORT, 0xf4);
    expect(drain(f)).toEqual([0xfa]);
    for (let i = 0; i < 40; i++) k.keyEvent(0x1e, true);
    expect(drain(f).length).toBeLessThanOrEqual(15);
    expect(k.keysDropped).toBeGreaterThan(0);
  });
});

describe('PS/2 mouse behind the aux port', () => {
  const drain = (f: ReturnType<typeof fake>): Array<[string, number]> => {
    const out: Array<[string, number]> = [];
    for (let st = f.inp(KBD_STS_CTL_PORT); st & 1; st = f.inp(KBD_STS_CTL_PORT)) out.push([st & 0x20 ? 'aux' : 'kbd', f.inp(KBD_DATA_PORT)]);
    return out;
  };
  const toMouse = (f: ReturnType<typeof fake>, b: number): void => { f.outp(KBD_STS_CTL_PORT, 0xd4); f.outp(KBD_DATA_PORT, b); };

  it('answers reset, id and status, and reports only when enabled', () => {
    const f = fake();
    const k = new AtKbdc(f.ctx);
    toMouse(f, 0xff);
    expect(drain(f)).toEqual([['aux', 0xfa], ['aux', 0xaa], ['aux', 0x00]]);
    toMouse(f, 0xf2);
    expect(drain(f).map(([, b]) => b)).toEqual([0xfa, 0x00]);
    k.pointerEvent(0, 10, 10);
    k.pointerEvent(1, 20, 10);
    expect(drain(f)).toEqual([]); // reporting is off after reset
    toMouse(f, 0xe9);
    expect(drain(f).map(([, b]) => b)).toEqual([0xfa, 0x01, 2, 100]); // left button held
    toMouse(f, 0xf3); toMouse(f, 40);
    expect(drain(f).map(([, b]) => b)).toEqual([0xfa, 0xfa]);
  });

  it('turns absolute VNC positions into relative packets (y up), split at 255', () => {
    const f = fake();
    const k = new AtKbdc(f.ctx);
    f.outp(KBD_STS_CTL_PORT, 0x60); f.outp(KBD_DATA_PORT, 0x46); // aux IRQ 12 on
    toMouse(f, 0xf4);
    drain(f);
    k.pointerEvent(0, 500, 500);
    k.pointerEvent(4, 503, 490); // right button, 3 right, 10 up
    expect(drain(f).map(([, b]) => b)).toEqual([0x0a, 3, 10]);
    k.pointerEvent(4, 100, 500); // 403 left, 10 down: two packets
    expect(drain(f).map(([, b]) => b)).toEqual([0x3a, 0x01, 0xf6, 0x1a, 0x6c, 0x00]);
    expect(f.irq.pulses).toContain(12);
  });
});

describe('-K keyboard layouts (bhyve ps2kbd layout files)', () => {
  it('parses the three line forms bhyve reads and skips the rest', () => {
    const m = parseKeyboardLayout([
      '# comment', "'y',0x1a;\tcomment", "'Z',0x35;", "''',0x5d;", '0xa7,0x26;', '0xfe03,0x11,1;', '0x41,0x1c;',
      'garbage', "'q',zz;", '0x20ac,0x99;', // 0x99 is no set-2 key: ignored
    ].join('\n'));
    expect(m.get(0x79)).toBe(0x2c); // y on the US Z key (set 2 0x1a = set 1 0x2c)
    expect(m.get(0x5a)).toBe(0x15); // Z on the US Y key
    expect(m.get(0x27)).toBe(0x2b); // ' on the key right of the L row's end
    expect(m.get(0xa7)).toBe(0x04); // section sign on 3
    expect(m.get(0xfe03)).toBe(0x80 | 0x38); // E0 prefix
    expect(m.get(0x41)).toBe(0x1e);
    expect(m.has(0x71)).toBe(false);
    expect(m.has(0x20ac)).toBe(false);
  });

  it('ships layouts built from XKB that agree with the keys of their countries', () => {
    const names = keyboardLayouts();
    for (const n of ['default', 'de', 'fr', 'uk', 'us_dvorak', 'jp', 'ru', 'ch-fr']) expect(names).toContain(n);
    const de = loadKeyboardLayout('de');
    expect(keysymToQnum(0x79, de)).toBe(0x2c); // German y is where US z is
    expect(keysymToQnum(0x7a, de)).toBe(0x15); // and z where US y is
    expect(keysymToQnum(0x40, de)).toBe(0x10); // @ is AltGr+Q
    expect(keysymToQnum(0xe4, de)).toBe(0x28); // a-umlaut on the US ' key
    expect(keysymToQnum(0xff0d, de)).toBe(0x1c); // keys outside the file: bhyve's tables
    const fr = loadKeyboardLayout('fr');
    expect(keysymToQnum(0x61, fr)).toBe(0x10); // AZERTY: a on the US Q key
    expect(keysymToQnum(0x31, fr)).toBe(0x02); // 1 is Shift+& on the same key
    const dv = loadKeyboardLayout('us_dvorak');
    expect(keysymToQnum(0x6f, dv)).toBe(0x1f); // Dvorak o on the US S key
    expect(keyOf(0x6f, 0, dv)).toBe(0x1f);
    expect(keyOf(0x6f, 0x18, dv)).toBe(0x18); // an extended key event needs no layout
    const dflt = loadKeyboardLayout('default');
    for (let c = 0x21; c < 0x7f; c++) expect(keysymToQnum(c, dflt), String.fromCharCode(c)).toBe(keysymToQnum(c));
  });

  it('refuses an unknown layout with one line naming the directory', () => {
    expect(() => loadKeyboardLayout('xx')).toThrow(/^unknown keyboard layout 'xx' \(-K\): no such file in .*share\/bhyve\/kbdlayout/);
    expect(() => loadKeyboardLayout('../kbdlayout/de')).toThrow(/unknown keyboard layout/);
    expect(() => loadKeyboardLayout('')).toThrow(/unknown keyboard layout/);
  });
});
