// Opening a host PCI device through VFIO, the two ways Linux offers:
//
//   iommufd (the cdev API, Linux 6.6+): open /dev/vfio/devices/vfioN and
//   /dev/iommu, VFIO_DEVICE_BIND_IOMMUFD, IOMMU_IOAS_ALLOC an I/O address
//   space, VFIO_DEVICE_ATTACH_IOMMUFD_PT to it; DMA windows are
//   IOMMU_IOAS_MAP/UNMAP at a fixed IOVA.
//
//   the container/group API: open /dev/vfio/vfio, VFIO_GET_API_VERSION,
//   VFIO_CHECK_EXTENSION(TYPE1v2), open /dev/vfio/GROUP,
//   VFIO_GROUP_GET_STATUS (viable), VFIO_GROUP_SET_CONTAINER,
//   VFIO_SET_IOMMU(TYPE1v2), VFIO_GROUP_GET_DEVICE_FD(address); DMA windows
//   are VFIO_IOMMU_MAP_DMA/UNMAP_DMA on the container.
//
// host-device.ts has already chosen the way from sysfs (iommufd where the
// kernel has /dev/iommu and the device its vfio-dev node) and checked what
// sysfs can tell; what only the kernel's answers tell becomes one line here.

import { strerror } from '../../sys/libc.js';
import {
  ATTACH_IOMMUFD_PT, BIND_IOMMUFD, DMA_MAP, DMA_MAP_FLAG, DMA_UNMAP, GROUP_FLAGS, GROUP_STATUS, IOAS_ALLOC, IOAS_MAP,
  IOAS_MAP_FLAG, IOAS_UNMAP, IOMMUFD, IOMMUFD_SIZEOF, VFIO, VFIO_API_VERSION, VFIO_CDEV, VFIO_IOMMU_TYPE, VFIO_SIZEOF,
} from '../../sys/vfio-abi.js';
import { HostSetupError, type HostDevice } from './host-device.js';
import { VfioCallError, type VfioHostIo } from './vfio-host-io.js';

/** DMA windows of the device's I/O address space: IOVA -> this process's memory. */
export interface VfioDma {
  /** A window the device may read and/or write (at least one). */
  map(iova: number, vaddr: bigint, size: number, readable: boolean, writable: boolean): void;
  unmap(iova: number, size: number): void;
}

export interface OpenedVfioDevice {
  api: 'iommufd' | 'group';
  deviceFd: number;
  /** The file KVM's VFIO device is told about: the group (group API) or the device file (iommufd). */
  kvmFile: number;
  dma: VfioDma;
  /** Closes the device, then the group/container or the iommufd. */
  close(): void;
}

const ENOENT = 2, ENXIO = 6, ENODEV = 19, EACCES = 13, EPERM = 1, EBUSY = 16, ENOTTY = 25, ENOMEM = 12, EFAULT = 14, EOPNOTSUPP = 95;

/** One line for a failed host call (the user's to fix). */
export function explainVfioError(e: VfioCallError, address: string): HostSetupError {
  // The device's own descriptor (from GROUP_GET_DEVICE_FD) has no path.
  const f = e.file.startsWith('fd ') ? `host PCI device ${address}` : e.file;
  const why = (s: string): HostSetupError => new HostSetupError(`passthru: ${s}`);
  if (e.call === 'open') {
    if (e.errno === ENOENT || e.errno === ENODEV || e.errno === ENXIO) return why(`no such device: ${f} (for host PCI device ${address})`);
    if (e.errno === EACCES || e.errno === EPERM) return why(`no permission to open ${f} read-write (run bhyve as root, or give its user the file: chown USER ${f})`);
    if (e.errno === EBUSY) return why(`${f} is busy: host PCI device ${address} (or its IOMMU group) is in use by another process or VM`);
  }
  if (e.errno === ENOTTY) return why(`${f} is not a VFIO device: the kernel does not know ${e.call} there`);
  if (e.errno === EBUSY) return why(`${e.call} on ${f}: busy: host PCI device ${address} (or its IOMMU group) is in use by another process or VM`);
  if (e.errno === EPERM && e.call === 'VFIO_DEVICE_BIND_IOMMUFD') return why(`${e.call} on ${f}: not permitted (the device's group is open through /dev/vfio/GROUP by another process, or the device is not vfio-pci's)`);
  return why(`${e.call} on ${f}: ${strerror(e.errno)}`);
}

