// passthru's core (devices/passthru/) against devices served in-process over
// vfio-user: configuration-space virtualisation, BAR decoding and mapping
// decisions, the emulated MSI-X table and PBA, MSI, reset and FLR, and DMA
// through the function's DMA space.
import { describe, expect, it } from 'vitest';
import { crc32 } from 'node:zlib';
import { ConfigTree } from '../../src/config/tree.js';
import type { DeviceContext, KvmDoorbells, MsiIrqfd } from '../../src/devices/device.js';
import { PciBus } from '../../src/devices/pci/pci-bus.js';
import { planBar } from '../../src/devices/passthru/bar-plan.js';
import { identityDmaSpace, ramFileRanges } from '../../src/devices/passthru/dma-window.js';
import { PassthruFunction, walkCapabilities } from '../../src/devices/passthru/passthru-function.js';
import { VfioUserBackend } from '../../src/devices/passthru/vfio-user-backend.js';
import type { DeviceServices, ServedDevice, ServedRegion } from '../../src/devices/vfio-user/server.js';
import { REG, STATUS, TestDmaDevice } from '../../src/devices/vfio-user/test-dma-device.js';
import { eventfdWrite } from '../../src/sys/eventfd.js';
import { memfd } from '../../src/sys/memfd.js';
import { mmap, PROT_READ, PROT_WRITE } from '../../src/sys/libc.js';
import fs from 'node:fs';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { IRQ_INFO_FLAG, PCI_IRQ } from '../../src/sys/vfio-abi.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';
import { loopbackClient } from '../support/vfio-user-loopback.js';

const RAM = 1 << 20;

interface FakeKvm {
  routes: Map<number, { address: number; data: number; attached: boolean; fd: number }>;
  maps: Array<{ gpa: number; size: number }>;
}

function rig(device: ServedDevice, opts: { kvm?: boolean; space?: ReturnType<typeof identityDmaSpace>; ramFile?: { fd: number; bytes: Uint8Array } } = {}) {
  const io = new LocalIoBus();
  const msis: Array<[number, number]> = [];
  const ram = opts.ramFile?.bytes ?? new Uint8Array(RAM);
  const mem = new GuestMemory([{ gpa: 0, bytes: ram }]);
  const fk: FakeKvm = { routes: new Map(), maps: [] };
  let gsi = 24;
  const kvm = opts.kvm ? ({
    msiIrqfd(fd: number): MsiIrqfd {
      const g = gsi++;
      const r = { address: 0, data: 0, attached: false, fd };
      fk.routes.set(g, r);
      return { gsi: g, route: (a, d) => { r.address = a; r.data = d; }, attach: () => { r.attached = true; }, detach: () => { r.attached = false; }, close: () => { fk.routes.delete(g); } };
    },
    mapHostMemory(g: number, size: number) { fk.maps.push({ gpa: g, size }); return true; },
    unmapHostMemory(g: number) { fk.maps = fk.maps.filter((m) => m.gpa !== g); },
  } as unknown as KvmDoorbells) : undefined;
  const ctx: DeviceContext = {
    io, config: new ConfigTree(), mem, kvm,
    irq: { setLevel: () => {}, pulse: () => {}, signalMsi: (a, d) => { msis.push([a, d]); } },
    machine: { requestExit: () => {}, vcpuCount: 1 }, stream: () => undefined, timer: () => { throw new Error('no timers'); },
  } as DeviceContext;
  const { client, server } = loopbackClient(device);
  const backend = new VfioUserBackend('vfio-user test', client, opts.space ?? identityDmaSpace(mem.ranges()), mem,
    opts.ramFile && { fd: opts.ramFile.fd, layout: { lowmem: RAM, highmem: 0 } });
  const fn = new PassthruFunction(ctx, backend);
  const bus = new PciBus();
  bus.attach(0, 5, 0, fn);
  const rd = (off: number, size = 4) => bus.configRead(0, 5, 0, off, size);
  const wr = (off: number, v: number, size = 4) => bus.configWrite(0, 5, 0, off, size, v);
  const mrd32 = (a: number) => { const d = new Uint8Array(4); io.mmioRead(a, d); return new DataView(d.buffer).getUint32(0, true); };
  const mwr32 = (a: number, v: number) => io.mmioWrite(a, Uint8Array.of(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24));
  return { io, fn, bus, rd, wr, mrd32, mwr32, msis, ram, fk, client, server, backend };
}

