#!/usr/bin/env node
// Port-I/O exit round trip: bench-exit.rom performs N `outb` to port 0x80
// (each one a KVM exit handled in the VMM's userspace). The ROM is patched
// with two values of N; the cost per exit is the difference of the two wall
// times divided by the difference of the N's, so start-up and shut-down
// costs cancel. Each point is the median of REPS runs.
//
// Usage: node bench/exit-roundtrip.mjs [--n1 20000] [--n2 200000] [--reps 5]
//          [--rom bench-exit|bench-exit-user] [--only bhyve|qemu] [--no-write]
// --rom bench-exit-user runs the loop in ring 3 of long mode instead of real
// mode (native on VT-x/AMD-V hosts; on kvm_pvm hosts it is much slower).
// Writes the "exit-roundtrip" section of BENCHMARKS.md ("exit-roundtrip-user"
// for bench-exit-user) unless --no-write.
import { parseArgs } from 'node:util';
import {
  buildGuests, patchedRom, VMMS, runVmm, describeFailure, median, mdTable, hostInfo, writeSection, TESTDEV_OK,
} from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    n1: { type: 'string', default: '20000' },
    n2: { type: 'string', default: '200000' },
    reps: { type: 'string', default: '5' },
    rom: { type: 'string', default: 'bench-exit' },
    only: { type: 'string' },
    'no-write': { type: 'boolean', default: false },
  },
});
const n1 = Number(opt.n1);
const n2 = Number(opt.n2);
const reps = Number(opt.reps);
if (!['bench-exit', 'bench-exit-user'].includes(opt.rom)) {
  console.error('exit-roundtrip: --rom must be bench-exit or bench-exit-user');
  process.exit(4);
}
if (!(n2 > n1 && n1 >= 0 && reps >= 1)) {
  console.error('exit-roundtrip: need 0 <= --n1 < --n2 and --reps >= 1');
  process.exit(4);
}

await buildGuests();
const roms = { [n1]: patchedRom(opt.rom, n1), [n2]: patchedRom(opt.rom, n2) };
const user = opt.rom === 'bench-exit-user';

const rows = [];
const notes = [];
for (const [key, vmm] of Object.entries(VMMS)) {
  if (opt.only && opt.only !== key) continue;
  const why = vmm.available();
  if (why) {
    notes.push(`${vmm.label}: skipped (${why}).`);
    console.error(`exit-roundtrip: ${key}: skipped (${why})`);
    continue;
  }
  const med = {};
  let failed = null;
  for (const n of [n1, n2]) {
    const times = [];
    for (let i = 0; i < reps && !failed; i++) {
      const r = await runVmm(vmm, roms[n]);
      if (r.code !== TESTDEV_OK || !r.stdout.includes('done')) {
        failed = `N=${n}: ${describeFailure(r, TESTDEV_OK)}`;
        break;
      }
      times.push(r.wallMs);
      console.error(`exit-roundtrip: ${key} N=${n} run ${i + 1}: ${r.wallMs.toFixed(1)} ms`);
    }
    if (failed) break;
    med[n] = median(times);
  }
  if (failed) {
    notes.push(`${vmm.label}: skipped, the run failed (${failed}).`);
    console.error(`exit-roundtrip: ${key}: failed: ${failed}`);
    continue;
  }
  const usPerExit = ((med[n2] - med[n1]) * 1000) / (n2 - n1);
  rows.push([vmm.label, med[n1].toFixed(0), med[n2].toFixed(0), usPerExit.toFixed(2)]);
}

const table = mdTable(['VMM', `wall ms, N=${n1}`, `wall ms, N=${n2}`, 'us per exit'], rows);
console.log(table);
for (const n of notes) console.log(`\n${n}`);

if (!opt['no-write']) {
  const body = [
    user ? '## Port-I/O exit round trip, ring 3 of long mode' : '## Port-I/O exit round trip',
    '',
    user
      ? '`node bench/exit-roundtrip.mjs --rom bench-exit-user` — bench-exit-user.rom performs N `outb` to port 0x80 from ring 3 (IOPL=3) of 64-bit long mode;'
      : '`node bench/exit-roundtrip.mjs` — bench-exit.rom performs N `outb` to port 0x80 in real mode;',
    `us per exit = (wall(N=${n2}) - wall(N=${n1})) / ${n2 - n1}, so start-up cost cancels; median of ${reps} runs per point.`,
    user
      ? 'On VT-x/AMD-V hosts the loop runs natively; on kvm_pvm hosts each ring-3 exit of this non-PVM guest is far slower than a real-mode one.'
      : 'On kvm_pvm hosts the figure includes KVM\'s emulation of the two loop instructions (real-mode code is interpreted), the same for both VMMs.',
    '',
    `Host: ${await hostInfo()}`,
    '',
    rows.length ? table : '_No results._',
    ...notes.map((n) => `\n${n}`),
  ].join('\n');
  writeSection(user ? 'exit-roundtrip-user' : 'exit-roundtrip', body);
  console.error('exit-roundtrip: wrote BENCHMARKS.md');
}
