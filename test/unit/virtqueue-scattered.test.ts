// Split virtqueues behind an IOMMU whose ring areas are contiguous in IOVA
// space but scattered over guest-physical pages (as Linux's iommu-dma may
// back a coherent ring allocation), played from the driver's side: the
// driver writes descriptors and the avail ring through its own page table
// (IOVA page -> guest page), the device pops, reads and writes buffers,
// publishes used elements (one straddling two pages), and follows
// EVENT_IDX; the pages at the IOVAs' own addresses stay untouched, and an
// unmapped ring page stops the queue with nothing written.
import { describe, expect, it } from 'vitest';
import { DMA_READ, DMA_WRITE, TranslatedDmaSpace, type DmaMapping } from '../../src/devices/iommu/dma-space.js';
import { DescriptorChain, PagedRing, Virtqueue, VirtqueueError } from '../../src/devices/virtio/virtqueue.js';
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../src/devices/virtio/virtio-constants.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';

const RAM_SIZE = 2 << 20;
const SIZE = 512;
// IOVA layout: the descriptor table on two pages, the avail ring at the
// start of the third, the used ring from its middle into the fourth (its
// element 255 straddles the two).
const DESC = 0x100000;
const AVAIL = 0x102000;
const USED = 0x102800;
const BUF = 0x200000;
/** The guest pages behind the four ring pages and the two buffer pages, out of order. */
const RING_PAGES = [0x50000, 0x20000, 0x80000, 0x30000];
const BUF_PAGES = [0x90000, 0x40000];

function rig(opts: { eventIdx?: boolean } = {}) {
  const bytes = new Uint8Array(RAM_SIZE);
  const mem = new GuestMemory([{ gpa: 0, bytes }]);
  const dv = new DataView(bytes.buffer);
  const maps: DmaMapping[] = [];
  const space = new TranslatedDmaSpace(0x20, [{ gpa: 0, length: RAM_SIZE }]);
  const faults: string[] = [];
  space.faultSink = (f) => { faults.push(`${f.reason} 0x${f.faultAddress.toString(16)}`); };
  space.attach({ lookup: (iova) => maps.find((m) => iova >= m.iova && iova < m.iova + m.length), mappings: () => maps });
  const map = (iova: number, gpa: number, access = DMA_READ | DMA_WRITE) => {
    const m = { iova, gpa, length: 0x1000, access };
    maps.push(m);
    space.mapped(m);
  };
  RING_PAGES.forEach((g, i) => map(DESC + 0x1000 * i, g));
  BUF_PAGES.forEach((g, i) => map(BUF + 0x1000 * i, g));
  /** The driver's own view: the guest address of an IOVA. */
  const gpa = (iova: number): number => {
    const m = maps.find((x) => iova >= x.iova && iova < x.iova + x.length);
    if (!m) throw new Error(`driver: 0x${iova.toString(16)} not mapped`);
    return m.gpa + (iova - m.iova);
  };
  const w16 = (iova: number, v: number) => dv.setUint16(gpa(iova), v, true);
  const r16 = (iova: number) => dv.getUint16(gpa(iova), true);
  const r32 = (iova: number) => dv.getUint32(gpa(iova), true);
  const setDesc = (i: number, addr: number, len: number, flags: number, next = 0) => {
    const a = gpa(DESC + 16 * i);
    dv.setBigUint64(a, BigInt(addr), true);
    dv.setUint32(a + 8, len, true);
    dv.setUint16(a + 12, flags, true);
    dv.setUint16(a + 14, next, true);
  };
  let availIdx = 0;
  const offer = (head: number) => {
    w16(AVAIL + 4 + 2 * (availIdx % SIZE), head);
    availIdx = (availIdx + 1) & 0xffff;
    w16(AVAIL + 2, availIdx);
  };
  const q = new Virtqueue(mem, { size: SIZE, desc: DESC, avail: AVAIL, used: USED }, { dma: space, eventIdx: opts.eventIdx });
  const used = (k: number) => ({ id: r32(USED + 4 + 8 * (k % SIZE)), len: r32(USED + 8 + 8 * (k % SIZE)) });
  return { bytes, mem, maps, space, faults, map, gpa, w16, r16, setDesc, offer, q, used };
}

/** Bytes at the IOVAs' own guest addresses (identity would have used them). */
function identityUntouched(bytes: Uint8Array): boolean {
  return bytes.subarray(DESC, DESC + 0x4000).every((b) => b === 0) && bytes.subarray(BUF, BUF + 0x2000).every((b) => b === 0);
}

