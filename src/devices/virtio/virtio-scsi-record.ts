// virtio-scsi's record (pci-device.ts; bhyve's pci_de_vscsi); the
// emulation is virtio-scsi.ts, loaded when a run configures one.

import { ConfigError, type ConfigTree } from '../../config/tree.js';
import { parseLegacyConfig, setValue } from '../../config/legacy.js';
import { BLOCKIF_KEYS } from '../block/blockif-keys.js';
import type { LegacyParser, PciDeviceRecord, PciSlot } from '../pci-device.js';
import { VIRTIO_PCI_KEYS } from './virtio-pci-keys.js';

/** The first item, unless name=value, is the disk (bhyve: the CTL device
 * path); the rest is the generic name=value list. */
export const vtscsiLegacyConfig: LegacyParser = (tree, node, opts) => {
  if (opts === undefined) return;
  const comma = opts.indexOf(',');
  const first = comma < 0 ? opts : opts.slice(0, comma);
  if (first.includes('=')) { parseLegacyConfig(tree, node, opts); return; }
  if (first !== '') setValue(tree, `${node}.dev`, first);
  if (comma >= 0) parseLegacyConfig(tree, node, opts.slice(comma + 1));
};

function validate(config: ConfigTree, s: PciSlot): void {
  if (config.get(`${s.node}.dev`) === undefined) {
    throw new ConfigError(`pci slot ${s.where}: virtio-scsi requires a disk image or block device (e.g. -s ${s.slot},virtio-scsi,/path/to/disk.img)`);
  }
  const iid = config.get(`${s.node}.iid`);
  if (iid !== undefined && !/^\d+$/.test(iid)) throw new ConfigError(`pci slot ${s.where}: virtio-scsi: invalid iid "${iid}"`);
}

/** bhyve's pci_de_vscsi. */
export const virtioScsiDevice: PciDeviceRecord = {
  name: 'virtio-scsi',
  description: 'virtio SCSI controller',
  legacyConfig: vtscsiLegacyConfig,
  keys: [
    { key: 'dev', description: 'virtio-scsi logical unit: disk image or block device (bhyve: the CTL device)' },
    { key: 'iid', default: '0', description: 'virtio-scsi initiator ID (one initiator: no effect)' },
    ...BLOCKIF_KEYS.filter((k) => k.key !== 'path'),
    ...VIRTIO_PCI_KEYS,
  ],
  bootable: true,
  validate,
  model: () => import('./virtio-scsi.js').then((m) => m.virtioScsiModel),
};
