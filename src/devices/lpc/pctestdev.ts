// pc-testdev (bhyve's pctestdev.c): the legacy test/debug interfaces
// kvm-unit-tests expect, enabled with `-l pc-testdev` (lpc.pc-testdev=true).
//
//   isa-debug-exit      I/O 0xf4, 4 ports: a write of V ends the run;
//                       bhyve exits with status (V << 1) | 1. Reads give 0.
//   pc-testdev-ioport   I/O 0xe0, 4 ports: a 32-bit scratch register; an
//                       access of N bytes at 0xe0+k reads/writes bytes k..k+N-1.
//   pc-testdev-irq-line I/O 0x2000 + pin for each IOAPIC pin (24 with KVM's
//                       IOAPIC): a byte write of nonzero asserts, zero
//                       deasserts that IRQ. A 2- or 4-byte write is split
//                       into byte writes, as QEMU's memory core does for
//                       this byte-wide region: `outl` of 1 to 0x200b
//                       asserts IRQ 11 and deasserts 12-14 (bytes past the
//                       last pin are dropped). bhyve drives IRQs < 16 on both
//                       the 8259 and the IOAPIC and the rest on the IOAPIC
//                       only; KVM's default GSI routing does exactly that
//                       for GSI n. Reads give 0.
//   pc-testdev-iomem    MMIO 0xff000000, 64 KiB of scratch memory.
//
// bhyve fails accesses it does not accept (a wrong size on the irq ports, an
// access running past the end of a range); we take wide irq-line writes as
// QEMU does, ignore the other such writes and read all-ones instead of
// stopping the VM.

import type { AccessSize, Device, DeviceContext } from '../device.js';

export const PCTESTDEV_NAME = 'pc-testdev';
export const DEBUGEXIT_BASE = 0xf4;
export const DEBUGEXIT_LEN = 4;
export const IOPORT_BASE = 0xe0;
export const IOPORT_LEN = 4;
export const IRQ_BASE = 0x2000;
/** KVM's in-kernel IOAPIC has 24 pins (bhyve accepts 24..32). */
export const IOAPIC_PINCOUNT = 24;
export const IOMEM_BASE = 0xff000000;
export const IOMEM_LEN = 0x10000;

function ones(size: number): number {
  return size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
}

export class PcTestDev implements Device {
  readonly name = PCTESTDEV_NAME;
  /** The 32-bit scratch register at 0xe0. */
  ioportData = 0;
  readonly iomem = new Uint8Array(IOMEM_LEN);

  constructor(private readonly ctx: DeviceContext, readonly pinCount: number = IOAPIC_PINCOUNT) {
    const io = ctx.io;
    io.registerPorts('isa-debug-exit', DEBUGEXIT_BASE, DEBUGEXIT_LEN, {
      read: () => 0,
      write: (_port, size, value) => {
        ctx.machine.requestExit({ kind: 'testdev', value: (value & ones(size)) >>> 0 });
      },
    });
    io.registerPorts('pc-testdev-ioport', IOPORT_BASE, IOPORT_LEN, {
      read: (port, size) => this.ioportRead(port, size),
      write: (port, size, value) => this.ioportWrite(port, size, value),
    });
    io.registerPorts('pc-testdev-irq-line', IRQ_BASE, pinCount, {
      read: () => 0,
      write: (port, size, value) => {
        for (let i = 0; i < size && port + i < IRQ_BASE + pinCount; i++) {
          ctx.irq.setLevel(port + i - IRQ_BASE, ((value >>> (8 * i)) & 0xff) !== 0);
        }
      },
    });
    io.registerMmio('pc-testdev-iomem', IOMEM_BASE, IOMEM_LEN, {
      read: (addr, data) => {
        const off = addr - IOMEM_BASE;
        if (off + data.length > IOMEM_LEN) { data.fill(0xff); return; }
        data.set(this.iomem.subarray(off, off + data.length));
      },
      write: (addr, data) => {
        const off = addr - IOMEM_BASE;
        if (off + data.length > IOMEM_LEN) return;
        this.iomem.set(data, off);
      },
    });
  }

  private ioportRead(port: number, size: AccessSize): number {
    if (port + size > IOPORT_BASE + IOPORT_LEN) return ones(size);
    const lsb = (port & 3) * 8;
    return ((this.ioportData >>> lsb) & ones(size)) >>> 0;
  }

  private ioportWrite(port: number, size: AccessSize, value: number): void {
    if (port + size > IOPORT_BASE + IOPORT_LEN) return;
    const lsb = (port & 3) * 8;
    const mask = (ones(size) << lsb) >>> 0;
    this.ioportData = ((this.ioportData & ~mask) | ((value << lsb) & mask)) >>> 0;
  }
}

export function createPcTestDev(ctx: DeviceContext): PcTestDev {
  return new PcTestDev(ctx);
}
