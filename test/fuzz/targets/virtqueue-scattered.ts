// Fuzz target for virtqueue rings on scattered IOVA pages
// (src/devices/virtio/virtqueue.ts, PagedRing): the same driver drives two
// queues at once, one on rings in contiguous guest memory (no IOMMU, the
// plain path) and one behind an IOMMU whose ring IOVAs map page by page to
// guest pages out of order (every other IOVA is guest physical); every
// write of the driver (well-formed chains, avail entries and idx, used_event,
// flags, garbage anywhere in the rings, at any in-page offset of the
// layout) goes to both; the device side pops, pushes used elements,
// decides interrupts and notifications on both; a ring page is sometimes
// moved to another guest page (its content copied, unmapped, mapped again).
//
// Oracle (differential): both queues give the same answers (pending
// counts, chain heads and lengths, readable bytes, interrupt decisions,
// whether they refuse), and after every operation the ring bytes are the
// same seen through either layout; nothing outside the rings changes.
import { DMA_READ, DMA_WRITE, TranslatedDmaSpace, type DmaMapping } from '../../../src/devices/iommu/dma-space.js';
import { DescriptorChain, Virtqueue, VirtqueueError } from '../../../src/devices/virtio/virtqueue.js';
import { GuestMemory } from '../../../src/sys/guest-memory.js';
import { InvariantError, type FuzzInstance, type FuzzTarget } from '../harness.js';
import type { Rng } from '../rng.js';

const RAM = 4 << 20;
const PLAIN = 0x100000; // the contiguous rings' first page
const POOL = 0x200000; // guest pages the scattered rings use
const POOL_PAGES = 64;
const IOVA = 0x40000000; // the scattered rings' first IOVA (not RAM)
const PAGE = 0x1000;
/** Buffers and indirect tables: away from both rings (a buffer over a ring
 * would see the two queues' ring writes in different orders), sometimes
 * running past the end of RAM. */
const BUFFERS = 0x280000;

class ScatteredRingFuzz implements FuzzInstance {
  private readonly bytes = new Uint8Array(RAM);
  private readonly mem = new GuestMemory([{ gpa: 0, bytes: this.bytes }]);
  private readonly dv = new DataView(this.bytes.buffer);
  private readonly maps: DmaMapping[] = [];
  private readonly space = new TranslatedDmaSpace(0x20, [{ gpa: 0, length: RAM }]);
  private readonly size: number;
  private readonly span: number;
  private readonly lead: number;
  private readonly off: { desc: number; avail: number; used: number };
  private readonly pages: number[] = [];
  private readonly eventIdx: boolean;
  private plain!: Virtqueue;
  private paged!: Virtqueue;
  private readonly chainA = new DescriptorChain();
  private readonly chainB = new DescriptorChain();
  private popped: number[] = [];
  private availIdx = 0;
  private outsideSum = 0;
  lastOp = '';
  private readonly counts = { pops: 0, chains: 0, refusals: 0, moves: 0, pushes: 0, interrupts: 0 };

  constructor(private readonly r: Rng) {
    this.size = r.pick([8, 64, 256, 512, 1024]);
    this.eventIdx = r.chance(0.5);
    // The layout at any legal offsets: desc 16-aligned, avail 2, used 4.
    this.lead = 16 * r.below(PAGE / 16);
    const desc = this.lead;
    const avail = desc + 16 * this.size + 2 * r.below(64);
    const used = ((avail + 6 + 2 * this.size + 3) & ~3) + 4 * r.below(64);
    this.off = { desc, avail, used };
    this.span = used + 6 + 8 * this.size;
    const npages = Math.ceil(this.span / PAGE);
    const free = Array.from({ length: POOL_PAGES }, (_, i) => POOL + i * PAGE);
    for (let i = 0; i < npages; i++) this.pages.push(free.splice(r.below(free.length), 1)[0]);
    // Everything else IOVA = guest physical.
    this.maps.push({ iova: 0, gpa: 0, length: RAM, access: DMA_READ | DMA_WRITE });
    this.pages.forEach((g, i) => this.maps.push({ iova: IOVA + i * PAGE, gpa: g, length: PAGE, access: DMA_READ | DMA_WRITE }));
    this.space.attach({ lookup: (iova) => this.maps.find((m) => iova >= m.iova && iova < m.iova + m.length), mappings: () => this.maps });
    // Random ring contents to start with, the same in both.
    this.write(0, r.bytes(this.span));
    for (let a = 0; a < RAM; a += 4096) if (!this.isRing(a)) this.bytes[a] = r.below(256);
    this.outsideSum = this.sumOutside();
    this.reset();
  }

