import { describe, expect, it } from 'vitest';
import { DescriptorChain, Virtqueue, VirtqueueError } from '../../src/devices/virtio/virtqueue.js';
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_USED_F_NO_NOTIFY,
} from '../../src/devices/virtio/virtio-constants.js';
import { FakeDriver, RAM_BASE } from './virtio-driver.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';

function queue(d: FakeDriver, opts: { eventIdx?: boolean; indirect?: boolean } = {}): Virtqueue {
  return new Virtqueue(d.mem, d.layout, { indirect: true, ...opts });
}

function expectQueueError(fn: () => unknown, pattern: RegExp): void {
  let err: unknown;
  try { fn(); } catch (e) { err = e; }
  expect(err).toBeInstanceOf(VirtqueueError);
  expect((err as Error).message).toMatch(pattern);
}

describe('Virtqueue layout validation', () => {
  it('accepts power-of-two sizes up to 32768 and rejects the rest', () => {
    const d = new FakeDriver(16);
    for (const size of [0, 3, 12, 65536, 40000, -4, 1.5]) {
      expectQueueError(() => new Virtqueue(d.mem, { ...d.layout, size }), /not a power of two/);
    }
    expect(new Virtqueue(d.mem, { ...d.layout, size: 1 }).size).toBe(1);
    const big = new FakeDriver(32768, 1 << 20);
    expect(new Virtqueue(big.mem, big.layout).size).toBe(32768);
  });

  it('rejects rings outside guest RAM or misaligned', () => {
    const d = new FakeDriver(16);
    expectQueueError(() => new Virtqueue(d.mem, { ...d.layout, desc: 0 }), /descriptor table .* not in guest RAM/);
    expectQueueError(() => new Virtqueue(d.mem, { ...d.layout, used: d.ramEnd - 8 }), /used ring .* not in guest RAM/);
    expectQueueError(() => new Virtqueue(d.mem, { ...d.layout, avail: 2 ** 60 }), /available ring/);
    expectQueueError(() => new Virtqueue(d.mem, { ...d.layout, desc: d.layout.desc + 8 }), /misaligned/);
    expectQueueError(() => new Virtqueue(d.mem, { ...d.layout, used: d.layout.used + 2 }), /misaligned/);
  });
});

