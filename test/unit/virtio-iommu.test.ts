// virtio-iommu played from the driver's side: requests on queue 0 as
// Linux's viommu driver lays them out (readable request, writable tail),
// fault reports on queue 1, the DMA spaces of the endpoints behind it, and
// an emulated virtio-blk whose I/O works only through mapped IOVAs.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  DMA_READ, DMA_WRITE, DmaFaultError, DmaSpaces, IdentityDmaSpace, TranslatedDmaSpace, pciEndpointId,
  type DmaMapping,
} from '../../src/devices/iommu/dma-space.js';
import {
  IOMMU_CONFIG_SIZE, IOMMU_PROBE_SIZE, MSI_WINDOW_END, MSI_WINDOW_START, VIRTIO_IOMMU_ATTACH_F_BYPASS,
  VIRTIO_IOMMU_FAULT_F_ADDRESS, VIRTIO_IOMMU_FAULT_F_READ, VIRTIO_IOMMU_FAULT_F_WRITE, VIRTIO_IOMMU_FAULT_R_DOMAIN,
  VIRTIO_IOMMU_FAULT_R_MAPPING, VIRTIO_IOMMU_F_BYPASS, VIRTIO_IOMMU_F_BYPASS_CONFIG, VIRTIO_IOMMU_F_DOMAIN_RANGE,
  VIRTIO_IOMMU_F_INPUT_RANGE, VIRTIO_IOMMU_F_MAP_UNMAP, VIRTIO_IOMMU_F_MMIO, VIRTIO_IOMMU_F_PROBE,
  VIRTIO_IOMMU_MAP_F_MMIO, VIRTIO_IOMMU_MAP_F_READ, VIRTIO_IOMMU_MAP_F_WRITE, VIRTIO_IOMMU_PROBE_T_RESV_MEM,
  VIRTIO_IOMMU_RESV_MEM_T_MSI, VIRTIO_IOMMU_S_INVAL, VIRTIO_IOMMU_S_NOENT, VIRTIO_IOMMU_S_OK, VIRTIO_IOMMU_S_RANGE,
  VIRTIO_IOMMU_T_ATTACH, VIRTIO_IOMMU_T_DETACH, VIRTIO_IOMMU_T_MAP, VIRTIO_IOMMU_T_PROBE, VIRTIO_IOMMU_T_UNMAP,
  VirtioIommu,
} from '../../src/devices/iommu/virtio-iommu.js';
import {
  VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_F_VERSION_1, featureBit, hasFeature,
} from '../../src/devices/virtio/virtio-constants.js';
import { createQueues, offeredFeatures, type VirtioActivation } from '../../src/devices/virtio/virtio-device.js';
import { VirtioBlock } from '../../src/devices/virtio/virtio-blk.js';
import { activateQueues } from './virtio-queues.js';
import { FakeDriver, RAM_BASE } from './virtio-driver.js';

const EP_BLK = pciEndpointId(0, 4, 0); // 0x20
const EP_NET = pciEndpointId(0, 5, 0); // 0x28
const RAM = [{ gpa: RAM_BASE, length: 1 << 20 }];

const ALL = offeredFeatures(new VirtioIommu([]));

/** The driver of one virtio-iommu: request queue and event queue, each in
 * its own fake RAM. */
class IommuDriver {
  readonly req = new FakeDriver(64, 1 << 20);
  readonly evq = new FakeDriver(16, 1 << 16);
  readonly spaces: TranslatedDmaSpace[];
  readonly dev: VirtioIommu;
  readonly interrupts: number[];
  readonly resets: string[];
  private used = 0;
  private evUsed = 0;

  constructor(opts: { features?: bigint; bypass?: boolean; endpoints?: number[] } = {}) {
    this.spaces = (opts.endpoints ?? [EP_BLK, EP_NET]).map((ep) => new TranslatedDmaSpace(ep, RAM));
    this.dev = new VirtioIommu(this.spaces, { bypass: opts.bypass });
    const a = activateQueues(this.dev, [this.req, this.evq], opts.features ?? ALL);
    this.interrupts = a.interrupts;
    this.resets = a.resets;
  }

  space(ep: number): TranslatedDmaSpace { return this.spaces.find((s) => s.endpoint === ep)!; }

  /** Sends one request: `body` readable, `writable` bytes writable (tail
   * included); returns the used length, status and the writable bytes. */
  send(body: Uint8Array, writable = 4): { len: number; status: number; out: Uint8Array } {
    const r = this.req.alloc(body.length || 1);
    this.req.fill(r, body);
    const w = this.req.alloc(writable || 1);
    this.req.fill(w, new Uint8Array(writable).fill(0xee));
    const bufs = [];
    if (body.length) bufs.push({ addr: r, len: body.length });
    if (writable) bufs.push({ addr: w, len: writable, write: true });
    this.req.offer(this.req.chain(bufs));
    this.dev.queueNotify(0);
    expect(this.req.usedIdx()).toBe(++this.used & 0xffff);
    const len = this.req.usedElem(this.used - 1).len;
    const out = this.req.read(w, writable);
    return { len, status: out[writable - 4], out };
  }

