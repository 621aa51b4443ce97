#!/usr/bin/env node
// Would a small pool of I/O threads help the block backend? A batch of QD
// 4 KiB random preads from a page-cached image (what one NVMe doorbell or
// one AHCI PxCI write with QD NCQ slots asks for), done the way the
// device models do it today (one after another on the thread that took
// the exit) against the same batch split over N worker threads woken with
// Atomics.notify, the calling thread working too and then waiting for the
// rest. Prints microseconds per batch (median of ROUNDS) for each.
//
// Usage: node bench/block-pool-probe.mjs [--qd 32] [--threads 1,2] [--rounds 400]
import { parseArgs } from 'node:util';
import { closeSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { BENCH_TMP, median } from './lib.mjs';
import { mkdirSync } from 'node:fs';

const { values: opt } = parseArgs({
  options: { qd: { type: 'string', default: '32' }, threads: { type: 'string', default: '1,2' }, rounds: { type: 'string', default: '400' } },
});
const QD = Number(opt.qd);
const ROUNDS = Number(opt.rounds);
const SIZE = 64 << 20;
mkdirSync(BENCH_TMP, { recursive: true });
const img = join(BENCH_TMP, 'pool-probe.img');
const fd = openSync(img, 'w+');
const chunk = Buffer.alloc(1 << 20, 0x5a);
for (let o = 0; o < SIZE; o += chunk.length) writeSync(fd, chunk, 0, chunk.length, o);
const offsets = () => Int32Array.from({ length: QD }, () => Math.floor(Math.random() * (SIZE / 4096)));

// Shared: [gen, next, done, count, offsets...]; data buffer QD*4096.
const ctl = new Int32Array(new SharedArrayBuffer(4 * (4 + QD)));
const data = new Uint8Array(new SharedArrayBuffer(QD * 4096));
const workerSrc = `
const { workerData } = require('node:worker_threads');
const { readSync } = require('node:fs');
const { ctl, data, fd, QD } = workerData;
let seen = 0;
for (;;) {
  Atomics.wait(ctl, 0, seen);
  seen = Atomics.load(ctl, 0);
  if (seen < 0) break;
  const count = Atomics.load(ctl, 3);
  for (let i; (i = Atomics.add(ctl, 1, 1)) < count;) {
    readSync(fd, data, i * 4096, 4096, ctl[4 + i] * 4096);
    if (Atomics.add(ctl, 2, 1) + 1 === count) Atomics.notify(ctl, 2);
  }
}`;

function sequential() {
  const o = offsets();
  const t = process.hrtime.bigint();
  for (let i = 0; i < QD; i++) readSync(fd, data, i * 4096, 4096, o[i] * 4096);
  return Number(process.hrtime.bigint() - t) / 1000;
}

function pooled() {
  const o = offsets();
  const t = process.hrtime.bigint();
  ctl.set(o, 4);
  Atomics.store(ctl, 1, 0);
  Atomics.store(ctl, 2, 0);
  Atomics.store(ctl, 3, QD);
  Atomics.add(ctl, 0, 1);
  Atomics.notify(ctl, 0);
  for (let i; (i = Atomics.add(ctl, 1, 1)) < QD;) {
    readSync(fd, data, i * 4096, 4096, ctl[4 + i] * 4096);
    Atomics.add(ctl, 2, 1);
  }
  for (let d; (d = Atomics.load(ctl, 2)) < QD;) Atomics.wait(ctl, 2, d, 1000);
  return Number(process.hrtime.bigint() - t) / 1000;
}

for (let i = 0; i < 50; i++) sequential();
console.log(`batch of ${QD} x 4 KiB page-cached preads, median of ${ROUNDS}:`);
console.log(`  sequential on the calling thread: ${median(Array.from({ length: ROUNDS }, sequential)).toFixed(1)} us`);
for (const n of opt.threads.split(',').map(Number)) {
  const workers = Array.from({ length: n }, () => new Worker(workerSrc, { eval: true, workerData: { ctl, data, fd, QD } }));
  await new Promise((r) => setTimeout(r, 300));
  for (let i = 0; i < 50; i++) pooled();
  const m = median(Array.from({ length: ROUNDS }, pooled));
  console.log(`  caller + ${n} worker thread(s):    ${m.toFixed(1)} us`);
  Atomics.store(ctl, 0, -1);
  Atomics.notify(ctl, 0);
  await Promise.all(workers.map((w) => w.terminate()));
  Atomics.store(ctl, 0, 0);
}
closeSync(fd);
rmSync(img, { force: true });
