// The vfio-user wire format (QEMU's docs/interop/vfio-user.rst, version
// 0.1, as libvfio-user and SPDK speak it): a 16-byte header, then a
// command's payload, in host byte order (little-endian here). The payloads
// reuse <linux/vfio.h>'s structures (region info, irq info, irq set) with
// the same layouts as src/sys/vfio-abi.ts; the rest are vfio-user's own.
// Every decoder checks lengths first: a peer is not trusted (the spec's
// "Security Considerations"), so a short or inconsistent payload is a
// ProtocolError, never an out-of-bounds read.

import { DEVICE_INFO, IRQ_INFO, IRQ_SET, REGION_INFO } from '../../sys/vfio-abi.js';

export const VFIO_USER_MAJOR = 0;
export const VFIO_USER_MINOR = 1;
export const HEADER_SIZE = 16;

export const CMD = {
  VERSION: 1,
  DMA_MAP: 2,
  DMA_UNMAP: 3,
  DEVICE_GET_INFO: 4,
  DEVICE_GET_REGION_INFO: 5,
  DEVICE_GET_REGION_IO_FDS: 6,
  DEVICE_GET_IRQ_INFO: 7,
  DEVICE_SET_IRQS: 8,
  REGION_READ: 9,
  REGION_WRITE: 10,
  DMA_READ: 11,
  DMA_WRITE: 12,
  DEVICE_RESET: 13,
} as const;

export const COMMAND_NAMES: Record<number, string> = Object.fromEntries(Object.entries(CMD).map(([k, v]) => [v, k]));

/** Header flags: bits 0-3 the type, bit 4 no reply wanted, bit 5 error. */
export const FLAG = { COMMAND: 0x0, REPLY: 0x1, TYPE_MASK: 0xf, NO_REPLY: 0x10, ERROR: 0x20 } as const;

/** Defaults the spec gives capabilities a peer leaves out. */
export const DEFAULT_MAX_MSG_FDS = 1;
export const DEFAULT_MAX_DATA_XFER = 1024 * 1024;
/** A message bigger than this is refused before it is read (data of the
 * largest transfer we allow plus its headers). */
export const MAX_MESSAGE_SIZE = DEFAULT_MAX_DATA_XFER + 64;

export const DMA_FLAG = { READ: 1 << 0, WRITE: 1 << 1 } as const;

export class ProtocolError extends Error {}

export interface Header {
  id: number;
  command: number;
  size: number;
  flags: number;
  error: number;
}

export interface Message extends Header {
  payload: Uint8Array;
  /** Descriptors that came with it (SCM_RIGHTS), in order. */
  fds: number[];
}

export function encodeHeader(h: Header): Uint8Array {
  const b = new Uint8Array(HEADER_SIZE);
  const v = new DataView(b.buffer);
  v.setUint16(0, h.id, true);
  v.setUint16(2, h.command, true);
  v.setUint32(4, h.size, true);
  v.setUint32(8, h.flags, true);
  v.setUint32(12, h.error, true);
  return b;
}

export function decodeHeader(b: Uint8Array): Header {
  if (b.length < HEADER_SIZE) throw new ProtocolError(`header of ${b.length} bytes`);
  const v = view(b);
  const h = { id: v.getUint16(0, true), command: v.getUint16(2, true), size: v.getUint32(4, true), flags: v.getUint32(8, true), error: v.getUint32(12, true) };
  if (h.size < HEADER_SIZE) throw new ProtocolError(`message size ${h.size} is smaller than its header`);
  if (h.size > MAX_MESSAGE_SIZE) throw new ProtocolError(`message size ${h.size} exceeds ${MAX_MESSAGE_SIZE}`);
  const type = h.flags & FLAG.TYPE_MASK;
  if (type !== FLAG.COMMAND && type !== FLAG.REPLY) throw new ProtocolError(`message type ${type}`);
  return h;
}