  attach(domain: number, ep: number, flags = 0, reserved = 0): number {
    const b = new DataView(new ArrayBuffer(20));
    b.setUint8(0, VIRTIO_IOMMU_T_ATTACH);
    b.setUint32(4, domain, true); b.setUint32(8, ep, true); b.setUint32(12, flags, true); b.setUint32(16, reserved, true);
    return this.send(new Uint8Array(b.buffer)).status;
  }

  detach(domain: number, ep: number): number {
    const b = new DataView(new ArrayBuffer(20));
    b.setUint8(0, VIRTIO_IOMMU_T_DETACH);
    b.setUint32(4, domain, true); b.setUint32(8, ep, true);
    return this.send(new Uint8Array(b.buffer)).status;
  }

  map(domain: number, start: number | bigint, end: number | bigint, phys: number | bigint, flags = VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE): number {
    const b = new DataView(new ArrayBuffer(36));
    b.setUint8(0, VIRTIO_IOMMU_T_MAP);
    b.setUint32(4, domain, true);
    b.setBigUint64(8, BigInt(start), true); b.setBigUint64(16, BigInt(end), true); b.setBigUint64(24, BigInt(phys), true);
    b.setUint32(32, flags, true);
    return this.send(new Uint8Array(b.buffer)).status;
  }

  unmap(domain: number, start: number | bigint, end: number | bigint): number {
    const b = new DataView(new ArrayBuffer(28));
    b.setUint8(0, VIRTIO_IOMMU_T_UNMAP);
    b.setUint32(4, domain, true);
    b.setBigUint64(8, BigInt(start), true); b.setBigUint64(16, BigInt(end), true);
    return this.send(new Uint8Array(b.buffer)).status;
  }

  probe(ep: number, props = IOMMU_PROBE_SIZE) {
    const b = new DataView(new ArrayBuffer(72));
    b.setUint8(0, VIRTIO_IOMMU_T_PROBE);
    b.setUint32(4, ep, true);
    return this.send(new Uint8Array(b.buffer), props + 4);
  }

  /** Gives the device `n` event buffers of `size` bytes. */
  addEventBuffers(n: number, size = 24): number[] {
    const addrs: number[] = [];
    for (let i = 0; i < n; i++) {
      const a = this.evq.alloc(size);
      addrs.push(a);
      this.evq.offer(this.evq.chain([{ addr: a, len: size, write: true }]));
    }
    this.dev.queueNotify(1);
    return addrs;
  }

  /** Fault reports the device returned since the last call. */
  events(addrs: number[]): Array<{ reason: number; flags: number; endpoint: number; address: bigint; len: number }> {
    const out = [];
    while (this.evUsed !== this.evq.usedIdx()) {
      const e = this.evq.usedElem(this.evUsed++);
      const at = addrs[e.id];
      const v = new DataView(this.evq.read(at, 24).buffer);
      out.push({ reason: v.getUint8(0), flags: v.getUint32(4, true), endpoint: v.getUint32(8, true), address: v.getBigUint64(16, true), len: e.len });
    }
    return out;
  }
}

