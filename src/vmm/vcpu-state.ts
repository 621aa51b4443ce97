// A vCPU's architectural state as plain JSON (64-bit values as "0x..."
// strings), for bhyvectl's --get-*/--set-* operations, for the state that
// bhyveload leaves for bhyve, and for the control socket.

import { REGS_ORDER, type RegName } from '../sys/kvm-abi.js';
import type { Segment, Sregs, Vcpu } from '../sys/kvm.js';

export const SEGMENT_REGS = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
export type SegmentReg = (typeof SEGMENT_REGS)[number];
export const CONTROL_REGS = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apic_base'] as const;
export type ControlReg = (typeof CONTROL_REGS)[number];
export const DEBUG_REGS = ['dr0', 'dr1', 'dr2', 'dr3', 'dr6', 'dr7'] as const;
export type DebugReg = (typeof DEBUG_REGS)[number];

export interface SegmentJson {
  base: string; limit: number; selector: number; type: number; present: number; dpl: number;
  db: number; s: number; l: number; g: number; avl: number; unusable: number;
}
export interface DescriptorTableJson { base: string; limit: number }

export interface VcpuStateJson {
  regs: Record<RegName, string>;
  segments: Record<SegmentReg, SegmentJson>;
  gdt: DescriptorTableJson;
  idt: DescriptorTableJson;
  control: Record<ControlReg, string>;
  debug: Record<DebugReg, string>;
}

/** A partial update: only the fields present are written. */
export interface VcpuStateUpdate {
  regs?: Partial<Record<RegName, string>>;
  segments?: Partial<Record<SegmentReg, Partial<SegmentJson>>>;
  gdt?: Partial<DescriptorTableJson>;
  idt?: Partial<DescriptorTableJson>;
  control?: Partial<Record<ControlReg, string>>;
  debug?: Partial<Record<DebugReg, string>>;
}

export const hex64 = (v: bigint): string => `0x${v.toString(16)}`;

export function parseHex64(s: string, what: string): bigint {
  // The value comes from a control-socket client: anything JSON can hold.
  if (typeof s !== 'string') throw new RangeError(`invalid value ${JSON.stringify(s) ?? String(s)} for ${what} (use a hex or decimal string)`);
  const t = s.trim();
  if (!/^(0x[0-9a-f]{1,16}|[0-9]{1,20})$/i.test(t)) throw new RangeError(`invalid value '${s}' for ${what}`);
  const v = BigInt(t);
  if (v >= 1n << 64n) throw new RangeError(`value '${s}' for ${what} does not fit in 64 bits`);
  return v;
}

function segmentToJson(s: Segment): SegmentJson {
  return { ...s, base: hex64(s.base) };
}

/** The fields of one group of an update; a client may send any JSON there. */
function fields(v: unknown, what: string): Array<[string, unknown]> {
  if (v === undefined) return [];
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new RangeError(`'${what}' must be an object`);
  return Object.entries(v);
}

function segmentFromJson(cur: Segment, u: Partial<SegmentJson>, what: string): Segment {
  const out: Segment = { ...cur };
  for (const [k, v] of fields(u, what)) {
    if (k === 'base') out.base = parseHex64(String(v), `${what}.base`);
    else if (k in out) (out as unknown as Record<string, number>)[k] = Number(v);
  }
  return out;
}

export function readVcpuState(vcpu: Vcpu): VcpuStateJson {
  const r = vcpu.getRegs();
  const sr = vcpu.getSregs();
  const dr = vcpu.getDebugRegs();
  const regs = {} as Record<RegName, string>;
  for (const n of REGS_ORDER) regs[n] = hex64(r[n]);
  const segments = {} as Record<SegmentReg, SegmentJson>;
  for (const n of SEGMENT_REGS) segments[n] = segmentToJson(sr[n]);
  const control = {} as Record<ControlReg, string>;
  for (const n of CONTROL_REGS) control[n] = hex64(sr[n]);
  const debug = {} as Record<DebugReg, string>;
  DEBUG_REGS.forEach((n, i) => { debug[n] = hex64(dr[i]); });
  return {
    regs, segments, control, debug,
    gdt: { base: hex64(sr.gdt.base), limit: sr.gdt.limit },
    idt: { base: hex64(sr.idt.base), limit: sr.idt.limit },
  };
}

