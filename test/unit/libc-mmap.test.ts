// mmap() makes its JavaScript view on first use: an ArrayBuffer over
// external memory counts against V8's external-memory limit, and guest RAM
// crossing it costs the thread a full garbage collection. The main thread
// maps RAM only for KVM's memory slots (the address), so it must not pay.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { mmap, mmapAreas, PROT_READ, PROT_WRITE } from '../../src/sys/libc.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bhyve-mmap-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const SIZE = 64 * 1024 * 1024;

describe('mmap', () => {
  it('has an address at once and a view of the file only once .bytes is read', () => {
    const file = path.join(dir, 'ram');
    fs.writeFileSync(file, '');
    fs.truncateSync(file, SIZE);
    const fd = fs.openSync(file, 'r+');
    try {
      const before = process.memoryUsage().external;
      const m = mmap(SIZE, PROT_READ | PROT_WRITE, fd, 0, 'test');
      expect(m.address).toBeGreaterThan(0n);
      expect(m.length).toBe(SIZE);
      expect(process.memoryUsage().external - before).toBeLessThan(SIZE / 2);
      m.bytes[SIZE - 1] = 0x5a;
      expect(process.memoryUsage().external - before).toBeGreaterThanOrEqual(SIZE);
      expect(m.bytes).toBe(m.bytes); // one view
      m.unmap();
      const back = Buffer.alloc(1);
      fs.readSync(fd, back, 0, 1, SIZE - 1);
      expect(back[0]).toBe(0x5a); // the view is the file's shared mapping
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('mmapAreas', () => {
  /** The protection of the page at `address` in /proc/self/maps ('rw-s', '---p'), or undefined. */
  function protAt(address: bigint): string | undefined {
    for (const line of fs.readFileSync('/proc/self/maps', 'utf8').split('\n')) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+)/.exec(line);
      if (m && BigInt(`0x${m[1]}`) <= address && address < BigInt(`0x${m[2]}`)) return m[3];
    }
    return undefined;
  }

  it('maps the given areas of the file at their distances in one stretch, the hole between inaccessible', () => {
    const file = path.join(dir, 'bar');
    fs.writeFileSync(file, Buffer.alloc(4 * 4096, 0x11));
    const fd = fs.openSync(file, 'r+');
    try {
      const m = mmapAreas(4 * 4096, fd, 0, [{ offset: 0, size: 2 * 4096 }, { offset: 3 * 4096, size: 4096 }], 'test BAR');
      expect(m.address % 4096n).toBe(0n);
      expect(protAt(m.address)).toBe('rw-s');
      expect(protAt(m.address + 4096n)).toBe('rw-s');
      expect(protAt(m.address + 2n * 4096n)).toBe('---p');
      expect(protAt(m.address + 3n * 4096n)).toBe('rw-s');
      expect(() => m.bytes).toThrow(/no view/);
      m.unmap();
      expect(protAt(m.address)).toBeUndefined();
    } finally {
      fs.closeSync(fd);
    }
  });

  it('an area the file refuses: nothing stays mapped, the error says which', () => {
    const fd = fs.openSync(path.join(dir, 'bar'), 'r');
    try {
      expect(() => mmapAreas(2 * 4096, fd, 0, [{ offset: 4096, size: 4096 }], 'test BAR')).toThrow(/^mmap test BAR \+0x1000: /);
    } finally {
      fs.closeSync(fd);
    }
  });
});
