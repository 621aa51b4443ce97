// Little helpers for building firmware tables byte by byte: a growable
// little-endian writer, fixed-width ASCII fields, and the 8-bit checksums
// ACPI, SMBIOS and the MP specification all use (bytes sum to zero).

export class ByteWriter {
  private buf = new Uint8Array(256);
  private len = 0;

  get length(): number { return this.len; }

  private grow(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  u8(v: number): this { this.grow(1); this.buf[this.len++] = v & 0xff; return this; }
  u16(v: number): this { return this.u8(v).u8(v >>> 8); }
  u32(v: number): this { return this.u16(v & 0xffff).u16(Math.floor(v / 0x10000) & 0xffff); }
  u64(v: number | bigint): this {
    const b = BigInt.asUintN(64, BigInt(v));
    return this.u32(Number(b & 0xffffffffn)).u32(Number(b >> 32n));
  }
  bytes(b: ArrayLike<number>): this {
    this.grow(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
    return this;
  }
  /** ASCII text padded with `pad` (or cut) to exactly `width` bytes. */
  fixed(s: string, width: number, pad = 0x20): this {
    const out = new Uint8Array(width).fill(pad);
    for (let i = 0; i < Math.min(width, s.length); i++) out[i] = s.charCodeAt(i) & 0xff;
    return this.bytes(out);
  }
  zeros(n: number): this { this.grow(n); this.buf.fill(0, this.len, this.len + n); this.len += n; return this; }
  /** Pads with zeros up to a multiple of `align`. */
  align(align: number): this { const r = this.len % align; return r === 0 ? this : this.zeros(align - r); }

  toBytes(): Uint8Array { return this.buf.slice(0, this.len); }
}

/** The byte that makes `bytes[start, start+length)` sum to zero once stored in it
 * (the byte's current value is excluded from the sum). */
export function checksumFor(bytes: Uint8Array, start: number, length: number, at: number): number {
  let sum = byteSum(bytes, start, length);
  if (at >= start && at < start + length) sum -= bytes[at];
  return (0x100 - (sum & 0xff)) & 0xff;
}

/** Stores at `at` the checksum of `bytes[start, start+length)`. */
export function fixChecksum(bytes: Uint8Array, at: number, start = 0, length = bytes.length - start): void {
  bytes[at] = checksumFor(bytes, start, length, at);
}

/** Sum of bytes modulo 256; 0 for a valid checksummed structure. */
export function byteSum(bytes: Uint8Array, start = 0, length = bytes.length - start): number {
  // Four bytes a round, and nothing else in the loop: V8 counts a loop's
  // bytecode against the function's budget for TurboFan, and the ACPI
  // tables' ~3 KB at every start must not spend it. One TurboFan compile
  // (on a V8 platform thread) touches ~3 MiB of the node binary's code and
  // of malloc'd zone memory, nearly 5% of bhyve's peak RSS at -c 1
  // (test/integration/startup-tiering.test.ts).
  const end = start + length;
  let sum = 0;
  let i = start;
  for (; i + 4 <= end; i += 4) sum += bytes[i] + bytes[i + 1] + bytes[i + 2] + bytes[i + 3];
  for (; i < end; i++) sum += bytes[i];
  return sum & 0xff;
}

export function putU16(b: Uint8Array, off: number, v: number): void { b[off] = v & 0xff; b[off + 1] = (v >>> 8) & 0xff; }
export function putU32(b: Uint8Array, off: number, v: number): void {
  new DataView(b.buffer, b.byteOffset, b.byteLength).setUint32(off, v >>> 0, true);
}
export function putU64(b: Uint8Array, off: number, v: number | bigint): void {
  new DataView(b.buffer, b.byteOffset, b.byteLength).setBigUint64(off, BigInt.asUintN(64, BigInt(v)), true);
}
export function getU16(b: Uint8Array, off: number): number { return b[off] | (b[off + 1] << 8); }
export function getU32(b: Uint8Array, off: number): number {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(off, true);
}
export function getU64(b: Uint8Array, off: number): bigint {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(off, true);
}

export function ascii(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i) & 0xff;
  return out;
}
