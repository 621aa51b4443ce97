// A virtqueue read by a device thread while the driver runs beside it
// (virtio-blk's iothread): the driver's avail idx crossing a byte carry
// (0x00ff <-> 0x0100) must never be seen half-written. Read byte by byte it
// was (0x01ff or 0x0000: "avail idx is N entries ahead", and the device went
// to DEVICE_NEEDS_RESET with requests in flight).
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { Virtqueue } from '../../src/devices/virtio/virtqueue.js';

const LAYOUT = { size: 16, desc: 0x0, avail: 0x1000, used: 0x2000 };

describe('virtqueue: ring indices under a concurrent driver', () => {
  it('pending() never sees a torn avail idx while the driver flips it across a byte carry', async () => {
    const sab = new SharedArrayBuffer(0x4000);
    const mem = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(sab) }]);
    const q = new Virtqueue(mem, LAYOUT);
    q.setPositions(0x00ff, 0);
    const idx = new Uint16Array(sab, LAYOUT.avail + 2, 1);
    Atomics.store(idx, 0, 0x00ff);
    const stop = new Int32Array(new SharedArrayBuffer(4));
    // The driver: 16-bit stores of avail idx, 0x00ff and 0x0100 in turn.
    const driver = new Worker(`
      const { workerData: { sab, stop } } = require('node:worker_threads');
      const idx = new Uint16Array(sab, ${LAYOUT.avail + 2}, 1);
      const s = new Int32Array(stop);
      Atomics.store(s, 0, 1);
      while (Atomics.load(s, 0) === 1) { for (let i = 0; i < 1000; i++) { idx[0] = 0x0100; idx[0] = 0x00ff; } }
    `, { eval: true, workerData: { sab, stop: stop.buffer } });
    try {
      const t0 = Date.now();
      while (Atomics.load(stop, 0) === 0 && Date.now() - t0 < 20_000) await new Promise((r) => setTimeout(r, 5));
      let torn = 0;
      let seen1 = 0;
      const end = Date.now() + 1500;
      while (Date.now() < end) {
        for (let i = 0; i < 10_000; i++) {
          try {
            if (q.pending() === 1) seen1++;
          } catch {
            torn++;
          }
        }
      }
      expect(torn).toBe(0);
      expect(seen1).toBeGreaterThan(0); // the driver did run beside us
    } finally {
      Atomics.store(stop, 0, 2);
      await driver.terminate();
    }
  }, 60_000);
});
