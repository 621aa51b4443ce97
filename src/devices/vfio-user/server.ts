// The server side of vfio-user: serves one PCI device model to one client.
// It answers VERSION, DEVICE_GET_INFO, DEVICE_GET_REGION_INFO (with the
// region's file for mmap-able regions), DEVICE_GET_IRQ_INFO,
// DEVICE_SET_IRQS (eventfds per interrupt), REGION_READ/WRITE,
// DMA_MAP/UNMAP and DEVICE_RESET, and gives the device model DMA to the
// client's memory: straight through the client's files when DMA_MAP sent
// one (the server mmaps it), else by DMA_READ/DMA_WRITE messages.
//
// The client is not trusted: every offset, count and index is checked and
// a bad one is an error reply (EINVAL, EFAULT), never a crash of the server.

import fs from 'node:fs';
import { closeFd, eventfdRead, eventfdWrite } from '../../sys/eventfd.js';
import { mmap, PROT_READ, PROT_WRITE, type Mapping } from '../../sys/libc.js';
import { IRQ_SET_FLAG, PCI_IRQ, REGION_INFO_FLAG } from '../../sys/vfio-abi.js';
import { pollIn } from '../../sys/unix-socket.js';
import { Endpoint, SocketWire, VfioUserDisconnected, VfioUserError, type Reply, type Wire } from './endpoint.js';
import {
  CMD, DEFAULT_MAX_DATA_XFER, DMA_FLAG, decodeDmaAccess, decodeDmaMap, decodeDmaUnmap, decodeIrqSet, decodeRegionAccess,
  decodeVersion, encodeDeviceInfo, encodeDmaAccess, encodeIrqInfo, encodeRegionAccess, encodeRegionInfo, encodeVersion,
  type MmapArea, type Message, ProtocolError, REGION_INFO_SIZE, VFIO_USER_MAJOR, VFIO_USER_MINOR,
} from './protocol.js';

const EINVAL = 22;
const EEXIST = 17;
const ENOENT = 2;
const ENOTSUP = 95;

/** A region of the served device (a BAR, the config space, ...). */
export interface ServedRegion {
  size: number;
  /** VFIO_REGION_INFO_FLAG_READ/WRITE (MMAP is added when `file` is set). */
  flags: number;
  read(offset: number, data: Uint8Array): void;
  write(offset: number, data: Uint8Array): void;
  /** A file the client may mmap for this region, at `offset`; `sparse`
   * limits which parts. */
  file?: { fd: number; offset: number; sparse?: MmapArea[] };
}

/** A device model served over vfio-user. */
export interface ServedDevice {
  /** By VFIO region index (PCI: BAR0-5, ROM, CONFIG, VGA); undefined: absent (size 0). */
  readonly regions: ReadonlyArray<ServedRegion | undefined>;
  /** By VFIO irq index (PCI: INTX, MSI, MSIX, ERR, REQ): how many and VFIO_IRQ_INFO flags. */
  readonly irqs: ReadonlyArray<{ count: number; flags: number }>;
  /** Gets the server's services once, before any request. */
  attach(services: DeviceServices): void;
  reset(): void;
  /** INTx was unmasked by the client (AUTOMASKED INTx). */
  intxUnmasked?(): void;
  /** The client set (count > 0) or removed the eventfds of irq `index`. */
  irqsChanged?(index: number, count: number): void;
  /** The client's DMA windows changed (see DeviceServices.mappedWindows). */
  dmaChanged?(): void;
}

/** What a device model may ask of its server. */
export interface DeviceServices {
  dma: DmaPort;
  /** Signals interrupt `sub` of irq `index`; false when the client set no eventfd for it. */
  trigger(index: number, sub: number): boolean;
  /** The client's DMA windows this process has mapped (address = the
   * client's DMA address), for models that access memory directly. */
  mappedWindows(): Array<{ address: number; bytes: Uint8Array }>;
}

/** A DMA the client's mappings do not allow (the device's error state). */
export class DmaFault extends Error {
  constructor(readonly address: number, readonly length: number, readonly write: boolean) {
    super(`DMA ${write ? 'write' : 'read'} of ${length} bytes at 0x${address.toString(16)} outside the client's mappings`);
  }
}

