// Which parts of a passthrough memory BAR the guest reaches straight
// through a KVM memory slot over the device's mmap-able region, and which
// are trapped (each access a message to the device, or emulated): as
// pci_passthru.c and QEMU's vfio-pci decide it.
//   - only what the device lets us map (the region's mmap areas, all of
//     it without a sparse list), and only whole pages of it: a KVM slot
//     maps pages;
//   - never the pages holding the MSI-X table or PBA: the table is
//     emulated (the guest's messages become KVM routes), so those pages
//     trap even when the rest of the BAR is mapped;
//   - the part of the BAR beyond the region (the BAR is a power of two,
//     the region may be smaller) traps and reads all-ones.

export const PAGE_SIZE = 4096;

export interface BarPiece {
  offset: number;
  size: number;
  how: 'map' | 'trap';
}

export interface BarPlanInput {
  /** The BAR as the guest sees it (power of two). */
  barSize: number;
  /** The device region behind it. */
  regionSize: number;
  /** Mappable areas of the region (relative); empty: none. */
  mmapAreas: ReadonlyArray<{ offset: number; size: number }>;
  /** Ranges that must trap (the MSI-X table and PBA in this BAR). */
  trapped: ReadonlyArray<{ offset: number; size: number }>;
  /** Whether guest mappings are possible at all (KVM, page-aligned BAR). */
  canMap: boolean;
}

const down = (x: number): number => Math.floor(x / PAGE_SIZE) * PAGE_SIZE;
const up = (x: number): number => Math.ceil(x / PAGE_SIZE) * PAGE_SIZE;

export function planBar(p: BarPlanInput): BarPiece[] {
  // Mappable pages: whole pages inside an area and the region, outside
  // every trapped range's pages.
  const mapped: Array<[number, number]> = [];
  if (p.canMap) {
    for (const a of p.mmapAreas) {
      let s = up(a.offset);
      const e = down(Math.min(a.offset + a.size, p.regionSize, p.barSize));
      const holes = p.trapped.map((t) => [down(t.offset), up(t.offset + t.size)] as [number, number]).sort((x, y) => x[0] - y[0]);
      for (const [hs, he] of holes) {
        if (he <= s || hs >= e) continue;
        if (hs > s) mapped.push([s, hs]);
        s = Math.max(s, he);
      }
      if (s < e) mapped.push([s, e]);
    }
  }
  mapped.sort((x, y) => x[0] - y[0]);
  const out: BarPiece[] = [];
  const push = (offset: number, size: number, how: 'map' | 'trap'): void => {
    if (size <= 0) return;
    const last = out[out.length - 1];
    if (last && last.how === how && last.offset + last.size === offset) last.size += size;
    else out.push({ offset, size, how });
  };
  let at = 0;
  for (const [s, e] of mapped) {
    if (s < at) continue; // overlapping areas: the first wins
    push(at, s - at, 'trap');
    push(s, e - s, 'map');
    at = e;
  }
  push(at, p.barSize - at, 'trap');
  return out;
}
