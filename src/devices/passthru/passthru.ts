// bhyve's passthru (pci_passthru.c): a PCI device of the host or of another
// process handed to the guest. A host device (bhyve's B/S/F, pptN, and the
// Linux forms DDDD:BB:SS.F and /dev/vfio/devices/vfioN) is found and the
// host's VFIO set-up checked before the VM exists (host-device.ts), then
// opened through iommufd or the VFIO group API (vfio-backend.ts); a device
// another process serves over vfio-user (vfio-user=SOCKET: bhyve-vfio-user,
// SPDK's NVMe target) is connected to (vfio-user-backend.ts). Both drive the
// same passthrough function (passthru-function.ts).

import { ConfigError, type ConfigTree } from '../../config/tree.js';
import { parseLegacyConfig, setValue } from '../../config/legacy.js';
import fs from 'node:fs';
import type { PciDeviceRecord, LegacyParser, PciSlot } from '../pci-device.js';
import { checkHostDevice, isLinuxForm, passthruSource } from './host-device.js';
import { identityDmaSpace, type DmaSpaceLike } from './dma-window.js';
import { PassthruFunction, romBarSize, ROM_SPACE } from './passthru-function.js';
import { pciEndpointId } from '../iommu/dma-space.js';
import { IOMMU_KEY } from '../iommu/iommu-config.js';
import { VfioUserBackend } from './vfio-user-backend.js';
import { mapGuestRamFile, VfioBackend } from './vfio-backend.js';
import { hostVfioIo } from './vfio-host-io.js';

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

/** The rom= file (bhyve's passthru_init_rom): read before the sandbox, checked as bhyve does. */
function readRom(file: string): Uint8Array {
  let bytes: Uint8Array;
  try { bytes = fs.readFileSync(file); } catch { throw new ConfigError(`passthru: can't open romfile "${file}"`); }
  if (bytes.length === 0) throw new ConfigError(`passthru: romfile "${file}" is empty`);
  if (romBarSize(bytes.length) > ROM_SPACE) throw new ConfigError(`passthru: romfile "${file}" does not fit the ${ROM_SPACE / 0x100000} MiB ROM space`);
  return bytes;
}

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
  create(ctx, slot, chipset) {
    const src = passthruSource(ctx.config, slot.node);
    // The function's DMA space: the IOMMU's when it is behind one.
    const space: DmaSpaceLike = chipset.dma?.forEndpoint(pciEndpointId(slot.bus, slot.slot, slot.func)) ?? identityDmaSpace(ctx.mem.ranges());
    const helper = ctx.kvm?.helper;
    if (src.kind !== 'vfio-user') {
      const device = checkHostDevice(src);
      if (!helper) throw new ConfigError('passthru: a host device needs KVM and the guest RAM file (its DMA windows)');
      const io = hostVfioIo(process.env.BHYVE_PASSTHRU_HOST_ROOT || '/');
      // Guest RAM mapped here for the kernel to pin; the file is not needed after.
      const fd = fs.openSync(helper.memoryPath, 'r+');
      let ram;
      try { ram = mapGuestRamFile(io, fd, helper.layout); } finally { fs.closeSync(fd); }
      let backend: VfioBackend;
      try {
        backend = VfioBackend.open(device, { io, space, ram, kvm: ctx.kvm });
      } catch (e) {
        ram.close();
        throw e;
      }
      try {
        const romFile = ctx.config.get(`${slot.node}.rom`);
        return new PassthruFunction(ctx, backend, { rom: romFile === undefined ? undefined : readRom(romFile) });
      } catch (e) {
        backend.close();
        if (e instanceof ConfigError) throw e;
        throw new ConfigError(`passthru: host device ${device.address}: ${(e as Error).message}`);
      }
    }
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
