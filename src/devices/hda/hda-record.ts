// hda's record (pci-device.ts; bhyve's pci_de_hda); the emulation is
// hda.ts, loaded when a run configures one.

import type { PciDeviceRecord } from '../pci-device.js';

/** bhyve's pci_de_hda. */
export const hdaDevice: PciDeviceRecord = {
  name: 'hda', description: 'High Definition Audio controller',
  keys: [
    { key: 'play', description: 'hda playback: a file or FIFO that receives the raw PCM the guest plays' },
    { key: 'rec', description: 'hda recording: a file or FIFO of raw PCM the guest records' },
  ],
  model: () => import('./hda.js').then((m) => m.hdaModel),
};
