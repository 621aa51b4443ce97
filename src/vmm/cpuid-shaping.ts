// Config keys that change the CPUID a guest sees beyond bhyve's model, for
// guests that want KVM's paravirtual interfaces and for testing; all off by
// default, so the CPU model stays bhyve's (bhyve's signature at 0x40000000,
// KVM's leaves hidden, x2APIC only with -x).
//
//   x86.kvm_pv          off (default), all, or a list of KVM paravirtual
//                       features: KVM's signature leaf ("KVMKVMKVM") and
//                       feature leaf are given at 0x40000100/0x40000101,
//                       after bhyve's, where Linux and KVM itself look for
//                       them (every 0x100 from 0x40000000), with the
//                       features named (kvmclock, pv_eoi, pv_ipi, ...) that
//                       this host's KVM offers.
//   x86.cpuid.vendor    a 12-character vendor string for leaf 0.
//   x86.cpuid.set       bits to set and clear, each LEAF[.SUBLEAF].REG.BIT
//   x86.cpuid.clear     (LEAF and SUBLEAF in hex, REG eax/ebx/ecx/edx),
//                       applied last.

import { ConfigError, type ConfigTree } from '../config/tree.js';
import type { CpuidEntry } from '../sys/kvm.js';

/** KVM_FEATURE_* bits of leaf 0x40000001 EAX, by the name the key takes. */
export const KVM_PV_FEATURES: Record<string, number[]> = {
  kvmclock: [0, 3, 24], // CLOCKSOURCE, CLOCKSOURCE2, CLOCKSOURCE_STABLE_BIT
  nop_io_delay: [1],
  async_pf: [4],
  steal_time: [5],
  pv_eoi: [6],
  pv_unhalt: [7],
  pv_tlb_flush: [9],
  async_pf_vmexit: [10],
  pv_ipi: [11],
  poll_control: [12],
  pv_sched_yield: [13],
  async_pf_int: [14],
  msi_ext_dest_id: [15],
  hc_map_gpa_range: [16],
  migration_control: [17],
};
export const KVM_CPUID_SIGNATURE = 0x40000000;
export const KVM_CPUID_FEATURES = 0x40000001;
/** Where KVM's leaves go beside bhyve's: the next hypervisor base. */
export const KVM_PV_BASE = 0x40000100;

export interface CpuidBit { leaf: number; subleaf?: number; reg: 'eax' | 'ebx' | 'ecx' | 'edx'; bit: number }

export interface CpuidShaping {
  /** KVM_FEATURE_* mask to expose (undefined: KVM's leaves hidden). */
  kvmPv?: number;
  vendor?: string;
  set: CpuidBit[];
  clear: CpuidBit[];
}

const list = (v: string): string[] => v.split(',').map((s) => s.trim()).filter((s) => s !== '');

function parseBit(key: string, spec: string): CpuidBit {
  const m = /^(?:0x)?([0-9a-f]{1,8})(?:\.(?:0x)?([0-9a-f]{1,8}))?\.(eax|ebx|ecx|edx)\.([0-9]{1,2})$/i.exec(spec);
  const bit = m ? Number(m[4]) : -1;
  if (!m || bit > 31) throw new ConfigError(`${key}: bad CPUID bit '${spec}': use LEAF[.SUBLEAF].REG.BIT, e.g. 0x1.ecx.21 or 0x7.0.ebx.5`);
  return {
    leaf: parseInt(m[1], 16), subleaf: m[2] === undefined ? undefined : parseInt(m[2], 16),
    reg: m[3].toLowerCase() as CpuidBit['reg'], bit,
  };
}

