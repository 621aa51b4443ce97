// The ACPI VIOT table for the virtio-iommu, field by field against ACPI
// 6.5 5.2.32 (the layout Linux's drivers/acpi/viot.c reads and QEMU's
// build_viot writes), and the platform that produces it from
// pci.B.S.F.iommu keys. (Debian's iasl 20200925 predates VIOT: it checks
// the header and checksum and dumps the body raw.)

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildPlatform } from '../../src/devices/platform.js';
import { acpiPlatform, buildAcpiForFwCfg, buildAcpiInMemory } from '../../src/firmware/acpi/index.js';
import { buildViot, endpointRuns } from '../../src/firmware/acpi/viot.js';
import { computeLayout } from '../../src/sys/memory-map.js';
import { TranslatedDmaSpace } from '../../src/devices/iommu/dma-space.js';
import { VirtioPci } from '../../src/devices/virtio/virtio-pci.js';
import { VIRTIO_F_ACCESS_PLATFORM, hasFeature } from '../../src/devices/virtio/virtio-constants.js';
import { fake } from '../support/fake-device.js';
import { isUserError } from '../../src/user-error.js';
import '../support/device-models.js'; // the device models buildPlatform needs

interface Node { type: number; length: number; fields: DataView; offset: number }

function parseViot(b: Uint8Array): { count: number; nodes: Node[] } {
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  expect(String.fromCharCode(...b.subarray(0, 4))).toBe('VIOT');
  expect(v.getUint32(4, true)).toBe(b.length);
  expect(b.reduce((a, x) => (a + x) & 0xff, 0)).toBe(0);
  const count = v.getUint16(36, true);
  let off = v.getUint16(38, true);
  const nodes: Node[] = [];
  for (let i = 0; i < count; i++) {
    const length = v.getUint16(off + 2, true);
    nodes.push({ type: b[off], length, fields: new DataView(b.buffer, b.byteOffset + off, length), offset: off });
    off += length;
  }
  expect(off).toBe(b.length);
  return { count, nodes };
}

