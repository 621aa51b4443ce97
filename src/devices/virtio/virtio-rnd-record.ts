// virtio-rnd's record (pci-device.ts; bhyve's pci_de_vrnd); the emulation
// is virtio-rnd.ts, loaded when a run configures one.

import type { PciDeviceRecord } from '../pci-device.js';
import { VIRTIO_PCI_KEYS } from './virtio-pci-keys.js';

/** bhyve's pci_de_vrnd. */
export const virtioRndDevice: PciDeviceRecord = {
  name: 'virtio-rnd',
  description: 'virtio random number generator',
  keys: [...VIRTIO_PCI_KEYS],
  model: () => import('./virtio-rnd.js').then((m) => m.virtioRndModel),
};