describe('virtio-iommu: configuration and features', () => {
  it('offers the spec 1.2 features (BYPASS_CONFIG, not the superseded BYPASS) and describes its limits', () => {
    const dev = new VirtioIommu([]);
    expect(dev.deviceType).toBe(23);
    const f = dev.deviceFeatures;
    for (const bit of [VIRTIO_IOMMU_F_INPUT_RANGE, VIRTIO_IOMMU_F_DOMAIN_RANGE, VIRTIO_IOMMU_F_MAP_UNMAP,
      VIRTIO_IOMMU_F_PROBE, VIRTIO_IOMMU_F_MMIO, VIRTIO_IOMMU_F_BYPASS_CONFIG, 32]) {
      expect(hasFeature(f, bit), `bit ${bit}`).toBe(true);
    }
    expect(hasFeature(f, VIRTIO_IOMMU_F_BYPASS)).toBe(false);
    const c = new Uint8Array(IOMMU_CONFIG_SIZE);
    dev.readConfig(0, c);
    const v = new DataView(c.buffer);
    expect(v.getBigUint64(0, true)).toBe(0xfffffffffffff000n);
    expect(v.getBigUint64(8, true)).toBe(0n);
    expect(v.getBigUint64(16, true)).toBe((1n << 48n) - 1n);
    expect([v.getUint32(24, true), v.getUint32(28, true)]).toEqual([0, 0xffffffff]);
    expect(v.getUint32(32, true)).toBe(IOMMU_PROBE_SIZE);
    expect(c[36]).toBe(0); // bypass off by default
  });

  it('bypass off: endpoints are blocked from the start; bypass=true lets them through untranslated', () => {
    const off = new IommuDriver();
    expect(() => off.space(EP_BLK).translate(RAM_BASE, 16, DMA_READ)).toThrow(DmaFaultError);
    const on = new IommuDriver({ bypass: true });
    expect(on.space(EP_BLK).identity).toBe(true);
    expect(on.space(EP_BLK).translate(0x12345, 16, DMA_WRITE)).toEqual([{ gpa: 0x12345, length: 16 }]);
  });

  it('the driver turns bypass on and off through the config field only after negotiating BYPASS_CONFIG', () => {
    const noCfg = new IommuDriver({ features: ALL & ~featureBit(VIRTIO_IOMMU_F_BYPASS_CONFIG) });
    noCfg.dev.writeConfig(36, Uint8Array.of(1));
    expect(noCfg.dev.bypass).toBe(false);
    const d = new IommuDriver();
    d.dev.writeConfig(36, Uint8Array.of(1));
    expect(d.dev.bypass).toBe(true);
    expect(d.space(EP_NET).identity).toBe(true);
    d.dev.writeConfig(36, Uint8Array.of(0xfe)); // bits 1-7 ignored
    expect(d.dev.bypass).toBe(false);
    expect(d.space(EP_NET).identity).toBe(false);
  });
});