/** The shaping the config asks for; a clear error for a bad value. */
export function cpuidShapingFromConfig(config: ConfigTree): CpuidShaping {
  const s: CpuidShaping = { set: [], clear: [] };
  const pv = (config.get('x86.kvm_pv') ?? 'off').trim().toLowerCase();
  if (pv === 'all' || pv === 'true' || pv === 'on' || pv === 'yes') {
    s.kvmPv = 0xffffffff;
  } else if (pv !== 'off' && pv !== 'false' && pv !== 'no' && pv !== '') {
    let mask = 0;
    for (const name of list(pv)) {
      const bits = KVM_PV_FEATURES[name];
      if (!bits) throw new ConfigError(`x86.kvm_pv: unknown feature '${name}' (off, all, or a list of ${Object.keys(KVM_PV_FEATURES).join(', ')})`);
      for (const b of bits) mask |= 1 << b;
    }
    s.kvmPv = mask >>> 0;
  }
  const vendor = config.get('x86.cpuid.vendor');
  if (vendor !== undefined) {
    if (!/^[\x20-\x7e]{12}$/.test(vendor)) throw new ConfigError(`x86.cpuid.vendor: '${vendor}' is not 12 printable ASCII characters (e.g. GenuineIntel, AuthenticAMD)`);
    s.vendor = vendor;
  }
  for (const k of ['set', 'clear'] as const) {
    const v = config.get(`x86.cpuid.${k}`);
    if (v !== undefined) s[k] = list(v).map((b) => parseBit(`x86.cpuid.${k}`, b));
  }
  return s;
}

const word = (s: string, at: number): number =>
  (s.charCodeAt(at) | (s.charCodeAt(at + 1) << 8) | (s.charCodeAt(at + 2) << 16) | (s.charCodeAt(at + 3) << 24)) >>> 0;

/**
 * Applies the shaping to a vCPU's CPUID (after bhyve's adjustments).
 * `supported` is KVM's list, with its own signature leaves. Returns the
 * entries and what could not be honoured (warnings).
 */
export function applyCpuidShaping(entries: CpuidEntry[], supported: readonly CpuidEntry[], s: CpuidShaping): { entries: CpuidEntry[]; warnings: string[] } {
  const warnings: string[] = [];
  const out = entries.map((e) => ({ ...e }));
  if (s.kvmPv !== undefined) {
    const sig = supported.find((e) => e.function === KVM_CPUID_SIGNATURE);
    const feat = supported.find((e) => e.function === KVM_CPUID_FEATURES);
    if (!sig || !feat) {
      warnings.push('warning: x86.kvm_pv: this host\'s KVM offers no paravirtual CPUID leaves; none exposed');
    } else {
      const offered = feat.eax >>> 0;
      if (s.kvmPv !== 0xffffffff) {
        const missing = Object.entries(KVM_PV_FEATURES)
          .filter(([, bits]) => bits.some((b) => (s.kvmPv! & (1 << b)) !== 0 && (offered & (1 << b)) === 0))
          .map(([n]) => n);
        if (missing.length) warnings.push(`warning: x86.kvm_pv: this host's KVM does not offer ${missing.join(', ')}; not exposed`);
      }
      out.push({ ...sig, function: KVM_PV_BASE, index: 0, eax: KVM_PV_BASE + 1 });
      out.push({ ...feat, function: KVM_PV_BASE + 1, index: 0, eax: (offered & s.kvmPv) >>> 0 });
    }
  }
  if (s.vendor !== undefined) {
    const leaf0 = out.find((e) => e.function === 0);
    if (leaf0) { leaf0.ebx = word(s.vendor, 0); leaf0.edx = word(s.vendor, 4); leaf0.ecx = word(s.vendor, 8); }
  }
  const find = (b: CpuidBit): CpuidEntry | undefined =>
    out.find((e) => e.function === b.leaf && (b.subleaf === undefined ? true : e.index === b.subleaf));
  for (const [bits, on] of [[s.set, true], [s.clear, false]] as const) {
    for (const b of bits) {
      const e = find(b);
      if (!e) {
        warnings.push(`warning: x86.cpuid.${on ? 'set' : 'clear'}: leaf 0x${b.leaf.toString(16)}${b.subleaf === undefined ? '' : ` subleaf 0x${b.subleaf.toString(16)}`} is not in this vCPU's CPUID; ignored`);
        continue;
      }
      e[b.reg] = on ? (e[b.reg] | (1 << b.bit)) >>> 0 : (e[b.reg] & ~(1 << b.bit)) >>> 0;
    }
  }
  return { entries: out, warnings };
}