/** Places BARs 0, 2 and 4 and turns decoding on, as firmware would. */
function place(r: ReturnType<typeof rig>): void {
  r.wr(0x10, 0xc0000000);
  r.wr(0x18, 0xc0001000);
  r.wr(0x20, 0xc0002000);
  r.wr(0x24, 0);
  r.wr(0x04, 0x0006, 2);
}

describe('passthru configuration space', () => {
  it('shows the device identity and capabilities, sizes its BARs from its regions', () => {
    const r = rig(new TestDmaDevice());
    expect(r.rd(0x00)).toBe(0x00f01b36);
    expect(r.rd(0x08) >>> 8).toBe(0x088000);
    expect(r.rd(0x34, 1)).toBe(0x40);
    expect(r.rd(0x40, 1)).toBe(0x11);
    expect(r.rd(0x42, 2)).toBe(1); // two MSI-X vectors
    expect(r.fn.caps.map((c) => c.id)).toEqual([0x11, 0x05, 0x01]);
    // BAR sizing: all-ones reads back the size mask and the type bits.
    r.wr(0x10, 0xffffffff);
    expect(r.rd(0x10)).toBe(0xfffff000);
    r.wr(0x20, 0xffffffff); r.wr(0x24, 0xffffffff);
    expect(r.rd(0x20)).toBe(0xfffff004); // 64-bit, 4 KiB
    expect(r.rd(0x24)).toBe(0xffffffff);
    expect(r.rd(0x14)).toBe(0); // no BAR 1
    expect(r.rd(0x30)).toBe(0); // no expansion ROM
  });

  it('writes the command register through, keeps BARs and capabilities to itself', () => {
    const dev = new TestDmaDevice();
    const r = rig(dev);
    place(r);
    expect(r.rd(0x04, 2)).toBe(0x0006);
    // The device saw memory decode and bus mastering.
    expect(r.client.regionRead(7, 0x04, 2)).toEqual(Uint8Array.of(0x06, 0));
    // Its BARs were never written: the guest's addresses are ours.
    expect(Array.from(r.client.regionRead(7, 0x10, 4))).toEqual([0, 0, 0, 0]);
    // MSI-X control: only enable and function mask are writable, the table size is not.
    r.wr(0x42, 0xffff, 2);
    expect(r.rd(0x42, 2)).toBe(0xc001);
    r.wr(0x42, 0, 2);
    // The status register is the device's, read live.
    expect(r.rd(0x06, 2) & 0x10).toBe(0x10);
  });

  it('forwards the device-specific space, shadows PMCSR, turns an FLR into a reset', () => {
    const writes: Array<[number, number]> = [];
    const cfg = new Uint8Array(256);
    const dv = new DataView(cfg.buffer);
    dv.setUint32(0, 0x12348086, true); dv.setUint16(6, 0x10, true); cfg[0x34] = 0x40;
    cfg[0x40] = 0x01; cfg[0x41] = 0x50; dv.setUint16(0x42, 3, true); // PM
    cfg[0x50] = 0x10; cfg[0x51] = 0x90; // PCI Express, FLR in device control
    cfg[0x90] = 0x09; cfg[0x91] = 0x00; cfg[0x92] = 0xaa; // vendor-specific
    let resets = 0;
    const region = (bytes: Uint8Array): ServedRegion => ({ size: bytes.length, flags: 3, read: (o, d) => d.set(bytes.subarray(o, o + d.length)), write: (o, d) => { writes.push([o, d.length]); bytes.set(d, o); } });
    const dev: ServedDevice = {
      regions: [region(new Uint8Array(4096)), , , , , , , region(cfg)],
      irqs: [{ count: 0, flags: 0 }, { count: 0, flags: 0 }, { count: 0, flags: 0 }, { count: 0, flags: 0 }, { count: 0, flags: 0 }],
      attach: (_s: DeviceServices) => {},
      reset: () => { resets++; },
    };
    const r = rig(dev);
    expect(resets).toBe(1); // reset when the VM starts
    expect(r.rd(0x92, 1)).toBe(0xaa);
    r.wr(0x93, 0x5a, 1);
    expect(cfg[0x93]).toBe(0x5a);
    writes.length = 0;
    r.wr(0x44, 0x0003, 2); // PMCSR: D3hot
    expect(writes).toEqual([]);
    expect(cfg[0x44]).toBe(0);
    r.wr(0x58, 0x8000 | 0x10, 2); // device control: Initiate FLR + another bit
    expect(resets).toBe(2);
    expect(cfg[0x59] & 0x80).toBe(0);
    expect(cfg[0x58]).toBe(0x10);
    expect(r.fn.stats()).toMatchObject({ flr: 1 });
    r.fn.close();
    expect(resets).toBe(3); // and when it stops
  });

  it('survives a hostile capability list (loops, pointers into the header)', () => {
    const cfg = new Uint8Array(256);
    cfg[6] = 0x10; cfg[0x34] = 0x40;
    cfg[0x40] = 0x09; cfg[0x41] = 0x80; cfg[0x80] = 0x09; cfg[0x81] = 0x40;
    expect(walkCapabilities(cfg).map((c) => c.offset)).toEqual([0x40, 0x80]);
    cfg[0x81] = 0x10;
    expect(walkCapabilities(cfg).map((c) => c.offset)).toEqual([0x40, 0x80]);
    cfg[6] = 0;
    expect(walkCapabilities(cfg)).toEqual([]);
  });
});

