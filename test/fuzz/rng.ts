// A small seeded PRNG (sfc32, seeded through splitmix32) with the value
// shapes a fuzzer wants. Every decision a fuzz target makes comes from one
// Rng, so a run is reproduced exactly by its target name and seed.

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(readonly seed: number) {
    let s = seed >>> 0;
    const next = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next(); this.b = next(); this.c = next(); this.d = next();
    for (let i = 0; i < 12; i++) this.u32();
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** Uniform in [0, n). */
  below(n: number): number {
    if (n <= 0x100000000) return Math.floor((this.u32() / 0x100000000) * n);
    return Math.floor(((this.u32() * 0x100000000 + this.u32()) / 2 ** 64) * n);
  }

  /** Uniform in [lo, hi]. */
  range(lo: number, hi: number): number { return lo + this.below(hi - lo + 1); }

  chance(p: number): boolean { return this.u32() / 0x100000000 < p; }

  pick<T>(items: readonly T[]): T { return items[this.below(items.length)]; }

  /** Picks an index by weight. */
  weighted(weights: readonly number[]): number {
    let total = 0;
    for (const w of weights) total += w;
    let r = this.below(total);
    for (let i = 0; i < weights.length; i++) {
      if (r < weights[i]) return i;
      r -= weights[i];
    }
    return weights.length - 1;
  }

  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.u32();
      for (let k = 0; k < 4 && i + k < n; k++) b[i + k] = (v >>> (8 * k)) & 0xff;
    }
    return b;
  }

  /** A value of `bits` (8, 16 or 32) bits, biased towards edge cases:
   * 0, all-ones, single bits, small numbers, sign boundaries. */
  value(bits = 32): number {
    const mask = bits === 32 ? 0xffffffff : (1 << bits) - 1;
    switch (this.below(8)) {
      case 0: return 0;
      case 1: return mask >>> 0;
      case 2: return (1 << this.below(bits)) >>> 0 & mask;
      case 3: return this.below(16);
      case 4: return ((1 << (bits - 1)) + this.range(-2, 1)) >>> 0 & mask;
      case 5: return (mask - this.below(16)) >>> 0;
      default: return this.u32() & mask;
    }
  }

  /** An access size as a CPU makes them. */
  size(): 1 | 2 | 4 { return this.pick([1, 2, 4] as const); }
}