/** Client memory as the device model sees it. */
export interface DmaPort {
  read(address: number, length: number): Uint8Array;
  write(address: number, data: Uint8Array): void;
}

interface DmaRegion {
  address: number;
  size: number;
  flags: number;
  /** The client's file mapped here, when it sent one. */
  map?: Mapping;
}

/** Size of the file behind a descriptor (Infinity when it has none to tell, e.g. a device). */
function fileSize(fd: number): number {
  try {
    const st = fs.fstatSync(fd);
    return st.isFile() ? st.size : Infinity;
  } catch {
    return 0;
  }
}

/** Largest client file we map whole (a typed array view must fit). */
const MAX_MAPPED_REGION = 1 << 30;

export interface ServerStats {
  dmaMapped: number;
  dmaMessages: number;
  dmaBytes: number;
  regionReads: number;
  regionWrites: number;
}

export class VfioUserServer {
  private readonly dma: DmaRegion[] = [];
  /** eventfds by irq index and sub-index (-1: none). */
  private readonly irqFds: number[][];
  /** INTx unmask eventfds (the client's resample fds). */
  private readonly unmaskFds: number[] = [];
  private endpoint: Endpoint | undefined;
  private negotiated = false;
  private maxDataXfer = DEFAULT_MAX_DATA_XFER;
  readonly stats: ServerStats = { dmaMapped: 0, dmaMessages: 0, dmaBytes: 0, regionReads: 0, regionWrites: 0 };

  constructor(private readonly device: ServedDevice) {
    this.irqFds = device.irqs.map((i) => new Array(i.count).fill(-1));
    device.attach({
      dma: { read: (a, n) => this.dmaRead(a, n), write: (a, d) => this.dmaWrite(a, d) },
      trigger: (index, sub) => {
        const fd = this.irqFds[index]?.[sub] ?? -1;
        if (fd < 0) return false;
        eventfdWrite(fd);
        return true;
      },
      mappedWindows: () => this.dma.filter((r) => r.map).map((r) => ({ address: r.address, bytes: r.map!.bytes })),
    });
  }

  /** Serves the client on `wire` until it disconnects; then drops its
   * mappings and eventfds (the device keeps its state, as the spec asks). */
  serve(wire: Wire): void {
    const ep = this.connect(wire);
    try {
      for (;;) {
        if (wire instanceof SocketWire && this.unmaskFds.some((f) => f >= 0)) {
          const fds = [wire.fd, ...this.unmaskFds.filter((f) => f >= 0)];
          const ready = pollIn(fds, -1)!;
          for (let i = 1; i < fds.length; i++) {
            if (ready[i] !== 0 && eventfdRead(fds[i]) > 0n) this.device.intxUnmasked?.();
          }
          if (ready[0] === 0) continue;
        }
        if (!ep.serveOne()) break;
      }
    } catch (e) {
      if (!(e instanceof VfioUserDisconnected)) throw e;
    } finally {
      this.disconnect();
    }
  }

  /** The endpoint for a client on `wire` (serve() loops on it; tests and
   * the in-process loopback drive it themselves). */
  connect(wire: Wire): Endpoint {
    this.endpoint = new Endpoint(wire, (m) => this.handle(m));
    this.negotiated = false;
    return this.endpoint;
  }

  /** Forgets the client: its memory and eventfds. */
  disconnect(): void {
    const hadDma = this.dma.length > 0;
    for (const r of this.dma.splice(0)) r.map?.unmap();
    if (hadDma) this.device.dmaChanged?.();
    this.irqFds.forEach((list, index) => {
      const had = list.some((f) => f >= 0);
      for (let i = 0; i < list.length; i++) { if (list[i] >= 0) closeFd(list[i]); list[i] = -1; }
      if (had) this.device.irqsChanged?.(index, 0);
    });
    for (const f of this.unmaskFds.splice(0)) if (f >= 0) closeFd(f);
    this.endpoint?.close();
    this.endpoint = undefined;
  }

