// The client side of vfio-user: what bhyve's passthru uses to drive a
// device another process serves. Typed calls for each command, and the
// answers to the server's DMA_READ/DMA_WRITE through the DmaTarget the
// client was given (guest memory behind the function's DMA space).

import { Endpoint, SocketWire, VfioUserError, type Wire } from './endpoint.js';
import { closeFd } from '../../sys/eventfd.js';
import { setReceiveTimeout, unixConnect } from '../../sys/unix-socket.js';
import {
  CMD, decodeDeviceInfo, decodeDmaAccess, decodeIrqInfo, decodeRegionAccess, decodeRegionInfo, decodeVersion,
  DEFAULT_MAX_DATA_XFER, DEFAULT_MAX_MSG_FDS, encodeDmaAccess, encodeDmaMap, encodeDmaUnmap, encodeIrqSet,
  encodeRegionAccess, encodeRegionInfoRequest, encodeVersion, type Capabilities, type DeviceInfo, type DmaMap,
  type IrqInfo, type IrqSet, type Message, ProtocolError, type RegionInfo, VFIO_USER_MAJOR, VFIO_USER_MINOR,
} from './protocol.js';

const EFAULT = 14;
/** How long a reply may take (a device reset may be slow) before the server is taken as gone. */
export const REPLY_TIMEOUT_MS = 30_000;

/** Guest memory as the server's DMA_READ/DMA_WRITE reach it; throws for
 * an address the function may not use (answered EFAULT). */
export interface DmaTarget {
  read(address: number, length: number): Uint8Array;
  write(address: number, data: Uint8Array): void;
}

export class VfioUserClient {
  readonly endpoint: Endpoint;
  /** The server's capabilities after VERSION. */
  serverCaps: Capabilities = {};
  maxDataXfer = DEFAULT_MAX_DATA_XFER;
  maxMsgFds = DEFAULT_MAX_MSG_FDS;
  /** DMA_READ/WRITE messages served (the server had no mapping). */
  readonly dmaServed = { reads: 0, writes: 0, bytes: 0, faults: 0 };

  constructor(wire: Wire, private dmaTarget?: DmaTarget) {
    this.endpoint = new Endpoint(wire, (m) => this.serveDma(m));
  }

  /** Connects to a server's socket and negotiates the version. */
  static connect(path: string, dma?: DmaTarget, timeoutMs = REPLY_TIMEOUT_MS): VfioUserClient {
    const fd = unixConnect(path);
    // A server that stops answering must not hold the vCPU forever: past
    // this the device is taken as gone.
    if (timeoutMs > 0) setReceiveTimeout(fd, timeoutMs);
    const c = new VfioUserClient(new SocketWire(fd), dma);
    try {
      c.negotiate();
    } catch (e) {
      c.close();
      throw e;
    }
    return c;
  }

  setDmaTarget(t: DmaTarget): void { this.dmaTarget = t; }

  negotiate(): Capabilities {
    const r = this.endpoint.call(CMD.VERSION, encodeVersion({
      major: VFIO_USER_MAJOR, minor: VFIO_USER_MINOR,
      capabilities: { max_msg_fds: 16, max_data_xfer_size: DEFAULT_MAX_DATA_XFER, max_dma_maps: 1024, pgsizes: 4096 },
    }));
    this.closeFds(r);
    const v = decodeVersion(r.payload);
    if (v.major !== VFIO_USER_MAJOR || v.minor > VFIO_USER_MINOR) throw new ProtocolError(`server answered version ${v.major}.${v.minor} to ${VFIO_USER_MAJOR}.${VFIO_USER_MINOR}`);
    this.serverCaps = v.capabilities;
    const x = v.capabilities.max_data_xfer_size;
    if (typeof x === 'number' && x > 0) this.maxDataXfer = Math.min(DEFAULT_MAX_DATA_XFER, x);
    const f = v.capabilities.max_msg_fds;
    if (typeof f === 'number') this.maxMsgFds = f;
    return v.capabilities;
  }