/** Applies a partial update with read-modify-write of each register group. */
export function applyVcpuState(vcpu: Vcpu, u: VcpuStateUpdate): void {
  fields(u, 'update');
  if (fields(u.regs, 'regs').length) {
    const r = vcpu.getRegs();
    for (const [n, v] of fields(u.regs, 'regs')) {
      if (!(REGS_ORDER as readonly string[]).includes(n)) throw new RangeError(`unknown register '${n}'`);
      r[n as RegName] = parseHex64(v as string, n);
    }
    vcpu.setRegs(r);
  }
  if (u.segments !== undefined || u.gdt !== undefined || u.idt !== undefined || u.control !== undefined) {
    const sr: Sregs = vcpu.getSregs();
    for (const [n, seg] of fields(u.segments, 'segments')) {
      if (!(SEGMENT_REGS as readonly string[]).includes(n)) throw new RangeError(`unknown segment register '${n}'`);
      sr[n as SegmentReg] = segmentFromJson(sr[n as SegmentReg], seg as Partial<SegmentJson>, n);
    }
    for (const t of ['gdt', 'idt'] as const) {
      const d = u[t];
      if (d === undefined) continue;
      fields(d, t);
      if (d.base !== undefined) sr[t].base = parseHex64(d.base, `${t}.base`);
      if (d.limit !== undefined) sr[t].limit = Number(d.limit) & 0xffff;
    }
    for (const [n, v] of fields(u.control, 'control')) {
      if (!(CONTROL_REGS as readonly string[]).includes(n)) throw new RangeError(`unknown control register '${n}'`);
      sr[n as ControlReg] = parseHex64(v as string, n);
    }
    vcpu.setSregs(sr);
  }
  if (fields(u.debug, 'debug').length) {
    const dr = vcpu.getDebugRegs();
    for (const [n, v] of fields(u.debug, 'debug')) {
      const i = (DEBUG_REGS as readonly string[]).indexOf(n);
      if (i < 0) throw new RangeError(`unknown debug register '${n}'`);
      dr[i] = parseHex64(v as string, n);
    }
    vcpu.setDebugRegs(dr);
  }
}

/** Real mode at a 20-bit physical address, as firmware enters an ACPI
 * waking vector (CS = vector >> 4, IP = vector & 0xf), interrupts off,
 * paging and protection off, flat 64 KiB segments at 0, the IVT at 0. */
export function realModeEntry(vector: number): VcpuStateUpdate {
  const seg = (selector: number, code: boolean): Partial<SegmentJson> => ({
    base: hex64(BigInt(selector) << 4n), limit: 0xffff, selector, type: code ? 0xb : 0x3, present: 1, dpl: 0,
    db: 0, s: 1, l: 0, g: 0, avl: 0, unusable: 0,
  });
  const cs = (vector >>> 4) & 0xffff;
  return {
    regs: { rip: hex64(BigInt(vector & 0xf)), rflags: '0x2', rsp: '0x0' },
    segments: {
      cs: seg(cs, true), ds: seg(0, false), es: seg(0, false), fs: seg(0, false), gs: seg(0, false), ss: seg(0, false),
      tr: { base: '0x0', limit: 0xffff, selector: 0, type: 0xb, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0 },
      ldt: { base: '0x0', limit: 0xffff, selector: 0, type: 0x2, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0 },
    },
    gdt: { base: '0x0', limit: 0xffff },
    idt: { base: '0x0', limit: 0x3ff },
    control: { cr0: '0x10', cr3: '0x0', cr4: '0x0', efer: '0x0' },
  };
}