  /** One command from the client. */
  handle(m: Message): Reply {
    // Descriptors are consumed by the commands that take them; others are closed.
    const keep = new Set<number>();
    try {
      return this.dispatch(m, keep);
    } finally {
      for (const f of m.fds) if (!keep.has(f)) closeFd(f);
    }
  }

  private dispatch(m: Message, keep: Set<number>): Reply {
    if (m.command !== CMD.VERSION && !this.negotiated) throw new VfioUserError(m.command, EINVAL, 'VERSION first');
    switch (m.command) {
      case CMD.VERSION: {
        const v = decodeVersion(m.payload);
        if (v.major !== VFIO_USER_MAJOR) throw new VfioUserError(m.command, ENOTSUP, `major ${v.major}`);
        const theirs = v.capabilities.max_data_xfer_size;
        this.maxDataXfer = Math.min(DEFAULT_MAX_DATA_XFER, typeof theirs === 'number' && theirs > 0 ? theirs : DEFAULT_MAX_DATA_XFER);
        this.negotiated = true;
        return {
          payload: encodeVersion({
            major: VFIO_USER_MAJOR,
            minor: Math.min(v.minor, VFIO_USER_MINOR),
            capabilities: { max_msg_fds: 16, max_data_xfer_size: DEFAULT_MAX_DATA_XFER, max_dma_maps: 1024, pgsizes: 4096 },
          }),
        };
      }
      case CMD.DEVICE_GET_INFO:
        return { payload: encodeDeviceInfo({ flags: 0x3 /* RESET | PCI */, numRegions: Math.max(9, this.device.regions.length), numIrqs: Math.max(5, this.device.irqs.length) }) };
      case CMD.DEVICE_GET_REGION_INFO: {
        if (m.payload.length < REGION_INFO_SIZE) throw new ProtocolError('short DEVICE_GET_REGION_INFO');
        const dv = new DataView(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength);
        const argsz = dv.getUint32(0, true);
        const index = dv.getUint32(8, true);
        const r = this.device.regions[index];
        if (index >= Math.max(9, this.device.regions.length)) throw new VfioUserError(m.command, EINVAL, `region ${index}`);
        if (!r) return { payload: encodeRegionInfo({ index, flags: 0, size: 0, offset: 0 }, argsz) };
        const flags = r.flags | (r.file ? REGION_INFO_FLAG.MMAP : 0);
        return {
          payload: encodeRegionInfo({ index, flags, size: r.size, offset: r.file?.offset ?? 0, sparse: r.file?.sparse }, argsz),
          fds: r.file ? [r.file.fd] : [],
        };
      }
      case CMD.DEVICE_GET_IRQ_INFO: {
        if (m.payload.length < 16) throw new ProtocolError('short DEVICE_GET_IRQ_INFO');
        const index = new DataView(m.payload.buffer, m.payload.byteOffset).getUint32(8, true);
        const i = this.device.irqs[index];
        if (index >= Math.max(5, this.device.irqs.length)) throw new VfioUserError(m.command, EINVAL, `irq index ${index}`);
        return { payload: encodeIrqInfo({ index, flags: i?.flags ?? 0, count: i?.count ?? 0 }) };
      }
      case CMD.DEVICE_SET_IRQS:
        this.setIrqs(m, keep);
        return {};
      case CMD.REGION_READ: {
        const a = decodeRegionAccess(m.payload, false);
        const r = this.region(m.command, a.region, a.offset, a.count);
        const data = new Uint8Array(a.count);
        r.read(a.offset, data);
        this.stats.regionReads++;
        return { payload: encodeRegionAccess({ ...a, data }) };
      }
      case CMD.REGION_WRITE: {
        const a = decodeRegionAccess(m.payload, true);
        const r = this.region(m.command, a.region, a.offset, a.count);
        this.stats.regionWrites++;
        r.write(a.offset, a.data!);
        return { payload: encodeRegionAccess({ offset: a.offset, region: a.region, count: a.count }) };
      }
      case CMD.DMA_MAP: {
        const d = decodeDmaMap(m.payload);
        if (d.size === 0 || d.address + d.size > Number.MAX_SAFE_INTEGER) throw new VfioUserError(m.command, EINVAL, 'bad range');
        if (this.dma.some((r) => d.address < r.address + r.size && r.address < d.address + d.size)) throw new VfioUserError(m.command, EEXIST);
        if (this.dma.length >= 1024) throw new VfioUserError(m.command, 28 /* ENOSPC */);
        const region: DmaRegion = { address: d.address, size: d.size, flags: d.flags };
        // A window past the end of its file would fault (SIGBUS) when touched: refused.
        if (m.fds.length > 0 && fileSize(m.fds[0]) < d.offset + d.size) throw new VfioUserError(m.command, EINVAL, 'window beyond its file');
        if (m.fds.length > 0 && d.size <= MAX_MAPPED_REGION) {
          const prot = (d.flags & DMA_FLAG.READ ? PROT_READ : 0) | (d.flags & DMA_FLAG.WRITE ? PROT_WRITE : 0);
          try {
            region.map = mmap(d.size, prot || PROT_READ, m.fds[0], d.offset, 'vfio-user DMA region');
          } catch {
            // Not mappable (a too-large or odd file): DMA by messages instead.
          }
        }
        this.dma.push(region);
        this.dma.sort((x, y) => x.address - y.address);
        if (region.map) this.stats.dmaMapped++;
        if (region.map) this.device.dmaChanged?.();
        return {};
      }
      case CMD.DMA_UNMAP: {
        const u = decodeDmaUnmap(m.payload);
        const i = this.dma.findIndex((r) => r.address === u.address && r.size === u.size);
        if (i < 0) throw new VfioUserError(m.command, ENOENT);
        const gone = this.dma.splice(i, 1)[0];
        // The model lets go of the memory before it is unmapped.
        if (gone.map) { this.device.dmaChanged?.(); gone.map.unmap(); }
        return { payload: m.payload.slice(0, 24) };
      }
      case CMD.DEVICE_RESET:
        this.device.reset();
        return {};
      default:
        throw new VfioUserError(m.command, ENOTSUP);
    }
  }

