// Fuzz target for passthru of a host device, from the guest's side: the
// passthrough function (src/devices/passthru/passthru-function.ts) over the
// VFIO backend (vfio-backend.ts) over the scripted kernel
// (test/support/fake-vfio-kernel.ts), with a rom= expansion ROM and behind
// a guest-driven IOMMU. Operations: config-space reads and writes of any
// offset, size and value (BARs, command, MSI/MSI-X capabilities, PMCSR, FLR
// in the PCI Express capability, the ROM BAR), MMIO reads and writes of any
// size across the BARs, the MSI-X table and the ROM wherever the guest put
// them, IOMMU maps and unmaps of any IOVA, address and length, device reset.
//
// Oracles: no exception escapes (the kernel's refusals come back as
// VfioCallError and must be absorbed); the device never sees the guest's BAR
// addresses (its BAR registers are never written); every DMA window the
// kernel holds lies over guest RAM (its host address inside the RAM
// mapping) at page granularity.

import { ConfigTree } from '../../../src/config/tree.js';
import type { DeviceContext } from '../../../src/devices/device.js';
import type { DmaMappingLike, DmaSpaceLike } from '../../../src/devices/passthru/dma-window.js';
import { PassthruFunction } from '../../../src/devices/passthru/passthru-function.js';
import { guestRamInMapping, VfioBackend } from '../../../src/devices/passthru/vfio-backend.js';
import { PciBus } from '../../../src/devices/pci/pci-bus.js';
import { GuestMemory } from '../../../src/sys/guest-memory.js';
import { LocalIoBus } from '../../../src/vmm/io-bus.js';
import { fakeNic, FakeVfioKernel, NIC } from '../../support/fake-vfio-kernel.js';
import { InvariantError, type FuzzInstance, type FuzzTarget } from '../harness.js';
import type { Rng } from '../rng.js';

const LOW = 0x200000;
const HIGH = 0x100000;
const RAM_BASE = 0x7e0000000000n;
const BAR_REGS = [0x10, 0x14, 0x18, 0x1c, 0x20, 0x24];

class PassthruVfioFuzz implements FuzzInstance {
  private readonly k: FakeVfioKernel;
  private readonly io = new LocalIoBus();
  private readonly bus = new PciBus();
  private readonly fn: PassthruFunction;
  private readonly backend: VfioBackend;
  private readonly listeners: Array<{ map(m: DmaMappingLike): void; unmap(iova: number, length: number): void }> = [];
  private readonly counts = { cfgReads: 0, cfgWrites: 0, mmio: 0, maps: 0, unmaps: 0, resets: 0, warnings: 0 };
  lastOp: string | undefined;

