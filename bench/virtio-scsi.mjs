#!/usr/bin/env node
// virtio-scsi throughput: virtio-scsi.rom in bench mode (ROM parameter
// M MiB | K << 16, see test/guests/virtio/guest-scsi.c) on both VMMs, on a
// fresh sparse raw image: M MiB written with WRITE(16) of 256 KiB, then
// SYNCHRONIZE CACHE, read back with READ(16) of 256 KiB, then K*1000 random
// 4 KiB READ(10)s; one command in flight throughout (QD1). Timed in the
// guest with the TSC (calibrated against the RTC). Median of REPS runs,
// interleaved.
//
// Usage: node bench/virtio-scsi.mjs [--mib 64] [--krand 5] [--reps 3] [--only bhyve|qemu] [--no-write]
// Writes the "virtio-scsi" section of BENCHMARKS.md unless --no-write.
import { parseArgs } from 'node:util';
import { closeSync, ftruncateSync, openSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  buildGuests, patchedRom, VMMS, runVmm, describeFailure, median, mdTable, hostInfo, writeSection, TESTDEV_OK, BENCH_TMP,
} from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    mib: { type: 'string', default: '64' },
    krand: { type: 'string', default: '5' },
    reps: { type: 'string', default: '3' },
    only: { type: 'string' },
    'no-write': { type: 'boolean', default: false },
  },
});
const mib = Number(opt.mib);
const krand = Number(opt.krand);
const reps = Number(opt.reps);
if (!(mib >= 1 && mib <= 0xffff && krand >= 0 && krand <= 0xffff && reps >= 1)) {
  console.error('virtio-scsi: need 1 <= --mib <= 65535, 0 <= --krand <= 65535, --reps >= 1');
  process.exit(4);
}

await buildGuests();
const romPath = patchedRom('virtio-scsi', mib | (krand << 16));
const img = join(BENCH_TMP, 'virtio-scsi.img');

function freshImage() {
  rmSync(img, { force: true });
  const fd = openSync(img, 'w');
  ftruncateSync(fd, (mib + 16) * 1024 * 1024);
  closeSync(fd);
}

const withDisk = {
  bhyve: {
    ...VMMS.bhyve,
    argv(rp) {
      const [cmd, args] = VMMS.bhyve.argv.call(this, rp);
      const vm = args[args.length - 1];
      return [cmd, [...args.slice(0, -1), '-s', `4,virtio-scsi,${img}`, vm]];
    },
  },
  qemu: {
    ...VMMS.qemu,
    argv(rp) {
      const [cmd, args] = VMMS.qemu.argv(rp);
      return [cmd, [...args, '-device', 'virtio-scsi-pci,id=s0,disable-legacy=on',
        '-drive', `file=${img},if=none,format=raw,id=d0`, '-device', 'scsi-hd,drive=d0,bus=s0.0']];
    },
  },
};

function parse(out) {
  const num = (re) => {
    const m = out.match(re);
    return m ? m.slice(1).map(Number) : null;
  };
  const hz = num(/bench: tsc_hz (\d+)/);
  const w = num(/bench: seq-write (\d+) bytes (\d+) cycles/);
  const r = num(/bench: seq-read (\d+) bytes (\d+) cycles/);
  const q1 = num(/bench: rand-read (\d+) x 4096 (\d+) cycles depth 1/);
  if (!hz || !w || !r || !q1 || !out.includes('bench: done')) return null;
  const s = (c) => c / hz[0];
  return { writeMBs: w[0] / 1e6 / s(w[1]), readMBs: r[0] / 1e6 / s(r[1]), iops1: q1[0] ? q1[0] / s(q1[1]) : null };
}

const fmt = (v, d = 0) => (v === null || v === undefined ? '–' : v.toFixed(d));
const notes = [];
const active = [];
for (const [key, vmm] of Object.entries(withDisk)) {
  if (opt.only && !key.startsWith(opt.only)) continue;
  const why = vmm.available();
  if (why) { notes.push(`${vmm.label}: skipped (${why}).`); continue; }
  active.push({ key, vmm, runs: [], failed: null });
}
for (let i = 0; i < reps; i++) {
  for (const a of active) {
    if (a.failed) continue;
    freshImage();
    const r = await runVmm(a.vmm, romPath);
    await a.vmm.cleanup();
    const p = r.code === TESTDEV_OK ? parse(r.stdout) : null;
    if (!p) {
      const last = r.stdout.split(/\r?\n/).filter((l) => l).pop() ?? '';
      a.failed = `${describeFailure(r, TESTDEV_OK)}${last ? `; guest's last line: "${last.trim()}"` : ''}`;
      continue;
    }
    a.runs.push(p);
    console.error(`virtio-scsi: ${a.key} run ${i + 1}: write ${fmt(p.writeMBs)} MB/s, read ${fmt(p.readMBs)} MB/s, ${fmt(p.iops1)} IOPS (4 KiB QD1)`);
  }
}
rmSync(img, { force: true });
const results = {};
for (const { key, vmm, runs, failed } of active) {
  if (failed) { notes.push(`${vmm.label}: skipped, the run failed (${failed}).`); continue; }
  const m = (k) => (runs[0][k] === null ? null : median(runs.map((x) => x[k])));
  results[key] = { label: vmm.label, writeMBs: m('writeMBs'), readMBs: m('readMBs'), iops1: m('iops1') };
}
const rows = Object.values(results).map((r) => [r.label, fmt(r.writeMBs), fmt(r.readMBs), fmt(r.iops1)]);
if (results.bhyve && results.qemu) {
  const q = (k) => (results.bhyve[k] && results.qemu[k] ? `${(results.bhyve[k] / results.qemu[k]).toFixed(2)}x` : '–');
  rows.push(['ratio bhyve-kvm / QEMU', q('writeMBs'), q('readMBs'), q('iops1')]);
}
const table = mdTable(['', 'seq write + SYNC CACHE MB/s (256 KiB, QD1)', 'seq read MB/s (256 KiB, QD1)', '4 KiB rand read IOPS, QD1'], rows);
console.log(table);
for (const n of notes) console.log(`\n${n}`);

if (!opt['no-write']) {
  writeSection('virtio-scsi', [
    '## virtio-scsi throughput (bench/virtio-scsi.mjs)',
    '',
    `virtio-scsi.rom in bench mode on a fresh sparse raw image: ${mib} MiB written with WRITE(16) of 256 KiB then`,
    `SYNCHRONIZE CACHE, read back with READ(16) of 256 KiB, then ${krand * 1000} random 4 KiB READ(10)s; one command in`,
    'flight (the guest polls the used ring). Timed in the guest with the TSC. Median of',
    `${reps} runs, interleaved. QEMU: \`-device virtio-scsi-pci,disable-legacy=on -drive format=raw,if=none -device scsi-hd\``,
    '(cache=writeback); bhyve-kvm: `-s 4,virtio-scsi,IMAGE` (commands served in the notify exit on the device thread).',
    '',
    `Host: ${await hostInfo()}`,
    '',
    table,
    ...notes.map((n) => `\n${n}`),
  ].join('\n'));
  console.error('virtio-scsi: wrote BENCHMARKS.md');
}