  private region(command: number, index: number, offset: number, count: number): ServedRegion {
    const r = this.device.regions[index];
    if (!r) throw new VfioUserError(command, EINVAL, `no region ${index}`);
    if (count === 0 || count > this.maxDataXfer || offset + count > r.size) throw new VfioUserError(command, EINVAL, `region ${index} access at ${offset}+${count}`);
    return r;
  }

  private setIrqs(m: Message, keep: Set<number>): void {
    const s = decodeIrqSet(m.payload);
    const list = this.irqFds[s.index];
    if (!list) throw new VfioUserError(m.command, EINVAL, `irq index ${s.index}`);
    const data = s.flags & (IRQ_SET_FLAG.DATA_NONE | IRQ_SET_FLAG.DATA_BOOL | IRQ_SET_FLAG.DATA_EVENTFD);
    const action = s.flags & (IRQ_SET_FLAG.ACTION_MASK | IRQ_SET_FLAG.ACTION_UNMASK | IRQ_SET_FLAG.ACTION_TRIGGER);
    if ((data & (data - 1)) !== 0 || (action & (action - 1)) !== 0 || data === 0 || action === 0) throw new VfioUserError(m.command, EINVAL, 'flags');
    // count 0 with DATA_NONE + TRIGGER: every interrupt of the index off.
    if (s.count === 0) {
      if (data !== IRQ_SET_FLAG.DATA_NONE || action !== IRQ_SET_FLAG.ACTION_TRIGGER) throw new VfioUserError(m.command, EINVAL, 'count 0');
      for (let i = 0; i < list.length; i++) { if (list[i] >= 0) closeFd(list[i]); list[i] = -1; }
      this.device.irqsChanged?.(s.index, 0);
      return;
    }
    if (s.start + s.count > list.length) throw new VfioUserError(m.command, EINVAL, `irqs ${s.start}+${s.count} of ${list.length}`);
    if (data === IRQ_SET_FLAG.DATA_EVENTFD) {
      if (m.fds.length !== 0 && m.fds.length !== s.count) throw new VfioUserError(m.command, EINVAL, `${m.fds.length} eventfds for ${s.count} irqs`);
      if (action === IRQ_SET_FLAG.ACTION_TRIGGER) {
        for (let i = 0; i < s.count; i++) {
          const old = list[s.start + i];
          if (old >= 0) closeFd(old);
          list[s.start + i] = m.fds.length ? m.fds[i] : -1;
          if (m.fds.length) keep.add(m.fds[i]);
        }
        this.device.irqsChanged?.(s.index, list.filter((f) => f >= 0).length);
      } else if (action === IRQ_SET_FLAG.ACTION_UNMASK && s.index === PCI_IRQ.INTX) {
        const old = this.unmaskFds[0];
        if (old !== undefined && old >= 0) closeFd(old);
        this.unmaskFds[0] = m.fds.length ? m.fds[0] : -1;
        if (m.fds.length) keep.add(m.fds[0]);
      } else {
        throw new VfioUserError(m.command, ENOTSUP, 'eventfd for this action');
      }
      return;
    }
    // DATA_NONE / DATA_BOOL: act now.
    for (let i = 0; i < s.count; i++) {
      if (data === IRQ_SET_FLAG.DATA_BOOL && !(s.data?.[i])) continue;
      const sub = s.start + i;
      if (action === IRQ_SET_FLAG.ACTION_TRIGGER) { if (list[sub] >= 0) eventfdWrite(list[sub]); }
      else if (action === IRQ_SET_FLAG.ACTION_UNMASK && s.index === PCI_IRQ.INTX) this.device.intxUnmasked?.();
    }
  }

