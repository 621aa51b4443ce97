// BAR placement, sizing, relocation and decode gating, ECAM and INTx
// routing, playing the guest through PCI config cycles.
import { describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import type { DeviceContext, InterruptSink } from '../../src/devices/device.js';
import { buildPlatform } from '../../src/devices/platform.js';
import { computeLayout } from '../../src/sys/memory-map.js';
import { PciResourceAllocator, PCI_EMUL_ECFG_BASE, barSize } from '../../src/devices/pci/bar-alloc.js';
import { PciEmulFunction } from '../../src/devices/pci/pci-emul.js';
import { PciBus } from '../../src/devices/pci/pci-bus.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';
import '../support/device-models.js'; // the device models buildPlatform needs

class FakeIrq implements InterruptSink {
  levels: Array<[number, boolean]> = [];
  msis: Array<[number, number]> = [];
  setLevel(gsi: number, high: boolean): void { this.levels.push([gsi, high]); }
  pulse(): void {}
  signalMsi(address: number, data: number): void { this.msis.push([address, data]); }
}

function fake(settings: Record<string, string> = {}) {
  const config = new ConfigTree();
  for (const [k, v] of Object.entries(settings)) config.set(k, v);
  const io = new LocalIoBus();
  const irq = new FakeIrq();
  const ctx: DeviceContext = {
    io, irq, config, mem: new GuestMemory([]),
    machine: { requestExit: () => {}, vcpuCount: 1 },
    stream: () => undefined,
  };
  return { ctx, io, irq };
}

const LAYOUT = computeLayout(256 * 1024 * 1024);
const STD = { 'pci.0.0.0.device': 'hostbridge', 'pci.0.31.0.device': 'lpc' };

class TestDev extends PciEmulFunction {
  regs = new Map<number, number>();
  constructor(ctx: DeviceContext) {
    super('testdev', ctx);
    this.cfg.setIdentity({ vendor: 0x10dd, device: 1, classCode: 0xff, subclass: 0 });
    const h = {
      read: (o: number) => this.regs.get(o) ?? 0x5a,
      write: (o: number, _s: number, v: number) => { this.regs.set(o, v); },
    };
    this.allocBar(0, 'io', 6, h); // rounds to 8
    this.allocBar(1, 'mem32', 4096, h);
    this.allocBar(2, 'mem64', 0x10000, h);
  }
}

function rig(enable = true) {
  const f = fake();
  const bus = new PciBus();
  const dev = new TestDev(f.ctx);
  if (enable) dev.cfg.set16(4, 0x0007);
  bus.attach(0, 5, 0, dev);
  const alloc = new PciResourceAllocator(LAYOUT);
  for (const b of dev.declaredBars().sort((a, b) => b.size - a.size)) dev.assignBar(b.idx, alloc);
  const rd = (off: number, size = 4) => bus.configRead(0, 5, 0, off, size);
  const wr = (off: number, v: number, size = 4) => bus.configWrite(0, 5, 0, off, size, v);
  return { ...f, bus, dev, rd, wr };
}

describe('PCI BARs', () => {
  it('rounds sizes to powers of two and the PCI minimum', () => {
    expect(barSize('io', 6)).toBe(8);
    expect(barSize('io', 1)).toBe(4);
    expect(barSize('mem32', 1)).toBe(16);
    expect(barSize('mem64', 0x3000)).toBe(0x4000);
  });

  it('places BARs as bhyve: I/O from 0x2000, memory from 0xc0000000 largest first', () => {
    const r = rig();
    expect(r.rd(0x10)).toBe(0x2000 | 1);
    expect(r.rd(0x18)).toBe(0xc0000004); // 64 KiB, 64-bit, below 4 GiB
    expect(r.rd(0x1c)).toBe(0);
    expect(r.rd(0x14)).toBe(0xc0010000);
    expect(r.io.ports.find(0x2000)?.name).toBe('testdev@pci.0.5.0 BAR0');
    expect(r.io.mmio.find(0xc0010000)?.name).toBe('testdev@pci.0.5.0 BAR1');
  });

  it('answers sizing with the size mask and keeps type bits', () => {
    const r = rig();
    r.wr(0x10, 0xffffffff);
    expect(r.rd(0x10)).toBe(0xfffffff9); // I/O: all 32 bits size (QEMU, SeaBIOS)
    r.wr(0x14, 0xffffffff);
    expect(r.rd(0x14)).toBe(0xfffff000);
    r.wr(0x18, 0xffffffff);
    r.wr(0x1c, 0xffffffff);
    expect(r.rd(0x18)).toBe(0xffff0004);
    expect(r.rd(0x1c)).toBe(0xffffffff);
    // Unused BARs read 0 and stay 0.
    r.wr(0x20, 0xffffffff);
    expect(r.rd(0x20)).toBe(0);
    // Narrow writes to a BAR are ignored.
    r.wr(0x14, 0xd000, 2);
    expect(r.rd(0x14)).toBe(0xfffff000);
  });

  it('moves the registered range when the guest writes a new base', () => {
    const r = rig();
    r.wr(0x14, 0xd0000000);
    expect(r.rd(0x14)).toBe(0xd0000000);
    expect(r.io.mmio.find(0xc0010000)).toBeUndefined();
    const data = new Uint8Array(4);
    expect(r.io.mmioRead(0xd0000010, data)).toBe(true);
    expect(data[0]).toBe(0x5a);
    r.io.mmioWrite(0xd0000020, Uint8Array.of(1, 2, 3, 4));
    expect(r.dev.regs.get(0x20)).toBe(0x04030201);
    // I/O BAR
    r.wr(0x10, 0x3001);
    expect(r.io.ports.find(0x2000)).toBeUndefined();
    expect(r.io.portRead(0x3004, 1)).toBe(0x5a);
    // 64-bit BAR above 4 GiB: both halves.
    r.wr(0x1c, 0x10);
    r.wr(0x18, 0x20000000);
    expect(r.dev.barRegisteredAt(2)).toBe(0x10_2000_0000);
    expect(r.io.mmio.find(0x10_2000_0000 + 8)).toBeDefined();
  });

  it('decodes only while the command register enables the space', () => {
    const r = rig();
    r.wr(0x04, 0x0004, 2); // bus master only
    expect(r.io.ports.find(0x2000)).toBeUndefined();
    expect(r.io.mmio.find(0xc0000000)).toBeUndefined();
    r.wr(0x14, 0xd0000000); // moved while not decoding: nothing registered
    expect(r.io.mmio.find(0xd0000000)).toBeUndefined();
    r.wr(0x04, 0x0002, 2);
    expect(r.io.mmio.find(0xd0000000)).toBeDefined();
    expect(r.io.ports.find(0x2000)).toBeUndefined();
    r.wr(0x04, 0x0001, 2);
    expect(r.io.ports.find(0x2000)).toBeDefined();
    expect(r.io.mmio.find(0xd0000000)).toBeUndefined();
  });

  it('leaves a BAR undecoded rather than crash when it collides', () => {
    const r = rig();
    r.io.registerMmio('other', 0xd0000000, 0x1000, { read: () => {}, write: () => {} });
    r.wr(0x14, 0xd0000000);
    expect(r.dev.barRegisteredAt(1)).toBeUndefined();
    expect(r.dev.barConflict).toMatch(/overlaps/);
    r.wr(0x14, 0xd0001000);
    expect(r.dev.barRegisteredAt(1)).toBe(0xd0001000);
    // Sizing an I/O BAR near the top of the port space.
    r.wr(0x10, 0xfffffffc);
    expect(() => r.rd(0x10)).not.toThrow();
  });
});

describe('platform PCI resources', () => {
  it('enables decoding without a boot ROM and routes INTx through PIRQ', () => {
    const f = fake({ ...STD, 'pci.0.4.0.device': 'virtio-rnd' });
    const p = buildPlatform(f.ctx, LAYOUT);
    const v = p.virtio[0];
    expect(v.cfg.get16(4) & 0x7).toBe(0x7);
    expect(v.barRegisteredAt(0)).toBe(0x2000);
    expect(p.intx).toHaveLength(1);
    const route = p.intx[0];
    expect(route).toMatchObject({ bus: 0, slot: 4, pin: 1, ioapicIrq: 16 });
    expect(v.cfg.get8(0x3d)).toBe(1);
    expect(v.cfg.get8(0x3c)).toBe(p.pirq.irqOf(route.pirqPin));
    // LPC config mirrors the routed PIRQ registers.
    expect(p.lpc!.cfg.get8(0x60 + route.pirqPin - 1)).toBe(p.pirq.read(route.pirqPin));
    expect(p.asBuilt.pciBuses[0]).toMatchObject({ bus: 0, io: { base: 0x2000 } });
  });

  it('with a boot ROM assigns BARs but leaves decoding and bus mastering off', () => {
    const f = fake({ ...STD, 'pci.0.4.0.device': 'virtio-rnd', 'lpc.bootrom': '/x.fd' });
    const p = buildPlatform(f.ctx, LAYOUT);
    const v = p.virtio[0];
    expect(v.cfg.get16(4)).toBe(0);
    expect(v.cfg.get32(0x10)).toBe(0x2001);
    expect(v.barRegisteredAt(0)).toBeUndefined();
    // Fixed PIRQ/IOAPIC mapping for ROM boots: (4 + slot + pin) % 8.
    expect(p.intx[0].ioapicIrq).toBe(16 + ((4 + 4 + 1) % 8));
    expect(p.intx[0].pirqPin).toBe(((4 + 4 + 1) % 8) + 1);
  });

  it('serves config cycles through ECAM at 0xe0000000', () => {
    const f = fake({ ...STD, 'pci.0.4.0.device': 'virtio-rnd' });
    buildPlatform(f.ctx, LAYOUT);
    const d = new Uint8Array(4);
    expect(f.io.mmioRead(PCI_EMUL_ECFG_BASE + (4 << 15), d)).toBe(true);
    expect(new DataView(d.buffer).getUint32(0, true)).toBe(0x10051af4);
    // Absent function, and the extended header of a conventional function.
    f.io.mmioRead(PCI_EMUL_ECFG_BASE + (7 << 15), d);
    expect(new DataView(d.buffer).getUint32(0, true)).toBe(0xffffffff);
    f.io.mmioRead(PCI_EMUL_ECFG_BASE + (4 << 15) + 0x100, d);
    expect(new DataView(d.buffer).getUint32(0, true)).toBe(0);
    // A write through ECAM reaches the command register.
    f.io.mmioWrite(PCI_EMUL_ECFG_BASE + (4 << 15) + 4, Uint8Array.of(0x00, 0x04));
    const w = new Uint8Array(2);
    f.io.mmioRead(PCI_EMUL_ECFG_BASE + (4 << 15) + 4, w);
    expect(w[1] & 0x04).toBe(0x04);
  });
});
