// A split virtqueue (virtio 1.x spec, section 2.7) over bounds-checked guest
// memory, seen from the device side.
//
// Everything the guest wrote is untrusted: every descriptor is validated
// (address and length inside guest RAM, NEXT inside the table, no loops, at
// most one level of indirection, total length < 2^32, device-readable before
// device-writable) and every loop is bounded by the queue or table size. A
// violation throws VirtqueueError; the device turns it into the spec's
// DEVICE_NEEDS_RESET state (see VirtioDeviceBase). Nothing here can crash or
// hang the VMM.
//
// The ring areas are resolved once, at construction, into live views of guest
// memory, and ring fields are read byte-wise from those views, so the data
// path allocates nothing but the segment views of each chain.
//
// Behind an IOMMU (VIRTIO_F_ACCESS_PLATFORM; `dma` given) every address
// the driver wrote is an IOVA of the function's DMA space: the ring areas
// are translated at construction and again whenever the space's
// generation moves (an unmap, a detach), each buffer and indirect table
// when its chain is walked, with the access it needs (the used ring
// read/write, the rest read, writable buffers write). A ring area whose
// IOVA range maps to scattered guest pages (Linux's iommu-dma may back a
// coherent ring with pages it only makes contiguous in IOVA space) is kept
// as one view per IOMMU page (PagedRing): every ring field is naturally
// aligned and at most 4 bytes (a descriptor: 16 bytes at a 16-aligned
// offset), so none straddles a page, and each is read or written in place,
// the driver seeing every write as it happens. A refused access is
// an IOMMU fault (already reported on the IOMMU's event queue) and a
// VirtqueueError here: nothing of it reaches memory. Without `dma` the
// path is the one above, unchanged.
//
// Memory ordering: the guest runs on other CPUs. x86 is TSO: our loads are not
// reordered with each other, nor our stores with each other, and V8 keeps
// typed-array accesses in program order. The one reordering x86 does allow,
// a later load passing an earlier store, matters twice (publishing used idx
// then reading used_event / avail flags; writing avail_event then re-reading
// avail idx): there we issue a full fence (a locked instruction through
// Atomics on a private SharedArrayBuffer). A 16-bit ring word is written
// with one plain store through a Uint16Array (one aligned mov: the driver
// never sees half of it), not Atomics.store: V8 makes that an xchg, a full
// fence on every used idx and avail_event update, which stalls until the
// line the polling driver keeps reading comes back (Builtins_AtomicsStore
// was 1-5% of the virtio-net I/O thread's time in a TCP stream). Reads
// stay Atomics.load: a plain load in a polling loop may be hoisted out of
// it by the compiler.

import { GuestMemory, GuestMemoryError } from '../../sys/guest-memory.js';
import { DMA_READ, DMA_WRITE, DmaFaultError, type DmaAccess, type DmaSpace, type GuestRange } from '../iommu/dma-space.js';
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_SIZE, VIRTQ_MAX_SIZE, VIRTQ_USED_ELEM_SIZE, VIRTQ_USED_F_NO_NOTIFY,
} from './virtio-constants.js';

/** A malformed or hostile queue or descriptor chain: the driver broke the
 * protocol, and the device must enter DEVICE_NEEDS_RESET. */
export class VirtqueueError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VirtqueueError';
  }
}

/** Guest physical addresses and size of a split queue, as the driver
 * programmed them through the transport. */
export interface VirtqueueLayout {
  size: number;
  desc: number;
  avail: number;
  used: number;
}

export interface VirtqueueOptions {
  /** VIRTIO_RING_F_EVENT_IDX was negotiated. */
  eventIdx?: boolean;
  /** VIRTIO_RING_F_INDIRECT_DESC was negotiated (otherwise an indirect
   * descriptor is an error). */
  indirect?: boolean;
  /** Queue index, for error messages. */
  index?: number;
  /** The function's DMA space when it sits behind an IOMMU (addresses are
   * IOVAs); absent: addresses are guest physical. */
  dma?: DmaSpace;
}

/** Largest total length of one chain's buffers (spec 2.7.5: < 2^32). */
const MAX_CHAIN_BYTES = 0xffffffff;

