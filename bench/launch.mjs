#!/usr/bin/env node
// Launch latency and memory: boots exit-testdev.rom (prints
// "hello from testdev rom", exits with status 33) and measures
//   - launch-to-first-byte: time from spawning the VMM until the "h" of
//     "hello" has arrived on its stdout (COM1),
//   - total wall time until the VMM exited,
//   - peak RSS (GNU time's %M: the largest resident set of the process and
//     of its waited-for children).
// Each figure is the median of REPS runs.
//
// Usage: node bench/launch.mjs [--reps 5] [--only bhyve|qemu] [--no-write]
// Writes the "launch" section of BENCHMARKS.md (unless --no-write).
import { parseArgs } from 'node:util';
import {
  buildGuests, rom, VMMS, runVmm, describeFailure, median, mdTable, hostInfo, writeSection, TESTDEV_OK,
} from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    reps: { type: 'string', default: '5' },
    only: { type: 'string' },
    'no-write': { type: 'boolean', default: false },
  },
});
const reps = Number(opt.reps);
if (!(reps >= 1)) {
  console.error('launch: need --reps >= 1');
  process.exit(4);
}

await buildGuests();
const romPath = rom('exit-testdev');

const rows = [];
const notes = [];
for (const [key, vmm] of Object.entries(VMMS)) {
  if (opt.only && opt.only !== key) continue;
  const why = vmm.available();
  if (why) {
    notes.push(`${vmm.label}: skipped (${why}).`);
    console.error(`launch: ${key}: skipped (${why})`);
    continue;
  }
  const first = [];
  const wall = [];
  const rss = [];
  let failed = null;
  for (let i = 0; i < reps; i++) {
    const r = await runVmm(vmm, romPath, { marker: 'h', timeoutMs: 60_000 });
    if (r.code !== TESTDEV_OK || !r.stdout.includes('hello from testdev rom') || r.firstMs === null) {
      failed = describeFailure(r, TESTDEV_OK);
      break;
    }
    first.push(r.firstMs);
    wall.push(r.wallMs);
    if (r.maxRssKb !== null) rss.push(r.maxRssKb);
    console.error(`launch: ${key} run ${i + 1}: first byte ${r.firstMs.toFixed(1)} ms, ` +
      `exit ${r.wallMs.toFixed(1)} ms, peak RSS ${r.maxRssKb ?? '?'} KiB`);
  }
  if (failed) {
    notes.push(`${vmm.label}: skipped, the run failed (${failed}).`);
    console.error(`launch: ${key}: failed: ${failed}`);
    continue;
  }
  rows.push([
    vmm.label,
    median(first).toFixed(1),
    median(wall).toFixed(1),
    rss.length ? (median(rss) / 1024).toFixed(1) : 'n/a',
  ]);
}

const table = mdTable(['VMM', 'first byte on COM1, ms', 'exit, ms', 'peak RSS, MiB'], rows);
console.log(table);
for (const n of notes) console.log(`\n${n}`);

if (!opt['no-write']) {
  const body = [
    '## Launch to first byte, peak memory',
    '',
    '`node bench/launch.mjs` — boots exit-testdev.rom; time from spawn until the first',
    'byte of "hello" arrives on the VMM\'s stdout (COM1), time until the VMM exited, and',
    `peak RSS (GNU time %M, process and children), median of ${reps} runs.`,
    '',
    `Host: ${await hostInfo()}`,
    '',
    rows.length ? table : '_No results._',
    ...notes.map((n) => `\n${n}`),
  ].join('\n');
  writeSection('launch', body);
  console.error('launch: wrote BENCHMARKS.md');
}
