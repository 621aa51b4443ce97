#!/usr/bin/env node
// Launch latency, memory and AP start-up, bhyve against QEMU, interleaved
// (one run of every configuration per round, so host load hits all alike):
//   - exit-testdev.rom at -c 1 and -c 8: the time from spawning the VMM until
//     the "h" of its "hello" arrives on COM1, until the VMM exited, its peak
//     RSS (GNU time %M) and CPU time (user + system);
//   - smp-exits.rom at -c 16 (and -c 64, the pool model and QEMU): the BSP
//     prints "BSP 0 up", starts the other 15 (63) APs,
//     each checks in without an exit to the VMM, and the BSP exits once all
//     are in: the whole run, and "APs up", the time from the "B" on COM1 to
//     the VMM's exit (an upper bound: it holds the guest's INIT/SIPI delays
//     of ~11 ms and the VMM's shut-down).
// bhyve runs with both AP models (vcpu.ap_model=pool, the default, and
// thread), and at -c 1 also with vCPU 0 on a worker thread instead of the
// main thread (vcpu.bsp_model=thread) and from tsc's output instead of the
// esbuild bundle (BHYVE_BUNDLE=0); "per added vCPU" is (RSS at -c 8 - RSS at -c 1) / 7.
// Each figure is the median of REPS rounds. bhyve runs as a program (its #!
// line drops NODE_EXTRA_CA_CERTS); the rows for scale are Node's floors and,
// when the host sets NODE_EXTRA_CA_CERTS, the same with it and `node bin/bhyve`.
//
// Usage: node bench/launch.mjs [--reps 7] [--no-write]
// Writes the "launch" section of BENCHMARKS.md (unless --no-write).
import { parseArgs } from 'node:util';
import {
  buildGuests, rom, patchedRom, VMMS, runVmm, describeFailure, median, mdTable, hostInfo, writeSection, TESTDEV_OK,
} from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    reps: { type: 'string', default: '7' },
    'no-write': { type: 'boolean', default: false },
  },
});
const reps = Number(opt.reps);
if (!(reps >= 1)) {
  console.error('launch: need --reps >= 1');
  process.exit(4);
}

await buildGuests();
const testdev = rom('exit-testdev');
const smp = patchedRom('smp-exits', 0);

/** bhyve with -c `cpus` and extra -o settings. */
function bhyve(cpus, extra = []) {
  return {
    ...VMMS.bhyve,
    argv(rp) {
      const [cmd, args] = VMMS.bhyve.argv.call(this, rp);
      const a = [...args];
      a[a.indexOf('-c') + 1] = String(cpus);
      a.splice(a.length - 1, 0, ...extra);
      return [cmd, a];
    },
  };
}

function qemu(cpus) {
  return {
    ...VMMS.qemu,
    argv(rp) {
      const [cmd, args] = VMMS.qemu.argv(rp);
      const a = [...args];
      a[a.indexOf('-smp') + 1] = String(cpus);
      return [cmd, a];
    },
  };
}

/** A Node process that does nothing (`-e 0`) or starts one worker thread
 * that does nothing: the floors of a design with a main thread and vCPU 0's
 * thread. Without `certs`, NODE_EXTRA_CA_CERTS is left out of its
 * environment as bin/bhyve's #! line leaves it out. */
function nodeFloor(script) {
  return {
    argv: () => [process.execPath, ['-e', script]],
    async cleanup() {},
  };
}
const WORKER = "new (require('node:worker_threads').Worker)('0', { eval: true })";
const CERTS = process.env.NODE_EXTRA_CA_CERTS ? ' (NODE_EXTRA_CA_CERTS set: Node parses it)' : '';
const NO_CERTS = CERTS ? { unset: ['NODE_EXTRA_CA_CERTS'] } : {};

