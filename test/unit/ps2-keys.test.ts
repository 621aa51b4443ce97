import { describe, expect, it } from 'vitest';
import { fake } from '../support/fake-device.js';
import { AtKbdc, KBD_DATA_PORT, KBD_STS_CTL_PORT } from '../../src/devices/lpc/atkbdc.js';
import { keyOf, keysymToQnum, scancodeBytes } from '../../src/devices/display/ps2-keymap.js';

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
