// sys/loop-waker.ts (native/loop-waker.c), in a child process whose main
// thread plays vCPU 0: it arms the waker, then blocks in a system call a
// signal ends (poll(2) with no fds, standing in for KVM_RUN), and the test
// checks that each kind of event-loop work ends the wait early, with
// immediate_exit set, once per arming; and that nothing else does.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BUILT = fs.existsSync(path.join(ROOT, 'dist/native/loop-waker.so'));

const SCRIPT = `
import { LoopWaker } from ${JSON.stringify(path.join(ROOT, 'dist/sys/loop-waker.js'))};
import { anonymousMapping, libcFunc } from ${JSON.stringify(path.join(ROOT, 'dist/sys/libc.js'))};
import { installKickHandler } from ${JSON.stringify(path.join(ROOT, 'dist/sys/kick-signal.js'))};
import { KVM_RUN_OFF } from ${JSON.stringify(path.join(ROOT, 'dist/sys/kvm-abi.js'))};
import { Worker } from 'node:worker_threads';
installKickHandler();
// KVM_RUN's stand-in: ppoll with no fds, SIGUSR2 blocked except during the
// wait (as KVM_SET_SIGNAL_MASK would have it), so that a kick sent before
// the wait began still ends it at once, as immediate_exit does for KVM_RUN.
const sigmask = libcFunc('int pthread_sigmask(int how, const uint8_t *set, uint8_t *old)');
const syscall = libcFunc('long syscall(long n, void *fds, unsigned long nfds, const uint8_t *ts, const uint8_t *mask, unsigned long size)');
const usr2 = new Uint8Array(128);
usr2[1] = 0x08; // SIGUSR2 (12): bit 11
sigmask(0 /* SIG_BLOCK */, usr2, null);
const usleep = libcFunc('int usleep(uint32_t us)');
const run = anonymousMapping(4096, 'run page');
const waker = LoopWaker.start(run);
const results = {};
/** Arms, then blocks as KVM_RUN would (at most ms): how long it took,
 * whether immediate_exit was set and the waker fired. */
function block(ms) {
  run.bytes[KVM_RUN_OFF.immediate_exit] = 0;
  if (!waker.arm()) return { due: true };
  const ts = new BigInt64Array([BigInt(Math.floor(ms / 1000)), BigInt((ms % 1000) * 1e6)]);
  const t0 = performance.now();
  syscall(271 /* ppoll */, null, 0, new Uint8Array(ts.buffer), new Uint8Array(8), 8);
  return { ms: Math.round(performance.now() - t0), exitSet: run.bytes[KVM_RUN_OFF.immediate_exit] === 1, fired: waker.fired() };
}
// A turn of the loop, resumed from a timer (from an immediate, libuv's idle
// handle would still say work is due: main-thread-vcpu.ts).
const turn = () => new Promise((r) => setTimeout(r, 5));
// Nothing to do: a ref'd handle keeps the loop alive, no timer, no event.
const keepAlive = setInterval(() => {}, 1e8);
await turn();
results.idle = block(300);
await turn();
// Still armed from the idle wait (nothing woke the loop): a new, earlier
// deadline reaches the waiting thread.
// A timer due in 100 ms.
let timerRan = false;
setTimeout(() => { timerRan = true; }, 100);
results.timer = block(2000);
await new Promise((r) => setTimeout(r, 150));
results.timerRan = timerRan;
await turn();
// A completion on libuv's pool (as an AP's KVM_RUN or a tap waker ends).
let poolDone = false;
usleep.async(50_000, () => { poolDone = true; });
results.pool = block(2000);
await new Promise((r) => setTimeout(r, 100));
results.poolDone = poolDone;
await turn();
// A message from another thread.
const w = new Worker('setTimeout(() => require("node:worker_threads").parentPort.postMessage(1), 100)', { eval: true, execArgv: [] });
const got = new Promise((r) => w.once('message', r));
await new Promise((r) => w.once('online', r));
await turn();
results.message = block(5000);
await got;
await turn();
// Once fired, the waker stays quiet until armed again.
const kicks = waker.kicks();
setTimeout(() => {}, 20);
results.timer2 = block(2000);
block2(200);
function block2(ms) { const ts = new BigInt64Array([0n, BigInt(ms * 1e6)]); syscall(271, null, 0, new Uint8Array(ts.buffer), new Uint8Array(8), 8); }
results.kicksOnce = waker.kicks() - kicks;
// An immediate queued: work is due at once, arm says so.
await turn();
setImmediate(() => {});
results.immediate = block(10);
await turn();
// A signal a wait started after still ends it (the kick's window).
setTimeout(() => {}, 1);
poll2();
function poll2() { results.early = block(2000); }
await turn();
waker.stop();
clearInterval(keepAlive);
await w.terminate();
process.stdout.write(JSON.stringify(results));
`;

describe.skipIf(!BUILT)(`the loop waker${BUILT ? '' : ' (skipped: dist/native/loop-waker.so not built: no C compiler)'}`, () => {
  it('ends a blocked wait when the loop has a timer, a pool completion or a message due, once per arming, and not otherwise', () => {
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', SCRIPT], { encoding: 'utf8', timeout: 30_000 });
    const r = JSON.parse(out) as Record<string, { ms?: number; exitSet?: boolean; fired?: boolean; due?: boolean } | boolean | number>;
    const idle = r.idle as { ms: number; exitSet: boolean; fired: boolean };
    expect(idle.ms).toBeGreaterThanOrEqual(290); // nothing cut the wait short
    expect(idle.exitSet).toBe(false);
    expect(idle.fired).toBe(false);
    for (const k of ['timer', 'pool', 'message']) {
      const e = r[k] as { ms: number; exitSet: boolean; fired: boolean };
      expect(e.exitSet, k).toBe(true);
      expect(e.fired, k).toBe(true);
      expect(e.ms, k).toBeLessThan(1000); // woken, not timed out
      expect(e.ms, k).toBeGreaterThanOrEqual(40);
    }
    expect(r.timerRan).toBe(true);
    expect(r.poolDone).toBe(true);
    expect(r.kicksOnce).toBe(1);
    expect(r.immediate).toEqual({ due: true });
    const early = r.early as { ms: number; exitSet: boolean };
    expect(early.exitSet).toBe(true);
    expect(early.ms).toBeLessThan(1000);
  });
});
