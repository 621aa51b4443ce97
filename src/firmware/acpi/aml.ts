// A small AML (ACPI Machine Language) encoder: just what our DSDT needs.
// Terms are plain byte arrays; the functions below build them following
// the ACPI 6.x specification, chapter 20 ("ACPI Machine Language
// Specification") and chapter 6.4 (resource descriptors).

export type Aml = Uint8Array;

const ZERO_OP = 0x00;
const ONE_OP = 0x01;
const ONES_OP = 0xff;
const BYTE_PREFIX = 0x0a;
const WORD_PREFIX = 0x0b;
const DWORD_PREFIX = 0x0c;
const STRING_PREFIX = 0x0d;
const QWORD_PREFIX = 0x0e;
const NAME_OP = 0x08;
const SCOPE_OP = 0x10;
const BUFFER_OP = 0x11;
const PACKAGE_OP = 0x12;
const METHOD_OP = 0x14;
const DUAL_NAME_PREFIX = 0x2e;
const MULTI_NAME_PREFIX = 0x2f;
const EXT_OP = 0x5b;
const OPREGION_OP = 0x80;
const FIELD_OP = 0x81;
const DEVICE_OP = 0x82;
const LOCAL0 = 0x60;
const ARG0 = 0x68;
const STORE_OP = 0x70;
const DECREMENT_OP = 0x76;
const SHIFT_LEFT_OP = 0x79;
const AND_OP = 0x7b;
const FIND_SET_RIGHT_BIT_OP = 0x82;
const CREATE_WORD_FIELD_OP = 0x8b;
const LLESS_OP = 0x95;
const IF_OP = 0xa0;
const ELSE_OP = 0xa1;
const RETURN_OP = 0xa4;

export function concat(...parts: ReadonlyArray<ArrayLike<number>>): Aml {
  const n = parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) { out.set(p, off); off += p.length; }
  return out;
}

/** PkgLength encoding of a package whose contents are `len` bytes long
 * (the PkgLength counts its own bytes too). */
export function pkgLength(len: number): Aml {
  if (len + 1 < 0x40) return Uint8Array.of(len + 1);
  for (let n = 2; n <= 4; n++) {
    const total = len + n;
    if (total < 1 << (4 + 8 * (n - 1))) {
      const out = new Uint8Array(n);
      out[0] = ((n - 1) << 6) | (total & 0x0f);
      let rest = total >>> 4;
      for (let i = 1; i < n; i++) { out[i] = rest & 0xff; rest >>>= 8; }
      return out;
    }
  }
  throw new RangeError(`AML package too large (${len} bytes)`);
}

function pkg(op: ArrayLike<number>, ...body: ReadonlyArray<ArrayLike<number>>): Aml {
  const b = concat(...body);
  return concat(op, pkgLength(b.length), b);
}

function nameSeg(seg: string): number[] {
  if (!/^[A-Z_][A-Z0-9_]{0,3}$/.test(seg)) throw new RangeError(`invalid AML name segment '${seg}'`);
  const s = seg.padEnd(4, '_');
  return [...s].map((c) => c.charCodeAt(0));
}

/** NameString: "\\_SB.PC00", "^FOO", "_HID", ... */
export function nameString(path: string): Aml {
  const out: number[] = [];
  let p = path;
  while (p.startsWith('\\')) { out.push(0x5c); p = p.slice(1); }
  while (p.startsWith('^')) { out.push(0x5e); p = p.slice(1); }
  const segs = p === '' ? [] : p.split('.');
  if (segs.length === 0) out.push(0x00);
  else if (segs.length === 1) out.push(...nameSeg(segs[0]));
  else if (segs.length === 2) out.push(DUAL_NAME_PREFIX, ...nameSeg(segs[0]), ...nameSeg(segs[1]));
  else { out.push(MULTI_NAME_PREFIX, segs.length); for (const s of segs) out.push(...nameSeg(s)); }
  return Uint8Array.from(out);
}

/** The shortest integer encoding (Zero, One, Ones, Byte/Word/DWord/QWord). */
export function int(v: number | bigint): Aml {
  const b = BigInt(v);
  if (b < 0n) throw new RangeError('AML integers are unsigned');
  if (b === 0n) return Uint8Array.of(ZERO_OP);
  if (b === 1n) return Uint8Array.of(ONE_OP);
  if (b === 0xffffffffffffffffn) return Uint8Array.of(ONES_OP);
  const le = (n: number): number[] => { const o: number[] = []; let x = b; for (let i = 0; i < n; i++) { o.push(Number(x & 0xffn)); x >>= 8n; } return o; };
  if (b <= 0xffn) return Uint8Array.of(BYTE_PREFIX, Number(b));
  if (b <= 0xffffn) return Uint8Array.of(WORD_PREFIX, ...le(2));
  if (b <= 0xffffffffn) return Uint8Array.of(DWORD_PREFIX, ...le(4));
  if (b <= 0xffffffffffffffffn) return Uint8Array.of(QWORD_PREFIX, ...le(8));
  throw new RangeError('AML integer wider than 64 bits');
}

