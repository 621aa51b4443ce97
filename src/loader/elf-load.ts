// Copies an ELF kernel's PT_LOAD segments to their physical addresses.

import { PT_LOAD, type ElfImage } from './elf.js';
import type { GuestAllocator } from './guest-layout.js';

/** Loads every PT_LOAD segment at p_paddr (file bytes, then zeroed BSS),
 * wherever in guest RAM the file asks (0xA0000-0xFFFFF included, as GRUB
 * and QEMU do); returns the highest end address. */
export function loadElfSegments(alloc: GuestAllocator, b: Uint8Array, elf: ElfImage, name: string): number {
  let end = 0;
  elf.segments.forEach((s, i) => {
    if (s.type !== PT_LOAD || s.memsz === 0) return;
    alloc.reserve(s.paddr, s.memsz, `${name} segment ${i}`, true);
    alloc.write(s.paddr, b.subarray(s.offset, s.offset + s.filesz));
    alloc.zero(s.paddr + s.filesz, s.memsz - s.filesz);
    end = Math.max(end, s.paddr + s.memsz);
  });
  return end;
}
