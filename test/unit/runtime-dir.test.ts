// Issue 9 defect 2: another local user must not be able to plant the
// runtime directory (or a VM directory, or the memory file) and so read a
// guest's memory. VM objects are refused unless every directory and file is
// ours and closed to group and others, and never reached through a link.
// The last test runs the real bhyveload as an unprivileged user without
// XDG_RUNTIME_DIR, whose runtime root falls back to the shared tmp.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, describe, expect, it } from 'vitest';

import { onMemoryFs, runtimeDir, type RuntimeHost } from '../../src/vmm/runtime-dir.js';
import { VmObject, VmObjectError } from '../../src/vmm/vm-object.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const M = 1024 * 1024;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'runtime-dir-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let seq = 0;
const fresh = (): string => path.join(tmp, `r${seq++}`);

/** The one-line refusal acquire() gives, or 'accepted'. */
function acquireWhy(root: string, name = 'vm'): string {
  try {
    VmObject.acquire(name, 2 * M, root).destroy();
    return 'accepted';
  } catch (e) {
    expect(e).toBeInstanceOf(VmObjectError);
    expect((e as Error).message).not.toContain('\n');
    return (e as Error).message;
  }
}

describe('runtime directory and VM object files must be ours', () => {
  it('creates a missing root 0700 and uses it', () => {
    const root = fresh();
    expect(acquireWhy(root)).toBe('accepted');
    expect(fs.statSync(root).mode & 0o777).toBe(0o700);
  });

  it('refuses a planted mode 777 runtime directory', () => {
    const root = fresh();
    fs.mkdirSync(root);
    fs.chmodSync(root, 0o777);
    expect(acquireWhy(root)).toBe(`refusing runtime directory ${root}: it is open to other users (mode 0777); remove it or set BHYVE_RUNDIR to a directory of your own`);
    expect(fs.readdirSync(root)).toEqual([]);
  });

  it('refuses a runtime directory that is a symbolic link', () => {
    const root = fresh();
    fs.mkdirSync(`${root}-real`, { mode: 0o700 });
    fs.symlinkSync(`${root}-real`, root);
    expect(acquireWhy(root)).toMatch(/^refusing runtime directory .*: it is a symbolic link;/);
  });

  it('refuses a planted mode 777 VM directory and a mode 666 memory file in it', () => {
    const root = fresh();
    fs.mkdirSync(path.join(root, 'vm'), { recursive: true, mode: 0o700 });
    fs.chmodSync(path.join(root, 'vm'), 0o777);
    expect(acquireWhy(root)).toMatch(/^refusing VM directory .*\/vm: it is open to other users \(mode 0777\)/);
    fs.chmodSync(path.join(root, 'vm'), 0o700);
    const mem = path.join(root, 'vm', 'memory');
    fs.writeFileSync(mem, Buffer.alloc(0));
    fs.truncateSync(mem, 2 * M);
    fs.chmodSync(mem, 0o666);
    expect(acquireWhy(root)).toBe(`refusing guest memory file ${mem}: it is open to other users (mode 0666)`);
  });

  it('refuses a memory file that is a symbolic link', () => {
    const root = fresh();
    fs.mkdirSync(path.join(root, 'vm'), { recursive: true, mode: 0o700 });
    const elsewhere = path.join(tmp, `elsewhere${seq++}`);
    fs.writeFileSync(elsewhere, Buffer.alloc(2 * M), { mode: 0o600 });
    fs.symlinkSync(elsewhere, path.join(root, 'vm', 'memory'));
    expect(acquireWhy(root)).toMatch(/^refusing guest memory file .*: it is a symbolic link$/);
  });

  it.skipIf(process.geteuid?.() !== 0)('refuses directories and files owned by another user (needs root to chown)', () => {
    const root = fresh();
    fs.mkdirSync(root, { mode: 0o700 });
    fs.chownSync(root, 65534, 65534);
    expect(acquireWhy(root)).toBe(`refusing runtime directory ${root}: it is owned by uid 65534, not by this user (uid 0); remove it or set BHYVE_RUNDIR to a directory of your own`);
    fs.chownSync(root, 0, 0);
    fs.mkdirSync(path.join(root, 'vm'), { mode: 0o700 });
    fs.writeFileSync(path.join(root, 'vm', 'memory'), Buffer.alloc(2 * M), { mode: 0o600 });
    fs.chownSync(path.join(root, 'vm', 'memory'), 65534, 65534);
    expect(acquireWhy(root)).toMatch(/^refusing guest memory file .*: it is owned by uid 65534, not by this user \(uid 0\)$/);
  });

  // The attack as reported: without XDG_RUNTIME_DIR a user's runtime root is
  // bhyve-UID in the shared tmp; another user creates it first, mode 777,
  // with a mode 666 memory file in the VM's directory.
  // (the temporary directory's bhyve-65534, or /dev/shm's when that one is
  // on a disk: runtimeDir() as bhyveload will see it)
  const nobodyRoot = runtimeDir({}, { euid: 65534, tmpdir: os.tmpdir(), onMemoryFs });
  const canRunAsNobody = process.geteuid?.() === 0 && spawnSync('setpriv', ['--version']).status === 0
    && fs.existsSync(path.join(ROOT, 'dist/cli/bhyveload-main.js')) && fs.existsSync(path.join(ROOT, 'build/kernels/mb-echo.bin'));
  const skipNobody = !canRunAsNobody ? 'needs root, setpriv, dist/ and build/kernels'
    : fs.existsSync(nobodyRoot) ? `${nobodyRoot} exists already` : undefined;
  it.skipIf(skipNobody !== undefined)(`bhyveload as an unprivileged user refuses a planted ${nobodyRoot}${skipNobody ? ` (skipped: ${skipNobody})` : ''}`, () => {
    const host = fs.mkdtempSync(path.join(os.tmpdir(), 'rtdir-host-'));
    fs.chmodSync(host, 0o755);
    fs.mkdirSync(path.join(host, 'boot'), { mode: 0o755 });
    fs.copyFileSync(path.join(ROOT, 'build/kernels/mb-echo.bin'), path.join(host, 'boot/kernel'));
    fs.chmodSync(path.join(host, 'boot/kernel'), 0o644);
    try {
      fs.mkdirSync(path.join(nobodyRoot, 'victim'), { recursive: true });
      fs.chmodSync(nobodyRoot, 0o777);
      fs.chmodSync(path.join(nobodyRoot, 'victim'), 0o777);
      fs.writeFileSync(path.join(nobodyRoot, 'victim', 'memory'), Buffer.alloc(0));
      fs.truncateSync(path.join(nobodyRoot, 'victim', 'memory'), 64 * M);
      fs.chmodSync(path.join(nobodyRoot, 'victim', 'memory'), 0o666);
      const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !['XDG_RUNTIME_DIR', 'BHYVE_RUNDIR'].includes(k)));
      const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath,
        path.join(ROOT, 'bin/bhyveload'), '-m', '64M', '-h', host, '-e', 'kernel=/boot/kernel', 'victim'], { encoding: 'utf8', env });
      expect(r.stderr).toBe(`bhyveload: refusing runtime directory ${nobodyRoot}: it is owned by uid 0, not by this user (uid 65534); remove it or set BHYVE_RUNDIR to a directory of your own\n`);
      expect(r.status).toBe(1);
      // The planted memory file got nothing: no boot state, no kernel bytes.
      expect(fs.existsSync(path.join(nobodyRoot, 'victim', 'boot-state.json'))).toBe(false);
      expect(fs.readFileSync(path.join(nobodyRoot, 'victim', 'memory')).every((b) => b === 0)).toBe(true);
    } finally {
      fs.rmSync(nobodyRoot, { recursive: true, force: true });
      fs.rmSync(host, { recursive: true, force: true });
    }
  });
});

