import { describe, expect, it } from 'vitest';
import { fake, FakeIrq } from '../support/fake-device.js';
import {
  DEBUGEXIT_BASE, IOMEM_BASE, IOMEM_LEN, IOPORT_BASE, IRQ_BASE, PcTestDev,
} from '../../src/devices/lpc/pctestdev.js';
import { exitStatusOf } from '../../src/vmm/exit-status.js';



describe('pc-testdev', () => {
  it('ends the run through isa-debug-exit at 0xf4 with the value written', () => {
    const f = fake();
    new PcTestDev(f.ctx);
    expect(f.inp(DEBUGEXIT_BASE)).toBe(0);
    f.outp(DEBUGEXIT_BASE, 0x10);
    expect(f.exits).toEqual([{ kind: 'testdev', value: 0x10 }]);
    expect(exitStatusOf(f.exits[0])).toBe(0x21);
    f.outp(DEBUGEXIT_BASE + 2, 0x1234, 2);
    expect(f.exits[1]).toEqual({ kind: 'testdev', value: 0x1234 });
  });

  it('keeps a 32-bit scratch register at 0xe0 for any access size', () => {
    const f = fake();
    new PcTestDev(f.ctx);
    f.outp(IOPORT_BASE, 0xdeadbeef, 4);
    expect(f.inp(IOPORT_BASE, 4)).toBe(0xdeadbeef);
    expect(f.inp(IOPORT_BASE, 1)).toBe(0xef);
    expect(f.inp(IOPORT_BASE + 1, 1)).toBe(0xbe);
    expect(f.inp(IOPORT_BASE + 2, 2)).toBe(0xdead);
    f.outp(IOPORT_BASE + 1, 0x55, 1);
    expect(f.inp(IOPORT_BASE, 4)).toBe(0xdead55ef);
    f.outp(IOPORT_BASE + 2, 0x0102, 2);
    expect(f.inp(IOPORT_BASE, 4)).toBe(0x010255ef);
    // An access running past 0xe3 is refused: ignored, reads all-ones.
    expect(f.inp(IOPORT_BASE + 2, 4)).toBe(0xffffffff);
    f.outp(IOPORT_BASE + 3, 0xffff, 2);
    expect(f.inp(IOPORT_BASE, 4)).toBe(0x010255ef);
  });

  it('asserts and deasserts IRQ lines through 0x2000+pin', () => {
    const f = fake();
    new PcTestDev(f.ctx);
    f.outp(IRQ_BASE + 5, 1);
    f.outp(IRQ_BASE + 17, 1);
    expect(f.irq.level.get(5)).toBe(true);
    expect(f.irq.level.get(17)).toBe(true);
    f.outp(IRQ_BASE + 5, 0);
    expect(f.irq.level.get(5)).toBe(false);
    expect(f.inp(IRQ_BASE + 17)).toBe(0);
    // Wider writes are split into byte writes, as QEMU: byte i drives pin+i.
    f.irq.log = [];
    f.outp(IRQ_BASE + 11, 0x00ff0001, 4);
    expect(f.irq.log).toEqual([[11, true], [12, false], [13, true], [14, false]]);
    f.irq.log = [];
    f.outp(IRQ_BASE + 6, 0x0100, 2);
    expect(f.irq.log).toEqual([[6, false], [7, true]]);
    // Bytes past the last pin are dropped.
    f.irq.log = [];
    f.outp(IRQ_BASE + 22, 0x01010101, 4);
    expect(f.irq.log).toEqual([[22, true], [23, true]]);
    expect(f.io.portRead(IRQ_BASE + 23, 1)).toBe(0);
    expect(f.io.portRead(IRQ_BASE + 24, 1)).toBeUndefined();
  });

  it('stores and returns 1..8 byte MMIO accesses in the 64 KiB window at 0xff000000', () => {
    const f = fake();
    new PcTestDev(f.ctx);
    const data = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(f.io.mmioWrite(IOMEM_BASE + 0x100, data)).toBe(true);
    const back = new Uint8Array(8);
    f.io.mmioRead(IOMEM_BASE + 0x100, back);
    expect([...back]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const one = new Uint8Array(1);
    f.io.mmioRead(IOMEM_BASE + 0x103, one);
    expect(one[0]).toBe(4);
    f.io.mmioWrite(IOMEM_BASE + IOMEM_LEN - 2, Uint8Array.from([0xaa, 0xbb]));
    const two = new Uint8Array(2);
    f.io.mmioRead(IOMEM_BASE + IOMEM_LEN - 2, two);
    expect([...two]).toEqual([0xaa, 0xbb]);
    expect(f.io.mmioRead(IOMEM_BASE + IOMEM_LEN, two)).toBe(false);
  });
});
