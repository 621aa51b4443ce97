// bhyveload and bhyvectl on idle VM objects (no KVM needed): the built
// launchers run with BHYVE_RUNDIR in a temporary directory. bhyveload loads
// the mb-echo Multiboot test kernel (scripts/build-kernels.sh) and stores
// vCPU 0's boot state; bhyvectl reads and changes it; bad input gives one
// line and a nonzero status.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { VmLock } from '../../src/vmm/vm-lock.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const KERNEL = path.join(ROOT, 'build/kernels/mb-echo.bin');
const HAVE_TOOLS = spawnSync('sh', ['-c', 'command -v gcc && command -v ld && command -v objcopy'], { encoding: 'utf8' }).status === 0;
const BUILT = fs.existsSync(path.join(ROOT, 'dist/cli/bhyveload-main.js'));
const skipWhy = !BUILT ? 'dist/ is not built (npm run build)' : !HAVE_TOOLS ? 'gcc/binutils are not installed' : undefined;

let tmp = '';
let rundir = '';
let host = '';

function run(tool: string, args: string[]): { status: number | null; stdout: string; stderr: string; lines: string[] } {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', tool), ...args], {
    encoding: 'utf8', env: { ...process.env, BHYVE_RUNDIR: rundir, BHYVE_DEBUG: '' },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, lines: r.stderr.split('\n').filter((l) => l !== '') };
}

