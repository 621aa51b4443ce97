// A single-producer single-consumer byte ring on a SharedArrayBuffer, usable
// from any two threads (or from one thread, for tests). The producer only
// moves HEAD, the consumer only moves TAIL; both are free-running 32-bit
// counters (wrapping), so `head - tail` is the fill level and no slot is
// wasted. The capacity is rounded up to a power of two.
//
// Waiting never spins. The side that would block announces itself in a flag
// word and waits on the counter the other side moves; the other side calls
// Atomics.notify only when that flag is set, so the hot path (a guest reading
// RBR on the device thread) costs two atomic loads and a store.
//   - async waits (main thread, event loop): waitForData(), waitForSpace()
//     use Atomics.waitAsync. Note: a pending Atomics.waitAsync does NOT keep
//     Node's event loop alive by itself.
//   - sync waits (device thread): waitForDataSync(ms), waitForSpaceSync(ms)
//     use Atomics.wait with a timeout.
// close() marks the ring closed and wakes every waiter. One waiter per side at
// a time (single producer, single consumer).

const HEAD = 0;
const TAIL = 1;
const CONSUMER_WAITING = 2;
const PRODUCER_WAITING = 3;
const CLOSED = 4;
const HEADER_WORDS = 8;
const HEADER_BYTES = HEADER_WORDS * 4;
const MAX_CAPACITY = 1 << 30;

type WaitAsyncResult =
  | { async: false; value: 'not-equal' | 'timed-out' }
  | { async: true; value: Promise<'ok' | 'timed-out'> };
type WaitAsyncFn = (ta: Int32Array, index: number, value: number, timeout?: number) => WaitAsyncResult;

function waitAsync(ta: Int32Array, index: number, value: number, timeout?: number): Promise<unknown> {
  const fn = (Atomics as unknown as { waitAsync?: WaitAsyncFn }).waitAsync;
  if (fn === undefined) throw new Error('Atomics.waitAsync is not available in this runtime');
  const r = fn(ta, index, value, timeout);
  return r.async ? r.value : Promise.resolve(r.value);
}

export class ByteRing {
  readonly sab: SharedArrayBuffer;
  readonly capacity: number;
  private readonly ctl: Int32Array;
  private readonly data: Uint8Array;
  private readonly mask: number;

  private constructor(sab: SharedArrayBuffer) {
    if (!(sab instanceof SharedArrayBuffer)) throw new TypeError('ByteRing needs a SharedArrayBuffer');
    const cap = sab.byteLength - HEADER_BYTES;
    if (cap <= 0 || (cap & (cap - 1)) !== 0) {
      throw new RangeError(`SharedArrayBuffer of ${sab.byteLength} bytes is not a ByteRing`);
    }
    this.sab = sab;
    this.capacity = cap;
    this.mask = cap - 1;
    this.ctl = new Int32Array(sab, 0, HEADER_WORDS);
    this.data = new Uint8Array(sab, HEADER_BYTES, cap);
  }

