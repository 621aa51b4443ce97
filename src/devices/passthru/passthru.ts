// bhyve's passthru (pci_passthru.c): a PCI device of another process or of
// the host handed to the guest. Built over vfio-user (vfio-user=SOCKET: a
// device another process serves, e.g. bhyve-vfio-user or SPDK's NVMe
// target); a host device (bhyve's B/S/F, pptN, and the Linux forms) is
// found and the host's VFIO set-up checked, and the refusal says either
// what the host is missing or that the device is ready and only the VFIO
// backend is lacking (it could not be verified on hardware here).

import { ConfigError, type ConfigTree } from '../../config/tree.js';
import { parseLegacyConfig, setValue } from '../../config/legacy.js';
import fs from 'node:fs';
import type { PciDeviceRecord, LegacyParser, PciSlot } from '../pci-device.js';
import { checkHostDevice, HostSetupError, isLinuxForm, passthruSource } from './host-device.js';
import { identityDmaSpace, type DmaSpaceLike } from './dma-window.js';
import { PassthruFunction } from './passthru-function.js';
import { pciEndpointId } from '../iommu/dma-space.js';
import { IOMMU_KEY } from '../iommu/iommu-config.js';
import { VfioUserBackend } from './vfio-user-backend.js';

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

/** What start says of the host besides "not supported yet": the set-up it lacks, or the device found. */
function hostStatus(config: ConfigTree, slot: PciSlot): string {
  try {
    const d = checkHostDevice(passthruSource(config, slot.node));
    return `host device ${d.address} is ready (IOMMU group ${d.group}, ${d.node}) but passthrough of host devices is not built (vfio-user=SOCKET devices are)`;
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
    { key: 'vfio-user', description: 'passthru of a device served over vfio-user at this UNIX socket' },
    { key: 'rom', description: 'passthru option ROM file' },
    { key: IOMMU_KEY, default: 'false', description: 'passthru device behind the virtio-iommu: its DMA windows are the guest\'s IOMMU mappings' },
  ],
  validate(config, slot) {
    const src = passthruSource(config, slot.node);
    if (src.kind === 'vfio-user') {
      if (config.get(`${slot.node}.rom`) !== undefined) throw new ConfigError('passthru: rom= is not supported with vfio-user devices (the server provides the ROM region)');
      let st: fs.Stats;
      try { st = fs.statSync(src.path); } catch { throw new ConfigError(`passthru: no vfio-user socket ${src.path}`); }
      if (!st.isSocket()) throw new ConfigError(`passthru: vfio-user=${src.path} is not a socket`);
    }
  },
  builtFor: (config, slot) => passthruSource(config, slot.node).kind === 'vfio-user',
  hostStatus,
  create(ctx, slot, chipset) {
    const src = passthruSource(ctx.config, slot.node);
    if (src.kind !== 'vfio-user') throw new ConfigError(`not supported yet: passthru of host devices; ${hostStatus(ctx.config, slot)}`);
    // The function's DMA space: the IOMMU's when it is behind one.
    const space: DmaSpaceLike = chipset.dma?.forEndpoint(pciEndpointId(slot.bus, slot.slot, slot.func)) ?? identityDmaSpace(ctx.mem.ranges());
    const helper = ctx.kvm?.helper;
    // The guest RAM file stays open with the backend (it closes it): a
    // window the guest's IOMMU MAPs later is handed over with it again.
    let ramFd: number | undefined;
    if (helper) ramFd = fs.openSync(helper.memoryPath, 'r+');
    try {
      const backend = VfioUserBackend.connect(src.path, space, ctx.mem, ramFd === undefined ? undefined : { fd: ramFd, layout: helper!.layout });
      return new PassthruFunction(ctx, backend);
    } catch (e) {
      if (ramFd !== undefined) fs.closeSync(ramFd);
      throw new ConfigError(`passthru: vfio-user device at ${src.path}: ${(e as Error).message}`);
    }
  },
};
