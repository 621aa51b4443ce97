// Node opens its inspector (an unauthenticated debugger on 127.0.0.1:9229)
// when a process without a SIGUSR1 listener receives SIGUSR1; whoever
// connects can then run code as the VMM's user, root for a real VMM. The
// launchers in bin/ install a listener before anything else loads. Here a
// live bhyve (its vCPU threads running) and a bhyvectl waiting on a control
// socket get SIGUSR1 and must open no listening socket.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';

import { VmLock } from '../../src/vmm/vm-lock.js';
import { BHYVE, ROOT, bhyveArgs, kvmUnavailable, rom, vmName } from '../support/bhyve.js';

const BHYVECTL = path.join(ROOT, 'bin/bhyvectl');
const skipWhy = kvmUnavailable();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'inspector-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Socket inodes of `pid` that are listening TCP sockets (IPv4 or IPv6). */
function listeningTcp(pid: number): string[] {
  const inodes = new Set<string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch { /* fd closed meanwhile */ }
  }
  const out: string[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of fs.readFileSync(table, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 9 && f[3] === '0A' && inodes.has(f[9])) out.push(`${f[1]} inode ${f[9]}`);
    }
  }
  return out;
}

async function waitFor(cond: () => boolean, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe.skipIf(skipWhy)('SIGUSR1 opens no inspector', () => {
  it('the launchers install their SIGUSR1 listener before loading anything', () => {
    for (const tool of ['bhyve', 'bhyveload', 'bhyvectl']) {
      const text = fs.readFileSync(path.join(ROOT, 'bin', tool), 'utf8');
      // A 'use strict' directive is no statement (bin/* are CommonJS).
      const code = text.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#!') && !l.trim().startsWith('//')
        && l.trim() !== "'use strict';");
      expect(code[0], tool).toBe("process.on('SIGUSR1', () => {});");
      expect(text, tool).not.toMatch(/^import /m); // static imports would run first
    }
  });

  it('a running bhyve ignores SIGUSR1: no listening socket, guest still runs', async () => {
    const rundir = path.join(tmp, 'run-bhyve');
    const p = execa(BHYVE, bhyveArgs(rom('echo'), vmName('usr1')), {
      reject: false, env: { BHYVE_RUNDIR: rundir }, timeout: 30_000, stripFinalNewline: false,
    });
    let out = '';
    p.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
    await waitFor(() => out.includes('echo ready'), 'the guest greeting');
    for (let i = 0; i < 3; i++) {
      process.kill(p.pid!, 'SIGUSR1');
      await new Promise((r) => setTimeout(r, 150));
    }
    expect(listeningTcp(p.pid!)).toEqual([]);
    p.stdin!.write('xq');
    const r = await p;
    expect(r.exitCode).toBe(33);
    expect(r.stdout).toContain('x');
    expect(r.stderr).not.toMatch(/inspector|Debugger listening/i);
  });

  it('a bhyvectl waiting for an answer ignores SIGUSR1', async () => {
    // A VM directory whose "bhyve" (this test process, holding its run
    // lock) never answers.
    const rundir = path.join(tmp, 'run-ctl');
    const name = vmName('usr1ctl');
    const dir = path.join(rundir, name);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.writeFileSync(path.join(dir, 'memory'), '', { mode: 0o600 });
    const lock = VmLock.tryAcquire(dir);
    if (!(lock instanceof VmLock)) throw new Error(`cannot lock ${dir}: ${lock}`);
    fs.writeFileSync(path.join(dir, 'bhyve.pid'), `${process.pid}\n`);
    const server = net.createServer(() => { /* never answers */ });
    await new Promise<void>((r) => server.listen(path.join(dir, 'control.sock'), r));
    let connected = false;
    server.on('connection', () => { connected = true; });
    try {
      const p = execa(BHYVECTL, [`--vm=${name}`, '--get-stats'], { reject: false, env: { BHYVE_RUNDIR: rundir }, timeout: 30_000 });
      await waitFor(() => connected, 'bhyvectl to connect');
      for (let i = 0; i < 3; i++) {
        process.kill(p.pid!, 'SIGUSR1');
        await new Promise((r) => setTimeout(r, 150));
      }
      expect(listeningTcp(p.pid!)).toEqual([]);
      p.kill('SIGKILL');
      const r = await p;
      expect(r.stderr).not.toMatch(/inspector|Debugger listening/i);
    } finally {
      server.close();
      lock.release();
    }
  });
});
