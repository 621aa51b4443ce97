// The vCPU kick's signal (SIGUSR2, src/sys/kick-signal.ts) must be harmless
// on any thread at any moment once bhyve can kick, up to the process's last
// instant. With libuv's handler (process.on('SIGUSR2')) Node's exit put
// SIG_DFL back while a kick to an idle pool thread was still pending, and
// bhyve died of SIGUSR2 (status 140) instead of exiting with its status.
// Here SIGUSR2 is sent to bhyve without pause from the guest's greeting
// until the process is gone: every one is a kick (spurious for the guest),
// and those that arrive while Node exits are the ones that killed bhyve.
import { execa } from 'execa';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BHYVE, bhyveArgs, kvmUnavailable, rom, ROOT, vmName } from '../support/bhyve.js';
import path from 'node:path';

const skipWhy = kvmUnavailable();
const RUNS = 6;
const SIGUSR2_BIT = 1n << 11n;

/** SIGUSR2 is caught (SigCgt of /proc/PID/status). */
function catchesSigusr2(pid: number): boolean {
  try {
    const m = /SigCgt:\s*([0-9a-f]+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m !== null && (BigInt(`0x${m[1]}`) & SIGUSR2_BIT) !== 0n;
  } catch {
    return false;
  }
}

describe.skipIf(skipWhy !== undefined)(`the kick signal${skipWhy ? ` (skipped: ${skipWhy})` : ''}`, { timeout: 180_000 }, () => {
  it.each(['pool', 'thread'])('SIGUSR2 without pause until bhyve is gone (vcpu.ap_model=%s): status 33 every time', async (model) => {
    const rundir = path.join(ROOT, 'build', 'run');
    fs.mkdirSync(rundir, { recursive: true, mode: 0o700 });
    for (let i = 0; i < RUNS; i++) {
      const p = execa(BHYVE, bhyveArgs(rom('echo'), vmName('kick'), { cpus: 2, extra: ['-o', `vcpu.ap_model=${model}`] }), {
        reject: false, env: { BHYVE_RUNDIR: rundir }, timeout: 60_000, stdin: 'pipe',
      });
      let out = '';
      p.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
      const end = Date.now() + 40_000;
      while (!out.includes('echo ready') && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      expect(out, `run ${i}`).toContain('echo ready');
      // bhyve catches SIGUSR2 from its start-up on (before, the signal's
      // default action is the status any unprepared process gives).
      expect(catchesSigusr2(p.pid!), `run ${i}`).toBe(true);
      // bash's builtin kill: no fork per signal. It fails once bhyve has
      // been reaped (execa does that as soon as it exits).
      // It says "started" after its first signal: on a loaded host bash may
      // take longer to start than the wait below, and the guest must not be
      // told to quit before the hammering has begun.
      const hammer = execa('bash', ['-c', 'n=0; while kill -USR2 "$1" 2>/dev/null; do n=$((n+1)); [ $n -eq 1 ] && echo started; done; echo "$n"', '_', String(p.pid)],
        { reject: false, timeout: 60_000 });
      let hammering = '';
      hammer.stdout!.on('data', (b: Buffer) => { hammering += b.toString('latin1'); });
      const begun = Date.now() + 30_000;
      while (!hammering.includes('started') && Date.now() < begun) await new Promise((r) => setTimeout(r, 10));
      await new Promise((r) => setTimeout(r, 200));
      p.stdin!.end('q');
      const r = await p;
      const h = await hammer;
      const sent = Number(String(h.stdout).trim().split('\n').pop());
      const what = `run ${i}: ${sent} signals sent; stderr: ${r.stderr}`;
      expect(r.signal, what).toBeUndefined();
      expect(r.exitCode, what).toBe(33);
      expect(out, what).toContain('bye');
      expect(sent, what).toBeGreaterThan(100);
    }
  });
});
