#!/usr/bin/env node
// The cost of translated DMA: virtio-iommu.rom in bench mode (its ROM
// parameter K: K*1000 random 4 KiB reads at queue depth 32, K*250 at depth
// 1, see test/guests/virtio/guest-iommu.c) with the virtio-blk behind the
// virtio-iommu (VIRTIO_F_ACCESS_PLATFORM, every ring, descriptor and
// buffer address an IOVA translated through the guest's mappings) and not
// (guest physical addresses), on both VMMs with the same machine shape.
// Translated runs map the rings, headers and buffers once (static
// mappings, what a driver with long-lived DMA buffers does) and then also
// run K*250 depth-1 reads in the DMA API's strict mode: MAP before and
// UNMAP after every request (two IOMMU requests per I/O). Polling, no
// interrupts. Each figure is the median of REPS interleaved runs.
//
// Usage: node bench/virtio-iommu.mjs [--krand 4] [--reps 3] [--no-write]
// Writes the "virtio-iommu" section of BENCHMARKS.md unless --no-write.
import { parseArgs } from 'node:util';
import { closeSync, ftruncateSync, openSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  buildGuests, patchedRom, VMMS, runVmm, describeFailure, median, mdTable, hostInfo, writeSection, TESTDEV_OK, BENCH_TMP,
} from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    krand: { type: 'string', default: '4' },
    reps: { type: 'string', default: '3' },
    'no-write': { type: 'boolean', default: false },
  },
});
const krand = Number(opt.krand);
const reps = Number(opt.reps);
if (!(krand >= 1 && krand <= 1000 && reps >= 1)) {
  console.error('virtio-iommu: need 1 <= --krand <= 1000, --reps >= 1');
  process.exit(4);
}

await buildGuests();
const romPath = patchedRom('virtio-iommu', krand);
const img = join(BENCH_TMP, 'virtio-iommu.img');
function freshImage() {
  rmSync(img, { force: true });
  const fd = openSync(img, 'w');
  ftruncateSync(fd, 8 << 20);
  closeSync(fd);
}

const bhyve = (behind) => ({
  ...VMMS.bhyve,
  label: `bhyve-kvm, ${behind ? 'behind virtio-iommu' : 'direct'}`,
  argv(rp) {
    const [cmd, args] = VMMS.bhyve.argv.call(this, rp);
    const vm = args[args.length - 1];
    return [cmd, [...args.slice(0, -1), '-s', '3,virtio-iommu', '-s', `4,virtio-blk,${img}${behind ? ',iommu=true' : ''}`, vm]];
  },
});
const qemu = (behind) => ({
  ...VMMS.qemu,
  label: `QEMU, ${behind ? 'behind virtio-iommu-pci' : 'direct'}`,
  argv(rp) {
    const [cmd, args] = VMMS.qemu.argv(rp);
    return [cmd, [...args, '-device', 'virtio-iommu-pci,addr=3', '-drive', `file=${img},if=none,format=raw,id=d0`,
      '-device', `virtio-blk-pci,drive=d0,addr=4,disable-legacy=on${behind ? ',iommu_platform=on' : ''}`]];
  },
});
const variants = {
  'bhyve-direct': bhyve(false), 'bhyve-iommu': bhyve(true), 'qemu-direct': qemu(false), 'qemu-iommu': qemu(true),
};

function parse(out) {
  const num = (re) => { const m = out.match(re); return m ? m.slice(1).map(Number) : null; };
  const hz = num(/bench: tsc_hz (\d+)/);
  const q32 = num(/bench: rand-read (\d+) x 4096 (\d+) cycles depth 32/);
  const q1 = num(/bench: rand-read (\d+) x 4096 (\d+) cycles depth 1\r?\n/);
  const strict = num(/bench: strict-read (\d+) x 4096 (\d+) cycles depth 1/);
  const pairs = num(/bench: map-unmap (\d+) pairs (\d+) cycles/);
  const mode = out.match(/bench: dma (\w+)/)?.[1];
  if (!hz || !q32 || !q1 || !out.includes('bench: done')) return null;
  const iops = (x) => (x ? x[0] / (x[1] / hz[0]) : null);
  return { mode, iops32: iops(q32), iops1: iops(q1), strict1: iops(strict), pairs: iops(pairs) };
}

