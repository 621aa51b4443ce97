// The CPUID config keys beyond bhyve's model (src/vmm/cpuid-shaping.ts):
// KVM's paravirtual leaves beside bhyve's, a vendor string, bits set and
// cleared; defaults leave bhyve's CPUID as it is.
import { describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import type { CpuidEntry } from '../../src/sys/kvm.js';
import { buildCpuid } from '../../src/vmm/cpuid.js';
import { applyCpuidShaping, cpuidShapingFromConfig, KVM_PV_BASE } from '../../src/vmm/cpuid-shaping.js';

const e = (fn: number, r: Partial<CpuidEntry> = {}, index = 0): CpuidEntry =>
  ({ function: fn, index, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0, ...r });
const KVMKVMKVM = { ebx: 0x4b4d564b, ecx: 0x564b4d56, edx: 0x4d };
// KVM offers kvmclock (0, 3, 24), pv_eoi (6), pv_unhalt (7), but not pv_ipi (11).
const host: CpuidEntry[] = [
  e(0, { eax: 0xd, ebx: 0x756e6547, edx: 0x49656e69, ecx: 0x6c65746e }), e(1, { ecx: 1 << 21 }), e(7, { ebx: 0 }, 0),
  e(0x40000000, { eax: 0x40000001, ...KVMKVMKVM }), e(0x40000001, { eax: (1 << 0) | (1 << 3) | (1 << 24) | (1 << 6) | (1 << 7) }),
];
const topo = { sockets: 1, cores: 1, threads: 1 };
function shaped(kv: Record<string, string>) {
  const c = new ConfigTree();
  for (const [k, v] of Object.entries(kv)) c.set(k, v);
  return applyCpuidShaping(buildCpuid(host, 0, topo, false), host, cpuidShapingFromConfig(c));
}
const at = (es: CpuidEntry[], fn: number, index = 0) => es.find((x) => x.function === fn && x.index === index);

describe('CPUID shaping keys', () => {
  it('changes nothing by default: bhyve\'s signature only, KVM\'s leaves hidden, x2APIC off', () => {
    const r = shaped({});
    expect(r.entries).toEqual(buildCpuid(host, 0, topo, false));
    expect(r.warnings).toEqual([]);
    expect(at(r.entries, KVM_PV_BASE)).toBeUndefined();
    expect(at(r.entries, 0x40000000)?.ebx).toBe(0x76796862); // "bhyv"
  });

  it('x86.kvm_pv=all puts KVM\'s signature and every offered feature at 0x40000100', () => {
    const r = shaped({ 'x86.kvm_pv': 'all' });
    expect(at(r.entries, KVM_PV_BASE)).toMatchObject({ eax: KVM_PV_BASE + 1, ...KVMKVMKVM });
    expect(at(r.entries, KVM_PV_BASE + 1)?.eax).toBe(host[4].eax);
    expect(at(r.entries, 0x40000000)?.ebx).toBe(0x76796862);
    expect(r.warnings).toEqual([]);
  });

  it('x86.kvm_pv=kvmclock,pv_eoi,pv_ipi exposes what KVM offers of them and warns about the rest', () => {
    const r = shaped({ 'x86.kvm_pv': 'kvmclock,pv_eoi,pv_ipi' });
    expect(at(r.entries, KVM_PV_BASE + 1)?.eax).toBe(((1 << 0) | (1 << 3) | (1 << 24) | (1 << 6)) >>> 0);
    expect(r.warnings).toEqual(["warning: x86.kvm_pv: this host's KVM does not offer pv_ipi; not exposed"]);
  });

  it('sets the vendor string and sets/clears bits last', () => {
    const r = shaped({ 'x86.cpuid.vendor': 'AuthenticAMD', 'x86.cpuid.set': '0x1.ecx.21, 7.0.ebx.5', 'x86.cpuid.clear': '1.ecx.31,0x99.eax.1' });
    const v = at(r.entries, 0)!;
    expect(Buffer.from(new Uint32Array([v.ebx, v.edx, v.ecx]).buffer).toString('latin1')).toBe('AuthenticAMD');
    expect(at(r.entries, 1)!.ecx & (1 << 21)).not.toBe(0); // x2APIC forced on
    expect(at(r.entries, 1)!.ecx >>> 31).toBe(0); // hypervisor bit cleared
    expect(at(r.entries, 7)!.ebx).toBe(1 << 5);
    expect(r.warnings).toEqual(["warning: x86.cpuid.clear: leaf 0x99 is not in this vCPU's CPUID; ignored"]);
  });

  it('refuses bad values with one clear line', () => {
    expect(() => shaped({ 'x86.kvm_pv': 'kvmclock,warp_drive' })).toThrow(/x86.kvm_pv: unknown feature 'warp_drive'/);
    expect(() => shaped({ 'x86.cpuid.vendor': 'Intel' })).toThrow(/not 12 printable ASCII characters/);
    expect(() => shaped({ 'x86.cpuid.set': '1.exx.3' })).toThrow(/bad CPUID bit '1.exx.3'/);
    expect(() => shaped({ 'x86.cpuid.clear': '1.ecx.32' })).toThrow(/bad CPUID bit/);
  });

  it('warns when the host KVM has no paravirtual leaves', () => {
    const c = new ConfigTree();
    c.set('x86.kvm_pv', 'all');
    const bare = host.slice(0, 3);
    const r = applyCpuidShaping(buildCpuid(bare, 0, topo, false), bare, cpuidShapingFromConfig(c));
    expect(at(r.entries, KVM_PV_BASE)).toBeUndefined();
    expect(r.warnings[0]).toMatch(/offers no paravirtual CPUID leaves/);
  });
});