describe('virtio-iommu: requests', () => {
  it('attach, map, translate, unmap, detach', () => {
    const d = new IommuDriver();
    expect(d.attach(1, EP_BLK)).toBe(VIRTIO_IOMMU_S_OK);
    expect(d.map(1, 0x100000, 0x101fff, 0x20000)).toBe(VIRTIO_IOMMU_S_OK);
    const s = d.space(EP_BLK);
    expect(s.translate(0x100ff0, 0x20, DMA_READ)).toEqual([{ gpa: 0x20ff0, length: 0x20 }]);
    expect(d.unmap(1, 0x100000, 0x101fff)).toBe(VIRTIO_IOMMU_S_OK);
    expect(() => s.translate(0x100ff0, 0x20, DMA_READ)).toThrow(/not mapped/);
    expect(d.detach(1, EP_BLK)).toBe(VIRTIO_IOMMU_S_OK);
    expect(d.dev.domainCount).toBe(0);
    // The domain ceased to exist with its last endpoint.
    expect(d.map(1, 0x100000, 0x100fff, 0x20000)).toBe(VIRTIO_IOMMU_S_NOENT);
  });

  it('bad endpoint and domain ids, reserved fields and flags get the spec status codes', () => {
    const d = new IommuDriver();
    expect(d.attach(1, 0x1234)).toBe(VIRTIO_IOMMU_S_NOENT);
    expect(d.attach(1, EP_BLK, 0, 1)).toBe(VIRTIO_IOMMU_S_INVAL); // reserved != 0
    expect(d.attach(1, EP_BLK, 0x2)).toBe(VIRTIO_IOMMU_S_INVAL); // unknown flag
    expect(d.detach(1, 0x1234)).toBe(VIRTIO_IOMMU_S_NOENT);
    expect(d.detach(7, EP_BLK)).toBe(VIRTIO_IOMMU_S_INVAL); // no such domain
    expect(d.attach(1, EP_BLK)).toBe(VIRTIO_IOMMU_S_OK);
    expect(d.detach(2, EP_BLK)).toBe(VIRTIO_IOMMU_S_INVAL); // not attached there
    expect(d.map(9, 0, 0xfff, 0)).toBe(VIRTIO_IOMMU_S_NOENT);
    expect(d.unmap(9, 0, 0xfff)).toBe(VIRTIO_IOMMU_S_NOENT);
    expect(d.map(1, 0, 0xfff, 0, 0x8)).toBe(VIRTIO_IOMMU_S_INVAL); // unknown map flag
    expect(d.map(1, 0x1000, 0x0fff, 0)).toBe(VIRTIO_IOMMU_S_INVAL); // end before start
    expect(d.map(1, 0x800, 0x17ff, 0)).toBe(VIRTIO_IOMMU_S_RANGE); // virt_start unaligned
    expect(d.map(1, 0x1000, 0x1ffe, 0)).toBe(VIRTIO_IOMMU_S_RANGE); // virt_end + 1 unaligned
    expect(d.map(1, 0x1000, 0x1fff, 0x10)).toBe(VIRTIO_IOMMU_S_RANGE); // phys unaligned
    expect(d.map(1, 1n << 48n, (1n << 48n) + 0xfffn, 0)).toBe(VIRTIO_IOMMU_S_RANGE); // beyond input_range
    expect(d.map(1, 0x1000, 0x1fff, 1n << 60n)).toBe(VIRTIO_IOMMU_S_RANGE); // beyond guest-physical space
    expect(d.map(1, 0xffffffffffff0000n, 0xffffffffffffffffn, 0)).toBe(VIRTIO_IOMMU_S_RANGE);
    expect(d.map(1, MSI_WINDOW_START - 0x1000, MSI_WINDOW_START + 0xfff, 0)).toBe(VIRTIO_IOMMU_S_RANGE); // reserved MSI
    expect(d.dev.mappingCount).toBe(0);
  });

  it('MMIO mappings need VIRTIO_IOMMU_F_MMIO', () => {
    const without = new IommuDriver({ features: ALL & ~featureBit(VIRTIO_IOMMU_F_MMIO) });
    without.attach(1, EP_BLK);
    expect(without.map(1, 0x1000, 0x1fff, 0xc0000000, VIRTIO_IOMMU_MAP_F_MMIO | VIRTIO_IOMMU_MAP_F_WRITE)).toBe(VIRTIO_IOMMU_S_INVAL);
    const d = new IommuDriver();
    d.attach(1, EP_BLK);
    expect(d.map(1, 0x1000, 0x1fff, 0xc0000000, VIRTIO_IOMMU_MAP_F_MMIO | VIRTIO_IOMMU_MAP_F_WRITE)).toBe(VIRTIO_IOMMU_S_OK);
  });

  it('an overlapping MAP is refused and changes nothing', () => {
    const d = new IommuDriver();
    d.attach(1, EP_BLK);
    expect(d.map(1, 0x10000, 0x13fff, 0x40000)).toBe(VIRTIO_IOMMU_S_OK);
    expect(d.map(1, 0x13000, 0x14fff, 0x80000)).toBe(VIRTIO_IOMMU_S_INVAL);
    expect(d.map(1, 0x0f000, 0x10fff, 0x80000)).toBe(VIRTIO_IOMMU_S_INVAL);
    expect(d.map(1, 0x11000, 0x11fff, 0x80000)).toBe(VIRTIO_IOMMU_S_INVAL);
    expect(d.map(1, 0x00000, 0x3ffff, 0x80000)).toBe(VIRTIO_IOMMU_S_INVAL);
    expect(d.map(1, 0x14000, 0x14fff, 0x80000)).toBe(VIRTIO_IOMMU_S_OK); // adjacent is fine
    expect(d.dev.mappingCount).toBe(2);
    expect(d.space(EP_BLK).translate(0x13ff0, 0x20, DMA_READ)).toEqual([
      { gpa: 0x43ff0, length: 0x10 }, { gpa: 0x80000, length: 0x10 },
    ]);
  });

  // The seven examples of the spec's UNMAP section (5.13.6.6), in pages.
  const P = 0x1000;
  const spec: Array<[string, Array<[number, number]>, [number, number], number, number]> = [
    ['(1) unmap of nothing succeeds', [], [0, 4], VIRTIO_IOMMU_S_OK, 0],
    ['(2) exact unmap', [[0, 9]], [0, 9], VIRTIO_IOMMU_S_OK, 0],
    ['(3) two mappings at once', [[0, 4], [5, 9]], [0, 9], VIRTIO_IOMMU_S_OK, 0],
    ['(4) a split fails and removes nothing', [[0, 9]], [0, 4], VIRTIO_IOMMU_S_RANGE, 1],
    ['(5) the first of two', [[0, 4], [5, 9]], [0, 4], VIRTIO_IOMMU_S_OK, 1],
    ['(6) spilling over unmapped space', [[0, 4]], [0, 9], VIRTIO_IOMMU_S_OK, 0],
    ['(7) with a hole between', [[0, 4], [10, 14]], [0, 14], VIRTIO_IOMMU_S_OK, 0],
  ];
  for (const [name, maps, [a, b], status, left] of spec) {
    it(`UNMAP ${name}`, () => {
      const d = new IommuDriver();
      d.attach(3, EP_NET);
      for (const [s, e] of maps) expect(d.map(3, s * P, (e + 1) * P - 1, 0x100000 + s * P)).toBe(VIRTIO_IOMMU_S_OK);
      expect(d.unmap(3, a * P, (b + 1) * P - 1)).toBe(status);
      expect(d.dev.mappingCount).toBe(left);
    });
  }

  it('a split in the middle of several mappings removes none of them', () => {
    const d = new IommuDriver();
    d.attach(3, EP_NET);
    d.map(3, 0x0000, 0x0fff, 0x10000); d.map(3, 0x1000, 0x2fff, 0x20000); d.map(3, 0x3000, 0x3fff, 0x30000);
    expect(d.unmap(3, 0x0000, 0x1fff)).toBe(VIRTIO_IOMMU_S_RANGE);
    expect(d.dev.mappingCount).toBe(3);
    expect(d.unmap(3, 0x0000, 0xffffffffffffffffn)).toBe(VIRTIO_IOMMU_S_OK);
    expect(d.dev.mappingCount).toBe(0);
  });

  it('PROBE returns the MSI window as a RESV_MEM MSI region and zero fill', () => {
    const d = new IommuDriver();
    const r = d.probe(EP_BLK);
    expect(r.status).toBe(VIRTIO_IOMMU_S_OK);
    expect(r.len).toBe(IOMMU_PROBE_SIZE + 4);
    const v = new DataView(r.out.buffer);
    expect(v.getUint16(0, true)).toBe(VIRTIO_IOMMU_PROBE_T_RESV_MEM);
    expect(v.getUint16(2, true)).toBe(20);
    expect(r.out[4]).toBe(VIRTIO_IOMMU_RESV_MEM_T_MSI);
    expect(v.getBigUint64(8, true)).toBe(BigInt(MSI_WINDOW_START));
    expect(v.getBigUint64(16, true)).toBe(BigInt(MSI_WINDOW_END));
    expect(r.out.subarray(24, IOMMU_PROBE_SIZE).every((x) => x === 0)).toBe(true); // then an empty property
    expect(d.probe(0x999).status).toBe(VIRTIO_IOMMU_S_NOENT);
    const short = d.probe(EP_BLK, 64);
    expect(short.status).toBe(VIRTIO_IOMMU_S_INVAL);
    expect(short.out.subarray(0, 64).every((x) => x === 0xee)).toBe(true); // no property written
  });

  it('PROBE without VIRTIO_IOMMU_F_PROBE and unknown types come back unwritten', () => {
    const d = new IommuDriver({ features: ALL & ~featureBit(VIRTIO_IOMMU_F_PROBE) });
    const p = d.probe(EP_BLK);
    expect(p.len).toBe(0);
    expect(p.out.every((x) => x === 0xee)).toBe(true);
    const u = d.send(Uint8Array.of(0x42, 0, 0, 0, 1, 2, 3, 4), 4);
    expect(u.len).toBe(0);
    expect(u.out.every((x) => x === 0xee)).toBe(true);
  });

  it('hostile framing: no tail, no head, a request shorter than its type; nothing breaks', () => {
    const d = new IommuDriver();
    expect(d.send(Uint8Array.of(VIRTIO_IOMMU_T_ATTACH, 0, 0, 0), 0).len).toBe(0); // no writable part
    expect(d.send(Uint8Array.of(VIRTIO_IOMMU_T_ATTACH, 0, 0, 0), 3).len).toBe(0); // tail does not fit
    expect(d.send(new Uint8Array(0), 4).len).toBe(0); // no head
    const r = d.send(Uint8Array.of(VIRTIO_IOMMU_T_MAP, 0, 0, 0, 1, 0, 0, 0), 4);
    expect([r.len, r.status]).toEqual([4, VIRTIO_IOMMU_S_INVAL]);
    expect(d.resets).toEqual([]);
    // Still serving.
    expect(d.attach(1, EP_BLK)).toBe(VIRTIO_IOMMU_S_OK);
  });

  it('re-attaching moves an endpoint; a bypass domain takes no mappings', () => {
    const d = new IommuDriver();
    d.attach(1, EP_BLK);
    d.map(1, 0x1000, 0x1fff, 0x30000);
    expect(d.attach(2, EP_BLK)).toBe(VIRTIO_IOMMU_S_OK);
    expect(d.dev.domainCount).toBe(1); // domain 1 had no other endpoint
    expect(() => d.space(EP_BLK).translate(0x1000, 4, DMA_READ)).toThrow(DmaFaultError);
    expect(d.attach(5, EP_NET, VIRTIO_IOMMU_ATTACH_F_BYPASS)).toBe(VIRTIO_IOMMU_S_OK);
    expect(d.space(EP_NET).identity).toBe(true);
    expect(d.map(5, 0x1000, 0x1fff, 0x30000)).toBe(VIRTIO_IOMMU_S_INVAL);
    expect(d.unmap(5, 0x1000, 0x1fff)).toBe(VIRTIO_IOMMU_S_INVAL);
    expect(d.attach(5, EP_BLK)).toBe(VIRTIO_IOMMU_S_INVAL); // bypass flag inconsistent with the domain
    // Without BYPASS_CONFIG negotiated the flag is unknown.
    const old = new IommuDriver({ features: ALL & ~featureBit(VIRTIO_IOMMU_F_BYPASS_CONFIG) });
    expect(old.attach(5, EP_NET, VIRTIO_IOMMU_ATTACH_F_BYPASS)).toBe(VIRTIO_IOMMU_S_INVAL);
  });

  it('two endpoints share a domain; reset detaches everything', () => {
    const d = new IommuDriver();
    d.attach(1, EP_BLK); d.attach(1, EP_NET);
    d.map(1, 0x1000, 0x1fff, 0x30000);
    expect(d.space(EP_NET).translate(0x1000, 8, DMA_WRITE)).toEqual([{ gpa: 0x30000, length: 8 }]);
    expect(d.detach(1, EP_BLK)).toBe(VIRTIO_IOMMU_S_OK);
    expect(d.space(EP_NET).translate(0x1000, 8, DMA_WRITE)).toEqual([{ gpa: 0x30000, length: 8 }]);
    d.dev.reset();
    expect(d.dev.domainCount).toBe(0);
    expect(d.space(EP_NET).state).toBe('blocked');
  });
});

