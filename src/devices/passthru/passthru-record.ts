// passthru's record (pci-device.ts; bhyve's pci_de_passthru): the legacy
// option string and the host's set-up checked before the VM exists
// (host-device.ts, rom-file.ts); the emulation is passthru.ts, loaded
// when a run configures one.

import fs from 'node:fs';
import { ConfigError } from '../../config/tree.js';
import { parseLegacyConfig, setValue } from '../../config/legacy.js';
import type { PciDeviceRecord, LegacyParser } from '../pci-device.js';
import { IOMMU_KEY } from '../iommu/iommu-config.js';
import { checkHostDevice, isLinuxForm, passthruSource } from './host-device.js';
import { readRom } from './rom-file.js';

/**
 * passthru_legacy_config(): `pptN` | `pciB:S:F` | `B/S/F`, then name=value;
 * the Linux forms `DDDD:BB:SS.F` (host=) and `/dev/vfio/devices/vfioN`
 * (cdev=); or only name=value options (`vfio-user=SOCKET`).
 */
const passthruLegacy: LegacyParser = (tree, node, opts) => {
  if (opts === undefined) return;
  const comma = opts.indexOf(',');
  const first = comma < 0 ? opts : opts.slice(0, comma);
  if (first.includes('=')) {
    parseLegacyConfig(tree, node, opts);
    return;
  }
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
    throw new ConfigError(`passthru: invalid options "${opts}" (use pptN, pciB:S:F, B/S/F, DDDD:BB:SS.F, /dev/vfio/devices/vfioN or vfio-user=SOCKET)`);
  }
  if (comma >= 0) parseLegacyConfig(tree, node, opts.slice(comma + 1));
};

export const passthruDevice: PciDeviceRecord = {
  name: 'passthru', description: 'host PCI device passthrough', legacyConfig: passthruLegacy,
  // bhyve.8: passthru takes bootindex= (its option ROM may boot the guest).
  bootable: true,
  keys: [
    { key: 'bus', description: 'passthru host PCI bus' },
    { key: 'slot', description: 'passthru host PCI slot' },
    { key: 'func', description: 'passthru host PCI function' },
    { key: 'pptdev', description: 'passthru host ppt device name' },
    { key: 'host', description: 'passthru host PCI address (Linux form DDDD:BB:SS.F)' },
    { key: 'cdev', description: 'passthru VFIO device file (/dev/vfio/devices/vfioN)' },
    { key: 'vfio-user', description: 'passthru of a device served over vfio-user at this UNIX socket' },
    { key: 'rom', description: 'passthru option ROM file' },
    { key: 'bootindex', description: 'boot order index for the firmware' },
    { key: IOMMU_KEY, default: 'false', description: 'passthru device behind the virtio-iommu: its DMA windows are the guest\'s IOMMU mappings' },
  ],
  validate(config, slot) {
    const src = passthruSource(config, slot.node);
    if (src.kind !== 'vfio-user') {
      // The host's set-up, before the VM exists: one line when it is not ready.
      checkHostDevice(src);
      const rom = config.get(`${slot.node}.rom`);
      if (rom !== undefined) readRom(rom);
    } else {
      if (config.get(`${slot.node}.rom`) !== undefined) throw new ConfigError('passthru: rom= is not supported with vfio-user devices (the server provides the ROM region)');
      let st: fs.Stats;
      try { st = fs.statSync(src.path); } catch { throw new ConfigError(`passthru: no vfio-user socket ${src.path}`); }
      if (!st.isSocket()) throw new ConfigError(`passthru: vfio-user=${src.path} is not a socket`);
    }
  },
  model: () => import('./passthru.js').then((m) => m.passthruModel),
};
