// virtio-scsi.rom (test/guests/virtio/guest-scsi.c) drives target 0 LUN 0
// as Linux's virtio_scsi + sd do: TEST UNIT READY, INQUIRY and its VPD
// page list, READ CAPACITY(16), REPORT LUNS, MODE SENSE, 1 MiB written with
// WRITE(10), SYNCHRONIZE CACHE, read back with READ(16) into two
// descriptors (CRC-32), and two commands that must fail (a READ past the
// end, an unknown opcode). The same ROM runs on our bhyve (-s virtio-scsi)
// and on QEMU (-device virtio-scsi-pci -device scsi-hd); both must end
// alike and the image must hold what the guest wrote.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { GUESTS, bhyveArgs, kvmUnavailable, vmName } from '../support/bhyve.js';
import { HAVE_QEMU, MODE, romWith, runHeld, runQemu, stat } from '../support/guest-rom.js';

const skip = kvmUnavailable() ?? (fs.existsSync(path.join(GUESTS, 'virtio-scsi.rom')) ? undefined : 'virtio-scsi.rom is not built: run scripts/build-guests.sh');
if (skip) console.warn(`skipping virtio-scsi guest tests: ${skip}`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vscsi-guest-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
function disk(): string {
  const p = path.join(tmp, `disk${n++}.img`);
  fs.writeFileSync(p, '');
  fs.truncateSync(p, 8 << 20);
  return p;
}

function pattern(): Buffer {
  const b = Buffer.alloc(1 << 20);
  for (let i = 0; i < b.length; i++) b[i] = (i * 29 + Math.floor(i / 512) * 3 + 5) & 0xff;
  return b;
}

function common(out: string, img: string): void {
  expect(out).toContain('virtio-scsi: num_queues 1 ');
  expect(out).toContain('cdb_size 32 sense_size 96 max_lun 16383');
  expect(out).toContain('virtio-scsi: capacity 16384 blocks of 512 bytes');
  expect(out).toContain('virtio-scsi: report luns: 1');
  expect(out).toContain('virtio-scsi: caching page 08, WCE 1');
  const sum = crc32(pattern()).toString(16).padStart(8, '0');
  expect(out).toContain(`virtio-scsi: wrote 2048 blocks, read back OK, checksum ${sum}`);
  expect(out).toContain('virtio-scsi: read past the end: sense 5/21, unknown opcode: sense 5/20');
  expect(fs.readFileSync(img).subarray(0, 1 << 20).equals(pattern())).toBe(true);
}

describe.skipIf(skip !== undefined)('virtio-scsi.rom on bhyve and QEMU', () => {
  for (const [label, mode] of [['polling', MODE.POLL], ['MSI-X', MODE.MSIX]] as const) {
    it(`bhyve, ${label}`, async () => {
      const img = disk();
      const name = vmName(`vscsi-${label}`);
      const r = await runHeld(bhyveArgs(romWith(tmp, 'virtio-scsi', mode | MODE.HOLD), name,
        { extra: ['-s', `4,virtio-scsi,${img}`] }), name);
      expect(r.status, r.out).toBe(33);
      common(r.out, img);
      expect(r.out).toMatch(/pci 00:04\.0 1af4:1004 class 010000 virtio-scsi/);
      expect(r.out).toContain("virtio-scsi: inquiry 'BHYVE   BHYVE SCSI DISK 0001', device type 0");
      expect(r.out).toContain('virtio-scsi: vpd pages 00 80 83 b0 b1 b2');
      expect(stat(r.stats, 'virtio-scsi@pci.0.4.0', 'scsi writes')).toBe(16);
      expect(stat(r.stats, 'virtio-scsi@pci.0.4.0', 'scsi reads')).toBe(32);
      expect(stat(r.stats, 'virtio-scsi@pci.0.4.0', 'scsi check conditions')).toBe(2);
      if (mode === MODE.MSIX) expect(r.out).toMatch(/virtio-scsi: interrupts: msix request queue vector [0-9a-f]+ [1-9]\d*/);
    }, 120_000);

    it.skipIf(!HAVE_QEMU)(`QEMU (-device virtio-scsi-pci -device scsi-hd), ${label}`, async () => {
      const img = disk();
      const r = await runQemu(romWith(tmp, 'virtio-scsi', mode), [
        '-device', 'virtio-scsi-pci,id=s0,disable-legacy=on',
        '-drive', `file=${img},if=none,format=raw,id=d0`, '-device', 'scsi-hd,drive=d0,bus=s0.0',
      ]);
      expect(r.status, r.out).toBe(33);
      common(r.out, img);
      expect(r.out).toContain("virtio-scsi: inquiry 'QEMU    QEMU HARDDISK   2.5+', device type 0");
    }, 120_000);
  }

  it('bhyve, a read-only image: the first WRITE fails with DATA PROTECT', async () => {
    const img = disk();
    const name = vmName('vscsi-ro');
    const r = await runHeld(bhyveArgs(romWith(tmp, 'virtio-scsi', MODE.POLL | MODE.HOLD), name,
      { extra: ['-s', `4,virtio-scsi,${img},ro`] }), name);
    expect(r.out).toContain('FAIL: virtio-scsi: WRITE(10): response 0 status 2 sense 7/27');
    expect(r.status).toBe(3);
    expect(fs.readFileSync(img).every((x) => x === 0)).toBe(true);
  }, 120_000);
});