describe('virtio-iommu: faults', () => {
  it('refused accesses are reported on the event queue with reason, direction, endpoint and address', () => {
    const d = new IommuDriver();
    const bufs = d.addEventBuffers(4);
    d.attach(1, EP_BLK);
    d.map(1, 0x8000, 0x8fff, 0x30000, VIRTIO_IOMMU_MAP_F_READ);
    const blk = d.space(EP_BLK);
    expect(() => blk.translate(0x8800, 0x10, DMA_WRITE)).toThrow(/does not allow write/);
    expect(() => blk.translate(0x8ff8, 0x10, DMA_READ)).toThrow(/0x9000 is not mapped/);
    expect(() => d.space(EP_NET).translate(0x4000, 4, DMA_READ)).toThrow(/not attached/);
    const ev = d.events(bufs);
    expect(ev).toEqual([
      { reason: VIRTIO_IOMMU_FAULT_R_MAPPING, flags: VIRTIO_IOMMU_FAULT_F_WRITE | VIRTIO_IOMMU_FAULT_F_ADDRESS, endpoint: EP_BLK, address: 0x8800n, len: 24 },
      { reason: VIRTIO_IOMMU_FAULT_R_MAPPING, flags: VIRTIO_IOMMU_FAULT_F_READ | VIRTIO_IOMMU_FAULT_F_ADDRESS, endpoint: EP_BLK, address: 0x9000n, len: 24 },
      { reason: VIRTIO_IOMMU_FAULT_R_DOMAIN, flags: VIRTIO_IOMMU_FAULT_F_READ | VIRTIO_IOMMU_FAULT_F_ADDRESS, endpoint: EP_NET, address: 0x4000n, len: 24 },
    ]);
    expect(d.interrupts.filter((q) => q === 1).length).toBeGreaterThan(0);
  });

  it('faults wait for event buffers (a bounded number), too-small buffers come back empty', () => {
    const d = new IommuDriver();
    for (let i = 0; i < 100; i++) expect(() => d.space(EP_BLK).translate(i * 0x1000, 4, DMA_READ)).toThrow(DmaFaultError);
    expect(d.dev.pendingFaultCount).toBe(64);
    expect(d.dev.counts.faultsDropped).toBe(36);
    const small = d.addEventBuffers(1, 8);
    expect(d.events(small)[0].len).toBe(0);
    const bufs = [...small, ...d.addEventBuffers(3)];
    const ev = d.events(bufs);
    expect(ev.map((e) => e.address)).toEqual([0n, 0x1000n, 0x2000n]);
    expect(d.dev.pendingFaultCount).toBe(61);
  });
});

