// passthru's device on the host: a PCI device bound to vfio-pci, opened
// through iommufd or the VFIO container/group API (vfio-open.ts), driven
// with the VFIO device ioctls: DEVICE_GET_INFO, GET_REGION_INFO (with the
// sparse-mmap capability: the parts of a BAR that may be mapped),
// GET_IRQ_INFO, SET_IRQS (eventfd triggers, INTx unmask) and DEVICE_RESET;
// regions are read and written with pread/pwrite at the region's offset in
// the device file and BARs mapped from it.
//
// DMA: the function's DMA space (identity over guest RAM, or the guest's
// virtio-iommu mappings) is mirrored into the device's I/O address space:
// each mapping becomes a window IOVA -> this process's mapping of the
// guest RAM file, which the kernel pins. At start that is all of guest RAM
// at IOVA = guest physical address (identity), or nothing until the guest
// maps (behind the IOMMU).
//
// Every file is opened while the device is created, before the sandbox
// goes up; afterwards only ioctl, pread64/pwrite64 and eventfd2 on them
// run, which the seccomp allowlist has (syscall-allowlist.ts).
//
// Not verified on hardware: no machine this was written on has an IOMMU.

import {
  CAP_SPARSE_MMAP, DEVICE_FLAGS, DEVICE_INFO, INFO_CAP_HEADER, IRQ_INFO, IRQ_SET, IRQ_SET_FLAG, PCI_IRQ, PCI_REGION,
  REGION_INFO, REGION_INFO_CAP, REGION_INFO_FLAG, SPARSE_MMAP_AREA, SPARSE_MMAP_SIZEOF, VFIO, VFIO_SIZEOF,
} from '../../sys/vfio-abi.js';
import type { Mapping } from '../../sys/libc.js';
import type { MmapArea } from '../vfio-user/protocol.js';
import { HostSetupError, type HostDevice } from './host-device.js';
import type { BackendRegion, PassthruBackend } from './passthru-backend.js';
import { DMA_READ, DMA_WRITE, ramFileRanges, type DmaSpaceLike } from './dma-window.js';
import { explainDmaError, explainVfioError, openGroup, openIommufd, type OpenedVfioDevice } from './vfio-open.js';
import { VfioCallError, type VfioHostIo } from './vfio-host-io.js';

/** Where guest RAM lies in this process: guest-physical ranges as host
 * virtual addresses (pieces split where the RAM file is), undefined for a
 * range that is not all RAM. */
export interface GuestRamHost {
  hostRanges(gpa: number, length: number): Array<{ gpa: number; length: number; vaddr: bigint }> | undefined;
  close(): void;
}

/** Guest RAM as a mapping of its file laid out lowmem, then highmem (from 4 GiB). */
export function guestRamInMapping(base: bigint, layout: { lowmem: number; highmem: number }, close: () => void = () => {}): GuestRamHost {
  return {
    hostRanges(gpa, length) {
      return ramFileRanges(gpa, length, layout)?.map((p) => ({ gpa: p.gpa, length: p.length, vaddr: base + BigInt(p.offset) }));
    },
    close,
  };
}

/** Maps the guest RAM file into this process for the device's DMA windows. */
export function mapGuestRamFile(io: VfioHostIo, fd: number, layout: { lowmem: number; highmem: number }): GuestRamHost {
  const size = layout.lowmem + layout.highmem;
  const m = io.mmap(fd, size, 0, 'guest RAM for VFIO DMA');
  return guestRamInMapping(m.address, layout, () => m.unmap());
}

interface RegionInfo extends BackendRegion {
  /** Where the region starts in the device file. */
  fileOffset: number;
}

export interface VfioBackendOptions {
  io: VfioHostIo;
  /** The function's DMA space (identity, or its virtio-iommu domain). */
  space: DmaSpaceLike;
  ram: GuestRamHost;
  /** Where the one warning goes (default: stderr, "bhyve: " first). */
  warn?: (line: string) => void;
  /** KVM's VFIO pseudo-device (DeviceContext.kvm.vfioFile); absent in unit tests without KVM. */
  kvm?: { vfioFile?(fd: number): { close(): void } | undefined };
}