describe('Virtqueue data path', () => {
  it('takes a buffer that runs across two RAM regions (chunk boundary) as two views; a hole is still an error', () => {
    const d = new FakeDriver(8);
    const w = d.alloc(0x3000, 0x1000);
    const cut = d.off(w) + 0x1800; // a RAM chunk boundary inside the buffer
    const split = new GuestMemory([
      { gpa: RAM_BASE, bytes: d.bytes.subarray(0, cut) },
      { gpa: RAM_BASE + cut, bytes: d.bytes.subarray(cut) },
    ]);
    d.offer(d.chain([{ addr: w, len: 0x3000, write: true }]));
    const q = new Virtqueue(split, d.layout, { indirect: true });
    const chain = q.pop()!;
    expect(chain.writable.map((v) => v.length)).toEqual([0x1800, 0x1800]);
    expect(chain.writableLength).toBe(0x3000);
    const data = Uint8Array.from({ length: 0x3000 }, (_, i) => (i * 13) & 0xff);
    expect(chain.copyToWritable(0, data)).toBe(0x3000);
    expect(Array.from(d.read(w, 0x3000))).toEqual(Array.from(data));

    // The same buffer with a hole where the second region was: not RAM.
    const holed = new GuestMemory([
      { gpa: RAM_BASE, bytes: d.bytes.subarray(0, cut) },
      { gpa: RAM_BASE + cut + 0x1000, bytes: d.bytes.subarray(cut + 0x1000) },
    ]);
    const q2 = new Virtqueue(holed, d.layout, { indirect: true });
    expectQueueError(() => q2.pop(), /descriptor \d+ buffer 0x[0-9a-f]+\+0x3000 is not in guest RAM/);
  });


  it('pops a chain as readable then writable views, and copies across segments', () => {
    const d = new FakeDriver(8);
    const a = d.alloc(5); const b = d.alloc(7); const c = d.alloc(3); const w = d.alloc(6);
    d.fill(a, Uint8Array.of(1, 2, 3, 4, 5));
    d.fill(b, Uint8Array.of(6, 7, 8, 9, 10, 11, 12));
    d.fill(c, Uint8Array.of(13, 14, 15));
    const head = d.chain([{ addr: a, len: 5 }, { addr: b, len: 7 }, { addr: c, len: 3 }, { addr: w, len: 6, write: true }]);
    d.offer(head);
    const q = queue(d);
    expect(q.pending()).toBe(1);
    const chain = q.pop()!;
    expect(chain.head).toBe(head);
    expect(chain.readable.length).toBe(3);
    expect(chain.readableLength).toBe(15);
    expect(chain.writableLength).toBe(6);
    const out = new Uint8Array(9);
    expect(chain.copyFromReadable(3, out)).toBe(9);
    expect([...out]).toEqual([4, 5, 6, 7, 8, 9, 10, 11, 12]);
    const tail = new Uint8Array(10);
    expect(chain.copyFromReadable(10, tail)).toBe(5);
    expect(chain.copyToWritable(2, Uint8Array.of(0xaa, 0xbb, 0xcc, 0xdd, 0xee))).toBe(4);
    expect([...d.read(w, 6)]).toEqual([0, 0, 0xaa, 0xbb, 0xcc, 0xdd]);
    const views = chain.readableViews(4, 6);
    expect(views.map((v) => v.length)).toEqual([1, 5]);
    expect([...views[1]]).toEqual([6, 7, 8, 9, 10]);
    expect(q.pop()).toBeNull();
  });

  it('views are live: writes through a writable view reach guest RAM', () => {
    const d = new FakeDriver(4);
    const w = d.alloc(4);
    d.offer(d.chain([{ addr: w, len: 4, write: true }]));
    const chain = queue(d).pop()!;
    chain.writable[0][2] = 0x5a;
    expect(d.read(w, 4)[2]).toBe(0x5a);
  });

  it('pushes used elements, publishes used idx and raises an interrupt unless NO_INTERRUPT', () => {
    const d = new FakeDriver(4);
    const q = queue(d);
    const buf = d.alloc(64);
    for (let i = 0; i < 3; i++) d.offer(d.chain([{ addr: buf, len: 64, write: true }]));
    const chain = new DescriptorChain();
    const heads: number[] = [];
    while (q.pop(chain)) { heads.push(chain.head); q.pushUsed(chain.head, 10 + chain.head); }
    expect(d.usedIdx()).toBe(3);
    expect([0, 1, 2].map((n) => d.usedElem(n))).toEqual(heads.map((h) => ({ id: h, len: 10 + h })));
    expect(q.needsInterrupt()).toBe(true);
    expect(q.needsInterrupt()).toBe(false); // nothing new since
    d.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
    d.offer(d.chain([{ addr: buf, len: 64, write: true }]));
    q.pushUsed(q.pop(chain)!.head, 0);
    expect(q.needsInterrupt()).toBe(false);
  });

  it('handles avail and used idx wrap-around at 65536', () => {
    const d = new FakeDriver(8);
    const q = queue(d);
    q.setPositions(0xfffe, 0xfffe);
    d.availIdx = 0xfffe;
    const buf = d.alloc(16);
    for (let i = 0; i < 4; i++) d.offer(d.chain([{ addr: buf, len: 16, write: true }]));
    expect(d.availIdx).toBe(2);
    expect(q.pending()).toBe(4);
    let n = 0;
    while (q.pop()) { q.pushUsed(n, 1); n++; }
    expect(n).toBe(4);
    expect(q.lastAvailIdx).toBe(2);
    expect(d.usedIdx()).toBe(2);
    expect(d.usedElem(0xffff).id).toBe(1);
  });

  it('reads the avail ring slot modulo the queue size', () => {
    const d = new FakeDriver(4);
    const q = queue(d);
    const buf = d.alloc(16);
    for (let round = 0; round < 10; round++) {
      d.offer(d.chain([{ addr: buf, len: 16 }]));
      const c = q.pop()!;
      q.pushUsed(c.head, 0);
    }
    expect(q.lastAvailIdx).toBe(10);
    expect(d.usedIdx()).toBe(10);
  });

  it('follows an indirect table, also after direct descriptors', () => {
    const d = new FakeDriver(8);
    const r = d.alloc(16); const w = d.alloc(32); const s = d.alloc(1);
    d.offer(d.indirectChain([{ addr: r, len: 16 }, { addr: w, len: 32, write: true }, { addr: s, len: 1, write: true }]));
    const q = queue(d);
    const c = q.pop()!;
    expect(c.readableLength).toBe(16);
    expect(c.writableLength).toBe(33);
    expect(c.writable.length).toBe(2);

    // direct descriptor -> indirect table
    const table = d.alloc(32);
    d.setDesc(0, w, 32, VIRTQ_DESC_F_WRITE, 0, table);
    d.setDesc(5, r, 16, VIRTQ_DESC_F_NEXT, 6);
    d.setDesc(6, table, 16, VIRTQ_DESC_F_INDIRECT, 0);
    d.offer(5);
    const c2 = q.pop()!;
    expect(c2.readableLength).toBe(16);
    expect(c2.writableLength).toBe(32);
  });
});

