// Guest physical memory layout, as bhyve lays it out (libvmmapi's
// vm_setup_memory): RAM from 0 up to the 3 GiB low-memory limit, the PCI hole
// up to 4 GiB, and any remaining RAM from 4 GiB up.

import { UserError } from '../user-error.js';

export const LOWMEM_LIMIT = 3 * 1024 * 1024 * 1024;
export const HIGHMEM_BASE = 4 * 1024 * 1024 * 1024;
/** bhyve's boot ROM window: the 16 MiB that end at 4 GiB. */
export const BOOTROM_WINDOW_BASE = HIGHMEM_BASE - 16 * 1024 * 1024;
export const BOOTROM_WINDOW_SIZE = 16 * 1024 * 1024;
export const PAGE_SIZE = 4096;
/** The legacy BIOS window a PC chipset shadows (PAM registers). With
 * lpc.fwcfg=qemu it is left out of the RAM slots for the chipset to map. */
export const LEGACY_WINDOW_BASE = 0xc0000;
export const LEGACY_WINDOW_END = 0x100000;

export interface MemoryLayout {
  /** Bytes of RAM mapped at guest physical 0. */
  lowmem: number;
  /** Bytes of RAM mapped at HIGHMEM_BASE (0 when all RAM fits below 3 GiB). */
  highmem: number;
}

export function computeLayout(memsize: number): MemoryLayout {
  if (!Number.isSafeInteger(memsize) || memsize <= 0) throw new UserError(`invalid guest memory size ${memsize}`);
  const lowmem = Math.min(memsize, LOWMEM_LIMIT);
  return { lowmem, highmem: memsize - lowmem };
}
