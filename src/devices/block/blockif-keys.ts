// What the records of the disk controllers (virtio-blk, virtio-scsi, AHCI,
// NVMe) say about bhyve's blockif options: their keys and the start-time
// check that a disk names its image. Record-side: no backend code here
// (the backend is block-backend.ts, loaded with the models).

import { ConfigError, type ConfigTree } from '../../config/tree.js';
import type { DeviceKey, PciSlot } from '../pci-device.js';

/** The blockif keys of a device's node (bhyve_config(5), configKeys()). */
export const BLOCKIF_KEYS: readonly DeviceKey[] = [
  { key: 'path', description: 'backing file or block device' },
  { key: 'nocache', default: 'false', description: 'open the backing file with O_DIRECT' },
  { key: 'direct', default: 'false', description: 'open the backing file with O_SYNC' },
  { key: 'sync', default: 'false', description: 'alias of direct' },
  { key: 'ro', default: 'false', description: 'read-only device' },
  { key: 'nodelete', default: 'false', description: 'do not pass discard requests to the backing file' },
  { key: 'sectorsize', description: 'logical[/physical] sector size' },
  { key: 'ser', description: 'serial number' },
  { key: 'bootindex', description: 'boot order index for the firmware' },
];

/** Start-time check: a blockif node names its image. `example` is the
 * slot's configuration string as a user would write it. */
export function requireBlockPath(config: ConfigTree, node: string, s: PciSlot, what: string, example: string): void {
  if (config.get(`${node}.path`) === undefined) {
    throw new ConfigError(`pci slot ${s.where}: ${what} requires a path (e.g. -s ${s.slot},${example})`);
  }
}