/** Header and payload as one buffer. */
export function encodeMessage(id: number, command: number, flags: number, payload: Uint8Array = new Uint8Array(0), error = 0): Uint8Array {
  const b = new Uint8Array(HEADER_SIZE + payload.length);
  b.set(encodeHeader({ id, command, size: b.length, flags, error }));
  b.set(payload, HEADER_SIZE);
  return b;
}

export function isReply(m: Header): boolean {
  return (m.flags & FLAG.TYPE_MASK) === FLAG.REPLY;
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function need(p: Uint8Array, n: number, what: string): DataView {
  if (p.length < n) throw new ProtocolError(`${what}: payload of ${p.length} bytes, need ${n}`);
  return view(p);
}

function u64(v: DataView, off: number, what: string): number {
  const x = v.getBigUint64(off, true);
  if (x > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError(`${what} 0x${x.toString(16)} beyond 2^53`);
  return Number(x);
}

// ---- VERSION ----

export interface Capabilities {
  max_msg_fds?: number;
  max_data_xfer_size?: number;
  max_dma_maps?: number;
  pgsizes?: number;
  [k: string]: unknown;
}

export interface Version {
  major: number;
  minor: number;
  capabilities: Capabilities;
}

export function encodeVersion(v: Version): Uint8Array {
  const json = Buffer.from(JSON.stringify({ capabilities: v.capabilities }) + '\0');
  const b = new Uint8Array(4 + json.length);
  const d = view(b);
  d.setUint16(0, v.major, true);
  d.setUint16(2, v.minor, true);
  b.set(json, 4);
  return b;
}

export function decodeVersion(p: Uint8Array): Version {
  const v = need(p, 4, 'VERSION');
  let capabilities: Capabilities = {};
  if (p.length > 4) {
    let end = p.indexOf(0, 4);
    if (end < 0) end = p.length;
    const text = Buffer.from(p.subarray(4, end)).toString('utf8');
    if (text.length > 0) {
      let j: unknown;
      try { j = JSON.parse(text); } catch (e) { throw new ProtocolError(`VERSION: capabilities are not JSON (${(e as Error).message})`); }
      if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new ProtocolError('VERSION: capabilities JSON is not an object');
      const caps = (j as { capabilities?: unknown }).capabilities;
      if (caps !== undefined) {
        if (typeof caps !== 'object' || caps === null || Array.isArray(caps)) throw new ProtocolError('VERSION: "capabilities" is not an object');
        capabilities = caps as Capabilities;
      }
      for (const k of ['max_msg_fds', 'max_data_xfer_size', 'max_dma_maps', 'pgsizes'] as const) {
        const x = capabilities[k];
        if (x !== undefined && !(typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)) throw new ProtocolError(`VERSION: ${k} is not a count`);
      }
    }
  }
  return { major: v.getUint16(0, true), minor: v.getUint16(2, true), capabilities };
}

// ---- DMA_MAP / DMA_UNMAP ----

export interface DmaMap {
  flags: number;
  /** Offset in the file sent with the message (0 when none). */
  offset: number;
  address: number;
  size: number;
}

export const DMA_MAP_SIZE = 32;
export const DMA_UNMAP_SIZE = 24;

export function encodeDmaMap(m: DmaMap): Uint8Array {
  const b = new Uint8Array(DMA_MAP_SIZE);
  const v = view(b);
  v.setUint32(0, DMA_MAP_SIZE, true);
  v.setUint32(4, m.flags, true);
  v.setBigUint64(8, BigInt(m.offset), true);
  v.setBigUint64(16, BigInt(m.address), true);
  v.setBigUint64(24, BigInt(m.size), true);
  return b;
}

export function decodeDmaMap(p: Uint8Array): DmaMap {
  const v = need(p, DMA_MAP_SIZE, 'DMA_MAP');
  return { flags: v.getUint32(4, true), offset: u64(v, 8, 'DMA_MAP offset'), address: u64(v, 16, 'DMA_MAP address'), size: u64(v, 24, 'DMA_MAP size') };
}

export function encodeDmaUnmap(address: number, size: number): Uint8Array {
  const b = new Uint8Array(DMA_UNMAP_SIZE);
  const v = view(b);
  v.setUint32(0, DMA_UNMAP_SIZE, true);
  v.setBigUint64(8, BigInt(address), true);
  v.setBigUint64(16, BigInt(size), true);
  return b;
}

export function decodeDmaUnmap(p: Uint8Array): { flags: number; address: number; size: number } {
  const v = need(p, DMA_UNMAP_SIZE, 'DMA_UNMAP');
  return { flags: v.getUint32(4, true), address: u64(v, 8, 'DMA_UNMAP address'), size: u64(v, 16, 'DMA_UNMAP size') };
}

// ---- DEVICE_GET_INFO ----

export interface DeviceInfo {
  flags: number;
  numRegions: number;
  numIrqs: number;
}

export const DEVICE_INFO_SIZE = 16;

export function encodeDeviceInfo(i: DeviceInfo): Uint8Array {
  const b = new Uint8Array(DEVICE_INFO_SIZE);
  const v = view(b);
  v.setUint32(DEVICE_INFO.argsz, DEVICE_INFO_SIZE, true);
  v.setUint32(DEVICE_INFO.flags, i.flags, true);
  v.setUint32(DEVICE_INFO.num_regions, i.numRegions, true);
  v.setUint32(DEVICE_INFO.num_irqs, i.numIrqs, true);
  return b;
}

export function decodeDeviceInfo(p: Uint8Array): DeviceInfo {
  const v = need(p, DEVICE_INFO_SIZE, 'DEVICE_GET_INFO');
  return { flags: v.getUint32(DEVICE_INFO.flags, true), numRegions: v.getUint32(DEVICE_INFO.num_regions, true), numIrqs: v.getUint32(DEVICE_INFO.num_irqs, true) };
}

// ---- DEVICE_GET_REGION_INFO ----

/** A sparse mmap area (VFIO_REGION_INFO_CAP_SPARSE_MMAP), relative to the region. */
export interface MmapArea { offset: number; size: number }

export interface RegionInfo {
  index: number;
  flags: number;
  size: number;
  /** mmap() offset in the file sent with the reply (MMAP regions). */
  offset: number;
  /** Only these parts are mappable (absent: the whole region). */
  sparse?: MmapArea[];
}

export const REGION_INFO_SIZE = 32;
export const VFIO_REGION_INFO_CAP_SPARSE_MMAP = 1;

export function encodeRegionInfoRequest(index: number, argsz = 256): Uint8Array {
  const b = new Uint8Array(REGION_INFO_SIZE);
  const v = view(b);
  v.setUint32(REGION_INFO.argsz, argsz, true);
  v.setUint32(REGION_INFO.index, index, true);
  return b;
}

export function encodeRegionInfo(r: RegionInfo, argsz: number): Uint8Array {
  const capLen = r.sparse ? 16 + 16 * r.sparse.length : 0;
  const full = REGION_INFO_SIZE + capLen;
  // A reply that does not fit argsz carries the fixed part and says the size it needs.
  const b = new Uint8Array(full <= argsz ? full : REGION_INFO_SIZE);
  const v = view(b);
  v.setUint32(REGION_INFO.argsz, full, true);
  v.setUint32(REGION_INFO.flags, r.flags | (r.sparse ? 1 << 3 : 0), true);
  v.setUint32(REGION_INFO.index, r.index, true);
  v.setBigUint64(REGION_INFO.size, BigInt(r.size), true);
  v.setBigUint64(REGION_INFO.offset, BigInt(r.offset), true);
  if (r.sparse && b.length === full) {
    v.setUint32(REGION_INFO.cap_offset, REGION_INFO_SIZE, true);
    v.setUint16(REGION_INFO_SIZE, VFIO_REGION_INFO_CAP_SPARSE_MMAP, true);
    v.setUint16(REGION_INFO_SIZE + 2, 1, true);
    v.setUint32(REGION_INFO_SIZE + 4, 0, true);
    v.setUint32(REGION_INFO_SIZE + 8, r.sparse.length, true);
    r.sparse.forEach((a, i) => {
      v.setBigUint64(REGION_INFO_SIZE + 16 + 16 * i, BigInt(a.offset), true);
      v.setBigUint64(REGION_INFO_SIZE + 24 + 16 * i, BigInt(a.size), true);
    });
  }
  return b;
}

export function decodeRegionInfo(p: Uint8Array): RegionInfo & { argsz: number } {
  const v = need(p, REGION_INFO_SIZE, 'DEVICE_GET_REGION_INFO');
  const r: RegionInfo & { argsz: number } = {
    argsz: v.getUint32(REGION_INFO.argsz, true),
    index: v.getUint32(REGION_INFO.index, true),
    flags: v.getUint32(REGION_INFO.flags, true),
    size: u64(v, REGION_INFO.size, 'region size'),
    offset: u64(v, REGION_INFO.offset, 'region offset'),
  };
  // The capability chain: offsets relative to the structure, each checked.
  let cap = v.getUint32(REGION_INFO.cap_offset, true);
  const seen = new Set<number>();
  while (cap !== 0 && (r.flags & (1 << 3)) !== 0) {
    if (seen.has(cap) || cap < REGION_INFO_SIZE || cap + 8 > p.length) throw new ProtocolError(`region ${r.index}: capability at ${cap} outside the reply`);
    seen.add(cap);
    const id = v.getUint16(cap, true);
    if (id === VFIO_REGION_INFO_CAP_SPARSE_MMAP) {
      if (cap + 16 > p.length) throw new ProtocolError(`region ${r.index}: sparse mmap capability truncated`);
      const n = v.getUint32(cap + 8, true);
      if (n > 64 || cap + 16 + 16 * n > p.length) throw new ProtocolError(`region ${r.index}: ${n} sparse mmap areas do not fit the reply`);
      r.sparse = [];
      for (let i = 0; i < n; i++) {
        const a = { offset: u64(v, cap + 16 + 16 * i, 'sparse offset'), size: u64(v, cap + 24 + 16 * i, 'sparse size') };
        if (a.offset + a.size > r.size) throw new ProtocolError(`region ${r.index}: sparse area beyond the region`);
        r.sparse.push(a);
      }
    }
    cap = v.getUint32(cap + 4, true);
  }
  return r;
}

// ---- DEVICE_GET_IRQ_INFO / DEVICE_SET_IRQS ----

export interface IrqInfo { index: number; flags: number; count: number }

export const IRQ_INFO_SIZE = 16;

export function encodeIrqInfo(i: IrqInfo): Uint8Array {
  const b = new Uint8Array(IRQ_INFO_SIZE);
  const v = view(b);
  v.setUint32(IRQ_INFO.argsz, IRQ_INFO_SIZE, true);
  v.setUint32(IRQ_INFO.flags, i.flags, true);
  v.setUint32(IRQ_INFO.index, i.index, true);
  v.setUint32(IRQ_INFO.count, i.count, true);
  return b;
}

export function decodeIrqInfo(p: Uint8Array): IrqInfo {
  const v = need(p, IRQ_INFO_SIZE, 'DEVICE_GET_IRQ_INFO');
  return { index: v.getUint32(IRQ_INFO.index, true), flags: v.getUint32(IRQ_INFO.flags, true), count: v.getUint32(IRQ_INFO.count, true) };
}

export interface IrqSet {
  flags: number;
  index: number;
  start: number;
  count: number;
  /** DATA_BOOL: one byte per sub-index. */
  data?: Uint8Array;
}

export const IRQ_SET_SIZE = 20;

export function encodeIrqSet(s: IrqSet): Uint8Array {
  const b = new Uint8Array(IRQ_SET_SIZE + (s.data?.length ?? 0));
  const v = view(b);
  v.setUint32(IRQ_SET.argsz, b.length, true);
  v.setUint32(IRQ_SET.flags, s.flags, true);
  v.setUint32(IRQ_SET.index, s.index, true);
  v.setUint32(IRQ_SET.start, s.start, true);
  v.setUint32(IRQ_SET.count, s.count, true);
  if (s.data) b.set(s.data, IRQ_SET_SIZE);
  return b;
}

export function decodeIrqSet(p: Uint8Array): IrqSet {
  const v = need(p, IRQ_SET_SIZE, 'DEVICE_SET_IRQS');
  const s: IrqSet = { flags: v.getUint32(IRQ_SET.flags, true), index: v.getUint32(IRQ_SET.index, true), start: v.getUint32(IRQ_SET.start, true), count: v.getUint32(IRQ_SET.count, true) };
  if (p.length > IRQ_SET_SIZE) s.data = p.slice(IRQ_SET_SIZE);
  return s;
}

// ---- REGION_READ / REGION_WRITE, DMA_READ / DMA_WRITE ----

export interface RegionAccess { offset: number; region: number; count: number; data?: Uint8Array }

export const REGION_ACCESS_SIZE = 16;

export function encodeRegionAccess(a: RegionAccess): Uint8Array {
  const b = new Uint8Array(REGION_ACCESS_SIZE + (a.data?.length ?? 0));
  const v = view(b);
  v.setBigUint64(0, BigInt(a.offset), true);
  v.setUint32(8, a.region, true);
  v.setUint32(12, a.count, true);
  if (a.data) b.set(a.data, REGION_ACCESS_SIZE);
  return b;
}

/** With `withData`, the count bytes of data must follow. */
export function decodeRegionAccess(p: Uint8Array, withData: boolean): RegionAccess {
  const v = need(p, REGION_ACCESS_SIZE, 'REGION access');
  const a: RegionAccess = { offset: u64(v, 0, 'region offset'), region: v.getUint32(8, true), count: v.getUint32(12, true) };
  if (a.count > DEFAULT_MAX_DATA_XFER) throw new ProtocolError(`REGION access of ${a.count} bytes exceeds ${DEFAULT_MAX_DATA_XFER}`);
  if (withData) {
    if (p.length !== REGION_ACCESS_SIZE + a.count) throw new ProtocolError(`REGION access of ${a.count} bytes carries ${p.length - REGION_ACCESS_SIZE}`);
    a.data = p.subarray(REGION_ACCESS_SIZE);
  }
  return a;
}

export interface DmaAccess { address: number; count: number; data?: Uint8Array }

export const DMA_ACCESS_SIZE = 16;

export function encodeDmaAccess(a: DmaAccess): Uint8Array {
  const b = new Uint8Array(DMA_ACCESS_SIZE + (a.data?.length ?? 0));
  const v = view(b);
  v.setBigUint64(0, BigInt(a.address), true);
  v.setBigUint64(8, BigInt(a.count), true);
  if (a.data) b.set(a.data, DMA_ACCESS_SIZE);
  return b;
}

export function decodeDmaAccess(p: Uint8Array, withData: boolean): DmaAccess {
  const v = need(p, DMA_ACCESS_SIZE, 'DMA access');
  const a: DmaAccess = { address: u64(v, 0, 'DMA address'), count: u64(v, 8, 'DMA count') };
  if (a.count > DEFAULT_MAX_DATA_XFER) throw new ProtocolError(`DMA access of ${a.count} bytes exceeds ${DEFAULT_MAX_DATA_XFER}`);
  if (withData) {
    if (p.length !== DMA_ACCESS_SIZE + a.count) throw new ProtocolError(`DMA access of ${a.count} bytes carries ${p.length - DMA_ACCESS_SIZE}`);
    a.data = p.subarray(DMA_ACCESS_SIZE);
  }
  return a;
}
