// bhyve's sandbox after start-up (src/vmm/sandbox/), on a running VM: every
// thread is under the seccomp filter with no_new_privs, the main and vCPU
// threads hold no capabilities, what the process must not do is refused by
// the kernel while the guest still runs to its end, and
// -o security.sandbox=false turns it all off. (Every other integration test
// runs its guests with the sandbox on: it is the default.)
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { execa, type Result } from 'execa';
import { describe, expect, it } from 'vitest';
import { landlockStatus } from '../../src/vmm/sandbox/landlock.js';
import { BHYVE, ROOT, bhyveArgs, kvmUnavailable, rom, vmName } from '../support/bhyve.js';
import { MODE, romWith, runHeld } from '../support/guest-rom.js';

function why(): string | undefined {
  const k = kvmUnavailable();
  if (k) return k;
  if (!/^Seccomp:/m.test(fs.readFileSync('/proc/self/status', 'utf8'))) return 'the kernel has no seccomp (CONFIG_SECCOMP)';
  return undefined;
}
const skip = why();
const RUNDIR = path.join(ROOT, 'build', 'run');
const landlock = landlockStatus();
const ZERO_CAPS = '0000000000000000';

interface TaskStatus { tid: number; seccomp: string; nnp: string; capEff: string }

function tasks(pid: number): TaskStatus[] {
  const out: TaskStatus[] = [];
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    let st: string;
    try { st = fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'); } catch { continue; } // thread gone
    const f = (k: string): string => new RegExp(`^${k}:\\s*(\\S+)`, 'm').exec(st)?.[1] ?? '?';
    out.push({ tid: Number(tid), seccomp: f('Seccomp'), nnp: f('NoNewPrivs'), capEff: f('CapEff') });
  }
  return out;
}

