#!/usr/bin/env node
// virtio-blk throughput: virtio-blk.rom in bench mode (its ROM parameter
// selects M MiB sequential and K thousand random reads, see
// test/guests/virtio/guest-blk.c) on both VMMs, on the same raw image:
// sequential write (256 KiB requests, 16 in flight), FLUSH, sequential read,
// 4 KiB random reads at queue depth 32 and 1. The guest times each phase
// with the TSC, calibrated against the RTC's seconds, so VMM start-up is
// not counted. The host's own bandwidth on the same filesystem (node fs:
// 256 KiB writes + fsync, 256 KiB reads, 4 KiB preads) is the limit.
// Each figure is the median of REPS runs.
//
// The default size, 1 GiB, makes each sequential phase last 0.1-2 s: a
// 64-128 MiB read phase lasts 10-30 ms, about as long as the I/O thread's
// first TurboFan compiles of the read path, which then run on the CPU the
// thread needs (BENCHMARKS.md, "Sequential rows at 1 GiB"), so small runs
// measure warm-up more than throughput.
//
// Usage: node bench/virtio-blk.mjs [--mib 1024] [--krand 20] [--reps 3]
//          [--only bhyve|bhyve-exit|bhyve-readers|qemu,...] [--poll-us N] [--readers N,...] [--event-idx] [--no-write]
// --readers 0,3: also the iothread with iothread_readers=0 and =3 (A/B of
// the reader threads that do its large reads; 0: the iothread reads).
// Writes the "virtio-blk" section of BENCHMARKS.md unless --no-write.
import { parseArgs } from 'node:util';
import { closeSync, fsyncSync, openSync, readSync, rmSync, writeSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import {
  buildGuests, patchedRom, VMMS, runVmm, describeFailure, median, mdTable, hostInfo, writeSection, TESTDEV_OK, BENCH_TMP,
} from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    mib: { type: 'string', default: '1024' },
    krand: { type: 'string', default: '20' },
    reps: { type: 'string', default: '3' },
    only: { type: 'string' },
    'poll-us': { type: 'string' },
    readers: { type: 'string' },
    'no-write': { type: 'boolean', default: false },
    // the guest negotiates VIRTIO_F_EVENT_IDX, as Linux does (test/guests/virtio/irq.h MODE_EVENT_IDX)
    'event-idx': { type: 'boolean', default: false },
  },
});
const mib = Number(opt.mib);
const krand = Number(opt.krand);
const reps = Number(opt.reps);
if (!(mib >= 1 && mib <= 0xffff && krand >= 0 && krand <= 0xffff && reps >= 1)) {
  console.error('virtio-blk: need 1 <= --mib <= 65535, 0 <= --krand <= 65535, --reps >= 1');
  process.exit(4);
}

await buildGuests();
const MODE_EVENT_IDX = 0x100;
const romPath = patchedRom('virtio-blk', mib | (krand << 16), opt['event-idx'] ? MODE_EVENT_IDX : undefined);
const img = join(BENCH_TMP, 'virtio-blk.img');
const imgBytes = (mib + 16) * 1024 * 1024;

function freshImage() {
  rmSync(img, { force: true });
  const fd = openSync(img, 'w');
  ftruncateSync(fd, imgBytes);
  closeSync(fd);
}

// The VMMs of lib.mjs with the disk added; bhyve twice: requests served on
// the iothread fed by a KVM ioeventfd (iothread=true), and on the device
// thread after an MMIO exit (iothread=false).
const bhyveWith = (iothread, pollUs, readers) => ({
  ...VMMS.bhyve,
  label: `${VMMS.bhyve.label}, ${iothread ? `iothread + ioeventfd${pollUs !== undefined ? `, iothread_poll_us=${pollUs}` : ''}` : 'notify exit, device thread'}`
    + (readers !== undefined ? `, iothread_readers=${readers}` : ''),
  argv(rp) {
    const [cmd, args] = VMMS.bhyve.argv.call(this, rp);
    const vm = args[args.length - 1];
    const poll = pollUs !== undefined ? `,iothread_poll_us=${pollUs}` : '';
    const rd = readers !== undefined ? `,iothread_readers=${readers}` : '';
    return [cmd, [...args.slice(0, -1), '-s', `3,virtio-blk,${img},ser=BENCHSERIAL,iothread=${iothread}${poll}${rd}`, vm]];
  },
});
const readerVariants = (opt.readers ?? '').split(',').filter((x) => x !== '').map(Number);
const withDisk = {
  bhyve: bhyveWith(true),
  'bhyve-exit': bhyveWith(false),
  // --poll-us N: also the iothread with iothread_poll_us=N (0: never spins)
  ...(opt['poll-us'] !== undefined ? { 'bhyve-poll': bhyveWith(true, Number(opt['poll-us'])) } : {}),
  ...Object.fromEntries(readerVariants.map((n) => [`bhyve-readers${n}`, bhyveWith(true, undefined, n)])),
  qemu: {
    ...VMMS.qemu,
    argv(rp) {
      const [cmd, args] = VMMS.qemu.argv(rp);
      return [cmd, [...args, '-drive', `file=${img},if=none,format=raw,id=d0`,
        '-device', 'virtio-blk-pci,drive=d0,disable-legacy=on,serial=BENCHSERIAL']];
    },
  },
};

