// virtio-iommu's record (pci-device.ts): keys and the transport check; the
// emulation is virtio-iommu.ts, loaded when a run configures one. Which
// functions sit behind it is iommu-config.ts (record-side too).

import { ConfigError } from '../../config/tree.js';
import type { PciDeviceRecord } from '../pci-device.js';
import type { VirtioPciTransport } from '../virtio/virtio-pci.js';

/** The transport of its node: modern only (no legacy device id). */
export function transportOf(value: string | undefined, node: string): VirtioPciTransport {
  const t = value ?? 'modern';
  if (t === 'modern') return t;
  if (t === 'transitional' || t === 'legacy') {
    throw new ConfigError(`virtio-iommu has no legacy virtio PCI device id; use transport=modern (not ${t})`);
  }
  throw new ConfigError(`virtio-iommu@${node}: invalid transport "${t}" (use modern)`);
}

export const virtioIommuDevice: PciDeviceRecord = {
  name: 'virtio-iommu',
  description: 'virtio IOMMU for the functions with iommu=true',
  keys: [
    { key: 'bypass', default: 'false', description: 'endpoints not attached to a domain reach guest RAM untranslated (the bypass config field)' },
    { key: 'transport', default: 'modern', description: 'virtio PCI interface (virtio-iommu: modern only)' },
  ],
  validate: (c, s) => {
    transportOf(c.get(`${s.node}.transport`), s.node);
    if (c.get(`${s.node}.bypass`) !== undefined) c.getBool(`${s.node}.bypass`, false);
    if (c.get(`${s.node}.iommu`) !== undefined && c.getBool(`${s.node}.iommu`, false)) {
      throw new ConfigError(`virtio-iommu at pci slot ${s.where}: the IOMMU cannot be behind itself`);
    }
  },
  model: () => import('./virtio-iommu.js').then((m) => m.virtioIommuModel),
};