describe('DMA spaces: listeners (what passthrough mirrors into VFIO)', () => {
  it('replays and reports maps, unmaps and mode switches', () => {
    const d = new IommuDriver({ bypass: true });
    const log: string[] = [];
    const l = { map: (m: DmaMapping) => log.push(`map ${m.iova.toString(16)}->${m.gpa.toString(16)}+${m.length.toString(16)} ${m.access}`),
      unmap: (i: number, n: number) => log.push(`unmap ${i.toString(16)}+${n.toString(16)}`) };
    const stop = d.space(EP_BLK).listen(l);
    expect(log).toEqual(['map 10000->10000+100000 3']); // bypass: guest RAM at IOVA = GPA
    log.length = 0;
    d.attach(1, EP_BLK);
    d.map(1, 0x1000, 0x2fff, 0x40000, VIRTIO_IOMMU_MAP_F_READ);
    d.unmap(1, 0x1000, 0x2fff);
    d.detach(1, EP_BLK);
    expect(log).toEqual(['unmap 10000+100000', 'map 1000->40000+2000 1', 'unmap 1000+2000', 'map 10000->10000+100000 3']);
    stop();
    d.attach(1, EP_BLK);
    expect(log).toHaveLength(4);
  });

  it('the identity space of a function not behind the IOMMU is guest RAM, and DmaSpaces hands out one per endpoint', () => {
    const spaces = new DmaSpaces(RAM, [EP_BLK]);
    expect(spaces.forEndpoint(EP_BLK)).toBeInstanceOf(TranslatedDmaSpace);
    const id = spaces.forEndpoint(EP_NET);
    expect(id).toBeInstanceOf(IdentityDmaSpace);
    expect(id.identity).toBe(true);
    expect(spaces.forEndpoint(EP_NET)).toBe(id);
    expect(id.translate(0x1234, 10, DMA_READ)).toEqual([{ gpa: 0x1234, length: 10 }]);
    expect(spaces.translatedEndpoints().map((s) => s.endpoint)).toEqual([EP_BLK]);
  });
});