describe('passthru BARs', () => {
  it('plans what to map: whole pages of mmap areas, never the MSI-X table or PBA pages', () => {
    expect(planBar({ barSize: 0x4000, regionSize: 0x4000, mmapAreas: [{ offset: 0, size: 0x4000 }], trapped: [], canMap: true }))
      .toEqual([{ offset: 0, size: 0x4000, how: 'map' }]);
    expect(planBar({ barSize: 0x4000, regionSize: 0x4000, mmapAreas: [{ offset: 0, size: 0x4000 }], trapped: [{ offset: 0x2000, size: 32 }, { offset: 0x2800, size: 8 }], canMap: true }))
      .toEqual([{ offset: 0, size: 0x2000, how: 'map' }, { offset: 0x2000, size: 0x1000, how: 'trap' }, { offset: 0x3000, size: 0x1000, how: 'map' }]);
    // Sparse, unaligned areas shrink to whole pages.
    expect(planBar({ barSize: 0x8000, regionSize: 0x6000, mmapAreas: [{ offset: 0x800, size: 0x2000 }, { offset: 0x4000, size: 0x2000 }], trapped: [], canMap: true }))
      .toEqual([{ offset: 0, size: 0x1000, how: 'trap' }, { offset: 0x1000, size: 0x1000, how: 'map' }, { offset: 0x2000, size: 0x2000, how: 'trap' },
        { offset: 0x4000, size: 0x2000, how: 'map' }, { offset: 0x6000, size: 0x2000, how: 'trap' }]);
    expect(planBar({ barSize: 0x1000, regionSize: 0x1000, mmapAreas: [{ offset: 0, size: 0x1000 }], trapped: [], canMap: false }))
      .toEqual([{ offset: 0, size: 0x1000, how: 'trap' }]);
    expect(planBar({ barSize: 0x1000, regionSize: 0x800, mmapAreas: [{ offset: 0, size: 0x800 }], trapped: [], canMap: true }))
      .toEqual([{ offset: 0, size: 0x1000, how: 'trap' }]);
  });

  it('maps the mmap-able BAR 4 with a KVM slot, traps BAR 0 and the MSI-X BAR; moves and decode follow the guest', () => {
    const r = rig(new TestDmaDevice(), { kvm: true });
    expect(r.fn.barPlan(4)).toEqual([{ offset: 0, size: 0x1000, how: 'map' }]);
    expect(r.fn.barPlan(0)).toEqual([{ offset: 0, size: 0x1000, how: 'trap' }]);
    expect(r.fn.barPlan(2)).toEqual([{ offset: 0, size: 0x1000, how: 'trap' }]);
    place(r);
    expect(r.fk.maps).toEqual([{ gpa: 0xc0002000, size: 0x1000 }]);
    // Registers reach the device through REGION_READ.
    expect(r.mrd32(0xc0000000)).toBe(0x31414d44);
    r.wr(0x04, 0x0004, 2); // memory decode off
    expect(r.fk.maps).toEqual([]);
    expect(r.io.mmioRead(0xc0000000, new Uint8Array(4))).toBe(false);
    r.wr(0x20, 0xd0000000);
    r.wr(0x04, 0x0006, 2);
    expect(r.fk.maps).toEqual([{ gpa: 0xd0000000, size: 0x1000 }]);
    expect(r.fn.stats()['mapped bar bytes']).toBe(0x2000);
  });
});

