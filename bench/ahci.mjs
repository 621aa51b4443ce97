#!/usr/bin/env node
// AHCI throughput: ahci.rom in bench mode (its ROM parameter selects M MiB
// sequential and K thousand random reads, see test/guests/ahci/ahci.c) on
// our bhyve (-s ahci-hd) and QEMU (-device ahci + ide-hd), on the same raw
// image: sequential write (128 KiB WRITE FPDMA QUEUED, 32 in flight),
// FLUSH CACHE EXT, sequential read (128 KiB READ FPDMA QUEUED, 32 in
// flight), 4 KiB random NCQ reads at queue depth 32 and 1. The guest polls
// PxCI/PxSACT and times each phase with the TSC (calibrated against the
// RTC), so VMM start-up is not counted. Each figure is the median of REPS
// runs, interleaved.
//
// Usage: node bench/ahci.mjs [--mib 32] [--krand 10] [--reps 3] [--no-write]
// Writes the "ahci" section of BENCHMARKS.md unless --no-write.
import { parseArgs } from 'node:util';
import { closeSync, ftruncateSync, openSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  buildGuests, patchedRom, VMMS, runVmm, describeFailure, median, mdTable, hostInfo, writeSection, TESTDEV_OK, BENCH_TMP,
} from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    mib: { type: 'string', default: '32' },
    krand: { type: 'string', default: '10' },
    reps: { type: 'string', default: '3' },
    'no-write': { type: 'boolean', default: false },
  },
});
const mib = Number(opt.mib);
const krand = Number(opt.krand);
const reps = Number(opt.reps);
if (!(mib >= 1 && mib <= 0xffff && krand >= 0 && krand <= 0xffff && reps >= 1)) {
  console.error('ahci: need 1 <= --mib <= 65535, 0 <= --krand <= 65535, --reps >= 1');
  process.exit(4);
}

await buildGuests();
const romPath = patchedRom('ahci', mib | (krand << 16));
const img = join(BENCH_TMP, 'ahci.img');

function freshImage() {
  rmSync(img, { force: true });
  const fd = openSync(img, 'w');
  ftruncateSync(fd, (mib + 16) * 1024 * 1024);
  closeSync(fd);
}

