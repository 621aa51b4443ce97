// virtio-9p's record (pci-device.ts; bhyve's pci_de_v9p): its legacy
// option string and the checks that need no host access; the emulation is
// virtio-9p.ts, loaded when a run configures one.

import type { ConfigTree } from '../../config/tree.js';
import { ConfigError } from '../../config/tree.js';
import { setBool, setValue } from '../../config/legacy.js';
import type { LegacyParser, PciDeviceRecord, PciSlot } from '../pci-device.js';
import { VIRTIO_PCI_KEYS } from './virtio-pci-keys.js';

/** bhyve's VT9P_MAXTAGSZ. */
export const VT9P_MAXTAGSZ = 256;

/** pci_vt9p_legacy_config(): one `sharename=/path` item, every other item
 * a boolean set to true (`ro`). */
export const vt9pLegacyConfig: LegacyParser = (tree, node, opts) => {
  if (opts === undefined) return;
  let named = false;
  for (const token of opts.split(',')) {
    const eq = token.indexOf('=');
    if (eq >= 0) {
      if (named) throw new ConfigError('virtio-9p: more than one share name given');
      named = true;
      setValue(tree, `${node}.sharename`, token.slice(0, eq));
      setValue(tree, `${node}.path`, token.slice(eq + 1));
    } else if (token !== '') {
      setBool(tree, `${node}.${token}`, true);
    }
  }
};

/** pci_vt9p_init's checks that need no host access. */
function validate(config: ConfigTree, s: PciSlot): void {
  const node = s.node;
  if (config.get(`${node}.path`) === undefined) {
    throw new ConfigError(`pci slot ${s.where}: virtio-9p: path required (e.g. -s ${s.slot},virtio-9p,sharename=/path)`);
  }
  const tag = config.get(`${node}.sharename`);
  if (tag === undefined) throw new ConfigError(`pci slot ${s.where}: virtio-9p: share name required (sharename=/path)`);
  if (Buffer.byteLength(tag, 'utf8') > VT9P_MAXTAGSZ) {
    throw new ConfigError(`pci slot ${s.where}: virtio-9p: share name too long (at most ${VT9P_MAXTAGSZ} bytes)`);
  }
  config.getBool(`${node}.ro`, false);
}

/** bhyve's pci_de_v9p. */
export const virtio9pDevice: PciDeviceRecord = {
  name: 'virtio-9p',
  description: 'virtio 9p (VirtFS) file sharing',
  legacyConfig: vt9pLegacyConfig,
  keys: [
    { key: 'sharename', description: 'virtio-9p share name (the guest\'s mount tag)' },
    { key: 'path', description: 'shared host directory' },
    { key: 'ro', default: 'false', description: 'read-only share' },
    ...VIRTIO_PCI_KEYS,
  ],
  validate,
  model: () => import('./virtio-9p.js').then((m) => m.virtio9pModel),
};
