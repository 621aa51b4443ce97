// What keeps bhyve's peak RSS down at start-up, checked without measuring
// memory: nothing the launch runs is hot enough for V8 to compile it with
// TurboFan. One TurboFan compile, even of a 4-line loop, runs V8's
// optimising compiler on a platform thread for the first time in the
// process: ~3 MiB of the node binary's code touched and of zone memory
// malloc'd there, about 5% of the whole process at -c 1 (issue 15). The
// launch's busiest loop is the firmware tables' byte sum
// (src/firmware/bytes.ts); at -c 8, each vCPU's CPUID entries
// (src/sys/kvm.ts setCpuid) and the searches for libuv's pool threads
// (src/sys/threadpool.ts readersOf). `--trace-opt` prints each function V8
// marks.
import fs from 'node:fs';
import path from 'node:path';

import { execa } from 'execa';
import { describe, expect, it } from 'vitest';

import { BHYVE, ROOT, bhyveArgs, kvmUnavailable, rom, vmName } from '../support/bhyve.js';

const skipWhy = kvmUnavailable();

describe.skipIf(skipWhy)(`start-up tiering${skipWhy ? ` (skipped: ${skipWhy})` : ''}`, { timeout: 120_000 }, () => {
  it.each([1, 8])('a -c %i launch to the guest\'s exit compiles nothing with TurboFan', async (cpus) => {
    // As runBhyve, with node's flag (V8 then refuses the code caches, which
    // changes what compiles when, not how hot anything is).
    const rundir = path.join(ROOT, 'build', 'run');
    fs.mkdirSync(rundir, { recursive: true, mode: 0o700 });
    const r = await execa(process.execPath, ['--trace-opt', BHYVE, ...bhyveArgs(rom('exit-testdev'), vmName(`tiering${cpus}`), { cpus })],
      { reject: false, timeout: 90_000, stdin: 'ignore', env: { BHYVE_RUNDIR: rundir } });
    expect(r.stdout).toContain('hello from testdev rom');
    expect(r.exitCode).toBe(33);
    const marked = `${r.stdout}\n${r.stderr}`.split('\n').filter((l) => /^\[marking .* for optimization to TURBOFAN/.test(l));
    expect(marked).toEqual([]);
  });
});