// ---- an emulated virtio-blk behind the IOMMU ----

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'viommu-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** IOVAs the blk driver uses: far from the guest physical addresses. */
const IOVA_OFF = 0x7f000000;

function blkBehindIommu() {
  const img = path.join(tmp, `d${Math.random().toString(36).slice(2)}.img`);
  const sector = new Uint8Array(512).map((_, i) => (i * 7 + 3) & 0xff);
  fs.writeFileSync(img, Buffer.concat([Buffer.from(sector), Buffer.alloc((1 << 20) - 512)]));
  const iommu = new IommuDriver();
  const blk = VirtioBlock.open({ path: img });
  const d = new FakeDriver(16, 1 << 20); // the blk's RAM: GPAs RAM_BASE..
  const features = offeredFeatures(blk) | featureBit(VIRTIO_F_VERSION_1);
  blk.ackFeatures(features);
  const lay = d.layout;
  const ringIova = { size: lay.size, desc: lay.desc + IOVA_OFF, avail: lay.avail + IOVA_OFF, used: lay.used + IOVA_OFF };
  const resets: string[] = [];
  const interrupts: number[] = [];
  const space = iommu.space(EP_BLK);
  const activate = (): void => {
    const queues = createQueues(d.mem, [ringIova], blk.ackedFeatures, blk.queueMaxSizes, space);
    const act: VirtioActivation = {
      mem: d.mem, queues, interrupt: { queue: (i) => interrupts.push(i), config: () => undefined },
      needsReset: (r) => resets.push(r),
    };
    blk.activate(act);
  };
  return { iommu, blk, d, activate, resets, interrupts, sector, img, space };
}

/** A read of sector 0 into `buf` (GPA), addressed by IOVA. */
function readSector0(d: FakeDriver, hdr: number, buf: number, status: number): void {
  const h = new DataView(new ArrayBuffer(16));
  h.setUint32(0, VIRTIO_BLK_T_IN, true);
  d.fill(hdr, new Uint8Array(h.buffer));
  d.fill(status, Uint8Array.of(0xff));
  d.offer(d.chain([
    { addr: hdr + IOVA_OFF, len: 16 }, { addr: buf + IOVA_OFF, len: 512, write: true }, { addr: status + IOVA_OFF, len: 1, write: true },
  ]));
}

