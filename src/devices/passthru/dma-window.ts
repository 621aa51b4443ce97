// How a passthrough device's DMA reaches guest memory: through the DMA
// space of its PCI function (devices/iommu/dma-space.ts on the viommu
// work: identity when no IOMMU is in front of it, else the guest's
// IOMMU mappings). The passthru code needs only the part of that
// interface declared here, so it takes the chipset's space as is, and
// an identity space of its own where the chipset has none.
//
// Two uses: the space's mappings are mirrored as the device's DMA windows
// (vfio-user DMA_MAP with the guest RAM file, so the server maps them),
// and a DMA_READ/DMA_WRITE message from the server is translated and
// checked (a refused address is answered EFAULT and never reaches memory).

import type { GuestMemory } from '../../sys/guest-memory.js';

export const DMA_READ = 1;
export const DMA_WRITE = 2;

export interface DmaMappingLike {
  iova: number;
  gpa: number;
  length: number;
  access: number;
}

export interface DmaSpaceLike {
  readonly identity: boolean;
  translate(iova: number, length: number, access: number, out?: Array<{ gpa: number; length: number }>): Array<{ gpa: number; length: number }>;
  listen(listener: { map(m: DmaMappingLike): void; unmap(iova: number, length: number): void }): () => void;
}

/** IOVA = guest physical address over guest RAM. */
export function identityDmaSpace(ram: ReadonlyArray<{ gpa: number; length: number }>): DmaSpaceLike {
  return {
    identity: true,
    translate(iova, length, _access, out = []) {
      out.push({ gpa: iova, length });
      return out;
    },
    listen(l) {
      for (const r of ram) l.map({ iova: r.gpa, gpa: r.gpa, length: r.length, access: DMA_READ | DMA_WRITE });
      return () => {};
    },
  };
}

/** Guest memory through a DMA space: reads and writes of the device at
 * IOVAs; throws when the space or guest RAM refuses an address. */
export function dmaThroughSpace(space: DmaSpaceLike, mem: GuestMemory): { read(a: number, n: number): Uint8Array; write(a: number, d: Uint8Array): void } {
  return {
    read(address, length) {
      const out = new Uint8Array(length);
      let at = 0;
      for (const r of space.translate(address, length, DMA_READ)) {
        out.set(mem.read(r.gpa, r.length), at);
        at += r.length;
      }
      return out;
    },
    write(address, data) {
      let at = 0;
      for (const r of space.translate(address, data.length, DMA_WRITE)) {
        mem.write(r.gpa, data.subarray(at, at + r.length));
        at += r.length;
      }
    },
  };
}

/** Where a guest-physical range lies in the guest RAM file (lowmem first,
 * then highmem from 4 GiB): pieces split at the gap, undefined for a part
 * outside RAM. */
export function ramFileRanges(gpa: number, length: number, layout: { lowmem: number; highmem: number }): Array<{ gpa: number; length: number; offset: number }> | undefined {
  const HIGH = 0x100000000;
  // Addresses the guest (or a confused caller) made up are not RAM.
  if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(length) || gpa < 0 || length < 0 || !Number.isSafeInteger(gpa + length)) return undefined;
  const out: Array<{ gpa: number; length: number; offset: number }> = [];
  let at = gpa;
  const end = gpa + length;
  while (at < end) {
    if (at < layout.lowmem) {
      const n = Math.min(end, layout.lowmem) - at;
      out.push({ gpa: at, length: n, offset: at });
      at += n;
    } else if (at >= HIGH && at < HIGH + layout.highmem) {
      const n = Math.min(end, HIGH + layout.highmem) - at;
      out.push({ gpa: at, length: n, offset: layout.lowmem + (at - HIGH) });
      at += n;
    } else {
      return undefined;
    }
  }
  return out;
}
