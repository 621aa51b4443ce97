// The sandbox on this kernel, in a throwaway Node process (no KVM needed):
// after enterSandbox, what it must refuse is refused by the kernel (exec,
// new files, files outside the rules, new sockets, signals to others) and
// what the run loop needs still works (granted files, a new worker thread).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');
const DIST = path.join(ROOT, 'dist/vmm/sandbox');

function why(): string | undefined {
  if (!fs.existsSync(path.join(DIST, 'sandbox.js'))) return 'dist/ is not built: run npm run build';
  if (!/^Seccomp:/m.test(fs.readFileSync('/proc/self/status', 'utf8'))) return 'the kernel has no seccomp (CONFIG_SECCOMP)';
  return undefined;
}
const skip = why();

// The child: sandbox itself with one granted directory, then try things.
const CHILD = `
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
const [dir, log, nolandlock] = process.argv.slice(2);
const { enterSandbox } = await import(${JSON.stringify(path.join(DIST, 'sandbox.js'))});
const { confinePool } = await import(${JSON.stringify(path.join(DIST, 'pool-threads.js'))});
const { landlockStatus, FS } = await import(${JSON.stringify(path.join(DIST, 'landlock.js'))});
const ll = nolandlock ? { missing: 'test' } : landlockStatus();
const status = fs.openSync('/proc/self/status', 'r');
// libuv's pool starts now, before the sandbox (as bhyve's does at -c 2).
await fs.promises.readFile('/etc/hostname');
const plan = { log: log === 'log', landlockAbi: 'abi' in ll ? ll.abi : 0, notes: [],
  landlockRules: [{ path: dir, access: FS.READ_FILE | FS.REMOVE_FILE }] };
await enterSandbox(plan, confinePool(plan));
const code = (f) => { try { f(); return 'ok'; } catch (e) { return e.code ?? String(e); } };
const out = { landlock: 'abi' in ll };
out.exec = (() => { const r = spawnSync('/bin/true'); return r.error ? r.error.code : 'ran'; })();
out.readGranted = code(() => fs.readFileSync(path.join(dir, 'keep')));
out.readOther = code(() => fs.readFileSync('/etc/passwd'));
// On a pool thread (started before the sandbox).
out.readOtherAsync = await fs.promises.readFile('/etc/passwd').then(() => 'ok', (e) => e.code);
out.create = code(() => fs.writeFileSync(path.join(dir, 'new'), 'x'));
out.removeGranted = code(() => fs.unlinkSync(path.join(dir, 'gone')));
out.rename = code(() => fs.renameSync(path.join(dir, 'keep'), path.join(dir, 'moved')));
out.killOther = code(() => process.kill(1, 0));
out.listen = await new Promise((resolve) => {
  const s = net.createServer();
  s.once('error', (e) => resolve(e.code));
  s.listen(0, '127.0.0.1', () => { s.close(); resolve('ok'); });
});
out.worker = await new Promise((resolve) => {
  const w = new Worker(path.join(dir, 'worker.mjs'));
  w.once('message', (m) => resolve(m));
  w.once('error', (e) => resolve('error: ' + e.message));
});
const buf = Buffer.alloc(8192);
const st = buf.subarray(0, fs.readSync(status, buf, 0, buf.length, 0)).toString();
out.seccomp = /^Seccomp:\\s*(\\d)/m.exec(st)?.[1];
out.nnp = /^NoNewPrivs:\\s*(\\d)/m.exec(st)?.[1];
out.capEff = /^CapEff:\\s*(\\w+)/m.exec(st)?.[1];
out.capBnd = /^CapBnd:\\s*(\\w+)/m.exec(st)?.[1];
process.stdout.write(JSON.stringify(out));
`;

const dirs: string[] = [];
async function sandboxedChild(mode: 'refuse' | 'log', noLandlock = false): Promise<Record<string, unknown>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bhyve-sandbox-'));
  dirs.push(dir);
  fs.writeFileSync(path.join(dir, 'keep'), 'kept');
  fs.writeFileSync(path.join(dir, 'gone'), 'gone');
  fs.writeFileSync(path.join(dir, 'worker.mjs'), "import { parentPort } from 'node:worker_threads'; parentPort.postMessage('worker ran');\n");
  fs.writeFileSync(path.join(dir, 'child.mjs'), CHILD);
  const r = await execa('node', [path.join(dir, 'child.mjs'), dir, mode, ...(noLandlock ? ['nolandlock'] : [])], { reject: false, timeout: 20_000 });
  expect(r.exitCode, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

afterAll(() => { for (const d of dirs) fs.rmSync(d, { recursive: true, force: true }); });

describe.skipIf(skip)(`sandbox on this kernel${skip ? ` (skipped: ${skip})` : ''}`, () => {
  it('refuses exec, new files, other files, new TCP sockets and signals to others; the rest still works', async () => {
    const out = await sandboxedChild('refuse');
    expect(out.seccomp).toBe('2');
    expect(out.nnp).toBe('1');
    expect(out.exec).toBe('EPERM');
    expect(out.create).toBe('EPERM');
    expect(out.killOther).toBe('EPERM');
    expect(out.listen).toBe('EPERM');
    expect(out.readGranted).toBe('ok');
    expect(out.removeGranted).toBe('ok');
    expect(out.worker).toBe('worker ran');
    // Landlock confines reads to the rules where the kernel has it.
    expect(out.readOther).toBe(out.landlock ? 'EACCES' : 'ok');
    // And on libuv's pool threads, which started before the sandbox.
    expect(out.readOtherAsync).toBe(out.landlock ? 'EACCES' : 'ok');
    // Allowed by the filter where Landlock is, and Landlock wants MAKE_REG for it.
    expect(out.rename).toBe(out.landlock ? 'EACCES' : 'EPERM');
    if (process.getuid?.() === 0) {
      expect(out.capEff).toBe('0000000000000000');
      expect(out.capBnd).toBe('0000000000000000');
    }
  });

  it('without Landlock (a kernel that lacks it) the filter alone refuses exec, new files and renames', async () => {
    const out = await sandboxedChild('refuse', true);
    expect(out.landlock).toBe(false);
    expect(out.seccomp).toBe('2');
    expect(out.exec).toBe('EPERM');
    expect(out.create).toBe('EPERM');
    expect(out.rename).toBe('EPERM');
    expect(out.readOther).toBe('ok'); // what Landlock would have refused
    expect(out.worker).toBe('worker ran');
  });

  it('log mode lets refused calls through (Landlock still applies)', async () => {
    const out = await sandboxedChild('log');
    expect(out.seccomp).toBe('2');
    expect(out.killOther).toBe('ok');
    expect(out.readOther).toBe(out.landlock ? 'EACCES' : 'ok');
  });
});
