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
// Usage: node bench/vfio-user.mjs [--reads 20000] [--copies 500] [--no-write]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { hostInfo, mdTable, median, writeSection } from './lib.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = (p) => import(path.join(ROOT, 'dist', p));
const { values: opt } = parseArgs({ options: {
  reads: { type: 'string', default: '20000' }, copies: { type: 'string', default: '500' }, 'no-write': { type: 'boolean', default: false },
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
console.log(body);
if (!opt['no-write']) writeSection('vfio-user', body);