  constructor(private readonly r: Rng) {
    const mem = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(LOW) }, { gpa: 0x100000000, bytes: new Uint8Array(HIGH) }]);
    this.k = new FakeVfioKernel({ files: ['/dev/vfio/vfio', '/dev/vfio/5', '/dev/iommu', '/dev/vfio/devices/vfio0'], device: fakeNic() });
    const space: DmaSpaceLike = {
      identity: false,
      translate: () => [],
      listen: (l) => { this.listeners.push(l); return () => { this.listeners.splice(this.listeners.indexOf(l), 1); }; },
    };
    const api = r.chance(0.5) ? 'group' : 'iommufd';
    this.backend = VfioBackend.open({ address: NIC, group: 5, api, node: api === 'group' ? '/dev/vfio/5' : '/dev/vfio/devices/vfio0' },
      { io: this.k, space, ram: guestRamInMapping(RAM_BASE, { lowmem: LOW, highmem: HIGH }), warn: () => { this.counts.warnings++; } });
    const ctx = {
      io: this.io, config: new ConfigTree(), mem,
      irq: { setLevel: () => {}, pulse: () => {}, signalMsi: () => {} },
      machine: { requestExit: () => {}, vcpuCount: 1 }, stream: () => undefined, timer: () => { throw new Error('no timers'); },
    } as unknown as DeviceContext;
    this.fn = new PassthruFunction(ctx, this.backend, { rom: r.chance(0.7) ? r.bytes(1 + r.below(9000)) : undefined });
    this.bus.attach(0, 5, 0, this.fn);
  }

  private addr(): number {
    const r = this.r;
    return r.pick([0, 0x1000, 0x100000, 0xc0000000, 0xc0003000, 0xd0000000, 0xfee00000, 0x100000000, 0x1000fffff, 2 ** 40, r.u32(), r.u32() & ~0xfff]);
  }

  step(): void {
    const r = this.r;
    const op = r.below(10);
    if (op < 3) {
      this.lastOp = 'config write';
      this.counts.cfgWrites++;
      const off = r.chance(0.6) ? r.pick([0x04, 0x10, 0x14, 0x18, 0x30, 0x3c, 0x40, 0x42, 0x44, 0x48, 0x50, 0x52, 0x54, 0x58, 0x5c, 0x64, 0x78, 0x79]) : r.below(260);
      const size = r.pick([1, 2, 4, 3, 8]);
      const value = r.pick([0, 1, 0xffffffff, 0x8000, 0xc000, 0x0006, 0x0007, 0xfffff800, 0xc0000000, 0xd0000001, r.u32()]);
      this.bus.configWrite(0, 5, 0, off, size, value);
    } else if (op < 5) {
      this.lastOp = 'config read';
      this.counts.cfgReads++;
      this.bus.configRead(0, 5, 0, r.below(260), r.pick([1, 2, 4, 3]));
    } else if (op < 7) {
      this.lastOp = 'mmio';
      this.counts.mmio++;
      const base = r.pick([0xc0000000, 0xc0003000, 0xd0000000, this.fn.barAddress(0), this.fn.barAddress(2), this.addr()]);
      const a = base + r.pick([0, 4, 8, 12, 0xffc, 0x1000, 0x2ffc, 0x3000, 0x300c, 0x3800, 0x3ffe, r.below(0x5000)]);
      const data = new Uint8Array(r.pick([1, 2, 4, 8, 3, 16]));
      if (r.chance(0.5)) { data.set(r.bytes(data.length)); this.io.mmioWrite(a, data); } else this.io.mmioRead(a, data);
    } else if (op < 9) {
      const iova = r.chance(0.8) ? this.addr() : r.u32();
      const len = r.pick([0x1000, 0x2000, 0x200000, 1, 0xfff, 0, 2 ** 33, r.below(0x300000)]);
      if (r.chance(0.6)) {
        this.lastOp = 'iommu map';
        this.counts.maps++;
        const m = { iova, gpa: r.chance(0.7) ? r.pick([0, 0x1000, 0x100000, 0x1ff000, 0x100000000, 0x1000ff000]) : this.addr(), length: len, access: r.below(4) };
        for (const l of [...this.listeners]) l.map(m);
      } else {
        this.lastOp = 'iommu unmap';
        this.counts.unmaps++;
        for (const l of [...this.listeners]) l.unmap(iova, len);
      }
    } else {
      this.lastOp = 'reset';
      this.counts.resets++;
      this.fn.reset();
    }
  }

  check(): void {
    const cfg = this.k.o.device.regions[7].bytes!;
    const dv = new DataView(cfg.buffer);
    if (dv.getUint32(0x10, true) !== 0xfebc0000 || dv.getUint32(0x18, true) !== 0x0000e001 || BAR_REGS.some((o) => o !== 0x10 && o !== 0x18 && dv.getUint32(o, true) !== 0)) {
      throw new InvariantError('the guest reached the device\'s BAR registers');
    }
    const ramEnd = RAM_BASE + BigInt(LOW + HIGH);
    for (const [iova, w] of this.k.windows) {
      if (w.vaddr < RAM_BASE || w.vaddr + BigInt(w.size) > ramEnd) throw new InvariantError(`DMA window at IOVA 0x${iova.toString(16)} reaches host memory outside guest RAM`);
    }
  }

  close(): void {
    this.fn.close();
    if (this.k.openFiles().length) throw new InvariantError(`files left open: ${this.k.openFiles().join(', ')}`);
  }

  stats(): Record<string, number> { return { ...this.counts, windows: this.k.windows.size }; }
}

export const PASSTHRU_VFIO_TARGET: FuzzTarget = {
  name: 'passthru-vfio',
  surface: 'passthru of a host device: config space, BARs, MSI-X table, ROM and IOMMU mappings from the guest, over the VFIO backend and a scripted kernel',
  create: (r) => new PassthruVfioFuzz(r),
  instanceOps: 3000,
};