/** A DWord constant, whatever its value (EISA IDs are written this way). */
export function dword(v: number): Aml {
  return Uint8Array.of(DWORD_PREFIX, v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
}

export function string(s: string): Aml {
  return concat([STRING_PREFIX], [...s].map((c) => c.charCodeAt(0) & 0x7f), [0]);
}

/** The compressed EISA ID of "PNP0A03" and the like, as a 32-bit value. */
export function eisaIdValue(id: string): number {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) throw new RangeError(`invalid EISA ID '${id}'`);
  const c = (i: number): number => id.charCodeAt(i) - 0x40;
  const mfg = (c(0) << 10) | (c(1) << 5) | c(2);
  const prod = parseInt(id.slice(3), 16);
  // Stored big-endian: the manufacturer bytes first, then the product bytes.
  return ((mfg >> 8) | ((mfg & 0xff) << 8) | ((prod >> 8) << 16) | ((prod & 0xff) << 24)) >>> 0;
}

export function eisaId(id: string): Aml {
  return dword(eisaIdValue(id));
}

export function name(n: string, value: Aml): Aml {
  return concat([NAME_OP], nameString(n), value);
}

export function scope(n: string, ...body: Aml[]): Aml {
  return pkg([SCOPE_OP], nameString(n), ...body);
}

export function device(n: string, ...body: Aml[]): Aml {
  return pkg([EXT_OP, DEVICE_OP], nameString(n), ...body);
}

export function method(n: string, argCount: number, serialized: boolean, ...body: Aml[]): Aml {
  const flags = (argCount & 7) | (serialized ? 0x08 : 0);
  return pkg([METHOD_OP], nameString(n), [flags], ...body);
}

export function packageOf(...elements: Aml[]): Aml {
  if (elements.length > 255) throw new RangeError('AML package with more than 255 elements');
  return pkg([PACKAGE_OP], [elements.length], ...elements);
}

export function buffer(bytes: ArrayLike<number>): Aml {
  return pkg([BUFFER_OP], int(bytes.length), bytes);
}

export function returnOf(v: Aml): Aml { return concat([RETURN_OP], v); }
export function store(src: Aml, dst: Aml): Aml { return concat([STORE_OP], src, dst); }
export function local(n: number): Aml { return Uint8Array.of(LOCAL0 + n); }
export function arg(n: number): Aml { return Uint8Array.of(ARG0 + n); }
export function ref(n: string): Aml { return nameString(n); }
/** A null target (no result stored). */
export const NULL_TARGET: Aml = Uint8Array.of(0x00);
export function and(a: Aml, b: Aml, target: Aml = NULL_TARGET): Aml { return concat([AND_OP], a, b, target); }
export function shiftLeft(a: Aml, b: Aml, target: Aml = NULL_TARGET): Aml { return concat([SHIFT_LEFT_OP], a, b, target); }
export function lless(a: Aml, b: Aml): Aml { return concat([LLESS_OP], a, b); }
export function decrement(target: Aml): Aml { return concat([DECREMENT_OP], target); }
export function findSetRightBit(a: Aml, target: Aml): Aml { return concat([FIND_SET_RIGHT_BIT_OP], a, target); }
export function createWordField(source: Aml, index: Aml, fieldName: string): Aml {
  return concat([CREATE_WORD_FIELD_OP], source, index, nameString(fieldName));
}
export function ifOf(pred: Aml, ...body: Aml[]): Aml { return pkg([IF_OP], pred, ...body); }
export function elseOf(...body: Aml[]): Aml { return pkg([ELSE_OP], ...body); }

export const REGION_SYSTEM_MEMORY = 0x00;
export const REGION_SYSTEM_IO = 0x01;
export const REGION_PCI_CONFIG = 0x02;

export function operationRegion(n: string, space: number, offset: number, length: number): Aml {
  return concat([EXT_OP, OPREGION_OP], nameString(n), [space], int(offset), int(length));
}

/** Field access types and rules. */
export const FIELD_ANY_ACC = 0x00;
export const FIELD_BYTE_ACC = 0x01;
export const FIELD_NOLOCK = 0x00;
export const FIELD_PRESERVE = 0x00;