/** A DMA window the kernel refused; ENOMEM is the locked-memory limit. */
export function explainDmaError(e: VfioCallError, iova: number, size: number): HostSetupError {
  const mib = Math.ceil(size / 0x100000);
  if (e.errno === ENOMEM) {
    return new HostSetupError(`passthru: cannot pin ${mib} MiB of guest memory for the device's DMA (${e.call}: ${strerror(e.errno)}): `
      + 'the locked-memory limit is too low (ulimit -l, or LimitMEMLOCK= for a service; root has none)');
  }
  if (e.errno === EFAULT || e.errno === EOPNOTSUPP) {
    // Linux pins shared file pages for long only on tmpfs and hugetlbfs.
    return new HostSetupError(`passthru: cannot pin guest memory for the device's DMA (${e.call}: ${strerror(e.errno)}): `
      + 'the guest memory file must be on tmpfs or hugetlbfs (set BHYVE_RUNDIR to a directory on tmpfs, such as one under /dev/shm)');
  }
  return new HostSetupError(`passthru: ${e.call} of IOVA 0x${iova.toString(16)}+0x${size.toString(16)} on ${e.file}: ${strerror(e.errno)}`);
}

const u32 = (b: Uint8Array, off: number, v: number): void => new DataView(b.buffer, b.byteOffset).setUint32(off, v >>> 0, true);
const u64 = (b: Uint8Array, off: number, v: number | bigint): void => new DataView(b.buffer, b.byteOffset).setBigUint64(off, BigInt(v), true);
const getU32 = (b: Uint8Array, off: number): number => new DataView(b.buffer, b.byteOffset).getUint32(off, true);

/** Runs the steps; a failed call becomes its one line, and what was opened is closed. */
function opening<T>(io: VfioHostIo, address: string, fds: number[], f: () => T): T {
  try {
    return f();
  } catch (e) {
    for (const fd of fds.reverse()) io.close(fd);
    if (e instanceof VfioCallError) throw explainVfioError(e, address);
    throw e;
  }
}

/** The iommufd (cdev) way. */
export function openIommufd(io: VfioHostIo, dev: HostDevice): OpenedVfioDevice {
  const fds: number[] = [];
  return opening(io, dev.address, fds, () => {
    const deviceFd = io.open(dev.node);
    fds.push(deviceFd);
    const iommufd = io.open('/dev/iommu');
    fds.push(iommufd);

    const bind = new Uint8Array(IOMMUFD_SIZEOF.vfio_device_bind_iommufd);
    u32(bind, BIND_IOMMUFD.argsz, bind.length);
    u32(bind, BIND_IOMMUFD.iommufd, iommufd);
    io.ioctl(deviceFd, VFIO_CDEV.DEVICE_BIND_IOMMUFD, bind, 'VFIO_DEVICE_BIND_IOMMUFD');

    const alloc = new Uint8Array(IOMMUFD_SIZEOF.iommu_ioas_alloc);
    u32(alloc, IOAS_ALLOC.size, alloc.length);
    io.ioctl(iommufd, IOMMUFD.IOAS_ALLOC, alloc, 'IOMMU_IOAS_ALLOC');
    const ioas = getU32(alloc, IOAS_ALLOC.out_ioas_id);

    const attach = new Uint8Array(IOMMUFD_SIZEOF.vfio_device_attach_iommufd_pt);
    u32(attach, ATTACH_IOMMUFD_PT.argsz, attach.length);
    u32(attach, ATTACH_IOMMUFD_PT.pt_id, ioas);
    io.ioctl(deviceFd, VFIO_CDEV.DEVICE_ATTACH_IOMMUFD_PT, attach, 'VFIO_DEVICE_ATTACH_IOMMUFD_PT');

    return {
      api: 'iommufd',
      deviceFd,
      kvmFile: deviceFd,
      dma: {
        map(iova, vaddr, size, readable, writable) {
          const m = new Uint8Array(IOMMUFD_SIZEOF.iommu_ioas_map);
          u32(m, IOAS_MAP.size, m.length);
          u32(m, IOAS_MAP.flags, IOAS_MAP_FLAG.FIXED_IOVA | (readable ? IOAS_MAP_FLAG.READABLE : 0) | (writable ? IOAS_MAP_FLAG.WRITEABLE : 0));
          u32(m, IOAS_MAP.ioas_id, ioas);
          u64(m, IOAS_MAP.user_va, vaddr);
          u64(m, IOAS_MAP.length, size);
          u64(m, IOAS_MAP.iova, iova);
          io.ioctl(iommufd, IOMMUFD.IOAS_MAP, m, 'IOMMU_IOAS_MAP');
        },
        unmap(iova, size) {
          const m = new Uint8Array(IOMMUFD_SIZEOF.iommu_ioas_unmap);
          u32(m, IOAS_UNMAP.size, m.length);
          u32(m, IOAS_UNMAP.ioas_id, ioas);
          u64(m, IOAS_UNMAP.iova, iova);
          u64(m, IOAS_UNMAP.length, size);
          io.ioctl(iommufd, IOMMUFD.IOAS_UNMAP, m, 'IOMMU_IOAS_UNMAP');
        },
      },
      // Closing the device detaches and unbinds it; closing the iommufd
      // frees the address space and unpins what it mapped.
      close() { io.close(deviceFd); io.close(iommufd); },
    };
  });
}