/** Parse the guest's "bench:" lines into figures. */
function parse(out) {
  const num = (re) => {
    const m = out.match(re);
    return m ? m.slice(1).map(Number) : null;
  };
  const hz = num(/bench: tsc_hz (\d+)/);
  const w = num(/bench: seq-write (\d+) bytes (\d+) cycles/);
  const f = num(/bench: flush (\d+) cycles/);
  const r = num(/bench: seq-read (\d+) bytes (\d+) cycles/);
  const q32 = num(/bench: rand-read (\d+) x 4096 (\d+) cycles depth (\d+)\r?\n/);
  const q1 = num(/bench: rand-read (\d+) x 4096 (\d+) cycles depth 1\r?\n/);
  // notifies the guest sent per phase: it skips them when the device asks
  // (VIRTQ_USED_F_NO_NOTIFY while it serves), as Linux does
  const nt = num(/bench: notifies seq-write (\d+) seq-read (\d+) rand-read-qd\d+ (\d+) rand-read-qd1 (\d+)/);
  const chunk = num(/bench: seq-read \d+ bytes \d+ cycles chunk (\d+)/);
  if (!hz || !w || !f || !r || !out.includes('bench: done')) return null;
  const s = (cycles) => cycles / hz[0];
  const per = (n, reqs) => (nt && reqs ? n / reqs : null);
  return {
    writeMBs: w[0] / 1e6 / s(w[1]),
    writeFlushMBs: w[0] / 1e6 / s(w[1] + f[0]),
    readMBs: r[0] / 1e6 / s(r[1]),
    iops32: q32 ? q32[0] / s(q32[1]) : null,
    depth: q32 ? q32[2] : null,
    iops1: q1 ? q1[0] / s(q1[1]) : null,
    notifies: nt ? {
      write: per(nt[0], chunk ? w[0] / chunk[0] : 0), read: per(nt[1], chunk ? r[0] / chunk[0] : 0),
      q32: per(nt[2], q32?.[0]), q1: per(nt[3], q1?.[0]),
    } : null,
  };
}

function hostFile() {
  const path = join(BENCH_TMP, 'host-file.img');
  const chunk = Buffer.alloc(256 * 1024, 0x5a);
  const bytes = mib * 1024 * 1024;
  rmSync(path, { force: true });
  const fd = openSync(path, 'w+');
  let t = process.hrtime.bigint();
  for (let off = 0; off < bytes; off += chunk.length) writeSync(fd, chunk, 0, chunk.length, off);
  const tw = Number(process.hrtime.bigint() - t) / 1e9;
  fsyncSync(fd);
  const twf = Number(process.hrtime.bigint() - t) / 1e9;
  t = process.hrtime.bigint();
  for (let off = 0; off < bytes; off += chunk.length) readSync(fd, chunk, 0, chunk.length, off);
  const tr = Number(process.hrtime.bigint() - t) / 1e9;
  const small = Buffer.alloc(4096);
  const n = Math.max(krand * 1000, 1000);
  t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) readSync(fd, small, 0, 4096, Math.floor(Math.random() * (bytes / 4096)) * 4096);
  const tq = Number(process.hrtime.bigint() - t) / 1e9;
  closeSync(fd);
  rmSync(path, { force: true });
  return { writeMBs: bytes / 1e6 / tw, writeFlushMBs: bytes / 1e6 / twf, readMBs: bytes / 1e6 / tr, iops1: n / tq };
}

