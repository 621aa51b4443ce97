// One virtio-iommu domain: an I/O virtual address space shared by the
// endpoints attached to it, holding the mappings MAP requests created
// (virtio spec 1.2, 5.13.6). Mappings never overlap; UNMAP removes whole
// mappings only (a range that would split one fails and removes nothing).
//
// Mappings are kept sorted by IOVA in an array: lookups (every translated
// DMA) are a binary search; MAP and UNMAP are rare next to them.

import type { DmaDomainView, DmaMapping, TranslatedDmaSpace } from './dma-space.js';

/** Result of a domain change, in virtio-iommu status terms. */
export type DomainResult = 'ok' | 'exists' | 'split';

export class IommuDomain implements DmaDomainView {
  /** Sorted by iova, disjoint. */
  private readonly maps: DmaMapping[] = [];
  /** Endpoints attached to it. */
  readonly endpoints = new Set<TranslatedDmaSpace>();
  /** The last lookup's hit: DMA walks a buffer page by page or reuses one
   * ring mapping, so the same mapping is asked for again and again. */
  private last: DmaMapping | undefined;

  constructor(readonly id: number, readonly bypass: boolean) {}

  get mappingCount(): number { return this.maps.length; }

  lookup(iova: number): DmaMapping | undefined {
    const l = this.last;
    if (l !== undefined && iova >= l.iova && iova - l.iova < l.length) return l;
    const i = this.indexAtOrBefore(iova);
    if (i < 0) return undefined;
    const m = this.maps[i];
    if (iova - m.iova < m.length) { this.last = m; return m; }
    return undefined;
  }

  mappings(): Iterable<DmaMapping> {
    return this.maps;
  }

  /** Adds [iova, iova+length) -> gpa; 'exists' when any part is mapped. */
  map(m: DmaMapping): DomainResult {
    const i = this.indexAtOrBefore(m.iova + m.length - 1);
    // The mapping starting at or before our last byte is the only one
    // that can overlap us (they are disjoint and sorted).
    if (i >= 0) {
      const prev = this.maps[i];
      if (prev.iova + prev.length > m.iova) return 'exists';
    }
    const entry = { ...m };
    this.maps.splice(i + 1, 0, entry);
    for (const ep of this.endpoints) ep.mapped(entry);
    return 'ok';
  }

  /** Removes every mapping inside [first, last] (inclusive); 'split' (and
   * nothing removed) when one is only partly inside. Returns the removed
   * mappings through `removed`. */
  unmap(first: number, last: number, removed: DmaMapping[] = []): DomainResult {
    let i = this.indexAtOrBefore(first);
    if (i < 0) i = 0;
    let lo = -1;
    let hi = -1;
    for (let j = i; j < this.maps.length; j++) {
      const m = this.maps[j];
      const mLast = m.iova + m.length - 1;
      if (mLast < first) continue;
      if (m.iova > last) break;
      if (m.iova < first || mLast > last) return 'split';
      if (lo < 0) lo = j;
      hi = j;
    }
    if (lo < 0) return 'ok';
    removed.push(...this.maps.splice(lo, hi - lo + 1));
    this.last = undefined;
    for (const m of removed) for (const ep of this.endpoints) ep.unmapped(m.iova, m.length);
    return 'ok';
  }

  /** Index of the last mapping starting at or before `iova`, or -1. */
  private indexAtOrBefore(iova: number): number {
    let lo = 0;
    let hi = this.maps.length - 1;
    let ans = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (this.maps[mid].iova <= iova) { ans = mid; lo = mid + 1; } else hi = mid - 1;
    }
    return ans;
  }
}
