// Guest RAM views made on first use (sys/guest-memory.ts, sys/guest-ram.ts):
// a GuestMemory given a region's size reads the region's view only when an
// access first reaches into it, and writeRamFile puts bytes where a view of
// the memory file would, so vCPU 0's thread writes the firmware tables
// without a view of RAM (a 256 MiB view made V8 collect its whole heap in
// the middle of start-up: BENCHMARKS.md, "Launch").
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

import { GuestMemory, GuestMemoryError } from '../../src/sys/guest-memory.js';
import { mapGuestRam, ramRegions, writeRamFile } from '../../src/sys/guest-ram.js';
import { HIGHMEM_BASE } from '../../src/sys/memory-map.js';

const MiB = 1024 * 1024;

describe('guest RAM views on first use', () => {
  it('reads a sized region\'s view on its first access, once, and only that region\'s', () => {
    const reads = [0, 0];
    const backing = [new Uint8Array(4096), new Uint8Array(8192)];
    const mem = new GuestMemory([
      { gpa: 0, length: 4096, get bytes() { reads[0]++; return backing[0]; } },
      { gpa: 0x10000, length: 8192, get bytes() { reads[1]++; return backing[1]; } },
    ]);
    expect(mem.size).toBe(4096 + 8192);
    expect(mem.ranges()).toEqual([{ gpa: 0, length: 4096 }, { gpa: 0x10000, length: 8192 }]);
    expect(() => mem.readU32(0x2000)).toThrow(GuestMemoryError);
    expect(reads).toEqual([0, 0]);
    mem.writeU32(0x10004, 0xdeadbeef);
    expect(reads).toEqual([0, 1]);
    expect(mem.readU32(0x10004)).toBe(0xdeadbeef);
    expect(backing[1][4]).toBe(0xef);
    expect(reads).toEqual([0, 1]);
    expect(mem.contains(0x10, 4)).toBe(true);
    expect(reads).toEqual([1, 1]);
  });

  it('refuses a view whose size is not the region\'s', () => {
    const mem = new GuestMemory([{ gpa: 0, length: 8192, bytes: new Uint8Array(4096) }]);
    expect(() => mem.readU8(0)).toThrow(RangeError);
  });

  it('a region without a size is viewed at once, as before', () => {
    let reads = 0;
    const b = new Uint8Array(16);
    const mem = new GuestMemory([{ gpa: 0, get bytes() { reads++; return b; } }]);
    expect(reads).toBe(1);
    mem.writeU8(3, 7);
    expect(b[3]).toBe(7);
    expect(reads).toBe(1);
  });

  describe('the memory file', () => {
    let dir: string | undefined;
    afterEach(() => { if (dir) fs.rmSync(dir, { recursive: true, force: true }); dir = undefined; });

    it('writeRamFile writes where the mapped RAM shows it, below and above 4 GiB; ramRegions maps nothing into view until used', () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'guest-ram-'));
      const file = path.join(dir, 'memory');
      const layout = { lowmem: 2 * MiB, highmem: 1 * MiB };
      fs.writeFileSync(file, '');
      fs.truncateSync(file, layout.lowmem + layout.highmem);
      const fd = fs.openSync(file, 'r+');
      try {
        const chunks = mapGuestRam(fd, layout);
        const mem = new GuestMemory(ramRegions(chunks));
        writeRamFile(fd, layout, 0xf0000, Uint8Array.of(1, 2, 3, 4));
        writeRamFile(fd, layout, HIGHMEM_BASE + 0x1000, Uint8Array.of(9, 8));
        expect(Array.from(mem.read(0xf0000, 4))).toEqual([1, 2, 3, 4]);
        expect(Array.from(mem.read(HIGHMEM_BASE + 0x1000, 2))).toEqual([9, 8]);
        const raw = fs.readFileSync(file);
        expect(Array.from(raw.subarray(layout.lowmem + 0x1000, layout.lowmem + 0x1002))).toEqual([9, 8]);
        // Outside RAM, or across its end: the guest-memory error, nothing written.
        expect(() => writeRamFile(fd, layout, layout.lowmem - 2, Uint8Array.of(1, 2, 3, 4))).toThrow(GuestMemoryError);
        expect(() => writeRamFile(fd, layout, layout.lowmem, Uint8Array.of(1))).toThrow(GuestMemoryError);
        expect(() => writeRamFile(fd, layout, HIGHMEM_BASE + layout.highmem - 1, Uint8Array.of(1, 2))).toThrow(GuestMemoryError);
        for (const c of chunks) c.map.unmap();
      } finally {
        fs.closeSync(fd);
      }
    });
  });
});
