// A scripted Linux VFIO/iommufd for unit tests: a VfioHostIo whose ioctls
// decode the structures the backend passes (with the offsets of
// src/sys/vfio-abi.ts, themselves checked against <linux/vfio.h>) and
// answer as the kernel does, enforcing the order the kernel enforces
// (a group must be viable before SET_CONTAINER, the container needs a group
// before SET_IOMMU and an IOMMU before GET_DEVICE_FD and MAP_DMA, a cdev
// must be bound before it is attached, DMA windows may not overlap and are
// unmapped whole). Every call is logged in a readable form for the tests
// to compare with the sequence they expect.

import type { Mapping } from '../../src/sys/libc.js';
import {
  ATTACH_IOMMUFD_PT, BIND_IOMMUFD, CAP_SPARSE_MMAP, DEVICE_FLAGS, PCI_IRQ, DEVICE_INFO, DMA_MAP, DMA_MAP_FLAG, DMA_UNMAP, GROUP_FLAGS,
  GROUP_STATUS, INFO_CAP_HEADER, IOAS_ALLOC, IOAS_MAP, IOAS_MAP_FLAG, IOAS_UNMAP, IOMMUFD, IOMMUFD_SIZEOF, IRQ_INFO, IRQ_INFO_FLAG,
  IRQ_SET, IRQ_SET_FLAG, REGION_INFO, REGION_INFO_CAP, REGION_INFO_FLAG, SPARSE_MMAP_AREA, VFIO, VFIO_CDEV, VFIO_IOMMU_TYPE,
  VFIO_SIZEOF,
} from '../../src/sys/vfio-abi.js';
import { VfioCallError, type VfioHostIo } from '../../src/devices/passthru/vfio-host-io.js';

export const E = { EPERM: 1, ENOENT: 2, EBADF: 9, ENOMEM: 12, EACCES: 13, EFAULT: 14, EBUSY: 16, EEXIST: 17, ENODEV: 19, EINVAL: 22, ENOTTY: 25 } as const;

/** vfio-pci's region offsets in the device file: index << 40. */
export const regionOffset = (index: number): number => index * 2 ** 40;

export interface FakeRegion {
  size: number;
  flags: number;
  /** Contents (config space, BAR registers); reads past it are 0. */
  bytes?: Uint8Array;
  /** Sparse-mmap areas (the capability chain). */
  sparse?: Array<{ offset: number; size: number }>;
}

export interface FakeVfioDevice {
  address: string;
  flags: number;
  regions: Record<number, FakeRegion>;
  numRegions: number;
  irqs: Record<number, { count: number; flags: number }>;
  numIrqs: number;
}

export const NIC = '0000:01:00.0';
export const RW = REGION_INFO_FLAG.READ | REGION_INFO_FLAG.WRITE;

/** An e1000e-like function: MSI-X (4 vectors, table and PBA in BAR 0's last page), MSI, PM, PCI Express; BAR 0 memory, BAR 2 I/O. */
function nicConfig(): Uint8Array {
  const c = new Uint8Array(256);
  const d = new DataView(c.buffer);
  d.setUint32(0x00, 0x10d38086, true);
  d.setUint16(0x06, 0x0010, true); // capabilities
  d.setUint32(0x08, 0x02000000, true);
  d.setUint32(0x10, 0xfebc0000, true); // BAR 0: 32-bit memory
  d.setUint32(0x18, 0x0000e001, true); // BAR 2: I/O
  c[0x34] = 0x40;
  c[0x3d] = 1;
  c[0x40] = 0x11; c[0x41] = 0x50; d.setUint16(0x42, 3, true); d.setUint32(0x44, 0x3000, true); d.setUint32(0x48, 0x3800, true);
  c[0x50] = 0x05; c[0x51] = 0x60; d.setUint16(0x52, 0x0080, true);
  c[0x60] = 0x01; c[0x61] = 0x70; d.setUint16(0x62, 3, true);
  c[0x70] = 0x10; c[0x71] = 0x00;
  return c;
}

