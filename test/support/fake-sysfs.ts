// A host's sysfs and /dev as Linux lays them out for VFIO (IOMMU groups,
// PCI devices and their drivers, vfio-dev nodes), built under a temporary
// root for passthru's host checks; `roots` collects the roots to remove.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface FakeDevice { driver?: string; group?: number; cdev?: string }
export interface FakeHost {
  devices: Record<string, FakeDevice>;
  /** Files under /dev, e.g. 'vfio/vfio', 'vfio/5', 'iommu', 'vfio/devices/vfio0'. */
  dev: string[];
}

/** Builds sysfs and /dev as Linux lays them out for VFIO, under a temporary root. */
export function fakeHostTree(h: FakeHost, roots: string[]): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'passthru-host-'));
  roots.push(root);
  const mk = (p: string): void => fs.mkdirSync(path.join(root, p), { recursive: true });
  const link = (target: string, p: string): void => {
    mk(path.dirname(p));
    fs.symlinkSync(target, path.join(root, p));
  };
  mk('sys/kernel/iommu_groups');
  mk('sys/bus/pci/drivers');
  for (const [addr, d] of Object.entries(h.devices)) {
    const dir = `sys/bus/pci/devices/${addr}`;
    mk(dir);
    if (d.driver) {
      mk(`sys/bus/pci/drivers/${d.driver}`);
      link(`../../../bus/pci/drivers/${d.driver}`, `${dir}/driver`);
      link(`../../../../devices/pci0000:00/${addr}`, `sys/bus/pci/drivers/${d.driver}/${addr}`);
    }
    if (d.group !== undefined) {
      link(`../../../kernel/iommu_groups/${d.group}`, `${dir}/iommu_group`);
      link(`../../../../devices/pci0000:00/${addr}`, `sys/kernel/iommu_groups/${d.group}/devices/${addr}`);
    }
    if (d.cdev) {
      mk(`${dir}/vfio-dev/${d.cdev}`);
      link(`../../../${addr}`, `sys/class/vfio-dev/${d.cdev}/device`);
    }
  }
  for (const f of h.dev) {
    mk(path.dirname(`dev/${f}`));
    fs.writeFileSync(path.join(root, 'dev', f), '');
  }
  return root;
}

