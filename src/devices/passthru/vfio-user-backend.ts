// passthru's device over vfio-user: regions, interrupts and reset are
// messages to the server; the function's DMA windows are the guest RAM
// file handed over with DMA_MAP (the server maps it), mirrored from the
// function's DMA space (identity, or the guest's IOMMU mappings), and the
// server's DMA_READ/DMA_WRITE go through the same space.
//
// The socket is connected while the device is created, before the
// sandbox goes up; afterwards only sendmsg/recvmsg on it, eventfd2 and
// the KVM ioctls run, which the seccomp allowlist has.

import { VfioUserClient } from '../vfio-user/client.js';
import { VfioUserDisconnected, VfioUserError } from '../vfio-user/endpoint.js';
import { DMA_FLAG, type DmaMap } from '../vfio-user/protocol.js';
import { DEVICE_FLAGS, REGION_INFO_FLAG, PCI_IRQ, IRQ_SET_FLAG } from '../../sys/vfio-abi.js';
import type { GuestMemory } from '../../sys/guest-memory.js';
import { closeFd } from '../../sys/eventfd.js';
import { strerror } from '../../sys/libc.js';
import type { BackendRegion, PassthruBackend } from './passthru-backend.js';
import { DMA_READ, DMA_WRITE, dmaThroughSpace, ramFileRanges, type DmaSpaceLike } from './dma-window.js';

/** The guest RAM file: the backend owns the descriptor (closed with it),
 * since every DMA window, including those an IOMMU MAP brings at run time,
 * is handed to the server with it. */
export interface GuestRamFile {
  fd: number;
  layout: { lowmem: number; highmem: number };
}

export class VfioUserBackend implements PassthruBackend {
  readonly canReset: boolean;
  private readonly regions = new Map<number, BackendRegion>();
  private readonly irqCounts = new Map<number, number>();
  /** DMA windows given to the server (iova, size). */
  private readonly windows: Array<{ iova: number; size: number }> = [];
  private stopListening: () => void = () => {};
  private gone = false;
  /** A refused DMA_MAP is told once per device (the rest go the same way). */
  private mapRefusalTold = false;
  readonly counts = { regionReads: 0, regionWrites: 0, dmaWindows: 0, dmaMaps: 0, dmaUnmaps: 0, resets: 0 };

  constructor(readonly name: string, readonly client: VfioUserClient, space: DmaSpaceLike, mem: GuestMemory, private readonly ram?: GuestRamFile) {
    const info = client.deviceInfo();
    if (!(info.flags & DEVICE_FLAGS.PCI)) throw new VfioUserError(4, 0, `${name} is not a PCI device`);
    if (info.numRegions < 8) throw new VfioUserError(4, 0, `${name} has ${info.numRegions} regions, a PCI device has at least 8`);
    this.canReset = (info.flags & DEVICE_FLAGS.RESET) !== 0;
    client.setDmaTarget(dmaThroughSpace(space, mem));
    this.stopListening = space.listen({
      map: (m) => this.mapWindow(m.iova, m.gpa, m.length, m.access),
      unmap: (iova, length) => this.unmapWindows(iova, length),
    });
  }

  /** Connects to the server at `path` (VERSION negotiated). */
  static connect(path: string, space: DmaSpaceLike, mem: GuestMemory, ram?: GuestRamFile): VfioUserBackend {
    const client = VfioUserClient.connect(path);
    try {
      return new VfioUserBackend(`vfio-user ${path}`, client, space, mem, ram);
    } catch (e) {
      client.close();
      throw e;
    }
  }

  private mapWindow(iova: number, gpa: number, length: number, access: number): void {
    // The mapping's own permissions: the server sends an access a window
    // does not allow to us by message, and the DMA space refuses it.
    const flags = (access & DMA_READ ? DMA_FLAG.READ : 0) | (access & DMA_WRITE ? DMA_FLAG.WRITE : 0);
    const pieces = this.ram ? ramFileRanges(gpa, length, this.ram.layout) : undefined;
    this.guard(() => {
      if (pieces) {
        for (const p of pieces) {
          const at = iova + (p.gpa - gpa);
          if (!this.tryDmaMap({ flags, offset: p.offset, address: at, size: p.length }, this.ram!.fd)) continue;
          this.counts.dmaMaps++;
          this.windows.push({ iova: at, size: p.length });
        }
      } else {
        // No file to share (or not RAM): the server reaches it by messages.
        if (!this.tryDmaMap({ flags, offset: 0, address: iova, size: length })) return;
        this.counts.dmaMaps++;
        this.windows.push({ iova, size: length });
      }
      this.counts.dmaWindows = this.windows.length;
    }, undefined);
  }

