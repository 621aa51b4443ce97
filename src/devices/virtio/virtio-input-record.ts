// virtio-input's record (pci-device.ts; bhyve's pci_de_vinput): the legacy
// option string, the transport check; the emulation is virtio-input.ts,
// loaded when a run configures one.

import { ConfigError, type ConfigTree } from '../../config/tree.js';
import { parseLegacyConfig, setValue } from '../../config/legacy.js';
import type { LegacyParser, PciDeviceRecord } from '../pci-device.js';
import type { VirtioPciTransport } from './virtio-pci.js';
import { VIRTIO_PCI_KEYS } from './virtio-pci-keys.js';

/** pci_vtinput_legacy_config(): the first item is the path, the rest name=value. */
const vtinputLegacy: LegacyParser = (tree, node, opts) => {
  if (opts === undefined) throw new ConfigError('virtio-input: missing path (use virtio-input,/dev/input/eventN)');
  const comma = opts.indexOf(',');
  setValue(tree, `${node}.path`, comma < 0 ? opts : opts.slice(0, comma));
  if (comma >= 0) parseLegacyConfig(tree, node, opts.slice(comma + 1));
};

/** The transport of its node: modern only (no legacy device id). */
export function transportOf(config: ConfigTree, node: string): VirtioPciTransport {
  const t = config.get(`${node}.transport`) ?? 'modern';
  if (t === 'modern') return t;
  if (t === 'transitional' || t === 'legacy') {
    throw new ConfigError(`virtio-input has no legacy virtio PCI device id; use transport=modern (not ${t})`);
  }
  throw new ConfigError(`virtio-input@${node}: invalid transport "${t}" (use modern)`);
}

/** bhyve's pci_de_vinput. */
export const virtioInputDevice: PciDeviceRecord = {
  name: 'virtio-input', description: 'virtio input device', legacyConfig: vtinputLegacy,
  keys: [
    { key: 'path', description: 'host evdev device (/dev/input/eventN) passed through' },
    { key: 'transport', default: 'modern', description: 'virtio PCI interface (virtio-input: modern only)' },
    VIRTIO_PCI_KEYS.find((k) => k.key === 'iommu')!,
  ],
  validate: (c, s) => {
    if (c.get(`${s.node}.path`) === undefined) throw new ConfigError(`virtio-input at pci slot ${s.where}: missing path (use virtio-input,/dev/input/eventN)`);
    transportOf(c, s.node);
  },
  model: () => import('./virtio-input.js').then((m) => m.virtioInputModel),
};
