// An exit nobody planned for while libuv's pool threads are parked
// (src/sys/threadpool.ts releaseAtExit): Node's teardown joins every pool
// thread, so a thread left blocked in a read only our JavaScript would end
// held the process forever (seen: a bhyve whose main thread met an
// uncaught exception while the sandbox was confining the pool, still there
// an hour later). In a throwaway Node process: the exception is reported
// and the process exits with status 1, the search for the pool's threads
// and the sandbox's confinement of the pool each in progress.
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');
const DIST = path.join(ROOT, 'dist');
const skip = fs.existsSync(path.join(DIST, 'vmm/sandbox/pool-threads.js')) ? undefined : 'dist/ is not built: run npm run build';

/** Runs `body` (an ES module) in a child with `size` pool threads; a
 * timer throws 'boom' `afterMs` after it starts the work. */
async function childThatThrows(body: string, size: number): Promise<{ exitCode?: number; timedOut: boolean; stderr: string; parked: string }> {
  const script = `
const D = ${JSON.stringify(DIST)};
const fs = await import('node:fs');
await fs.promises.readFile('/etc/hostname'); // libuv's pool starts now
/** Threads of this process blocked in read(2): the parked pool threads. */
const parkedNow = () => fs.readdirSync('/proc/self/task').filter((t) => {
  try { return fs.readFileSync('/proc/self/task/' + t + '/syscall', 'latin1').startsWith('0 '); } catch { return false; }
}).length;
${body}
// Throw once the pool's threads are parked (the work is still waiting on them).
const start = Date.now();
const timer = setInterval(() => {
  const n = parkedNow();
  if (n > 0 || Date.now() - start > 2000) { clearInterval(timer); process.stderr.write('parked ' + n + '\\n'); throw new Error('boom'); }
}, 0);
`;
  const r = await execa(process.execPath, ['--input-type=module', '-e', script], {
    reject: false, timeout: 15_000, env: { UV_THREADPOOL_SIZE: String(size) },
  });
  return { exitCode: r.exitCode, timedOut: r.timedOut, stderr: r.stderr, parked: /parked (\d+)/.exec(r.stderr)?.[1] ?? '' };
}

describe.skipIf(skip)('an uncaught exception while the pool threads are parked', () => {
  it('during the search for the pool threads (findPoolThreads): the process exits with status 1', async () => {
    const r = await childThatThrows(`
const { findPoolThreads } = await import(D + '/sys/threadpool.js');
void findPoolThreads(6);
`, 6);
    expect(r.timedOut, r.stderr).toBe(false);
    expect(Number(r.parked)).toBeGreaterThan(0);
    expect(r.stderr).toContain('Error: boom');
    expect(r.exitCode).toBe(1);
  });

  it('during the sandbox\'s confinement of the pool (confinePoolThreads): the process exits with status 1', async () => {
    const r = await childThatThrows(`
const { confinePoolThreads } = await import(D + '/vmm/sandbox/pool-threads.js');
// landlockAbi 0: no_new_privs, capset to nothing and gettid on each pool thread.
void confinePoolThreads({ landlockAbi: 0, landlockRules: [], handleNet: false, landlockDone: true }, 6).catch(() => {});
`, 6);
    expect(r.timedOut, r.stderr).toBe(false);
    expect(Number(r.parked)).toBeGreaterThan(0);
    expect(r.stderr).toContain('Error: boom');
    expect(r.exitCode).toBe(1);
  });
});
