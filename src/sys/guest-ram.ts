// Guest RAM as host mappings of the VM's memory file. RAM is mapped in
// chunks of at most 1 GiB, each its own mmap and its own KVM memory slot:
// a JavaScript view of one mapping cannot reach 4 GiB, and chunks keep every
// view small. The file holds lowmem first, then highmem.

import fs from 'node:fs';
import { GuestMemory, GuestMemoryError, type MemoryRegion } from './guest-memory.js';
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

/** The regions a GuestMemory needs; each chunk's view is made when the
 * GuestMemory first reaches into it (guest-memory.ts). */
export function ramRegions(chunks: readonly RamChunk[]): MemoryRegion[] {
  return chunks.map((c) => ({ gpa: c.gpa, length: c.map.length, get bytes() { return c.map.bytes; } }));
}

/** Writes `bytes` at guest physical `gpa` through the memory file `fd`
 * (laid out as mapGuestRam maps it): what a GuestMemory write would do,
 * without a view of guest RAM (the device thread writes the firmware tables
 * this way before anything else needs RAM). Throws GuestMemoryError when
 * the range is not within one part of RAM. */
export function writeRamFile(fd: number, layout: MemoryLayout, gpa: number, bytes: Uint8Array): void {
  const end = gpa + bytes.length;
  let offset: number;
  if (gpa >= 0 && end <= layout.lowmem) offset = gpa;
  else if (gpa >= HIGHMEM_BASE && end <= HIGHMEM_BASE + layout.highmem) offset = layout.lowmem + (gpa - HIGHMEM_BASE);
  else throw new GuestMemoryError(gpa, bytes.length);
  for (let done = 0; done < bytes.length;) {
    done += fs.writeSync(fd, bytes, done, bytes.length - done, offset + done);
  }
}

export interface RamSlot { slot: number; gpa: number; size: number; address: bigint }

/** The legacy VGA memory window, left out of RAM for fbuf's vga=on. */
export const VGA_WINDOW_BASE = 0xa0000;
export const VGA_WINDOW_END = 0xc0000;

/** The KVM memory slots for the chunks; with `legacyWindow`, 0xC0000-0xFFFFF
 * is left out for the chipset model to map, with `vgaWindow` 0xA0000-0xBFFFF
 * for the VGA's memory handler. */
export function ramSlots(chunks: readonly RamChunk[], legacyWindow: boolean, vgaWindow = false): RamSlot[] {
  const holes: Array<[number, number]> = [];
  if (vgaWindow) holes.push([VGA_WINDOW_BASE, VGA_WINDOW_END]);
  if (legacyWindow) holes.push([LEGACY_WINDOW_BASE, LEGACY_WINDOW_END]);
  const slots: RamSlot[] = [];
  let slot = FIRST_RAM_SLOT;
  for (const c of chunks) {
    const size = c.map.length;
    let from = 0;
    for (const [lo, hi] of c.gpa === 0 ? holes : []) {
      if (hi > size) break;
      if (lo > from) slots.push({ slot: slot++, gpa: from, size: lo - from, address: c.map.address + BigInt(from) });
      from = hi;
    }
    if (from < size) slots.push({ slot: slot++, gpa: c.gpa + from, size: size - from, address: c.map.address + BigInt(from) });
  }
  return slots;
}

/** Guest RAM of a helper thread (an I/O thread): the VM's memory file at
 * `memoryPath` mapped as `layout` says; the file is closed again. */
export function openGuestMemory(memoryPath: string, layout: MemoryLayout): GuestMemory {
  const memFd = fs.openSync(memoryPath, 'r+');
  try {
    return new GuestMemory(ramRegions(mapGuestRam(memFd, layout)));
  } finally {
    fs.closeSync(memFd);
  }
}