describe('virtqueue rings on scattered IOVA pages', () => {
  it('a ring area over several guest pieces is one view per IOMMU page', () => {
    const r = rig();
    const p = new PagedRing(r.mem, USED, 6 + 8 * SIZE, [{ gpa: 0x80800, length: 0x800 }, { gpa: 0x30000, length: 0x806 }]);
    expect(p.pages).toBe(2);
    p.set32(4 + 8 * 255, 0x11223344); // id of element 255: the last 4 bytes of page 0
    p.set32(8 + 8 * 255, 0x55667788); // its len: the first of page 1
    expect(r.mem.readU32(0x80ffc)).toBe(0x11223344);
    expect(r.mem.readU32(0x30000)).toBe(0x55667788);
    p.setWord(2, 0xbeef);
    expect(p.word(2)).toBe(0xbeef);
    expect(r.mem.readU16(0x80802)).toBe(0xbeef);
    // A piece ending inside a page is not a ring the device can use.
    expect(() => new PagedRing(r.mem, USED, 6 + 8 * SIZE, [{ gpa: 0x80800, length: 0x700 }, { gpa: 0x30000, length: 0x906 }])).toThrow(VirtqueueError);
  });

  it('pops chains from a scattered descriptor table and avail ring, publishes used elements across the page boundary', () => {
    const r = rig();
    // A 2-descriptor chain: readable header in buffer page 0, writable data in page 1.
    const chain = new DescriptorChain();
    for (let k = 0; k < 300; k++) {
      // Heads move through both descriptor pages (256 per page).
      const head = (k * 2) % SIZE;
      r.setDesc(head, BUF + (k % 64) * 16, 16, VIRTQ_DESC_F_NEXT, head + 1);
      r.setDesc(head + 1, BUF + 0x1000 + (k % 16) * 64, 64, VIRTQ_DESC_F_WRITE);
      r.bytes[BUF_PAGES[0] + (k % 64) * 16] = k & 0xff;
      r.offer(head);
      expect(r.q.pending()).toBe(1);
      expect(r.q.pop(chain)).toBe(chain);
      expect(chain.head).toBe(head);
      expect(chain.readableLength).toBe(16);
      expect(chain.writableLength).toBe(64);
      expect(chain.readable[0][0]).toBe(k & 0xff);
      chain.copyToWritable(0, Uint8Array.of(0xa0 | (k & 0xf)));
      r.q.pushUsed(head, 64 + k);
      expect(r.used(k)).toEqual({ id: head, len: 64 + k });
      expect(r.r16(USED + 2)).toBe(k + 1);
    }
    expect(r.bytes[BUF_PAGES[1] + (299 % 16) * 64]).toBe(0xa0 | (299 & 0xf));
    expect(r.faults).toEqual([]);
    expect(identityUntouched(r.bytes)).toBe(true);
  });

  it('EVENT_IDX: used_event read from and avail_event written to their scattered pages', () => {
    const r = rig({ eventIdx: true });
    r.setDesc(300, BUF, 16, VIRTQ_DESC_F_WRITE);
    const usedEventIova = AVAIL + 4 + 2 * SIZE;
    const availEventIova = USED + 4 + 8 * SIZE; // on the fourth page
    r.offer(300);
    r.q.pop();
    expect(r.r16(availEventIova)).toBe(1);
    r.q.pushUsed(300, 16);
    expect(r.q.needsInterrupt()).toBe(true); // the first is always signalled
    r.w16(usedEventIova, 5); // the driver wants one at entry 5
    r.offer(300); r.q.pop(); r.q.pushUsed(300, 16);
    expect(r.q.needsInterrupt()).toBe(false);
    for (let k = 0; k < 4; k++) { r.offer(300); r.q.pop(); r.q.pushUsed(300, 16); }
    expect(r.q.needsInterrupt()).toBe(true);
    expect(r.q.enableNotification()).toBe(false);
    expect(r.r16(availEventIova)).toBe(6);
    expect(identityUntouched(r.bytes)).toBe(true);
  });

  it('an unmapped ring page stops the queue at its next access, nothing written; remapped elsewhere, it goes on from there', () => {
    const r = rig();
    r.setDesc(0, BUF, 16, VIRTQ_DESC_F_WRITE);
    r.offer(0);
    r.q.pop();
    r.q.pushUsed(0, 16);
    // The fourth ring page (the used ring's tail) goes away.
    const gone = r.maps.findIndex((m) => m.iova === DESC + 0x3000);
    r.maps.splice(gone, 1);
    r.space.unmapped(DESC + 0x3000, 0x1000);
    r.offer(0);
    const before = r.bytes.slice(0x80000, 0x81000);
    expect(() => r.q.pop()).toThrow(/used ring.*not mapped/);
    expect(r.faults).toEqual([`unmapped 0x${(DESC + 0x3000).toString(16)}`]);
    expect(r.bytes.slice(0x80000, 0x81000)).toEqual(before);
    // Mapped again to another guest page: the rings are translated anew.
    r.map(DESC + 0x3000, 0x70000);
    const c = r.q.pop();
    expect(c?.head).toBe(0);
    r.q.pushUsed(0, 7);
    expect(r.used(1)).toEqual({ id: 0, len: 7 });
  });

  it('hostile: a descriptor table half in guest RAM is refused at set-up', () => {
    const r = rig();
    r.maps[1].gpa = RAM_SIZE; // the second descriptor page outside RAM
    expect(() => new Virtqueue(r.mem, { size: SIZE, desc: DESC, avail: AVAIL, used: USED }, { dma: r.space })).toThrow(/descriptor table.*not all in guest RAM/);
  });
});
