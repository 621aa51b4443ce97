// Runs a fuzz target: fresh instances, each seeded, driven one guest
// operation at a time, with these oracles after every operation:
//   - no exception escapes a device model (a guest can never make the VMM
//     throw); a RangeError counts as an out-of-bounds host access;
//   - faults the device caught itself (virtio's needs-reset path) must be
//     guest errors (VirtqueueError, GuestMemoryError), not host bugs that
//     the catch-all merely hid (see oracle.ts);
//   - no operation takes longer than the per-operation bound (a hang);
//   - the target's own invariants (check()).
// A finding ends its instance; the run goes on with the next seed, so a long
// run counts every distinct failure. Instance k of a run with base seed S
// has seed S + k: `--target T --seed S+k --ops N` replays it.

import { Rng } from './rng.js';
import { HangError, releaseClocks } from './machine.js';
import { hiddenFaults } from './oracle.js';

export interface FuzzInstance {
  /** One guest operation (a register access, a chain made available and
   * notified, a scribble over guest RAM, time passing, ...). */
  step(): void | Promise<void>;
  /** Target invariants; throws InvariantError when one is broken. */
  check?(): void;
  close?(): void;
  /** What the last operation was, when the target can say it briefly
   * (added to findings). */
  lastOp?: string;
  /** Counters of what the operations reached (summed over instances), to
   * show the fuzzer gets past the front door. */
  stats?(): Record<string, number>;
}

export interface FuzzTarget {
  name: string;
  /** What is fuzzed, one line. */
  surface: string;
  create(rng: Rng): FuzzInstance | Promise<FuzzInstance>;
  /** Must run on the main thread (uses process-wide state such as
   * umask); its operations are asynchronous, so the per-operation bound
   * still catches a hang there. */
  mainThread?: boolean;
  /** Operations per instance before a fresh one is made (default 20000). */
  instanceOps?: number;
}

export class InvariantError extends Error {
  constructor(message: string) { super(message); this.name = 'InvariantError'; }
}

export type FindingKind = 'crash' | 'out-of-bounds' | 'hang' | 'invariant' | 'hidden-fault';

export interface Finding {
  target: string;
  kind: FindingKind;
  /** Seed of the instance and the index of the failing operation in it. */
  seed: number;
  op: number;
  message: string;
  stack?: string;
}

export interface RunOptions {
  seed: number;
  /** Stop after this many operations in total. */
  ops: number;
  /** Stop after this much wall time (ms) even if `ops` were not all run. */
  timeMs?: number;
  /** An operation taking longer than this (ms) is a hang. */
  opBoundMs?: number;
  /** Most findings before the run stops. */
  maxFindings?: number;
  /** Written before every operation: [instance seed, op index in it,
   * operations run in total] (a watchdog thread reads it to name the
   * operation that hung). */
  heartbeat?: Int32Array;
  /** Called now and then with the operations run so far. */
  progress?: (ops: number, seed: number, op: number) => void;
}

export interface RunResult {
  target: string;
  ops: number;
  instances: number;
  ms: number;
  findings: Finding[];
  stats: Record<string, number>;
  /** Wall time of the slowest operation. */
  slowestMs?: number;
  /** Operations over the bound that used less CPU than the bound (the
   * process was descheduled on a loaded host): not hangs. */
  descheduled?: number;
}

function classify(e: unknown): { kind: FindingKind; message: string; stack?: string } {
  const err = e instanceof Error ? e : new Error(String(e));
  const kind: FindingKind = e instanceof HangError ? 'hang' : e instanceof InvariantError ? 'invariant'
    : e instanceof RangeError ? 'out-of-bounds' : 'crash';
  return { kind, message: `${err.name}: ${err.message}`, stack: err.stack };
}

/** Waits for an asynchronous operation, at most `ms`. On a loaded host the
 * operation's other end (a socket peer, a worker) may simply not get the CPU:
 * the wait is extended while this process used less than `ms` of CPU, up to
 * 30 x `ms` of wall time, so only a real hang (or a busy loop) is reported. */
