// A single-producer single-consumer ring of variable-length records (network
// frames) on a SharedArrayBuffer, for handing frames from the main thread
// (which reads the tap) to the device thread (which copies them into the
// guest's receive buffers).
//
// Layout: a header of Int32 words, then a power-of-two data area. A record is
// a 32-bit little-endian length followed by that many bytes, padded to 4. A
// record never wraps: when it does not fit before the end of the data area,
// the producer writes a WRAP marker (length 0xffffffff) and starts again at
// offset 0. HEAD and TAIL are free-running byte counters (wrapping 32-bit),
// moved only by the producer and the consumer respectively, so the consumer
// can hand out a view of a record in place (peek) and release it afterwards
// (consume) without copying it first.
//
// Waiting follows ByteRing: the side that would block announces itself in a
// flag word and the other side calls Atomics.notify only when that flag is
// set. The producer (main thread) waits asynchronously for space.

const HEAD = 0;
const TAIL = 1;
const PRODUCER_WAITING = 2;
const CLOSED = 3;
/** Records the producer dropped because the ring was full (statistics). */
const DROPPED = 4;
const HEADER_WORDS = 8;
const HEADER_BYTES = HEADER_WORDS * 4;
const WRAP = 0xffffffff;

type WaitAsyncResult =
  | { async: false; value: 'not-equal' | 'timed-out' }
  | { async: true; value: Promise<'ok' | 'timed-out'> };
type WaitAsyncFn = (ta: Int32Array, index: number, value: number, timeout?: number) => WaitAsyncResult;

function align4(n: number): number {
  return (n + 3) & ~3;
}

export class FrameRing {
  readonly sab: SharedArrayBuffer;
  readonly capacity: number;
  /** Largest record payload this ring accepts. */
  readonly maxFrame: number;
  private readonly ctl: Int32Array;
  private readonly data: Uint8Array;
  private readonly dv: DataView;
  private readonly mask: number;

  private constructor(sab: SharedArrayBuffer) {
    const cap = sab.byteLength - HEADER_BYTES;
    if (cap < 64 || (cap & (cap - 1)) !== 0) throw new RangeError(`SharedArrayBuffer of ${sab.byteLength} bytes is not a FrameRing`);
    this.sab = sab;
    this.capacity = cap;
    this.mask = cap - 1;
    // A record of maxFrame must fit even after a wrap: half the ring.
    this.maxFrame = cap / 2 - 8;
    this.ctl = new Int32Array(sab, 0, HEADER_WORDS);
    this.data = new Uint8Array(sab, HEADER_BYTES, cap);
    this.dv = new DataView(sab, HEADER_BYTES, cap);
  }

  /** A new empty ring with at least `capacity` data bytes (power of two, >= 64). */
  static create(capacity: number): FrameRing {
    let cap = 64;
    while (cap < capacity) cap *= 2;
    return new FrameRing(new SharedArrayBuffer(HEADER_BYTES + cap));
  }

  static from(sab: SharedArrayBuffer): FrameRing {
    return new FrameRing(sab);
  }

  /** Bytes in use (records, padding and wrap markers). */
  used(): number {
    return (Atomics.load(this.ctl, HEAD) - Atomics.load(this.ctl, TAIL)) >>> 0;
  }

  isEmpty(): boolean {
    return this.used() === 0;
  }

  isClosed(): boolean {
    return Atomics.load(this.ctl, CLOSED) !== 0;
  }

  /** Frames the producer dropped because they did not fit. */
  get dropped(): number {
    return Atomics.load(this.ctl, DROPPED) >>> 0;
  }

  // ---- producer ----

  /** Room needed for a record of `len` bytes at the current head. */
  private need(h: number, len: number): number {
    const pos = h & this.mask;
    const rec = 4 + align4(len);
    return pos + rec > this.capacity ? (this.capacity - pos) + rec : rec;
  }

