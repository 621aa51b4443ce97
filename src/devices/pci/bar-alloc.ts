// Where PCI BARs are placed at start, as bhyve's pci_emul.c does it
// (pci_emul_alloc_bar collects every BAR, init_pci then assigns them per bus
// in decreasing size order to reduce fragmentation, pci_emul_assign_bar):
//
//   I/O BARs       from PCI_EMUL_IOBASE 0x2000 up to 0x10000;
//   32-bit memory  the PCI hole [0xc0000000, 0xe0000000) (OVMF assumes this
//                  base; guest RAM below 4 GiB ends at or before it);
//   64-bit memory  BARs up to 128 MiB also go below 4 GiB (still marked
//                  64-bit, "some drivers do not work well" above 4 GiB);
//                  larger ones, marked prefetchable, go to a 32 GiB window
//                  that starts at 4 GiB + highmem rounded up to 32 GiB.
//   ECAM           [0xe0000000, 0xf0000000): 1 MiB per bus, 256 buses.
//
// After each bus, bhyve adds slop (32 ports, 1 MiB, 512 MiB) and rounds up;
// the resulting per-bus windows are what the DSDT's _CRS describes.

import type { MemoryLayout } from '../../sys/memory-map.js';
import { HIGHMEM_BASE } from '../../sys/memory-map.js';

export const PCI_EMUL_IOBASE = 0x2000;
export const PCI_EMUL_IOLIMIT = 0x10000;
export const PCI_EMUL_ECFG_BASE = 0xe0000000;
export const PCI_EMUL_ECFG_SIZE = 256 * 1024 * 1024;
export const PCI_EMUL_MEMBASE32 = 0xc0000000;
export const PCI_EMUL_MEMLIMIT32 = PCI_EMUL_ECFG_BASE;
export const PCI_EMUL_MEMSIZE64 = 32 * 1024 * 1024 * 1024;
/** 64-bit BARs larger than this go above 4 GiB. */
export const PCI_MEM64_HIGH_THRESHOLD = 128 * 1024 * 1024;

const BUSIO_ROUNDUP = 32;
const BUSMEM32_ROUNDUP = 1024 * 1024;
const BUSMEM64_ROUNDUP = 512 * 1024 * 1024;

export type BarKind = 'io' | 'mem32' | 'mem64';

export interface AddressWindow {
  base: number;
  limit: number;
}

/** Resources decoded by one bus (what bhyve keeps in struct businfo). */
export interface BusWindows {
  io: AddressWindow;
  mem32: AddressWindow;
  mem64: AddressWindow;
}

function roundUp(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

/** Rounds a BAR size to a power of two and the PCI minimum (4 for I/O, 16
 * for memory), as pci_emul_alloc_bar does. */
export function barSize(kind: BarKind, size: number): number {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`invalid BAR size ${size}`);
  let s = 1;
  while (s < size) s *= 2;
  return Math.max(s, kind === 'io' ? 4 : 16);
}

export class PciResourceAllocator {
  ioBase = PCI_EMUL_IOBASE;
  mem32Base = PCI_EMUL_MEMBASE32;
  mem64Base: number;
  readonly mem64Limit: number;
  private readonly buses = new Map<number, BusWindows>();

  constructor(layout: MemoryLayout) {
    this.mem64Base = roundUp(HIGHMEM_BASE + layout.highmem, PCI_EMUL_MEMSIZE64);
    this.mem64Limit = this.mem64Base + PCI_EMUL_MEMSIZE64;
  }

  /** Places a BAR of `size` bytes (a power of two), naturally aligned;
   * returns the address and whether it sits in the 64-bit window. */
  alloc(kind: BarKind, size: number, what: string): { addr: number; high: boolean } {
    let base: number;
    let limit: number;
    let high = false;
    if (kind === 'io') { base = this.ioBase; limit = PCI_EMUL_IOLIMIT; }
    else if (kind === 'mem64' && size > PCI_MEM64_HIGH_THRESHOLD) { base = this.mem64Base; limit = this.mem64Limit; high = true; }
    else { base = this.mem32Base; limit = PCI_EMUL_MEMLIMIT32; }
    const addr = roundUp(base, size);
    if (addr + size > limit) {
      throw new Error(`${what}: no room for a ${size}-byte ${kind === 'io' ? 'I/O' : 'memory'} BAR in the PCI window`);
    }
    if (kind === 'io') this.ioBase = addr + size;
    else if (high) this.mem64Base = addr + size;
    else this.mem32Base = addr + size;
    return { addr, high };
  }

  /** Records the windows of a bus whose BARs start at `start` and end at the
   * current allocation points, adding bhyve's slop. */
  closeBus(bus: number, start: { io: number; mem32: number; mem64: number }): BusWindows {
    this.ioBase = roundUp(this.ioBase + BUSIO_ROUNDUP, BUSIO_ROUNDUP);
    this.mem32Base = roundUp(this.mem32Base + BUSMEM32_ROUNDUP, BUSMEM32_ROUNDUP);
    this.mem64Base = roundUp(this.mem64Base + BUSMEM64_ROUNDUP, BUSMEM64_ROUNDUP);
    const w: BusWindows = {
      io: { base: start.io, limit: this.ioBase },
      mem32: { base: start.mem32, limit: this.mem32Base },
      mem64: { base: start.mem64, limit: this.mem64Base },
    };
    this.buses.set(bus, w);
    return w;
  }

  busWindows(bus: number): BusWindows | undefined {
    return this.buses.get(bus);
  }
}