// Guest memory lives in the runtime directory: where /run or the temporary
// directory is on a disk, the same name under /dev/shm (when that is in
// memory) keeps guest pages off the disk.
describe('runtimeDir() picks a directory kept in memory', () => {
  const host = (euid: number, memory: string[], tmpdir = '/tmp'): RuntimeHost => ({ euid, tmpdir, onMemoryFs: (d) => memory.includes(d) });

  it('root: /run/bhyve when /run (or /run/bhyve itself) is in memory', () => {
    expect(runtimeDir({}, host(0, ['/run', '/dev/shm']))).toBe('/run/bhyve');
    expect(runtimeDir({}, host(0, ['/run/bhyve', '/dev/shm']))).toBe('/run/bhyve');
  });

  it('root: /dev/shm/bhyve when /run is on a disk and /dev/shm is in memory', () => {
    expect(runtimeDir({}, host(0, ['/dev/shm']))).toBe('/dev/shm/bhyve');
  });

  it('root: /run/bhyve when neither is in memory (nothing better to offer)', () => {
    expect(runtimeDir({}, host(0, []))).toBe('/run/bhyve');
  });

  it('other users: $XDG_RUNTIME_DIR/bhyve as given, else bhyve-UID in the temporary directory or /dev/shm', () => {
    expect(runtimeDir({ XDG_RUNTIME_DIR: '/run/user/1000' }, host(1000, ['/dev/shm']))).toBe('/run/user/1000/bhyve');
    expect(runtimeDir({}, host(1000, ['/tmp', '/dev/shm']))).toBe('/tmp/bhyve-1000');
    expect(runtimeDir({}, host(1000, ['/dev/shm'], '/var/tmp'))).toBe('/dev/shm/bhyve-1000');
    expect(runtimeDir({}, host(1000, []))).toBe('/tmp/bhyve-1000');
  });

  it('BHYVE_RUNDIR wins wherever it is', () => {
    expect(runtimeDir({ BHYVE_RUNDIR: '/srv/vms' }, host(0, ['/run', '/dev/shm']))).toBe('/srv/vms');
    expect(runtimeDir({ BHYVE_RUNDIR: '/srv/vms' }, host(1000, ['/dev/shm']))).toBe('/srv/vms');
  });

  it('onMemoryFs tells this host\'s /dev/shm and /proc apart from a missing path', () => {
    // /proc is procfs (not memory-backed files), a missing path is not in memory
    expect(onMemoryFs('/proc')).toBe(false);
    expect(onMemoryFs('/nonexistent-dir-for-bhyve-test')).toBe(false);
    // what /proc/mounts says of /dev/shm, read independently of statfs
    const shm = fs.readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' ')).filter((f) => f[1] === '/dev/shm').at(-1);
    expect(onMemoryFs('/dev/shm')).toBe(shm !== undefined && ['tmpfs', 'ramfs'].includes(shm[2]));
  });
});
