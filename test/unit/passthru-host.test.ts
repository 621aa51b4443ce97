// passthru's host checks: bhyve's and Linux's ways of naming the host device,
// and the one-line diagnosis of each way the host can be unready, against a
// fake sysfs + /dev tree built per test (and against this real host, which
// has no IOMMU). The device itself is opened by vfio-backend.ts
// (test/unit/passthru-vfio.test.ts).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

import { parseSlotOption } from '../../src/config/bhyve-args.js';
import { ConfigTree } from '../../src/config/tree.js';
import {
  checkHostDevice, HostSetupError, passthruSource, type HostRootOptions, type PassthruSource,
} from '../../src/devices/passthru/host-device.js';
import { validateForStart } from '../../src/devices/registry.js';
import { fakeHostTree, type FakeHost } from '../support/fake-sysfs.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

const roots: string[] = [];
afterEach(() => {
  for (const r of roots.splice(0)) fs.rmSync(r, { recursive: true, force: true });
  delete process.env.BHYVE_PASSTHRU_HOST_ROOT;
});
const fakeHost = (h: FakeHost): string => fakeHostTree(h, roots);

const NIC = '0000:01:00.0';
const AUDIO = '0000:01:00.1';
/** A host set up as the man page says: IOMMU on, the NIC bound to vfio-pci, alone in group 5. */
const READY: FakeHost = { devices: { [NIC]: { driver: 'vfio-pci', group: 5 } }, dev: ['vfio/vfio', 'vfio/5'] };

function check(h: FakeHost, source: PassthruSource = { kind: 'address', address: NIC }, opts: Omit<HostRootOptions, 'root'> = {}) {
  return checkHostDevice(source, { root: fakeHost(h), ...opts });
}
function diagnosis(h: FakeHost, source?: PassthruSource, opts?: Omit<HostRootOptions, 'root'>): string {
  try {
    check(h, source, opts);
  } catch (e) {
    expect(e).toBeInstanceOf(HostSetupError);
    const msg = (e as Error).message;
    expect(msg.split('\n')).toHaveLength(1);
    return msg;
  }
  throw new Error('the host was found ready');
}

describe('passthru host device naming', () => {
  const slot = (opt: string): ConfigTree => {
    const t = new ConfigTree();
    parseSlotOption(t, opt);
    return t;
  };
  it.each([
    ['6,passthru,1/0/0', { kind: 'address', address: '0000:01:00.0' }],
    ['6,passthru,10/31/7,rom=/x.rom', { kind: 'address', address: '0000:0a:1f.7' }],
    ['6,passthru,pci2:3:1', { kind: 'address', address: '0000:02:03.1' }],
    ['6,passthru,pci0:2:3:1', { kind: 'address', address: '0000:02:03.1' }],
    ['6,passthru,ppt3', { kind: 'ppt', unit: 3, name: 'ppt3' }],
    ['6,passthru,0000:01:00.0', { kind: 'address', address: '0000:01:00.0' }],
    ['6,passthru,0001:AF:1e.3', { kind: 'address', address: '0001:af:1e.3' }],
    ['6,passthru,01:00.0', { kind: 'address', address: '0000:01:00.0' }],
    ['6,passthru,/dev/vfio/devices/vfio2', { kind: 'cdev', path: '/dev/vfio/devices/vfio2' }],
  ])('%s', (opt, source) => {
    expect(passthruSource(slot(opt), 'pci.0.6.0')).toEqual(source);
  });

  it('keys: host= and cdev= are what the Linux forms set', () => {
    expect(slot('6,passthru,0000:01:00.0').get('pci.0.6.0.host')).toBe('0000:01:00.0');
    expect(slot('6,passthru,/dev/vfio/devices/vfio2').get('pci.0.6.0.cdev')).toBe('/dev/vfio/devices/vfio2');
  });

  it.each([
    ['6,passthru,eth0', /passthru: invalid options "eth0"/],
    ['6,passthru,/dev/vfio/5', /passthru: invalid options/],
    ['6,passthru,0000:01:00.8', /passthru: invalid options/],
  ])('%s is refused while parsing', (opt, re) => {
    expect(() => slot(opt)).toThrow(re);
  });

  it.each([
    ['6,passthru', /no host device/],
    ['6,passthru,1/0/0,host=0000:02:00.0', /give the host device once/],
    ['6,passthru,pptx', /invalid pptdev "pptx"/],
    ['6,passthru,1/0/0,slot=32', /invalid pci.0.6.0.slot "32" \(0-31\)/],
  ])('%s is refused by the start checks', (opt, re) => {
    expect(() => passthruSource(slot(opt), 'pci.0.6.0')).toThrow(re);
  });

  it.each([
    ['host', '0000:01:00', /invalid host "0000:01:00"/],
    ['cdev', '/dev/vfio/5', /invalid cdev "\/dev\/vfio\/5"/],
  ])('-o pci.0.6.0.%s=%s is refused by the start checks', (key, value, re) => {
    const t = slot('6,passthru');
    t.set(`pci.0.6.0.${key}`, value);
    expect(() => passthruSource(t, 'pci.0.6.0')).toThrow(re);
  });
});

