// Issue 9 defects 3 and 5 on real KVM. One VM, one process: the run lock is
// a kernel lock held for the life of its owner (src/vmm/vm-lock.ts), so of
// two bhyves started at once exactly one runs, a stale bhyve.pid naming an
// unrelated live process blocks nothing (neither bhyve nor bhyvectl
// --destroy), and a killed bhyve's lock is free at once. VM names are
// limited as FreeBSD's VM_MAX_NAMELEN, and a long name cannot push the
// control socket out of the VM's directory (sun_path truncation).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { execa, type ResultPromise } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';

import { BHYVE, ROOT, bhyveArgs, kvmUnavailable, rom } from '../support/bhyve.js';

const BHYVECTL = path.join(ROOT, 'bin/bhyvectl');
const skipWhy = kvmUnavailable();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vm-lock-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function start(rundir: string, name: string): ResultPromise & { out: () => string } {
  const p = execa(BHYVE, bhyveArgs(rom('echo'), name), {
    reject: false, env: { BHYVE_RUNDIR: rundir }, timeout: 60_000, stripFinalNewline: false,
  });
  let out = '';
  p.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
  return Object.assign(p, { out: () => out });
}

async function waitFor(cond: () => boolean, what: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** stderr without bhyve's warnings (this host may lack EPT). */
const errors = (stderr: string): string => stderr.split('\n').filter((l) => !/^bhyve: warning:/.test(l)).join('\n');

const ctl = (rundir: string, args: string[]) => execa(BHYVECTL, args, { reject: false, env: { BHYVE_RUNDIR: rundir }, timeout: 30_000 });

describe.skipIf(skipWhy)(`one VM, one process${skipWhy ? ` (skipped: ${skipWhy})` : ''}`, { timeout: 120_000 }, () => {
  it('two bhyves started at once: exactly one runs, the other says so in one line', async () => {
    const rundir = path.join(tmp, 'race');
    for (let i = 0; i < 5; i++) {
      const name = `race${i}`;
      const both = [start(rundir, name), start(rundir, name)];
      const done = [false, false];
      both.forEach((p, j) => { void p.then(() => { done[j] = true; }); });
      // Each either refuses at once or greets; then the runners are told to quit.
      await waitFor(() => both.every((p, j) => done[j] || p.out().includes('echo ready')), 'both to settle');
      for (const [j, p] of both.entries()) if (!done[j]) p.stdin!.write('q');
      const rs = await Promise.all(both);
      const codes = rs.map((r) => r.exitCode ?? -1).sort((a, b) => a - b);
      expect(codes, `try ${i}: ${rs.map((r) => r.stderr).join(' | ')}`).toEqual([4, 33]);
      const loser = rs.find((r) => r.exitCode === 4)!;
      expect(errors(loser.stderr)).toMatch(new RegExp(`^bhyve: VM '${name}' is already running( \\(bhyve pid \\d+\\))?\\n$`));
      expect(fs.existsSync(path.join(rundir, name)), 'the creator destroys the VM when it ends').toBe(false);
    }
  });

  it('a stale bhyve.pid naming a live unrelated process blocks neither bhyve nor bhyvectl --destroy', async () => {
    const rundir = path.join(tmp, 'stale');
    const name = 'stale';
    expect((await ctl(rundir, [`--vm=${name}`, '--create'])).exitCode).toBe(0);
    // This test process is alive and is no bhyve.
    fs.writeFileSync(path.join(rundir, name, 'bhyve.pid'), `${process.pid}\n`);
    const p = start(rundir, name);
    await waitFor(() => p.out().includes('echo ready') || p.exitCode !== undefined, 'the guest');
    p.stdin!.write('xq');
    const r = await p;
    expect(errors(r.stderr)).toBe('');
    expect(r.exitCode).toBe(33);

    fs.writeFileSync(path.join(rundir, name, 'bhyve.pid'), `${process.pid}\n`);
    const t0 = Date.now();
    const d = await ctl(rundir, [`--vm=${name}`, '--destroy']);
    expect(d.stderr).toBe('');
    expect(d.exitCode).toBe(0);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(fs.existsSync(path.join(rundir, name))).toBe(false);
  });

  it('the lock of a bhyve killed with SIGKILL is free at once; bhyvectl sees who holds it', async () => {
    const rundir = path.join(tmp, 'killed');
    const name = 'killed';
    expect((await ctl(rundir, [`--vm=${name}`, '--create'])).exitCode).toBe(0);
    const p = start(rundir, name);
    await waitFor(() => p.out().includes('echo ready'), 'the guest');
    const second = await execa(BHYVE, bhyveArgs(rom('echo'), name), { reject: false, env: { BHYVE_RUNDIR: rundir }, timeout: 30_000 });
    expect(errors(second.stderr)).toBe(`bhyve: VM '${name}' is already running (bhyve pid ${p.pid})`);
    p.kill('SIGKILL');
    await p;
    // bhyve.pid (and the memory) stay behind; the lock does not.
    expect(fs.readFileSync(path.join(rundir, name, 'bhyve.pid'), 'utf8')).toBe(`${p.pid}\n`);
    const idle = await ctl(rundir, [`--vm=${name}`, '--get-rip']);
    expect(idle.exitCode).toBe(0); // answered from the stored state, not a dead socket
    const again = start(rundir, name);
    await waitFor(() => again.out().includes('echo ready') || again.exitCode !== undefined, 'the guest');
    again.stdin!.write('xq');
    expect((await again).exitCode).toBe(33);
    expect((await ctl(rundir, [`--vm=${name}`, '--destroy'])).exitCode).toBe(0);
  });

  it(`VM names longer than VM_MAX_NAMELEN (229) are refused in one line; a long one keeps its socket inside its directory`, async () => {
    const rundir = path.join(tmp, 'names');
    const tooLong = 'n'.repeat(230);
    const r = await execa(BHYVE, bhyveArgs(rom('echo'), tooLong), { reject: false, env: { BHYVE_RUNDIR: rundir }, timeout: 30_000 });
    expect(errors(r.stderr)).toBe(`bhyve: VM name '${'n'.repeat(20)}...' is too long (230 bytes; at most 229)`);
    expect(r.exitCode).toBe(4);

    // 150 characters: the socket path is well over sun_path's 107 bytes.
    const name = `L${'o'.repeat(148)}g`;
    const p = start(rundir, name);
    await waitFor(() => p.out().includes('echo ready'), 'the guest');
    await waitFor(() => fs.existsSync(path.join(rundir, name, 'control.sock')), 'the control socket');
    const rip = await ctl(rundir, [`--vm=${name}`, '--get-rip']);
    expect(rip.stderr).toBe('');
    expect(rip.stdout).toMatch(/^rip\[0\]\t\t0x[0-9a-f]{16}$/);
    p.stdin!.write('xq');
    expect((await p).exitCode).toBe(33);
    expect(fs.readdirSync(rundir)).toEqual([]); // nothing left in the parent
    // The longest allowed name works too.
    const longest = 'm'.repeat(229);
    const q = start(rundir, longest);
    await waitFor(() => q.out().includes('echo ready'), 'the guest');
    await waitFor(() => fs.existsSync(path.join(rundir, longest, 'control.sock')), 'the control socket');
    expect((await ctl(rundir, [`--vm=${longest}`, '--force-poweroff'])).exitCode).toBe(0);
    expect((await q).exitCode).toBe(1);
    expect(fs.readdirSync(rundir)).toEqual([]);
  });
});
