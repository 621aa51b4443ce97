#!/usr/bin/env node
// AHCI and NVMe throughput: ahci.rom / nvme.rom in bench mode (the ROM
// parameter selects M MiB sequential and K thousand random reads, see
// test/guests/ahci/ahci.c and test/guests/nvme/nvme.c) on our bhyve
// (-s ahci-hd / -s nvme) and QEMU (-device ahci + ide-hd / -device nvme),
// on the same raw image: sequential write (128 KiB commands, 32 in
// flight: NCQ for AHCI), FLUSH, sequential read (128 KiB, 32 in flight),
// 4 KiB random reads at queue depth 32 and 1. The guest polls for
// completions and times each phase with the TSC (calibrated against the
// RTC), so VMM start-up is not counted. Each figure is the median of REPS
// runs, interleaved. The default size, 1 GiB, keeps each sequential phase
// long enough to time throughput rather than the I/O thread's warm-up
// (see bench/virtio-blk.mjs).
//
// Usage: node bench/disk-controller.mjs --device ahci|nvme [--mib 1024]
//          [--krand 10] [--reps 3] [--no-write] [--bhyve-opts k=v,...]
//          [--bhyve-o pci.0.3.0.k=v ...]
// --bhyve-opts appends device options to bhyve's -s (A/B runs of a switch);
// --bhyve-o adds a -o to bhyve's command line (AHCI's controller keys, e.g.
// pci.0.3.0.iopool=1: in -s ahci-hd,PATH,k=v they land on the port).
// Writes the "ahci" or "nvme" section of BENCHMARKS.md unless --no-write.
import { parseArgs } from 'node:util';
import { closeSync, ftruncateSync, openSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  buildGuests, patchedRom, VMMS, runVmm, describeFailure, median, mdTable, hostInfo, writeSection, TESTDEV_OK, BENCH_TMP,
} from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    device: { type: 'string', default: 'ahci' },
    mib: { type: 'string', default: '1024' },
    krand: { type: 'string', default: '10' },
    reps: { type: 'string', default: '3' },
    'no-write': { type: 'boolean', default: false },
    'bhyve-opts': { type: 'string', default: '' },
    'bhyve-o': { type: 'string', multiple: true, default: [] },
  },
});
const dev = opt.device;
if (dev !== 'ahci' && dev !== 'nvme') {
  console.error('disk-controller: --device must be ahci or nvme');
  process.exit(4);
}
const mib = Number(opt.mib);
const krand = Number(opt.krand);
const reps = Number(opt.reps);
if (!(mib >= 1 && mib <= 0xffff && krand >= 0 && krand <= 0xffff && reps >= 1)) {
  console.error(`${dev}: need 1 <= --mib <= 65535, 0 <= --krand <= 65535, --reps >= 1`);
  process.exit(4);
}

await buildGuests();
const romPath = patchedRom(dev, mib | (krand << 16));
const img = join(BENCH_TMP, `${dev}.img`);

function freshImage() {
  rmSync(img, { force: true });
  const fd = openSync(img, 'w');
  ftruncateSync(fd, (mib + 16) * 1024 * 1024);
  closeSync(fd);
}

const withDisk = {
  bhyve: {
    ...VMMS.bhyve,
    label: `${VMMS.bhyve.label}, -s ${dev === 'ahci' ? 'ahci-hd' : 'nvme'}${opt['bhyve-opts'] ? `,${opt['bhyve-opts']}` : ''}${opt['bhyve-o'].map((o) => ` -o ${o}`).join('')}`,
    argv(rp) {
      const [cmd, args] = VMMS.bhyve.argv.call(this, rp);
      const vm = args[args.length - 1];
      const extra = opt['bhyve-opts'] ? `,${opt['bhyve-opts']}` : '';
      return [cmd, [...args.slice(0, -1), '-s', `3,${dev === 'ahci' ? 'ahci-hd' : 'nvme'},${img}${extra}`, ...opt['bhyve-o'].flatMap((o) => ['-o', o]), vm]];
    },
  },
  qemu: {
    ...VMMS.qemu,
    label: `${VMMS.qemu.label}, ${dev === 'ahci' ? '-device ahci + ide-hd' : '-device nvme'}`,
    argv(rp) {
      const [cmd, args] = VMMS.qemu.argv(rp);
      const drive = ['-drive', `file=${img},if=none,format=raw,id=d0`];
      return [cmd, [...args, ...drive, ...(dev === 'ahci'
        ? ['-device', 'ahci,id=ahci0', '-device', 'ide-hd,drive=d0,bus=ahci0.0']
        : ['-device', 'nvme,drive=d0,serial=BENCH'])]];
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
    console.error(`${dev}: ${a.key} run ${i + 1}: write ${fmt(p.writeMBs)} MB/s, read ${fmt(p.readMBs)} MB/s, `
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
  const what = dev === 'ahci'
    ? ['## AHCI throughput', 'WRITE FPDMA QUEUED', 'FLUSH CACHE EXT', 'READ FPDMA QUEUED', 'PxCI/PxSACT',
      '`-s 3,ahci-hd,IMAGE`', '`-device ahci` (ICH9) `+ -device ide-hd`', 'Every PxCI write is an MMIO exit on both; bhyve-kvm runs the command inside that exit (`iopool=0`, the default: I/O straight between the image and the PRDT buffers;',
      'with `iopool=1` a transfer of 64 KiB or more goes to an I/O thread instead), and serves the PxCI/PxSACT/PxTFD polls from a read-only register page (`regpage`, no exit); PxSACT writes wait in KVM\'s coalesced MMIO ring (`sactcoalesce`, no exit). QEMU exits for every PxSACT write and every read and completes commands through its AIO.']
    : ['## NVMe throughput', 'WRITE (PRP lists)', 'FLUSH', 'READ', 'the completion queue\'s phase bits',
      '`-s 3,nvme,IMAGE`', '`-device nvme`', 'The guest sends Doorbell Buffer Config (OACS bit 8, offered by both) and rings an I/O doorbell only when its shadow value passes the EventIdx, as Linux does. bhyve-kvm hands the I/O queues to an I/O thread woken by ioeventfd (`iothread=true`, the default), which reads the shadow tails and sets the EventIdx so the driver rings once per batch;',
      'with `iothread=false` each command runs in its doorbell exit (reading the shadow tail), and completion queue head updates need no doorbell write until a queue fills. QEMU 7.2 exits for the doorbells it gets and completes commands through its AIO.'];
  writeSection(dev, [
    what[0],
    '',
    `\`node bench/disk-controller.mjs --device ${dev}\` — ${dev}.rom in bench mode (${mib} MiB / ${krand}k random reads) on a fresh sparse raw image per run:`,
    `${mib} MiB sequential write (128 KiB ${what[1]}, 32 in flight), ${what[2]}, ${mib} MiB sequential read`,
    `(128 KiB ${what[3]}, 32 in flight), then ${krand * 1000} random 4 KiB reads at depth 32 and ${krand * 250} at`,
    `depth 1. The driver runs in ring 3 and polls ${what[4]}; phases are timed in the guest with the TSC. Median of`,
    `${reps} runs, interleaved. bhyve-kvm: ${what[5]}; QEMU: ${what[6]} (cache=writeback).`,
    what[7],
    what[8],
    '',
    `Host: ${await hostInfo()}`,
    '',
    table,
    ...notes.map((n) => `\n${n}`),
  ].join('\n'));
  console.error(`${dev}: wrote BENCHMARKS.md`);
}