async function bounded(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  try {
    await Promise.race([p, new Promise<void>((_, reject) => {
      const check = () => {
        const used = process.cpuUsage(cpu0);
        const busy = (used.user + used.system) / 1000 >= ms;
        if (busy || performance.now() - t0 >= 30 * ms) {
          reject(new HangError(`asynchronous operation did not finish within ${ms} ms${busy ? '' : ` (${Math.round(performance.now() - t0)} ms of wall time)`}`));
        } else {
          timer = setTimeout(check, ms);
        }
      };
      timer = setTimeout(check, ms);
    })]);
  } finally {
    clearTimeout(timer);
  }
}

export async function runTarget(target: FuzzTarget, opts: RunOptions): Promise<RunResult> {
  const start = performance.now();
  const bound = opts.opBoundMs ?? 1000;
  const perInstance = target.instanceOps ?? 20_000;
  const findings: Finding[] = [];
  const stats: Record<string, number> = {};
  let total = 0;
  let instances = 0;
  let slowest = 0;
  let descheduled = 0;
  let cpuMark = process.cpuUsage();
  const deadline = opts.timeMs === undefined ? Infinity : start + opts.timeMs;
  while (total < opts.ops && performance.now() < deadline && findings.length < (opts.maxFindings ?? 20)) {
    const seed = (opts.seed + instances) >>> 0;
    instances++;
    const rng = new Rng(seed);
    let op = 0;
    let inst: FuzzInstance | undefined;
    const fail = (e: unknown) => {
      const c = classify(e);
      if (inst?.lastOp) c.message += ` [${inst.lastOp}]`;
      findings.push({ target: target.name, seed, op, ...c });
    };
    hiddenFaults.length = 0;
    try {
      inst = await target.create(rng);
    } catch (e) {
      fail(e);
      releaseClocks();
      continue;
    }
    const n = Math.min(perInstance, opts.ops - total);
    try {
      for (; op < n; op++) {
        const hb = opts.heartbeat;
        if (hb) { hb[0] = seed | 0; hb[1] = op; Atomics.store(hb, 2, total + op); }
        const t0 = performance.now();
        const pending = inst.step();
        if (pending) await bounded(pending, bound);
        const dt = performance.now() - t0;
        if (dt > slowest) slowest = dt;
        if (dt > bound) {
          // On a loaded host a niced fuzzer is descheduled for longer than
          // the bound: it is a hang only if this process used that much CPU
          // (since the last sample, at most 64 operations ago).
          const used = process.cpuUsage(cpuMark);
          if ((used.user + used.system) / 1000 >= bound) throw new HangError(`operation took ${dt.toFixed(0)} ms (bound ${bound} ms)`);
          descheduled++;
        }
        if ((op & 0x3f) === 0) cpuMark = process.cpuUsage();
        if (hiddenFaults.length > 0) {
          const h = hiddenFaults.splice(0);
          findings.push({ target: target.name, seed, op, kind: 'hidden-fault', message: h[0].message, stack: h[0].stack });
          break;
        }
        inst.check?.();
        if ((op & 0x3f) === 0 && performance.now() > deadline) { op++; break; }
      }
    } catch (e) {
      fail(e);
      op++;
    } finally {
      total += op;
      try {
        for (const [k, v] of Object.entries(inst.stats?.() ?? {})) stats[k] = (stats[k] ?? 0) + v;
        inst.close?.();
      } catch (e) { fail(e); }
      releaseClocks();
    }
    opts.progress?.(total, seed, op);
  }
  return { target: target.name, ops: total, instances, ms: performance.now() - start, findings, stats, slowestMs: slowest, descheduled };
}

export function formatFinding(f: Finding): string {
  return `${f.target} ${f.kind} (seed ${f.seed}, op ${f.op}): ${f.message}`;
}