export function fakeNic(over: Partial<FakeVfioDevice> = {}): FakeVfioDevice {
  return {
    address: NIC,
    flags: DEVICE_FLAGS.PCI | DEVICE_FLAGS.RESET,
    numRegions: 9,
    regions: {
      0: { size: 0x4000, flags: RW | REGION_INFO_FLAG.MMAP, bytes: new Uint8Array(0x4000), sparse: [{ offset: 0, size: 0x3000 }] },
      1: { size: 0, flags: 0 },
      2: { size: 0x20, flags: RW, bytes: Uint8Array.from({ length: 0x20 }, (_, i) => 0xa0 + i) },
      3: { size: 0, flags: 0 }, 4: { size: 0, flags: 0 }, 5: { size: 0, flags: 0 }, 6: { size: 0, flags: 0 },
      7: { size: 256, flags: RW, bytes: nicConfig() },
    },
    numIrqs: 5,
    irqs: {
      [PCI_IRQ.INTX]: { count: 1, flags: IRQ_INFO_FLAG.EVENTFD | IRQ_INFO_FLAG.MASKABLE | IRQ_INFO_FLAG.AUTOMASKED },
      [PCI_IRQ.MSI]: { count: 1, flags: IRQ_INFO_FLAG.EVENTFD | IRQ_INFO_FLAG.NORESIZE },
      [PCI_IRQ.MSIX]: { count: 4, flags: IRQ_INFO_FLAG.EVENTFD | IRQ_INFO_FLAG.NORESIZE },
      [PCI_IRQ.ERR]: { count: 1, flags: IRQ_INFO_FLAG.EVENTFD },
      [PCI_IRQ.REQ]: { count: 1, flags: IRQ_INFO_FLAG.EVENTFD },
    },
    ...over,
  };
}

export interface FakeKernelOptions {
  /** Paths that exist: '/dev/vfio/vfio', '/dev/vfio/5', '/dev/iommu', '/dev/vfio/devices/vfio0'. */
  files: string[];
  device: FakeVfioDevice;
  group?: number;
  cdev?: string;
  viable?: boolean;
  /** errno for an open of this path. */
  openErrno?: Record<string, number>;
  /** errno for this ioctl (by name), once or always. */
  ioctlErrno?: Record<string, number>;
  apiVersion?: number;
  type1v2?: boolean;
}

type FileKind = 'container' | 'group' | 'iommufd' | 'cdev' | 'device';

interface Open { kind: FileKind; path: string }

const dv = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);
const NAMES = new Map<number, string>([
  ...Object.entries(VFIO).map(([k, v]) => [v, `VFIO_${k}`] as [number, string]),
  ...Object.entries(VFIO_CDEV).map(([k, v]) => [v, `VFIO_${k}`] as [number, string]),
  ...Object.entries(IOMMUFD).map(([k, v]) => [v, `IOMMU_${k}`] as [number, string]),
]);
const IRQ_NAMES = ['INTX', 'MSI', 'MSIX', 'ERR', 'REQ'];
const hex = (n: number | bigint): string => `0x${n.toString(16)}`;
const perm = (read: number, write: number): string => `${read ? 'r' : ''}${write ? 'w' : ''}`;

export class FakeVfioKernel implements VfioHostIo {
  readonly log: string[] = [];
  private nextFd = 100;
  readonly fds = new Map<number, Open>();
  /** Container state (group API). */
  private containerFd?: number;
  private groupInContainer = false;
  private iommuSet = false;
  /** iommufd state. */
  private bound?: number;
  private attachedIoas?: number;
  private nextIoas = 3;
  private readonly ioas = new Set<number>();
  /** DMA windows (either API): iova -> size, vaddr, write. */
  readonly windows = new Map<number, { size: number; vaddr: bigint; write: boolean }>();
  readonly resets: number[] = [];
  readonly irqSets: Array<{ index: number; flags: number; start: number; count: number; fds: number[] }> = [];
  readonly mappings: Array<{ offset: number; length: number }> = [];

  constructor(readonly o: FakeKernelOptions) {}

  private fail(call: string, file: string, errno: number): never {
    this.log.push(`${call} -> errno ${errno}`);
    throw new VfioCallError(call, file, errno);
  }