describe('passthru host checks (fake sysfs and /dev)', () => {
  it('a set-up host: the VFIO group path', () => {
    expect(check(READY)).toEqual({ address: NIC, group: 5, api: 'group', node: '/dev/vfio/5' });
  });

  it('a set-up host with iommufd and the device file: the cdev path', () => {
    const h: FakeHost = {
      devices: { [NIC]: { driver: 'vfio-pci', group: 5, cdev: 'vfio0' } },
      dev: ['vfio/vfio', 'vfio/5', 'iommu', 'vfio/devices/vfio0'],
    };
    expect(check(h)).toEqual({ address: NIC, group: 5, api: 'iommufd', node: '/dev/vfio/devices/vfio0' });
    expect(check(h, { kind: 'cdev', path: '/dev/vfio/devices/vfio0' }))
      .toEqual({ address: NIC, group: 5, api: 'iommufd', node: '/dev/vfio/devices/vfio0' });
  });

  it('no IOMMU: no IOMMU groups', () => {
    expect(diagnosis({ devices: { [NIC]: { driver: 'e1000e' } }, dev: ['vfio/vfio'] }))
      .toMatch(/^passthru: no IOMMU: \/sys\/kernel\/iommu_groups is empty \(.*intel_iommu=on or amd_iommu=on\)$/);
  });

  it('VFIO not loaded: no /dev/vfio/vfio and no /dev/iommu', () => {
    expect(diagnosis({ ...READY, dev: [] })).toBe('passthru: VFIO is not loaded: no /dev/iommu and no /dev/vfio/vfio (modprobe vfio-pci)');
  });

  it('device absent', () => {
    expect(diagnosis(READY, { kind: 'address', address: '0000:02:00.0' }))
      .toBe('passthru: host PCI device 0000:02:00.0 does not exist (see lspci -D)');
  });

  it('device bound to a host driver: names it and gives the commands that rebind it', () => {
    const msg = diagnosis({ devices: { [NIC]: { driver: 'e1000e', group: 5 } }, dev: ['vfio/vfio'] });
    expect(msg).toMatch(/^passthru: host PCI device 0000:01:00\.0 is bound to e1000e, not vfio-pci \(as root: /);
    expect(msg).toContain('echo vfio-pci > /sys/bus/pci/devices/0000:01:00.0/driver_override');
    expect(msg).toContain('echo 0000:01:00.0 > /sys/bus/pci/devices/0000:01:00.0/driver/unbind');
    expect(msg).toContain('echo 0000:01:00.0 > /sys/bus/pci/drivers_probe');
  });

  it('device bound to no driver: nothing to unbind', () => {
    const msg = diagnosis({ devices: { [NIC]: { group: 5 } }, dev: ['vfio/vfio'] });
    expect(msg).toMatch(/is bound to no driver, not vfio-pci/);
    expect(msg).not.toContain('unbind');
  });

  it('device in no IOMMU group', () => {
    expect(diagnosis({ devices: { [NIC]: { driver: 'vfio-pci' }, [AUDIO]: { group: 1 } }, dev: ['vfio/vfio'] }))
      .toBe('passthru: host PCI device 0000:01:00.0 is in no IOMMU group (the IOMMU does not translate for it)');
  });

  it('group not viable: the other devices bound to host drivers are named', () => {
    const h: FakeHost = {
      devices: {
        [NIC]: { driver: 'vfio-pci', group: 5 }, [AUDIO]: { driver: 'snd_hda_intel', group: 5 },
        '0000:01:00.2': { driver: 'xhci_hcd', group: 5 }, '0000:00:01.0': { driver: 'pcieport', group: 5 },
        '0000:01:00.3': { group: 5 },
      },
      dev: ['vfio/vfio', 'vfio/5'],
    };
    expect(diagnosis(h)).toBe('passthru: IOMMU group 5 of 0000:01:00.0 is not viable: 0000:01:00.1 (snd_hda_intel),'
      + ' 0000:01:00.2 (xhci_hcd) are bound to host drivers (bind every device of the group to vfio-pci, or unbind it)');
  });

  it('a group whose other devices are on vfio-pci, pci-stub, pcieport or no driver is viable', () => {
    const h: FakeHost = {
      devices: {
        [NIC]: { driver: 'vfio-pci', group: 5 }, [AUDIO]: { driver: 'vfio-pci', group: 5 },
        '0000:01:00.2': { driver: 'pci-stub', group: 5 }, '0000:00:01.0': { driver: 'pcieport', group: 5 },
        '0000:01:00.3': { group: 5 },
      },
      dev: ['vfio/vfio', 'vfio/5'],
    };
    expect(check(h).group).toBe(5);
  });

  it('no group device file', () => {
    expect(diagnosis({ ...READY, dev: ['vfio/vfio'] }))
      .toBe('passthru: no /dev/vfio/5 for IOMMU group 5 of 0000:01:00.0 (is vfio-pci loaded?)');
  });

  it('no permission on /dev/vfio/N, or on /dev/vfio/vfio', () => {
    expect(diagnosis(READY, undefined, { canOpen: (f) => f !== '/dev/vfio/5' }))
      .toBe('passthru: no permission to open /dev/vfio/5 read-write (run bhyve as root, or give its user the file: chown USER /dev/vfio/5)');
    expect(diagnosis(READY, undefined, { canOpen: (f) => f !== '/dev/vfio/vfio' })).toMatch(/no permission to open \/dev\/vfio\/vfio /);
  });

  it('the default permission check is access(2) on the file under the root', () => {
    // Root passes access(2) whatever the mode; as another user a 0600 root file fails.
    const root = fakeHost(READY);
    fs.chmodSync(path.join(root, 'dev/vfio/5'), 0o600);
    const asRoot = process.getuid?.() === 0;
    if (asRoot) expect(checkHostDevice({ kind: 'address', address: NIC }, { root }).node).toBe('/dev/vfio/5');
    else expect(() => checkHostDevice({ kind: 'address', address: NIC }, { root })).toThrow(/no permission to open \/dev\/vfio\/5/);
  });

  it('cdev: no permission on /dev/vfio/devices/vfioN or /dev/iommu', () => {
    const h: FakeHost = {
      devices: { [NIC]: { driver: 'vfio-pci', group: 5, cdev: 'vfio0' } },
      dev: ['iommu', 'vfio/devices/vfio0'],
    };
    expect(diagnosis(h, undefined, { canOpen: (f) => f !== '/dev/vfio/devices/vfio0' }))
      .toMatch(/^passthru: no permission to open \/dev\/vfio\/devices\/vfio0 read-write/);
    expect(diagnosis(h, undefined, { canOpen: (f) => f !== '/dev/iommu' })).toMatch(/no permission to open \/dev\/iommu read-write/);
  });

  it('cdev named but the kernel has no iommufd, or no such file, or not a PCI device', () => {
    const cdev: PassthruSource = { kind: 'cdev', path: '/dev/vfio/devices/vfio3' };
    expect(diagnosis(READY, cdev)).toMatch(/^passthru: \/dev\/vfio\/devices\/vfio3 needs iommufd and there is no \/dev\/iommu/);
    expect(diagnosis({ ...READY, dev: ['iommu'] }, cdev)).toBe('passthru: no VFIO device /dev/vfio/devices/vfio3');
    expect(diagnosis({ ...READY, dev: ['iommu', 'vfio/devices/vfio3'] }, cdev))
      .toMatch(/\/dev\/vfio\/devices\/vfio3 is not a VFIO PCI device/);
  });

  it('cdev resolves to its PCI device, whose driver and group are then checked', () => {
    const h: FakeHost = {
      devices: { [NIC]: { driver: 'vfio-pci', group: 5, cdev: 'vfio0' }, [AUDIO]: { driver: 'snd_hda_intel', group: 5 } },
      dev: ['iommu', 'vfio/devices/vfio0'],
    };
    expect(diagnosis(h, { kind: 'cdev', path: '/dev/vfio/devices/vfio0' })).toMatch(/IOMMU group 5 of 0000:01:00\.0 is not viable: 0000:01:00\.1/);
  });

  it('pptN: the Nth device bound to vfio-pci in PCI address order', () => {
    const h: FakeHost = {
      devices: {
        '0000:03:00.0': { driver: 'vfio-pci', group: 7 }, [NIC]: { driver: 'vfio-pci', group: 5 }, [AUDIO]: { driver: 'snd_hda_intel', group: 6 },
      },
      dev: ['vfio/vfio', 'vfio/5', 'vfio/7'],
    };
    expect(check(h, { kind: 'ppt', unit: 0, name: 'ppt0' }).address).toBe(NIC);
    expect(check(h, { kind: 'ppt', unit: 1, name: 'ppt1' }).address).toBe('0000:03:00.0');
    expect(diagnosis(h, { kind: 'ppt', unit: 2, name: 'ppt2' }))
      .toBe('passthru: ppt2: only 2 device(s) are bound to vfio-pci (0000:01:00.0, 0000:03:00.0); pptN counts them in PCI address order from ppt0');
    expect(diagnosis({ devices: { [AUDIO]: { driver: 'snd_hda_intel', group: 6 } }, dev: ['vfio/vfio'] }, { kind: 'ppt', unit: 0, name: 'ppt0' }))
      .toMatch(/^passthru: ppt0: no device is bound to vfio-pci; /);
  });
});

const hostHasIommu = fs.existsSync('/sys/kernel/iommu_groups') && fs.readdirSync('/sys/kernel/iommu_groups').length > 0;

describe('passthru at start', () => {
  const config = (opt: string): ConfigTree => {
    const t = new ConfigTree();
    t.set('memory.size', '256M');
    parseSlotOption(t, opt);
    return t;
  };

  it('a ready host passes the start checks (the device is opened when the VM is built)', () => {
    process.env.BHYVE_PASSTHRU_HOST_ROOT = fakeHost(READY);
    expect(() => validateForStart(config('6,passthru,1/0/0'))).not.toThrow();
  });

  it('rom=: the file is read at start, as bhyve checks it (missing, empty)', () => {
    const root = fakeHost(READY);
    process.env.BHYVE_PASSTHRU_HOST_ROOT = root;
    expect(() => validateForStart(config('6,passthru,1/0/0,rom=/nonexistent/x.rom'))).toThrow('passthru: can\'t open romfile "/nonexistent/x.rom"');
    fs.writeFileSync(path.join(root, 'empty.rom'), '');
    expect(() => validateForStart(config(`6,passthru,1/0/0,rom=${root}/empty.rom`))).toThrow(`passthru: romfile "${root}/empty.rom" is empty`);
    fs.writeFileSync(path.join(root, 'x.rom'), Buffer.from([0x55, 0xaa, 1]));
    expect(() => validateForStart(config(`6,passthru,1/0/0,rom=${root}/x.rom`))).not.toThrow();
  });

  it('an unready host: one line saying what the host lacks', () => {
    process.env.BHYVE_PASSTHRU_HOST_ROOT = fakeHost({ ...READY, devices: { [NIC]: { driver: 'igb', group: 5 } } });
    expect(() => validateForStart(config('6,passthru,0000:01:00.0'))).toThrow(
      /^passthru: host PCI device 0000:01:00\.0 is bound to igb, not vfio-pci/);
  });

  it.runIf(!hostHasIommu)('this host (no IOMMU): refused, saying there is no IOMMU', () => {
    expect(() => validateForStart(config('6,passthru,0000:01:00.0'))).toThrow(
      /^passthru: no IOMMU: \/sys\/kernel\/iommu_groups is empty/);
  });

  it.runIf(!hostHasIommu)('bhyve (built) on this host: exit 4, one line on stderr, before any VM exists', () => {
    const r = spawnSync(process.execPath, [`${ROOT}/bin/bhyve`, '-m', '256M', '-s', '6,passthru,pci1:0:0', 'vmpt'],
      { encoding: 'utf8', env: { ...process.env, BHYVE_DEBUG: '' } });
    expect(r.status).toBe(4);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^bhyve: passthru: no IOMMU: .*\n$/);
  });
});
