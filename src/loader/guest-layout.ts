// What every loader shares: the guest's physical memory map as a kernel is
// told it (e820 / PVH memmap / Multiboot mmap), a placement allocator that
// keeps the kernel, its modules and the loader's own structures from
// overlapping, and the flat GDT and identity-mapped page tables.

import type { GuestMemory } from '../sys/guest-memory.js';
import { GuestMemoryError } from '../sys/guest-memory.js';
import { HIGHMEM_BASE, type MemoryLayout } from '../sys/memory-map.js';
import { type BootState, gdtEntries } from './boot-state.js';
import { LoaderError, hex } from './errors.js';

export const E820_RAM = 1;
export const E820_RESERVED = 2;

export interface MemoryMapEntry {
  addr: number;
  size: number;
  type: number;
}

/** End of conventional memory: the legacy VGA/BIOS hole starts here. */
export const LEGACY_HOLE_START = 0xa0000;
export const LEGACY_HOLE_END = 0x100000;
/** The loader's structures in low memory. */
export const GDT_ADDR = 0x500;
export const LOW_AREA_START = 0x1000;
export const LOW_AREA_END = 0x9f000;
export const MIB = 1024 * 1024;
export const PAGE = 4096;

/** The RAM the guest has, as the BIOS would report it: usable RAM of our
 * layout with the legacy hole 0xA0000-0xFFFFF reserved. */
export function guestMemoryMap(layout: MemoryLayout): MemoryMapEntry[] {
  const map: MemoryMapEntry[] = [];
  const low = layout.lowmem;
  map.push({ addr: 0, size: Math.min(low, LEGACY_HOLE_START), type: E820_RAM });
  map.push({ addr: LEGACY_HOLE_START, size: LEGACY_HOLE_END - LEGACY_HOLE_START, type: E820_RESERVED });
  if (low > LEGACY_HOLE_END) map.push({ addr: LEGACY_HOLE_END, size: low - LEGACY_HOLE_END, type: E820_RAM });
  if (layout.highmem > 0) map.push({ addr: HIGHMEM_BASE, size: layout.highmem, type: E820_RAM });
  return map;
}

/** Smallest guest a loader accepts: room for the low structures and 1 MiB up. */
export const MIN_LOWMEM = 2 * MIB;

export function checkLayout(layout: MemoryLayout): void {
  if (layout.lowmem < MIN_LOWMEM) {
    throw new LoaderError(`guest memory of ${layout.lowmem} bytes is too small to load a kernel (at least 2 MiB)`);
  }
}

export interface Placement {
  addr: number;
  size: number;
  what: string;
}

export const alignUp = (v: number, a: number): number => Math.ceil(v / a) * a;
export const alignDown = (v: number, a: number): number => Math.floor(v / a) * a;

/** Tracks what has been placed in guest RAM and finds room for more. All
 * placements lie in RAM below lowmem end (32-bit addressable). */
export class GuestAllocator {
  readonly placements: Placement[] = [];

  constructor(readonly memory: GuestMemory, readonly layout: MemoryLayout) {}

  /** Claims [addr, addr+size); a clear error when it is not RAM or is taken.
   * `fileAsks`: the kernel file itself names the address (an ELF PT_LOAD, a
   * Multiboot load address). Then 0xA0000-0xFFFFF counts as RAM, which it
   * is in bhyve's memory model (only the map given to the OS marks it
   * reserved), so a kernel whose first segment holds its ELF headers at
   * 0xff000 loads as GRUB and QEMU load it. The loader's own structures
   * still keep out of that range. */
  reserve(addr: number, size: number, what: string, fileAsks = false): Placement {
    if (size <= 0) size = 1;
    if (!this.memory.contains(addr, size) || !this.isUsableRam(addr, size, fileAsks)) {
      throw new LoaderError(`${what} at ${hex(addr)}-${hex(addr + size)} does not fit in guest memory (${this.describeRam()})`);
    }
    const clash = this.placements.find((p) => addr < p.addr + p.size && p.addr < addr + size);
    if (clash) {
      throw new LoaderError(`${what} at ${hex(addr)}-${hex(addr + size)} overlaps ${clash.what} at ${hex(clash.addr)}-${hex(clash.addr + clash.size)}`);
    }
    const p = { addr, size, what };
    this.placements.push(p);
    return p;
  }

  /** Lowest free, aligned range at or above min that ends at or below max. */
  allocLow(size: number, align: number, what: string, min = LOW_AREA_START, max = this.layout.lowmem): number {
    let addr = alignUp(min, align);
    for (;;) {
      if (addr + size > max) break;
      const clash = this.clashes(addr, size);
      if (!clash) {
        if (this.isUsableRam(addr, size)) { this.reserve(addr, size, what); return addr; }
        addr = alignUp(addr + 1, align);
        if (addr < LEGACY_HOLE_END && addr + size > LEGACY_HOLE_START) addr = LEGACY_HOLE_END;
        continue;
      }
      addr = alignUp(clash.addr + clash.size, align);
    }
    throw new LoaderError(`no room in guest memory below ${hex(max)} for ${what} (${size} bytes)`);
  }

