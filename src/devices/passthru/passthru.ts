// bhyve's passthru (pci_passthru.c): a PCI device of the host or of another
// process handed to the guest. A host device (bhyve's B/S/F, pptN, and the
// Linux forms DDDD:BB:SS.F and /dev/vfio/devices/vfioN) is found and the
// host's VFIO set-up checked before the VM exists (host-device.ts), then
// opened through iommufd or the VFIO group API (vfio-backend.ts); a device
// another process serves over vfio-user (vfio-user=SOCKET: bhyve-vfio-user,
// SPDK's NVMe target) is connected to (vfio-user-backend.ts). Both drive the
// same passthrough function (passthru-function.ts).

import { ConfigError, type ConfigTree } from '../../config/tree.js';
import fs from 'node:fs';
import type { PciDeviceModel } from '../pci-device.js';
import { readRom } from './rom-file.js';
import { checkHostDevice, passthruSource } from './host-device.js';
import { identityDmaSpace, type DmaSpaceLike } from './dma-window.js';
import { PassthruFunction } from './passthru-function.js';
import { pciEndpointId } from '../iommu/dma-space.js';
import { VfioUserBackend } from './vfio-user-backend.js';
import { mapGuestRamFile, VfioBackend } from './vfio-backend.js';
import { hostVfioIo } from './vfio-host-io.js';

/** The emulation of its record (passthru-record.ts). */
export const passthruModel: PciDeviceModel = {
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