const withDisk = {
  bhyve: {
    ...VMMS.bhyve,
    label: `${VMMS.bhyve.label}, -s ahci-hd`,
    argv(rp) {
      const [cmd, args] = VMMS.bhyve.argv.call(this, rp);
      const vm = args[args.length - 1];
      return [cmd, [...args.slice(0, -1), '-s', `3,ahci-hd,${img}`, vm]];
    },
  },
  qemu: {
    ...VMMS.qemu,
    label: `${VMMS.qemu.label}, -device ahci + ide-hd`,
    argv(rp) {
      const [cmd, args] = VMMS.qemu.argv(rp);
      return [cmd, [...args, '-device', 'ahci,id=ahci0', '-drive', `file=${img},if=none,format=raw,id=d0`,
        '-device', 'ide-hd,drive=d0,bus=ahci0.0']];
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
  const f = num(/bench: flush (\d+) cycles/);
  const r = num(/bench: seq-read (\d+) bytes (\d+) cycles/);
  const q32 = num(/bench: rand-read (\d+) x 4096 (\d+) cycles depth 32\r?\n/);
  const q1 = num(/bench: rand-read (\d+) x 4096 (\d+) cycles depth 1\r?\n/);
  if (!hz || !w || !f || !r || !out.includes('bench: done')) return null;
  const s = (cycles) => cycles / hz[0];
  return {
    writeMBs: w[0] / 1e6 / s(w[1]),
    writeFlushMBs: w[0] / 1e6 / s(w[1] + f[0]),
    readMBs: r[0] / 1e6 / s(r[1]),
    iops32: q32 ? q32[0] / s(q32[1]) : null,
    iops1: q1 ? q1[0] / s(q1[1]) : null,
  };
}

const fmt = (v, d = 0) => (v === null || v === undefined ? '–' : v.toFixed(d));
const notes = [];
const active = [];
for (const [key, vmm] of Object.entries(withDisk)) {
  const why = vmm.available();
  if (why) { notes.push(`${vmm.label}: skipped (${why}).`); continue; }
  active.push({ key, vmm, runs: [], failed: null });
}
for (let i = 0; i < reps; i++) {
  for (const a of active) {
    if (a.failed) continue;
    freshImage();
    const r = await runVmm(a.vmm, romPath);
    const p = r.code === TESTDEV_OK ? parse(r.stdout) : null;
    if (!p) {
      const last = r.stdout.split(/\r?\n/).filter((l) => l).pop() ?? '';
      a.failed = `${describeFailure(r, TESTDEV_OK)}${last ? `; guest's last line: "${last.trim()}"` : ''}`;
      continue;
    }
    a.runs.push(p);
    console.error(`ahci: ${a.key} run ${i + 1}: write ${fmt(p.writeMBs)} MB/s, read ${fmt(p.readMBs)} MB/s, `
      + `${fmt(p.iops32)} IOPS (QD32), ${fmt(p.iops1)} IOPS (QD1)`);
  }
}
const results = {};
for (const { key, vmm, runs, failed } of active) {
  if (failed) { notes.push(`${vmm.label}: the run failed (${failed}).`); continue; }
  const m = (k) => (runs[0][k] === null ? null : median(runs.map((x) => x[k])));
  results[key] = { label: vmm.label, writeMBs: m('writeMBs'), writeFlushMBs: m('writeFlushMBs'), readMBs: m('readMBs'), iops32: m('iops32'), iops1: m('iops1') };
}
rmSync(img, { force: true });

const rows = Object.values(results).map((r) => [r.label, fmt(r.writeMBs), fmt(r.writeFlushMBs), fmt(r.readMBs), fmt(r.iops32), fmt(r.iops1)]);
if (results.bhyve && results.qemu) {
  const q = (k) => (results.bhyve[k] && results.qemu[k] ? `${(results.bhyve[k] / results.qemu[k]).toFixed(2)}x` : '–');
  rows.push(['ratio bhyve-kvm / QEMU', q('writeMBs'), q('writeFlushMBs'), q('readMBs'), q('iops32'), q('iops1')]);
}
const table = mdTable(['', 'seq write MB/s', 'write + FLUSH MB/s', 'seq read MB/s', '4 KiB rand read IOPS, QD32', '4 KiB rand read IOPS, QD1'], rows);
console.log(table);
for (const n of notes) console.log(`\n${n}`);

if (!opt['no-write']) {
  writeSection('ahci', [
    '## AHCI throughput',
    '',
    `\`node bench/ahci.mjs\` — ahci.rom in bench mode (${mib} MiB / ${krand}k random reads) on a fresh sparse raw image per run:`,
    `${mib} MiB sequential write (128 KiB WRITE FPDMA QUEUED, 32 in flight), FLUSH CACHE EXT, ${mib} MiB sequential read`,
    `(128 KiB READ FPDMA QUEUED, 32 in flight), then ${krand * 1000} random 4 KiB READ FPDMA QUEUED at depth 32 and ${krand * 250} at`,
    'depth 1. The driver runs in ring 3 and polls PxCI/PxSACT; phases are timed in the guest with the TSC. Median of',
    `${reps} runs, interleaved. bhyve-kvm: \`-s 3,ahci-hd,IMAGE\`; QEMU: \`-device ahci\` (ICH9) \`+ -device ide-hd\` (cache=writeback).`,
    'Every PxCI write is an MMIO exit on both; bhyve-kvm runs the command inside that exit (I/O straight between the image',
    'and the PRDT buffers), QEMU hands it to its AIO and completes it later.',
    '',
    `Host: ${await hostInfo()}`,
    '',
    table,
    ...notes.map((n) => `\n${n}`),
  ].join('\n'));
  console.error('ahci: wrote BENCHMARKS.md');
}
