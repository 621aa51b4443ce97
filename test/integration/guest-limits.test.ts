// Issue 9 defect 7 with the real tools: -m beyond what the host can back,
// below a page, or past the file system's largest file, and -c beyond the
// vCPU or SMBIOS-socket limits, give one line and status 4 (bhyveload: 1)
// and leave no VM object behind.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';

import { BHYVE, ROOT, bhyveArgs, kvmUnavailable, rom } from '../support/bhyve.js';
import { formatSize, hostMemory } from '../../src/vmm/guest-limits.js';

const skipWhy = kvmUnavailable();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'guest-limits-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const rundir = path.join(tmp, 'run');
const errors = (stderr: string): string[] => stderr.split('\n').filter((l) => l !== '' && !/^bhyve: warning:/.test(l));
const { ram, swap } = hostMemory();
const hostText = `(${formatSize(ram)} of RAM and ${formatSize(swap)} of swap)`;

describe.skipIf(skipWhy)(`guest limits${skipWhy ? ` (skipped: ${skipWhy})` : ''}`, { timeout: 60_000 }, () => {
  it.each([
    [['-m', '17T'], `bhyve: guest memory size 17T: more than this host has ${hostText}`],
    [['-m', `${Math.ceil((ram + swap) / 1024 ** 3) + 1}G`], new RegExp(`^bhyve: guest memory size \\d+G: more than this host has \\(`)],
    [['-m', '1K'], 'bhyve: guest memory size 1K: must be a multiple of 4K and at least 1M'],
    [['-c', '256'], 'bhyve: 256 vCPUs requested, but a VM can have at most 255 (vCPUs get the xAPIC IDs 0-254)'],
    [['-c', '68'], /^bhyve: SMBIOS entry point and tables \(\d+ bytes\) exceed bhyve's 5120-byte area: it holds one processor structure per socket, too many for 68 sockets; give fewer \(e\.g\. -c 68,sockets=1,cores=68\)$/],
  ])('bhyve %j: one line, status 4, nothing left', async (opt, expected) => {
    const args = bhyveArgs(rom('echo'), 'limits');
    args.splice(0, 4, '-c', '1', '-m', '64M', ...opt);
    const r = await execa(BHYVE, args, { reject: false, env: { BHYVE_RUNDIR: rundir }, timeout: 30_000, stdin: 'ignore' });
    const lines = errors(r.stderr);
    expect(lines).toHaveLength(1);
    if (typeof expected === 'string') expect(lines[0]).toBe(expected);
    else expect(lines[0]).toMatch(expected);
    expect(r.exitCode).toBe(4);
    expect(fs.existsSync(rundir) ? fs.readdirSync(rundir) : []).toEqual([]);
  });

  // The most vCPUs a VM can have (one socket, no MP table: bhyve's -Y):
  // libuv's pool then has 262 threads, each of which holds one of koffi's
  // asynchronous calls while bhyve finds and confines them, beyond koffi's
  // default limit of 256 ("Too many asynchronous calls are running").
  it('-c 255 boots (the pool holds more calls than koffi allows by default)', async () => {
    const args = bhyveArgs(rom('exit-testdev'), 'limits');
    args.splice(0, 4, '-Y', '-c', '255,sockets=1,cores=255', '-m', '256M');
    const r = await execa(BHYVE, args, { reject: false, env: { BHYVE_RUNDIR: rundir }, timeout: 50_000, stdin: 'ignore' });
    expect(errors(r.stderr)).toEqual([]);
    expect(r.stdout).toContain('hello from testdev rom');
    expect(r.exitCode).toBe(33);
  });

  it('bhyveload -m 17T: one line, status 1, nothing left', async () => {
    const r = await execa(path.join(ROOT, 'bin/bhyveload'), ['-m', '17T', '-h', tmp, '-e', 'kernel=/nothing', 'limits'], {
      reject: false, env: { BHYVE_RUNDIR: rundir }, timeout: 30_000,
    });
    expect(r.stderr).toBe(`bhyveload: guest memory size 17T: more than this host has ${hostText}`);
    expect(r.exitCode).toBe(1);
    expect(fs.existsSync(rundir) ? fs.readdirSync(rundir) : []).toEqual([]);
  });
});
