// The keys every virtio PCI function's node has (bhyve_config(5)), for the
// virtio devices' records: record-side, without the transport's code
// (virtio-pci.ts, loaded with the models).

import type { DeviceKey } from '../pci-device.js';

/** The key every virtio device record reads besides its own. */
export const VIRTIO_PCI_KEYS: readonly DeviceKey[] = [
  { key: 'transport', default: 'transitional', description: 'virtio PCI interface: legacy, modern or transitional (both)' },
  { key: 'iommu', default: 'false', description: 'put the device behind the virtio-iommu: its DMA goes through the guest\'s mappings (VIRTIO_F_ACCESS_PLATFORM)' },
];
