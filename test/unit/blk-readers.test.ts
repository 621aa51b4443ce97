// virtio-blk's iothread with reader threads (iothread_readers: large reads
// done by the block I/O pool's threads, several at once; the iothread alone
// writes the used ring), driven as a guest driver would: descriptors and
// buffers in a memory file the test maps and the workers map again,
// requests in the avail ring, a notify through the eventfd, the used ring
// and the data read back. No /dev/kvm: the workers run with noKick. The
// workers are the compiled ones (dist/), so the suite is skipped before
// `npm run build`.
//
// The iothread may pop a chain as soon as it is in the avail ring, before
// its notify: it is awake then for an earlier wake-up (often a reader's
// ring for a read the iothread had already reaped), and serves what it
// finds. So the used index a batch waits for is taken before its requests
// are offered (batch()), never after: that would count entries the
// iothread has already pushed and wait for ones that never come. Their
// buffers are filled before too.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { BlkIothread } from '../../src/devices/virtio/blk-iothread.js';
import { IOTHREAD_STATE } from '../../src/devices/virtio/iothread-control.js';
import { READER_MIN_BYTES, VirtioBlock } from '../../src/devices/virtio/virtio-blk.js';
import { memoryFence } from '../../src/devices/virtio/virtqueue.js';
import {
  VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_F_VERSION_1,
  VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, featureBit,
} from '../../src/devices/virtio/virtio-constants.js';
import { compiledWorker, IothreadScratch, until, workerHelper } from '../support/iothread-harness.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const worker = compiledWorker('blk-iothread-worker');
const readerJs = path.join(root, 'dist/devices/block/io-pool-worker.js');
const scratch = new IothreadScratch('blk-readers-');
const RAM = 16 << 20;
const IMAGE = 8 << 20;
const QSIZE = 64;
const layout = { size: QSIZE, desc: 0x1000, avail: 0x1000 + 16 * QSIZE, used: 0x2000 };
const BIG = 256 * 1024;

/** A guest: RAM in a file the threads map, a driver for one queue whose
 * requests each take three descriptors (header, data, status). */
function guest() {
  const { memoryPath, bytes: ram } = scratch.guestRam(RAM);
  const v = new DataView(ram.buffer, ram.byteOffset, RAM);
  const image = `${scratch.file('disk')}.img`;
  const pattern = Buffer.alloc(IMAGE);
  for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 7 + (i >> 9) + (i >> 17)) & 0xff;
  fs.writeFileSync(image, pattern);
  let heap = 0x10000;
  let nextDesc = 0;
  let availIdx = 0;
  let offeredTotal = 0;
  let lastUsed = 0;
  const alloc = (n: number) => {
    if (heap + n > RAM) heap = 0x10000;
    const a = heap;
    heap += (n + 4095) & ~4095;
    return a;
  };
  const setDesc = (i: number, addr: number, len: number, flags: number, next: number) => {
    const o = layout.desc + 16 * i;
    v.setBigUint64(o, BigInt(addr), true);
    v.setUint32(o + 8, len, true);
    v.setUint16(o + 12, flags, true);
    v.setUint16(o + 14, next, true);
  };
  const offer = (head: number) => {
    v.setUint16(layout.avail + 4 + 2 * (availIdx % QSIZE), head, true);
    availIdx = (availIdx + 1) & 0xffff;
    v.setUint16(layout.avail + 2, availIdx, true);
    offeredTotal++;
  };
  const request = (type: number, sector: number, len: number, data = alloc(len), dataAddr = data) => {
    const hdr = alloc(16);
    v.setUint32(hdr, type, true);
    v.setBigUint64(hdr + 8, BigInt(sector), true);
    const status = alloc(1);
    ram[status] = 0xff;
    const d = [nextDesc, (nextDesc + 1) % QSIZE, (nextDesc + 2) % QSIZE];
    nextDesc = (nextDesc + 3) % (QSIZE - QSIZE % 3);
    setDesc(d[0], hdr, 16, VIRTQ_DESC_F_NEXT, d[1]);
    setDesc(d[1], dataAddr, len, VIRTQ_DESC_F_NEXT | (type === VIRTIO_BLK_T_IN ? VIRTQ_DESC_F_WRITE : 0), d[2]);
    setDesc(d[2], status, 1, VIRTQ_DESC_F_WRITE, 0);
    offer(d[0]);
    return { head: d[0], status, data, sector, len };
  };
  const usedIdx = () => v.getUint16(layout.used + 2, true);
  /** The used entries (id, len) since the last call, in ring order. */
  const takeUsed = () => {
    const out: Array<{ id: number; len: number }> = [];
    const end = usedIdx();
    for (; lastUsed !== end; lastUsed = (lastUsed + 1) & 0xffff) {
      const o = layout.used + 4 + 8 * (lastUsed % QSIZE);
      out.push({ id: v.getUint32(o, true), len: v.getUint32(o + 4, true) });
    }
    return out;
  };
  const dev = VirtioBlock.open({ path: image });
  scratch.defer(() => dev.close());
  const start = (readers: number, readerWorkerUrl?: string, helpReaders?: boolean) => {
    const t = new BlkIothread({
      helper: workerHelper(memoryPath, RAM),
      imageFd: dev.file.descriptor,
      imageSize: dev.file.size,
      options: { path: image },
      ackedFeatures: featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_BLK_F_FLUSH),
      queueMaxSizes: [QSIZE],
      layouts: [layout],
      pollUs: 0,
      pollHoldOff: 0,
      noKick: true,
      readers,
      readerMinBytes: READER_MIN_BYTES,
      // A reader's spin preempted on a loaded host would hold them off.
      readerHoldOff: 0,
      readerWorkerUrl: readerWorkerUrl ?? pathToFileURL(readerJs).href,
      helpReaders,
    }, worker.url);
    scratch.defer(() => t.stop());
    return t;
  };
  const dataOk = (r: { data: number; sector: number; len: number }) =>
    Buffer.from(ram.subarray(r.data, r.data + r.len)).equals(pattern.subarray(r.sector * 512, r.sector * 512 + r.len));
  /** Runs `offer` (which offers requests), notifies, and waits until each
   * of them is used and the iothread's counters cover it (it publishes
   * them after the used entries, COMPLETED last); returns what `offer`
   * returned. The used index to wait for counts from the one before
   * `offer` (see the top). */
  const batch = async <R>(t: BlkIothread, offer: () => R, what: string): Promise<R> => {
    const from = usedIdx();
    const before = offeredTotal;
    const r = offer();
    const want = (from + offeredTotal - before) & 0xffff;
    t.notify();
    await until(() => usedIdx() === want, what, 30_000);
    await until(() => t.completed === offeredTotal, `the iothread's counters after ${what}`, 30_000);
    return r;
  };
  return { ram, v, pattern, alloc, setDesc, offer, request, usedIdx, takeUsed, start, image, dataOk, batch };
}

