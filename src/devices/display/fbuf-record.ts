// fbuf's record (pci-device.ts; bhyve's pci_fbuf devemu): keys and the
// options' check (fbuf-options.ts); the emulation is fbuf.ts, loaded when
// a run configures one (the main thread runs the VNC server: fbuf-host.ts).

import type { PciDeviceRecord } from '../pci-device.js';
import { parseFbufOptions } from './fbuf-options.js';

/** bhyve's pci_fbuf devemu: `-s N,fbuf,...`. */
export const fbufDevice: PciDeviceRecord = {
  name: 'fbuf',
  description: 'raw framebuffer with VNC server',
  keys: [
    { key: 'wait', default: 'false', description: 'fbuf waits for a VNC client before booting' },
    { key: 'rfb', description: 'fbuf VNC listen address and port' },
    { key: 'tcp', description: 'alias of rfb' },
    { key: 'unix', description: 'fbuf VNC unix socket path (instead of rfb/tcp)' },
    { key: 'vga', default: 'io', description: 'fbuf VGA mode (io, on, off)' },
    { key: 'w', default: '1024', description: 'fbuf width' },
    { key: 'h', default: '768', description: 'fbuf height' },
    { key: 'password', description: 'fbuf VNC password' },
  ],
  validate: (config, s) => { parseFbufOptions(config, s.node); },
  model: () => import('./fbuf.js').then((m) => m.fbufModel),
};
