// GuestMemory's region lookup (sys/guest-memory.ts) remembers the region of
// the last access: accesses that alternate between regions, ranges that
// straddle two, and a setRegions() that removes the remembered region must
// all still resolve as without the memory.
import { describe, expect, it } from 'vitest';
import { GuestMemory, GuestMemoryError } from '../../src/sys/guest-memory.js';

describe('GuestMemory region lookup', () => {
  it('alternating regions, a range across two, and setRegions() resolve as the regions say', () => {
    const a = new Uint8Array(4096);
    const b = new Uint8Array(4096);
    const mem = new GuestMemory([{ gpa: 0x1000, bytes: a }, { gpa: 0x2000, bytes: b }]);
    mem.writeU32(0x1ffc, 0x11111111); // last word of a
    mem.writeU32(0x2000, 0x22222222); // first word of b
    expect(mem.readU32(0x1ffc)).toBe(0x11111111);
    expect(mem.readU32(0x2000)).toBe(0x22222222);
    expect(new DataView(a.buffer).getUint32(4092, true)).toBe(0x11111111);
    expect(new DataView(b.buffer).getUint32(0, true)).toBe(0x22222222);
    // Within one region after a hit in the other; across both is not one region.
    expect(mem.contains(0x1000, 4096)).toBe(true);
    expect(mem.contains(0x1ffc, 8)).toBe(false);
    expect(() => mem.readU32(0x1ffe)).toThrow(GuestMemoryError);
    const views: Uint8Array[] = [];
    expect(mem.slices(0x1ff0, 32, views)).toBe(2);
    // The remembered region goes with setRegions().
    expect(mem.readU32(0x2000)).toBe(0x22222222);
    mem.setRegions([{ gpa: 0x1000, bytes: a }]);
    expect(() => mem.readU32(0x2000)).toThrow(GuestMemoryError);
    expect(mem.contains(0x2000, 4)).toBe(false);
    expect(mem.readU32(0x1ffc)).toBe(0x11111111);
  });
});
