// Address-range registry for port I/O and MMIO handlers. Ranges may not
// overlap; lookups are a binary search over the sorted ranges.

export class RangeOverlapError extends Error {}

export interface Range<H> {
  readonly name: string;
  readonly base: number;
  readonly length: number;
  readonly handler: H;
}

export class RangeRegistry<H> {
  private ranges: Range<H>[] = [];

  constructor(private readonly space: string) {}

  register(name: string, base: number, length: number, handler: H): void {
    if (!Number.isSafeInteger(base) || !Number.isSafeInteger(length) || base < 0 || length <= 0) {
      throw new RangeError(`${this.space} range for ${name} is invalid: base 0x${base.toString(16)} length ${length}`);
    }
    const end = base + length;
    for (const r of this.ranges) {
      if (base < r.base + r.length && r.base < end) {
        throw new RangeOverlapError(
          `${this.space} range ${fmt(base, length)} of ${name} overlaps ${fmt(r.base, r.length)} of ${r.name}`,
        );
      }
    }
    this.ranges.push({ name, base, length, handler });
    this.ranges.sort((a, b) => a.base - b.base);
  }

  unregister(base: number): boolean {
    const i = this.ranges.findIndex((r) => r.base === base);
    if (i < 0) return false;
    this.ranges.splice(i, 1);
    return true;
  }

  /** The range containing addr, or undefined. */
  find(addr: number): Range<H> | undefined {
    const rs = this.ranges;
    let lo = 0;
    let hi = rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = rs[mid];
      if (addr < r.base) hi = mid - 1;
      else if (addr >= r.base + r.length) lo = mid + 1;
      else return r;
    }
    return undefined;
  }

  list(): readonly Range<H>[] {
    return this.ranges;
  }
}

function fmt(base: number, length: number): string {
  return `0x${base.toString(16)}-0x${(base + length - 1).toString(16)}`;
}
