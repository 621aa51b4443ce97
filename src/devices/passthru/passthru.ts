// bhyve's passthru (pci_passthru.c): a host PCI device handed to the guest.
// Not built yet: the slot parses bhyve's forms and the Linux ones, and at
// start the host device is found and the host's VFIO set-up checked, so the
// refusal says either what the host is missing or that the device is ready
// and only the emulation is lacking.

import { ConfigError, type ConfigTree } from '../../config/tree.js';
import { parseLegacyConfig, setValue } from '../../config/legacy.js';
import type { LegacyParser, PciDeviceRecord, PciSlot } from '../pci-device.js';
import { checkHostDevice, HostSetupError, isLinuxForm, passthruSource } from './host-device.js';

/**
 * passthru_legacy_config(): `pptN` | `pciB:S:F` | `B/S/F`, then name=value;
 * and the Linux forms `DDDD:BB:SS.F` (host=) and `/dev/vfio/devices/vfioN` (cdev=).
 */
const passthruLegacy: LegacyParser = (tree, node, opts) => {
  if (opts === undefined) return;
  const comma = opts.indexOf(',');
  const first = comma < 0 ? opts : opts.slice(0, comma);
  // sscanf-like, as bhyve: trailing characters after B/S/F are ignored.
  const m = /^pci0:(\d+):(\d+):(\d+)/.exec(first) ?? /^pci(\d+):(\d+):(\d+)/.exec(first) ?? /^(\d+)\/(\d+)\/(\d+)/.exec(first);
  if (first.startsWith('ppt')) {
    setValue(tree, `${node}.pptdev`, first);
  } else if (m) {
    setValue(tree, `${node}.bus`, String(Number(m[1])));
    setValue(tree, `${node}.slot`, String(Number(m[2])));
    setValue(tree, `${node}.func`, String(Number(m[3])));
  } else if (isLinuxForm(first)) {
    setValue(tree, `${node}.${first.startsWith('/') ? 'cdev' : 'host'}`, first);
  } else {
    throw new ConfigError(`passthru: invalid options "${opts}" (use pptN, pciB:S:F, B/S/F, DDDD:BB:SS.F or /dev/vfio/devices/vfioN)`);
  }
  if (comma >= 0) parseLegacyConfig(tree, node, opts.slice(comma + 1));
};

/** What start says of the host besides "not supported yet": the set-up it lacks, or the device found. */
function hostStatus(config: ConfigTree, slot: PciSlot): string {
  try {
    const d = checkHostDevice(passthruSource(config, slot.node));
    return `host device ${d.address} is ready (IOMMU group ${d.group}, ${d.node}) but passthrough is not built`;
  } catch (e) {
    if (e instanceof HostSetupError) return `and the host is not set up for it: ${e.message.replace(/^passthru: /, '')}`;
    throw e;
  }
}

export const passthruDevice: PciDeviceRecord = {
  name: 'passthru', description: 'host PCI device passthrough', legacyConfig: passthruLegacy,
  keys: [
    { key: 'bus', description: 'passthru host PCI bus' },
    { key: 'slot', description: 'passthru host PCI slot' },
    { key: 'func', description: 'passthru host PCI function' },
    { key: 'pptdev', description: 'passthru host ppt device name' },
    { key: 'host', description: 'passthru host PCI address (Linux form DDDD:BB:SS.F)' },
    { key: 'cdev', description: 'passthru VFIO device file (/dev/vfio/devices/vfioN)' },
    { key: 'rom', description: 'passthru option ROM file' },
  ],
  validate(config, slot) {
    passthruSource(config, slot.node);
  },
  hostStatus,
};
