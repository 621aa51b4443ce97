#!/usr/bin/env node
// What an exit costs on an application processor: smp-exits.rom at -c 2,
// whose AP writes port 0x80 N times (each write a KVM exit the VMM handles;
// in bhyve the port's device lives on vCPU 0's thread, so an AP's access is
// forwarded there in both AP models). us per exit = (wall(N2) - wall(N1)) /
// (N2 - N1), start-up cancelling out. bhyve with APs on libuv's pool
// (vcpu.ap_model=pool: the exit comes back to the main thread through the
// pool) and on a thread each (thread), and QEMU. Interleaved rounds, medians.
//
// Usage: node bench/ap-exits.mjs [--n1 0] [--n2 5000] [--reps 5] [--no-write]
// Writes the "ap-exits" section of BENCHMARKS.md unless --no-write.
import { parseArgs } from 'node:util';
import {
  buildGuests, patchedRom, VMMS, runVmm, describeFailure, median, mdTable, hostInfo, writeSection, TESTDEV_OK,
} from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    n1: { type: 'string', default: '0' },
    n2: { type: 'string', default: '5000' },
    reps: { type: 'string', default: '5' },
    'no-write': { type: 'boolean', default: false },
  },
});
const n1 = Number(opt.n1);
const n2 = Number(opt.n2);
const reps = Number(opt.reps);
if (!(n2 > n1 && n1 >= 0 && reps >= 1)) {
  console.error('ap-exits: need 0 <= --n1 < --n2 and --reps >= 1');
  process.exit(4);
}
await buildGuests();
const roms = [patchedRom('smp-exits', n1), patchedRom('smp-exits', n2)];

function bhyve(extra) {
  return {
    ...VMMS.bhyve,
    argv(rp) {
      const [cmd, args] = VMMS.bhyve.argv.call(this, rp);
      const a = [...args];
      a[a.indexOf('-c') + 1] = '2';
      a.splice(a.length - 1, 0, ...extra);
      return [cmd, a];
    },
  };
}
const qemu = {
  ...VMMS.qemu,
  argv(rp) {
    const [cmd, args] = VMMS.qemu.argv(rp);
    const a = [...args];
    a[a.indexOf('-smp') + 1] = '2';
    return [cmd, a];
  },
};
const configs = [
  { label: 'QEMU (qemu-system-x86_64 -accel kvm)', run: qemu },
  { label: 'bhyve-kvm, AP on the pool', run: bhyve([]) },
  { label: 'bhyve-kvm, AP on a thread (-o vcpu.ap_model=thread)', run: bhyve(['-o', 'vcpu.ap_model=thread']) },
];
for (const c of configs) c.walls = [[], []];

for (let i = 0; i < reps; i++) {
  for (const c of configs) {
    for (const [k, rp] of roms.entries()) {
      if (c.failed) continue;
      const r = await runVmm(c.run, rp, { timeoutMs: 300_000 });
      if (r.code !== TESTDEV_OK || !r.stdout.includes('all 2 cpus up')) {
        c.failed = describeFailure(r, TESTDEV_OK);
        console.error(`ap-exits: ${c.label}: failed: ${c.failed}`);
        continue;
      }
      c.walls[k].push(r.wallMs);
      console.error(`ap-exits: round ${i + 1}: ${c.label}, N=${k ? n2 : n1}: ${r.wallMs.toFixed(1)} ms`);
    }
  }
}

const rows = configs.map((c) => {
  if (c.failed) return [c.label, `failed: ${c.failed}`, '', ''];
  const [a, b] = c.walls.map(median);
  return [c.label, a.toFixed(1), b.toFixed(1), ((b - a) * 1000 / (n2 - n1)).toFixed(2)];
});
const table = mdTable(['VMM', `wall N=${n1}, ms`, `wall N=${n2}, ms`, 'us per AP exit'], rows);
console.log(table);

if (!opt['no-write']) {
  writeSection('ap-exits', [
    '## Exit round trip on an application processor',
    '',
    '`node bench/ap-exits.mjs` — smp-exits.rom at -c 2: the AP writes port 0x80 N times; us per exit =',
    `(wall(N=${n2}) - wall(N=${n1})) / ${n2 - n1}; ${reps} interleaved rounds, medians. In bhyve port 0x80's`,
    'device lives on vCPU 0\'s thread: an AP\'s access is forwarded there in both AP models, and on the',
    'pool the exit also travels pool thread -> main thread -> pool thread. The host is shared and loaded.',
    '',
    `Host: ${await hostInfo()}`,
    '',
    table,
  ].join('\n'));
  console.error('ap-exits: wrote BENCHMARKS.md');
}