/** The container/group way. */
export function openGroup(io: VfioHostIo, dev: HostDevice): OpenedVfioDevice {
  const fds: number[] = [];
  return opening(io, dev.address, fds, () => {
    const container = io.open('/dev/vfio/vfio');
    fds.push(container);
    const version = io.ioctl(container, VFIO.GET_API_VERSION, null, 'VFIO_GET_API_VERSION');
    if (version !== VFIO_API_VERSION) throw new HostSetupError(`passthru: /dev/vfio/vfio speaks VFIO API version ${version}, not ${VFIO_API_VERSION}`);
    if (io.ioctl(container, VFIO.CHECK_EXTENSION, VFIO_IOMMU_TYPE.TYPE1v2, 'VFIO_CHECK_EXTENSION') !== 1) {
      throw new HostSetupError('passthru: the host\'s VFIO has no type 1 v2 IOMMU (VFIO_TYPE1v2_IOMMU); modprobe vfio_iommu_type1');
    }
    const group = io.open(dev.node);
    fds.push(group);
    const status = new Uint8Array(VFIO_SIZEOF.vfio_group_status);
    u32(status, GROUP_STATUS.argsz, status.length);
    io.ioctl(group, VFIO.GROUP_GET_STATUS, status, 'VFIO_GROUP_GET_STATUS');
    if (!(getU32(status, GROUP_STATUS.flags) & GROUP_FLAGS.VIABLE)) {
      throw new HostSetupError(`passthru: IOMMU group ${dev.group} of ${dev.address} is not viable: `
        + `a device of /sys/kernel/iommu_groups/${dev.group}/devices is bound to a host driver (bind every device of the group to vfio-pci, or unbind it)`);
    }
    const fdArg = new Uint8Array(4);
    u32(fdArg, 0, container);
    io.ioctl(group, VFIO.GROUP_SET_CONTAINER, fdArg, 'VFIO_GROUP_SET_CONTAINER');
    io.ioctl(container, VFIO.SET_IOMMU, VFIO_IOMMU_TYPE.TYPE1v2, 'VFIO_SET_IOMMU');
    const name = new TextEncoder().encode(`${dev.address}\0`);
    const deviceFd = io.ioctl(group, VFIO.GROUP_GET_DEVICE_FD, name, 'VFIO_GROUP_GET_DEVICE_FD');
    fds.push(deviceFd);

    return {
      api: 'group',
      deviceFd,
      kvmFile: group,
      dma: {
        map(iova, vaddr, size, readable, writable) {
          const m = new Uint8Array(VFIO_SIZEOF.vfio_iommu_type1_dma_map);
          u32(m, DMA_MAP.argsz, m.length);
          u32(m, DMA_MAP.flags, (readable ? DMA_MAP_FLAG.READ : 0) | (writable ? DMA_MAP_FLAG.WRITE : 0));
          u64(m, DMA_MAP.vaddr, vaddr);
          u64(m, DMA_MAP.iova, iova);
          u64(m, DMA_MAP.size, size);
          io.ioctl(container, VFIO.IOMMU_MAP_DMA, m, 'VFIO_IOMMU_MAP_DMA');
        },
        unmap(iova, size) {
          const m = new Uint8Array(VFIO_SIZEOF.vfio_iommu_type1_dma_unmap);
          u32(m, DMA_UNMAP.argsz, m.length);
          u64(m, DMA_UNMAP.iova, iova);
          u64(m, DMA_UNMAP.size, size);
          io.ioctl(container, VFIO.IOMMU_UNMAP_DMA, m, 'VFIO_IOMMU_UNMAP_DMA');
        },
      },
      // The device first: the group leaves its container when its last
      // device is closed, the container's mappings go with the container.
      close() { io.close(deviceFd); io.close(group); io.close(container); },
    };
  });
}

