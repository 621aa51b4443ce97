// How much a VM may ask of the host, checked before anything is created:
// guest memory (-m) and vCPUs (-c). Each refusal is one line.
//
// Memory: a multiple of the page size, as vmm's vm_alloc_memseg requires
// (bhyve: "Unable to setup memory (22)"), and at least 1 MiB, where bhyve's
// BIOS-area tables (MP table, SMBIOS, ACPI) live. At most the host's RAM
// plus swap: the guest memory file is sparse, so a larger size would start
// and the guest would be killed (SIGBUS, OOM) once it touched more than the
// host has; the kernel's overcommit heuristic refuses QEMU such a mapping
// for the same reason. And a new memory file must fit the free space of
// the file system that holds it (tmpfs /run included).
//
// vCPUs: KVM's KVM_CAP_MAX_VCPUS, and 255, because the MP table and the
// MADT give vCPUs the xAPIC IDs 0..n-1 (255 is the broadcast ID).

import fs from 'node:fs';

import { VmObjectError } from './runtime-dir.js';

export const PAGE_SIZE = 4096;
export const MIN_GUEST_MEMORY = 1024 * 1024;
export const MAX_XAPIC_VCPUS = 255;

export class GuestLimitError extends VmObjectError { override readonly name: string = 'GuestLimitError'; }

/** Bytes as a short size (512M, 1.5G, 17T). */
export function formatSize(bytes: number): string {
  const units = ['', 'K', 'M', 'G', 'T', 'P', 'E'];
  let i = 0;
  let v = bytes;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  const text = Number.isInteger(v) ? String(v) : v.toFixed(1);
  return `${text}${units[i]}`;
}

/** MemTotal and SwapTotal from /proc/meminfo, in bytes. */
export function hostMemory(meminfo = fs.readFileSync('/proc/meminfo', 'utf8')): { ram: number; swap: number } {
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(meminfo)?.[1] ?? 0) * 1024;
  return { ram: kb('MemTotal'), swap: kb('SwapTotal') };
}

/** Throws unless `memsize` bytes of guest memory (given as `spec`) are
 * possible on this host. */
export function checkGuestMemorySize(memsize: number, spec: string, host = hostMemory()): void {
  if (memsize % PAGE_SIZE !== 0 || memsize < MIN_GUEST_MEMORY) {
    throw new GuestLimitError(`guest memory size ${spec}: must be a multiple of 4K and at least 1M`);
  }
  if (host.ram > 0 && memsize > host.ram + host.swap) {
    throw new GuestLimitError(
      `guest memory size ${spec}: more than this host has (${formatSize(host.ram)} of RAM and ${formatSize(host.swap)} of swap)`,
    );
  }
}

/** Throws unless a new memory file of `memsize` bytes fits in `dir`'s file system. */
export function checkMemoryFileSpace(memsize: number, dir: string): void {
  let free: number;
  try {
    const st = fs.statfsSync(dir);
    free = st.bavail * st.bsize;
  } catch {
    return; // no statfs: the write itself will tell
  }
  if (memsize > free) {
    throw new GuestLimitError(`guest memory size ${formatSize(memsize)}: the file system of ${dir} has only ${formatSize(free)} free for the memory file`);
  }
}

/** The most vCPUs a VM can have here. */
export function maxVcpus(kvmMax: number): number {
  return Math.min(kvmMax, MAX_XAPIC_VCPUS);
}

/** Throws unless `n` vCPUs are possible (`kvmMax`: KVM_CAP_MAX_VCPUS). */
export function checkVcpuCount(n: number, kvmMax: number): void {
  const max = maxVcpus(kvmMax);
  if (n > max) {
    const why = max === kvmMax ? "this host's KVM limit" : 'vCPUs get the xAPIC IDs 0-254';
    throw new GuestLimitError(`${n} vCPUs requested, but a VM can have at most ${max} (${why})`);
  }
}