beforeAll(() => {
  if (skipWhy) return;
  const b = spawnSync('sh', [path.join(ROOT, 'scripts/build-kernels.sh')], { encoding: 'utf8' });
  if (b.status !== 0) throw new Error(`scripts/build-kernels.sh failed: ${b.stderr}`);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bhyveload-'));
  rundir = path.join(tmp, 'run');
  host = path.join(tmp, 'host');
  fs.mkdirSync(path.join(host, 'boot'), { recursive: true });
  fs.copyFileSync(KERNEL, path.join(host, 'boot/kernel'));
  fs.writeFileSync(path.join(host, 'boot/mod0'), 'first module line\nmore\n');
  fs.writeFileSync(path.join(host, 'boot/corrupt'), Buffer.alloc(20000, 0x5a));
  fs.writeFileSync(path.join(tmp, 'secret'), 'outside');
  fs.symlinkSync(path.join(tmp, 'secret'), path.join(host, 'boot/escape'));
});

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe.skipIf(skipWhy !== undefined)(`bhyveload${skipWhy ? ` (skipped: ${skipWhy})` : ''}`, () => {
  it('loads a Multiboot kernel with command line and module, storing vCPU 0 state', () => {
    const r = run('bhyveload', ['-m', '64M', '-h', host, '-e', 'kernel=/boot/kernel', '-e', 'cmdline=hello world',
      '-e', 'module.0=/boot/mod0 a b', 'vm1']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const dir = path.join(rundir, 'vm1');
    expect(fs.statSync(path.join(dir, 'memory')).size).toBe(64 * 1024 * 1024);
    const bs = JSON.parse(fs.readFileSync(path.join(dir, 'boot-state.json'), 'utf8'));
    expect(bs.entry).toBe('multiboot');
    expect(bs.regs.rax).toBe('0x2badb002');
    const mem = fs.readFileSync(path.join(dir, 'memory'));
    const kernel = fs.readFileSync(KERNEL);
    expect(mem.subarray(0x100000, 0x100000 + kernel.length).equals(kernel)).toBe(true);
    expect(mem.includes(Buffer.from('hello world\0'))).toBe(true);
    expect(mem.includes(Buffer.from('first module line'))).toBe(true);
    // the entry point is the a.out kludge's entry_addr (header word 7)
    expect(BigInt(bs.regs.rip)).toBe(BigInt(kernel.readUInt32LE(28)));
  });

  it('bhyvectl reads an idle loaded VM from its stored state', () => {
    const r = run('bhyvectl', ['--vm=vm1', '--get-rip', '--get-rax', '--get-desc-cs', '--get-cs', '--get-desc-gdtr']);
    expect(r.status).toBe(0);
    const bs = JSON.parse(fs.readFileSync(path.join(rundir, 'vm1/boot-state.json'), 'utf8'));
    expect(r.stdout).toBe([
      `rip[0]\t\t0x${BigInt(bs.regs.rip).toString(16).padStart(16, '0')}`,
      'rax[0]\t\t0x000000002badb002',
      'cs desc[0]\t0x0000000000000000/0xffffffff/0x0000c09b',
      `gdtr[0]\t\t0x${BigInt(bs.sregs.gdt.base).toString(16).padStart(16, '0')}/0x${bs.sregs.gdt.limit.toString(16).padStart(8, '0')}`,
      'cs[0]\t\t0x0010',
      '',
    ].join('\n'));
    const all = run('bhyvectl', ['--vm=vm1', '--get-all']);
    expect(all.status).toBe(0);
    expect(all.stdout).toContain('0           65536kB     sysmem      0           RWX   \n');
    expect(all.stdout).toContain('active cpus:\t (none)\n');
    expect(all.stdout).not.toContain('stats:');
    const j = JSON.parse(run('bhyvectl', ['--vm=vm1', '--get-memmap', '--get-rflags', '--libxo=json']).stdout);
    expect(j.bhyvectl.register.rflags).toBe('0x0000000000000002');
    expect(j.bhyvectl.memmap).toEqual([{ address: '0x0', length: 67108864, segment: 'sysmem', offset: '0x0', prot: 'RWX', flags: '' }]);
  });

  it('bhyvectl --set-* changes the stored state bhyve will start with', () => {
    expect(run('bhyvectl', ['--vm=vm1', '--set-rbx=0x1234', '--set-desc-ds', '--desc-base=0x1000', '--desc-limit=0xfff',
      '--desc-access=0x4093', '--set-ds=0x18']).status).toBe(0);
    const r = run('bhyvectl', ['--vm=vm1', '--get-rbx', '--get-desc-ds', '--get-ds']);
    expect(r.stdout).toBe('rbx[0]\t\t0x0000000000001234\nds desc[0]\t0x0000000000001000/0x00000fff/0x00004093\nds[0]\t\t0x0018\n');
  });

  it.each([
    [['--vm=vm1', '--get-stats'], /^bhyvectl: VM 'vm1' is not running: --get-stats needs a running bhyve$/],
    [['--vm=vm1', '--inject-nmi'], /not running: --inject-nmi/],
    [['--vm=vm1', '--force-poweroff'], /not running: --force-poweroff/],
    [['--vm=vm1', '--set-cr2=1'], /not running: setting cr2/],
    [['--vm=vm1', '--cpu=1', '--get-rip'], /only vCPU 0's state is stored/],
    [['--vm=vm1', '--create'], /vm_create: vm1: VM already exists/],
    [['--vm=nosuch', '--get-rip'], /^vm_open: nosuch could not be opened: No such file or directory$/],
    [['--vm=vm1', '--get-vmcs-link'], /not supported yet: --get-vmcs-link/],
    [['--vm=vm1', '--libxo=yaml'], /invalid --libxo option 'yaml'/],
  ])('bhyvectl %j: one line, status 1', (args, re) => {
    const r = run('bhyvectl', args);
    expect(r.status).toBe(1);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(re);
  });

  it.each([
    ['a path outside the host path', ['-e', 'kernel=/../secret'], /kernel \/..\/secret is outside the host path/],
    ['a symbolic link leading out', ['-e', 'kernel=/boot/escape'], /outside the host path .*symbolic link/],
    ['a missing kernel', ['-e', 'kernel=/boot/nosuch'], /kernel \/boot\/nosuch: No such file or directory/],
    ['a disk under a file', ['-d', '/dev/null/disk.img', '-e', 'kernel=/boot/kernel'], /disk \/dev\/null\/disk.img: Not a directory$/],
    ['a console under a file', ['-c', '/dev/null/tty', '-e', 'kernel=/boot/kernel'], /console \/dev\/null\/tty: Not a directory$/],
    ['a corrupt kernel', ['-e', 'kernel=/boot/corrupt'], /is not a bzImage, PVH ELF or Multiboot image/],
    ['no kernel variable', [], /no kernel to load: give -e kernel=PATH/],
    ['a module gap', ['-e', 'kernel=/boot/kernel', '-e', 'module.1=/boot/mod0'], /module.0 is missing/],
  ])('refuses %s: one line, status 1, no VM left', (_what, extra, re) => {
    const r = run('bhyveload', ['-m', '64M', '-h', host, ...extra, 'bad']);
    expect(r.status).toBe(1);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(/^bhyveload: /);
    expect(r.lines[0]).toMatch(re);
    expect(fs.existsSync(path.join(rundir, 'bad'))).toBe(false);
  });

  it('refuses a -m that differs from the existing VM, and a running VM', () => {
    let r = run('bhyveload', ['-m', '128M', '-h', host, '-e', 'kernel=/boot/kernel', 'vm1']);
    expect(r.status).toBe(1);
    expect(r.lines).toEqual([expect.stringMatching(/^bhyveload: VM 'vm1' exists with 64M of memory, not the 128M requested/)]);
    // This process "runs" it: it holds the VM's run lock and wrote bhyve.pid.
    const lock = VmLock.tryAcquire(path.join(rundir, 'vm1'));
    if (!(lock instanceof VmLock)) throw new Error(`cannot lock vm1: ${lock}`);
    fs.writeFileSync(path.join(rundir, 'vm1/bhyve.pid'), `${process.pid}\n`);
    try {
      r = run('bhyveload', ['-m', '64M', '-h', host, '-e', 'kernel=/boot/kernel', 'vm1']);
      expect(r.status).toBe(1);
      expect(r.lines).toEqual([expect.stringMatching(/^bhyveload: VM 'vm1' is running \(bhyve pid \d+\)/)]);
    } finally {
      fs.rmSync(path.join(rundir, 'vm1/bhyve.pid'));
      lock.release();
    }
  });

  it('warns about loader variables it does not use, and reloads an existing VM', () => {
    const r = run('bhyveload', ['-m', '64M', '-h', host, '-e', 'kernel=/boot/kernel', '-e', 'boot_verbose=YES', '-c', 'stdio', '-S', 'vm1']);
    expect(r.status).toBe(0);
    expect(r.lines).toEqual(['bhyveload: warning: ignoring -e boot_verbose (this bhyveload uses kernel, initrd, cmdline and module.N)']);
  });

  it('bhyvectl --create, --set-mem, --get-memseg, --destroy', () => {
    expect(run('bhyvectl', ['--vm=c1', '--create']).status).toBe(0);
    expect(fs.existsSync(path.join(rundir, 'c1/memory'))).toBe(false);
    const r = run('bhyvectl', ['--vm=c1', '--set-mem=31', '--get-memseg']);
    expect(r.stdout).toBe('ID  Length      Name\n0   32768kB     sysmem\n');
    expect(run('bhyvectl', ['--vm=c1', '--get-rip']).stdout).toBe('rip[0]\t\t0x000000000000fff0\n'); // power-on state
    expect(run('bhyvectl', ['--vm=c1', '--set-rip=0']).lines).toEqual([expect.stringMatching(/has no stored vCPU state to change/)]);
    expect(run('bhyvectl', ['--vm=c1', '--destroy']).status).toBe(0);
    expect(fs.existsSync(path.join(rundir, 'c1'))).toBe(false);
    expect(run('bhyvectl', ['--vm=vm1', '--destroy']).status).toBe(0);
    expect(fs.readdirSync(rundir)).toEqual([]);
  });
});
