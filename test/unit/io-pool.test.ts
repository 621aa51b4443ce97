// The disk controllers' I/O pool (src/devices/block/io-pool*.ts) with real
// worker threads: guest RAM in a file the test maps and the workers map
// again, reads and writes handed out as (image offset, guest segments),
// completed by reap() / drain() on this thread. No /dev/kvm: the workers
// run with noKick. The worker is the compiled one (dist/), so the suite is
// skipped before `npm run build`.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { BlockFile } from '../../src/devices/block/block-backend.js';
import { BlockIoPool, CTL, POOL_MAX_SEGS, POOL_SLOTS, SLOT_INTS, SLOT_STATE, WORKER_STALL_MS } from '../../src/devices/block/io-pool.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { mmap, PROT_READ, PROT_WRITE } from '../../src/sys/libc.js';
import { memfd } from '../../src/sys/memfd.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const workerJs = path.join(root, 'dist/devices/block/io-pool-worker.js');
const haveWorker = fs.existsSync(workerJs);
const workerUrl = new URL(`file://${workerJs}`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'io-pool-'));
const RAM = 4 << 20;
const cleanup: Array<() => void> = [];
afterAll(() => {
  for (const c of cleanup.reverse()) { try { c(); } catch { /* best effort */ } }
  fs.rmSync(tmp, { recursive: true, force: true });
});

let seq = 0;
function setup(threads: number, page?: { words: Int32Array; fd?: number }, holdOff = 0, url = workerUrl, mergeMax = 0) {
  const memoryPath = path.join(tmp, `mem${seq}`);
  fs.writeFileSync(memoryPath, Buffer.alloc(0));
  fs.truncateSync(memoryPath, RAM);
  const fd = fs.openSync(memoryPath, 'r+');
  const map = mmap(RAM, PROT_READ | PROT_WRITE, fd, 0, 'test RAM');
  fs.closeSync(fd);
  cleanup.push(() => map.unmap());
  const ram = map.bytes;
  const mem = new GuestMemory([{ gpa: 0, bytes: ram }]);
  const image = path.join(tmp, `disk${seq++}.img`);
  const data = Buffer.alloc(2 << 20);
  for (let i = 0; i < data.length; i++) data[i] = (i * 13 + (i >> 10)) & 0xff;
  fs.writeFileSync(image, data);
  const file = new BlockFile({ path: image });
  cleanup.push(() => file.close());
  const pool = new BlockIoPool(threads, threads > 0 ? {
    memoryPath, layout: { lowmem: RAM, highmem: 0 }, doorbell: { sab: new SharedArrayBuffer(8), vcpuFd: -1, mmapSize: 0 },
  } : undefined, [file], () => mem, { noKick: true, workerUrl: url, page, holdOff, mergeMax });
  cleanup.push(() => pool.close());
  return { ram, mem, image, data, file, pool };
}

/** Reaps until `n` requests completed (the workers are asynchronous). */
async function reapAll(pool: BlockIoPool, n: number): Promise<void> {
  let done = 0;
  const deadline = Date.now() + 30_000;
  while (done < n && Date.now() < deadline) {
    done += pool.reap();
    if (done < n) await new Promise((r) => setTimeout(r, 2));
  }
  expect(done).toBe(n);
}

