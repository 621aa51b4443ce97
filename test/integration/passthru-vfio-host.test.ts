// passthru of a host device on this host, as far as it goes: no machine
// here has an IOMMU or a VFIO device. bin/bhyve with a fake sysfs that
// says the host is set up (BHYVE_PASSTHRU_HOST_ROOT, tests only) passes the
// start checks, builds the VM, and the device model opens the fake root's
// /dev/vfio files through the real host calls (open, ioctl): the kernel
// answers ENOTTY (plain files are not VFIO's) and bhyve ends with that one
// line and exit status 4. On this host itself, the start checks say there
// is no IOMMU before any VM exists (test/unit/passthru-host.test.ts).
import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { bhyveArgs, kvmUnavailable, rom, runBhyve, vmName } from '../support/bhyve.js';
import { fakeHostTree, type FakeHost } from '../support/fake-sysfs.js';

const skip = kvmUnavailable();
if (skip) console.warn(`skipping passthru host-path tests: ${skip}`);

const roots: string[] = [];
afterAll(() => { for (const r of roots) fs.rmSync(r, { recursive: true, force: true }); });

const NIC = '0000:01:00.0';

describe.skipIf(skip)('passthru of a host device through the real host calls', () => {
  const run = (h: FakeHost, slot: string) => runBhyve(bhyveArgs(rom('exit-testdev'), vmName('pthost'), { extra: ['-s', slot] }),
    { env: { BHYVE_PASSTHRU_HOST_ROOT: fakeHostTree(h, roots) }, timeout: 60_000 });

  it('the container/group path: the VM is built, VFIO_GET_API_VERSION on /dev/vfio/vfio fails, one line, exit 4', async () => {
    const r = await run({ devices: { [NIC]: { driver: 'vfio-pci', group: 5 } }, dev: ['vfio/vfio', 'vfio/5'] }, '6,passthru,1/0/0');
    expect(r.exitCode).toBe(4);
    expect(String(r.stderr).split('\n').filter((l) => l.startsWith('bhyve: ') && !l.includes('warning'))).toEqual([
      'bhyve: passthru: /dev/vfio/vfio is not a VFIO device: the kernel does not know VFIO_GET_API_VERSION there',
    ]);
  }, 90_000);

  it('the iommufd path: VFIO_DEVICE_BIND_IOMMUFD on the device file fails, one line, exit 4', async () => {
    const r = await run({ devices: { [NIC]: { driver: 'vfio-pci', group: 5, cdev: 'vfio0' } }, dev: ['iommu', 'vfio/devices/vfio0'] }, '6,passthru,/dev/vfio/devices/vfio0');
    expect(r.exitCode).toBe(4);
    expect(String(r.stderr).split('\n').filter((l) => l.startsWith('bhyve: ') && !l.includes('warning'))).toEqual([
      'bhyve: passthru: /dev/vfio/devices/vfio0 is not a VFIO device: the kernel does not know VFIO_DEVICE_BIND_IOMMUFD there',
    ]);
  }, 90_000);
});