describe('passthru MSI-X and DMA', () => {
  function program(r: ReturnType<typeof rig>, src: number, dst: number, len: number, vec = 0): void {
    r.mwr32(0xc0000000 + REG.SRC, src); r.mwr32(0xc0000000 + REG.SRC + 4, 0);
    r.mwr32(0xc0000000 + REG.DST, dst); r.mwr32(0xc0000000 + REG.DST + 4, 0);
    r.mwr32(0xc0000000 + REG.LEN, len); r.mwr32(0xc0000000 + REG.VECTOR, vec);
    r.mwr32(0xc0000000 + REG.DOORBELL, 1);
  }

  it('traps the table: the device never sees it; a copy raises the vector the guest programmed', () => {
    const dev = new TestDmaDevice();
    const r = rig(dev);
    place(r);
    // Vector 1: address and data, unmasked.
    r.mwr32(0xc0001000 + 16, 0xfee00000); r.mwr32(0xc0001000 + 20, 0); r.mwr32(0xc0001000 + 24, 0x4041); r.mwr32(0xc0001000 + 28, 0);
    expect(r.mrd32(0xc0001000 + 24)).toBe(0x4041);
    expect(Array.from(r.client.regionRead(2, 16, 16)).every((b) => b === 0)).toBe(true);
    r.wr(0x42, 0x8000, 2); // MSI-X on
    for (let i = 0; i < 5000; i++) r.ram[0x10000 + i] = (i * 13) & 0xff;
    program(r, 0x10000, 0x30000, 5000, 1);
    expect(Buffer.compare(r.ram.subarray(0x30000, 0x30000 + 5000), r.ram.subarray(0x10000, 0x10000 + 5000))).toBe(0);
    expect(r.mrd32(0xc0000000 + REG.STATUS)).toBe(STATUS.DONE);
    r.fn.poll();
    expect(r.msis).toEqual([[0xfee00000, 0x4041]]);
    // The device's completion record, through the trapped BAR 4 (no KVM here).
    expect(r.mrd32(0xc0002000 + 8)).toBe(crc32(r.ram.subarray(0x10000, 0x10000 + 5000)));
    expect(r.fn.stats()).toMatchObject({ 'vfio-user dma reads served': 1, 'vfio-user dma writes served': 1 });
  });

  it('a masked vector is held in the PBA and sent once when unmasked', () => {
    const r = rig(new TestDmaDevice());
    place(r);
    r.mwr32(0xc0001000 + 0, 0xfee00000); r.mwr32(0xc0001000 + 8, 0x30);
    r.wr(0x42, 0x8000, 2);
    // Still masked (every vector starts masked).
    program(r, 0x1000, 0x2000, 8, 0);
    program(r, 0x1000, 0x2000, 8, 0);
    r.fn.poll();
    expect(r.msis).toEqual([]);
    expect(r.mrd32(0xc0001800) & 1).toBe(1);
    r.mwr32(0xc0001000 + 12, 0);
    expect(r.msis).toEqual([[0xfee00000, 0x30]]);
    expect(r.mrd32(0xc0001800) & 1).toBe(0);
    // Function mask holds it the same way.
    r.wr(0x42, 0xc000, 2);
    program(r, 0x1000, 0x2000, 8, 0);
    r.fn.poll();
    expect(r.msis).toHaveLength(1);
    r.wr(0x42, 0x8000, 2);
    expect(r.msis).toHaveLength(2);
  });

  it('with KVM: each vector an irqfd routed with the guest message, detached while masked', () => {
    const r = rig(new TestDmaDevice(), { kvm: true });
    place(r);
    r.mwr32(0xc0001000 + 16, 0xfee01000); r.mwr32(0xc0001000 + 24, 0x51); r.mwr32(0xc0001000 + 28, 0);
    r.wr(0x42, 0x8000, 2);
    const routes = [...r.fk.routes.values()];
    expect(routes).toHaveLength(2);
    expect(routes[1]).toMatchObject({ address: 0xfee01000, data: 0x51, attached: true });
    expect(routes[0].attached).toBe(false);
    r.mwr32(0xc0001000 + 28, 1);
    expect(routes[1].attached).toBe(false);
    // While detached the device's signal stays pending; unmask sends it once.
    eventfdWrite(routes[1].fd);
    expect(r.mrd32(0xc0001800) & 2).toBe(2);
    r.mwr32(0xc0001000 + 28, 0);
    expect(r.msis).toEqual([[0xfee01000, 0x51]]);
    expect(routes[1].attached).toBe(true);
    r.wr(0x42, 0, 2);
    expect(r.fk.routes.size).toBe(0);
  });

  it('MSI: the emulated capability gives the device an eventfd for the message', () => {
    const r = rig(new TestDmaDevice());
    place(r);
    expect(r.rd(0x50, 1)).toBe(0x05);
    r.wr(0x54, 0xfee00000); r.wr(0x58, 0); r.wr(0x5c, 0x0045, 2);
    r.wr(0x52, 1, 2);
    program(r, 0x1000, 0x2000, 8, 7); // no MSI-X vector 7: the device uses MSI
    r.fn.poll();
    expect(r.msis).toEqual([[0xfee00000, 0x45]]);
  });

  it('a DMA outside the function\'s DMA space is refused and memory stays untouched', () => {
    // A space that allows only the first 64 KiB (what an IOMMU domain would).
    const allowed = { gpa: 0, length: 0x10000 };
    const space = {
      identity: false,
      translate(iova: number, length: number, _a: number, out: Array<{ gpa: number; length: number }> = []) {
        if (iova + length > allowed.length) throw new Error('IOMMU fault');
        out.push({ gpa: iova, length }); return out;
      },
      listen(l: { map(m: { iova: number; gpa: number; length: number; access: number }): void }) { l.map({ iova: 0, gpa: 0, length: 0x100000, access: 3 }); return () => {}; },
    };
    const r = rig(new TestDmaDevice(), { space });
    place(r);
    r.ram.fill(0x77, 0x20000, 0x21000);
    program(r, 0x1000, 0x20000, 64, 0);
    expect(r.mrd32(0xc0000000 + REG.STATUS)).toBe(STATUS.ERROR);
    expect(r.mrd32(0xc0000000 + REG.FAULT)).toBe(0x20000);
    expect(r.ram[0x20000]).toBe(0x77);
    expect(r.fn.stats()['vfio-user dma faults']).toBe(1);
  });

  it('DMA windows: the guest RAM file split at the 4 GiB gap', () => {
    expect(ramFileRanges(0x1000, 0x1000, { lowmem: 0x100000, highmem: 0 })).toEqual([{ gpa: 0x1000, length: 0x1000, offset: 0x1000 }]);
    expect(ramFileRanges(0x100000000, 0x2000, { lowmem: 0x80000000, highmem: 0x10000 })).toEqual([{ gpa: 0x100000000, length: 0x2000, offset: 0x80000000 }]);
    expect(ramFileRanges(0x7ffff000, 0x2000, { lowmem: 0x80000000, highmem: 0x10000 })).toBeUndefined();
  });

  it('the server going away leaves a device that reads all-ones', () => {
    const r = rig(new TestDmaDevice());
    place(r);
    r.client.endpoint.wire.close();
    const err = process.stderr.write;
    const lines: string[] = [];
    process.stderr.write = ((s: string) => { lines.push(s); return true; }) as typeof process.stderr.write;
    try {
      expect(r.mrd32(0xc0000000)).toBe(0xffffffff);
      r.mwr32(0xc0000000 + REG.DOORBELL, 1);
    } finally { process.stderr.write = err; }
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/passthru vfio-user test: .*the device is gone/);
  });

  it('INTx and the irq indices the device offers', () => {
    const r = rig(new TestDmaDevice());
    expect(r.fn.wantsIntx).toBe(true);
    expect(r.backend.irqCount(PCI_IRQ.MSIX)).toBe(2);
    expect(IRQ_INFO_FLAG.AUTOMASKED).toBe(4);
  });
});