const POOL = 'bhyve-kvm, APs on the pool';
const THREAD = 'bhyve-kvm, APs on threads (-o vcpu.ap_model=thread)';
const QEMU = 'QEMU';
const configs = [
  { vmm: 'Node floor: node -e 0', what: '-', run: nodeFloor('0'), rom: testdev, ok: '', code: 0, ...NO_CERTS },
  { vmm: 'Node floor: node starting one worker thread', what: '-', run: nodeFloor(WORKER), rom: testdev, ok: '', code: 0, ...NO_CERTS },
  ...(CERTS ? [
    { vmm: `Node floor: node -e 0${CERTS}`, what: '-', run: nodeFloor('0'), rom: testdev, ok: '', code: 0 },
    { vmm: `Node floor: node starting one worker thread${CERTS}`, what: '-', run: nodeFloor(WORKER), rom: testdev, ok: '', code: 0 },
    { vmm: `bhyve-kvm run by \`node bin/bhyve\`${CERTS}`, what: 'exit-testdev, -c 1', run: { ...bhyve(1), byNode: true }, rom: testdev, ok: 'hello from testdev rom' },
  ] : []),
  { vmm: QEMU, what: 'exit-testdev, -c 1', run: qemu(1), rom: testdev, ok: 'hello from testdev rom' },
  { vmm: POOL, what: 'exit-testdev, -c 1', run: bhyve(1), rom: testdev, ok: 'hello from testdev rom' },
  {
    vmm: 'bhyve-kvm, vCPU 0 on a thread of its own (-o vcpu.bsp_model=thread)', what: 'exit-testdev, -c 1',
    run: bhyve(1, ['-o', 'vcpu.bsp_model=thread']), rom: testdev, ok: 'hello from testdev rom',
  },
  {
    vmm: 'bhyve-kvm, tsc output (BHYVE_BUNDLE=0)', what: 'exit-testdev, -c 1', run: bhyve(1), rom: testdev,
    ok: 'hello from testdev rom', env: { BHYVE_BUNDLE: '0' },
  },
  { vmm: QEMU, what: 'exit-testdev, -c 8', run: qemu(8), rom: testdev, ok: 'hello from testdev rom' },
  { vmm: POOL, what: 'exit-testdev, -c 8', run: bhyve(8), rom: testdev, ok: 'hello from testdev rom' },
  { vmm: THREAD, what: 'exit-testdev, -c 8', run: bhyve(8, ['-o', 'vcpu.ap_model=thread']), rom: testdev, ok: 'hello from testdev rom' },
  { vmm: QEMU, what: 'smp-exits, -c 16', run: qemu(16), rom: smp, ok: 'all 16 cpus up', marker: 'B' },
  { vmm: POOL, what: 'smp-exits, -c 16', run: bhyve(16), rom: smp, ok: 'all 16 cpus up', marker: 'B' },
  {
    vmm: THREAD, what: 'smp-exits, -c 16', run: bhyve(16, ['-o', 'vcpu.ap_model=thread']), rom: smp,
    ok: 'all 16 cpus up', marker: 'B',
  },
  // -c 64: that a large guest stays practical (the pool model only: a
  // thread per AP is the slow start this bench was written to show).
  { vmm: QEMU, what: 'smp-exits, -c 64', run: qemu(64), rom: smp, ok: 'all 64 cpus up', marker: 'B' },
  { vmm: POOL, what: 'smp-exits, -c 64', run: bhyve(64), rom: smp, ok: 'all 64 cpus up', marker: 'B' },
];
for (const c of configs) c.samples = { first: [], wall: [], rss: [], cpu: [], afterFirst: [] };

const available = VMMS.bhyve.available();
if (available) {
  console.error(`launch: bhyve: ${available}`);
  process.exit(4);
}
for (let i = 0; i < reps; i++) {
  for (const c of configs) {
    if (c.failed) continue;
    // runVmm's child inherits process.env: a row's own variables for its run.
    const saved = { ...process.env };
    for (const [k, v] of Object.entries(c.env ?? {})) process.env[k] = v;
    for (const k of c.unset ?? []) delete process.env[k];
    const r = await runVmm(c.run, c.rom, { marker: c.marker ?? 'h', timeoutMs: 120_000 });
    for (const k of [...Object.keys(c.env ?? {}), ...(c.unset ?? [])]) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
    if (r.code !== (c.code ?? TESTDEV_OK) || !r.stdout.includes(c.ok)) {
      c.failed = describeFailure(r, c.code ?? TESTDEV_OK);
      console.error(`launch: ${c.vmm}, ${c.what}: failed: ${c.failed}`);
      continue;
    }
    if (r.firstMs !== null) {
      c.samples.first.push(r.firstMs);
      c.samples.afterFirst.push(r.wallMs - r.firstMs);
    }
    c.samples.wall.push(r.wallMs);
    if (r.maxRssKb !== null) c.samples.rss.push(r.maxRssKb / 1024);
    if (r.cpuMs !== null) c.samples.cpu.push(r.cpuMs);
    console.error(`launch: round ${i + 1}: ${c.vmm}, ${c.what}: exit ${r.wallMs.toFixed(1)} ms, ` +
      `peak RSS ${((r.maxRssKb ?? 0) / 1024).toFixed(1)} MiB, CPU ${(r.cpuMs ?? NaN).toFixed(0)} ms`);
  }
}