  open(file: string): number {
    const e = this.o.openErrno?.[file];
    if (e) { this.log.push(`open ${file} -> errno ${e}`); throw new VfioCallError('open', file, e); }
    if (!this.o.files.includes(file)) { this.log.push(`open ${file} -> errno ${E.ENOENT}`); throw new VfioCallError('open', file, E.ENOENT); }
    let kind: FileKind;
    if (file === '/dev/vfio/vfio') kind = 'container';
    else if (file === '/dev/iommu') kind = 'iommufd';
    else if (file.startsWith('/dev/vfio/devices/')) kind = 'cdev';
    else kind = 'group';
    if (kind === 'group' && [...this.fds.values()].some((f) => f.kind === 'group')) return this.fail('open', file, E.EBUSY);
    const fd = this.nextFd++;
    this.fds.set(fd, { kind, path: file });
    this.log.push(`open ${file}`);
    return fd;
  }

  close(fd: number): void {
    const f = this.fds.get(fd);
    if (!f) throw new Error(`close of fd ${fd}, which is not open`);
    this.log.push(`close ${f.kind === 'device' ? 'device' : f.path}`);
    this.fds.delete(fd);
    if (f.kind === 'container') { this.windows.clear(); this.iommuSet = false; }
    if (f.kind === 'iommufd') { this.windows.clear(); this.ioas.clear(); }
  }

  /** Open descriptors (a failed open must leave none). */
  openFiles(): string[] {
    return [...this.fds.values()].map((f) => (f.kind === 'device' ? 'device' : f.path));
  }