describe('passthru behind the virtio-iommu (a TranslatedDmaSpace)', () => {
  it('mirrors the domain\'s maps and unmaps as DMA windows; a DMA outside them is a fault the IOMMU hears of', async () => {
    const { TranslatedDmaSpace, DMA_READ, DMA_WRITE } = await import('../../src/devices/iommu/dma-space.js');
    type M = { iova: number; gpa: number; length: number; access: number };
    const maps: M[] = [];
    const domain = { lookup: (iova: number) => maps.find((m) => iova >= m.iova && iova < m.iova + m.length), mappings: () => maps };
    const space = new TranslatedDmaSpace(0x28, [{ gpa: 0, length: RAM }]);
    const faults: string[] = [];
    space.faultSink = (f) => { faults.push(f.reason); };
    space.attach(domain);
    const dev = new TestDmaDevice();
    const r = rig(dev, { space });
    place(r);
    // The guest maps IOVA 0x100000 -> GPA 0x10000 (source) and 0x200000 -> 0x40000 (destination).
    for (const m of [{ iova: 0x100000, gpa: 0x10000, length: 0x4000, access: DMA_READ }, { iova: 0x200000, gpa: 0x40000, length: 0x4000, access: DMA_READ | DMA_WRITE }]) {
      maps.push(m);
      space.mapped(m);
    }
    expect(r.fn.stats()['vfio-user dma windows']).toBe(2);
    r.ram.fill(0x3c, 0x10000, 0x10100);
    const prog = (src: number, dst: number, len: number) => {
      r.mwr32(0xc0000000 + REG.STATUS, 3);
      r.mwr32(0xc0000000 + REG.SRC, src); r.mwr32(0xc0000000 + REG.DST, dst); r.mwr32(0xc0000000 + REG.LEN, len);
      r.mwr32(0xc0000000 + REG.DOORBELL, 1);
      return r.mrd32(0xc0000000 + REG.STATUS);
    };
    expect(prog(0x100000, 0x200000, 0x100)).toBe(STATUS.DONE);
    expect(r.ram[0x40000]).toBe(0x3c);
    // Unmapped destination: refused, reported, memory untouched.
    maps.splice(1, 1);
    space.unmapped(0x200000, 0x4000);
    expect(r.fn.stats()['vfio-user dma windows']).toBe(1);
    r.ram.fill(0, 0x40000, 0x40100);
    expect(prog(0x100000, 0x200000, 0x100)).toBe(STATUS.ERROR);
    expect(faults).toEqual(['unmapped']);
    expect(r.ram[0x40000]).toBe(0);
    // Writing through a read-only mapping: a permission fault.
    expect(prog(0x100000, 0x100000, 0x10)).toBe(STATUS.ERROR);
    expect(faults).toEqual(['unmapped', 'permission']);
  });

  it('windows the guest maps after start-up are handed over with the guest RAM file (kept open by the backend, closed with it), with their own permissions', async () => {
    const { TranslatedDmaSpace, DMA_READ, DMA_WRITE } = await import('../../src/devices/iommu/dma-space.js');
    type M = { iova: number; gpa: number; length: number; access: number };
    const maps: M[] = [];
    const space = new TranslatedDmaSpace(0x28, [{ gpa: 0, length: RAM }]);
    const faults: string[] = [];
    space.faultSink = (f) => { faults.push(`${f.reason} ${f.access}`); };
    space.attach({ lookup: (iova: number) => maps.find((m) => iova >= m.iova && iova < m.iova + m.length), mappings: () => maps });
    const fd = memfd('passthru-test-ram', RAM);
    const r = rig(new TestDmaDevice(), { space, ramFile: { fd, bytes: mmap(RAM, PROT_READ | PROT_WRITE, fd, 0, 'test RAM').bytes } });
    place(r);
    // Mapped after the backend was made (as a guest's MAP requests are).
    for (const m of [{ iova: 0x100000, gpa: 0x10000, length: 0x4000, access: DMA_READ }, { iova: 0x200000, gpa: 0x40000, length: 0x4000, access: DMA_WRITE }]) {
      maps.push(m);
      space.mapped(m);
    }
    expect(r.server.stats.dmaMapped).toBe(2);
    expect(r.fn.stats()['vfio-user dma maps']).toBe(2);
    r.ram.fill(0x3c, 0x10000, 0x10100);
    const prog = (src: number, dst: number, len: number) => {
      r.mwr32(0xc0000000 + REG.STATUS, 3);
      r.mwr32(0xc0000000 + REG.SRC, src); r.mwr32(0xc0000000 + REG.DST, dst); r.mwr32(0xc0000000 + REG.LEN, len);
      r.mwr32(0xc0000000 + REG.DOORBELL, 1);
      return r.mrd32(0xc0000000 + REG.STATUS);
    };
    // Through the server's mappings of the file: no DMA message.
    expect(prog(0x100000, 0x200000, 0x100)).toBe(STATUS.DONE);
    expect(r.ram[0x40000]).toBe(0x3c);
    expect(r.server.stats.dmaMessages).toBe(0);
    // A read of the write-only window and a write of the read-only one:
    // asked of the client, refused by the space.
    expect(prog(0x200000, 0x100000, 0x10)).toBe(STATUS.ERROR);
    expect(prog(0x100000, 0x100000, 0x10)).toBe(STATUS.ERROR);
    expect(faults).toEqual([`permission ${DMA_READ}`, `permission ${DMA_WRITE}`]);
    expect(r.server.stats.dmaMessages).toBe(2);
    // The backend owns the descriptor.
    expect(() => fs.fstatSync(fd)).not.toThrow();
    r.backend.close();
    expect(() => fs.fstatSync(fd)).toThrow();
  });

  it('a window the server refuses to map is said once on stderr, and its DMA goes by messages', async () => {
    const { TranslatedDmaSpace, DMA_READ, DMA_WRITE } = await import('../../src/devices/iommu/dma-space.js');
    type M = { iova: number; gpa: number; length: number; access: number };
    const maps: M[] = [];
    const space = new TranslatedDmaSpace(0x28, [{ gpa: 0, length: RAM }]);
    space.attach({ lookup: (iova: number) => maps.find((m) => iova >= m.iova && iova < m.iova + m.length), mappings: () => maps });
    // A guest RAM file shorter than the layout says: the server refuses
    // windows past its end (EINVAL, "window beyond its file").
    const fd = memfd('passthru-test-short-ram', 0x8000);
    const r = rig(new TestDmaDevice(), { space, ramFile: { fd, bytes: new Uint8Array(RAM) } });
    place(r);
    const err = process.stderr.write;
    const lines: string[] = [];
    process.stderr.write = ((s: string) => { lines.push(s); return true; }) as typeof process.stderr.write;
    try {
      for (const m of [{ iova: 0x100000, gpa: 0x10000, length: 0x4000, access: DMA_READ }, { iova: 0x200000, gpa: 0x40000, length: 0x4000, access: DMA_READ | DMA_WRITE }]) {
        maps.push(m);
        space.mapped(m);
      }
    } finally { process.stderr.write = err; }
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^bhyve: passthru vfio-user test: the server refused the DMA window 0x100000-0x103fff \(DMA_MAP: Invalid argument\); its DMA goes by messages\n$/);
    expect(r.fn.stats()['vfio-user dma maps']).toBe(0);
    expect(r.fn.stats()['vfio-user dma windows']).toBe(0);
    // The copy still works, by DMA_READ/DMA_WRITE messages.
    r.ram.fill(0x5a, 0x10000, 0x10100);
    r.mwr32(0xc0000000 + REG.STATUS, 3);
    r.mwr32(0xc0000000 + REG.SRC, 0x100000); r.mwr32(0xc0000000 + REG.DST, 0x200000); r.mwr32(0xc0000000 + REG.LEN, 0x100);
    r.mwr32(0xc0000000 + REG.DOORBELL, 1);
    expect(r.mrd32(0xc0000000 + REG.STATUS)).toBe(STATUS.DONE);
    expect(r.ram[0x40000]).toBe(0x5a);
    expect(r.server.stats.dmaMessages).toBeGreaterThan(0);
    expect(r.server.stats.dmaMapped).toBe(0);
    r.backend.close();
  });
});