type Guest = ReturnType<typeof guest>;

/** Batches of large reads until the readers did some (they start at the
 * first large read; until one is up the iothread reads); each batch
 * checked. */
async function warmUp(g: Guest, t: BlkIothread): Promise<void> {
  const end = Date.now() + 60_000;
  while (t.toReaders === 0) {
    if (Date.now() > end) throw new Error('no read reached a reader thread');
    const reqs = await g.batch(t, () => [0, 1, 2, 3].map((i) => g.request(VIRTIO_BLK_T_IN, i * 512, BIG)), 'a warm-up batch');
    g.takeUsed();
    for (const r of reqs) { expect(g.ram[r.status]).toBe(VIRTIO_BLK_S_OK); expect(g.dataOk(r)).toBe(true); }
  }
}

describe.skipIf(!worker.present || !fs.existsSync(readerJs))('virtio-blk iothread reader threads', () => {
  it('large reads go to the readers, several in flight, each completed once with its data; small ones never do', async () => {
    const g = guest();
    // The iothread does not help here: what is handed over is the readers'
    // (unless no reader took it within 0.5 ms: a loaded host).
    const t = g.start(2, undefined, false);
    await warmUp(g, t);
    // Sixteen 256 KiB reads in flight at once, at scattered sectors, until
    // a batch in which readers did some (all, on an idle host).
    let byReaders = 0;
    for (let batch = 0; batch < 20 && byReaders === 0; batch++) {
      const before = t.toReaders;
      const backBefore = t.takenBack;
      const reqs = await g.batch(t, () => Array.from({ length: 16 }, (_, i) => g.request(VIRTIO_BLK_T_IN, ((i * 37 + batch) % 30) * 512, BIG)),
        'sixteen used entries');
      const used = g.takeUsed();
      expect(used.map((u) => u.id).sort((a, b) => a - b)).toEqual(reqs.map((r) => r.head).sort((a, b) => a - b));
      for (const u of used) expect(u.len).toBe(BIG + 1);
      for (const r of reqs) { expect(g.ram[r.status]).toBe(VIRTIO_BLK_S_OK); expect(g.dataOk(r)).toBe(true); }
      expect(t.toReaders - before).toBe(16);
      byReaders = 16 - (t.takenBack - backBefore);
    }
    expect(byReaders).toBeGreaterThan(0);
    // 4 KiB reads stay on the iothread.
    const mid = t.toReaders;
    const small = await g.batch(t, () => Array.from({ length: 16 }, (_, i) => g.request(VIRTIO_BLK_T_IN, i * 9, 4096)), 'sixteen small reads');
    g.takeUsed();
    for (const r of small) expect(g.dataOk(r)).toBe(true);
    expect(t.toReaders).toBe(mid);
    expect(t.brokenReason()).toBeUndefined();
    t.stop();
    expect(t.state).toBe(IOTHREAD_STATE.STOPPED);
  });

  it('a stream of large reads, 16 in flight and each resubmitted as it completes, never waits for a ring that does not come', async () => {
    // A reader that rang the iothread for a read it had already reaped
    // once left the ring disarmed, and the iothread slept with reads done.
    const g = guest();
    const t = g.start(4);
    await warmUp(g, t);
    // Sixteen slots, each with its own descriptors (3 * slot), header,
    // status byte and buffer.
    const slot = Array.from({ length: 16 }, () => ({ hdr: g.alloc(16), status: g.alloc(1), data: g.alloc(BIG) }));
    let inFlight = 0;
    const submit = (k: number, n: number) => {
      const { hdr, status, data } = slot[k];
      g.v.setUint32(hdr, VIRTIO_BLK_T_IN, true);
      g.v.setBigUint64(hdr + 8, BigInt((n % 28) * 512), true);
      g.ram[status] = 0xff;
      g.setDesc(3 * k, hdr, 16, VIRTQ_DESC_F_NEXT, 3 * k + 1);
      g.setDesc(3 * k + 1, data, BIG, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 3 * k + 2);
      g.setDesc(3 * k + 2, status, 1, VIRTQ_DESC_F_WRITE, 0);
      g.offer(3 * k);
      inFlight++;
    };
    let next = 0;
    for (; next < 16; next++) submit(next, next);
    t.notify();
    let done = 0;
    while (done < 1500) {
      let used = g.takeUsed();
      if (used.length === 0) await until(() => (used = g.takeUsed()).length > 0, `completion ${done + 1} (${inFlight} in flight)`, 20_000);
      for (const u of used) {
        const k = u.id / 3;
        expect(g.ram[slot[k].status]).toBe(VIRTIO_BLK_S_OK);
        expect(u.len).toBe(BIG + 1);
        inFlight--;
        done++;
        submit(k, next++);
      }
      // As a driver does when the device asks for notifies: its avail idx
      // stores before it reads the flags (virtio_mb), or it and the
      // iothread re-enabling notifies may each miss the other's store.
      memoryFence();
      if ((g.v.getUint16(layout.used, true) & 1) === 0) t.notify();
    }
    expect(t.brokenReason()).toBeUndefined();
  });

  it('completes out of order: a small read offered after a large one is used first, each with its own length', async () => {
    const g = guest();
    const t = g.start(2);
    await warmUp(g, t);
    // The large read goes to a reader unless the pool is held off (a
    // reader's spin lost its CPU): retry until one was handed over.
    let seen = false;
    for (let attempt = 0; attempt < 50 && !seen; attempt++) {
      const before = t.toReaders;
      const [big, small] = await g.batch(t, () => [g.request(VIRTIO_BLK_T_IN, 1024, BIG), g.request(VIRTIO_BLK_T_IN, 3, 4096)], 'both reads');
      const used = g.takeUsed();
      expect(g.dataOk(big)).toBe(true);
      expect(g.dataOk(small)).toBe(true);
      expect(used.find((u) => u.id === big.head)?.len).toBe(BIG + 1);
      expect(used.find((u) => u.id === small.head)?.len).toBe(4096 + 1);
      if (t.toReaders > before) {
        expect(used.map((u) => u.id)).toEqual([small.head, big.head]);
        seen = true;
      }
    }
    expect(seen).toBe(true);
  });

  it('a write offered after a read of the same sectors waits for it: the read returns the old data', async () => {
    const g = guest();
    const t = g.start(2);
    await warmUp(g, t);
    for (let round = 0; round < 4; round++) {
      const sector = 2048 + round * 512;
      const out = g.alloc(BIG);
      g.ram.fill(0xee, out, out + BIG);
      const [read, write] = await g.batch(t, () => [g.request(VIRTIO_BLK_T_IN, sector, BIG), g.request(VIRTIO_BLK_T_OUT, sector, BIG, out)],
        'the read and the write');
      g.takeUsed();
      expect(g.ram[read.status]).toBe(VIRTIO_BLK_S_OK);
      expect(g.ram[write.status]).toBe(VIRTIO_BLK_S_OK);
      expect(g.dataOk(read)).toBe(true);
      expect(fs.readFileSync(g.image).subarray(sector * 512, sector * 512 + BIG).every((b) => b === 0xee)).toBe(true);
    }
  });

  it('hostile large reads: past the end, a sector beyond 2^53, a length not a multiple of 512 end in IOERR; a buffer outside RAM in needs-reset', async () => {
    const g = guest();
    const t = g.start(2);
    await warmUp(g, t);
    const capacity = IMAGE / 512;
    const [good, ...bad] = await g.batch(t, () => [
      g.request(VIRTIO_BLK_T_IN, 64, BIG),
      g.request(VIRTIO_BLK_T_IN, capacity - 8, BIG),
      g.request(VIRTIO_BLK_T_IN, 2 ** 60, BIG),
      g.request(VIRTIO_BLK_T_IN, 0, BIG - 100),
    ], 'four used entries');
    const used = g.takeUsed();
    for (const r of bad) {
      expect(g.ram[r.status]).toBe(VIRTIO_BLK_S_IOERR);
      expect(used.find((u) => u.id === r.head)?.len).toBe(1);
    }
    expect(g.ram[good.status]).toBe(VIRTIO_BLK_S_OK);
    expect(g.dataOk(good)).toBe(true);
    expect(t.brokenReason()).toBeUndefined();
    // A data buffer that runs past guest RAM: the chain is malformed.
    g.request(VIRTIO_BLK_T_IN, 0, BIG, RAM - 4096);
    t.notify();
    await until(() => t.brokenReason() !== undefined, 'the needs-reset report');
    expect(t.brokenReason()).toMatch(/not in guest RAM/);
    t.stop();
    expect(t.state).toBe(IOTHREAD_STATE.STOPPED);
  });

  it('a batch the iothread serves before its notify is not missed: the used index to wait for is taken before the requests are offered', async () => {
    // The iothread serves chains it finds while awake for an earlier
    // wake-up (a reader's ring for a read it had already reaped, on a
    // loaded host): forced here by a wake-up after the requests are in the
    // ring and before batch() notifies. A driver that took the index after
    // offering waited for four entries more than would ever come.
    const g = guest();
    const t = g.start(2);
    await warmUp(g, t);
    const nap = new Int32Array(new SharedArrayBuffer(4));
    const reqs = await g.batch(t, () => {
      const served = (g.usedIdx() + 4) & 0xffff;
      const r = [0, 1, 2, 3].map((i) => g.request(VIRTIO_BLK_T_IN, (20 + i) * 512, BIG));
      t.notify();
      const end = Date.now() + 30_000;
      while (g.usedIdx() !== served && Date.now() < end) Atomics.wait(nap, 0, 0, 1);
      expect(g.usedIdx()).toBe(served);
      return r;
    }, 'a batch served before its notify');
    for (const r of reqs) { expect(g.ram[r.status]).toBe(VIRTIO_BLK_S_OK); expect(g.dataOk(r)).toBe(true); }
    expect(t.brokenReason()).toBeUndefined();
  });

  it('stop() with reads in flight: every read taken is completed before it returns, and nothing writes guest memory after', async () => {
    const g = guest();
    const t = g.start(3);
    await warmUp(g, t);
    // Buffers zeroed and the used index taken before the reads are offered
    // (the iothread may serve them before the notify: see the top).
    const bufs = Array.from({ length: 16 }, () => g.alloc(BIG));
    for (const b of bufs) g.ram.fill(0, b, b + BIG);
    const before = g.usedIdx();
    const reqs = bufs.map((b, i) => g.request(VIRTIO_BLK_T_IN, i * 512, BIG, b));
    t.notify();
    await until(() => g.usedIdx() !== before, 'the first completion', 30_000);
    t.stop();
    expect(t.state).toBe(IOTHREAD_STATE.STOPPED);
    const used = g.takeUsed();
    const done = new Set(used.map((u) => u.id));
    for (const r of reqs) {
      if (done.has(r.head)) {
        expect(g.ram[r.status]).toBe(VIRTIO_BLK_S_OK);
        expect(g.dataOk(r)).toBe(true);
      } else {
        expect(g.ram[r.status]).toBe(0xff); // never taken
      }
    }
    const snapshot = Buffer.from(g.ram.subarray(0x10000, RAM));
    await new Promise((r) => setTimeout(r, 100));
    expect(Buffer.from(g.ram.subarray(0x10000, RAM)).equals(snapshot)).toBe(true);
  });

  it('iothread_readers=0: the iothread does every read itself', async () => {
    const g = guest();
    const t = g.start(0);
    for (let batch = 0; batch < 3; batch++) {
      const reqs = await g.batch(t, () => [0, 1, 2, 3].map((i) => g.request(VIRTIO_BLK_T_IN, (batch * 4 + i) * 512, BIG)), 'a batch');
      for (const r of reqs) expect(g.dataOk(r)).toBe(true);
    }
    expect(t.toReaders).toBe(0);
    expect(t.completed).toBe(12);
    t.stop();
  });
});