describe('notification suppression', () => {
  it('with EVENT_IDX interrupts only when used idx crosses used_event (vring_need_event)', () => {
    const d = new FakeDriver(16);
    const q = queue(d, { eventIdx: true });
    const buf = d.alloc(16);
    const complete = (k: number) => {
      for (let i = 0; i < k; i++) d.offer(d.chain([{ addr: buf, len: 16, write: true }]));
      let c; while ((c = q.pop())) q.pushUsed(c.head, 0);
    };
    complete(1);
    expect(q.needsInterrupt()).toBe(true); // first signal always goes out
    d.setUsedEvent(5); // driver: "interrupt me when entry 5 is used" (idx becomes 6)
    complete(2); // used idx 3
    expect(q.needsInterrupt()).toBe(false);
    complete(2); // used idx 5
    expect(q.needsInterrupt()).toBe(false);
    complete(1); // used idx 6: crossed
    expect(q.needsInterrupt()).toBe(true);
    complete(3); // used idx 9, used_event still 5: already signalled past it
    expect(q.needsInterrupt()).toBe(false);
    d.setUsedEvent(8); // the driver moves used_event behind what is already used
    complete(0);
    expect(q.needsInterrupt()).toBe(false); // nothing new since last decision
    complete(1);
    expect(q.needsInterrupt()).toBe(false); // 10: event 8 was at idx 9, decision at 9 skipped it
    // NO_INTERRUPT is ignored under EVENT_IDX
    d.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
    d.setUsedEvent(10);
    complete(1);
    expect(q.needsInterrupt()).toBe(true);
  });

  it('with EVENT_IDX publishes avail_event as it consumes, and enableNotification re-checks', () => {
    const d = new FakeDriver(8);
    const q = queue(d, { eventIdx: true });
    const buf = d.alloc(16);
    d.offer(d.chain([{ addr: buf, len: 16 }]));
    d.offer(d.chain([{ addr: buf, len: 16 }]));
    q.pop();
    expect(d.availEvent()).toBe(1);
    q.pop();
    expect(d.availEvent()).toBe(2);
    expect(q.enableNotification()).toBe(false);
    d.offer(d.chain([{ addr: buf, len: 16 }]));
    expect(q.enableNotification()).toBe(true);
  });

  it('with EVENT_IDX, disableNotification(true) holds avail_event (a polling device) until enableNotification', () => {
    const d = new FakeDriver(8);
    const q = queue(d, { eventIdx: true });
    const buf = d.alloc(16);
    d.offer(d.chain([{ addr: buf, len: 16 }]));
    q.pop();
    expect(d.availEvent()).toBe(1);
    q.disableNotification(true);
    for (let i = 0; i < 3; i++) d.offer(d.chain([{ addr: buf, len: 16 }]));
    q.pop();
    q.pop();
    expect(d.availEvent()).toBe(1); // the driver that moved past 1 notified once, and no more
    expect(d.usedFlags() & VIRTQ_USED_F_NO_NOTIFY).toBe(0); // the flag is for drivers without EVENT_IDX
    expect(q.enableNotification()).toBe(true); // one still available
    expect(d.availEvent()).toBe(3);
    q.pop();
    expect(d.availEvent()).toBe(4);
    // Without the argument (virtio-net's use) avail_event keeps moving.
    q.disableNotification();
    d.offer(d.chain([{ addr: buf, len: 16 }]));
    q.pop();
    expect(d.availEvent()).toBe(5);
  });

  it('without EVENT_IDX toggles VIRTQ_USED_F_NO_NOTIFY', () => {
    const d = new FakeDriver(8);
    const q = queue(d);
    q.disableNotification();
    expect(d.usedFlags() & VIRTQ_USED_F_NO_NOTIFY).toBe(VIRTQ_USED_F_NO_NOTIFY);
    expect(q.enableNotification()).toBe(false);
    expect(d.usedFlags() & VIRTQ_USED_F_NO_NOTIFY).toBe(0);
  });
});

