import { describe, expect, it } from 'vitest';
import { fake, FakeIrq } from '../support/fake-device.js';
import {
  AtKbdc, KBDS_KBD_BUFFER_FULL, KBDS_SYS_FLAG, KBD_DATA_PORT, KBD_STS_CTL_PORT,
} from '../../src/devices/lpc/atkbdc.js';



describe('i8042 keyboard controller', () => {
  it('reports empty buffers and the system flag, data reads 0 when empty', () => {
    const f = fake();
    new AtKbdc(f.ctx);
    const st = f.inp(KBD_STS_CTL_PORT);
    expect(st & 0x03).toBe(0); // output and input buffers empty
    expect(st & KBDS_SYS_FLAG).toBe(KBDS_SYS_FLAG);
    expect(f.inp(KBD_DATA_PORT)).toBe(0);
  });

  it('answers the self test 0xaa with 0x55', () => {
    const f = fake();
    new AtKbdc(f.ctx);
    f.outp(KBD_STS_CTL_PORT, 0xaa);
    expect(f.inp(KBD_STS_CTL_PORT) & KBDS_KBD_BUFFER_FULL).toBe(KBDS_KBD_BUFFER_FULL);
    expect(f.inp(KBD_DATA_PORT)).toBe(0x55);
    expect(f.inp(KBD_STS_CTL_PORT) & KBDS_KBD_BUFFER_FULL).toBe(0);
    f.outp(KBD_STS_CTL_PORT, 0xab); // keyboard port test: 0 = ok
    expect(f.inp(KBD_DATA_PORT)).toBe(0);
  });

  it('reads and writes the command byte, and IRQ 1 follows its enable bit', () => {
    const f = fake();
    new AtKbdc(f.ctx);
    f.outp(KBD_STS_CTL_PORT, 0x20);
    expect(f.inp(KBD_DATA_PORT)).toBe(0x04);
    f.outp(KBD_STS_CTL_PORT, 0x60);
    f.outp(KBD_DATA_PORT, 0x45); // translate, sys flag, kbd interrupt
    expect(f.irq.pulses).toEqual([]);
    f.outp(KBD_STS_CTL_PORT, 0x20);
    expect(f.irq.pulses).toEqual([1]);
    expect(f.inp(KBD_DATA_PORT)).toBe(0x45);
    f.outp(KBD_STS_CTL_PORT, 0x60);
    f.outp(KBD_DATA_PORT, 0x00); // clears the system flag too
    expect(f.inp(KBD_STS_CTL_PORT) & KBDS_SYS_FLAG).toBe(0);
  });

  it('echoes a byte through 0xd2 and keeps the output port', () => {
    const f = fake();
    new AtKbdc(f.ctx);
    f.outp(KBD_STS_CTL_PORT, 0xd2);
    f.outp(KBD_DATA_PORT, 0x9c);
    expect(f.inp(KBD_STS_CTL_PORT) & KBDS_KBD_BUFFER_FULL).toBe(KBDS_KBD_BUFFER_FULL);
    expect(f.inp(KBD_DATA_PORT)).toBe(0x9c);
    f.outp(KBD_STS_CTL_PORT, 0xd1);
    f.outp(KBD_DATA_PORT, 0x03);
    f.outp(KBD_STS_CTL_PORT, 0xd0);
    expect(f.inp(KBD_DATA_PORT)).toBe(0x03);
  });

  it('pulses reset on command 0xfe', () => {
    const f = fake();
    new AtKbdc(f.ctx);
    f.outp(KBD_STS_CTL_PORT, 0xad); // harmless commands first
    f.outp(KBD_STS_CTL_PORT, 0xae);
    f.outp(KBD_DATA_PORT, 0xff); // keyboard reset: no keyboard, no answer
    expect(f.exits).toEqual([]);
    f.outp(KBD_STS_CTL_PORT, 0xfe);
    expect(f.exits).toHaveLength(1);
    expect(f.exits[0].kind).toBe('reset');
  });
});