const CONFIG_REGION_MIN = PCI_REGION.CONFIG + 1;

export class VfioBackend implements PassthruBackend {
  readonly name: string;
  readonly canReset: boolean;
  readonly numRegions: number;
  readonly numIrqs: number;
  private readonly regions = new Map<number, RegionInfo>();
  private readonly irqCounts = new Map<number, number>();
  /** DMA windows made (IOVA, size). */
  private readonly windows: Array<{ iova: number; size: number }> = [];
  private stopListening: () => void = () => {};
  private kvmFile?: { close(): void };
  private starting = true;
  private warned = false;
  private closed = false;
  readonly counts = { regionReads: 0, regionWrites: 0, dmaWindows: 0, dmaMapFailures: 0, dmaNotRam: 0, resets: 0, errors: 0 };

  private constructor(readonly device: HostDevice, private readonly opened: OpenedVfioDevice, private readonly opts: VfioBackendOptions) {
    this.name = `host ${device.address} (${opened.api === 'iommufd' ? `iommufd, ${device.node}` : `VFIO group ${device.group}`})`;
    const io = opts.io;
    const fd = opened.deviceFd;
    const info = new Uint8Array(VFIO_SIZEOF.vfio_device_info);
    const dv = new DataView(info.buffer);
    dv.setUint32(DEVICE_INFO.argsz, info.length, true);
    io.ioctl(fd, VFIO.DEVICE_GET_INFO, info, 'VFIO_DEVICE_GET_INFO');
    const flags = dv.getUint32(DEVICE_INFO.flags, true);
    this.numRegions = dv.getUint32(DEVICE_INFO.num_regions, true);
    this.numIrqs = dv.getUint32(DEVICE_INFO.num_irqs, true);
    if (!(flags & DEVICE_FLAGS.PCI)) throw new HostSetupError(`passthru: ${device.address} is not a VFIO PCI device (not bound to vfio-pci)`);
    if (this.numRegions < CONFIG_REGION_MIN) throw new HostSetupError(`passthru: ${device.address} has ${this.numRegions} VFIO regions, a PCI device has at least ${CONFIG_REGION_MIN}`);
    this.canReset = (flags & DEVICE_FLAGS.RESET) !== 0;
    // Regions and interrupts are discovered now, while the device is created.
    for (let i = 0; i < Math.min(this.numRegions, PCI_REGION.VGA + 1); i++) this.region(i);
    for (let i = 0; i < Math.min(this.numIrqs, PCI_IRQ.REQ + 1); i++) this.irqCount(i);
    // Guest RAM (or the guest's IOMMU mappings) as the device's DMA windows.
    this.stopListening = opts.space.listen({
      map: (m) => this.mapWindow(m.iova, m.gpa, m.length, (m.access & DMA_READ) !== 0, (m.access & DMA_WRITE) !== 0),
      unmap: (iova, length) => this.unmapWindows(iova, length),
    });
    this.starting = false;
    // KVM learns the VM uses this device: it then honours the guest's
    // cache flushes and memory types for DMA that does not snoop.
    this.kvmFile = opts.kvm?.vfioFile?.(opened.kvmFile);
    if (opts.kvm?.vfioFile && !this.kvmFile) this.warnOnce(`passthru ${this.name}: KVM refused its VFIO device (KVM_DEV_TYPE_VFIO); DMA that does not snoop the CPU caches may see stale data`);
  }

  /** Opens the host device the way host-device.ts chose and discovers it;
   * throws HostSetupError (one line) when the host refuses. */
  static open(device: HostDevice, opts: VfioBackendOptions): VfioBackend {
    const opened = device.api === 'iommufd' ? openIommufd(opts.io, device) : openGroup(opts.io, device);
    try {
      return new VfioBackend(device, opened, opts);
    } catch (e) {
      opened.close();
      if (e instanceof VfioCallError) throw explainVfioError(e, device.address);
      throw e;
    }
  }

