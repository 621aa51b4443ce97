// libuv's threadpool under the sandbox. no_new_privs, capabilities and
// Landlock belong to each thread, and libuv starts its pool threads once
// and keeps them: threads started before the sandbox (bhyve finds the pool
// for the APs at -c 2 and more, a tap's poller starts it too) would keep
// root's capabilities and no Landlock, yet every async fs call of any
// JavaScript thread (fs.promises, fs.readFile with a callback) and the
// APs' KVM_RUN (vcpu.ap_model=pool) run there. So each pool thread takes
// the main thread's steps itself, as a vCPU thread does:
//   1. every pool thread is parked in a blocking read of one eventfd
//      (starting the pool if nothing has yet);
//   2. the steps (no_new_privs, landlock_restrict_self on the main thread's
//      ruleset, capset to nothing, gettid) and a read of a second eventfd
//      are queued, then one parked thread is woken: it is the only free
//      thread, and libuv's queue is first in first out, so it runs the
//      steps in order and parks again in the second read;
//   3. once /proc shows it parked there, the next one is woken; after the
//      last, the second eventfd releases them all.
// Every pool thread must answer gettid once, so a thread that ran steps
// twice (or none) fails the sandbox instead of leaving a hole. The bounding
// set is left: it only limits what an exec could gain, and exec is refused
// (no_new_privs, the seccomp filter, Landlock's EXECUTE).

import fs from 'node:fs';
import { closeFd, EFD_CLOEXEC, EFD_SEMAPHORE, eventfd, eventfdWrite } from '../../sys/eventfd.js';
import { libcFunc } from '../../sys/libc.js';
import { interruptPoolWaits, readersOf, releaseAtExit, resumePoolWaits, threadpoolSize } from '../../sys/threadpool.js';
import { closeRaw, capsetNoneOnPool, gettidOnPool, landlockRestrictSelfOnPool, prctlOnPool, PR_SET_NO_NEW_PRIVS } from './sandbox-sys.js';
import { createRuleset, TSYNC_ABI, type LandlockRule } from './landlock.js';
import { SandboxError, type SandboxPlan } from './sandbox.js';
import { trace } from '../startup-trace.js';

const SYS_READ = 0; // x86_64
const readFn = libcFunc('int64_t read(int fd, _Out_ uint8_t *buf, size_t count)');
/** How long the pool may take to come to rest (a backend's wait on a pool
 * thread ends at once when interrupted; a stuck one fails the sandbox).
 * Generous: a loaded host may take long to schedule fresh threads. */
const PARK_TIMEOUT_MS = 10_000;

export interface PoolConfinement {
  /** Landlock ABI; 0: none. */
  landlockAbi: number;
  landlockRules: readonly LandlockRule[];
  handleNet: boolean;
  /** Landlock went to every thread already (TSYNC): skip that step. */
  landlockDone: boolean;
}

/** Steps 1-3 of the sandbox (sandbox.ts) on libuv's pool threads: bhyve
 * starts this as soon as its backends are open (it overlaps the vCPU
 * threads' set-up) and enterSandbox waits for it. It must run before the
 * main thread's own Landlock (it reads /proc). Rejects with a SandboxError. */
export async function confinePool(plan: SandboxPlan): Promise<number[]> {
  try {
    return await confinePoolThreads({
      landlockAbi: plan.landlockAbi, landlockRules: plan.landlockRules, handleNet: !plan.sockets,
      landlockDone: plan.landlockAbi >= TSYNC_ABI,
    });
  } catch (e) {
    throw new SandboxError(`cannot sandbox bhyve: libuv's threadpool: ${(e as Error).message} (-o security.sandbox=false runs without)`);
  }
}

/** Confines every thread of libuv's pool; resolves to their ids, or
 * rejects with why not. */
export async function confinePoolThreads(c: PoolConfinement, size = threadpoolSize()): Promise<number[]> {
  let ruleset = -1;
  if (c.landlockAbi > 0 && !c.landlockDone) {
    const r = createRuleset(c.landlockAbi, c.landlockRules, c.handleNet);
    if ('error' in r) throw new Error(`Landlock: ${r.error}`);
    ruleset = r.fd;
  }
  const first = eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE);
  const second = eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE);
  const parked: Promise<number>[] = [];
  const park = (fd: number): void => {
    const buf = new Uint8Array(8);
    parked.push(new Promise((resolve) => readFn.async(fd, buf, 8, (_e: unknown, r: number | bigint) => resolve(Number(r)))));
  };
  interruptPoolWaits();
  // An exit meanwhile must not wait for the parked threads (threadpool.ts).
  const unhook = releaseAtExit(() => { eventfdWrite(first, size); eventfdWrite(second, size); });
  try {
    for (let i = 0; i < size; i++) park(first);
    await until(() => readersOf(first).length === size, () => `${readersOf(first).length} of libuv's ${size} threads came to rest`);
    trace('main: sandbox: pool parked');
    const done = new Set<number>();
    for (let i = 0; i < size; i++) {
      // Queued while every thread is parked; run by the one woken next.
      const steps = Promise.all([
        prctlOnPool(PR_SET_NO_NEW_PRIVS, 1),
        ruleset >= 0 ? landlockRestrictSelfOnPool(ruleset) : Promise.resolve(0),
        capsetNoneOnPool(),
        gettidOnPool(),
      ]);
      park(second);
      eventfdWrite(first, 1);
      const [nnp, landlock, caps, tid] = await steps;
      if (nnp < 0) throw new Error(`no_new_privs on a pool thread: errno ${-nnp}`);
      if (landlock < 0) throw new Error(`Landlock on a pool thread: landlock_restrict_self failed (errno ${-landlock})`);
      if (caps < 0) throw new Error(`capset on a pool thread: errno ${-caps}`);
      if (done.has(tid)) throw new Error(`pool thread ${tid} took the steps twice`);
      done.add(tid);
      await until(() => readingFd(tid, second), () => `pool thread ${tid} did not park again`);
    }
    trace('main: sandbox: pool confined');
    return [...done];
  } finally {
    // Whatever happened: every read ends (a count per queued read).
    resumePoolWaits();
    eventfdWrite(first, size);
    eventfdWrite(second, size);
    await Promise.all(parked);
    unhook();
    closeFd(first);
    closeFd(second);
    if (ruleset >= 0) closeRaw(ruleset);
  }
}

/** True when thread `tid` of this process is blocked in read(fd). */
function readingFd(tid: number, fd: number): boolean {
  try {
    return fs.readFileSync(`/proc/self/task/${tid}/syscall`, 'latin1').startsWith(`${SYS_READ} 0x${fd.toString(16)} `);
  } catch {
    return false;
  }
}

async function until(cond: () => boolean, what: () => string): Promise<void> {
  const end = Date.now() + PARK_TIMEOUT_MS;
  for (let spins = 0; !cond(); spins++) {
    if (Date.now() > end) throw new Error(what());
    // A few quick looks (the answer is usually there), then 1 ms apart.
    await new Promise((r) => (spins < 4 ? setImmediate(r) : setTimeout(r, 1)));
  }
}
