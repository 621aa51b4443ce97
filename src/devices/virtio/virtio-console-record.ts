// virtio-console's record (pci-device.ts; bhyve's pci_de_vcon): its legacy
// port list; the emulation is virtio-console.ts, loaded when a run
// configures one (the main thread opens the port sockets: host-ports.ts).

import { ConfigError } from '../../config/tree.js';
import { createNode, setValue } from '../../config/legacy.js';
import type { LegacyParser, PciDeviceRecord } from '../pci-device.js';
import { VTCON_MAXPORTS } from './console-backend.js';
import { VIRTIO_PCI_KEYS } from './virtio-pci-keys.js';

/** pci_vtcon_legacy_config(): `port1=/sock[,port2=/sock...]` -> port.N.{name,path}. */
const vtconLegacy: LegacyParser = (tree, node, opts) => {
  if (opts === undefined) return;
  createNode(tree, `${node}.port`);
  let port = 0;
  for (const opt of opts.split(',')) {
    if (opt === 'transport=legacy' || opt === 'transport=modern') {
      setValue(tree, `${node}.transport`, opt.slice(opt.indexOf('=') + 1));
      continue;
    }
    const eq = opt.indexOf('=');
    if (eq < 0) throw new ConfigError(`vtcon: port ${opt} requires a path`);
    if (port >= VTCON_MAXPORTS) throw new ConfigError('vtcon: too many ports');
    setValue(tree, `${node}.port.${port}.name`, opt.slice(0, eq));
    setValue(tree, `${node}.port.${port}.path`, opt.slice(eq + 1));
    port++;
  }
};

/** bhyve's pci_de_vcon; the port sockets are opened by the main thread
 * (devices/virtio/host-ports.ts). */
export const virtioConsoleDevice: PciDeviceRecord = {
  name: 'virtio-console',
  description: 'virtio console with up to 16 ports',
  legacyConfig: vtconLegacy,
  keys: [
    { key: 'port.N.name', description: 'name of console port N' },
    { key: 'port.N.path', description: 'UNIX socket of console port N' },
    ...VIRTIO_PCI_KEYS,
  ],
  model: () => import('./virtio-console.js').then((m) => m.virtioConsoleModel),
};