  private isRing(gpa: number): boolean {
    return (gpa >= PLAIN && gpa < PLAIN + this.pages.length * PAGE) || this.pages.includes(gpa & ~(PAGE - 1));
  }

  private sumOutside(): number {
    let s = 0;
    for (let a = 0; a < RAM; a += 4096) if (!this.isRing(a)) s = (s * 31 + this.bytes[a]) >>> 0;
    return s;
  }

  /** The guest address of ring byte `o` in the scattered layout. */
  private scatteredAt(o: number): number {
    return this.pages[Math.floor(o / PAGE)] + (o % PAGE);
  }

  /** The driver writes ring bytes [o, o+data.length): in both layouts. */
  private write(o: number, data: Uint8Array): void {
    for (let i = 0; i < data.length && o + i < this.span; i++) {
      this.bytes[PLAIN + o + i] = data[i];
      this.bytes[this.scatteredAt(o + i)] = data[i];
    }
  }

  private w16(o: number, v: number): void { this.write(o, Uint8Array.of(v & 0xff, (v >>> 8) & 0xff)); }

  private reset(): void {
    const layout = (base: number) => ({ size: this.size, desc: base + this.off.desc, avail: base + this.off.avail, used: base + this.off.used });
    this.plain = new Virtqueue(this.mem, layout(PLAIN), { eventIdx: this.eventIdx, indirect: true });
    this.paged = new Virtqueue(this.mem, layout(IOVA), { eventIdx: this.eventIdx, indirect: true, dma: this.space });
    // Positions anywhere (as a restored queue has them): every used slot,
    // the one straddling two pages too, is reached.
    if (this.r.chance(0.8)) {
      const lastAvail = this.r.below(0x10000), nextUsed = this.r.below(0x10000);
      this.plain.setPositions(lastAvail, nextUsed);
      this.paged.setPositions(lastAvail, nextUsed);
    }
    this.popped = [];
    this.availIdx = this.plain.lastAvailIdx;
    this.w16(this.off.avail + 2, this.availIdx);
  }

  /** Runs `f` on both queues: the same result or the same refusal. */
  private both<T>(what: string, f: (q: Virtqueue, c: DescriptorChain) => T, same: (a: T, b: T) => boolean = (a, b) => a === b): T | undefined {
    let ra: T | undefined; let rb: T | undefined; let ea: unknown; let eb: unknown;
    try { ra = f(this.plain, this.chainA); } catch (e) { ea = e; }
    // Compare live views before the second queue can change anything.
    const snapA = ea === undefined && ra === this.chainA as unknown ? this.snapshot(this.chainA) : undefined;
    try { rb = f(this.paged, this.chainB); } catch (e) { eb = e; }
    for (const e of [ea, eb]) if (e !== undefined && !(e instanceof VirtqueueError)) throw e;
    if ((ea === undefined) !== (eb === undefined)) {
      throw new InvariantError(`${what}: contiguous ${ea ? `refused (${(ea as Error).message})` : 'accepted'}, scattered ${eb ? `refused (${(eb as Error).message})` : 'accepted'}`);
    }
    if (ea !== undefined) { this.counts.refusals++; return undefined; }
    if (snapA !== undefined) {
      const snapB = this.snapshot(this.chainB);
      if (snapA !== snapB) throw new InvariantError(`${what}: chains differ: ${snapA} vs ${snapB}`);
      return ra;
    }
    if (!same(ra as T, rb as T)) throw new InvariantError(`${what}: ${String(ra)} vs ${String(rb)}`);
    return ra;
  }

  private snapshot(c: DescriptorChain): string {
    let h = 0;
    for (const v of c.readable) for (let i = 0; i < v.length; i++) h = (h * 31 + v[i]) >>> 0;
    return `head ${c.head} r ${c.readableLength}/${c.readable.length ? 'x' : ''} w ${c.writableLength} sum ${h}`;
  }

