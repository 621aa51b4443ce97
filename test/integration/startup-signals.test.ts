// Issue 9 defect 4 on real KVM: signals while bhyve starts. SIGTERM and
// SIGINT at any moment of start-up end bhyve with its documented status
// (128 + signal; the echo ROM never enables ACPI, so SIGTERM is not a
// power-button press) and leave no VM object behind; no signal is lost
// (the run would hang). An error after the vCPU threads started (a
// directory where the control socket goes) gives one line and status 4,
// never a death by bhyve's own SIGUSR2 kick (status 140).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';

import { BHYVE, bhyveArgs, kvmUnavailable, rom } from '../support/bhyve.js';

const skipWhy = kvmUnavailable();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'startup-signals-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const errors = (stderr: string): string[] => stderr.split('\n').filter((l) => l !== '' && !/^bhyve: warning:/.test(l));

describe.skipIf(skipWhy)(`signals at start-up${skipWhy ? ` (skipped: ${skipWhy})` : ''}`, { timeout: 120_000 }, () => {
  it.each([['SIGTERM', 143], ['SIGINT', 130]] as const)('%s at any moment of start-up: status %d, nothing left behind', async (sig, status) => {
    const rundir = path.join(tmp, sig);
    // From before Node has loaded anything to a running guest: some time
    // after the spawn, some time after the VM directory appeared, after the
    // guest's greeting.
    const moments = [
      ...[0, 50, 150, 300].map((ms) => ({ after: 'spawn', ms })),
      ...[0, 10, 40, 100, 200].map((ms) => ({ after: 'dir', ms })),
      { after: 'greeting', ms: 0 },
    ];
    for (const [i, m] of moments.entries()) {
      const name = `sig${i}`;
      const p = execa(BHYVE, bhyveArgs(rom('echo'), name), {
        reject: false, env: { BHYVE_RUNDIR: rundir }, timeout: 20_000, stripFinalNewline: false,
      });
      let out = '';
      p.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
      const end = Date.now() + 15_000;
      if (m.after === 'dir') {
        while (!fs.existsSync(path.join(rundir, name)) && Date.now() < end) await new Promise((r) => setImmediate(r));
      } else if (m.after === 'greeting') {
        while (!out.includes('echo ready') && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      }
      await new Promise((r) => setTimeout(r, m.ms));
      process.kill(p.pid!, sig);
      const r = await p;
      const what = `${sig} ${m.ms} ms after the ${m.after}`;
      expect(r.timedOut, what).toBe(false);
      // Before Node runs bin/bhyve's first line only the default action can
      // act (no VM object exists yet; the shell sees the same status); once
      // the VM directory exists, bhyve itself must end the run.
      if (r.signal !== undefined && m.after === 'spawn') {
        expect(r.signal, what).toBe(sig);
      } else {
        expect(r.signal, what).toBeUndefined();
        expect(r.exitCode, what).toBe(status);
      }
      expect(errors(r.stderr), what).toEqual([]);
      expect(fs.existsSync(rundir) ? fs.readdirSync(rundir) : [], what).toEqual([]);
    }
  });

  it('a directory in place of the control socket: one line, status 4, no SIGUSR2 death, lock released', async () => {
    const rundir = path.join(tmp, 'sockdir');
    const dir = path.join(rundir, 'sockdir');
    fs.mkdirSync(path.join(dir, 'control.sock'), { recursive: true, mode: 0o700 });
    for (let i = 0; i < 5; i++) {
      const r = await execa(BHYVE, bhyveArgs(rom('echo'), 'sockdir'), {
        reject: false, env: { BHYVE_RUNDIR: rundir }, timeout: 20_000, stdin: 'ignore',
      });
      expect(r.signal, `try ${i}`).toBeUndefined();
      expect(r.exitCode, `try ${i}`).toBe(4);
      expect(errors(r.stderr)).toEqual([`bhyve: cannot create the control socket ${dir}/control.sock: a directory is in its place`]);
      // The VM existed before this bhyve, so it stays; its pid file does not.
      expect(fs.readdirSync(dir).sort()).toEqual(['control.sock', 'lock', 'memory']);
    }
  });
});
