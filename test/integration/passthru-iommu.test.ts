// A passthrough device and an emulated one behind the same virtio-iommu:
// bin/bhyve-vfio-user serves the test DMA engine in its own process; bhyve
// passes it through behind the IOMMU (-s 5,passthru,vfio-user=SOCKET,
// iommu=true) next to a virtio-blk behind it (-s 4,virtio-blk,...,iommu=true)
// and runs virtio-iommu-dma.rom (test/guests/virtio/guest-iommu-dma.c):
// the guest's MAP/UNMAPs are mirrored into the server as vfio-user DMA
// windows at the IOVA, a copy through them is checked after its MSI-X
// interrupt, and accesses outside them (before ATTACH, a write into a
// read-only mapping, another domain's IOVA, an unmapped buffer) are
// refused with a fault event on the virtio-iommu's event queue, the
// guest's pages (at the IOVAs, and the unmapped buffer) untouched.
// QEMU 7.2 has no vfio-user client: bhyve only.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GUESTS, bhyveArgs, kvmUnavailable, vmName } from '../support/bhyve.js';
import { MODE, romWith, runHeld, stat } from '../support/guest-rom.js';
import { startVfioUserServer } from '../support/vfio-user-server.js';

const skip = kvmUnavailable() ?? (fs.existsSync(path.join(GUESTS, 'virtio-iommu-dma.rom')) ? undefined : 'virtio-iommu-dma.rom is not built: run scripts/build-guests.sh');
if (skip) console.warn(`skipping passthru-behind-virtio-iommu guest tests: ${skip}`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'passthru-iommu-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;

const IOMMU = 'virtio-iommu@pci.0.3.0';
const DEV = 'passthru@pci.0.5.0';

describe.skipIf(skip !== undefined)('passthru of a vfio-user device behind virtio-iommu (virtio-iommu-dma.rom)', () => {
  for (const [label, mode] of [['MSI-X', MODE.MSIX], ['INTx', MODE.INTX]] as const) {
    it(`bhyve: map, copy, MSI-X; refused DMA with fault events; virtio-blk through IOVAs (virtio devices by ${label})`, async () => {
      const img = path.join(tmp, `disk${n}.img`);
      fs.writeFileSync(img, '');
      fs.truncateSync(img, 8 << 20);
      const server = await startVfioUserServer(path.join(tmp, `dma${n++}.sock`));
      const name = vmName(`passthru-iommu-${label}`);
      const r = await runHeld(bhyveArgs(romWith(tmp, 'virtio-iommu-dma', mode | MODE.HOLD), name, {
        mem: '256M',
        extra: ['-s', '3,virtio-iommu', '-s', `4,virtio-blk,${img},iommu=true`, '-s', `5,passthru,vfio-user=${server.socket},iommu=true`],
      }), name, { timeout: 150_000 });
      expect(r.status, r.out).toBe(33);
      const s = await server.done();
      expect(s.status, s.log).toBe(0);
      // The server mapped the guest's two MAPs as windows; the five refused
      // accesses came to bhyve as DMA messages.
      expect(s.log).toMatch(/client gone: \d+ region reads, \d+ region writes, 2 DMA windows mapped, 5 DMA messages/);
      const out = r.out;
      // Our VIOT: both functions behind the IOMMU at 00:03.0.
      expect(out).toContain('viommu: VIOT virtio-pci IOMMU at 00:03.0 (node 48)');
      expect(out).toContain('iommu-dma: test DMA engine 00:05.0 is endpoint 28, virtio-blk 00:04.0 is endpoint 20');
      expect(out).toContain('viommu: probe: MSI window reserved');
      expect(out).toMatch(/iommu-dma: copy before ATTACH refused at ([0-9a-f]+); fault event: reason 1 flags 101 endpoint 28 address \1\r?\n/);
      expect(out).toContain('iommu-dma: virtio-blk I/O through IOVAs OK (crc 97d024bf)');
      expect(out).toContain('iommu-dma: copy of 65536 bytes through the IOMMU checked after the MSI-X interrupt (crc ');
      expect(out).toMatch(/iommu-dma: write into the read-only mapping refused at ([0-9a-f]+); fault event: reason 2 flags 102 endpoint 28 address \1\r?\n/);
      expect(out).toMatch(/iommu-dma: read of the write-only mapping refused at ([0-9a-f]+); fault event: reason 2 flags 101 endpoint 28 address \1\r?\n/);
      expect(out).toMatch(/iommu-dma: read of domain 1's IOVA refused at ([0-9a-f]+); fault event: reason 2 flags 101 endpoint 28 address \1\r?\n/);
      expect(out).toMatch(/iommu-dma: copy into the unmapped destination refused at ([0-9a-f]+); fault event: reason 2 flags 102 endpoint 28 address \1\r?\n/);
      expect(out).toContain('iommu-dma: unmapped destination and the pages at the IOVAs untouched');
      expect(out).toMatch(/iommu-dma: virtio-blk read into an unmapped IOVA: no completion, status 4f; fault event: reason 2 flags 102 endpoint 20 address [0-9a-f]+\r?\n/);
      expect(out).toContain('iommu-dma: OK');
      // Six faults, all reported, none dropped.
      expect(stat(r.stats, IOMMU, 'iommu faults reported')).toBe(6);
      expect(stat(r.stats, IOMMU, 'iommu faults dropped')).toBe(0);
      // The engine's DMA went through the windows the guest's MAPs made
      // (two, mirrored; unmapped by the UNMAP and the DETACH); only the
      // refused accesses came to bhyve by message, and none was served.
      expect(stat(r.stats, DEV, 'vfio-user dma maps')).toBe(2);
      expect(stat(r.stats, DEV, 'vfio-user dma unmaps')).toBe(2);
      expect(stat(r.stats, DEV, 'vfio-user dma windows')).toBe(0);
      expect(stat(r.stats, DEV, 'vfio-user dma reads served')).toBe(0);
      expect(stat(r.stats, DEV, 'vfio-user dma writes served')).toBe(0);
      expect(stat(r.stats, DEV, 'vfio-user dma faults')).toBe(5);
      expect(stat(r.stats, DEV, 'msix vectors in kernel')).toBe(2);
    }, 200_000);
  }
});
