// Where guest RAM sits, as bhyve's vm_get_lowmem_size/vm_get_highmem_size
// report it: `lowmem` bytes mapped at 0 (at most 3 GiB, below the PCI hole
// at 0xc0000000), `highmem` bytes (the rest) mapped at 4 GiB.

export const LOWMEM_LIMIT = 3 * 1024 * 1024 * 1024;
export const HIGHMEM_BASE = 4 * 1024 * 1024 * 1024;

export interface MemoryLayout {
  /** Bytes of RAM mapped at guest physical 0. */
  lowmem: number;
  /** Bytes of RAM mapped at guest physical 4 GiB. */
  highmem: number;
}

/** Splits a guest memory size the way bhyve's vm_setup_memory does. */
export function memoryLayoutFor(memsize: number): MemoryLayout {
  const lowmem = Math.min(memsize, LOWMEM_LIMIT);
  return { lowmem, highmem: memsize - lowmem };
}