const fmt = (v, d = 0) => (v === null || v === undefined ? '–' : v.toFixed(d));
const results = {};
const notes = [];
// Runs are interleaved (one of each VMM per round) so that drift in the
// host's load affects every variant alike.
const load0 = loadavg()[0];
const active = [];
for (const [key, vmm] of Object.entries(withDisk)) {
  if (opt.only && !opt.only.split(',').some((o) => key === o || (o !== 'bhyve' && key.startsWith(o)))) continue;
  const why = vmm.available();
  if (why) {
    notes.push(`${vmm.label}: skipped (${why}).`);
    console.error(`virtio-blk: ${key}: skipped (${why})`);
    continue;
  }
  active.push({ key, vmm, runs: [], failed: null });
}
for (let i = 0; i < reps; i++) {
  // Each round starts with the next variant: the one after another's run
  // (its image's writeback, a VMM's exit) is not always the same.
  for (const a of [...active.slice(i % active.length), ...active.slice(0, i % active.length)]) {
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
    console.error(`virtio-blk: ${a.key} run ${i + 1}: write ${fmt(p.writeMBs)} MB/s, read ${fmt(p.readMBs)} MB/s, ` +
      `${fmt(p.iops32)} IOPS (QD${p.depth}), ${fmt(p.iops1)} IOPS (QD1)` +
      (p.notifies ? `; notifies per request ${['write', 'read', 'q32', 'q1'].map((k) => fmt(p.notifies[k], 2)).join(' / ')}` : ''));
  }
}
for (const { key, vmm, runs, failed } of active) {
  if (failed) {
    notes.push(`${vmm.label}: skipped, the run failed (${failed}).`);
    console.error(`virtio-blk: ${key}: failed: ${failed}`);
    continue;
  }
  const m = (k) => (runs[0][k] === null ? null : median(runs.map((x) => x[k])));
  results[key] = { label: vmm.label, writeMBs: m('writeMBs'), writeFlushMBs: m('writeFlushMBs'), readMBs: m('readMBs'), iops32: m('iops32'), iops1: m('iops1'), depth: runs[0].depth };
  if (runs.every((x) => x.notifies)) {
    const n = (k) => fmt(median(runs.map((x) => x.notifies[k] ?? 0)), 2);
    notes.push(`${vmm.label}: guest notifies per request (median; seq write / seq read / QD${runs[0].depth} / QD1): ${n('write')} / ${n('read')} / ${n('q32')} / ${n('q1')}.`);
  }
}
rmSync(img, { force: true });
const load1 = loadavg()[0];

const host = hostFile();
console.error(`virtio-blk: host: write ${fmt(host.writeMBs)} MB/s, +fsync ${fmt(host.writeFlushMBs)}, read ${fmt(host.readMBs)} MB/s, ${fmt(host.iops1)} 4 KiB preads/s`);

const row = (r) => [r.label, fmt(r.writeMBs), fmt(r.writeFlushMBs), fmt(r.readMBs), fmt(r.iops32), fmt(r.iops1)];
const rows = Object.values(results).map(row);
rows.push(['host file, node fs (the limit)', fmt(host.writeMBs), fmt(host.writeFlushMBs), fmt(host.readMBs), '–', fmt(host.iops1)]);
const ratio = (a, b, label) => {
  if (!results[a] || !results[b]) return;
  const q = (k) => (results[a][k] && results[b][k] ? `${(results[a][k] / results[b][k]).toFixed(2)}x` : '–');
  rows.push([label, q('writeMBs'), q('writeFlushMBs'), q('readMBs'), q('iops32'), q('iops1')]);
};
ratio('bhyve', 'qemu', 'ratio bhyve-kvm (iothread) / QEMU');
ratio('bhyve-exit', 'qemu', 'ratio bhyve-kvm (exit path) / QEMU');
ratio('bhyve', 'bhyve-exit', 'ratio iothread / exit path');
ratio('bhyve-poll', 'qemu', `ratio bhyve-kvm (iothread, iothread_poll_us=${opt['poll-us']}) / QEMU`);
for (const n of readerVariants) ratio('bhyve', `bhyve-readers${n}`, `ratio iothread (default readers) / iothread_readers=${n}`);
const depth = Object.values(results)[0]?.depth ?? 32;
const table = mdTable(['', 'seq write MB/s', 'write + FLUSH MB/s', 'seq read MB/s', `4 KiB rand read IOPS, QD${depth}`, '4 KiB rand read IOPS, QD1'], rows);
console.log(table);
for (const n of notes) console.log(`\n${n}`);