  get api(): 'iommufd' | 'group' { return this.opened.api; }

  // ---- DMA windows ----

  private mapWindow(iova: number, gpa: number, length: number, readable: boolean, writable: boolean): void {
    // The mapping's own permissions, as the guest's IOMMU gave them; one
    // that allows nothing is no window at all.
    if (!readable && !writable) return;
    const pieces = Number.isSafeInteger(iova) && iova >= 0 && Number.isSafeInteger(iova + length) ? this.opts.ram.hostRanges(gpa, length) : undefined;
    if (!pieces) {
      // Not guest RAM (a mapping of MMIO, say): the device cannot reach it.
      this.counts.dmaNotRam++;
      return;
    }
    for (const p of pieces) {
      const at = iova + (p.gpa - gpa);
      try {
        this.opened.dma.map(at, p.vaddr, p.length, readable, writable);
        this.windows.push({ iova: at, size: p.length });
      } catch (e) {
        if (!(e instanceof VfioCallError)) throw e;
        const err = explainDmaError(e, at, p.length);
        // At start the VM cannot run without its DMA windows; later (the
        // guest's IOMMU mapping) the device's accesses there fault instead.
        if (this.starting) throw err;
        this.counts.dmaMapFailures++;
        this.warnOnce(err.message);
      }
    }
    this.counts.dmaWindows = this.windows.length;
  }

  private unmapWindows(iova: number, length: number): void {
    for (let i = this.windows.length - 1; i >= 0; i--) {
      const w = this.windows[i];
      if (w.iova >= iova && w.iova + w.size <= iova + length) {
        this.windows.splice(i, 1);
        this.guard(() => this.opened.dma.unmap(w.iova, w.size), undefined);
      }
    }
    this.counts.dmaWindows = this.windows.length;
  }

  /** The DMA windows now, in the order they were made (tests, stats). */
  dmaWindows(): ReadonlyArray<{ iova: number; size: number }> {
    return this.windows;
  }

  // ---- regions ----

  region(index: number): BackendRegion {
    const known = this.regions.get(index);
    if (known) return known;
    const r = this.regionInfo(index);
    this.regions.set(index, r);
    return r;
  }

  private regionInfo(index: number): RegionInfo {
    const none: RegionInfo = { index, size: 0, readable: false, writable: false, fileOffset: 0 };
    if (index >= this.numRegions) return none;
    const io = this.opts.io;
    let buf = new Uint8Array(VFIO_SIZEOF.vfio_region_info);
    const ask = (): DataView => {
      const dv = new DataView(buf.buffer);
      dv.setUint32(REGION_INFO.argsz, buf.length, true);
      dv.setUint32(REGION_INFO.index, index, true);
      io.ioctl(this.opened.deviceFd, VFIO.DEVICE_GET_REGION_INFO, buf, 'VFIO_DEVICE_GET_REGION_INFO');
      return dv;
    };
    let dv: DataView;
    try {
      dv = ask();
      // Capabilities follow the structure: ask again with the room the kernel said it needs.
      const need = dv.getUint32(REGION_INFO.argsz, true);
      if ((dv.getUint32(REGION_INFO.flags, true) & REGION_INFO_FLAG.CAPS) && need > buf.length && need <= 0x10000) {
        buf = new Uint8Array(need);
        dv = ask();
      }
    } catch (e) {
      // A region the device lacks (VGA on most devices) is refused with EINVAL.
      if (e instanceof VfioCallError) return none;
      throw e;
    }
    const flags = dv.getUint32(REGION_INFO.flags, true);
    const size = Number(dv.getBigUint64(REGION_INFO.size, true));
    const fileOffset = Number(dv.getBigUint64(REGION_INFO.offset, true));
    const r: RegionInfo = {
      index, size, fileOffset,
      readable: (flags & REGION_INFO_FLAG.READ) !== 0,
      writable: (flags & REGION_INFO_FLAG.WRITE) !== 0,
    };
    if ((flags & REGION_INFO_FLAG.MMAP) && size > 0) {
      const sparse = (flags & REGION_INFO_FLAG.CAPS) ? sparseAreas(buf, dv.getUint32(REGION_INFO.cap_offset, true), size) : undefined;
      r.mmap = { fd: this.opened.deviceFd, offset: fileOffset, areas: sparse ?? [{ offset: 0, size }] };
    }
    return r;
  }

