// Guest physical memory as the host sees it: a list of regions, each backed
// by a host view (a zero-copy view of an mmap'd file in the VMM, or a plain
// buffer in unit tests). Every access is bounds-checked: an address outside
// guest RAM is the guest's error and comes back as a GuestMemoryError, never
// an out-of-bounds host access.

export class GuestMemoryError extends Error {
  constructor(readonly gpa: number, readonly length: number) {
    super(`guest physical range 0x${gpa.toString(16)}+0x${length.toString(16)} is not guest RAM`);
  }
}

export interface MemoryRegion {
  /** First guest physical address of the region. */
  readonly gpa: number;
  /** May be a getter that makes the view (guest-ram.ts): it is read once,
   * on the region's first access, when `length` is given. */
  readonly bytes: Uint8Array;
  /** The region's size; given, the view is made on first use. */
  readonly length?: number;
}

/** A region with a DataView over it, made once: device models read
 * descriptor and command words on every request, and a DataView per access
 * was most of their cost. Both are made on the region's first access when
 * its size was given apart: a view over guest RAM is external memory to V8,
 * and 256 MiB of it at once set off a full collection of the thread's heap
 * in the middle of start-up (BENCHMARKS.md, "Launch"). */
interface ViewedRegion {
  readonly gpa: number;
  /** gpa + size. */
  readonly end: number;
  readonly source: MemoryRegion;
  /** Undefined until the first access. */
  bytes: Uint8Array;
  dv: DataView;
}

function viewed(r: MemoryRegion): ViewedRegion {
  if (r.length === undefined) {
    const bytes = r.bytes;
    return { gpa: r.gpa, end: r.gpa + bytes.length, source: r, bytes, dv: new DataView(bytes.buffer, bytes.byteOffset, bytes.length) };
  }
  return { gpa: r.gpa, end: r.gpa + r.length, source: r, bytes: undefined as unknown as Uint8Array, dv: undefined as unknown as DataView };
}

function makeView(v: ViewedRegion): void {
  const bytes = v.source.bytes;
  if (bytes.length !== v.end - v.gpa) throw new RangeError(`guest memory region at 0x${v.gpa.toString(16)}: view of ${bytes.length} bytes, expected ${v.end - v.gpa}`);
  v.bytes = bytes;
  v.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
}

export class GuestMemory {
  private readonly regions: ViewedRegion[];
  private lastHit: ViewedRegion | undefined;

  constructor(regions: MemoryRegion[]) {
    this.regions = [...regions].sort((a, b) => a.gpa - b.gpa).map(viewed);
  }

  /** Replaces the regions (a vfio-user server's device model: the
   * client's DMA windows come and go while the model holds this object). */
  setRegions(regions: MemoryRegion[]): void {
    this.lastHit = undefined;
    this.regions.splice(0, this.regions.length, ...[...regions].sort((a, b) => a.gpa - b.gpa).map(viewed));
  }

  /** Total bytes of guest RAM across regions. */
  get size(): number {
    return this.regions.reduce((n, r) => n + (r.end - r.gpa), 0);
  }

  /** The RAM regions as guest physical ranges, in address order. */
  ranges(): Array<{ gpa: number; length: number }> {
    return this.regions.map((r) => ({ gpa: r.gpa, length: r.end - r.gpa }));
  }

  /** True when [gpa, gpa+length) lies inside one region. */
  contains(gpa: number, length: number): boolean {
    return this.find(gpa, length) !== undefined;
  }

  /** A live view of [gpa, gpa+length); throws GuestMemoryError when the range
   * is not wholly inside one RAM region. Writes through it reach the guest. */
  slice(gpa: number, length: number): Uint8Array {
    const r = this.find(gpa, length);
    if (!r) throw new GuestMemoryError(gpa, length);
    const off = gpa - r.gpa;
    return r.bytes.subarray(off, off + length);
  }

  /** Live views covering [gpa, gpa+length), appended to `out`: one view
   * when the range lies in one region, several when it runs on across
   * regions that touch (guest RAM is mapped in chunks: a guest buffer may
   * cross a chunk boundary). Throws GuestMemoryError when any part of the
   * range is not guest RAM. Returns the number of views appended. */
  slices(gpa: number, length: number, out: Uint8Array[]): number {
    const one = this.find(gpa, length);
    if (one) {
      const off = gpa - one.gpa;
      out.push(one.bytes.subarray(off, off + length));
      return 1;
    }
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(length) || gpa < 0 || length <= 0) throw new GuestMemoryError(gpa, length);
    const start = out.length;
    let at = gpa;
    let left = length;
    while (left > 0) {
      const r = this.find(at, 1);
      if (!r) { out.length = start; throw new GuestMemoryError(gpa, length); }
      const off = at - r.gpa;
      const n = Math.min(left, r.bytes.length - off);
      out.push(r.bytes.subarray(off, off + n));
      at += n;
      left -= n;
    }
    return out.length - start;
  }

  /** The guest-physical address of a view this object handed out (slice,
   * slices), for a thread with its own mapping of the same RAM; -1 for
   * any other view. */
  gpaOf(view: Uint8Array): number {
    const regions = this.regions;
    for (let i = 0; i < regions.length; i++) {
      const r = regions[i];
      const b = r.bytes;
      if (b === undefined || b.buffer !== view.buffer) continue;
      const off = view.byteOffset - b.byteOffset;
      if (off >= 0 && off + view.length <= b.length) return r.gpa + off;
    }
    return -1;
  }

  read(gpa: number, length: number): Uint8Array {
    return Uint8Array.from(this.slice(gpa, length));
  }

  write(gpa: number, data: Uint8Array): void {
    this.slice(gpa, data.length).set(data);
  }

  readU8(gpa: number): number { return this.slice(gpa, 1)[0]; }
  readU16(gpa: number): number { const r = this.at(gpa, 2); return r.dv.getUint16(gpa - r.gpa, true); }
  readU32(gpa: number): number { const r = this.at(gpa, 4); return r.dv.getUint32(gpa - r.gpa, true); }
  readU64(gpa: number): bigint { const r = this.at(gpa, 8); return r.dv.getBigUint64(gpa - r.gpa, true); }
  writeU8(gpa: number, v: number): void { this.slice(gpa, 1)[0] = v; }
  writeU16(gpa: number, v: number): void { const r = this.at(gpa, 2); r.dv.setUint16(gpa - r.gpa, v, true); }
  writeU32(gpa: number, v: number): void { const r = this.at(gpa, 4); r.dv.setUint32(gpa - r.gpa, v, true); }
  writeU64(gpa: number, v: bigint): void { const r = this.at(gpa, 8); r.dv.setBigUint64(gpa - r.gpa, v, true); }

  /** The region holding [gpa, gpa+length), for a word access. */
  private at(gpa: number, length: number): ViewedRegion {
    const r = this.find(gpa, length);
    if (!r) throw new GuestMemoryError(gpa, length);
    return r;
  }

  private find(gpa: number, length: number): ViewedRegion | undefined {
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(length) || gpa < 0 || length < 0) return undefined;
    // Accesses come in runs on one region (a command's structures and
    // buffers): the last hit first, then the others (an indexed loop: this
    // runs for every word a device model reads).
    const last = this.lastHit;
    if (last !== undefined && gpa >= last.gpa && gpa + length <= last.end) return last;
    const regions = this.regions;
    for (let i = 0; i < regions.length; i++) {
      const r = regions[i];
      if (gpa >= r.gpa && gpa + length <= r.end) {
        if (r.dv === undefined) makeView(r);
        this.lastHit = r;
        return r;
      }
    }
    return undefined;
  }
}
