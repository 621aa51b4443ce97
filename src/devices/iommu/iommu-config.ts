// Which PCI functions sit behind the emulated IOMMU: those whose node has
// `iommu=true` (bhyve_config(5)). Only emulations that route their DMA
// through a DmaSpace may say so (their record lists the `iommu` key:
// the virtio devices, passthru); for any other the key is refused.

import { ConfigError, type ConfigTree } from '../../config/tree.js';
import { pciNodes } from '../../config/pci-nodes.js';
import type { PciDeviceRecord } from '../pci-device.js';
import { pciEndpointId } from './dma-space.js';

/** The record key that puts a function behind the IOMMU. */
export const IOMMU_KEY = 'iommu';

/** Requester ids of the functions configured behind the IOMMU; throws
 * ConfigError for a device that cannot be, and when no IOMMU is there. */
export function iommuEndpoints(config: ConfigTree, find: (name: string) => PciDeviceRecord | undefined): number[] {
  const out: number[] = [];
  let iommus = 0;
  for (const s of pciNodes(config)) {
    const emul = config.get(`${s.node}.device`);
    if (emul === 'virtio-iommu') iommus++;
    if (config.get(`${s.node}.${IOMMU_KEY}`) === undefined) continue;
    if (!config.getBool(`${s.node}.${IOMMU_KEY}`, false)) continue;
    const record = emul === undefined ? undefined : find(emul);
    if (!record || !record.keys.some((k) => k.key === IOMMU_KEY)) {
      throw new ConfigError(`${emul ?? 'device'} at pci slot ${s.where}: iommu=true is not supported for this device (only virtio devices and passthru translate their DMA)`);
    }
    out.push(pciEndpointId(s.bus, s.slot, s.func));
  }
  if (out.length > 0 && iommus === 0) {
    throw new ConfigError('iommu=true needs a virtio-iommu device (add -s SLOT,virtio-iommu)');
  }
  if (iommus > 1) throw new ConfigError('only one virtio-iommu device is supported');
  return out;
}