  // ---- DMA for the device model ----

  /** The window holding the access with its permission, or undefined
   * when none does: then the client is asked by message (it answers EFAULT, or, behind an
   * emulated IOMMU, reports the fault to the guest first). */
  private find(address: number, length: number, write: boolean): DmaRegion | undefined {
    if (length < 0 || !Number.isSafeInteger(address) || !Number.isSafeInteger(address + length)) throw new DmaFault(address, length, write);
    const r = this.dma.find((x) => address >= x.address && address + length <= x.address + x.size);
    // A window without this permission: the client refuses it too (and reports it).
    return r && (r.flags & (write ? DMA_FLAG.WRITE : DMA_FLAG.READ)) ? r : undefined;
  }

  private dmaRead(address: number, length: number): Uint8Array {
    const r = this.find(address, length, false);
    this.stats.dmaBytes += length;
    if (r?.map) return r.map.bytes.slice(address - r.address, address - r.address + length);
    const out = new Uint8Array(length);
    for (let done = 0; done < length;) {
      const n = Math.min(this.maxDataXfer, length - done);
      const reply = this.call(CMD.DMA_READ, encodeDmaAccess({ address: address + done, count: n }));
      const a = decodeDmaAccess(reply.payload, true);
      if (a.count !== n) throw new DmaFault(address + done, n, false);
      out.set(a.data!, done);
      done += n;
    }
    return out;
  }

  private dmaWrite(address: number, data: Uint8Array): void {
    const r = this.find(address, data.length, true);
    this.stats.dmaBytes += data.length;
    if (r?.map) { r.map.bytes.set(data, address - r.address); return; }
    for (let done = 0; done < data.length;) {
      const n = Math.min(this.maxDataXfer, data.length - done);
      this.call(CMD.DMA_WRITE, encodeDmaAccess({ address: address + done, count: n, data: data.subarray(done, done + n) }));
      done += n;
    }
  }

  private call(command: number, payload: Uint8Array): Message {
    if (!this.endpoint) throw new DmaFault(0, 0, command === CMD.DMA_WRITE);
    this.stats.dmaMessages++;
    try {
      return this.endpoint.call(command, payload);
    } catch (e) {
      if (e instanceof VfioUserError) {
        const a = decodeDmaAccess(payload, false);
        throw new DmaFault(a.address, a.count, command === CMD.DMA_WRITE);
      }
      throw e;
    }
  }
}