  ioctl(fd: number, request: number, arg: Uint8Array | number | null, what: string): number {
    const name = NAMES.get(request) ?? hex(request);
    if (name !== what) throw new Error(`ioctl ${hex(request)} named ${what}, the ABI says ${name}`);
    const f = this.fds.get(fd);
    if (!f) return this.fail(name, `fd ${fd}`, E.EBADF);
    const forced = this.o.ioctlErrno?.[name];
    if (forced) return this.fail(name, f.path, forced);
    const buf = arg instanceof Uint8Array ? arg : undefined;
    const need = (size: number): DataView => {
      if (!buf || buf.length < size) this.fail(name, f.path, E.EFAULT);
      const d = dv(buf!);
      if (d.getUint32(0, true) < size) this.fail(name, f.path, E.EINVAL);
      return d;
    };
    const on = (...kinds: FileKind[]): void => { if (!kinds.includes(f.kind)) this.fail(name, f.path, E.ENOTTY); };

    switch (request) {
      // ---- container ----
      case VFIO.GET_API_VERSION:
        on('container');
        this.log.push(name);
        return this.o.apiVersion ?? 0;
      case VFIO.CHECK_EXTENSION:
        on('container');
        this.log.push(`${name} ${arg === VFIO_IOMMU_TYPE.TYPE1v2 ? 'TYPE1v2' : String(arg)}`);
        return arg === VFIO_IOMMU_TYPE.TYPE1v2 && this.o.type1v2 !== false ? 1 : 0;
      case VFIO.SET_IOMMU:
        on('container');
        this.log.push(`${name} ${arg === VFIO_IOMMU_TYPE.TYPE1v2 ? 'TYPE1v2' : String(arg)}`);
        if (!this.groupInContainer) return this.fail(name, f.path, E.EINVAL);
        if (arg !== VFIO_IOMMU_TYPE.TYPE1v2) return this.fail(name, f.path, E.EINVAL);
        this.iommuSet = true;
        return 0;
      case VFIO.IOMMU_MAP_DMA: {
        on('container');
        const d = need(VFIO_SIZEOF.vfio_iommu_type1_dma_map);
        const flags = d.getUint32(DMA_MAP.flags, true);
        const vaddr = d.getBigUint64(DMA_MAP.vaddr, true);
        const iova = Number(d.getBigUint64(DMA_MAP.iova, true));
        const size = Number(d.getBigUint64(DMA_MAP.size, true));
        this.log.push(`${name} iova=${hex(iova)} size=${hex(size)} vaddr=${hex(vaddr)} ${perm(flags & DMA_MAP_FLAG.READ, flags & DMA_MAP_FLAG.WRITE)}`);
        if (!this.iommuSet) return this.fail(name, f.path, E.EINVAL);
        if (!(flags & (DMA_MAP_FLAG.READ | DMA_MAP_FLAG.WRITE))) return this.fail(name, f.path, E.EINVAL);
        return this.addWindow(name, f.path, iova, size, vaddr, (flags & DMA_MAP_FLAG.WRITE) !== 0);
      }
      case VFIO.IOMMU_UNMAP_DMA: {
        on('container');
        const d = need(VFIO_SIZEOF.vfio_iommu_type1_dma_unmap);
        const iova = Number(d.getBigUint64(DMA_UNMAP.iova, true));
        const size = Number(d.getBigUint64(DMA_UNMAP.size, true));
        this.log.push(`${name} iova=${hex(iova)} size=${hex(size)}`);
        return this.removeWindows(name, f.path, iova, size);
      }
      // ---- group ----
      case VFIO.GROUP_GET_STATUS: {
        on('group');
        const d = need(VFIO_SIZEOF.vfio_group_status);
        d.setUint32(GROUP_STATUS.flags, (this.o.viable === false ? 0 : GROUP_FLAGS.VIABLE) | (this.groupInContainer ? GROUP_FLAGS.CONTAINER_SET : 0), true);
        this.log.push(name);
        return 0;
      }
      case VFIO.GROUP_SET_CONTAINER: {
        on('group');
        if (!buf || buf.length < 4) return this.fail(name, f.path, E.EFAULT);
        const cfd = dv(buf).getInt32(0, true);
        this.log.push(`${name} ${this.fds.get(cfd)?.path ?? `fd ${cfd}`}`);
        if (this.fds.get(cfd)?.kind !== 'container') return this.fail(name, f.path, E.EBADF);
        if (this.o.viable === false) return this.fail(name, f.path, E.EPERM);
        this.containerFd = cfd;
        this.groupInContainer = true;
        return 0;
      }
      case VFIO.GROUP_GET_DEVICE_FD: {
        on('group');
        if (!buf) return this.fail(name, f.path, E.EFAULT);
        const nul = buf.indexOf(0);
        const dev = new TextDecoder().decode(buf.subarray(0, nul < 0 ? buf.length : nul));
        this.log.push(`${name} ${dev}`);
        if (!this.iommuSet) return this.fail(name, f.path, E.EINVAL);
        if (dev !== this.o.device.address) return this.fail(name, f.path, E.ENODEV);
        const dfd = this.nextFd++;
        // As the real calls: a descriptor the kernel made has no path.
        this.fds.set(dfd, { kind: 'device', path: `fd ${dfd}` });
        return dfd;
      }
      // ---- iommufd / cdev ----
      case VFIO_CDEV.DEVICE_BIND_IOMMUFD: {
        on('cdev');
        const d = need(IOMMUFD_SIZEOF.vfio_device_bind_iommufd);
        const ifd = d.getInt32(BIND_IOMMUFD.iommufd, true);
        this.log.push(`${name} ${this.fds.get(ifd)?.path ?? `fd ${ifd}`}`);
        if (this.fds.get(ifd)?.kind !== 'iommufd') return this.fail(name, f.path, E.EBADF);
        if (this.bound !== undefined) return this.fail(name, f.path, E.EINVAL);
        this.bound = ifd;
        d.setUint32(BIND_IOMMUFD.out_devid, 1, true);
        return 0;
      }
      case IOMMUFD.IOAS_ALLOC: {
        on('iommufd');
        const d = need(IOMMUFD_SIZEOF.iommu_ioas_alloc);
        const id = this.nextIoas++;
        this.ioas.add(id);
        d.setUint32(IOAS_ALLOC.out_ioas_id, id, true);
        this.log.push(`${name} -> ${id}`);
        return 0;
      }
      case VFIO_CDEV.DEVICE_ATTACH_IOMMUFD_PT: {
        on('cdev');
        const d = need(IOMMUFD_SIZEOF.vfio_device_attach_iommufd_pt);
        const id = d.getUint32(ATTACH_IOMMUFD_PT.pt_id, true);
        this.log.push(`${name} ${id}`);
        if (this.bound === undefined) return this.fail(name, f.path, E.EINVAL);
        if (!this.ioas.has(id)) return this.fail(name, f.path, E.ENOENT);
        this.attachedIoas = id;
        return 0;
      }
      case IOMMUFD.IOAS_MAP: {
        on('iommufd');
        const d = need(IOMMUFD_SIZEOF.iommu_ioas_map);
        const flags = d.getUint32(IOAS_MAP.flags, true);
        const id = d.getUint32(IOAS_MAP.ioas_id, true);
        const vaddr = d.getBigUint64(IOAS_MAP.user_va, true);
        const size = Number(d.getBigUint64(IOAS_MAP.length, true));
        const iova = Number(d.getBigUint64(IOAS_MAP.iova, true));
        this.log.push(`${name} ioas=${id} iova=${hex(iova)} size=${hex(size)} vaddr=${hex(vaddr)} ${perm(flags & IOAS_MAP_FLAG.READABLE, flags & IOAS_MAP_FLAG.WRITEABLE)}`);
        if (!this.ioas.has(id)) return this.fail(name, f.path, E.ENOENT);
        // Without FIXED_IOVA the kernel would choose the IOVA: the guest's would be lost.
        if (!(flags & IOAS_MAP_FLAG.FIXED_IOVA) || !(flags & (IOAS_MAP_FLAG.READABLE | IOAS_MAP_FLAG.WRITEABLE))) return this.fail(name, f.path, E.EINVAL);
        return this.addWindow(name, f.path, iova, size, vaddr, (flags & IOAS_MAP_FLAG.WRITEABLE) !== 0);
      }
      case IOMMUFD.IOAS_UNMAP: {
        on('iommufd');
        const d = need(IOMMUFD_SIZEOF.iommu_ioas_unmap);
        const id = d.getUint32(IOAS_UNMAP.ioas_id, true);
        const iova = Number(d.getBigUint64(IOAS_UNMAP.iova, true));
        const size = Number(d.getBigUint64(IOAS_UNMAP.length, true));
        this.log.push(`${name} ioas=${id} iova=${hex(iova)} size=${hex(size)}`);
        if (!this.ioas.has(id)) return this.fail(name, f.path, E.ENOENT);
        return this.removeWindows(name, f.path, iova, size);
      }
      // ---- device (either API) ----
      case VFIO.DEVICE_GET_INFO: {
        this.deviceOnly(f, name);
        const d = need(VFIO_SIZEOF.vfio_device_info);
        const dev = this.o.device;
        d.setUint32(DEVICE_INFO.flags, dev.flags, true);
        d.setUint32(DEVICE_INFO.num_regions, dev.numRegions, true);
        d.setUint32(DEVICE_INFO.num_irqs, dev.numIrqs, true);
        this.log.push(name);
        return 0;
      }
      case VFIO.DEVICE_GET_REGION_INFO: {
        this.deviceOnly(f, name);
        const d = need(VFIO_SIZEOF.vfio_region_info);
        const index = d.getUint32(REGION_INFO.index, true);
        const argsz = d.getUint32(REGION_INFO.argsz, true);
        this.log.push(`${name} ${index}${argsz > VFIO_SIZEOF.vfio_region_info ? ` argsz=${argsz}` : ''}`);
        const r = this.o.device.regions[index];
        if (index >= this.o.device.numRegions || !r) return this.fail(name, f.path, E.EINVAL);
        let flags = r.flags;
        d.setUint32(REGION_INFO.cap_offset, 0, true);
        if (r.sparse) {
          // As vfio-pci: the capability goes after the structure when
          // there is room; else argsz says how much room it needs.
          const capLen = 16 + 16 * r.sparse.length;
          const needed = VFIO_SIZEOF.vfio_region_info + capLen;
          flags |= REGION_INFO_FLAG.CAPS;
          if (argsz < needed) {
            d.setUint32(REGION_INFO.argsz, needed, true);
          } else {
            const at = VFIO_SIZEOF.vfio_region_info;
            d.setUint16(at + INFO_CAP_HEADER.id, REGION_INFO_CAP.SPARSE_MMAP, true);
            d.setUint16(at + INFO_CAP_HEADER.version, 1, true);
            d.setUint32(at + INFO_CAP_HEADER.next, 0, true);
            d.setUint32(at + CAP_SPARSE_MMAP.nr_areas, r.sparse.length, true);
            r.sparse.forEach((a, i) => {
              d.setBigUint64(at + CAP_SPARSE_MMAP.areas + 16 * i + SPARSE_MMAP_AREA.offset, BigInt(a.offset), true);
              d.setBigUint64(at + CAP_SPARSE_MMAP.areas + 16 * i + SPARSE_MMAP_AREA.size, BigInt(a.size), true);
            });
            d.setUint32(REGION_INFO.cap_offset, at, true);
          }
        }
        d.setUint32(REGION_INFO.flags, flags, true);
        d.setBigUint64(REGION_INFO.size, BigInt(r.size), true);
        d.setBigUint64(REGION_INFO.offset, BigInt(regionOffset(index)), true);
        return 0;
      }
      case VFIO.DEVICE_GET_IRQ_INFO: {
        this.deviceOnly(f, name);
        const d = need(VFIO_SIZEOF.vfio_irq_info);
        const index = d.getUint32(IRQ_INFO.index, true);
        this.log.push(`${name} ${IRQ_NAMES[index] ?? index}`);
        const irq = this.o.device.irqs[index];
        if (index >= this.o.device.numIrqs || !irq) return this.fail(name, f.path, E.EINVAL);
        d.setUint32(IRQ_INFO.flags, irq.flags, true);
        d.setUint32(IRQ_INFO.count, irq.count, true);
        return 0;
      }
      case VFIO.DEVICE_SET_IRQS: {
        this.deviceOnly(f, name);
        const d = need(VFIO_SIZEOF.vfio_irq_set);
        const flags = d.getUint32(IRQ_SET.flags, true);
        const index = d.getUint32(IRQ_SET.index, true);
        const start = d.getUint32(IRQ_SET.start, true);
        const count = d.getUint32(IRQ_SET.count, true);
        const data = flags & IRQ_SET_FLAG.DATA_EVENTFD ? 'eventfd' : flags & IRQ_SET_FLAG.DATA_BOOL ? 'bool' : 'none';
        const action = flags & IRQ_SET_FLAG.ACTION_TRIGGER ? 'trigger' : flags & IRQ_SET_FLAG.ACTION_UNMASK ? 'unmask' : 'mask';
        const fds: number[] = [];
        if (data === 'eventfd') {
          if (d.getUint32(IRQ_SET.argsz, true) < VFIO_SIZEOF.vfio_irq_set + 4 * count || buf!.length < VFIO_SIZEOF.vfio_irq_set + 4 * count) return this.fail(name, f.path, E.EINVAL);
          for (let i = 0; i < count; i++) fds.push(d.getInt32(IRQ_SET.data + 4 * i, true));
        }
        this.log.push(`${name} ${IRQ_NAMES[index] ?? index} ${action} ${data} start=${start} count=${count}`);
        const irq = this.o.device.irqs[index];
        if (!irq || start + count > irq.count) return this.fail(name, f.path, E.EINVAL);
        if (action === 'unmask' && !(irq.flags & IRQ_INFO_FLAG.MASKABLE)) return this.fail(name, f.path, E.EINVAL);
        this.irqSets.push({ index, flags, start, count, fds });
        return 0;
      }
      case VFIO.DEVICE_RESET:
        this.deviceOnly(f, name);
        this.log.push(name);
        if (!(this.o.device.flags & DEVICE_FLAGS.RESET)) return this.fail(name, f.path, E.EINVAL);
        this.resets.push(this.log.length);
        return 0;
      default:
        return this.fail(name, f.path, E.ENOTTY);
    }
  }