  /** A new empty ring holding at least `capacity` bytes (rounded up to a power of two). */
  static create(capacity: number): ByteRing {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > MAX_CAPACITY) {
      throw new RangeError(`ByteRing capacity must be an integer in 1..${MAX_CAPACITY}, got ${capacity}`);
    }
    let cap = 1;
    while (cap < capacity) cap *= 2;
    return new ByteRing(new SharedArrayBuffer(HEADER_BYTES + cap));
  }

  /** Attaches to a ring created elsewhere (e.g. received through postMessage). */
  static from(sab: SharedArrayBuffer): ByteRing {
    return new ByteRing(sab);
  }

  /** Bytes waiting to be consumed. */
  available(): number {
    return (Atomics.load(this.ctl, HEAD) - Atomics.load(this.ctl, TAIL)) >>> 0;
  }

  /** Bytes the producer can still push. */
  free(): number {
    return this.capacity - this.available();
  }

  isEmpty(): boolean {
    return this.available() === 0;
  }

  // ---- producer side ----

  /** Copies as many bytes as fit; returns how many were accepted. */
  push(bytes: Uint8Array): number {
    const h = Atomics.load(this.ctl, HEAD);
    const t = Atomics.load(this.ctl, TAIL);
    const room = this.capacity - ((h - t) >>> 0);
    const n = Math.min(room, bytes.length);
    if (n <= 0) return 0;
    const start = h & this.mask;
    const first = Math.min(n, this.capacity - start);
    this.data.set(bytes.subarray(0, first), start);
    if (n > first) this.data.set(bytes.subarray(first, n), 0);
    Atomics.store(this.ctl, HEAD, (h + n) | 0);
    if (Atomics.load(this.ctl, CONSUMER_WAITING) !== 0) Atomics.notify(this.ctl, HEAD);
    return n;
  }

  /** Pushes one byte; false when the ring is full. */
  pushByte(b: number): boolean {
    const h = Atomics.load(this.ctl, HEAD);
    const t = Atomics.load(this.ctl, TAIL);
    if (((h - t) >>> 0) >= this.capacity) return false;
    this.data[h & this.mask] = b;
    Atomics.store(this.ctl, HEAD, (h + 1) | 0);
    if (Atomics.load(this.ctl, CONSUMER_WAITING) !== 0) Atomics.notify(this.ctl, HEAD);
    return true;
  }

  /** Resolves once there is free space (or the ring is closed). Main thread. */
  async waitForSpace(): Promise<void> {
    while (this.free() === 0 && !this.isClosed()) {
      const t = Atomics.load(this.ctl, TAIL);
      Atomics.store(this.ctl, PRODUCER_WAITING, 1);
      try {
        if (this.free() === 0 && !this.isClosed()) await waitAsync(this.ctl, TAIL, t);
      } finally {
        Atomics.store(this.ctl, PRODUCER_WAITING, 0);
      }
    }
  }

  /** Blocks the calling thread until there is free space, the ring closes or
   * `timeoutMs` passes; returns true when there is space. */
  waitForSpaceSync(timeoutMs: number): boolean {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.free() > 0) break;
      if (this.isClosed()) break;
      const left = deadline - Date.now();
      if (left <= 0) break;
      const t = Atomics.load(this.ctl, TAIL);
      Atomics.store(this.ctl, PRODUCER_WAITING, 1);
      if (this.free() > 0) break;
      Atomics.wait(this.ctl, TAIL, t, left);
    }
    Atomics.store(this.ctl, PRODUCER_WAITING, 0);
    return this.free() > 0;
  }

  // ---- consumer side ----

  /** Next byte, or -1 when the ring is empty. */
  pop(): number {
    const t = Atomics.load(this.ctl, TAIL);
    const h = Atomics.load(this.ctl, HEAD);
    if (h === t) return -1;
    const b = this.data[t & this.mask];
    Atomics.store(this.ctl, TAIL, (t + 1) | 0);
    if (Atomics.load(this.ctl, PRODUCER_WAITING) !== 0) Atomics.notify(this.ctl, TAIL);
    return b;
  }

  /** Removes up to `max` bytes (all waiting bytes by default) and returns a copy. */
  read(max = Infinity): Uint8Array {
    const t = Atomics.load(this.ctl, TAIL);
    const h = Atomics.load(this.ctl, HEAD);
    const n = Math.min((h - t) >>> 0, max);
    const out = new Uint8Array(n);
    if (n === 0) return out;
    const start = t & this.mask;
    const first = Math.min(n, this.capacity - start);
    out.set(this.data.subarray(start, start + first), 0);
    if (n > first) out.set(this.data.subarray(0, n - first), first);
    Atomics.store(this.ctl, TAIL, (t + n) | 0);
    if (Atomics.load(this.ctl, PRODUCER_WAITING) !== 0) Atomics.notify(this.ctl, TAIL);
    return out;
  }

  /** Drops everything waiting. Consumer side only. */
  discard(): void {
    Atomics.store(this.ctl, TAIL, Atomics.load(this.ctl, HEAD));
    if (Atomics.load(this.ctl, PRODUCER_WAITING) !== 0) Atomics.notify(this.ctl, TAIL);
  }

  /** Resolves once data is waiting (or the ring is closed). Main thread; never spins. */
  async waitForData(): Promise<void> {
    while (this.available() === 0 && !this.isClosed()) {
      const h = Atomics.load(this.ctl, HEAD);
      Atomics.store(this.ctl, CONSUMER_WAITING, 1);
      try {
        if (this.available() === 0 && !this.isClosed()) await waitAsync(this.ctl, HEAD, h);
      } finally {
        Atomics.store(this.ctl, CONSUMER_WAITING, 0);
      }
    }
  }

  /** Alias of waitForData(), for consumers on the event loop. */
  waitAsync(): Promise<void> {
    return this.waitForData();
  }

  /** Blocks until data is waiting, the ring closes or `timeoutMs` passes;
   * returns true when data is waiting. Not for the main thread. */
  waitForDataSync(timeoutMs: number): boolean {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.available() > 0 || this.isClosed()) break;
      const left = deadline - Date.now();
      if (left <= 0) break;
      const h = Atomics.load(this.ctl, HEAD);
      Atomics.store(this.ctl, CONSUMER_WAITING, 1);
      if (this.available() > 0) break;
      Atomics.wait(this.ctl, HEAD, h, left);
    }
    Atomics.store(this.ctl, CONSUMER_WAITING, 0);
    return this.available() > 0;
  }

  // ---- either side ----

  /** Marks the ring closed and wakes all waiters. Data already pushed stays readable. */
  close(): void {
    Atomics.store(this.ctl, CLOSED, 1);
    Atomics.notify(this.ctl, HEAD);
    Atomics.notify(this.ctl, TAIL);
  }

  isClosed(): boolean {
    return Atomics.load(this.ctl, CLOSED) !== 0;
  }
}