  /** DMA_MAP of one window; false when the server refuses it. The
   * server then has no window there and its DMA to it goes by DMA_READ/
   * DMA_WRITE messages (slower), which we still serve: said once on stderr. */
  private tryDmaMap(m: DmaMap, fd?: number): boolean {
    try {
      this.client.dmaMap(m, fd);
      return true;
    } catch (e) {
      if (!(e instanceof VfioUserError)) throw e;
      if (!this.mapRefusalTold) {
        this.mapRefusalTold = true;
        const end = m.address + m.size - 1;
        process.stderr.write(`bhyve: passthru ${this.name}: the server refused the DMA window 0x${m.address.toString(16)}-0x${end.toString(16)} (DMA_MAP: ${e.errno ? strerror(e.errno) : 'refused'}); its DMA goes by messages\n`);
      }
      return false;
    }
  }

  private unmapWindows(iova: number, length: number): void {
    for (let i = this.windows.length - 1; i >= 0; i--) {
      const w = this.windows[i];
      if (w.iova >= iova && w.iova + w.size <= iova + length) {
        this.windows.splice(i, 1);
        this.guard(() => { this.client.dmaUnmap(w.iova, w.size); this.counts.dmaUnmaps++; }, undefined);
      }
    }
    this.counts.dmaWindows = this.windows.length;
  }

  region(index: number): BackendRegion {
    let r = this.regions.get(index);
    if (!r) {
      const i = this.client.regionInfo(index);
      r = { index, size: i.size, readable: (i.flags & REGION_INFO_FLAG.READ) !== 0, writable: (i.flags & REGION_INFO_FLAG.WRITE) !== 0 };
      if (i.fd !== undefined && (i.flags & REGION_INFO_FLAG.MMAP) && i.size > 0) {
        r.mmap = { fd: i.fd, offset: i.offset, areas: i.sparse ?? [{ offset: 0, size: i.size }] };
      }
      this.regions.set(index, r);
    }
    return r;
  }

  irqCount(index: number): number {
    let n = this.irqCounts.get(index);
    if (n === undefined) {
      n = this.client.irqInfo(index).count;
      this.irqCounts.set(index, n);
    }
    return n;
  }

  read(index: number, offset: number, length: number): Uint8Array {
    this.counts.regionReads++;
    return this.guard(() => this.client.regionRead(index, offset, length), new Uint8Array(length).fill(0xff));
  }

  write(index: number, offset: number, data: Uint8Array): void {
    this.counts.regionWrites++;
    this.guard(() => this.client.regionWrite(index, offset, data), undefined);
  }

  setIrqEventfds(index: number, fds: readonly number[]): void {
    this.guard(() => {
      if (fds.length === 0) this.client.setIrqs({ flags: IRQ_SET_FLAG.DATA_NONE | IRQ_SET_FLAG.ACTION_TRIGGER, index, start: 0, count: 0 });
      else this.client.setIrqs({ flags: IRQ_SET_FLAG.DATA_EVENTFD | IRQ_SET_FLAG.ACTION_TRIGGER, index, start: 0, count: fds.length }, fds);
    }, undefined);
  }

  setIntxUnmaskFd(fd: number): void {
    this.guard(() => this.client.setIrqs({ flags: IRQ_SET_FLAG.DATA_EVENTFD | IRQ_SET_FLAG.ACTION_UNMASK, index: PCI_IRQ.INTX, start: 0, count: 1 }, [fd]), undefined);
  }

  reset(): void {
    if (!this.canReset) return;
    this.counts.resets++;
    this.guard(() => this.client.reset(), undefined);
  }

  close(): void {
    this.stopListening();
    for (const r of this.regions.values()) if (r.mmap) closeFd(r.mmap.fd);
    this.client.close();
    if (this.ram) closeFd(this.ram.fd);
  }

  stats(): Record<string, number> {
    return {
      'vfio-user region reads': this.counts.regionReads,
      'vfio-user region writes': this.counts.regionWrites,
      'vfio-user dma windows': this.counts.dmaWindows,
      'vfio-user dma maps': this.counts.dmaMaps,
      'vfio-user dma unmaps': this.counts.dmaUnmaps,
      'vfio-user dma reads served': this.client.dmaServed.reads,
      'vfio-user dma writes served': this.client.dmaServed.writes,
      'vfio-user dma faults': this.client.dmaServed.faults,
      'vfio-user resets': this.counts.resets,
    };
  }

  /** Runs a request; when the server is gone (or refuses), the device
   * reads as `fallback`, once reported on stderr. */
  private guard<T>(f: () => T, fallback: T): T {
    if (this.gone) return fallback;
    try {
      return f();
    } catch (e) {
      if (e instanceof VfioUserDisconnected) {
        this.gone = true;
        process.stderr.write(`bhyve: passthru ${this.name}: ${e.message}; the device is gone (reads all-ones)\n`);
        return fallback;
      }
      if (e instanceof VfioUserError) return fallback;
      throw e;
    }
  }

  get isGone(): boolean { return this.gone; }
}