const fenceWord = new Int32Array(new SharedArrayBuffer(4));
/** A full memory barrier (lock-prefixed instruction on x86). */
export function memoryFence(): void {
  Atomics.add(fenceWord, 0, 0);
}

/** `b` as 16-bit words (undefined when it does not start on an even
 * address: rings are at least 2-aligned in guest RAM, and RAM mappings
 * page-aligned, so that is only a test's odd buffer). */
function words16(b: Uint8Array): Uint16Array | undefined {
  return b.byteOffset % 2 === 0 ? new Uint16Array(b.buffer, b.byteOffset, b.length >> 1) : undefined;
}

function rd16(b: Uint8Array, o: number): number {
  return b[o] | (b[o + 1] << 8);
}
function rd32(b: Uint8Array, o: number): number {
  return (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;
}
function wr16(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
}
function wr32(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
  b[o + 2] = (v >>> 16) & 0xff;
  b[o + 3] = (v >>> 24) & 0xff;
}

/** One available descriptor chain, flattened into views of guest memory:
 * device-readable segments first, then device-writable ones. The views are
 * live: writes into `writable` reach the guest. A chain object can be reused
 * across pops (pass it to Virtqueue.pop) to keep the data path
 * allocation-light. */
export class DescriptorChain {
  /** Index of the head descriptor: the id to hand back in the used ring. */
  head = 0;
  readonly readable: Uint8Array[] = [];
  readonly writable: Uint8Array[] = [];
  readableLength = 0;
  writableLength = 0;

  clear(): void {
    this.head = 0;
    emptyArray(this.readable);
    emptyArray(this.writable);
    this.readableLength = 0;
    this.writableLength = 0;
  }

  /** Copies readable bytes starting at `offset` into `dst`; returns the
   * number copied (less than dst.length when the chain is shorter). */
  copyFromReadable(offset: number, dst: Uint8Array): number {
    return copyOut(this.readable, offset, dst);
  }

  /** Copies `src` into the writable bytes starting at `offset`; returns the
   * number copied (less than src.length when the chain is shorter). */
  copyToWritable(offset: number, src: Uint8Array): number {
    return copyIn(this.writable, offset, src);
  }

  /** Views covering readable bytes [offset, offset+length), appended to
   * `out` (cleared first); fewer bytes when the chain is shorter. */
  readableViews(offset: number, length: number, out: Uint8Array[] = []): Uint8Array[] {
    return views(this.readable, offset, length, out);
  }

  /** Views covering writable bytes [offset, offset+length). */
  writableViews(offset: number, length: number, out: Uint8Array[] = []): Uint8Array[] {
    return views(this.writable, offset, length, out);
  }
}

function copyOut(segs: Uint8Array[], offset: number, dst: Uint8Array): number {
  let copied = 0;
  let skip = offset;
  for (let i = 0; i < segs.length && copied < dst.length; i++) {
    const seg = segs[i];
    if (skip >= seg.length) { skip -= seg.length; continue; }
    const n = Math.min(seg.length - skip, dst.length - copied);
    dst.set(seg.subarray(skip, skip + n), copied);
    copied += n;
    skip = 0;
  }
  return copied;
}

function copyIn(segs: Uint8Array[], offset: number, src: Uint8Array): number {
  let copied = 0;
  let skip = offset;
  for (let i = 0; i < segs.length && copied < src.length; i++) {
    const seg = segs[i];
    if (skip >= seg.length) { skip -= seg.length; continue; }
    const n = Math.min(seg.length - skip, src.length - copied);
    seg.set(src.subarray(copied, copied + n), skip);
    copied += n;
    skip = 0;
  }
  return copied;
}

/** `a.length = 0` without the length setter, a runtime call in V8 that
 * showed as 15% of a transmit loop's time: the data path's arrays hold a
 * few segments, which pop() removes inline. */
export function emptyArray(a: unknown[]): void {
  while (a.length > 0) a.pop();
}

function views(segs: Uint8Array[], offset: number, length: number, out: Uint8Array[]): Uint8Array[] {
  emptyArray(out);
  let left = length;
  let skip = offset;
  for (let i = 0; i < segs.length && left > 0; i++) {
    const seg = segs[i];
    if (skip >= seg.length) { skip -= seg.length; continue; }
    const n = Math.min(seg.length - skip, left);
    out.push(skip === 0 && n === seg.length ? seg : seg.subarray(skip, skip + n));
    left -= n;
    skip = 0;
  }
  return out;
}

/** The granule of the IOMMU's mappings (virtio-iommu's page_size_mask):
 * where a ring's pieces may change guest page. */
const RING_PAGE = 4096;

/**
 * A ring area whose IOVA range maps to more than one guest-physical piece:
 * a view per IOMMU page of the area. `view(off)` gives the page view of
 * area byte `off` and leaves the offset within it in `at`; a field must
 * not cross a page (ring fields never do: they are naturally aligned).
 */
export class PagedRing {
  private readonly views: Uint8Array[] = [];
  private readonly words: Array<Uint16Array | undefined> = [];
  /** Offset of the area's first byte within its IOMMU page. */
  private readonly lead: number;
  /** Offset within the last page view returned by view(). */
  at = 0;

  /** `pieces`: the translation of IOVA [iova, iova+length), in order. */
  constructor(mem: GuestMemory, iova: number, length: number, pieces: readonly GuestRange[]) {
    this.lead = iova % RING_PAGE;
    let off = 0;
    let piece = 0;
    let pieceOff = 0;
    while (off < length) {
      const end = Math.min(length, (this.views.length + 1) * RING_PAGE - this.lead);
      while (pieceOff >= pieces[piece].length) { pieceOff -= pieces[piece].length; piece++; }
      const p = pieces[piece];
      // Pieces change only at IOMMU page boundaries (mappings are whole
      // pages): a page lies in one.
      if (pieceOff + (end - off) > p.length) throw new VirtqueueError(`a piece of it ends inside an IOMMU page (at byte ${off + p.length - pieceOff})`);
      const v = mem.slice(p.gpa + pieceOff, end - off);
      this.views.push(v);
      this.words.push(words16(v));
      pieceOff += end - off;
      off = end;
    }
  }

  get pages(): number { return this.views.length; }

  view(off: number): Uint8Array {
    const o = this.lead + off;
    const page = Math.floor(o / RING_PAGE);
    this.at = page === 0 ? off : o % RING_PAGE;
    return this.views[page];
  }

  word(off: number): number {
    const v = this.view(off);
    const w = this.words[Math.floor((this.lead + off) / RING_PAGE)];
    return w ? Atomics.load(w, this.at >> 1) : rd16(v, this.at);
  }

  setWord(off: number, value: number): void {
    const v = this.view(off);
    const w = this.words[Math.floor((this.lead + off) / RING_PAGE)];
    if (w) w[this.at >> 1] = value;
    else wr16(v, this.at, value);
  }

  set32(off: number, value: number): void {
    wr32(this.view(off), this.at, value);
  }
}

const EMPTY = new Uint8Array(0);

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

export class Virtqueue {
  readonly size: number;
  readonly index: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  /** The addresses the driver programmed (for snapshots and diagnostics). */
  readonly layout: Readonly<VirtqueueLayout>;
  private readonly mem: GuestMemory;
  private readonly dma: DmaSpace | undefined;
  /** dma.generation the ring views were translated at. */
  private ringGeneration = 0;
  private readonly ranges: GuestRange[] = [];
  private descTable: Uint8Array;
  private avail: Uint8Array;
  private used: Uint8Array;
  /** The same rings as 16-bit words, for the fields the driver and device
   * change under each other (idx, flags, used_event, avail_event): each is
   * read and written in one 16-bit access. Byte by byte, a device thread
   * that runs beside the vCPU (virtio-blk's iothread) could see avail idx
   * half-updated when it carried into its high byte (0x34ff -> 0x3500 read
   * as 0x35ff: "256 entries ahead", DEVICE_NEEDS_RESET), and the driver a
   * torn used idx. */
  private avail16: Uint16Array | undefined;
  private used16: Uint16Array | undefined;
  /** Behind an IOMMU, a ring area on scattered guest pages (its plain
   * view above is then empty and unused). */
  private descPaged: PagedRing | undefined;
  private availPaged: PagedRing | undefined;
  private usedPaged: PagedRing | undefined;
  /** Offset of used_event in the avail ring, of avail_event in the used ring. */
  private readonly usedEventOff: number;
  private readonly availEventOff: number;
  private lastAvail = 0;
  private nextUsed = 0;
  private signalledUsed = 0;
  private signalledValid = false;
  /** disableNotification(true) under EVENT_IDX: avail_event is left where
   * it was until enableNotification(). */
  private availEventHeld = false;

  /** Validates the layout (size a power of two <= 32768, alignment, every
   * ring area inside guest RAM) and resolves the rings; throws
   * VirtqueueError when the driver programmed something invalid. */
  constructor(mem: GuestMemory, layout: VirtqueueLayout, opts: VirtqueueOptions = {}) {
    this.index = opts.index ?? 0;
    const { size } = layout;
    if (!isPowerOfTwo(size) || size > VIRTQ_MAX_SIZE) {
      throw new VirtqueueError(`queue ${this.index}: size ${size} is not a power of two in 1..${VIRTQ_MAX_SIZE}`);
    }
    if (layout.desc % 16 !== 0 || layout.avail % 2 !== 0 || layout.used % 4 !== 0) {
      throw new VirtqueueError(`queue ${this.index}: misaligned ring (desc 0x${layout.desc.toString(16)}, `
        + `avail 0x${layout.avail.toString(16)}, used 0x${layout.used.toString(16)})`);
    }
    this.size = size;
    this.layout = { ...layout };
    this.mem = mem;
    this.eventIdx = opts.eventIdx ?? false;
    this.indirect = opts.indirect ?? false;
    this.dma = opts.dma;
    this.ringGeneration = this.dma?.generation ?? 0;
    this.usedEventOff = 4 + 2 * size;
    this.availEventOff = 4 + VIRTQ_USED_ELEM_SIZE * size;
    this.descTable = this.avail = this.used = EMPTY;
    this.resolveRings();
  }

  /** The ring areas as views of guest memory (translated behind an IOMMU). */
  private resolveRings(): void {
    const { layout, size } = this;
    this.descPaged = this.availPaged = this.usedPaged = undefined;
    const desc = this.area(layout.desc, VIRTQ_DESC_SIZE * size, 'descriptor table', DMA_READ);
    const avail = this.area(layout.avail, 6 + 2 * size, 'available ring', DMA_READ);
    const used = this.area(layout.used, 6 + VIRTQ_USED_ELEM_SIZE * size, 'used ring', DMA_READ | DMA_WRITE);
    if (desc instanceof PagedRing) { this.descPaged = desc; this.descTable = EMPTY; } else this.descTable = desc;
    if (avail instanceof PagedRing) { this.availPaged = avail; this.avail = EMPTY; } else this.avail = avail;
    if (used instanceof PagedRing) { this.usedPaged = used; this.used = EMPTY; } else this.used = used;
    this.avail16 = words16(this.avail);
    this.used16 = words16(this.used);
  }

  /** A ring's 16-bit field at even offset `o`, read in one access. */
  private availWord(o: number): number {
    if (this.availPaged) return this.availPaged.word(o);
    return this.avail16 ? Atomics.load(this.avail16, o >> 1) : rd16(this.avail, o);
  }

  private usedWord(o: number): number {
    if (this.usedPaged) return this.usedPaged.word(o);
    return this.used16 ? Atomics.load(this.used16, o >> 1) : rd16(this.used, o);
  }

  private setUsedWord(o: number, v: number): void {
    if (this.usedPaged) this.usedPaged.setWord(o, v);
    else if (this.used16) this.used16[o >> 1] = v;
    else wr16(this.used, o, v);
  }

  private area(addr: number, length: number, what: string, access: DmaAccess): Uint8Array | PagedRing {
    let gpa = addr;
    if (this.dma !== undefined) {
      const r = this.translate(addr, length, access, `${what} at 0x${addr.toString(16)}`);
      gpa = r[0].gpa;
      if (r.length !== 1) {
        try {
          return new PagedRing(this.mem, addr, length, r);
        } catch (e) {
          if (e instanceof GuestMemoryError) throw new VirtqueueError(`queue ${this.index}: ${what} at IOVA 0x${addr.toString(16)}+0x${length.toString(16)} is not all in guest RAM`);
          if (e instanceof VirtqueueError) throw new VirtqueueError(`queue ${this.index}: ${what} at IOVA 0x${addr.toString(16)}+0x${length.toString(16)}: ${e.message}`);
          throw e;
        }
      }
    }
    try {
      return this.mem.slice(gpa, length);
    } catch (e) {
      if (e instanceof GuestMemoryError) {
        throw new VirtqueueError(`queue ${this.index}: ${what} at 0x${gpa.toString(16)}+0x${length.toString(16)} is not in guest RAM`);
      }
      throw e;
    }
  }

  /** IOVA -> guest ranges (this.ranges, reused); an IOMMU fault becomes a
   * VirtqueueError naming `what`. */
  private translate(iova: number, length: number, access: DmaAccess, what: string): GuestRange[] {
    const out = this.ranges;
    out.length = 0;
    try {
      return this.dma!.translate(iova, length, access, out);
    } catch (e) {
      if (e instanceof DmaFaultError) throw new VirtqueueError(`queue ${this.index}: ${what}: ${e.message}`);
      throw e;
    }
  }

  /** Behind an IOMMU: translates the rings again when mappings they may
   * have used went away. */
  private checkRings(): void {
    const gen = this.dma!.generation;
    if (gen === this.ringGeneration) return;
    this.resolveRings();
    this.ringGeneration = gen;
  }

  /** The next avail index the device will consume. */
  get lastAvailIdx(): number { return this.lastAvail; }
  /** The used index the device last published. */
  get usedIdx(): number { return this.nextUsed; }

  /** Restores ring positions (snapshot restore, or a transport that keeps
   * them across re-activation). */
  setPositions(lastAvail: number, nextUsed: number): void {
    this.lastAvail = lastAvail & 0xffff;
    this.nextUsed = nextUsed & 0xffff;
    this.signalledValid = false;
  }

  /** Number of chains the driver made available and the device has not yet
   * popped; throws when the driver's avail idx ran ahead by more than the
   * queue size. */
  pending(): number {
    if (this.dma !== undefined) this.checkRings();
    const availIdx = this.availWord(2);
    const n = (availIdx - this.lastAvail) & 0xffff;
    if (n > this.size) {
      throw new VirtqueueError(`queue ${this.index}: avail idx ${availIdx} is ${n} entries ahead of ${this.lastAvail} (queue size ${this.size})`);
    }
    return n;
  }

  /** Pops the next available chain into `chain` (a fresh one when omitted);
   * null when the ring is empty. Throws VirtqueueError on a malformed ring
   * or chain. */
  pop(chain: DescriptorChain = new DescriptorChain()): DescriptorChain | null {
    if (this.pending() === 0) return null;
    const head = this.availWord(4 + 2 * (this.lastAvail & (this.size - 1)));
    if (head >= this.size) {
      throw new VirtqueueError(`queue ${this.index}: avail ring entry ${this.lastAvail} names descriptor ${head} >= size ${this.size}`);
    }
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    // Tell an EVENT_IDX driver to notify for anything past what we consumed
    // (unless notifications are held off: then it stays behind, and the
    // driver notifies at most once more).
    if (this.eventIdx && !this.availEventHeld) this.setUsedWord(this.availEventOff, this.lastAvail);
    this.walk(head, chain);
    return chain;
  }

  /** Returns a popped chain to the driver: used element (head, len) and a
   * new used idx. `len` is the number of bytes written into the chain's
   * writable buffers. */
  pushUsed(head: number, len: number): void {
    if (this.dma !== undefined) this.checkRings();
    const slot = 4 + VIRTQ_USED_ELEM_SIZE * (this.nextUsed & (this.size - 1));
    if (this.usedPaged) {
      // id and len each lie in one page (the element may straddle two).
      this.usedPaged.set32(slot, head);
      this.usedPaged.set32(slot + 4, len);
    } else {
      wr32(this.used, slot, head);
      wr32(this.used, slot + 4, len);
    }
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
    // The element is stored before the index (x86 keeps stores in order).
    this.setUsedWord(2, this.nextUsed);
  }

  /** After pushing used elements: should the device interrupt the driver?
   * Applies VIRTQ_AVAIL_F_NO_INTERRUPT, or with EVENT_IDX the used_event
   * threshold (vring_need_event). Call once per batch. */
  needsInterrupt(): boolean {
    if (this.dma !== undefined) this.checkRings();
    memoryFence();
    const newIdx = this.nextUsed;
    const old = this.signalledUsed;
    const valid = this.signalledValid;
    this.signalledUsed = newIdx;
    this.signalledValid = true;
    if (valid && newIdx === old) return false;
    if (this.eventIdx) {
      if (!valid) return true;
      const usedEvent = this.availWord(this.usedEventOff);
      return ((newIdx - usedEvent - 1) & 0xffff) < ((newIdx - old) & 0xffff);
    }
    return (this.availWord(0) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /** Asks the driver to notify again (clears VIRTQ_USED_F_NO_NOTIFY, or sets
   * avail_event to the next index) and returns true when chains arrived in
   * the meantime: the caller must then keep processing. */
  enableNotification(): boolean {
    if (this.dma !== undefined) this.checkRings();
    this.availEventHeld = false;
    if (this.eventIdx) this.setUsedWord(this.availEventOff, this.lastAvail);
    else this.setUsedWord(0, this.usedWord(0) & ~VIRTQ_USED_F_NO_NOTIFY);
    memoryFence();
    return this.pending() !== 0;
  }

  /** Asks the driver not to notify: VIRTQ_USED_F_NO_NOTIFY, which an
   * EVENT_IDX driver ignores. With `holdAvailEvent` (a device thread that
   * polls the ring until enableNotification()), under EVENT_IDX pop() also
   * stops moving avail_event, so such a driver notifies at most once. */
  disableNotification(holdAvailEvent = false): void {
    if (this.dma !== undefined) this.checkRings();
    if (!this.eventIdx) this.setUsedWord(0, this.usedWord(0) | VIRTQ_USED_F_NO_NOTIFY);
    else if (holdAvailEvent) this.availEventHeld = true;
  }

  /** An indirect table: one view, in one RAM region. */
  private segment(addr: number, len: number, at: number, inIndirect: boolean): Uint8Array {
    if (this.dma !== undefined) return this.translatedTable(addr, len, at);
    try {
      return this.mem.slice(addr, len);
    } catch (e) {
      throw this.notRam(e, addr, len, at, inIndirect);
    }
  }

  /** A data buffer: its views (more than one across RAM regions) onto `out`. */
  private buffer(addr: number, len: number, at: number, inIndirect: boolean, out: Uint8Array[], access: DmaAccess): void {
    if (this.dma !== undefined) { this.translatedBuffer(addr, len, at, inIndirect, out, access); return; }
    try {
      this.mem.slices(addr, len, out);
    } catch (e) {
      throw this.notRam(e, addr, len, at, inIndirect);
    }
  }

  /** An indirect table at an IOVA: one view, or (its pages scattered in
   * guest memory) a copy; the device only reads it. */
  private translatedTable(iova: number, len: number, at: number): Uint8Array {
    const r = this.translate(iova, len, DMA_READ, `indirect table of descriptor ${at}`);
    try {
      if (r.length === 1) return this.mem.slice(r[0].gpa, len);
      const copy = new Uint8Array(len);
      let o = 0;
      for (const piece of r) { copy.set(this.mem.slice(piece.gpa, piece.length), o); o += piece.length; }
      return copy;
    } catch (e) {
      throw this.notRam(e, r[0].gpa, len, at, false);
    }
  }

  private translatedBuffer(iova: number, len: number, at: number, inIndirect: boolean, out: Uint8Array[], access: DmaAccess): void {
    const r = this.translate(iova, len, access, `descriptor ${at}${inIndirect ? ' (indirect)' : ''} buffer`);
    const start = out.length;
    for (const piece of r) {
      try {
        this.mem.slices(piece.gpa, piece.length, out);
      } catch (e) {
        out.length = start;
        throw this.notRam(e, piece.gpa, piece.length, at, inIndirect);
      }
    }
  }

  private notRam(e: unknown, addr: number, len: number, at: number, inIndirect: boolean): unknown {
    if (!(e instanceof GuestMemoryError)) return e;
    const where = addr < 0 ? 'above 2^53' : `0x${addr.toString(16)}`;
    return new VirtqueueError(`queue ${this.index}: descriptor ${at}${inIndirect ? ' (indirect)' : ''} buffer `
      + `${where}+0x${len.toString(16)} is not in guest RAM`);
  }

  private walk(head: number, chain: DescriptorChain): void {
    chain.clear();
    chain.head = head;
    let table = this.descTable;
    // Scattered descriptor table: each descriptor from its page's view.
    let paged = this.descPaged;
    let tableSize = this.size;
    let budget = this.size;
    let inIndirect = false;
    let seenWritable = false;
    let total = 0;
    let i = head;
    for (;;) {
      if (budget-- <= 0) {
        throw new VirtqueueError(`queue ${this.index}: descriptor chain from ${head} loops (longer than ${inIndirect ? 'its indirect table' : 'the queue size'})`);
      }
      let off = i * VIRTQ_DESC_SIZE;
      if (paged !== undefined) { table = paged.view(off); off = paged.at; }
      const lo = rd32(table, off);
      const hi = rd32(table, off + 4);
      const len = rd32(table, off + 8);
      const flags = rd16(table, off + 12);
      const next = rd16(table, off + 14);
      // Addresses beyond 2^53 cannot be guest RAM; mark them invalid.
      const addr = hi >= 0x200000 ? -1 : hi * 0x100000000 + lo;

      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.indirect) throw new VirtqueueError(`queue ${this.index}: indirect descriptor ${i} but VIRTIO_RING_F_INDIRECT_DESC was not negotiated`);
        if (inIndirect) throw new VirtqueueError(`queue ${this.index}: nested indirect descriptor ${i}`);
        if (flags & VIRTQ_DESC_F_NEXT) throw new VirtqueueError(`queue ${this.index}: indirect descriptor ${i} also has NEXT`);
        if (len === 0 || len % VIRTQ_DESC_SIZE !== 0) {
          throw new VirtqueueError(`queue ${this.index}: indirect table length ${len} is not a nonzero multiple of 16`);
        }
        const count = len / VIRTQ_DESC_SIZE;
        if (count > VIRTQ_MAX_SIZE) throw new VirtqueueError(`queue ${this.index}: indirect table of ${count} descriptors`);
        table = this.segment(addr, len, i, false);
        paged = undefined;
        tableSize = count;
        budget = count;
        inIndirect = true;
        i = 0;
        continue;
      }

      if (len === 0) throw new VirtqueueError(`queue ${this.index}: zero-length descriptor ${i}${inIndirect ? ' (indirect)' : ''}`);
      total += len;
      if (total > MAX_CHAIN_BYTES) throw new VirtqueueError(`queue ${this.index}: descriptor chain from ${head} is longer than 4 GiB`);
      // A buffer may run across a RAM chunk boundary: then it takes
      // several views.
      if (flags & VIRTQ_DESC_F_WRITE) {
        this.buffer(addr, len, i, inIndirect, chain.writable, DMA_WRITE);
        chain.writableLength += len;
        seenWritable = true;
      } else {
        if (seenWritable) throw new VirtqueueError(`queue ${this.index}: device-readable descriptor ${i} after a device-writable one`);
        this.buffer(addr, len, i, inIndirect, chain.readable, DMA_READ);
        chain.readableLength += len;
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) return;
      if (next >= tableSize) {
        throw new VirtqueueError(`queue ${this.index}: descriptor ${i} NEXT ${next} is outside its table of ${tableSize}`);
      }
      i = next;
    }
  }
}