  deviceInfo(): DeviceInfo {
    const r = this.endpoint.call(CMD.DEVICE_GET_INFO, new Uint8Array([16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
    this.closeFds(r);
    return decodeDeviceInfo(r.payload);
  }

  /** A region's info; `fd` (the caller's to close) when it is mmap-able. */
  regionInfo(index: number): RegionInfo & { fd?: number } {
    let argsz = 256;
    for (let tries = 0; ; tries++) {
      const r = this.endpoint.call(CMD.DEVICE_GET_REGION_INFO, encodeRegionInfoRequest(index, argsz));
      const info = decodeRegionInfo(r.payload);
      if (info.argsz > r.payload.length && info.argsz > argsz && tries === 0 && info.argsz <= 65536) {
        this.closeFds(r);
        argsz = info.argsz;
        continue;
      }
      if (info.index !== index) { this.closeFds(r); throw new ProtocolError(`region info for ${info.index} instead of ${index}`); }
      const out: RegionInfo & { fd?: number } = info;
      if (r.fds.length > 0) {
        out.fd = r.fds[0];
        for (const f of r.fds.slice(1)) this.closeFds({ fds: [f] });
      }
      return out;
    }
  }

  irqInfo(index: number): IrqInfo {
    const b = new Uint8Array(16);
    const v = new DataView(b.buffer);
    v.setUint32(0, 16, true);
    v.setUint32(8, index, true);
    const r = this.endpoint.call(CMD.DEVICE_GET_IRQ_INFO, b);
    this.closeFds(r);
    const i = decodeIrqInfo(r.payload);
    if (i.index !== index) throw new ProtocolError(`irq info for ${i.index} instead of ${index}`);
    return i;
  }

  /** DEVICE_SET_IRQS; `fds` go with DATA_EVENTFD (none: de-assign). */
  setIrqs(s: IrqSet, fds: readonly number[] = []): void {
    if (fds.length > this.maxMsgFds) {
      // More eventfds than the server takes in one message: several messages.
      for (let i = 0; i < fds.length; i += this.maxMsgFds) {
        const part = fds.slice(i, i + this.maxMsgFds);
        this.setIrqs({ ...s, start: s.start + i, count: part.length }, part);
      }
      return;
    }
    this.closeFds(this.endpoint.call(CMD.DEVICE_SET_IRQS, encodeIrqSet(s), fds));
  }

  regionRead(index: number, offset: number, length: number): Uint8Array {
    if (length <= this.maxDataXfer) return this.readOnce(index, offset, length);
    const out = new Uint8Array(length);
    for (let done = 0; done < length;) {
      const n = Math.min(this.maxDataXfer, length - done);
      out.set(this.readOnce(index, offset + done, n), done);
      done += n;
    }
    return out;
  }

  private readOnce(index: number, offset: number, count: number): Uint8Array {
    const r = this.endpoint.call(CMD.REGION_READ, encodeRegionAccess({ offset, region: index, count }));
    this.closeFds(r);
    const a = decodeRegionAccess(r.payload, true);
    if (a.count !== count || a.region !== index || a.offset !== offset) throw new ProtocolError(`REGION_READ reply for ${a.region}@${a.offset}+${a.count}`);
    return a.data!;
  }

  regionWrite(index: number, offset: number, data: Uint8Array): void {
    let done = 0;
    do {
      const n = Math.min(this.maxDataXfer, data.length - done);
      const r = this.endpoint.call(CMD.REGION_WRITE, encodeRegionAccess({ offset: offset + done, region: index, count: n, data: data.subarray(done, done + n) }));
      this.closeFds(r);
      done += n;
    } while (done < data.length);
  }

  /** DMA_MAP; with `fd` the server may mmap the window (offset in it). */
  dmaMap(m: DmaMap, fd?: number): void {
    this.closeFds(this.endpoint.call(CMD.DMA_MAP, encodeDmaMap(m), fd === undefined ? [] : [fd]));
  }

  dmaUnmap(address: number, size: number): void {
    this.closeFds(this.endpoint.call(CMD.DMA_UNMAP, encodeDmaUnmap(address, size)));
  }

  reset(): void {
    this.closeFds(this.endpoint.call(CMD.DEVICE_RESET));
  }

  close(): void {
    this.endpoint.close();
  }

  private closeFds(m: Pick<Message, 'fds'>): void {
    for (const f of m.fds) closeFd(f);
  }

  /** The server's commands: DMA_READ and DMA_WRITE. */
  private serveDma(m: Message): { payload?: Uint8Array } {
    this.closeFds(m);
    if (m.command !== CMD.DMA_READ && m.command !== CMD.DMA_WRITE) throw new VfioUserError(m.command, 95 /* ENOTSUP */);
    const write = m.command === CMD.DMA_WRITE;
    const a = decodeDmaAccess(m.payload, write);
    const t = this.dmaTarget;
    if (!t) { this.dmaServed.faults++; throw new VfioUserError(m.command, EFAULT); }
    try {
      if (write) {
        t.write(a.address, a.data!);
        this.dmaServed.writes++;
        this.dmaServed.bytes += a.count;
        return { payload: encodeDmaAccess({ address: a.address, count: a.count }) };
      }
      const data = t.read(a.address, a.count);
      this.dmaServed.reads++;
      this.dmaServed.bytes += a.count;
      return { payload: encodeDmaAccess({ address: a.address, count: a.count, data }) };
    } catch {
      this.dmaServed.faults++;
      throw new VfioUserError(m.command, EFAULT);
    }
  }
}