  step(): void {
    const r = this.r;
    switch (r.weighted([30, 10, 6, 25, 15, 6, 4, 2, 1])) {
      case 0: { // a well-formed chain of 1-4 descriptors, made available
        this.lastOp = 'chain';
        const n = r.range(1, 4);
        const head = r.below(this.size);
        let i = head;
        for (let k = 0; k < n; k++) {
          const next = k + 1 < n ? r.below(this.size) : 0;
          const d = new Uint8Array(16);
          const dv = new DataView(d.buffer);
          dv.setBigUint64(0, BigInt(BUFFERS + (r.chance(0.9) ? r.below(RAM - BUFFERS - 0x10000) : r.below(RAM - BUFFERS + 0x10000))), true);
          dv.setUint32(8, r.chance(0.9) ? r.range(1, 0x4000) : r.value(), true);
          dv.setUint16(12, (k + 1 < n ? 1 : 0) | (r.chance(0.4) ? 2 : 0) | (r.chance(0.03) ? 4 : 0), true);
          dv.setUint16(14, next, true);
          this.write(this.off.desc + 16 * i, d);
          i = next;
        }
        this.w16(this.off.avail + 4 + 2 * (this.availIdx % this.size), head);
        this.availIdx = (this.availIdx + 1) & 0xffff;
        this.w16(this.off.avail + 2, this.availIdx);
        this.counts.chains++;
        break;
      }
      case 1: { // garbage anywhere in the rings
        this.lastOp = 'scribble';
        this.write(r.below(this.span), r.bytes(r.range(1, 16)));
        break;
      }
      case 2: { // flags / used_event / avail idx at edge values
        this.lastOp = 'ring word';
        const o = r.pick([this.off.avail, this.off.avail + 2, this.off.avail + 4 + 2 * this.size]);
        const v = r.value(16);
        this.w16(o, v);
        if (o === this.off.avail + 2) this.availIdx = v;
        break;
      }
      case 3: { // the device pops
        this.lastOp = 'pop';
        const c = this.both('pop', (q, ch) => q.pop(ch));
        if (c) { this.popped.push(this.chainA.head); this.counts.pops++; }
        break;
      }
      case 4: { // a used element
        this.lastOp = 'pushUsed';
        const head = this.popped.length && r.chance(0.9) ? this.popped.shift()! : r.below(this.size);
        const len = r.value();
        this.both('pushUsed', (q) => { q.pushUsed(head, len); return 0; });
        this.counts.pushes++;
        break;
      }
      case 5: {
        this.lastOp = 'needsInterrupt';
        if (this.both('needsInterrupt', (q) => q.needsInterrupt())) this.counts.interrupts++;
        break;
      }
      case 6: {
        this.lastOp = 'notification';
        if (r.chance(0.5)) this.both('enableNotification', (q) => q.enableNotification());
        else this.both('disableNotification', (q) => { q.disableNotification(); return 0; });
        this.both('pending', (q) => q.pending());
        break;
      }
      case 7: { // the driver's ring page moves to another guest page
        this.lastOp = 'move page';
        const k = r.below(this.pages.length);
        const taken = new Set(this.pages);
        let to = POOL + r.below(POOL_PAGES) * PAGE;
        while (taken.has(to)) to = POOL + r.below(POOL_PAGES) * PAGE;
        this.bytes.copyWithin(to, this.pages[k], this.pages[k] + PAGE);
        this.bytes.fill(0, this.pages[k], this.pages[k] + PAGE);
        const m = this.maps.find((x) => x.iova === IOVA + k * PAGE)!;
        this.space.unmapped(m.iova, PAGE);
        m.gpa = to;
        this.pages[k] = to;
        this.space.mapped(m);
        this.counts.moves++;
        break;
      }
      default: { // a device reset
        this.lastOp = 'reset';
        this.reset();
      }
    }
  }

  check(): void {
    for (let o = 0; o < this.span; o++) {
      if (this.bytes[PLAIN + o] !== this.bytes[this.scatteredAt(o)]) {
        throw new InvariantError(`after ${this.lastOp}: ring byte ${o} is ${this.bytes[PLAIN + o]} in contiguous memory, ${this.bytes[this.scatteredAt(o)]} on the scattered pages`);
      }
    }
    if (this.lastOp === 'move page') this.outsideSum = this.sumOutside();
    else if (this.sumOutside() !== this.outsideSum) throw new InvariantError(`after ${this.lastOp}: memory outside the rings changed`);
  }

  stats(): Record<string, number> { return { ...this.counts }; }
}

export const VIRTQUEUE_SCATTERED_TARGET: FuzzTarget = {
  name: 'virtqueue-scattered',
  surface: 'virtqueue rings on scattered IOVA pages (PagedRing) against the same rings in contiguous memory',
  create: (r) => new ScatteredRingFuzz(r),
  instanceOps: 5000,
};