  irqCount(index: number): number {
    let n = this.irqCounts.get(index);
    if (n !== undefined) return n;
    n = 0;
    if (index < this.numIrqs) {
      const buf = new Uint8Array(VFIO_SIZEOF.vfio_irq_info);
      const dv = new DataView(buf.buffer);
      dv.setUint32(IRQ_INFO.argsz, buf.length, true);
      dv.setUint32(IRQ_INFO.index, index, true);
      try {
        this.opts.io.ioctl(this.opened.deviceFd, VFIO.DEVICE_GET_IRQ_INFO, buf, 'VFIO_DEVICE_GET_IRQ_INFO');
        n = dv.getUint32(IRQ_INFO.count, true);
      } catch (e) {
        if (!(e instanceof VfioCallError)) throw e;
      }
    }
    this.irqCounts.set(index, n);
    return n;
  }

  read(index: number, offset: number, length: number): Uint8Array {
    this.counts.regionReads++;
    const out = new Uint8Array(length).fill(0xff);
    const r = this.regions.get(index) ?? this.region(index) as RegionInfo;
    if (!r.readable || offset < 0 || offset + length > r.size) return out;
    this.guard(() => this.opts.io.pread(this.opened.deviceFd, out, r.fileOffset + offset), undefined);
    return out;
  }

  write(index: number, offset: number, data: Uint8Array): void {
    this.counts.regionWrites++;
    const r = this.regions.get(index) ?? this.region(index) as RegionInfo;
    if (!r.writable || offset < 0 || offset + data.length > r.size) return;
    this.guard(() => this.opts.io.pwrite(this.opened.deviceFd, data, r.fileOffset + offset), undefined);
  }

  /** Maps (a whole page multiple of) region `index` into this process, for
   * KVM to map into the guest: the parts the sparse-mmap capability allows
   * (older kernels keep the MSI-X table's pages to themselves), or all of it. */
  mmapRegion(index: number, length: number): Mapping {
    const r = this.regions.get(index);
    if (!r?.mmap) throw new RangeError(`region ${index} cannot be mapped`);
    const a = r.mmap.areas;
    const whole = a.length === 1 && a[0].offset === 0 && a[0].size >= r.size;
    return this.opts.io.mmap(this.opened.deviceFd, length, r.fileOffset, `${this.name} region ${index}`, whole ? undefined : a);
  }

  // ---- interrupts ----

  private setIrqs(flags: number, index: number, fds: readonly number[]): void {
    const buf = new Uint8Array(VFIO_SIZEOF.vfio_irq_set + 4 * fds.length);
    const dv = new DataView(buf.buffer);
    dv.setUint32(IRQ_SET.argsz, buf.length, true);
    dv.setUint32(IRQ_SET.flags, flags, true);
    dv.setUint32(IRQ_SET.index, index, true);
    dv.setUint32(IRQ_SET.start, 0, true);
    dv.setUint32(IRQ_SET.count, fds.length, true);
    fds.forEach((fd, i) => dv.setInt32(IRQ_SET.data + 4 * i, fd, true));
    this.guard(() => this.opts.io.ioctl(this.opened.deviceFd, VFIO.DEVICE_SET_IRQS, buf, 'VFIO_DEVICE_SET_IRQS'), undefined);
  }

