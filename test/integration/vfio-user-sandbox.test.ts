// bhyve-vfio-user's sandbox (vmm/sandbox/server-sandbox.ts): once its socket
// listens and its model's backends are open, the server process is under
// the seccomp filter with no_new_privs, confined by Landlock where the
// kernel has it, and what it must not do (exec, create a file, open a file
// outside its rules, open a new socket, signal another process) is refused
// while it still serves its client; -o security.sandbox=false runs without.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { landlockStatus } from '../../src/vmm/sandbox/landlock.js';
import { VfioUserClient } from '../../src/devices/vfio-user/client.js';
import { ROOT } from '../support/bhyve.js';
import { startVfioUserServer, VFIO_USER_SERVER } from '../support/vfio-user-server.js';

const skip = /^Seccomp:/m.test(fs.readFileSync('/proc/self/status', 'utf8')) ? undefined : 'the kernel has no seccomp (CONFIG_SECCOMP)';
const landlock = landlockStatus();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vfio-user-sandbox-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;

function tasks(pid: number): Array<{ seccomp: string; nnp: string }> {
  return fs.readdirSync(`/proc/${pid}/task`).flatMap((tid) => {
    let st: string;
    try { st = fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'); } catch { return []; }
    const f = (k: string): string => new RegExp(`^${k}:\\s*(\\S+)`, 'm').exec(st)?.[1] ?? '?';
    return [{ seccomp: f('Seccomp'), nnp: f('NoNewPrivs') }];
  });
}

async function until(cond: () => boolean, what: () => string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out; so far: ${what()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A client that connects, negotiates and goes: a -1 server then ends. */
function visit(socket: string): void {
  const c = VfioUserClient.connect(socket);
  expect(c.deviceInfo().numRegions).toBeGreaterThanOrEqual(8);
  c.close();
}

describe.skipIf(skip !== undefined)(`sandboxed bhyve-vfio-user${skip ? ` (skipped: ${skip})` : ''}`, () => {
  it('every thread of the server is under the filter with no_new_privs once it serves; it still serves and removes its socket', async () => {
    const server = await startVfioUserServer(path.join(tmp, `s${n++}.sock`));
    await until(() => server.log().includes('(sandboxed)'), server.log);
    const seen = tasks(server.child.pid!);
    expect(seen.length).toBeGreaterThan(1);
    expect(seen.filter((t) => t.seccomp !== '2' || t.nnp !== '1'), 'threads outside the filter').toEqual([]);
    visit(server.socket);
    const r = await server.done();
    expect(r.status, r.log).toBe(0);
    expect(fs.existsSync(server.socket)).toBe(false);
  }, 60_000);

  it('a served bhyve model (-s virtio-blk,IMAGE) is sandboxed the same way', async () => {
    const img = path.join(tmp, 'disk.img');
    fs.writeFileSync(img, Buffer.alloc(1 << 20));
    const server = await startVfioUserServer(path.join(tmp, `s${n++}.sock`), ['-1', '-s', `virtio-blk,${img}`]);
    await until(() => server.log().includes('(sandboxed)'), server.log);
    expect(tasks(server.child.pid!).every((t) => t.seccomp === '2' && t.nnp === '1')).toBe(true);
    visit(server.socket);
    expect((await server.done()).status).toBe(0);
  }, 60_000);

  it('-o security.sandbox=false runs without it', async () => {
    const server = await startVfioUserServer(path.join(tmp, `s${n++}.sock`), ['-1', '-o', 'security.sandbox=false', '-d', 'test-dma']);
    await until(() => server.log().includes('serving'), server.log);
    expect(server.log()).not.toContain('(sandboxed)');
    expect(tasks(server.child.pid!).every((t) => t.seccomp === '0' && t.nnp === '0')).toBe(true);
    visit(server.socket);
    expect((await server.done()).status).toBe(0);
  }, 60_000);

  it('an -o it does not know: one line, exit 1', async () => {
    const r = await execa(process.execPath, [VFIO_USER_SERVER, '-o', 'security.sandbox=maybe', path.join(tmp, `s${n++}.sock`)], { reject: false });
    expect(r.exitCode).toBe(1);
    expect(r.stderr.split('\n')).toHaveLength(1);
    const r2 = await execa(process.execPath, [VFIO_USER_SERVER, '-o', 'x.y=1', path.join(tmp, `s${n++}.sock`)], { reject: false });
    expect(r2.exitCode).toBe(1);
    expect(r2.stderr).toBe('bhyve-vfio-user: -o x.y=1: only security.sandbox=BOOL and security.sandbox_log=BOOL are known');
  }, 60_000);

  it('refuses exec, new files, files outside its rules, new sockets and signals to others, and still serves', async () => {
    // The server's own main function in a Node process that also holds a
    // test hook: once the sandbox is up, the hook tries what it must not.
    const dist = path.join(ROOT, 'dist');
    const secret = path.join(tmp, 'secret.txt');
    fs.writeFileSync(secret, 'not for the server');
    const script = `
      import fs from 'node:fs';
      import net from 'node:net';
      import { spawnSync } from 'node:child_process';
      const { bhyveVfioUserMain } = await import(${JSON.stringify(path.join(dist, 'cli/bhyve-vfio-user-main.js'))});
      const { onSandboxed } = await import(${JSON.stringify(path.join(dist, 'vmm/sandbox/sandbox.js'))});
      const { unixListen } = await import(${JSON.stringify(path.join(dist, 'sys/unix-socket.js'))});
      const [secret, ...argv] = process.argv.slice(2);
      const code = (f) => { try { f(); return 'ok'; } catch (e) { return e.code ?? String(e); } };
      onSandboxed(() => {
        const r = spawnSync('/bin/sh', ['-c', 'echo escaped']);
        const out = {
          exec: r.error ? r.error.code : 'ran',
          create: code(() => fs.writeFileSync(argv[argv.length - 1] + '.planted', 'x')),
          readSecret: code(() => fs.readFileSync(secret)),
          readPasswd: code(() => fs.readFileSync('/etc/passwd')),
          socket: code(() => unixListen(argv[argv.length - 1] + '.other')),
          kill: code(() => process.kill(1, 0)),
        };
        process.stderr.write('SANDBOX-PROBE ' + JSON.stringify(out) + '\\n');
      });
      process.exitCode = await bhyveVfioUserMain(argv);
    `;
    const file = path.join(ROOT, 'build', 'vfio-user-sandbox-probe.mjs');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, script);
    const socket = path.join(tmp, `s${n++}.sock`);
    const child = execa(process.execPath, [file, secret, '-1', '-d', 'test-dma', socket], { reject: false, timeout: 60_000, encoding: 'utf8' });
    let log = '';
    child.stderr!.on('data', (b: Buffer) => { log += b.toString(); });
    await until(() => log.includes('(sandboxed)'), () => log);
    visit(socket);
    const r = await child;
    const line = /SANDBOX-PROBE (.*)/.exec(r.stderr);
    expect(line, r.stderr).not.toBeNull();
    const out = JSON.parse(line![1]) as Record<string, string>;
    expect(out.exec).toBe('EPERM');
    expect(out.create).toBe('EPERM');
    expect(out.kill).toBe('EPERM');
    expect(out.socket).toMatch(/EPERM|Operation not permitted/);
    expect(out.readSecret).toBe('abi' in landlock ? 'EACCES' : 'ok');
    expect(out.readPasswd).toBe('abi' in landlock ? 'EACCES' : 'ok');
    expect(fs.existsSync(`${socket}.planted`)).toBe(false);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/client gone: /);
    expect(fs.existsSync(socket)).toBe(false);
  }, 60_000);
});