async function waitUp(pool: BlockIoPool, threads: number): Promise<void> {
  pool.startWorkers();
  const deadline = Date.now() + 60_000;
  while (pool.workersUp < threads && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  expect(pool.workersUp).toBe(threads);
}

describe.skipIf(!haveWorker)('block I/O pool with worker threads', () => {
  it('reads into and writes from guest RAM segments on the workers; callbacks run in reap()', async () => {
    const { ram, data, image, pool } = setup(2);
    await waitUp(pool, 2);
    const results: number[] = [];
    // 32 reads of 64 KiB, each in two segments of 32 KiB.
    for (let i = 0; i < 32; i++) {
      const gpa = 0x100000 + i * 65536;
      expect(pool.submit(0, false, i * 65536, [[gpa, 32768], [gpa + 32768, 32768]], (n) => results.push(n))).toBe(true);
    }
    expect(pool.pending).toBe(32);
    await reapAll(pool, 32);
    expect(results).toEqual(new Array(32).fill(65536));
    expect(Buffer.compare(Buffer.from(ram.subarray(0x100000, 0x100000 + (2 << 20))), data)).toBe(0);
    expect(pool.stolen).toBe(0);
    // A write of 128 KiB from RAM.
    ram.fill(0xa5, 0x10000, 0x30000);
    let wrote = -2;
    expect(pool.submit(0, true, 4096, [[0x10000, 0x20000]], (n) => { wrote = n; })).toBe(true);
    await reapAll(pool, 1);
    expect(wrote).toBe(0x20000);
    const back = fs.readFileSync(image);
    expect(back.subarray(4096, 4096 + 0x20000).every((b) => b === 0xa5)).toBe(true);
    expect(back[4095]).toBe(data[4095]);
  }, 90_000);

  it('drain() finishes everything before it returns; a segment outside RAM gives -1; limits are refused', async () => {
    const { pool } = setup(1);
    await waitUp(pool, 1);
    const results: number[] = [];
    for (let i = 0; i < 16; i++) pool.submit(0, false, i * 4096, [[0x200000 + i * 4096, 4096]], (n) => results.push(n));
    pool.submit(0, false, 0, [[RAM - 2048, 4096]], (n) => results.push(n));
    pool.drain();
    expect(pool.pending).toBe(0);
    expect(results.filter((n) => n === 4096).length).toBe(16);
    expect(results).toContain(-1);
    const tooMany = Array.from({ length: POOL_MAX_SEGS + 1 }, (_, i) => [0x300000 + 512 * i, 512] as [number, number]);
    expect(pool.submit(0, false, 0, tooMany, () => {})).toBe(false);
    for (let i = 0; i < POOL_SLOTS; i++) pool.submit(0, false, 0, [[0x300000, 512]], () => {});
    expect(pool.submit(0, false, 0, [[0x300000, 512]], () => {})).toBe(false); // full
    pool.drain();
    expect(pool.pending).toBe(0);
    pool.close();
    expect(pool.submit(0, false, 0, [[0x300000, 512]], () => {})).toBe(false);
  }, 90_000);

  it('a worker writes a request\'s completion record after the transfer, its last word by the outcome', async () => {
    const { ram, data, pool } = setup(1);
    await waitUp(pool, 1);
    const dv = new DataView(ram.buffer, ram.byteOffset);
    const rec = (gpa: number) => [0, 4, 8, 12].map((o) => dv.getUint32(gpa + o, true));
    let got = -2;
    expect(pool.submit(0, false, 65536, [[0x40000, 0x20000]], (n) => { got = n; }, {
      post: { gpa: 0x3000, ok: [0x11, 0x22, 0x33, 0x10044], errLast: 0x80055 }, kick: false,
    })).toBe(true);
    // The record appears in guest memory without reap(): the driver sees the completion on its own.
    const deadline = Date.now() + 30_000;
    while (dv.getUint32(0x3000 + 12, true) === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
    expect(rec(0x3000)).toEqual([0x11, 0x22, 0x33, 0x10044]);
    expect(Buffer.compare(Buffer.from(ram.subarray(0x40000, 0x60000)), data.subarray(65536, 65536 + 0x20000))).toBe(0);
    await reapAll(pool, 1);
    expect(got).toBe(0x20000);
    // Past the end of the image: a short read, the failure variant.
    expect(pool.submit(0, false, (2 << 20) - 4096, [[0x40000, 8192]], () => {}, {
      post: { gpa: 0x3010, ok: [1, 2, 3, 4], errLast: 0x80055 },
    })).toBe(true);
    await reapAll(pool, 1);
    expect(rec(0x3010)).toEqual([1, 2, 3, 0x80055]);
  }, 90_000);

  it('a worker maps the register page from its fd and clears a request\'s bits there after its guest word, on success only', async () => {
    const fd = memfd('test register page', 4096);
    cleanup.push(() => fs.closeSync(fd));
    const pageMap = mmap(4096, PROT_READ | PROT_WRITE, fd, 0, 'test register page');
    cleanup.push(() => pageMap.unmap());
    const words = new Int32Array(pageMap.bytes.buffer, pageMap.bytes.byteOffset, 1024);
    const { ram, pool } = setup(1, { words, fd });
    expect(pool.canClear).toBe(true);
    await waitUp(pool, 1);
    const dv = new DataView(ram.buffer, ram.byteOffset);
    Atomics.store(words, 13, 0b1111);
    expect(pool.submit(0, false, 0, [[0x40000, 0x20000]], () => {}, { clear: { gpa: 0x5004, value: 0x20000, word: 13, mask: 0b0100 }, kick: false })).toBe(true);
    const deadline = Date.now() + 30_000;
    while (Atomics.load(words, 13) !== 0b1011 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
    expect(Atomics.load(words, 13)).toBe(0b1011);
    expect(dv.getUint32(0x5004, true)).toBe(0x20000);
    await reapAll(pool, 1);
    // A short read past the end of the image: the bits stay, no word written.
    expect(pool.submit(0, false, (2 << 20) - 4096, [[0x40000, 8192]], () => {}, { clear: { gpa: 0x5008, value: 7, word: 13, mask: 0b0001 } })).toBe(true);
    await reapAll(pool, 1);
    expect(Atomics.load(words, 13)).toBe(0b1011);
    expect(dv.getUint32(0x5008, true)).toBe(0);
  }, 90_000);

  it('until a worker is up, submit() refuses (the caller does the request itself)', () => {
    const { pool } = setup(1);
    expect(pool.submit(0, false, 0, [[0x100000, 4096]], () => {})).toBe(false);
  });
});

/** A stand-in worker that comes up and takes nothing (a thread that gets
 * no CPU); with `preempt` it reports a preempted spin at the first submit. */
function idleWorker(preempt: boolean): URL {
  const file = path.join(tmp, `idle-worker-${preempt}.mjs`);
  fs.writeFileSync(file, `
    import { workerData } from 'node:worker_threads';
    import { CTL } from ${JSON.stringify(`file://${path.join(root, 'dist/devices/block/io-pool.js')}`)};
    const ctl = new Int32Array(workerData.shared.ctl);
    const seen = Atomics.load(ctl, CTL.SUBMITTED);
    Atomics.add(ctl, CTL.UP, 1);
    if (${preempt}) { while (Atomics.load(ctl, CTL.SUBMITTED) === seen) Atomics.wait(ctl, CTL.SUBMITTED, seen, 20); Atomics.add(ctl, CTL.PREEMPTED, 1); }
    while (Atomics.load(ctl, CTL.STOP) === 0) Atomics.wait(ctl, CTL.STOP, 0, 20);
    Atomics.sub(ctl, CTL.UP, 1);
  `);
  return new URL(`file://${file}`);
}

/** A stand-in worker in the middle of a long transfer: it takes the first
 * request (TAKEN) and ends it (failed) only when the test stores 1 in
 * CTL.MERGED, a counter nothing else touches here. */
function busyWorker(): URL {
  const file = path.join(tmp, 'busy-worker.mjs');
  fs.writeFileSync(file, `
    import { workerData } from 'node:worker_threads';
    import { CTL, SLOT_INTS, SLOT_STATE } from ${JSON.stringify(`file://${path.join(root, 'dist/devices/block/io-pool.js')}`)};
    const ctl = new Int32Array(workerData.shared.ctl);
    const ints = new Int32Array(workerData.shared.slotsI);
    Atomics.add(ctl, CTL.UP, 1);
    let mine = -1;
    while (mine < 0 && Atomics.load(ctl, CTL.STOP) === 0) {
      for (let i = 0; i < 64 && mine < 0; i++) if (Atomics.compareExchange(ints, i * SLOT_INTS, SLOT_STATE.READY, SLOT_STATE.TAKEN) === SLOT_STATE.READY) mine = i;
      if (mine < 0) Atomics.wait(ctl, CTL.SUBMITTED, Atomics.load(ctl, CTL.SUBMITTED), 5);
    }
    // Busy until the test says so (it stores 1 in CTL.MERGED, unused here).
    while (Atomics.load(ctl, CTL.MERGED) === 0 && Atomics.load(ctl, CTL.STOP) === 0) Atomics.wait(ctl, CTL.MERGED, 0, 20);
    if (mine >= 0) { ints[mine * SLOT_INTS + 4] = -1; Atomics.store(ints, mine * SLOT_INTS, SLOT_STATE.DONE); }
    Atomics.add(ctl, CTL.DONE, 1); Atomics.notify(ctl, CTL.DONE);
    while (Atomics.load(ctl, CTL.STOP) === 0) Atomics.wait(ctl, CTL.STOP, 0, 20);
    Atomics.sub(ctl, CTL.UP, 1);
  `);
  return new URL(`file://${file}`);
}

describe.skipIf(!haveWorker)('block I/O pool: a worker in the middle of a transfer', () => {
  it('keeps the requests waiting behind it: stealStale() leaves them while it holds one, unless it is stuck on it', async () => {
    const { pool } = setup(1, undefined, 3, busyWorker());
    await waitUp(pool, 1);
    const got: number[] = [];
    expect(pool.submit(0, false, 0, [[0x100000, 4096]], (n) => { got[0] = n; })).toBe(true);
    // The worker takes it and stays busy.
    const ctl = new Int32Array((pool as unknown as { shared: { ctl: SharedArrayBuffer } }).shared.ctl);
    const ints = new Int32Array((pool as unknown as { shared: { slotsI: SharedArrayBuffer } }).shared.slotsI);
    const deadline = Date.now() + 30_000;
    while (!Array.from({ length: 64 }, (_, i) => ints[i * SLOT_INTS]).includes(SLOT_STATE.TAKEN) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
    expect(pool.submit(0, false, 4096, [[0x101000, 4096]], (n) => { got[1] = n; })).toBe(true);
    await new Promise((r) => setTimeout(r, 5));
    expect(pool.stealStale(1)).toBe(0);
    expect(pool.heldOff).toBe(0);
    // A worker stuck on its transfer for WORKER_STALL_MS (no CPU) no longer counts as busy.
    await new Promise((r) => setTimeout(r, WORKER_STALL_MS + 3));
    expect(pool.stealStale(1)).toBe(1);
    expect(pool.reap()).toBe(1);
    expect(got[1]).toBe(4096);
    expect(pool.submit(0, false, 8192, [[0x102000, 4096]], (n) => { got[2] = n; })).toBe(false); // held off now
    // The worker ends its transfer (failed): its request completes as such.
    Atomics.store(ctl, CTL.MERGED, 1);
    Atomics.notify(ctl, CTL.MERGED);
    while (pool.reap() === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
    expect(pool.pending).toBe(0);
    expect(got).toEqual([-1, 4096]);
    pool.drain();
  }, 90_000);
});

describe.skipIf(!haveWorker)('block I/O pool: held off while its threads get no CPU', () => {
  it('a request no worker took in time is done here, and the next transfers are refused (done by the caller) for the hold-off', async () => {
    const { pool } = setup(1, undefined, 3, idleWorker(false));
    await waitUp(pool, 1);
    let got = -2;
    expect(pool.submit(0, false, 0, [[0x100000, 4096]], (n) => { got = n; })).toBe(true);
    await new Promise((r) => setTimeout(r, 5));
    expect(pool.stealStale(1)).toBe(1);
    expect(pool.reap()).toBe(1);
    expect(got).toBe(4096);
    for (let i = 0; i < 3; i++) expect(pool.submit(0, false, 0, [[0x100000, 4096]], () => {})).toBe(false);
    expect(pool.heldOff).toBe(3);
    expect(pool.submit(0, false, 0, [[0x100000, 4096]], () => {})).toBe(true);
    pool.drain();
    expect(pool.pending).toBe(0);
  }, 90_000);

  it('each further late request with none done by a worker in between doubles the hold-off', async () => {
    const { pool } = setup(1, undefined, 2, idleWorker(false));
    await waitUp(pool, 1);
    const refusals: number[] = [];
    for (let round = 0; round < 3; round++) {
      expect(pool.submit(0, false, 0, [[0x100000, 4096]], () => {})).toBe(true);
      await new Promise((r) => setTimeout(r, 5));
      expect(pool.stealStale(1)).toBe(1);
      pool.reap();
      let n = 0;
      while (!pool.submit(0, false, 0, [[0x100000, 4096]], () => {}) && n < 100) n++;
      refusals.push(n);
      pool.drain();
    }
    expect(refusals).toEqual([2, 4, 8]);
  }, 90_000);

  it('a worker whose spin was preempted holds the pool off too', async () => {
    const { pool } = setup(1, undefined, 2, idleWorker(true));
    await waitUp(pool, 1);
    expect(pool.submit(0, false, 0, [[0x100000, 4096]], () => {})).toBe(true);
    const deadline = Date.now() + 30_000;
    let refused = false;
    while (!refused && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
      refused = !pool.submit(0, false, 0, [[0x100000, 4096]], () => {});
    }
    expect(refused).toBe(true);
    expect(pool.submit(0, false, 0, [[0x100000, 4096]], () => {})).toBe(false);
    expect(pool.heldOff).toBe(2);
    expect(pool.submit(0, false, 0, [[0x100000, 4096]], () => {})).toBe(true);
    pool.drain();
  }, 90_000);
});

describe('block I/O pool without threads (no VM memory file)', () => {
  it('runs requests on this thread at reap()', () => {
    const { ram, data, pool } = setup(0);
    let got = 0;
    expect(pool.submit(0, false, 8192, [[0x1000, 8192]], (n) => { got = n; })).toBe(true);
    expect(got).toBe(0);
    expect(pool.reap()).toBe(1);
    expect(got).toBe(8192);
    expect(Buffer.compare(Buffer.from(ram.subarray(0x1000, 0x3000)), data.subarray(8192, 16384))).toBe(0);
    expect(pool.stolen).toBe(1);
  });

  it('stealStale() does here the requests no worker took for that long', async () => {
    const { pool } = setup(0);
    let got = 0;
    expect(pool.submit(0, false, 0, [[0x1000, 4096]], (n) => { got = n; })).toBe(true);
    expect(pool.stealStale(1000)).toBe(0);
    await new Promise((r) => setTimeout(r, 5));
    expect(pool.stealStale(1)).toBe(1);
    expect(got).toBe(0);
    expect(pool.reap()).toBe(1);
    expect(got).toBe(4096);
  });
});

describe('block I/O pool: requests that continue each other are one transfer (mergeMax)', () => {
  /** Counts the file's transfers. */
  function counted(file: BlockFile): { reads: number; writes: number } {
    const c = { reads: 0, writes: 0 };
    const readv = file.readv.bind(file);
    const writev = file.writev.bind(file);
    file.readv = (v, p) => { c.reads++; return readv(v, p); };
    file.writev = (v, p) => { c.writes++; return writev(v, p); };
    return c;
  }

  it('contiguous reads in one preadv, each into its own buffers; the others alone; results per request', () => {
    const { ram, data, file, pool } = setup(0, undefined, 0, workerUrl, 1 << 20);
    const c = counted(file);
    const got: number[] = [];
    // Eight 16 KiB reads of image bytes 0..128 KiB, submitted out of order,
    // each into two 8 KiB buffers far apart; then one read elsewhere.
    for (const k of [3, 0, 7, 1, 2, 6, 4, 5]) {
      expect(pool.submit(0, false, k * 16384, [[0x100000 + k * 0x10000, 8192], [0x300000 + k * 0x10000, 8192]], (n) => { got[k] = n; })).toBe(true);
    }
    expect(pool.submit(0, false, 1 << 20, [[0x80000, 4096]], (n) => { got[8] = n; })).toBe(true);
    expect(pool.reap()).toBe(9);
    expect(got).toEqual([...Array(8).fill(16384), 4096]);
    expect(c.reads).toBe(2);
    expect(pool.merged).toBe(8);
    for (let k = 0; k < 8; k++) {
      expect(Buffer.compare(Buffer.from(ram.subarray(0x100000 + k * 0x10000, 0x100000 + k * 0x10000 + 8192)), data.subarray(k * 16384, k * 16384 + 8192))).toBe(0);
      expect(Buffer.compare(Buffer.from(ram.subarray(0x300000 + k * 0x10000, 0x300000 + k * 0x10000 + 8192)), data.subarray(k * 16384 + 8192, (k + 1) * 16384))).toBe(0);
    }
    expect(Buffer.compare(Buffer.from(ram.subarray(0x80000, 0x81000)), data.subarray(1 << 20, (1 << 20) + 4096))).toBe(0);
  });

  it('no larger than mergeMax; reads and writes, or two files\' worth, never together', () => {
    const { ram, image, file, pool } = setup(0, undefined, 0, workerUrl, 32768);
    const c = counted(file);
    for (let k = 0; k < 6; k++) {
      ram.fill(0x40 + k, 0x100000 + k * 16384, 0x100000 + (k + 1) * 16384);
      expect(pool.submit(0, true, 65536 + k * 16384, [[0x100000 + k * 16384, 16384]], () => {})).toBe(true);
    }
    // A read that continues the writes in the image stays apart from them.
    expect(pool.submit(0, false, 65536 + 6 * 16384, [[0x200000, 16384]], () => {})).toBe(true);
    expect(pool.reap()).toBe(7);
    expect(c.writes).toBe(3); // 6 x 16 KiB in 32 KiB transfers
    expect(c.reads).toBe(1);
    const back = fs.readFileSync(image);
    for (let k = 0; k < 6; k++) expect(back.subarray(65536 + k * 16384, 65536 + (k + 1) * 16384).every((b) => b === 0x40 + k)).toBe(true);
  });

  it('a merged run with a buffer outside RAM is done again one by one: only that request fails', () => {
    const { ram, data, file, pool } = setup(0, undefined, 0, workerUrl, 1 << 20);
    const c = counted(file);
    const got: number[] = [];
    for (let k = 0; k < 4; k++) {
      const gpa = k === 2 ? RAM - 4096 : 0x100000 + k * 8192; // request 2 runs off the end of RAM
      expect(pool.submit(0, false, k * 8192, [[gpa, 8192]], (n) => { got[k] = n; })).toBe(true);
    }
    expect(pool.reap()).toBe(4);
    expect(got).toEqual([8192, 8192, -1, 8192]);
    expect(pool.merged).toBe(0);
    expect(c.reads).toBe(3); // the merged attempt never reached the file; then 0, 1 and 3 alone
    for (const k of [0, 1, 3]) expect(Buffer.compare(Buffer.from(ram.subarray(0x100000 + k * 8192, 0x100000 + (k + 1) * 8192)), data.subarray(k * 8192, (k + 1) * 8192))).toBe(0);
  });

  it.skipIf(!haveWorker)('with a worker: a stream of contiguous reads reads back right', async () => {
    const { ram, data, pool } = setup(1, undefined, 0, workerUrl, 1 << 20);
    await waitUp(pool, 1);
    const got: number[] = [];
    for (let k = 0; k < 32; k++) expect(pool.submit(0, false, k * 32768, [[0x100000 + k * 32768, 32768]], (n) => { got[k] = n; })).toBe(true);
    await reapAll(pool, 32);
    expect(got).toEqual(Array(32).fill(32768));
    expect(Buffer.compare(Buffer.from(ram.subarray(0x100000, 0x100000 + (1 << 20))), data.subarray(0, 1 << 20))).toBe(0);
  }, 90_000);
});
