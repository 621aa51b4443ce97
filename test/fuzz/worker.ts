// Runs one fuzz target in a worker thread for cli.ts, which watches its
// heartbeat: an operation that never returns (an endless loop in a device)
// cannot be interrupted from inside the thread that runs it.
import { parentPort, workerData } from 'node:worker_threads';
import { runTarget } from './harness.js';
import { targetByName } from './targets/index.js';

interface Job { target: string; seed: number; ops: number; bound: number; heartbeat: SharedArrayBuffer; timeMs?: number }

const job = workerData as Job;
const target = targetByName(job.target);
if (!target) throw new Error(`no fuzz target ${job.target}`);
let last = 0;
const result = await runTarget(target, {
  seed: job.seed, ops: job.ops, opBoundMs: job.bound, timeMs: job.timeMs, maxFindings: 50,
  heartbeat: new Int32Array(job.heartbeat),
  progress: (ops) => {
    const now = Date.now();
    if (now - last > 5000) { last = now; parentPort!.postMessage({ kind: 'progress', ops }); }
  },
});
parentPort!.postMessage({ kind: 'done', result });
