// The boot vCPU state a loader produces: what vCPU 0 must hold at its first
// KVM_RUN (applied with KVM_SET_REGS and KVM_SET_SREGS). It is plain JSON, so
// bhyveload can store it beside the VM's memory file and bhyve can apply it
// later from another process. 64-bit values are hex strings ("0x...").

import type { RegName } from '../sys/kvm-abi.js';
import { LoaderError } from './errors.js';

export const BOOT_STATE_VERSION = 1;

/** A segment register as struct kvm_segment holds it. */
export interface SegmentState {
  base: string;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
}

export interface DescriptorTableState {
  base: string;
  limit: number;
}

export const SEGMENT_NAMES = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
export type SegmentName = (typeof SEGMENT_NAMES)[number];
export const CONTROL_NAMES = ['cr0', 'cr3', 'cr4', 'efer'] as const;
export type ControlName = (typeof CONTROL_NAMES)[number];

export interface SpecialRegsState extends Record<SegmentName, SegmentState>, Record<ControlName, string> {
  gdt: DescriptorTableState;
  idt: DescriptorTableState;
}

export interface BootState {
  version: typeof BOOT_STATE_VERSION;
  /** Which loader produced it ("bzimage-64", "bzimage-32", "pvh", "multiboot"). */
  entry: string;
  /** General registers to set; absent ones are zero. rip and rflags always present. */
  regs: Partial<Record<RegName, string>>;
  sregs: SpecialRegsState;
  /** bhyveload left the state a BIOS leaves (bios-state.ts): bhyve sets the
   * 8259s, the PIT and the BSP's LINT0/LINT1 to match before the first run. */
  bios?: boolean;
}

export const CR0_PE = 1n << 0n;
export const CR0_ET = 1n << 4n;
export const CR0_PG = 1n << 31n;
export const CR4_PAE = 1n << 5n;
export const EFER_LME = 1n << 8n;
export const EFER_LMA = 1n << 10n;
export const RFLAGS_RESERVED = 0x2n;

export function toHex(v: number | bigint): string {
  const b = BigInt(v);
  if (b < 0n || b >= 1n << 64n) throw new RangeError(`register value ${v} out of range`);
  return `0x${b.toString(16)}`;
}

/** The numeric value of a hex string in a BootState. */
export function fromHex(s: string): bigint {
  if (!/^0x[0-9a-f]{1,16}$/i.test(s)) throw new LoaderError(`boot state: bad register value '${s}'`);
  return BigInt(s);
}

/** A register of the state as a bigint (0 when absent). */
export function regValue(state: BootState, name: RegName): bigint {
  const v = state.regs[name];
  return v === undefined ? 0n : fromHex(v);
}

// Segment descriptor access bytes: type | S(0x10) | DPL | P(0x80).
export const SEG_TYPE_CODE_XR_ACCESSED = 0xb;
export const SEG_TYPE_DATA_RW_ACCESSED = 0x3;
export const SEG_TYPE_TSS_BUSY = 0xb;
export const SEG_TYPE_LDT = 0x2;

/** Selectors of the flat GDT every loader installs (Linux's __BOOT_CS/__BOOT_DS). */
export const BOOT_CS = 0x10;
export const BOOT_DS = 0x18;
export const BOOT_TSS = 0x20;
/** GDT: null, null, code, data, TSS (16 bytes in long mode). */
export const GDT_ENTRIES = 6;

function seg(partial: Partial<SegmentState> & { selector: number; type: number }): SegmentState {
  return {
    base: '0x0', limit: 0xffffffff, present: 1, dpl: 0, db: 0, s: 1, l: 0, g: 1, avl: 0, unusable: 0, ...partial,
  };
}

export function flatCode64(): SegmentState {
  return seg({ selector: BOOT_CS, type: SEG_TYPE_CODE_XR_ACCESSED, l: 1 });
}

export function flatCode32(): SegmentState {
  return seg({ selector: BOOT_CS, type: SEG_TYPE_CODE_XR_ACCESSED, db: 1 });
}

export function flatData(): SegmentState {
  return seg({ selector: BOOT_DS, type: SEG_TYPE_DATA_RW_ACCESSED, db: 1 });
}

export function taskSegment(): SegmentState {
  return seg({ selector: BOOT_TSS, type: SEG_TYPE_TSS_BUSY, s: 0, limit: 0x67, g: 0 });
}

export function nullLdt(): SegmentState {
  return seg({ selector: 0, type: SEG_TYPE_LDT, s: 0, limit: 0xffff, g: 0 });
}