/** A Field with named units of `bits` width; `{ offset }` entries skip to a byte offset. */
export function field(region: string, flags: number, units: ReadonlyArray<{ name: string; bits: number } | { offset: number }>): Aml {
  const body: number[] = [];
  let bitPos = 0;
  for (const u of units) {
    if ('offset' in u) {
      const skip = u.offset * 8 - bitPos;
      if (skip < 0) throw new RangeError('AML field offsets must increase');
      if (skip > 0) body.push(0x00, ...fieldLength(skip));
      bitPos = u.offset * 8;
    } else {
      body.push(...nameSeg(u.name), ...fieldLength(u.bits));
      bitPos += u.bits;
    }
  }
  return pkg([EXT_OP, FIELD_OP], nameString(region), [flags], body);
}

/** A field unit's bit length: PkgLength encoding of the value itself. */
function fieldLength(bits: number): number[] {
  if (bits < 0x40) return [bits];
  if (bits < 0x1000) return [0x40 | (bits & 0x0f), bits >>> 4];
  throw new RangeError('field unit too wide');
}

// ---------------------------------------------------------------------------
// Resource descriptors (ACPI 6.4 chapter 6.4), for ResourceTemplate buffers.

export function ioPort(min: number, max: number, align: number, len: number, decode16 = true): number[] {
  return [0x47, decode16 ? 1 : 0, min & 0xff, min >>> 8, max & 0xff, max >>> 8, align, len];
}

/** IRQNoFlags(){irqs} (edge, active-high, exclusive). */
export function irqNoFlags(...irqs: number[]): number[] {
  const mask = irqs.reduce((m, i) => m | (1 << i), 0);
  return [0x22, mask & 0xff, mask >>> 8];
}

/** IRQ(Level, ActiveLow, Shared){irqs}. */
export function irqLevelLowShared(...irqs: number[]): number[] {
  const mask = irqs.reduce((m, i) => m | (1 << i), 0);
  // Info byte: bit 0 clear = level, bit 3 = active-low, bit 4 = shared.
  return [0x23, mask & 0xff, mask >>> 8, 0x08 | 0x10];
}

function le(v: number | bigint, n: number): number[] {
  let b = BigInt.asUintN(8 * n, BigInt(v));
  const o: number[] = [];
  for (let i = 0; i < n; i++) { o.push(Number(b & 0xffn)); b >>= 8n; }
  return o;
}

export function memory32Fixed(base: number, len: number, writable = true): number[] {
  return [0x86, 0x09, 0x00, writable ? 1 : 0, ...le(base, 4), ...le(len, 4)];
}

const ADDR_SPACE_MEMORY = 0;
const ADDR_SPACE_IO = 1;
const ADDR_SPACE_BUS = 2;
/** ResourceProducer, PosDecode, MinFixed, MaxFixed. */
const GEN_FLAGS_PRODUCER_FIXED = 0x0c;

/** WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, ...). */
export function wordBusNumber(min: number, max: number): number[] {
  return [0x88, 0x0d, 0x00, ADDR_SPACE_BUS, GEN_FLAGS_PRODUCER_FIXED, 0x00,
    ...le(0, 2), ...le(min, 2), ...le(max, 2), ...le(0, 2), ...le(max - min + 1, 2)];
}

/** WordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, ..., TypeStatic). */
export function wordIo(min: number, max: number): number[] {
  return [0x88, 0x0d, 0x00, ADDR_SPACE_IO, GEN_FLAGS_PRODUCER_FIXED, 0x03,
    ...le(0, 2), ...le(min, 2), ...le(max, 2), ...le(0, 2), ...le(max - min + 1, 2)];
}

/** DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, ...). */
export function dwordMemory(min: number, max: number): number[] {
  return [0x87, 0x17, 0x00, ADDR_SPACE_MEMORY, GEN_FLAGS_PRODUCER_FIXED, 0x01,
    ...le(0, 4), ...le(min, 4), ...le(max, 4), ...le(0, 4), ...le(max - min + 1, 4)];
}

/** QWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, ...). */
export function qwordMemory(min: number | bigint, max: number | bigint): number[] {
  const len = BigInt(max) - BigInt(min) + 1n;
  return [0x8a, 0x2b, 0x00, ADDR_SPACE_MEMORY, GEN_FLAGS_PRODUCER_FIXED, 0x01,
    ...le(0, 8), ...le(min, 8), ...le(max, 8), ...le(0, 8), ...le(len, 8)];
}

/** ResourceTemplate(){...}: the descriptors, an End Tag, as a Buffer. */
export function resourceTemplate(...descriptors: number[][]): Aml {
  return buffer(concat(...descriptors, [0x79, 0x00]));
}