const med = (xs) => (xs.length ? median(xs) : NaN);
const fmt = (x) => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
const find = (vmm, what) => configs.find((c) => c.vmm === vmm && c.what === what);
const rows = configs.map((c) => [
  c.vmm, c.what,
  c.failed ? `failed: ${c.failed}` : fmt(med(c.samples.first)),
  fmt(med(c.samples.wall)), fmt(med(c.samples.rss)), fmt(med(c.samples.cpu)),
]);
const table = mdTable(['VMM', 'guest, vCPUs', 'first byte on COM1 ("h", smp: "B"), ms', 'exit, ms', 'peak RSS, MiB', 'CPU, ms'], rows);

const derived = [];
for (const vmm of [QEMU, POOL, THREAD]) {
  const one = find(vmm, 'exit-testdev, -c 1') ?? find(POOL, 'exit-testdev, -c 1');
  const eight = find(vmm, 'exit-testdev, -c 8');
  const sixteen = find(vmm, 'smp-exits, -c 16');
  const sixtyFour = find(vmm, 'smp-exits, -c 64');
  derived.push([
    vmm,
    fmt((med(eight.samples.rss) - med(one.samples.rss)) / 7),
    fmt(med(eight.samples.wall) / med(one.samples.wall)),
    fmt(med(sixteen.samples.afterFirst)),
    sixtyFour ? fmt(med(sixtyFour.samples.afterFirst)) : '-',
    sixtyFour ? fmt(med(sixtyFour.samples.rss)) : '-',
  ]);
}
const derivedTable = mdTable(['VMM', 'peak RSS per added vCPU, MiB', 'exit at -c 8 / at -c 1', 'APs up at -c 16 ("BSP 0 up" on COM1 to exit), ms', 'APs up at -c 64, ms', 'peak RSS at -c 64, MiB'], derived);
const ratio = (a, b) => fmt(a / b);
const p1 = find(POOL, 'exit-testdev, -c 1');
const q1 = find(QEMU, 'exit-testdev, -c 1');
const w1 = find('Node floor: node starting one worker thread', '-');
const ratios = `bhyve/QEMU at -c 1: exit ${ratio(med(p1.samples.wall), med(q1.samples.wall))}x, ` +
  `peak RSS ${ratio(med(p1.samples.rss), med(q1.samples.rss))}x, CPU ${ratio(med(p1.samples.cpu), med(q1.samples.cpu))}x. ` +
  `bhyve at -c 1 above the one-worker Node floor (both without NODE_EXTRA_CA_CERTS): exit +${fmt(med(p1.samples.wall) - med(w1.samples.wall))} ms, ` +
  `peak RSS +${fmt(med(p1.samples.rss) - med(w1.samples.rss))} MiB, CPU +${fmt(med(p1.samples.cpu) - med(w1.samples.cpu))} ms.`;
console.log(`${table}\n\n${derivedTable}\n\n${ratios}`);

if (!opt['no-write']) {
  const body = [
    '## Launch to first byte, peak memory, APs',
    '',
    '`node bench/launch.mjs` — exit-testdev.rom at -c 1 and -c 8: time from spawn until the first',
    'byte of "hello" arrives on the VMM\'s stdout (COM1), until the VMM exited, peak RSS (GNU time',
    '%M) and CPU time (user + system); smp-exits.rom at -c 16 and -c 64: the APs started by INIT/SIPI',
    'check in without an exit to the VMM, then the BSP exits. bhyve with both AP models (`vcpu.ap_model`; -c 64 the default pool only),',
    'run as a program (bin/bhyve\'s #! line, as a shell runs it: without NODE_EXTRA_CA_CERTS). The',
    'Node floors: `node -e 0`, and a Node process that starts one worker thread doing nothing',
    '(bhyve\'s design has a main thread and vCPU 0\'s); when NODE_EXTRA_CA_CERTS is set on the host,',
    'also with it, and bhyve run by `node bin/bhyve`, which keeps it.',
    `Interleaved: each of ${reps} rounds runs every row once; medians. The host is shared with other`,
    'engineers\' builds and tests while this runs: absolute times move with its load, the ratios',
    'within one run much less.',
    '',
    `Host: ${await hostInfo()}`,
    '',
    table,
    '',
    derivedTable,
    '',
    ratios,
  ].join('\n');
  writeSection('launch', body);
  console.error('launch: wrote BENCHMARKS.md');
}
