// Guest RAM as host mappings of the VM's memory file. RAM is mapped in
// chunks of at most 1 GiB, each its own mmap and its own KVM memory slot:
// a JavaScript view of one mapping cannot reach 4 GiB, and chunks keep every
// view small. The file holds lowmem first, then highmem.

import type { MemoryRegion } from './guest-memory.js';
import { mmap, PROT_READ, PROT_WRITE, type Mapping } from './libc.js';
import { HIGHMEM_BASE, LEGACY_WINDOW_BASE, LEGACY_WINDOW_END, type MemoryLayout } from './memory-map.js';

export const RAM_CHUNK = 1024 * 1024 * 1024;
/** KVM slots of RAM chunks start here (0-15: fixed, 16-63: device maps). */
export const FIRST_RAM_SLOT = 64;

export interface RamChunk {
  readonly gpa: number;
  /** Offset of this chunk in the memory file. */
  readonly fileOffset: number;
  readonly map: Mapping;
}

function chunksOf(gpa: number, fileOffset: number, size: number, out: Array<{ gpa: number; fileOffset: number; size: number }>): void {
  for (let done = 0; done < size; done += RAM_CHUNK) {
    out.push({ gpa: gpa + done, fileOffset: fileOffset + done, size: Math.min(RAM_CHUNK, size - done) });
  }
}

/** Maps the whole memory file in chunks. */
export function mapGuestRam(fd: number, layout: MemoryLayout): RamChunk[] {
  const plan: Array<{ gpa: number; fileOffset: number; size: number }> = [];
  chunksOf(0, 0, layout.lowmem, plan);
  chunksOf(HIGHMEM_BASE, layout.lowmem, layout.highmem, plan);
  const chunks: RamChunk[] = [];
  try {
    for (const p of plan) {
      chunks.push({ gpa: p.gpa, fileOffset: p.fileOffset, map: mmap(p.size, PROT_READ | PROT_WRITE, fd, p.fileOffset, 'guest memory') });
    }
  } catch (e) {
    for (const c of chunks) c.map.unmap();
    throw e;
  }
  return chunks;
}

/** The regions a GuestMemory needs. */
export function ramRegions(chunks: readonly RamChunk[]): MemoryRegion[] {
  return chunks.map((c) => ({ gpa: c.gpa, bytes: c.map.bytes }));
}

export interface RamSlot { slot: number; gpa: number; size: number; address: bigint }

/** The KVM memory slots for the chunks; with `legacyWindow`, 0xC0000-0xFFFFF
 * is left out for the chipset model to map. */
export function ramSlots(chunks: readonly RamChunk[], legacyWindow: boolean): RamSlot[] {
  const slots: RamSlot[] = [];
  let slot = FIRST_RAM_SLOT;
  for (const c of chunks) {
    const size = c.map.length;
    if (legacyWindow && c.gpa === 0 && size > LEGACY_WINDOW_END) {
      slots.push({ slot: slot++, gpa: 0, size: LEGACY_WINDOW_BASE, address: c.map.address });
      slots.push({ slot: slot++, gpa: LEGACY_WINDOW_END, size: size - LEGACY_WINDOW_END, address: c.map.address + BigInt(LEGACY_WINDOW_END) });
    } else {
      slots.push({ slot: slot++, gpa: c.gpa, size, address: c.map.address });
    }
  }
  return slots;
}
