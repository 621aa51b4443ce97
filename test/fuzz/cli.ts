// The long fuzz run: `npm run fuzz -- [--target T[,T...]] [--ops N]
// [--seed S] [--bound MS] [--watchdog MS] [--time-ms MS] [--json FILE]`.
// Targets run one after the other, each in a worker thread; a watchdog
// here ends a worker whose current operation has not returned within
// --watchdog ms and reports it as a hang with the seed and operation to
// replay. Prints per-target figures (operations, time, findings) and
// exits 1 when anything was found that is not a known open defect.
// Run it niced: `nice -n 19 npm run fuzz -- --ops 10000000 --target virtio-blk`.

import { Worker } from 'node:worker_threads';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { formatFinding, runTarget, type Finding, type RunResult } from './harness.js';
import { knownDefect } from './known.js';
import { TARGETS } from './targets/index.js';

function args(argv: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const eq = a.indexOf('=');
    if (eq > 0) m.set(a.slice(2, eq), a.slice(eq + 1));
    else if (a === '--list') m.set('list', '1');
    else m.set(a.slice(2), argv[++i] ?? '');
  }
  return m;
}

const opt = args(process.argv.slice(2));
if (opt.has('list')) {
  for (const t of TARGETS) console.log(`${t.name.padEnd(16)} ${t.surface}`);
  process.exit(0);
}
const names = (opt.get('target') ?? TARGETS.map((t) => t.name).join(',')).split(',').filter(Boolean);
for (const n of names) if (!TARGETS.some((t) => t.name === n)) { console.error(`fuzz: no target '${n}' (see --list)`); process.exit(2); }
const ops = Number(opt.get('ops') ?? 100_000);
const seed = Number(opt.get('seed') ?? 1);
const bound = Number(opt.get('bound') ?? 250);
const watchdog = Number(opt.get('watchdog') ?? 30_000);
const timeMs = opt.has('time-ms') ? Number(opt.get('time-ms')) : undefined;
const workerFile = fileURLToPath(new URL('./worker.js', import.meta.url));

function runOne(target: string): Promise<RunResult> {
  const t = TARGETS.find((x) => x.name === target)!;
  if (t.mainThread) return runTarget(t, { seed, ops, opBoundMs: bound, timeMs, maxFindings: 50 });
  return new Promise((resolve) => {
    const heartbeat = new SharedArrayBuffer(12);
    const hb = new Int32Array(heartbeat);
    const started = performance.now();
    const w = new Worker(workerFile, { workerData: { target, seed, ops, bound, heartbeat, timeMs } });
    let lastOps = -1;
    let lastChange = performance.now();
    let settled = false;
    const finish = (r: RunResult) => { if (!settled) { settled = true; clearInterval(tick); resolve(r); } };
    const tick = setInterval(() => {
      const n = Atomics.load(hb, 2) + hb[1];
      if (n !== lastOps) { lastOps = n; lastChange = performance.now(); return; }
      if (performance.now() - lastChange > watchdog) {
        const f: Finding = { target, kind: 'hang', seed: hb[0] >>> 0, op: hb[1], message: `HangError: operation did not return within ${watchdog} ms (worker ended)` };
        void w.terminate();
        finish({ target, ops: Atomics.load(hb, 2), instances: 0, ms: performance.now() - started, findings: [f], stats: {} });
      }
    }, 500);
    w.on('message', (m: { kind: string; ops?: number; result?: RunResult }) => {
      if (m.kind === 'progress') console.error(`  ${target}: ${m.ops} ops, ${((performance.now() - started) / 1000).toFixed(0)} s`);
      else if (m.kind === 'done') finish(m.result!);
    });
    w.on('error', (e) => finish({
      target, ops: Atomics.load(hb, 2), instances: 0, ms: performance.now() - started, stats: {},
      findings: [{ target, kind: 'crash', seed: hb[0] >>> 0, op: hb[1], message: `worker died: ${e.message}`, stack: e.stack }],
    }));
  });
}

const results: RunResult[] = [];
let failed = false;
for (const name of names) {
  console.error(`fuzz ${name}: ${ops} ops from seed ${seed}, bound ${bound} ms per op`);
  const r = await runOne(name);
  results.push(r);
  const fresh = r.findings.filter((f) => !knownDefect(f));
  if (fresh.length) failed = true;
  console.log(`${name.padEnd(16)} ${String(r.ops).padStart(10)} ops  ${(r.ms / 1000).toFixed(1).padStart(8)} s  ${String(Math.round(r.ops / (r.ms / 1000))).padStart(7)} ops/s  `
    + `${r.findings.length} findings${r.findings.length - fresh.length ? ` (${r.findings.length - fresh.length} known)` : ''}`);
  for (const f of r.findings) {
    const k = knownDefect(f);
    console.log(`  ${formatFinding(f)}${k ? ` -- known: ${k.tracked}` : ''}`);
    if (!k && f.stack) console.log(f.stack.split('\n').slice(1, 6).map((l) => `    ${l.trim()}`).join('\n'));
  }
  if (Object.keys(r.stats).length) console.log(`  reached: ${Object.entries(r.stats).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  if (r.slowestMs !== undefined) console.log(`  slowest operation ${r.slowestMs.toFixed(1)} ms; ${r.descheduled ?? 0} over the bound while descheduled (not hangs)`);
}
if (opt.get('json')) fs.writeFileSync(opt.get('json')!, JSON.stringify({ seed, ops, bound, results: results.map((r) => ({ ...r, findings: r.findings.map(({ stack: _s, ...f }) => f) })) }, null, 2));
process.exit(failed ? 1 : 0);