describe('virtio-blk behind the virtio-iommu', () => {
  it('queues cannot even start while the rings are not mapped (fault, no access)', () => {
    const t = blkBehindIommu();
    const ev = t.iommu.addEventBuffers(2);
    t.iommu.attach(1, EP_BLK);
    expect(() => t.activate()).toThrow(/descriptor table.*not mapped/);
    expect(t.iommu.events(ev)[0]).toMatchObject({ reason: VIRTIO_IOMMU_FAULT_R_MAPPING, endpoint: EP_BLK, address: BigInt(t.d.layout.desc + IOVA_OFF) });
    t.blk.close();
  });

  it('I/O works through mapped IOVAs; an unmapped buffer is refused, reported, and never written', () => {
    const t = blkBehindIommu();
    const ev = t.iommu.addEventBuffers(4);
    const { d, iommu } = t;
    expect(iommu.attach(1, EP_BLK)).toBe(VIRTIO_IOMMU_S_OK);
    // Rings: one mapping over the ring pages.
    const ringStart = d.layout.desc & ~0xfff;
    const ringEnd = (d.layout.used + 6 + 8 * 16 + 0xfff) & ~0xfff;
    expect(iommu.map(1, ringStart + IOVA_OFF, ringEnd + IOVA_OFF - 1, ringStart)).toBe(VIRTIO_IOMMU_S_OK);
    t.activate();
    // Header + status page read/write, data page write.
    const hdr = d.alloc(0x1000, 0x1000); const status = hdr + 16;
    const buf = d.alloc(0x1000, 0x1000);
    expect(iommu.map(1, hdr + IOVA_OFF, hdr + IOVA_OFF + 0xfff, hdr)).toBe(VIRTIO_IOMMU_S_OK);
    expect(iommu.map(1, buf + IOVA_OFF, buf + IOVA_OFF + 0xfff, buf, VIRTIO_IOMMU_MAP_F_WRITE)).toBe(VIRTIO_IOMMU_S_OK);
    readSector0(d, hdr, buf, status);
    t.blk.queueNotify(0);
    expect(d.usedIdx()).toBe(1);
    expect(d.read(status, 1)[0]).toBe(VIRTIO_BLK_S_OK);
    expect(d.read(buf, 512)).toEqual(t.sector);
    expect(t.resets).toEqual([]);

    // Unmap the data buffer: the next read must not touch it.
    expect(iommu.unmap(1, buf + IOVA_OFF, buf + IOVA_OFF + 0xfff)).toBe(VIRTIO_IOMMU_S_OK);
    d.fill(buf, new Uint8Array(512).fill(0x5a));
    readSector0(d, hdr, buf, status);
    t.blk.queueNotify(0);
    expect(t.resets).toHaveLength(1);
    expect(t.resets[0]).toMatch(/IOMMU fault.*write at IOVA/);
    expect(d.read(buf, 512).every((x) => x === 0x5a)).toBe(true);
    expect(d.read(status, 1)[0]).toBe(0xff); // no status written either
    expect(d.usedIdx()).toBe(1);
    expect(iommu.events(ev)).toEqual([
      { reason: VIRTIO_IOMMU_FAULT_R_MAPPING, flags: VIRTIO_IOMMU_FAULT_F_WRITE | VIRTIO_IOMMU_FAULT_F_ADDRESS, endpoint: EP_BLK, address: BigInt(buf + IOVA_OFF), len: 24 },
    ]);
    t.blk.close();
  });

  it('a write from a buffer mapped write-only is refused (the device would read it)', () => {
    const t = blkBehindIommu();
    const { d, iommu } = t;
    iommu.attach(1, EP_BLK);
    const ringStart = d.layout.desc & ~0xfff;
    const ringEnd = (d.layout.used + 6 + 8 * 16 + 0xfff) & ~0xfff;
    iommu.map(1, ringStart + IOVA_OFF, ringEnd + IOVA_OFF - 1, ringStart);
    t.activate();
    const hdr = d.alloc(0x1000, 0x1000); const status = hdr + 16;
    const buf = d.alloc(0x1000, 0x1000);
    iommu.map(1, hdr + IOVA_OFF, hdr + IOVA_OFF + 0xfff, hdr);
    iommu.map(1, buf + IOVA_OFF, buf + IOVA_OFF + 0xfff, buf, VIRTIO_IOMMU_MAP_F_WRITE);
    const h = new DataView(new ArrayBuffer(16));
    h.setUint32(0, VIRTIO_BLK_T_OUT, true);
    d.fill(hdr, new Uint8Array(h.buffer));
    d.offer(d.chain([{ addr: hdr + IOVA_OFF, len: 16 }, { addr: buf + IOVA_OFF, len: 512 }, { addr: status + IOVA_OFF, len: 1, write: true }]));
    t.blk.queueNotify(0);
    expect(t.resets[0]).toMatch(/does not allow read/);
    expect(fs.readFileSync(t.img).subarray(0, 512)).toEqual(Buffer.from(t.sector));
    t.blk.close();
  });

  it('unmapping the rings while the device runs stops it at the next access', () => {
    const t = blkBehindIommu();
    const { d, iommu } = t;
    iommu.attach(1, EP_BLK);
    const ringStart = d.layout.desc & ~0xfff;
    const ringEnd = (d.layout.used + 6 + 8 * 16 + 0xfff) & ~0xfff;
    iommu.map(1, ringStart + IOVA_OFF, ringEnd + IOVA_OFF - 1, ringStart);
    t.activate();
    expect(iommu.unmap(1, ringStart + IOVA_OFF, ringEnd + IOVA_OFF - 1)).toBe(VIRTIO_IOMMU_S_OK);
    const usedBefore = d.read(d.layout.used, 8);
    d.offer(0);
    t.blk.queueNotify(0);
    expect(t.resets[0]).toMatch(/not mapped/);
    expect(d.read(d.layout.used, 8)).toEqual(usedBefore);
    t.blk.close();
  });
});