  /** Highest free, aligned range that ends at or below maxEnd and starts at or above min. */
  allocHigh(size: number, align: number, what: string, maxEnd = this.layout.lowmem, min = LEGACY_HOLE_END): number {
    let addr = alignDown(Math.min(maxEnd, this.layout.lowmem) - size, align);
    while (addr >= min) {
      const clash = this.clashes(addr, size, true);
      if (!clash) { this.reserve(addr, size, what); return addr; }
      addr = alignDown(clash.addr - size, align);
    }
    throw new LoaderError(`${what} (${size} bytes) does not fit in guest memory between ${hex(min)} and ${hex(Math.min(maxEnd, this.layout.lowmem))}`);
  }

  /** Highest end address of any placement. */
  get end(): number {
    return this.placements.reduce((m, p) => Math.max(m, p.addr + p.size), 0);
  }

  write(addr: number, bytes: Uint8Array): void {
    try {
      this.memory.write(addr, bytes);
    } catch (e) {
      if (e instanceof GuestMemoryError) throw new LoaderError(`cannot write ${bytes.length} bytes at ${hex(addr)}: not guest RAM`);
      throw e;
    }
  }

  /** Zero-fills [addr, addr+len). */
  zero(addr: number, len: number): void {
    if (len > 0) this.memory.slice(addr, len).fill(0);
  }

  /** Writes a NUL-terminated string, returning its length with the NUL. */
  writeString(addr: number, s: string): number {
    const b = cString(s);
    this.write(addr, b);
    return b.length;
  }

  /** The overlapping placement that ends highest (or, with lowest, starts lowest). */
  private clashes(addr: number, size: number, lowest = false): Placement | undefined {
    let best: Placement | undefined;
    for (const p of this.placements) {
      if (addr < p.addr + p.size && p.addr < addr + size) {
        if (!best || (lowest ? p.addr < best.addr : p.addr + p.size > best.addr + best.size)) best = p;
      }
    }
    return best;
  }

  private isUsableRam(addr: number, size: number, holeIsRam = false): boolean {
    const end = addr + size;
    if (!holeIsRam && addr < LEGACY_HOLE_END && end > LEGACY_HOLE_START) return false;
    if (end <= this.layout.lowmem) return true;
    return addr >= HIGHMEM_BASE && end <= HIGHMEM_BASE + this.layout.highmem;
  }

  private describeRam(): string {
    const mib = (n: number) => `${Math.floor(n / MIB)} MiB`;
    return this.layout.highmem > 0
      ? `RAM ${hex(0)}-${hex(this.layout.lowmem)} and ${hex(HIGHMEM_BASE)}-${hex(HIGHMEM_BASE + this.layout.highmem)}, ${mib(this.layout.lowmem + this.layout.highmem)}`
      : `RAM ${hex(0)}-${hex(this.layout.lowmem)}, ${mib(this.layout.lowmem)}`;
  }
}

export function cString(s: string): Uint8Array {
  const b = Buffer.from(s, 'utf8');
  if (b.includes(0)) throw new LoaderError('a command line cannot contain a NUL byte');
  const out = new Uint8Array(b.length + 1);
  out.set(b);
  return out;
}

/** Writes the flat GDT described by the state's segments at GDT_ADDR. */
export function writeGdt(alloc: GuestAllocator, state: BootState, addr = GDT_ADDR): void {
  const entries = gdtEntries(state);
  alloc.reserve(addr, entries.length * 8, 'GDT');
  entries.forEach((e, i) => alloc.memory.writeU64(addr + i * 8, e));
}

export const PTE_PRESENT = 0x1n;
export const PTE_WRITE = 0x2n;
export const PTE_PS = 0x80n;

/** Identity-maps the first 4 GiB with 2 MiB pages: one PML4, one PDPT, four
 * page directories, six pages from `base`. Returns the PML4 address (CR3). */
export function writeIdentityPageTables(alloc: GuestAllocator, base: number): number {
  alloc.reserve(base, 6 * PAGE, 'page tables');
  const mem = alloc.memory;
  alloc.zero(base, 6 * PAGE);
  const pml4 = base;
  const pdpt = base + PAGE;
  const pd0 = base + 2 * PAGE;
  mem.writeU64(pml4, BigInt(pdpt) | PTE_PRESENT | PTE_WRITE);
  for (let i = 0; i < 4; i++) {
    const pd = pd0 + i * PAGE;
    mem.writeU64(pdpt + i * 8, BigInt(pd) | PTE_PRESENT | PTE_WRITE);
    for (let j = 0; j < 512; j++) {
      const phys = (BigInt(i) << 30n) | (BigInt(j) << 21n);
      mem.writeU64(pd + j * 8, phys | PTE_PRESENT | PTE_WRITE | PTE_PS);
    }
  }
  return pml4;
}

/** Inputs every loader takes. */
export interface LoadModule {
  /** Name shown in errors and, for Multiboot, the start of the module string. */
  name: string;
  bytes: Uint8Array;
  /** Command line handed with the module (Multiboot: "PATH ARGS"). */
  cmdline?: string;
}

export interface LoadOptions {
  memory: GuestMemory;
  layout: MemoryLayout;
  /** Used in messages ("kernel /boot/vmlinuz ..."). */
  kernelName?: string;
  cmdline?: string;
  initrd?: Uint8Array;
  initrdName?: string;
  modules?: LoadModule[];
}

export interface LoadResult {
  format: 'bzimage' | 'pvh' | 'multiboot';
  state: BootState;
  /** Everything placed in guest memory, for the record and for tests. */
  placements: Placement[];
  /** Entry point (guest physical). */
  entry: number;
}