describe('hostile chains end in VirtqueueError, bounded', () => {
  const buf = (d: FakeDriver) => d.alloc(64);

  it('direct loops: self, two-cycle, and a long cycle', () => {
    const d = new FakeDriver(16);
    const q = queue(d);
    const b = buf(d);
    d.setDesc(3, b, 8, VIRTQ_DESC_F_NEXT, 3);
    d.offer(3);
    expectQueueError(() => q.pop(), /loops/);

    const d2 = new FakeDriver(16);
    const q2 = queue(d2);
    d2.setDesc(0, b, 8, VIRTQ_DESC_F_NEXT, 1);
    d2.setDesc(1, b, 8, VIRTQ_DESC_F_NEXT, 0);
    d2.offer(0);
    expectQueueError(() => q2.pop(), /loops/);

    const d3 = new FakeDriver(16);
    const q3 = queue(d3);
    for (let i = 0; i < 16; i++) d3.setDesc(i, b, 8, VIRTQ_DESC_F_NEXT, (i + 1) % 16);
    d3.offer(0);
    expectQueueError(() => q3.pop(), /loops/);
  });

  it('a chain exactly as long as the queue is fine', () => {
    const d = new FakeDriver(16);
    const b = buf(d);
    for (let i = 0; i < 16; i++) d.setDesc(i, b, 8, i < 15 ? VIRTQ_DESC_F_NEXT : 0, i + 1);
    d.offer(0);
    expect(queue(d).pop()!.readable.length).toBe(16);
  });

  it('indirect loops, nesting, NEXT with INDIRECT, bad table lengths, not negotiated', () => {
    const cases: Array<[string, (d: FakeDriver) => void, RegExp, boolean?]> = [
      ['indirect loop', (d) => {
        const t = d.alloc(64); const b = buf(d);
        for (let i = 0; i < 4; i++) d.setDesc(i, b, 8, VIRTQ_DESC_F_NEXT, (i + 1) % 4, t);
        d.setDesc(0, t, 64, VIRTQ_DESC_F_INDIRECT, 0); d.offer(0);
      }, /loops/],
      ['nested', (d) => {
        const t = d.alloc(32); const t2 = d.alloc(16); const b = buf(d);
        d.setDesc(0, b, 8, 0, 0, t2);
        d.setDesc(0, t2, 16, VIRTQ_DESC_F_INDIRECT, 0, t);
        d.setDesc(0, t, 16, VIRTQ_DESC_F_INDIRECT, 0); d.offer(0);
      }, /nested/],
      ['indirect+next', (d) => {
        const t = d.alloc(16); d.setDesc(0, buf(d), 8, 0, 0, t);
        d.setDesc(0, t, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1); d.offer(0);
      }, /also has NEXT/],
      ['length not multiple of 16', (d) => {
        const t = d.alloc(32); d.setDesc(0, t, 24, VIRTQ_DESC_F_INDIRECT, 0); d.offer(0);
      }, /multiple of 16/],
      ['zero-length table', (d) => {
        d.setDesc(0, d.alloc(16), 0, VIRTQ_DESC_F_INDIRECT, 0); d.offer(0);
      }, /multiple of 16/],
      ['table outside RAM', (d) => {
        d.setDesc(0, 0x4000_0000, 64, VIRTQ_DESC_F_INDIRECT, 0); d.offer(0);
      }, /not in guest RAM/],
      ['next outside the indirect table', (d) => {
        const t = d.alloc(32); const b = buf(d);
        d.setDesc(0, b, 8, VIRTQ_DESC_F_NEXT, 2, t);
        d.setDesc(0, t, 32, VIRTQ_DESC_F_INDIRECT, 0); d.offer(0);
      }, /outside its table of 2/],
      ['not negotiated', (d) => {
        const t = d.alloc(16); d.setDesc(0, buf(d), 8, 0, 0, t);
        d.setDesc(0, t, 16, VIRTQ_DESC_F_INDIRECT, 0); d.offer(0);
      }, /not negotiated/, false],
    ];
    for (const [, build, pattern, indirect] of cases) {
      const d = new FakeDriver(8);
      build(d);
      expectQueueError(() => queue(d, { indirect: indirect ?? true }).pop(), pattern);
    }
  });

  it('addresses and lengths outside guest RAM, zero length, huge addresses', () => {
    const cases: Array<[number | bigint, number, RegExp]> = [
      [0, 16, /not in guest RAM/], // below RAM
      [RAM_BASE + (1 << 20), 1, /not in guest RAM/], // just past the end
      [RAM_BASE + (1 << 20) - 8, 16, /not in guest RAM/], // runs past the end
      [RAM_BASE, 0xffffffff, /not in guest RAM/], // 4 GiB length
      [0xffff_ffff_ffff_f000n, 0x2000, /not in guest RAM/], // wraps 2^64
      [2n ** 53n, 16, /not in guest RAM/],
      [RAM_BASE + 0x8000, 0, /zero-length/],
    ];
    for (const [addr, len, pattern] of cases) {
      const d = new FakeDriver(8);
      d.setDesc(0, addr, len, 0, 0);
      d.offer(0);
      expectQueueError(() => queue(d).pop(), pattern);
    }
  });

  it('NEXT beyond the queue, head beyond the queue, avail idx running ahead', () => {
    const d = new FakeDriver(8);
    d.setDesc(0, d.alloc(16), 16, VIRTQ_DESC_F_NEXT, 8);
    d.offer(0);
    expectQueueError(() => queue(d).pop(), /NEXT 8 is outside/);

    const d2 = new FakeDriver(8);
    d2.offer(9);
    expectQueueError(() => queue(d2).pop(), /names descriptor 9/);

    const d3 = new FakeDriver(8);
    d3.setAvailIdx(9);
    expectQueueError(() => queue(d3).pop(), /9 entries ahead/);
    const d4 = new FakeDriver(8);
    d4.setAvailIdx(0xffff);
    expectQueueError(() => queue(d4).pending(), /ahead/);
  });

  it('readable after writable, and chains totalling 4 GiB or more', () => {
    const d = new FakeDriver(8);
    const b = d.alloc(64);
    d.offer(d.chain([{ addr: b, len: 8, write: true }, { addr: b, len: 8 }]));
    expectQueueError(() => queue(d).pop(), /device-readable descriptor .* after a device-writable/);

    // 4096 indirect entries of 1 MiB each (all the same RAM) = 4 GiB.
    const big = new FakeDriver(8, 2 << 20);
    const t = big.alloc(16 * 4096);
    const region = RAM_BASE + (1 << 20);
    for (let i = 0; i < 4096; i++) big.setDesc(i, region, 1 << 20, i < 4095 ? VIRTQ_DESC_F_NEXT : 0, i + 1, t);
    big.setDesc(0, t, 16 * 4096, VIRTQ_DESC_F_INDIRECT, 0);
    big.offer(0);
    expectQueueError(() => queue(big).pop(), /longer than 4 GiB/);
  });
});
