// The virtio PCI transport driven as a guest driver drives it: config-space
// capability walk, BAR discovery, modern common-config bring-up, MSI-X, MSI,
// INTx + ISR, legacy I/O BAR, needs-reset, hostile register values.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import type { DeviceContext, InterruptSink } from '../../src/devices/device.js';
import { buildPlatform, type Platform } from '../../src/devices/platform.js';
import { computeLayout } from '../../src/sys/memory-map.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';
import {
  VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET,
  VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
} from '../../src/devices/virtio/virtio-constants.js';
import { FakeDriver, RAM_BASE } from './virtio-driver.js';
import '../support/device-models.js'; // the device models buildPlatform needs

class FakeIrq implements InterruptSink {
  levels = new Map<number, boolean>();
  msis: Array<[number, number]> = [];
  setLevel(gsi: number, high: boolean): void { this.levels.set(gsi, high); }
  pulse(): void {}
  signalMsi(address: number, data: number): void { this.msis.push([address, data]); }
}

const LAYOUT = computeLayout(256 * 1024 * 1024);
const STD = { 'pci.0.0.0.device': 'hostbridge', 'pci.0.31.0.device': 'lpc' };
const SLOT = 4;
const tmpFiles: string[] = [];
afterEach(() => { for (const f of tmpFiles.splice(0)) fs.rmSync(f, { force: true }); });

/** A platform with one virtio function at 0:4:0 and a guest driver for it. */
function rig(settings: Record<string, string>, qsize = 16) {
  const config = new ConfigTree();
  for (const [k, v] of Object.entries({ ...STD, ...settings })) config.set(k, v);
  const io = new LocalIoBus();
  const irq = new FakeIrq();
  const drv = new FakeDriver(qsize);
  const ctx: DeviceContext = {
    io, irq, config, mem: drv.mem, machine: { requestExit: () => {}, vcpuCount: 1 }, stream: () => undefined,
  };
  const p: Platform = buildPlatform(ctx, LAYOUT);
  const cfgRd = (off: number, size = 4) => {
    io.portWrite(0xcf8, 4, (0x80000000 | (SLOT << 11) | (off & 0xfc)) >>> 0);
    return io.portRead(0xcfc + (off & 3), size as 1 | 2 | 4)!;
  };
  const cfgWr = (off: number, v: number, size = 4) => {
    io.portWrite(0xcf8, 4, (0x80000000 | (SLOT << 11) | (off & 0xfc)) >>> 0);
    io.portWrite(0xcfc + (off & 3), size as 1 | 2 | 4, v);
  };
  const mrd = (addr: number, size: number) => {
    const d = new Uint8Array(size);
    if (!io.mmioRead(addr, d)) throw new Error(`MMIO 0x${addr.toString(16)} not decoded`);
    let v = 0;
    for (let i = 0; i < size; i++) v += d[i] * 2 ** (8 * i);
    return v;
  };
  const mwr = (addr: number, size: number, v: number) => {
    const d = new Uint8Array(size);
    for (let i = 0; i < size; i++) d[i] = Math.floor(v / 2 ** (8 * i)) & 0xff;
    if (!io.mmioWrite(addr, d)) throw new Error(`MMIO 0x${addr.toString(16)} not decoded`);
  };
  // Walk the capability list the way a driver does.
  const caps: Array<{ off: number; id: number; type?: number; bar?: number; offset?: number; length?: number; mult?: number }> = [];
  let ptr = cfgRd(0x34, 1);
  for (let n = 0; ptr !== 0 && n < 48; n++) {
    const id = cfgRd(ptr, 1);
    const c: (typeof caps)[number] = { off: ptr, id };
    if (id === 0x09) {
      c.type = cfgRd(ptr + 3, 1);
      c.bar = cfgRd(ptr + 4, 1);
      c.offset = cfgRd(ptr + 8);
      c.length = cfgRd(ptr + 12);
      if (c.type === 2) c.mult = cfgRd(ptr + 16);
    }
    caps.push(c);
    ptr = cfgRd(ptr + 1, 1);
  }
  const barAddr = (i: number) => {
    const lo = cfgRd(0x10 + 4 * i);
    if (lo & 1) return lo & ~3;
    const hi = (lo & 6) === 4 ? cfgRd(0x14 + 4 * i) : 0;
    return hi * 2 ** 32 + ((lo & ~0xf) >>> 0);
  };
  const vcap = (type: number) => caps.find((c) => c.id === 9 && c.type === type)!;
  const at = (type: number) => barAddr(vcap(type).bar!) + vcap(type).offset!;
  const common = (off: number, size: number, v?: number) => (v === undefined ? mrd(at(1) + off, size) : (mwr(at(1) + off, size, v), 0));
  return { io, irq, drv, p, v: p.virtio[0], cfgRd, cfgWr, mrd, mwr, caps, barAddr, vcap, at, common };
}

