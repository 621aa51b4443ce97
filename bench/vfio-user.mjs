#!/usr/bin/env node
// Cost of a device served over vfio-user against the same model in
// process: the test DMA engine (src/devices/vfio-user/test-dma-device.ts)
//   - in process: its region handlers called directly (what an emulated
//     device model costs bhyve per access, minus the KVM exit);
//   - socket: through bin/bhyve-vfio-user in another process, as
//     `passthru,vfio-user=` uses it (sendmsg/recvmsg and a context switch
//     per access).
// Measured: a 4-byte BAR 0 register read (REGION_READ), and a 64 KiB copy
// started by a doorbell write, with the DMA straight through the shared
// memory file (DMA_MAP with an fd, what bhyve passes) and by
// DMA_READ/DMA_WRITE messages (no fd). Host-side only: a guest's BAR access
// adds its KVM exit (BENCHMARKS.md "Port-I/O exit round trip") to each
// trapped access either way.
//
// Then in a guest: virtio-blk.rom in bench mode (polling, see
// bench/virtio-blk.mjs) on bhyve's virtio-blk in process (-s 3,virtio-blk,
// IMAGE,iothread=false: requests served on the device thread after the
// notify's exit) and on the same model served by `bhyve-vfio-user -s
// virtio-blk,IMAGE` and passed through (-s 3,passthru,vfio-user=SOCKET:
// the notify's exit becomes a REGION_WRITE the server answers after doing
// the I/O in guest memory it mapped).
//
// Usage: node bench/vfio-user.mjs [--reads 20000] [--copies 500] [--mib 16]
//          [--krand 2] [--reps 3] [--no-write]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { BENCH_TMP, buildGuests, describeFailure, hostInfo, mdTable, median, patchedRom, runVmm, TESTDEV_OK, VMMS, writeSection } from './lib.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = (p) => import(path.join(ROOT, 'dist', p));
const { values: opt } = parseArgs({ options: {
  reads: { type: 'string', default: '20000' }, copies: { type: 'string', default: '500' }, 'no-write': { type: 'boolean', default: false },
  mib: { type: 'string', default: '16' }, krand: { type: 'string', default: '2' }, reps: { type: 'string', default: '3' },
} });
const READS = Number(opt.reads);
const COPIES = Number(opt.copies);
const COPY = 64 * 1024;

const { TestDmaDevice, REG } = await dist('devices/vfio-user/test-dma-device.js');
const { VfioUserClient } = await dist('devices/vfio-user/client.js');
const { memfd } = await dist('sys/memfd.js');
const { mmap, PROT_READ, PROT_WRITE } = await dist('sys/libc.js');

const u32 = (v) => { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, v, true); return b; };
const ns = () => process.hrtime.bigint();

/** µs per operation: median of 3 timed batches. */
function time(n, f) {
  const runs = [];
  for (let r = 0; r < 3; r++) {
    const t0 = ns();
    for (let i = 0; i < n; i++) f(i);
    runs.push(Number(ns() - t0) / 1000 / n);
  }
  return median(runs);
}

/** A copy by the device: registers then the doorbell, each a region write. */
function copier(write) {
  return () => {
    write(REG.SRC, 0); write(REG.SRC + 4, 0); write(REG.DST, COPY); write(REG.DST + 4, 0); write(REG.LEN, COPY);
    write(REG.DOORBELL, 1);
  };
}

const results = {};

// In process.
{
  const dev = new TestDmaDevice();
  const ram = new Uint8Array(2 * COPY);
  dev.attach({ dma: { read: (a, n) => ram.slice(a, a + n), write: (a, d) => ram.set(d, a) }, trigger: () => true });
  const r0 = dev.regions[0];
  const buf = new Uint8Array(4);
  results.inproc = {
    read: time(READS, () => r0.read(REG.ID, buf)),
    copy: time(COPIES, copier((o, v) => r0.write(o, u32(v)))),
  };
}

