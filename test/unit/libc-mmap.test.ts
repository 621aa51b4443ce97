// mmap() makes its JavaScript view on first use: an ArrayBuffer over
// external memory counts against V8's external-memory limit, and guest RAM
// crossing it costs the thread a full garbage collection. The main thread
// maps RAM only for KVM's memory slots (the address), so it must not pay.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { mmap, PROT_READ, PROT_WRITE } from '../../src/sys/libc.js';

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