if (!opt['no-write']) {
  const body = [
    '## virtio-blk throughput',
    '',
    `\`node bench/virtio-blk.mjs\` — virtio-blk.rom in bench mode (ROM parameter ${mib} MiB / ${krand}k random reads) on a fresh sparse raw image per run:`,
    `${mib} MiB sequential write (256 KiB OUT requests, 16 in flight), FLUSH, ${mib} MiB sequential read (256 KiB IN requests), then`,
    ...(opt['event-idx'] ? ['(The guest negotiated VIRTIO_F_EVENT_IDX: `--event-idx`.)'] : []),
    `${krand * 1000} random 4 KiB reads at queue depth ${depth} and ${krand * 250} at depth 1, within the written ${mib} MiB.`,
    'The driver runs in ring 3 of long mode and polls the used ring (no interrupts); it notifies only when the device asks',
    '(VIRTQ_USED_F_NO_NOTIFY clear, as Linux\'s virtqueue_kick_prepare) and counts its notifies; each phase is timed in the guest with the TSC,',
    `calibrated against the RTC seconds. Median of ${reps} runs. QEMU: \`-drive format=raw,if=none -device virtio-blk-pci,disable-legacy=on\``,
    '(cache=writeback); bhyve-kvm: `-s 3,virtio-blk,IMAGE,iothread=true` (the default: queue on an iothread, notify through a KVM ioeventfd;',
    'the iothread spins on the ring between batches for an adaptive window of up to `iothread_poll_us` = 32 us, as QEMU\'s',
    'IOThreads poll, and sleeps on the eventfd after a longer wait or when it lost its CPU), with `iothread_poll_us=0`',
    '(never spins), and `iothread=false` (notify exits to the device thread, which does the I/O before the vCPU',
    'resumes). Host row: node fs on the same filesystem (256 KiB pwrite, then fsync; 256 KiB pread',
    'from the page cache; 4 KiB preads at random offsets, one at a time). On kvm_pvm hosts every notify (an MMIO write from ring 3) is a',
    'slow exit, which bounds the QD1 figure.',
    '',
    `Host: ${await hostInfo()}; load average ${load0.toFixed(1)} / ${load1.toFixed(1)} (1 min, at the start and at the end of the runs)`,
    '',
    table,
    ...notes.map((n) => `\n${n}`),
    '',
    'iothread vs exit path. Runs are interleaved (one of each variant per round). With `iothread=true` the guest\'s notify',
    'never reaches userspace (KVM_IOEVENTFD), but a sleeping iothread costs each notify a wake-up (an IPI to the other CPU)',
    'and each request a trip through the scheduler, which on a loaded host means waiting for a CPU. The adaptive spin',
    '(src/devices/virtio/adaptive-poll.ts) removes both while requests keep coming: the driver\'s notify finds no sleeper',
    '(and a driver that honours VIRTQ_USED_F_NO_NOTIFY, or avail_event under EVENT_IDX, does not notify at all), and the',
    'next request is found without a wake-up. It only pays on a host with a CPU to spare: these hosts have 2, one taken by',
    'the vCPU (the guest spins on the used ring), so the window closes after a wait longer than 32 us, and for 256 batches',
    'after a spin that lost its CPU, and the spin yields the CPU (sched_yield) between looks at the ring. The exit path does',
    'the I/O inside the exit, on the vCPU\'s own core, with no hand-off: it needs no second CPU, and turns the time the guest',
    'would spin into copying, which is why it kept the sequential columns on a loaded host. On the idle host (2026-12-03 17:00)',
    'the iothread won every column, and became the default.',
    '',
    'Before the adaptive spin (12:32 UTC, load < 2, 3 interleaved runs; seq write / write + FLUSH / seq read MB/s, QD32 / QD1',
    'IOPS): iothread 1047 / 621 / 1413 / 36351 / 51553, exit path 1437 / 704 / 1923 / 22331 / 23110, QEMU 1945 / 854 / 3112 /',
    '72001 / 33785, host file 3869 / 1306 / 7150 / – / 665518: ratios to QEMU 0.54 / 0.73 / 0.45 / 0.50 / 1.53x (iothread) and',
    '0.74 / 0.82 / 0.62 / 0.31 / 0.68x (exit).',
    'Earlier on these hosts: on the AMD ones the exit path won every column; on the Intel ones the iothread the random-read',
    'columns and the exit path the sequential ones. At load 2-3 (09:24) the ratios were iothread 0.74/0.86/0.57/0.54/0.51x',
    'and exit path 1.45/1.27/0.96/0.67/0.81x; at load 17-23 QEMU\'s single runs swung 2-4x.',
    '',
    'At load 14-17 (13:31, 5 interleaved runs of the two bhyve variants) the iothread with the spin against the exit path:',
    '0.50 / 0.53 / 0.42 / 1.81 / 1.39x. So on these hosts the request size picks the winner: 256 KiB transfers are copies the',
    'exit path does on the vCPU\'s own core (time the guest would spend spinning), 4 KiB reads are notifies the iothread takes',
    'without an exit. Next step: switch per queue between the two at run time (assign the ioeventfd while small requests',
    'come fast, deassign it and take the queue back on the device thread for large ones).',
    '',
    'The `iothread=true` run that once ended in DEVICE_NEEDS_RESET with 32 requests unanswered ("no used entry',
    '(avail 13594, used 13562, status 4f)"): the virtqueue read the driver\'s 16-bit avail idx one byte at a time while the',
    'iothread ran beside the vCPU, and saw half of a carry (0x34ff -> 0x3500 read as 0x35ff). Ring indices, flags and',
    'event fields are now read and written in one 16-bit access (unit test: test/unit/virtqueue-concurrent.test.ts).',
  ].join('\n');
  writeSection('virtio-blk', body);
  console.error('virtio-blk: wrote BENCHMARKS.md');
}
