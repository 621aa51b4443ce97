// virtio-iommu.rom (test/guests/virtio/guest-iommu.c) programs a
// virtio-iommu as Linux's viommu driver does and puts a virtio-blk behind
// it: topology from the ACPI VIOT, PROBE, ATTACH, MAPs of the rings and
// buffers at IOVA = GPA + 1 GiB, I/O through them, then an UNMAP of the
// read buffer: the next read must not complete, must leave the buffer
// untouched, put the virtio-blk in DEVICE_NEEDS_RESET and bring a MAPPING
// fault on the event queue. Every completion is taken by interrupt. The
// same ROM runs on our bhyve (-s virtio-iommu, iommu=true on the disk) and
// on QEMU (-device virtio-iommu-pci, virtio-blk-pci,iommu_platform=on).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GUESTS, bhyveArgs, kvmUnavailable, vmName } from '../support/bhyve.js';
import { HAVE_QEMU, MODE, romWith, runHeld, runQemu, stat } from '../support/guest-rom.js';

const skip = kvmUnavailable() ?? (fs.existsSync(path.join(GUESTS, 'virtio-iommu.rom')) ? undefined : 'virtio-iommu.rom is not built: run scripts/build-guests.sh');
if (skip) console.warn(`skipping virtio-iommu guest tests: ${skip}`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'viommu-guest-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
function disk(): string {
  const p = path.join(tmp, `disk${n++}.img`);
  fs.writeFileSync(p, '');
  fs.truncateSync(p, 8 << 20);
  return p;
}

/** What both machines must print. */
function common(out: string): void {
  expect(out).toMatch(/viommu: VIOT in (memory|fw_cfg): \d+ bytes, \d+ nodes/);
  expect(out).toContain('viommu: probe: resv_mem subtype 1 fee00000-feefffff');
  expect(out).toContain('viommu: probe: MSI window reserved');
  expect(out).toMatch(/viommu: endpoint [0-9a-f]+ attached to domain 1/);
  expect(out).toContain('viommu: virtio-blk I/O through IOVAs OK (crc 97d024bf)');
  expect(out).toContain('viommu: read into the unmapped buffer: no completion, device status 4f');
  expect(out).toContain('viommu: unmapped buffer untouched');
  expect(out).toMatch(/viommu: fault event: reason 2 flags [0-9a-f]+ endpoint [0-9a-f]+ address [0-9a-f]+ \(len 24\)/);
  expect(out).toContain('viommu: endpoint detached');
  expect(out).toContain('viommu: OK');
}

const IOMMU = 'virtio-iommu@pci.0.3.0';
const BLK = 'virtio-blk@pci.0.4.0';

describe.skipIf(skip !== undefined)('virtio-iommu.rom on bhyve and QEMU', () => {
  for (const [label, mode] of [['MSI-X', MODE.MSIX], ['INTx', MODE.INTX]] as const) {
    it(`bhyve (-s 3,virtio-iommu -s 4,virtio-blk,...,iommu=true), ${label}`, async () => {
      const name = vmName(`viommu-${label}`);
      const r = await runHeld(bhyveArgs(romWith(tmp, 'virtio-iommu', mode | MODE.HOLD), name, {
        mem: '256M', extra: ['-s', '3,virtio-iommu', '-s', `4,virtio-blk,${disk()},iommu=true`],
      }), name);
      expect(r.status, r.out).toBe(33);
      common(r.out);
      // Our VIOT: the IOMMU at 00:03.0, one range holding the disk only.
      expect(r.out).toContain('viommu: VIOT in memory: 88 bytes, 2 nodes');
      expect(r.out).toContain('viommu: VIOT virtio-pci IOMMU at 00:03.0 (node 48)');
      expect(r.out).toContain('viommu: VIOT PCI range 0020-0020 endpoint 20 -> node 48');
      expect(r.out).toContain('viommu: page_size_mask fffffffffffff000 input_range 0-ffffffffffff domain_range 0-4294967295 probe_size 512 bypass 0');
      // The spec's NOENT for an endpoint it does not manage (QEMU 7.2 answers OK).
      expect(r.out).toContain('viommu: ATTACH of endpoint 0x7fff0000: status 6');
      // A write fault (the device writes into the read buffer), with its address.
      expect(r.out).toMatch(/viommu: fault event: reason 2 flags 102 endpoint 20 address 4040b000/);
      expect(stat(r.stats, IOMMU, 'iommu faults reported')).toBe(1);
      expect(stat(r.stats, IOMMU, 'iommu faults dropped')).toBe(0);
      expect(stat(r.stats, IOMMU, 'iommu requests')).toBeGreaterThanOrEqual(9);
      // Interrupts taken: MSI-X messages or INTx assertions on both functions.
      const kind = mode === MODE.MSIX ? 'msi-x messages' : 'intx assertions';
      expect(stat(r.stats, IOMMU, kind)).toBeGreaterThan(0);
      expect(stat(r.stats, BLK, kind)).toBeGreaterThan(0);
      expect(r.out).toMatch(/viommu: interrupts: (msix|intx) request vector [0-9a-f]+ [1-9]\d*, event vector [0-9a-f]+ [1-9]\d*/);
    }, 120_000);
  }

  it('bhyve: the disk not behind the IOMMU is not in the VIOT (the guest says so)', async () => {
    const name = vmName('viommu-outside');
    const r = await runHeld(bhyveArgs(romWith(tmp, 'virtio-iommu', MODE.MSIX | MODE.HOLD), name, {
      mem: '256M', extra: ['-s', '3,virtio-iommu', '-s', `4,virtio-blk,${disk()}`],
    }), name);
    expect(r.status, r.out).toBe(3);
    expect(r.out).toContain('FAIL: viommu: virtio-blk 00:04.0 is not behind the IOMMU');
  }, 120_000);

  it.skipIf(!HAVE_QEMU)('QEMU (-device virtio-iommu-pci, virtio-blk-pci,iommu_platform=on), MSI-X', async () => {
    const r = await runQemu(romWith(tmp, 'virtio-iommu', MODE.MSIX), [
      '-device', 'virtio-iommu-pci,addr=3',
      '-drive', `if=none,id=d0,file=${disk()},format=raw`, '-device', 'virtio-blk-pci,drive=d0,addr=4,disable-legacy=on,iommu_platform=on',
    ], [], 90_000);
    expect(r.status, r.out).toBe(33);
    common(r.out);
    // QEMU's VIOT puts the whole of bus 0 behind its IOMMU.
    expect(r.out).toContain('viommu: VIOT in fw_cfg: 88 bytes, 2 nodes');
    expect(r.out).toContain('viommu: VIOT PCI range 0000-00ff endpoint 0 -> node 48');
    expect(r.out).toContain('viommu: virtio-blk 00:04.0 is endpoint 20');
    expect(r.out).toContain('viommu: no MSI-X capability, interrupts by intx');
  }, 120_000);
});
