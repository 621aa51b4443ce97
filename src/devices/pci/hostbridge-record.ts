// The host bridge's records (pci-device.ts; bhyve's pci_de_hostbridge and
// pci_de_amd_hostbridge), for the option parsing and start-time checks; the
// emulation is hostbridge.ts, loaded when a run configures one.

import { setValue } from '../../config/legacy.js';
import type { DeviceKey, PciDeviceRecord } from '../pci-device.js';

const HOSTBRIDGE_KEYS: readonly DeviceKey[] = [
  { key: 'vendor', default: '0x1275', description: 'hostbridge PCI vendor ID' },
  { key: 'devid', default: '0x1275', description: 'hostbridge PCI device ID' },
  { key: 'pcireg.vendor', description: 'PCI vendor ID override (hex, or host)' },
  { key: 'pcireg.device', description: 'PCI device ID override (hex, or host)' },
  { key: 'pcireg.revid', description: 'PCI revision ID override' },
  { key: 'pcireg.subvendor', description: 'PCI subsystem vendor ID override' },
  { key: 'pcireg.subdevice', description: 'PCI subsystem device ID override' },
];

/** bhyve's pci_de_hostbridge; with lpc.fwcfg=qemu, QEMU's i440FX (i440fx.ts). */
export const hostbridgeDevice: PciDeviceRecord = {
  name: 'hostbridge',
  description: 'PCI host bridge',
  keys: HOSTBRIDGE_KEYS,
  model: () => import('./hostbridge.js').then((m) => m.hostbridgeModel),
};

/** bhyve's pci_de_amd_hostbridge: `-s N,amd_hostbridge` stores a hostbridge
 * with AMD ids (pci_amd_hostbridge_legacy_config). */
export const amdHostbridgeDevice: PciDeviceRecord = {
  name: 'amd_hostbridge',
  alias: 'hostbridge',
  description: 'PCI host bridge with AMD vendor ID',
  legacyConfig: (tree, node) => {
    setValue(tree, `${node}.vendor`, '0x1022');
    setValue(tree, `${node}.devid`, '0x7432');
  },
  keys: HOSTBRIDGE_KEYS,
  model: () => import('./hostbridge.js').then((m) => m.amdHostbridgeModel),
};
