#!/usr/bin/env node
// virtio-9p throughput: virtio-9p.rom in bench mode (its ROM parameter is
// M MiB, see test/guests/virtio/guest-9p.c) on both VMMs, sharing a fresh
// host directory: the guest creates bench.bin and writes M MiB in Twrites
// of msize - 23 bytes (msize 128 KiB), then reads it back in Treads of
// msize - 11, one request in flight (9P's own flow: each reply before the
// next request). Timed in the guest with the TSC (calibrated against the
// RTC), so start-up is not counted. Median of REPS runs, interleaved.
//
// Usage: node bench/virtio-9p.mjs [--mib 64] [--reps 3] [--only bhyve|qemu] [--no-write]
// Writes the "virtio-9p" section of BENCHMARKS.md unless --no-write.
import { parseArgs } from 'node:util';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  buildGuests, patchedRom, VMMS, runVmm, describeFailure, median, mdTable, hostInfo, writeSection, TESTDEV_OK, BENCH_TMP,
} from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    mib: { type: 'string', default: '64' },
    reps: { type: 'string', default: '3' },
    only: { type: 'string' },
    'no-write': { type: 'boolean', default: false },
  },
});
const mib = Number(opt.mib);
const reps = Number(opt.reps);
if (!(mib >= 1 && mib <= 0xffff && reps >= 1)) {
  console.error('virtio-9p: need 1 <= --mib <= 65535, --reps >= 1');
  process.exit(4);
}

await buildGuests();
const romPath = patchedRom('virtio-9p', mib);
const share = join(BENCH_TMP, 'virtio-9p-share');

function freshShare() {
  rmSync(share, { recursive: true, force: true });
  mkdirSync(share, { recursive: true });
}

const withShare = {
  bhyve: {
    ...VMMS.bhyve,
    argv(rp) {
      const [cmd, args] = VMMS.bhyve.argv.call(this, rp);
      const vm = args[args.length - 1];
      return [cmd, [...args.slice(0, -1), '-s', `4,virtio-9p,hostshare=${share}`, vm]];
    },
  },
  qemu: {
    ...VMMS.qemu,
    argv(rp) {
      const [cmd, args] = VMMS.qemu.argv(rp);
      return [cmd, [...args, '-fsdev', `local,id=fs0,path=${share},security_model=none`,
        '-device', 'virtio-9p-pci,fsdev=fs0,mount_tag=hostshare,disable-legacy=on']];
    },
  },
};

function parse(out) {
  const num = (re) => {
    const m = out.match(re);
    return m ? m.slice(1).map(Number) : null;
  };
  const hz = num(/bench: tsc_hz (\d+)/);
  const w = num(/bench: write (\d+) bytes (\d+) cycles/);
  const r = num(/bench: read (\d+) bytes (\d+) cycles/);
  if (!hz || !w || !r || !out.includes('bench: done')) return null;
  return { writeMBs: w[0] / 1e6 / (w[1] / hz[0]), readMBs: r[0] / 1e6 / (r[1] / hz[0]) };
}

const fmt = (v, d = 0) => (v === null || v === undefined ? '–' : v.toFixed(d));
const notes = [];
const active = [];
for (const [key, vmm] of Object.entries(withShare)) {
  if (opt.only && !key.startsWith(opt.only)) continue;
  const why = vmm.available();
  if (why) { notes.push(`${vmm.label}: skipped (${why}).`); continue; }
  active.push({ key, vmm, runs: [], failed: null });
}
for (let i = 0; i < reps; i++) {
  for (const a of active) {
    if (a.failed) continue;
    freshShare();
    const r = await runVmm(a.vmm, romPath);
    await a.vmm.cleanup();
    const p = r.code === TESTDEV_OK ? parse(r.stdout) : null;
    if (!p) {
      const last = r.stdout.split(/\r?\n/).filter((l) => l).pop() ?? '';
      a.failed = `${describeFailure(r, TESTDEV_OK)}${last ? `; guest's last line: "${last.trim()}"` : ''}`;
      continue;
    }
    a.runs.push(p);
    console.error(`virtio-9p: ${a.key} run ${i + 1}: write ${fmt(p.writeMBs)} MB/s, read ${fmt(p.readMBs)} MB/s`);
  }
}
rmSync(share, { recursive: true, force: true });
const results = {};
for (const { key, vmm, runs, failed } of active) {
  if (failed) { notes.push(`${vmm.label}: skipped, the run failed (${failed}).`); continue; }
  results[key] = { label: vmm.label, writeMBs: median(runs.map((x) => x.writeMBs)), readMBs: median(runs.map((x) => x.readMBs)) };
}
const rows = Object.values(results).map((r) => [r.label, fmt(r.writeMBs), fmt(r.readMBs)]);
if (results.bhyve && results.qemu) {
  rows.push(['ratio bhyve-kvm / QEMU', `${(results.bhyve.writeMBs / results.qemu.writeMBs).toFixed(2)}x`,
    `${(results.bhyve.readMBs / results.qemu.readMBs).toFixed(2)}x`]);
}
const table = mdTable(['', 'write MB/s (Twrite, 128 KiB msize)', 'read MB/s (Tread)'], rows);
console.log(table);
for (const n of notes) console.log(`\n${n}`);

if (!opt['no-write']) {
  writeSection('virtio-9p', [
    '## virtio-9p throughput (bench/virtio-9p.mjs)',
    '',
    `virtio-9p.rom in bench mode: the guest speaks 9P2000.L itself (no guest file system), creates bench.bin in a fresh`,
    `host directory and writes ${mib} MiB in Twrites of msize - 23 bytes (msize 128 KiB), then reads it back in Treads of`,
    'msize - 11; one request in flight, the guest polls the used ring. Timed in the guest with the TSC. Median of',
    `${reps} runs, interleaved. QEMU: \`-fsdev local,security_model=none -device virtio-9p-pci,disable-legacy=on\`;`,
    'bhyve-kvm: `-s 4,virtio-9p,hostshare=DIR` (requests served in the notify exit on the device thread, data moved',
    'by preadv/pwritev straight between the file and guest memory).',
    '',
    `Host: ${await hostInfo()}`,
    '',
    table,
    ...notes.map((n) => `\n${n}`),
  ].join('\n'));
  console.error('virtio-9p: wrote BENCHMARKS.md');
}
