// The CPUID a vCPU sees: KVM's supported set, adjusted as bhyve's x86.c
// does: the hypervisor bit and bhyve's signature, the APIC ID of the vCPU,
// x2APIC only when configured, and a topology that matches `-c`.

import type { CpuidEntry } from '../sys/kvm.js';

export interface Topology {
  sockets: number;
  cores: number;
  threads: number;
}

const HYPERVISOR_LEAF = 0x40000000;
const SIGNATURE = 'bhyve bhyve ';

function sig(offset: number): number {
  let v = 0;
  for (let i = 0; i < 4; i++) v |= SIGNATURE.charCodeAt(offset + i) << (8 * i);
  return v >>> 0;
}

/** ceil(log2(n)), the APIC-ID bits a topology level needs. */
function bitsFor(n: number): number {
  let b = 0;
  while (1 << b < n) b++;
  return b;
}

export function buildCpuid(supported: CpuidEntry[], vcpuId: number, topo: Topology, x2apic: boolean): CpuidEntry[] {
  const threadsPerPackage = topo.threads * topo.cores;
  const out: CpuidEntry[] = supported
    .filter((e) => (e.function & 0xffff0000) !== HYPERVISOR_LEAF) // drop KVM's own signature leaves
    .map((e) => ({ ...e }));
  const vendorEbx = out.find((e) => e.function === 0)?.ebx ?? 0;
  const isAmd = vendorEbx === 0x68747541; // "Auth"

  for (const e of out) {
    switch (e.function) {
      case 1:
        e.ebx = (e.ebx & 0x0000ffff) | ((threadsPerPackage & 0xff) << 16) | ((vcpuId & 0xff) << 24);
        e.ecx = (e.ecx | (1 << 31)) >>> 0; // running under a hypervisor
        e.ecx = x2apic ? (e.ecx | (1 << 21)) >>> 0 : (e.ecx & ~(1 << 21)) >>> 0;
        e.edx = threadsPerPackage > 1 ? (e.edx | (1 << 28)) >>> 0 : (e.edx & ~(1 << 28)) >>> 0;
        break;
      case 4: {
        if ((e.eax & 0x1f) === 0) break; // no more caches
        const level = (e.eax >> 5) & 0x7;
        const sharing = level >= 3 ? threadsPerPackage : topo.threads;
        e.eax = ((e.eax & 0x3ff) | ((topo.cores - 1) << 26) | ((sharing - 1) << 14)) >>> 0;
        break;
      }
      case 0xb:
      case 0x1f:
        Object.assign(e, topologyLeaf(e, vcpuId, topo));
        break;
      case 0x80000008:
        if (isAmd) {
          e.ecx = ((e.ecx & ~0xf0ff) | ((threadsPerPackage - 1) & 0xff) | (bitsFor(threadsPerPackage) << 12)) >>> 0;
        }
        break;
      default:
        break;
    }
  }
  out.push({ function: HYPERVISOR_LEAF, index: 0, flags: 0, eax: HYPERVISOR_LEAF, ebx: sig(0), ecx: sig(4), edx: sig(8) });
  return out;
}

/** Extended topology enumeration (leaf 0xB / 0x1F), subleaf by subleaf. */
function topologyLeaf(e: CpuidEntry, vcpuId: number, topo: Topology): Partial<CpuidEntry> {
  const threadBits = bitsFor(topo.threads);
  const coreBits = bitsFor(topo.threads * topo.cores);
  switch (e.index) {
    case 0: return { eax: threadBits, ebx: topo.threads, ecx: (1 << 8) | 0, edx: vcpuId };
    case 1: return { eax: coreBits, ebx: topo.threads * topo.cores, ecx: (2 << 8) | 1, edx: vcpuId };
    default: return { eax: 0, ebx: 0, ecx: e.index & 0xff, edx: vcpuId };
  }
}