const LAYOUT = computeLayout(256 * 1024 * 1024);
const dirs: string[] = [];
afterAll(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

describe('VIOT', () => {
  it('folds consecutive requester ids into ranges', () => {
    expect(endpointRuns([0x28, 0x20, 0x21, 0x22, 0x40, 0x21])).toEqual([[0x20, 0x22], [0x28, 0x28], [0x40, 0x40]]);
  });

  it('has a virtio-pci IOMMU node and PCI range nodes pointing at it, endpoint id = requester id', () => {
    const t = buildViot({ iommu: 0x18, endpoints: [0x20, 0x21, 0x40] });
    const bytes = new Uint8Array(t.bytes);
    bytes[9] = (0x100 - bytes.reduce((a, x) => (a + x) & 0xff, 0)) & 0xff;
    const { count, nodes } = parseViot(bytes);
    expect(count).toBe(3);
    const [iommu, r1, r2] = nodes;
    expect(iommu.offset).toBe(48);
    expect([iommu.type, iommu.length, iommu.fields.getUint16(4, true), iommu.fields.getUint16(6, true)]).toEqual([3, 16, 0, 0x18]);
    for (const [n, first, last] of [[r1, 0x20, 0x21], [r2, 0x40, 0x40]] as const) {
      expect([n.type, n.length]).toEqual([1, 24]);
      const f = n.fields;
      expect({
        endpointStart: f.getUint32(4, true), segStart: f.getUint16(8, true), segEnd: f.getUint16(10, true),
        bdfStart: f.getUint16(12, true), bdfEnd: f.getUint16(14, true), output: f.getUint16(16, true),
      }).toEqual({ endpointStart: first, segStart: 0, segEnd: 0, bdfStart: first, bdfEnd: last, output: 48 });
    }
  });

  it('is listed in the RSDT and XSDT and delivered in memory and over fw_cfg', () => {
    const p = { ...acpiPlatform(machine()), viot: { iommu: 0x18, endpoints: [0x20] } };
    const mem = buildAcpiInMemory(p);
    const viot = mem.placed.find((t) => t.sig === 'VIOT')!;
    expect(viot).toBeDefined();
    const rsdt = mem.placed.find((t) => t.sig === 'RSDT')!;
    const r = new DataView(mem.image.buffer, rsdt.address - mem.base, rsdt.length);
    const ptrs = [];
    for (let o = 36; o < rsdt.length; o += 4) ptrs.push(r.getUint32(o, true));
    expect(ptrs).toContain(viot.address);
    parseViot(mem.image.subarray(viot.address - mem.base, viot.address - mem.base + viot.length));
    expect(buildAcpiForFwCfg(p).offsets.has('VIOT')).toBe(true);
    expect(buildAcpiInMemory({ ...p, viot: undefined }).placed.some((t) => t.sig === 'VIOT')).toBe(false);
  });

  it('iasl reads its header and checksum', () => {
    if (spawnSync('iasl', ['-v']).status !== 0) return; // acpi.test.ts reports a missing iasl
    const p = { ...acpiPlatform(machine()), viot: { iommu: 0x18, endpoints: [0x20] } };
    const mem = buildAcpiInMemory(p);
    const t = mem.placed.find((x) => x.sig === 'VIOT')!;
    const dir = mkdtempSync(join(tmpdir(), 'viot-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'VIOT.dat'), mem.image.subarray(t.address - mem.base, t.address - mem.base + t.length));
    const r = spawnSync('iasl', ['-d', 'VIOT.dat'], { cwd: dir, encoding: 'utf8' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    const dsl = readFileSync(join(dir, 'VIOT.dsl'), 'utf8');
    expect(dsl).toMatch(/Signature : "VIOT"/);
    expect(dsl).not.toMatch(/Incorrect checksum|Invalid/i);
  });
});

function machine() {
  const f = fake({ 'pci.0.0.0.device': 'hostbridge', 'pci.0.31.0.device': 'lpc' });
  return buildPlatform(f.ctx, LAYOUT).asBuilt;
}

describe('the platform with a virtio-iommu', () => {
  it('puts the functions with iommu=true behind it, offers ACCESS_PLATFORM there, and describes it in the VIOT', () => {
    const f = fake({
      'pci.0.0.0.device': 'hostbridge', 'pci.0.3.0.device': 'virtio-iommu',
      'pci.0.4.0.device': 'virtio-rnd', 'pci.0.4.0.iommu': 'true',
      'pci.0.5.0.device': 'virtio-rnd',
    });
    const p = buildPlatform(f.ctx, LAYOUT);
    expect(p.asBuilt.iommu).toEqual({ bdf: 0x18, endpoints: [0x20] });
    const [iommu, behind, free] = p.virtio;
    expect(iommu.device.deviceType).toBe(23);
    expect(iommu.transport).toBe('modern');
    expect(behind.dma).toBeInstanceOf(TranslatedDmaSpace);
    expect(free.dma).toBeUndefined();
    const features = (fn: VirtioPci): bigint => {
      let v = 0n;
      for (const sel of [0, 1]) { fn.commonWrite(0, 4, sel); v |= BigInt(fn.commonRead(4, 4)) << BigInt(32 * sel); }
      return v;
    };
    expect(hasFeature(features(behind), VIRTIO_F_ACCESS_PLATFORM)).toBe(true);
    expect(hasFeature(features(free), VIRTIO_F_ACCESS_PLATFORM)).toBe(false);
  });

  it('a driver that refuses ACCESS_PLATFORM cannot set FEATURES_OK on a device behind the IOMMU', () => {
    const f = fake({
      'pci.0.3.0.device': 'virtio-iommu', 'pci.0.4.0.device': 'virtio-rnd', 'pci.0.4.0.iommu': 'true', 'pci.0.4.0.transport': 'modern',
    });
    const fn = buildPlatform(f.ctx, LAYOUT).virtio[1];
    const negotiate = (withPlatform: boolean): number => {
      fn.commonWrite(0x14, 1, 0);
      fn.commonWrite(0x14, 1, 3);
      fn.commonWrite(0x08, 4, 1);
      fn.commonWrite(0x0c, 4, 1 | (withPlatform ? 2 : 0)); // VERSION_1 (bit 32), ACCESS_PLATFORM (bit 33)
      fn.commonWrite(0x14, 1, 3 | 8);
      return fn.commonRead(0x14, 1);
    };
    expect(negotiate(false) & 8).toBe(0);
    expect(negotiate(true) & 8).toBe(8);
  });

  it('refuses iommu=true without a virtio-iommu, on devices that do not translate, and on legacy virtio', () => {
    const msg = (settings: Record<string, string>): string => {
      try {
        buildPlatform(fake(settings).ctx, LAYOUT);
      } catch (e) {
        expect(isUserError(e)).toBe(true);
        return (e as Error).message;
      }
      return 'built';
    };
    expect(msg({ 'pci.0.4.0.device': 'virtio-rnd', 'pci.0.4.0.iommu': 'true' })).toMatch(/needs a virtio-iommu device/);
    expect(msg({ 'pci.0.3.0.device': 'virtio-iommu', 'pci.0.4.0.device': 'hostbridge', 'pci.0.4.0.iommu': 'true' }))
      .toMatch(/iommu=true is not supported for this device/);
    expect(msg({ 'pci.0.3.0.device': 'virtio-iommu', 'pci.0.4.0.device': 'virtio-rnd', 'pci.0.4.0.iommu': 'true', 'pci.0.4.0.transport': 'legacy' }))
      .toMatch(/transport=legacy cannot offer/);
    expect(msg({ 'pci.0.3.0.device': 'virtio-iommu', 'pci.0.3.0.transport': 'legacy' })).toMatch(/no legacy virtio PCI device id/);
    expect(msg({ 'pci.0.3.0.device': 'virtio-iommu', 'pci.0.4.0.device': 'virtio-iommu' })).toMatch(/only one virtio-iommu/);
    expect(msg({ 'pci.0.3.0.device': 'virtio-iommu', 'pci.0.4.0.device': 'virtio-rnd', 'pci.0.4.0.iommu': 'false' })).toBe('built');
  });
});
