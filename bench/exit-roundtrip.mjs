#!/usr/bin/env node
// Port-I/O exit round trip: bench-exit.rom performs N `outb` to port 0x80
// (each one a KVM exit handled in the VMM's userspace). The ROM is patched
// with two values of N; the cost per exit is the difference of the two wall
// times divided by the difference of the N's, so start-up and shut-down
// costs cancel. Each point is the median of REPS runs.
//
// Each VMM runs twice: as it starts by default (bhyve confines itself with
// seccomp and Landlock; QEMU does not) and with the other's choice (bhyve
// -o security.sandbox=false, QEMU -sandbox on), so that a gap of the
// system-call filter is told apart from one of the exit path.
//
// Usage: node bench/exit-roundtrip.mjs [--n1 20000] [--n2 200000] [--reps 7]
//          [--rom bench-exit|bench-exit-user] [--only PREFIX] [--no-write]
// --only runs the rows whose key starts with PREFIX (bhyve: bhyve and
// bhyve-nosandbox; qemu-sandbox: that row alone).
// --rom bench-exit-user runs the loop in ring 3 of long mode instead of real
// mode (native on VT-x/AMD-V hosts; on kvm_pvm hosts it is much slower).
// Writes the "exit-roundtrip" section of BENCHMARKS.md ("exit-roundtrip-user"
// for bench-exit-user) unless --no-write.
import { parseArgs } from 'node:util';
import {
  buildGuests, patchedRom, VMMS, bhyveVmm, qemuVmm, runVmm, describeFailure, median, mdTable, hostInfo, writeSection,
  TESTDEV_OK,
} from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    n1: { type: 'string', default: '20000' },
    n2: { type: 'string', default: '200000' },
    reps: { type: 'string', default: '7' },
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
// Rounds interleave the VMMs (each round runs every VMM at both N), so a
// drift of the shared host's speed lands on both alike.
const SETUPS = {
  bhyve: VMMS.bhyve,
  qemu: VMMS.qemu,
  'bhyve-nosandbox': bhyveVmm(undefined, 'bhyve-kvm, -o security.sandbox=false', ['-o', 'security.sandbox=false']),
  'qemu-sandbox': qemuVmm('QEMU, -sandbox on', ['-sandbox', 'on']),
};
const live = [];
for (const [key, vmm] of Object.entries(SETUPS)) {
  if (opt.only && !key.startsWith(opt.only)) continue;
  const why = vmm.available();
  if (why) {
    notes.push(`${vmm.label}: skipped (${why}).`);
    console.error(`exit-roundtrip: ${key}: skipped (${why})`);
    continue;
  }
  live.push({ key, vmm, times: { [n1]: [], [n2]: [] }, failed: null });
}
for (let i = 0; i < reps; i++) {
  for (const v of live) {
    for (const n of [n1, n2]) {
      if (v.failed) continue;
      const r = await runVmm(v.vmm, roms[n]);
      if (r.code !== TESTDEV_OK || !r.stdout.includes('done')) {
        v.failed = `N=${n}: ${describeFailure(r, TESTDEV_OK)}`;
        console.error(`exit-roundtrip: ${v.key}: failed: ${v.failed}`);
        continue;
      }
      v.times[n].push(r.wallMs);
      console.error(`exit-roundtrip: ${v.key} N=${n} round ${i + 1}: ${r.wallMs.toFixed(1)} ms`);
    }
  }
}
const usPerExit = {};
for (const v of live) {
  if (v.failed) {
    notes.push(`${v.vmm.label}: skipped, the run failed (${v.failed}).`);
    continue;
  }
  const med = { [n1]: median(v.times[n1]), [n2]: median(v.times[n2]) };
  usPerExit[v.key] = ((med[n2] - med[n1]) * 1000) / (n2 - n1);
  rows.push([v.vmm.label, med[n1].toFixed(0), med[n2].toFixed(0), usPerExit[v.key].toFixed(2)]);
}
const ratio = (a, b, what) => {
  if (usPerExit[a] && usPerExit[b]) notes.push(`Ratio bhyve-kvm / QEMU, ${what}: ${(usPerExit[a] / usPerExit[b]).toFixed(2)}x.`);
};
ratio('bhyve', 'qemu', 'each as it starts by default');
ratio('bhyve', 'qemu-sandbox', 'both with their system-call filter');
ratio('bhyve-nosandbox', 'qemu', 'neither with one');

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
    `us per exit = (wall(N=${n2}) - wall(N=${n1})) / ${n2 - n1}, so start-up cost cancels; median of ${reps} interleaved rounds per point (each round runs every row).`,
    'bhyve-kvm confines itself by default (seccomp filter, Landlock; `security.sandbox`), QEMU only with `-sandbox on`: every system call, KVM_RUN included, then passes the filter, so each VMM runs both ways.',
    user
      ? 'On VT-x/AMD-V hosts the loop runs natively; on kvm_pvm hosts each ring-3 exit of this non-PVM guest is far slower than a real-mode one.'
      : 'On kvm_pvm hosts the figure includes KVM\'s emulation of the loop\'s instructions (real-mode code is interpreted: 3 emulated instructions an exit), the same for both VMMs.',
    '',
    `Host: ${await hostInfo()}`,
    '',
    rows.length ? table : '_No results._',
    ...notes.map((n) => `\n${n}`),
  ].join('\n');
  writeSection(user ? 'exit-roundtrip-user' : 'exit-roundtrip', body);
  console.error('exit-roundtrip: wrote BENCHMARKS.md');
}
