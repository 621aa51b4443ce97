// The PCI emulations bhyve has that this project has not built yet, as
// records without create(): `-s` parses their configuration strings as
// bhyve does, their start-time checks run, `-s help` marks them, and bhyve
// refuses to start with one ("not supported yet"). A device that gets built
// moves its record to its own file (with create()) and its import in
// registry.ts.

import type { PciDeviceRecord } from './pci-device.js';

export const hdaDevice: PciDeviceRecord = {
  name: 'hda', description: 'High Definition Audio controller',
  keys: [{ key: 'play', description: 'hda playback device' }, { key: 'rec', description: 'hda recording device' }],
};