type Rig = ReturnType<typeof rig>;

/** Enables MSI-X and programs vector v with (addr, data), unmasked. */
function msixVector(r: Rig, v: number, addr: number, data: number, masked = false) {
  const cap = r.caps.find((c) => c.id === 0x11)!;
  const table = r.barAddr(r.cfgRd(cap.off + 4) & 7) + (r.cfgRd(cap.off + 4) & ~7);
  r.mwr(table + 16 * v, 4, addr);
  r.mwr(table + 16 * v + 4, 4, 0);
  r.mwr(table + 16 * v + 8, 4, data);
  r.mwr(table + 16 * v + 12, 4, masked ? 1 : 0);
  r.cfgWr(cap.off + 2, 0x8000 | (r.cfgRd(cap.off + 2, 2) & 0x7ff), 2);
  return { table, cap };
}

/** Modern bring-up up to DRIVER_OK with queue 0 at the FakeDriver's rings. */
function bringUp(r: Rig, opts: { vector?: number; features?: bigint } = {}) {
  r.common(0x14, 1, 0);
  r.common(0x14, 1, VIRTIO_CONFIG_S_ACKNOWLEDGE);
  r.common(0x14, 1, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
  r.common(0x00, 4, 0);
  const lo = r.common(0x04, 4);
  r.common(0x00, 4, 1);
  const hi = r.common(0x04, 4);
  const offered = (BigInt(hi) << 32n) | BigInt(lo);
  const want = opts.features ?? offered;
  r.common(0x08, 4, 0);
  r.common(0x0c, 4, Number(want & 0xffffffffn));
  r.common(0x08, 4, 1);
  r.common(0x0c, 4, Number(want >> 32n));
  r.common(0x14, 1, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
  const status = r.common(0x14, 1);
  if (!(status & VIRTIO_CONFIG_S_FEATURES_OK)) return { offered, status };
  r.common(0x16, 2, 0);
  r.common(0x18, 2, r.drv.size);
  if (opts.vector !== undefined) r.common(0x1a, 2, opts.vector);
  const L = r.drv.layout;
  r.common(0x20, 4, L.desc); r.common(0x24, 4, 0);
  r.common(0x28, 4, L.avail); r.common(0x2c, 4, 0);
  r.common(0x30, 4, L.used); r.common(0x34, 4, 0);
  r.common(0x1c, 2, 1);
  r.common(0x14, 1, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
  return { offered, status: r.common(0x14, 1) };
}

function notify(r: Rig, q: number) {
  r.common(0x16, 2, q);
  const off = r.common(0x1e, 2);
  r.mwr(r.at(2) + off * r.vcap(2).mult!, 2, q);
}

describe('virtio-pci: identity and capabilities', () => {
  it('virtio-rnd: bhyve ids, MSI-X, MSI and the virtio structures in BAR 4', () => {
    const r = rig({ 'pci.0.4.0.device': 'virtio-rnd' });
    expect(r.cfgRd(0)).toBe(0x10051af4);
    expect(r.cfgRd(0x2c)).toBe(0x00041af4);
    expect(r.cfgRd(0x08) >>> 24).toBe(0x10); // PCIC_CRYPTO
    expect(r.cfgRd(0x08) & 0xff).toBe(0); // transitional: revision 0
    expect(r.caps.map((c) => c.id)).toEqual([0x11, 0x05, 9, 9, 9, 9]);
    expect(r.caps.filter((c) => c.id === 9).map((c) => c.type)).toEqual([1, 2, 3, 5]); // no device cfg for rnd
    expect(r.vcap(1)).toMatchObject({ bar: 4, offset: 0, length: 0x38 });
    expect(r.vcap(2)).toMatchObject({ bar: 4, offset: 0x3000, mult: 4 });
    expect(r.barAddr(0)).toBe(0x2000); // legacy I/O BAR
    expect(r.cfgRd(0x20) & 0x6).toBe(4); // BAR 4 is 64-bit
    // MSI-X: nvq + 1 vectors in BAR 1, PBA at 4 KiB.
    const msix = r.caps[0];
    expect(r.cfgRd(msix.off + 2, 2) & 0x7ff).toBe(1);
    expect(r.cfgRd(msix.off + 4)).toBe(1);
    expect(r.cfgRd(msix.off + 8)).toBe(0x1001);
    expect(r.cfgRd(0x3d, 1)).toBe(1);
  });

  it('modern transport ids and -W (virtio_msix=false): no MSI-X capability', () => {
    const r = rig({ 'pci.0.4.0.device': 'virtio-rnd', 'pci.0.4.0.transport': 'modern', virtio_msix: 'false' });
    expect(r.cfgRd(0)).toBe(0x10441af4);
    expect(r.cfgRd(0x08) & 0xff).toBe(1);
    expect(r.caps.map((c) => c.id)).toEqual([0x05, 9, 9, 9, 9]);
    expect(r.barAddr(0)).toBe(0);
  });

  it('refuses bad transports and reports a missing disk image with the slot and file', () => {
    expect(() => rig({ 'pci.0.4.0.device': 'virtio-rnd', 'pci.0.4.0.transport': 'pcie' })).toThrow(/invalid transport "pcie"/);
    expect(() => rig({ 'pci.0.4.0.device': 'virtio-blk', 'pci.0.4.0.path': '/nonexistent/d.img' }))
      .toThrow(/^virtio-blk at pci slot 0:4:0: disk image \/nonexistent\/d\.img does not exist$/);
    expect(() => rig({ 'pci.0.4.0.device': 'virtio-blk' })).toThrow(/virtio-blk at pci\.0\.4\.0: no disk image path/);
  });
});

describe('virtio-pci: modern bring-up', () => {
  it('virtio-rnd: features, queue setup, notify, used ring, MSI-X delivery', () => {
    const r = rig({ 'pci.0.4.0.device': 'virtio-rnd' });
    msixVector(r, 1, 0xfee00000, 0x4041);
    expect(r.common(0x12, 2)).toBe(1); // num_queues
    const { offered, status } = bringUp(r, { vector: 1 });
    expect(offered & (1n << BigInt(VIRTIO_F_VERSION_1))).not.toBe(0n);
    expect(status & VIRTIO_CONFIG_S_DRIVER_OK).toBeTruthy();
    expect(r.v.device.activated).toBe(true);
    expect(r.common(0x1a, 2)).toBe(1);
    const buf = r.drv.alloc(64);
    r.drv.offer(r.drv.chain([{ addr: buf, len: 64, write: true }]));
    notify(r, 0);
    expect(r.drv.usedIdx()).toBe(1);
    expect(r.drv.usedElem(0)).toEqual({ id: 0, len: 64 });
    expect(r.drv.read(buf, 64).some((b) => b !== 0)).toBe(true);
    expect(r.irq.msis).toEqual([[0xfee00000, 0x4041]]);
    // Reset brings everything back.
    r.common(0x14, 1, 0);
    expect(r.common(0x14, 1)).toBe(0);
    expect(r.v.device.activated).toBe(false);
    expect(r.common(0x1c, 2)).toBe(0);
    expect(r.common(0x1a, 2)).toBe(0xffff);
  });

  it('masked MSI-X vector sets the PBA bit and delivers on unmask', () => {
    const r = rig({ 'pci.0.4.0.device': 'virtio-rnd' });
    const { table } = msixVector(r, 1, 0xfee00000, 0x31, true);
    bringUp(r, { vector: 1 });
    r.drv.offer(r.drv.chain([{ addr: r.drv.alloc(16), len: 16, write: true }]));
    notify(r, 0);
    expect(r.drv.usedIdx()).toBe(1);
    expect(r.irq.msis).toEqual([]);
    expect(r.mrd(table + 0x1000, 8)).toBe(2); // PBA bit 1
    r.mwr(table + 16 + 12, 4, 0);
    expect(r.irq.msis).toEqual([[0xfee00000, 0x31]]);
    expect(r.mrd(table + 0x1000, 8)).toBe(0);
    // Function mask holds messages back the same way.
    const cap = r.caps[0];
    r.cfgWr(cap.off + 2, 0xc000, 2);
    r.drv.setUsedEvent(r.drv.usedIdx()); // event index: interrupt on the next one
    r.drv.offer(r.drv.chain([{ addr: r.drv.alloc(16), len: 16, write: true }]));
    notify(r, 0);
    expect(r.irq.msis).toHaveLength(1);
    r.cfgWr(cap.off + 2, 0x8000, 2);
    expect(r.irq.msis).toHaveLength(2);
  });

  it('refuses FEATURES_OK without VERSION_1 or with features never offered', () => {
    const r = rig({ 'pci.0.4.0.device': 'virtio-rnd' });
    expect(bringUp(r, { features: 0n }).status & VIRTIO_CONFIG_S_FEATURES_OK).toBe(0);
    expect(bringUp(r, { features: (1n << 32n) | (1n << 50n) }).status & VIRTIO_CONFIG_S_FEATURES_OK).toBe(0);
    const ok = bringUp(r, { features: (1n << 32n) | (1n << BigInt(VIRTIO_RING_F_EVENT_IDX)) });
    expect(ok.status & VIRTIO_CONFIG_S_DRIVER_OK).toBeTruthy();
    expect(r.v.device.ackedFeatures).toBe((1n << 32n) | (1n << BigInt(VIRTIO_RING_F_EVENT_IDX)));
  });

  it('INTx through PIRQ and the IOAPIC, ISR read-to-clear deasserts', () => {
    const r = rig({ 'pci.0.4.0.device': 'virtio-rnd', virtio_msix: 'false' });
    bringUp(r);
    const route = r.p.intx[0];
    const isa = r.p.pirq.irqOf(route.pirqPin);
    r.drv.offer(r.drv.chain([{ addr: r.drv.alloc(8), len: 8, write: true }]));
    notify(r, 0);
    expect(r.irq.levels.get(route.ioapicIrq)).toBe(true);
    expect(r.irq.levels.get(isa)).toBe(true);
    expect(r.v.intxState).toBe('asserted');
    expect(r.mrd(r.at(3), 1)).toBe(1);
    expect(r.irq.levels.get(route.ioapicIrq)).toBe(false);
    expect(r.irq.levels.get(isa)).toBe(false);
    expect(r.mrd(r.at(3), 1)).toBe(0);
    // INTxDIS holds it pending; clearing the bit asserts.
    r.cfgWr(0x04, r.cfgRd(0x04, 2) | 0x400, 2);
    r.drv.setUsedEvent(r.drv.usedIdx());
    r.drv.offer(r.drv.chain([{ addr: r.drv.alloc(8), len: 8, write: true }]));
    notify(r, 0);
    expect(r.v.intxState).toBe('pending');
    expect(r.irq.levels.get(route.ioapicIrq)).toBe(false);
    r.cfgWr(0x04, r.cfgRd(0x04, 2) & ~0x400, 2);
    expect(r.irq.levels.get(route.ioapicIrq)).toBe(true);
  });

  it('MSI (with -W) delivers message 0', () => {
    const r = rig({ 'pci.0.4.0.device': 'virtio-rnd', virtio_msix: 'false' });
    const msi = r.caps.find((c) => c.id === 5)!;
    expect(r.cfgRd(msi.off + 2, 2) & 0x80).toBe(0x80); // 64-bit
    r.cfgWr(msi.off + 4, 0xfee01000);
    r.cfgWr(msi.off + 8, 0);
    r.cfgWr(msi.off + 12, 0x4055, 2);
    r.cfgWr(msi.off + 2, 1, 2);
    bringUp(r);
    r.drv.offer(r.drv.chain([{ addr: r.drv.alloc(8), len: 8, write: true }]));
    notify(r, 0);
    expect(r.irq.msis).toEqual([[0xfee01000, 0x4055]]);
    expect(r.v.intxState).toBe('idle');
  });

  it('a queue outside guest RAM puts the device in DEVICE_NEEDS_RESET with a config interrupt', () => {
    const r = rig({ 'pci.0.4.0.device': 'virtio-rnd' });
    msixVector(r, 0, 0xfee00000, 0x22);
    r.common(0x14, 1, 0);
    r.common(0x10, 2, 0); // config vector 0
    expect(r.common(0x10, 2)).toBe(0);
    r.common(0x14, 1, 3);
    r.common(0x08, 4, 1); r.common(0x0c, 4, 1);
    r.common(0x14, 1, 0xb);
    r.common(0x16, 2, 0);
    r.common(0x20, 4, 0x7000_0000); // not RAM
    r.common(0x28, 4, RAM_BASE); r.common(0x30, 4, RAM_BASE + 0x1000);
    r.common(0x1c, 2, 1);
    r.common(0x14, 1, 0xf);
    expect(r.common(0x14, 1) & VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET).toBeTruthy();
    expect(r.irq.msis).toEqual([[0xfee00000, 0x22]]);
    expect(r.v.lastError).toMatch(/queue setup/);
    r.common(0x14, 1, 0);
    expect(r.common(0x14, 1)).toBe(0);
  });

  it('survives hostile register values', () => {
    const r = rig({ 'pci.0.4.0.device': 'virtio-rnd' });
    const base = r.at(1);
    let seed = 12345;
    const rnd = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed; };
    for (let i = 0; i < 4000; i++) {
      const size = [1, 2, 4, 8][rnd() % 4];
      const off = rnd() % 0x4000;
      const v = rnd() * 3;
      expect(() => {
        if (rnd() & 1) r.io.mmioWrite(base + off, new Uint8Array(size).map(() => v & 0xff));
        else r.io.mmioRead(base + off, new Uint8Array(size));
        r.io.portWrite(0x2000 + (rnd() % 32), 1, v & 0xff);
        r.io.portRead(0x2000 + (rnd() % 32), 2);
      }).not.toThrow();
    }
  });
});

describe('virtio-pci: virtio-blk and the legacy interface', () => {
  function image(bytes = 1 << 20): string {
    const f = path.join(os.tmpdir(), `vtpci-${process.pid}-${Math.random().toString(16).slice(2)}.img`);
    fs.writeFileSync(f, Buffer.alloc(bytes));
    tmpFiles.push(f);
    return f;
  }

  it('virtio-blk: capacity in device config, OUT then IN through the modern transport', () => {
    const img = image();
    const r = rig({ 'pci.0.4.0.device': 'virtio-blk', 'pci.0.4.0.path': img });
    expect(r.cfgRd(0)).toBe(0x10011af4);
    expect(r.vcap(4)).toMatchObject({ bar: 4, offset: 0x2000 });
    expect(r.mrd(r.at(4), 4)).toBe(2048); // capacity in 512-byte sectors (low dword)
    msixVector(r, 1, 0xfee00000, 0x50);
    bringUp(r, { vector: 1 });
    const d = r.drv;
    const hdr = d.alloc(16);
    const data = d.alloc(512);
    const st = d.alloc(1);
    const pattern = Uint8Array.from({ length: 512 }, (_, i) => (i * 7) & 0xff);
    d.fill(data, pattern);
    const h = new DataView(new ArrayBuffer(16));
    h.setUint32(0, VIRTIO_BLK_T_OUT, true);
    h.setBigUint64(8, 3n, true);
    d.fill(hdr, new Uint8Array(h.buffer));
    d.offer(d.chain([{ addr: hdr, len: 16 }, { addr: data, len: 512 }, { addr: st, len: 1, write: true }]));
    notify(r, 0);
    expect(d.read(st, 1)[0]).toBe(VIRTIO_BLK_S_OK);
    expect(fs.readFileSync(img).subarray(3 * 512, 4 * 512)).toEqual(Buffer.from(pattern));
    d.fill(data, new Uint8Array(512));
    h.setUint32(0, VIRTIO_BLK_T_IN, true);
    d.fill(hdr, new Uint8Array(h.buffer));
    d.offer(d.chain([{ addr: hdr, len: 16 }, { addr: data, len: 512, write: true }, { addr: st, len: 1, write: true }]));
    notify(r, 0);
    expect(d.usedIdx()).toBe(2);
    expect(d.read(data, 512)).toEqual(pattern);
    expect(r.irq.msis.length).toBeGreaterThanOrEqual(1);
    r.v.close();
  });

  it('virtio-rnd through the legacy I/O BAR (bhyve virtio.c layout)', () => {
    const r = rig({ 'pci.0.4.0.device': 'virtio-rnd', virtio_msix: 'false' });
    const io = 0x2000;
    const { io: bus, drv } = r;
    expect(bus.portRead(io + 0x0c, 2)).toBe(64); // queue size fixed at VTRND_RINGSZ
    bus.portWrite(io + 0x12, 1, 0);
    bus.portWrite(io + 0x12, 1, 3);
    const host = bus.portRead(io + 0x00, 4)!;
    expect(host & (1 << VIRTIO_RING_F_EVENT_IDX)).not.toBe(0);
    bus.portWrite(io + 0x04, 4, 0);
    // Legacy rings: a page-aligned block with the queue's maximum size.
    const d = new FakeDriver(64);
    // Reuse the rig's memory: place the legacy ring inside it.
    const pfnBase = (RAM_BASE + 0x40000) & ~0xfff;
    bus.portWrite(io + 0x0e, 2, 0);
    bus.portWrite(io + 0x08, 4, pfnBase >>> 12);
    expect(bus.portRead(io + 0x08, 4)).toBe(pfnBase >>> 12);
    bus.portWrite(io + 0x12, 1, 7);
    expect(r.v.device.activated).toBe(true);
    // Build one descriptor by hand in the rig's RAM.
    const mem = drv.mem;
    const buf = RAM_BASE + 0x80000;
    mem.writeU64(pfnBase, BigInt(buf));
    mem.writeU32(pfnBase + 8, 32);
    mem.writeU16(pfnBase + 12, 2); // WRITE
    const avail = pfnBase + 16 * 64;
    mem.writeU16(avail + 4, 0);
    mem.writeU16(avail + 2, 1);
    bus.portWrite(io + 0x10, 2, 0);
    const used = Math.ceil((avail + 6 + 2 * 64) / 4096) * 4096;
    expect(mem.readU16(used + 2)).toBe(1);
    expect(mem.readU32(used + 8)).toBe(32);
    // INTx then ISR read-to-clear on the legacy register.
    expect(r.v.intxState).toBe('asserted');
    expect(bus.portRead(io + 0x13, 1)).toBe(1);
    expect(r.v.intxState).toBe('idle');
    expect(d.size).toBe(64);
  });
});