  /** True when a record of `len` bytes fits now. */
  fits(len: number): boolean {
    if (len > this.maxFrame) return false;
    const h = Atomics.load(this.ctl, HEAD);
    return this.need(h, len) <= this.capacity - this.used();
  }

  /** Appends one record; false (nothing written) when it does not fit or
   * is larger than maxFrame. */
  push(frame: Uint8Array): boolean {
    const len = frame.length;
    if (len > this.maxFrame) return false;
    let h = Atomics.load(this.ctl, HEAD);
    const t = Atomics.load(this.ctl, TAIL);
    const free = this.capacity - ((h - t) >>> 0);
    if (this.need(h, len) > free) return false;
    let pos = h & this.mask;
    if (pos + 4 + align4(len) > this.capacity) {
      this.dv.setUint32(pos, WRAP, true);
      h = (h + (this.capacity - pos)) | 0;
      pos = 0;
    }
    this.dv.setUint32(pos, len, true);
    this.data.set(frame, pos + 4);
    Atomics.store(this.ctl, HEAD, (h + 4 + align4(len)) | 0);
    return true;
  }

  /** Counts a frame dropped by the producer. */
  countDrop(): void {
    Atomics.add(this.ctl, DROPPED, 1);
  }

  /** Resolves once `len` bytes fit (or the ring is closed). Main thread. */
  async waitForSpace(len: number): Promise<void> {
    const fn = (Atomics as unknown as { waitAsync?: WaitAsyncFn }).waitAsync;
    if (fn === undefined) throw new Error('Atomics.waitAsync is not available in this runtime');
    while (!this.fits(Math.min(len, this.maxFrame)) && !this.isClosed()) {
      const t = Atomics.load(this.ctl, TAIL);
      Atomics.store(this.ctl, PRODUCER_WAITING, 1);
      try {
        if (this.fits(Math.min(len, this.maxFrame)) || this.isClosed()) break;
        const r = fn(this.ctl, TAIL, t, 1000);
        if (r.async) await r.value;
      } finally {
        Atomics.store(this.ctl, PRODUCER_WAITING, 0);
      }
    }
  }

  // ---- consumer ----

  /** A view of the oldest record in place, or null when the ring is empty.
   * Valid until consume(). */
  peek(): Uint8Array | null {
    let t = Atomics.load(this.ctl, TAIL);
    const h = Atomics.load(this.ctl, HEAD);
    if (t === h) return null;
    let pos = t & this.mask;
    let len = this.dv.getUint32(pos, true);
    if (len === WRAP) {
      t = (t + (this.capacity - pos)) | 0;
      Atomics.store(this.ctl, TAIL, t);
      if (t === h) return null;
      pos = 0;
      len = this.dv.getUint32(0, true);
    }
    return this.data.subarray(pos + 4, pos + 4 + len);
  }

  /** Releases the record peek() returned. */
  consume(): void {
    const t = Atomics.load(this.ctl, TAIL);
    if (t === Atomics.load(this.ctl, HEAD)) return;
    const pos = t & this.mask;
    const len = this.dv.getUint32(pos, true);
    const step = len === WRAP ? this.capacity - pos : 4 + align4(len);
    Atomics.store(this.ctl, TAIL, (t + step) | 0);
    if (len === WRAP) { this.consume(); return; }
    if (Atomics.load(this.ctl, PRODUCER_WAITING) !== 0) Atomics.notify(this.ctl, TAIL);
  }

  /** Drops every waiting record (consumer side). */
  discard(): void {
    Atomics.store(this.ctl, TAIL, Atomics.load(this.ctl, HEAD));
    if (Atomics.load(this.ctl, PRODUCER_WAITING) !== 0) Atomics.notify(this.ctl, TAIL);
  }

  /** Marks the ring closed and wakes a waiting producer. */
  close(): void {
    Atomics.store(this.ctl, CLOSED, 1);
    Atomics.notify(this.ctl, TAIL);
  }
}