async function until(cond: () => boolean, what: () => string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out; so far: ${what()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Runs the echo guest (it waits for input), calls `look` on the running
 * process once the guest has printed its banner, then ends it with 'q'. */
async function whileEchoRuns<T>(extra: string[], look: (pid: number) => T): Promise<T> {
  fs.mkdirSync(RUNDIR, { recursive: true });
  const child = execa(BHYVE, bhyveArgs(rom('echo'), vmName('sbx'), { cpus: 2, extra }), {
    reject: false, timeout: 30_000, stdin: 'pipe', env: { BHYVE_RUNDIR: RUNDIR }, stripFinalNewline: false,
  });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
  child.stderr!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
  await until(() => out.includes('echo ready'), () => out);
  const seen = look(child.pid!);
  child.stdin!.write('q');
  const r = await child;
  expect(r.exitCode, out).toBe(33);
  return seen;
}

/** How many threads Node has before any script runs (main, V8's platform
 * workers): the same node binary, counted from inside. */
function nodeStartupThreads(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(require("fs").readdirSync("/proc/self/task").length))']);
  return Number(r.stdout.toString());
}

/** Runs bhyve's main function in a Node process that also holds a test
 * hook: once the sandbox is up, `hook` (JavaScript with `fs` and
 * `report(object)` in scope) runs on the main thread. Returns what it
 * reported and the run's result. */
async function probeAfterSandbox(romPath: string, o: { cpus?: number }, hook: string): Promise<{ out: Record<string, string>; r: Result }> {
  const dist = path.join(ROOT, 'dist');
  const script = `
    import fs from 'node:fs';
    const { bhyveMain } = await import(${JSON.stringify(path.join(dist, 'cli/bhyve-main.js'))});
    const { onSandboxed } = await import(${JSON.stringify(path.join(dist, 'vmm/sandbox/sandbox.js'))});
    const report = (o) => process.stderr.write('SANDBOX-PROBE ' + JSON.stringify(o) + '\\n');
    onSandboxed(() => { ${hook} });
    process.exitCode = await bhyveMain(process.argv.slice(2));
  `;
  const file = path.join(ROOT, 'build', `sandbox-probe-${process.pid}-${o.cpus ?? 1}.mjs`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, script);
  const cpus = o.cpus ?? 1;
  fs.mkdirSync(RUNDIR, { recursive: true });
  // bin/bhyve sizes libuv's pool for the APs; this process must as well.
  const r = await execa('node', [file, ...bhyveArgs(romPath, vmName('hook'), { cpus })], {
    reject: false, timeout: 30_000, stdin: 'ignore', stripFinalNewline: false,
    env: { BHYVE_RUNDIR: RUNDIR, UV_THREADPOOL_SIZE: String(8 + cpus - 1) },
  });
  fs.rmSync(file, { force: true });
  const line = /SANDBOX-PROBE (.*)/.exec(r.stderr);
  expect(line, r.stderr).not.toBeNull();
  return { out: JSON.parse(line![1]) as Record<string, string>, r };
}

describe.skipIf(skip)(`sandboxed bhyve${skip ? ` (skipped: ${skip})` : ''}`, () => {
  it('every thread is under the filter with no_new_privs; the main and vCPU threads hold no capabilities', async () => {
    const { pid, seen } = await whileEchoRuns([], (p) => ({ pid: p, seen: tasks(p) }));
    expect(seen.length).toBeGreaterThan(3);
    expect(seen.filter((t) => t.seccomp !== '2' || t.nnp !== '1'), 'threads outside the filter').toEqual([]);
    if (process.getuid?.() === 0) {
      expect(seen.find((t) => t.tid === pid)?.capEff).toBe(ZERO_CAPS);
      // The main thread, vCPU 0's thread (the AP runs on libuv's pool,
      // vcpu.ap_model=pool), and the threads they started.
      expect(seen.filter((t) => t.capEff === ZERO_CAPS).length).toBeGreaterThanOrEqual(2);
    }
  });

  it.skipIf(process.getuid?.() !== 0)('as root, every thread bhyve started holds no capabilities: libuv\'s pool (the AP\'s KVM_RUN) too', async () => {
    const seen = await whileEchoRuns([], tasks);
    // Threads are numbered in the order they start: the first ones are
    // Node's own (main, V8's platform workers), started before any of
    // bhyve's code runs; only those may keep capabilities on a kernel
    // without Landlock TSYNC (sandbox.ts). Everything later (libuv's pool,
    // vCPU 0's thread and its helpers) must hold none.
    const nodeOwn = nodeStartupThreads();
    const later = seen.sort((a, b) => a.tid - b.tid).slice(nodeOwn);
    expect(later.length).toBeGreaterThanOrEqual(9); // UV_THREADPOOL_SIZE at -c 2, vCPU 0's thread
    expect(later.filter((t) => t.capEff !== ZERO_CAPS), 'threads started by bhyve that keep capabilities').toEqual([]);
  });

  it('virtio-blk\'s iothread and its reader threads (started while the guest runs) are under the filter too', async () => {
    const tmp = fs.mkdtempSync(path.join(ROOT, 'build', 'sbx-blk-'));
    try {
      const img = path.join(tmp, 'blk.img');
      fs.writeFileSync(img, '');
      fs.truncateSync(img, 8 << 20);
      const threads = async (readers: number) => {
        const name = vmName('sbxblk');
        let seen: TaskStatus[] = [];
        const r = await runHeld(bhyveArgs(romWith(tmp, 'virtio-blk', MODE.HOLD), name, {
          extra: ['-s', `3,virtio-blk,${img},iothread=true,iothread_readers=${readers}`],
        }), name, {
          whileHeld: (vmDir) => { seen = tasks(Number(fs.readFileSync(path.join(vmDir, 'bhyve.pid'), 'utf8').trim())); },
        });
        expect(r.out).toMatch(/virtio-blk: wrote \d+ sectors, read back OK/);
        expect(r.status, r.out).toBe(33);
        expect(seen.length).toBeGreaterThan(3);
        expect(seen.filter((t) => t.seccomp !== '2' || t.nnp !== '1'), 'threads outside the filter').toEqual([]);
        return seen.length;
      };
      // The three readers are threads of their own, under the filter.
      expect(await threads(3)).toBeGreaterThanOrEqual(await threads(0) + 3);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('-o security.sandbox=false runs without it', async () => {
    const seen = await whileEchoRuns(['-o', 'security.sandbox=false'], tasks);
    expect(seen.every((t) => t.seccomp === '0' && t.nnp === '0')).toBe(true);
  });

  it('libuv\'s pool threads are under Landlock too: an async read outside the rules is refused (-c 2, the AP on the pool)', async () => {
    // An async fs call runs on libuv's pool, whose threads started before
    // the sandbox went up (bhyve looks for them at -c 2 and more).
    const { out, r } = await probeAfterSandbox(rom('exit-testdev'), { cpus: 2 }, `
        const tryAsync = (f) => f().then(() => 'ok', (e) => e.code ?? String(e));
        Promise.all([
          tryAsync(() => fs.promises.readFile('/etc/passwd')),
          tryAsync(() => new Promise((res, rej) => fs.readFile('/etc/hostname', (e) => e ? rej(e) : res()))),
          tryAsync(() => fs.promises.readdir('/')),
        ]).then(([promises, callback, readdir]) => report({ promises, callback, readdir }));`);
    expect(r.exitCode, r.stderr).toBe(33);
    const expected = 'abi' in landlock ? 'EACCES' : 'ok';
    expect(out).toEqual({ promises: expected, callback: expected, readdir: expected });
  });

  it('refuses what the process must not do after start-up, and the guest still runs to its end', async () => {
    // bhyve's own main function in a Node process that also holds a test
    // hook: once the sandbox is up, the hook tries exec, creating a file in
    // the VM directory, reading a file outside the rules and signalling
    // another process, from inside bhyve.
    const dist = path.join(ROOT, 'dist');
    const script = `
      import fs from 'node:fs';
      import { spawnSync } from 'node:child_process';
      const { bhyveMain } = await import(${JSON.stringify(path.join(dist, 'cli/bhyve-main.js'))});
      const { onSandboxed } = await import(${JSON.stringify(path.join(dist, 'vmm/sandbox/sandbox.js'))});
      const [vmdir, ...argv] = process.argv.slice(2);
      const code = (f) => { try { f(); return 'ok'; } catch (e) { return e.code ?? String(e); } };
      onSandboxed(() => {
        const r = spawnSync('/bin/sh', ['-c', 'echo escaped']);
        const out = {
          exec: r.error ? r.error.code : 'ran',
          create: code(() => fs.writeFileSync(vmdir + '/planted', 'x')),
          readOther: code(() => fs.readFileSync('/etc/passwd')),
          kill: code(() => process.kill(1, 0)),
        };
        process.stderr.write('SANDBOX-PROBE ' + JSON.stringify(out) + '\\n');
      });
      process.exitCode = await bhyveMain(argv);
    `;
    const file = path.join(ROOT, 'build', 'sandbox-probe.mjs');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, script);
    const name = vmName('probe');
    const r = await execa('node', [file, path.join(RUNDIR, name), ...bhyveArgs(rom('exit-testdev'), name)], {
      reject: false, timeout: 30_000, stdin: 'ignore', env: { BHYVE_RUNDIR: RUNDIR }, stripFinalNewline: false,
    });
    const line = /SANDBOX-PROBE (.*)/.exec(r.stderr);
    expect(line, r.stderr).not.toBeNull();
    const out = JSON.parse(line![1]) as Record<string, string>;
    expect(out.exec).toBe('EPERM');
    expect(out.create).toBe('EPERM');
    expect(out.kill).toBe('EPERM');
    expect(out.readOther).toBe('abi' in landlock ? 'EACCES' : 'ok');
    expect(r.stdout).toBe('hello from testdev rom\r\n');
    expect(r.exitCode).toBe(33);
    expect(fs.existsSync(path.join(RUNDIR, name))).toBe(false); // clean-up still works
  });

  it('BHYVE_DEBUG says what the sandbox applied (and what this kernel lacks)', async () => {
    const r = await execa(BHYVE, bhyveArgs(rom('exit-testdev'), vmName('ll')), {
      reject: false, timeout: 30_000, stdin: 'ignore', env: { BHYVE_RUNDIR: RUNDIR, BHYVE_DEBUG: '1' }, stripFinalNewline: false,
    });
    const ll = 'abi' in landlock ? `Landlock ABI ${landlock.abi}` : 'no Landlock';
    expect(r.stderr).toMatch(new RegExp(`bhyve: sandbox: no_new_privs, capabilities dropped, ${ll}, seccomp filter \\([\\d.]+ ms\\)\n`));
    if (!('abi' in landlock)) expect(r.stderr).toContain(`bhyve: sandbox: no Landlock: ${landlock.missing}`);
    // bin/bhyve sizes libuv's pool: 8 threads at -c 1.
    expect(r.stderr).toMatch(/bhyve: sandbox: libuv's 8 pool threads confined; /);
    expect(r.exitCode).toBe(33);
  });
});
