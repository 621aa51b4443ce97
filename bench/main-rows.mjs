#!/usr/bin/env node
// `npm run bench`: the main rows of BENCHMARKS.md, bhyve-kvm against QEMU,
// one script after the other (each runs both VMMs interleaved, prints its
// ratios and rewrites its own section of BENCHMARKS.md):
//   exit-roundtrip   port-I/O exit round trip
//   launch           launch to exit and peak RSS at -c 1 and -c 8, APs up at -c 16
//   ap-exits         an application processor's exit
//   virtio-net       guest TX / RX frames per second on a tap     (root)
//   virtio-net-tcp   TCP between guest (lwIP) and host on a tap   (root)
// The network rows need root (a network namespace and a tap); without it
// they are skipped with that reason, and the others still run. The disk
// benches (virtio-blk.mjs, disk-controller.mjs) take several minutes each
// and are run by name.
//
// Usage: node bench/main-rows.mjs [--only NAME,NAME] [--no-write]
// Exits 1 when a script failed.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: {
    only: { type: 'string' },
    'no-write': { type: 'boolean', default: false },
  },
});

const HERE = dirname(fileURLToPath(import.meta.url));
const SCRIPTS = [
  { name: 'exit-roundtrip' },
  { name: 'launch' },
  { name: 'ap-exits' },
  { name: 'virtio-net', root: true },
  { name: 'virtio-net-tcp', root: true },
];
const known = new Set(SCRIPTS.map((s) => s.name));
const only = opt.only?.split(',').filter((n) => n !== '');
for (const n of only ?? []) {
  if (!known.has(n)) {
    console.error(`bench: unknown script '${n}' (${[...known].join(', ')})`);
    process.exit(4);
  }
}

const isRoot = process.getuid?.() === 0;
const outcome = [];
let failed = false;
for (const s of SCRIPTS) {
  if (only && !only.includes(s.name)) continue;
  if (s.root && !isRoot) {
    outcome.push(`${s.name}: skipped (needs root: a network namespace and a tap)`);
    continue;
  }
  console.error(`bench: ${s.name}`);
  const args = [join(HERE, `${s.name}.mjs`), ...(opt['no-write'] ? ['--no-write'] : [])];
  const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
  if (r.status !== 0) failed = true;
  outcome.push(`${s.name}: ${r.status === 0 ? 'done' : `failed (${r.status ?? r.signal})`}`);
}
console.error(`bench: ${outcome.join('; ')}`);
process.exit(failed ? 1 : 0);