  private deviceOnly(f: Open, name: string): void {
    if (f.kind === 'device') return;
    if (f.kind === 'cdev' && this.attachedIoas !== undefined) return;
    // A cdev not bound and attached yet refuses every device ioctl.
    this.fail(name, f.path, f.kind === 'cdev' ? E.EINVAL : E.ENOTTY);
  }

  private addWindow(name: string, file: string, iova: number, size: number, vaddr: bigint, write: boolean): number {
    if (size === 0 || iova % 4096 || size % 4096 || vaddr % 4096n) return this.fail(name, file, E.EINVAL);
    for (const [at, w] of this.windows) if (iova < at + w.size && at < iova + size) return this.fail(name, file, E.EEXIST);
    this.windows.set(iova, { size, vaddr, write });
    return 0;
  }

  private removeWindows(name: string, file: string, iova: number, size: number): number {
    for (const [at, w] of this.windows) {
      // A window cut in two is refused (type1 v2 and iommufd alike).
      const overlaps = at < iova + size && iova < at + w.size;
      if (overlaps && (at < iova || at + w.size > iova + size)) return this.fail(name, file, E.EINVAL);
    }
    for (const [at, w] of [...this.windows]) if (at >= iova && at + w.size <= iova + size) this.windows.delete(at);
    return 0;
  }

