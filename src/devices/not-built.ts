// The PCI emulations bhyve has that this project has not built yet, as
// records without create(): `-s` parses their configuration strings as
// bhyve does, their start-time checks run, `-s help` marks them, and bhyve
// refuses to start with one ("not supported yet"). A device that gets built
// moves its record to its own file (with create()) and its import in
// registry.ts.

import { ConfigError, type ConfigTree } from '../config/tree.js';
import { parseLegacyConfig, setValue } from '../config/legacy.js';
import type { LegacyParser, PciDeviceRecord } from './pci-device.js';

/** passthru_legacy_config(): `pptN` | `pciB:S:F` | `B/S/F`, then name=value. */
const passthruLegacy: LegacyParser = (tree, node, opts) => {
  if (opts === undefined) return;
  const comma = opts.indexOf(',');
  const first = comma < 0 ? opts : opts.slice(0, comma);
  const m = /^pci0:(\d+):(\d+):(\d+)/.exec(first) ?? /^pci(\d+):(\d+):(\d+)/.exec(first) ?? /^(\d+)\/(\d+)\/(\d+)/.exec(first);
  if (first.startsWith('ppt')) {
    setValue(tree, `${node}.pptdev`, first);
  } else if (m) {
    setValue(tree, `${node}.bus`, String(Number(m[1])));
    setValue(tree, `${node}.slot`, String(Number(m[2])));
    setValue(tree, `${node}.func`, String(Number(m[3])));
  } else {
    throw new ConfigError(`passthru: invalid options "${opts}" (use pptN, pciB:S:F or B/S/F)`);
  }
  if (comma >= 0) parseLegacyConfig(tree, node, opts.slice(comma + 1));
};

export const passthruDevice: PciDeviceRecord = {
  name: 'passthru', description: 'host PCI device passthrough', legacyConfig: passthruLegacy,
  keys: [
    { key: 'bus', description: 'passthru host PCI bus' },
    { key: 'slot', description: 'passthru host PCI slot' },
    { key: 'func', description: 'passthru host PCI function' },
    { key: 'pptdev', description: 'passthru host ppt device name' },
    { key: 'rom', description: 'passthru option ROM file' },
  ],
};
export const hdaDevice: PciDeviceRecord = {
  name: 'hda', description: 'High Definition Audio controller',
  keys: [{ key: 'play', description: 'hda playback device' }, { key: 'rec', description: 'hda recording device' }],
};
