// MSI-X and MSI on a bare PciEmulFunction: table/PBA access widths, masking,
// pending bits, function mask, MSI enable and multiple-message data.
import { describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import type { DeviceContext } from '../../src/devices/device.js';
import { PciBus } from '../../src/devices/pci/pci-bus.js';
import { PciEmulFunction } from '../../src/devices/pci/pci-emul.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';

class Dev extends PciEmulFunction {
  constructor(ctx: DeviceContext) {
    super('msixdev', ctx);
    this.cfg.setIdentity({ vendor: 0x10dd, device: 2, classCode: 0xff, subclass: 0 });
    this.addMsixCap(70, 1); // two PBA qwords
    this.addMsiCap(4);
  }
}

function rig() {
  const io = new LocalIoBus();
  const msis: Array<[number, number]> = [];
  const ctx: DeviceContext = {
    io, config: new ConfigTree(), mem: new GuestMemory([]),
    irq: { setLevel: () => {}, pulse: () => {}, signalMsi: (a, d) => { msis.push([a, d]); } },
    machine: { requestExit: () => {}, vcpuCount: 1 }, stream: () => undefined,
  };
  const bus = new PciBus();
  const dev = new Dev(ctx);
  bus.attach(0, 2, 0, dev);
  const rd = (off: number, size = 4) => bus.configRead(0, 2, 0, off, size);
  const wr = (off: number, v: number, size = 4) => bus.configWrite(0, 2, 0, off, size, v);
  wr(0x14, 0xc1000000);
  wr(0x04, 0x0006, 2);
  const mrd = (a: number, n: number) => { const d = new Uint8Array(n); io.mmioRead(a, d); return d; };
  const mwr32 = (a: number, v: number) => io.mmioWrite(a, Uint8Array.of(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24));
  return { io, dev, msis, rd, wr, mrd, mwr32 };
}

describe('MSI-X', () => {
  it('exposes the table at offset 0 and the PBA after it, vectors masked at reset', () => {
    const r = rig();
    const cap = r.dev.cfg.findCapability(0x11)!;
    expect(r.rd(cap.offset + 2, 2)).toBe(69);
    expect(r.rd(cap.offset + 4)).toBe(1);
    expect(r.rd(cap.offset + 8)).toBe(0x1001); // 70*16 bytes round up to 4 KiB
    expect(r.dev.bars[1]).toMatchObject({ type: 'mem32', size: 0x2000 });
    expect(Array.from(r.mrd(0xc1000000 + 12, 4))).toEqual([1, 0, 0, 0]);
    // Only enable and function-mask bits are writable; table size is not.
    r.wr(cap.offset + 2, 0xffff, 2);
    expect(r.rd(cap.offset + 2, 2)).toBe(0xc000 | 69);
    // The PBA ignores writes.
    r.mwr32(0xc1001000, 0xffffffff);
    expect(Array.from(r.mrd(0xc1001000, 8))).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('delivers unmasked vectors, holds masked ones pending in the PBA', () => {
    const r = rig();
    const cap = r.dev.cfg.findCapability(0x11)!;
    r.wr(cap.offset + 2, 0x8000, 2);
    const e = (v: number) => 0xc1000000 + 16 * v;
    // 8-byte write of the address, then data, then unmask.
    r.io.mmioWrite(e(65), Uint8Array.of(0x00, 0x20, 0xe0, 0xfe, 0, 0, 0, 0));
    r.mwr32(e(65) + 8, 0x4077);
    expect(r.dev.generateMsix(65)).toBe(true);
    expect(r.msis).toEqual([]);
    expect(r.dev.msixPending(65)).toBe(true);
    expect(r.mrd(0xc1001008, 1)[0]).toBe(2); // vector 65: qword 1, bit 1
    r.mwr32(e(65) + 12, 0);
    expect(r.msis).toEqual([[0xfee02000, 0x4077]]);
    expect(r.dev.msixPending(65)).toBe(false);
    expect(r.dev.generateMsix(70)).toBe(false); // no such vector
    r.dev.generateMsix(65);
    expect(r.msis).toHaveLength(2);
    // Disabled MSI-X: nothing.
    r.wr(cap.offset + 2, 0, 2);
    expect(r.dev.generateMsix(65)).toBe(false);
  });
});

describe('MSI', () => {
  it('delivers while enabled, with the message number in the data low bits', () => {
    const r = rig();
    const cap = r.dev.cfg.findCapability(0x05)!;
    expect(r.rd(cap.offset + 2, 2)).toBe(0x80 | (2 << 1)); // 64-bit, 4 messages capable
    expect(r.dev.generateMsi(0)).toBe(false);
    r.wr(cap.offset + 4, 0xfee00000);
    r.wr(cap.offset + 12, 0x4040, 2);
    r.wr(cap.offset + 2, 0x0021, 2); // enable, 4 messages (MME=2)
    expect(r.dev.generateMsi(3)).toBe(true);
    expect(r.dev.generateMsi(4)).toBe(false);
    expect(r.msis).toEqual([[0xfee00000, 0x4043]]);
    // MSI enabled wins over MSI-X (pci_msix_enabled).
    r.wr(r.dev.cfg.findCapability(0x11)!.offset + 2, 0x8000, 2);
    expect(r.dev.msixEnabledNow()).toBe(false);
  });
});
