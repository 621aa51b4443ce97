import { describe, expect, it } from 'vitest';
import { drainCoalescedRing } from '../../src/vmm/coalesced-mmio.js';
import { COALESCED_RING, COALESCED_RING_MAX } from '../../src/sys/kvm-abi.js';

const AT = 2 * 4096;

function ring() {
  const run = new DataView(new ArrayBuffer(3 * 4096));
  const writes: Array<[number, number[]]> = [];
  const bus = { mmioWrite: (addr: number, data: Uint8Array) => { writes.push([addr, [...data]]); return true; } };
  let last = 0;
  const push = (addr: number, bytes: number[], len = bytes.length): void => {
    const e = AT + COALESCED_RING.entries + last * COALESCED_RING.entrySize;
    run.setBigUint64(e, BigInt(addr), true);
    run.setUint32(e + COALESCED_RING.len, len, true);
    bytes.forEach((b, i) => run.setUint8(e + COALESCED_RING.data + i, b));
    last = (last + 1) % COALESCED_RING_MAX;
    run.setUint32(AT + COALESCED_RING.last, last, true);
  };
  const setFirst = (f: number): void => { run.setUint32(AT + COALESCED_RING.first, f, true); last = f; run.setUint32(AT + COALESCED_RING.last, f, true); };
  return { run, writes, bus, push, setFirst };
}

describe('coalesced MMIO ring', () => {
  it('applies the queued writes in order and moves first up to last', () => {
    const r = ring();
    r.push(0xb8000, [0x41, 0x1f]);
    r.push(0xb8002, [0x42]);
    expect(drainCoalescedRing(r.run, AT, r.bus)).toBe(2);
    expect(r.writes).toEqual([[0xb8000, [0x41, 0x1f]], [0xb8002, [0x42]]]);
    expect(r.run.getUint32(AT + COALESCED_RING.first, true)).toBe(2);
    expect(drainCoalescedRing(r.run, AT, r.bus)).toBe(0);
  });

  it('wraps at the end of the page', () => {
    const r = ring();
    r.setFirst(COALESCED_RING_MAX - 1);
    r.push(0xa0000, [1]);
    r.push(0xa0001, [2]);
    expect(drainCoalescedRing(r.run, AT, r.bus)).toBe(2);
    expect(r.writes.map((w) => w[0])).toEqual([0xa0000, 0xa0001]);
    expect(r.run.getUint32(AT + COALESCED_RING.first, true)).toBe(1);
  });

  it('a ring KVM would not write is never read out of bounds', () => {
    const r = ring();
    r.push(0xa0000, [1, 2, 3], 9); // bad length: skipped
    r.push(0xa0000, [5], 0);
    expect(drainCoalescedRing(r.run, AT, r.bus)).toBe(2);
    expect(r.writes).toEqual([]);
    r.run.setUint32(AT + COALESCED_RING.first, 0xffffffff, true); // index past the page
    expect(drainCoalescedRing(r.run, AT, r.bus)).toBe(0);
    expect(drainCoalescedRing(r.run, 3 * 4096, r.bus)).toBe(0); // no ring page there
  });
});