// Socket to bin/bhyve-vfio-user.
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-user-bench-'));
async function serve(sock) {
  const child = spawn(process.execPath, [path.join(ROOT, 'bin/bhyve-vfio-user'), '-1', sock], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  while (!fs.existsSync(sock)) await new Promise((r) => setTimeout(r, 20));
  return { done: () => new Promise((r) => child.on('exit', () => r(log))) };
}
try {
  const s1 = await serve(path.join(tmp, 'a.sock'));
  const fd = memfd('bench-ram', 2 * COPY);
  const ram = mmap(2 * COPY, PROT_READ | PROT_WRITE, fd, 0, 'bench ram');
  const c1 = VfioUserClient.connect(path.join(tmp, 'a.sock'));
  c1.dmaMap({ flags: 3, offset: 0, address: 0, size: 2 * COPY }, fd);
  results.socket = {
    read: time(READS, () => c1.regionRead(0, REG.ID, 4)),
    copyMapped: time(COPIES, copier((o, v) => c1.regionWrite(0, o, u32(v)))),
  };
  c1.close();
  await s1.done();
  ram.unmap();
  fs.closeSync(fd);

  const s2 = await serve(path.join(tmp, 'b.sock'));
  const mem = new Uint8Array(2 * COPY);
  const c2 = VfioUserClient.connect(path.join(tmp, 'b.sock'), { read: (x, n) => mem.slice(x, x + n), write: (x, d) => mem.set(d, x) });
  c2.dmaMap({ flags: 3, offset: 0, address: 0, size: 2 * COPY });
  results.socket.copyMessages = time(COPIES, copier((o, v) => c2.regionWrite(0, o, u32(v))));
  c2.close();
  await s2.done();
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}

const f = (x) => x.toFixed(2);
const r = (x, y) => `${(x / y).toFixed(1)}x`;
const rows = [
  ['in process (device model called directly)', f(results.inproc.read), f(results.inproc.copy), '—'],
  ['vfio-user, socket to bhyve-vfio-user', f(results.socket.read), f(results.socket.copyMapped), f(results.socket.copyMessages)],
  ['ratio socket / in process', r(results.socket.read, results.inproc.read), r(results.socket.copyMapped, results.inproc.copy), r(results.socket.copyMessages, results.inproc.copy)],
];
const body = `## vfio-user device versus the same model in process (bench/vfio-user.mjs)

\`node bench/vfio-user.mjs\` — the test DMA engine (bhyve-vfio-user's \`test-dma\`) driven from the host side: a 4-byte BAR 0
register read (REGION_READ), and a 64 KiB copy (5 register writes and the doorbell, the device copies and records it), with the
DMA through the client's memory file the server mapped (DMA_MAP with an fd, what \`passthru,vfio-user=\` passes) or by
DMA_READ/DMA_WRITE messages (no fd). µs per operation, median of 3 batches of ${READS} reads / ${COPIES} copies. A guest's
trapped BAR access adds its KVM exit to either; BAR pages the server lets us map (the device's BAR 4) cost no exit and no message.

Host: ${await hostInfo()}

${mdTable(['path', 'register read µs', '64 KiB copy, DMA mapped µs', '64 KiB copy, DMA by messages µs'], rows)}`;

// ---- in a guest: virtio-blk in process versus served over vfio-user ----
const MIB = Number(opt.mib);
const KRAND = Number(opt.krand);
const REPS = Number(opt.reps);
await buildGuests();
fs.mkdirSync(BENCH_TMP, { recursive: true });
const rom = patchedRom('virtio-blk', MIB | (KRAND << 16));
const img = path.join(BENCH_TMP, 'vfio-user-blk.img');
const freshImage = () => { fs.rmSync(img, { force: true }); fs.writeFileSync(img, ''); fs.truncateSync(img, (MIB + 16) << 20); };
const withSlot = (label, slot) => ({
  ...VMMS.bhyve, label,
  argv(rp) {
    const [cmd, args] = VMMS.bhyve.argv.call(this, rp);
    return [cmd, [...args.slice(0, -1), '-s', slot(), args[args.length - 1]]];
  },
});
const sockPath = path.join(os.tmpdir(), `vfio-user-bench-${process.pid}.sock`);
const variants = {
  inproc: withSlot('virtio-blk in bhyve (-s 3,virtio-blk,IMAGE,iothread=false)', () => `3,virtio-blk,${img},iothread=false`),
  vfiouser: withSlot('virtio-blk served by bhyve-vfio-user (-s 3,passthru,vfio-user=SOCKET)', () => `3,passthru,vfio-user=${sockPath}`),
};
function parseBench(out) {
  const num = (re) => { const m = out.match(re); return m ? m.slice(1).map(Number) : null; };
  const hz = num(/bench: tsc_hz (\d+)/);
  const w = num(/bench: seq-write (\d+) bytes (\d+) cycles/);
  const r = num(/bench: seq-read (\d+) bytes (\d+) cycles/);
  const q32 = num(/bench: rand-read (\d+) x 4096 (\d+) cycles depth 32\r?\n/);
  const q1 = num(/bench: rand-read (\d+) x 4096 (\d+) cycles depth 1\r?\n/);
  if (!hz || !w || !r || !q32 || !q1) return null;
  const sec = (c) => c / hz[0];
  return { writeMBs: w[0] / 1e6 / sec(w[1]), readMBs: r[0] / 1e6 / sec(r[1]), iops32: q32[0] / sec(q32[1]), iops1: q1[0] / sec(q1[1]) };
}
const guest = { inproc: [], vfiouser: [] };
const failures = [];
for (let i = 0; i < REPS; i++) {
  for (const key of Object.keys(variants)) {
    freshImage();
    let server;
    if (key === 'vfiouser') {
      fs.rmSync(sockPath, { force: true });
      server = spawn(process.execPath, [path.join(ROOT, 'bin/bhyve-vfio-user'), '-1', '-s', `virtio-blk,${img}`, sockPath], { stdio: 'ignore' });
      while (!fs.existsSync(sockPath)) await new Promise((res) => setTimeout(res, 20));
    }
    const run = await runVmm(variants[key], rom);
    if (server) await new Promise((res) => { if (server.exitCode !== null) res(); else server.on('exit', res); });
    const p = run.code === TESTDEV_OK ? parseBench(run.stdout) : null;
    if (!p) { failures.push(`${key}: ${describeFailure(run, TESTDEV_OK)}`); continue; }
    guest[key].push(p);
    console.error(`vfio-user bench: ${key} run ${i + 1}: write ${p.writeMBs.toFixed(0)} MB/s, read ${p.readMBs.toFixed(0)} MB/s, QD32 ${p.iops32.toFixed(0)} IOPS, QD1 ${p.iops1.toFixed(0)} IOPS`);
  }
}
fs.rmSync(img, { force: true });
const med = (key, k) => (guest[key].length ? median(guest[key].map((x) => x[k])) : NaN);
const grow = (key) => [variants[key].label, med(key, 'writeMBs').toFixed(0), med(key, 'readMBs').toFixed(0), med(key, 'iops32').toFixed(0), med(key, 'iops1').toFixed(0)];
const gq = (k) => `${(med('vfiouser', k) / med('inproc', k)).toFixed(2)}x`;
const guestBody = `### In a guest: bhyve's virtio-blk in process and served over vfio-user

virtio-blk.rom in bench mode (polling the used ring; ${MIB} MiB sequential write and read, ${KRAND * 1000} random 4 KiB reads at
queue depth 32 and ${KRAND * 250} at depth 1, timed in the guest), median of ${REPS} runs, fresh raw image each run. In process
every notify is an MMIO exit served on bhyve's device thread; over vfio-user the same exit becomes a REGION_WRITE to
\`bhyve-vfio-user -s virtio-blk,IMAGE\`, which does the I/O straight in the guest memory it mapped and answers.

${mdTable(['', 'seq write MB/s', 'seq read MB/s', '4 KiB rand read IOPS, QD32', '4 KiB rand read IOPS, QD1'],
  [grow('inproc'), grow('vfiouser'), ['ratio vfio-user / in process', gq('writeMBs'), gq('readMBs'), gq('iops32'), gq('iops1')]])}
${failures.length ? `\nFailed runs: ${failures.join('; ')}` : ''}`;
const all = `${body}\n\n${guestBody}`;
console.log(all);
if (!opt['no-write']) writeSection('vfio-user', all);