  setIrqEventfds(index: number, fds: readonly number[]): void {
    if (fds.length === 0) this.setIrqs(IRQ_SET_FLAG.DATA_NONE | IRQ_SET_FLAG.ACTION_TRIGGER, index, []);
    else this.setIrqs(IRQ_SET_FLAG.DATA_EVENTFD | IRQ_SET_FLAG.ACTION_TRIGGER, index, fds);
  }

  setIntxUnmaskFd(fd: number): void {
    this.setIrqs(IRQ_SET_FLAG.DATA_EVENTFD | IRQ_SET_FLAG.ACTION_UNMASK, PCI_IRQ.INTX, [fd]);
  }

  reset(): void {
    if (!this.canReset || this.closed) return;
    this.counts.resets++;
    this.guard(() => this.opts.io.ioctl(this.opened.deviceFd, VFIO.DEVICE_RESET, null, 'VFIO_DEVICE_RESET'), undefined);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stopListening();
    this.kvmFile?.close();
    this.opened.close();
    this.opts.ram.close();
  }

  stats(): Record<string, number> {
    return {
      'vfio region reads': this.counts.regionReads,
      'vfio region writes': this.counts.regionWrites,
      'vfio dma windows': this.counts.dmaWindows,
      'vfio dma map failures': this.counts.dmaMapFailures,
      'vfio dma mappings outside RAM': this.counts.dmaNotRam,
      'vfio resets': this.counts.resets,
    'vfio file known to KVM': this.kvmFile ? 1 : 0,
      'vfio failed calls': this.counts.errors,
    };
  }

  /** A call on the open device at run time: a failure is counted and told
   * once on stderr (the guest sees the device's error state: all-ones). */
  private guard<T>(f: () => T, fallback: T): T | undefined {
    try {
      return f();
    } catch (e) {
      if (!(e instanceof VfioCallError)) throw e;
      this.counts.errors++;
      this.warnOnce(`passthru ${this.name}: ${e.call} failed (errno ${e.errno})`);
      return fallback;
    }
  }

  private warnOnce(msg: string): void {
    if (this.warned) return;
    this.warned = true;
    if (this.opts.warn) this.opts.warn(msg);
    else process.stderr.write(`bhyve: ${msg}\n`);
  }
}

/** The sparse-mmap capability in a GET_REGION_INFO answer: the areas that
 * may be mapped, checked against the region (a hostile or confused answer
 * maps nothing rather than something outside the region). */
function sparseAreas(buf: Uint8Array, first: number, regionSize: number): MmapArea[] | undefined {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
  const seen = new Set<number>();
  for (let at = first; at !== 0 && !seen.has(at) && at + 8 <= buf.length; at = dv.getUint32(at + INFO_CAP_HEADER.next, true)) {
    seen.add(at);
    if (dv.getUint16(at + INFO_CAP_HEADER.id, true) !== REGION_INFO_CAP.SPARSE_MMAP) continue;
    if (at + SPARSE_MMAP_SIZEOF.vfio_region_info_cap_sparse_mmap > buf.length) return [];
    const n = dv.getUint32(at + CAP_SPARSE_MMAP.nr_areas, true);
    const areas: MmapArea[] = [];
    for (let i = 0; i < n; i++) {
      const a = at + CAP_SPARSE_MMAP.areas + i * SPARSE_MMAP_SIZEOF.vfio_region_sparse_mmap_area;
      if (a + SPARSE_MMAP_SIZEOF.vfio_region_sparse_mmap_area > buf.length) break;
      const offset = Number(dv.getBigUint64(a + SPARSE_MMAP_AREA.offset, true));
      const size = Number(dv.getBigUint64(a + SPARSE_MMAP_AREA.size, true));
      if (size > 0 && offset + size <= regionSize) areas.push({ offset, size });
    }
    return areas;
  }
  return undefined;
}