const fmt = (v) => (v === null || v === undefined ? '–' : v.toFixed(0));
const active = Object.entries(variants).map(([key, vmm]) => ({ key, vmm, runs: [], failed: null }));
for (let i = 0; i < reps; i++) {
  for (const a of active) {
    if (a.failed) continue;
    freshImage();
    const r = await runVmm(a.vmm, romPath);
    const p = r.code === TESTDEV_OK ? parse(r.stdout) : null;
    const want = a.key.endsWith('iommu') ? 'translated' : 'direct';
    if (!p || p.mode !== want) {
      const last = r.stdout.split(/\r?\n/).filter((l) => l).pop() ?? '';
      a.failed = `${describeFailure(r, TESTDEV_OK)}${p ? `; dma ${p.mode}, expected ${want}` : ''}${last ? `; guest's last line: "${last.trim()}"` : ''}`;
      console.error(`virtio-iommu: ${a.key}: ${a.failed}`);
      continue;
    }
    a.runs.push(p);
    console.error(`virtio-iommu: ${a.key} run ${i + 1}: ${fmt(p.iops32)} IOPS (QD32), ${fmt(p.iops1)} (QD1), strict ${fmt(p.strict1)}`);
  }
}
rmSync(img, { force: true });
const res = {};
const notes = [];
for (const a of active) {
  if (a.failed) { notes.push(`${a.vmm.label}: skipped, the run failed (${a.failed}).`); continue; }
  const m = (k) => (a.runs[0][k] === null ? null : median(a.runs.map((x) => x[k])));
  res[a.key] = { label: a.vmm.label, iops32: m('iops32'), iops1: m('iops1'), strict1: m('strict1'), pairs: m('pairs') };
}
const rows = Object.values(res).map((r) => [r.label, fmt(r.iops32), fmt(r.iops1), fmt(r.strict1), fmt(r.pairs)]);
const ratio = (a, b, label) => {
  if (!res[a] || !res[b]) return;
  const q = (k, kb = k) => (res[a][k] && res[b][kb] ? `${(res[a][k] / res[b][kb]).toFixed(2)}x` : '–');
  rows.push([label, q('iops32'), q('iops1'), q('strict1', 'iops1'), a.endsWith('iommu') && b.endsWith('iommu') ? q('pairs') : '–']);
};
ratio('bhyve-iommu', 'bhyve-direct', 'bhyve-kvm: translated / direct');
ratio('qemu-iommu', 'qemu-direct', 'QEMU: translated / direct');
ratio('bhyve-iommu', 'qemu-iommu', 'translated: bhyve-kvm / QEMU');
const table = mdTable(['', '4 KiB rand read IOPS, QD32', 'QD1', 'QD1, strict (MAP + UNMAP per I/O)', 'MAP + UNMAP pairs/s alone'], rows);
console.log(table);
for (const n of notes) console.log(`\n${n}`);

if (!opt['no-write']) {
  writeSection('virtio-iommu', [
    '## virtio-iommu: the cost of translated DMA (bench/virtio-iommu.mjs)',
    '',
    `\`node bench/virtio-iommu.mjs\` — virtio-iommu.rom in bench mode (ROM parameter ${krand}): ${krand * 1000} random 4 KiB reads at`,
    `queue depth 32 and ${krand * 250} at depth 1 within the first 4 MiB of a fresh sparse 8 MiB raw image, polling the used ring,`,
    'timed in the guest with the TSC. "behind": the virtio-blk offers VIRTIO_F_ACCESS_PLATFORM and every address the guest gives',
    'it is an IOVA (guest physical + 1 GiB) mapped through the virtio-iommu (bhyve-kvm: `-s 3,virtio-iommu -s 4,virtio-blk,IMAGE,iommu=true`;',
    'QEMU: `-device virtio-iommu-pci -device virtio-blk-pci,...,iommu_platform=on`); rings, headers and buffers are mapped once',
    '(static mappings). "direct": the same machine with the disk not behind the IOMMU. The strict column maps each buffer before its',
    'request and unmaps it after (the DMA API\'s strict mode), so each I/O also costs two IOMMU requests (each a notify exit and a',
    'polled completion); its ratio is against the direct QD1 figure. The last column is the IOMMU alone: MAP + UNMAP request pairs',
    'per second, nothing else. Both bhyve-kvm variants serve the queue on the device thread after the notify exit (`iothread=false`,',
    'the default; behind the IOMMU the iothread is never used, its worker maps guest RAM by guest physical address).',
    `Median of ${reps} interleaved runs.`,
    '',
    `Host: ${await hostInfo()}`,
    '',
    table,
    ...notes.map((n) => `\n${n}`),
    '',
    'Static mappings cost our model a binary search per descriptor (the last mapping hit is cached) and a generation compare per',
    'ring access; next to the notify exit and the host read that each request costs here, that is within the noise. In strict',
    'mode the two extra round trips to the IOMMU per I/O dominate, on both VMMs. These hosts are shared (2 CPUs, load average',
    '15-18 while this ran): each figure includes time the VMM spent descheduled, and consecutive runs differ by 2-3x. A run',
    'profiled at a quieter moment (`node --cpu-prof bin/bhyve ...`) did a MAP + UNMAP pair in 128 us (QEMU here: 81-160 us)',
    'and a static-mapped QD1 read in 50 us, with the IOMMU\'s request handling and the translation too small to show in the',
    'vCPU thread\'s profile (nearly all of it is KVM_RUN). Read the ratios as an upper bound of the cost.',
  ].join('\n'));
  console.error('virtio-iommu: wrote BENCHMARKS.md');
}