  private region(fd: number, offset: number, length: number, call: string): { r: FakeRegion; at: number } {
    const f = this.fds.get(fd);
    if (!f) this.fail(call, `fd ${fd}`, E.EBADF);
    this.deviceOnly(f!, call);
    const index = Math.floor(offset / 2 ** 40);
    const at = offset - regionOffset(index);
    const r = this.o.device.regions[index];
    if (!r || at + length > r.size) this.fail(call, f!.path, E.EINVAL);
    return { r: r!, at };
  }

  pread(fd: number, buf: Uint8Array, offset: number): number {
    const { r, at } = this.region(fd, offset, buf.length, 'pread');
    if (!(r.flags & REGION_INFO_FLAG.READ)) this.fail('pread', 'device', E.EINVAL);
    buf.fill(0);
    if (r.bytes) buf.set(r.bytes.subarray(at, Math.min(at + buf.length, r.bytes.length)));
    return buf.length;
  }

  pwrite(fd: number, buf: Uint8Array, offset: number): number {
    const { r, at } = this.region(fd, offset, buf.length, 'pwrite');
    if (!(r.flags & REGION_INFO_FLAG.WRITE)) this.fail('pwrite', 'device', E.EINVAL);
    this.log.push(`pwrite region ${Math.floor(offset / 2 ** 40)} +${hex(at)} ${Array.from(buf, (b) => b.toString(16).padStart(2, '0')).join('')}`);
    if (r.bytes) r.bytes.set(buf.subarray(0, Math.max(0, Math.min(buf.length, r.bytes.length - at))), at);
    return buf.length;
  }

  mmap(fd: number, length: number, offset: number, what: string, areas?: ReadonlyArray<{ offset: number; size: number }>): Mapping {
    const f = this.fds.get(fd);
    if (!f) this.fail('mmap', `fd ${fd}`, E.EBADF);
    const parts = areas ? ` areas ${areas.map((a) => `+${hex(a.offset)}:${hex(a.size)}`).join(',')}` : '';
    this.log.push(`mmap ${what} +${hex(offset)} ${hex(length)}${parts}`);
    // As vfio-pci: a mapping over a part the region keeps to itself is refused.
    const r = this.o.device.regions[Math.floor(offset / 2 ** 40)];
    if (r?.sparse) {
      for (const p of areas ?? [{ offset: 0, size: length }]) {
        if (!r.sparse.some((s) => p.offset >= s.offset && p.offset + p.size <= s.offset + s.size)) this.fail('mmap', f!.path, E.EINVAL);
      }
    }
    this.mappings.push({ offset, length });
    const bytes = new Uint8Array(length);
    return { address: 0x7f0000000000n + BigInt(this.mappings.length) * 0x100000000n, bytes, length, ptr: null, unmap: () => {} };
  }
}
