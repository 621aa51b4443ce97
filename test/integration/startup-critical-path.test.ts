// What keeps bhyve's start-up critical path short, checked without timing
// anything (BHYVE_TRACE_STARTUP=1 milestones; ARCHITECTURE.md, "Start-up"):
// vCPU 0's thread makes no view of guest RAM before the guest runs (the
// firmware tables go through the memory file), so V8 sees no 256 MiB of
// external memory and does not collect the thread's heap for it; the main
// thread opens the vCPUs' statistics and the control socket while vCPU 0
// builds its devices, not between "all ready" and "go".
import { describe, expect, it } from 'vitest';

import { bhyveArgs, kvmUnavailable, rom, runBhyve, vmName } from '../support/bhyve.js';

const skipWhy = kvmUnavailable();

/** The trace lines of a run, as [ms, who: what]. */
function milestones(stderr: string): Array<{ ms: number; what: string }> {
  return stderr.split('\n').flatMap((l) => {
    const m = /^trace ([\d.]+) cpu \S+ (.*)$/.exec(l);
    return m ? [{ ms: Number(m[1]), what: m[2] }] : [];
  });
}

describe.skipIf(skipWhy)(`start-up critical path${skipWhy ? ` (skipped: ${skipWhy})` : ''}`, { timeout: 120_000 }, () => {
  it('vCPU 0\'s thread holds no view of 256 MiB of guest RAM when the guest starts', async () => {
    // The sandbox off: the trace reads /proc for the memory figures.
    const r = await runBhyve(bhyveArgs(rom('exit-testdev'), vmName('ramview'), { mem: '256M', extra: ['-o', 'security.sandbox=false'] }),
      { env: { BHYVE_TRACE_STARTUP: '1' }, timeout: 90_000 });
    expect(r.stdout).toContain('hello from testdev rom');
    const go = milestones(r.stderr).find((m) => m.what.startsWith('vcpu 0: go: rss'));
    expect(go, r.stderr).toBeDefined();
    const external = Number(/external ([\d.]+)/.exec(go!.what)?.[1]);
    expect(external, go!.what).toBeLessThan(64);
  });

  it('the main thread posts vCPU 0\'s data, then opens statistics and the control socket before it waits for the vCPU threads', async () => {
    const r = await runBhyve(bhyveArgs(rom('exit-testdev'), vmName('order'), { cpus: 2 }), { env: { BHYVE_TRACE_STARTUP: '1' }, timeout: 90_000 });
    expect(r.stdout).toContain('hello from testdev rom');
    const at = (what: string): number => {
      const i = milestones(r.stderr).findIndex((m) => m.what === what);
      expect(i, `${what}: ${r.stderr}`).toBeGreaterThanOrEqual(0);
      return i;
    };
    expect(at('main: data posted')).toBeLessThan(at('main: stats fds'));
    expect(at('main: stats fds')).toBeLessThan(at('main: control socket'));
    expect(at('main: control socket')).toBeLessThan(at('main: all ready'));
    expect(at('main: all ready')).toBeLessThan(at('main: sandboxed'));
    expect(at('main: sandboxed')).toBeLessThan(at('main: go'));
  });
});