/** The 8-byte GDT descriptor for a segment (system descriptors: low half only). */
export function encodeDescriptor(s: SegmentState): bigint {
  const base = fromHex(s.base) & 0xffffffffn;
  // Limit is stored in 4 KiB units when G is set.
  const limit = BigInt(s.g ? s.limit >>> 12 : s.limit) & 0xfffffn;
  const access = BigInt(s.type | (s.s << 4) | (s.dpl << 5) | (s.present << 7));
  const flags = BigInt((s.avl) | (s.l << 1) | (s.db << 2) | (s.g << 3));
  return (limit & 0xffffn)
    | ((base & 0xffffffn) << 16n)
    | (access << 40n)
    | ((limit >> 16n) << 48n)
    | (flags << 52n)
    | ((base >> 24n) << 56n);
}

export interface ProtectedModeOptions {
  entry: string;
  rip: number | bigint;
  gdtBase: number;
  regs?: Partial<Record<RegName, number | bigint>>;
}

function build(entry: string, code: SegmentState, gdtBase: number, rip: number | bigint,
  cr0: bigint, cr3: bigint, cr4: bigint, efer: bigint, regs: Partial<Record<RegName, number | bigint>>): BootState {
  const data = flatData();
  const r: Partial<Record<RegName, string>> = {};
  for (const [k, v] of Object.entries(regs)) if (v !== undefined) r[k as RegName] = toHex(v);
  r.rip = toHex(rip);
  r.rflags = toHex(RFLAGS_RESERVED);
  return {
    version: BOOT_STATE_VERSION,
    entry,
    regs: r,
    sregs: {
      cs: code, ds: { ...data }, es: { ...data }, fs: { ...data }, gs: { ...data }, ss: { ...data },
      tr: taskSegment(), ldt: nullLdt(),
      gdt: { base: toHex(gdtBase), limit: GDT_ENTRIES * 8 - 1 },
      idt: { base: '0x0', limit: 0 },
      cr0: toHex(cr0), cr3: toHex(cr3), cr4: toHex(cr4), efer: toHex(efer),
    },
  };
}

/** 32-bit protected mode, paging off, flat 4 GiB segments, interrupts off. */
export function protectedModeState(o: ProtectedModeOptions): BootState {
  return build(o.entry, flatCode32(), o.gdtBase, o.rip, CR0_PE | CR0_ET, 0n, 0n, 0n, o.regs ?? {});
}

/** 64-bit long mode with the given page tables (CR3), flat segments. */
export function longModeState(o: ProtectedModeOptions & { cr3: number }): BootState {
  return build(o.entry, flatCode64(), o.gdtBase, o.rip, CR0_PE | CR0_ET | CR0_PG, BigInt(o.cr3), CR4_PAE,
    EFER_LME | EFER_LMA, o.regs ?? {});
}

/** Writes the GDT matching a state's segments (null, null, CS, DS, TSS). */
export function gdtEntries(state: BootState): bigint[] {
  const tss = encodeDescriptor(state.sregs.tr);
  return [0n, 0n, encodeDescriptor(state.sregs.cs), encodeDescriptor(state.sregs.ds), tss, 0n];
}

/** Checks that a parsed JSON value is a BootState this version understands. */
export function parseBootState(json: unknown): BootState {
  const fail = (why: string): never => { throw new LoaderError(`boot state: ${why}`); };
  if (typeof json !== 'object' || json === null) fail('not an object');
  const o = json as Record<string, unknown>;
  if (o.version !== BOOT_STATE_VERSION) fail(`unsupported version ${String(o.version)}`);
  if (typeof o.entry !== 'string') fail('missing entry');
  if (typeof o.regs !== 'object' || o.regs === null) fail('missing regs');
  for (const v of Object.values(o.regs as object)) if (typeof v !== 'string') fail('register values must be hex strings');
  for (const v of Object.values(o.regs as Record<string, string>)) fromHex(v);
  const s = o.sregs as Record<string, unknown> | undefined;
  if (typeof s !== 'object' || s === null) fail('missing sregs');
  for (const n of SEGMENT_NAMES) {
    const g = s![n] as Record<string, unknown> | undefined;
    if (typeof g !== 'object' || g === null) fail(`missing segment ${n}`);
    fromHex(String(g!.base));
    for (const f of ['limit', 'selector', 'type', 'present', 'dpl', 'db', 's', 'l', 'g', 'avl', 'unusable']) {
      if (typeof g![f] !== 'number') fail(`segment ${n}: missing ${f}`);
    }
  }
  for (const n of ['gdt', 'idt']) {
    const t = s![n] as Record<string, unknown> | undefined;
    if (typeof t !== 'object' || t === null || typeof t.limit !== 'number') fail(`missing ${n}`);
    fromHex(String(t!.base));
  }
  for (const n of CONTROL_NAMES) fromHex(String(s![n]));
  return json as BootState;
}
