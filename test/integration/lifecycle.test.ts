// The VM's life beyond one process, on real KVM: bhyvectl --create, bhyve
// running a ROM guest while bhyvectl reads its registers and statistics
// through the control socket, --force-poweroff (bhyve exits 1), --destroy;
// bad input (unknown VM, VM already running, mismatched -m, kernel outside
// the host path, corrupt kernel); bhyveload of the mb-echo Multiboot kernel
// then bhyve; an NMI injected with bhyvectl and seen by the guest; and the
// bhyveload/bhyve shell loop through a guest reset and a
// power-off. BHYVE_RUNDIR points into a temporary directory.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { BHYVE, ROOT, bhyveArgs, kvmUnavailable, rom } from '../support/bhyve.js';

const BHYVECTL = path.join(ROOT, 'bin/bhyvectl');
const BHYVELOAD = path.join(ROOT, 'bin/bhyveload');
const KERNEL = path.join(ROOT, 'build/kernels/mb-echo.bin');
const skipWhy = kvmUnavailable()
  ?? (spawnSync('sh', ['-c', 'command -v gcc && command -v ld'], { encoding: 'utf8' }).status === 0 ? undefined : 'gcc/binutils are not installed');

let tmp = '';
let rundir = '';
let host = '';
const env = (): Record<string, string> => ({ BHYVE_RUNDIR: rundir, BHYVE_DEBUG: '' });

async function tool(bin: string, args: string[]): Promise<{ status: number; stdout: string; lines: string[] }> {
  const r = await execa(bin, args, { reject: false, env: env(), stdin: 'ignore', timeout: 30_000 });
  return { status: r.exitCode ?? -1, stdout: r.stdout, lines: r.stderr.split('\n').filter((l) => l !== '' && !/^bhyve: warning:/.test(l)) };
}
const ctl = (args: string[]) => tool(BHYVECTL, args);

function startBhyve(args: string[]): ResultPromise {
  return execa(BHYVE, args, { reject: false, env: env(), stdin: 'ignore', timeout: 60_000, stripFinalNewline: false });
}

async function waitFor(cond: () => boolean, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(() => {
  if (skipWhy) return;
  const b = spawnSync('sh', [path.join(ROOT, 'scripts/build-kernels.sh')], { encoding: 'utf8' });
  if (b.status !== 0) throw new Error(`scripts/build-kernels.sh failed: ${b.stderr}`);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lifecycle-'));
  rundir = path.join(tmp, 'run');
  host = path.join(tmp, 'host');
  fs.mkdirSync(path.join(host, 'boot'), { recursive: true });
  fs.copyFileSync(KERNEL, path.join(host, 'boot/kernel'));
  fs.writeFileSync(path.join(host, 'boot/initfs'), 'initfs contents\n');
  fs.writeFileSync(path.join(host, 'boot/corrupt'), Buffer.alloc(9000, 0xa5));
});

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe.skipIf(skipWhy !== undefined)(`VM lifecycle${skipWhy ? ` (skipped: ${skipWhy})` : ''}`, { timeout: 60_000 }, () => {
  it('create, run, inspect, refuse a second bhyve and a mismatched -m, force-poweroff, destroy', async () => {
    const name = 'life';
    expect((await ctl([`--vm=${name}`, '--create'])).status).toBe(0);
    const bhyve = startBhyve(bhyveArgs(rom('echo'), name));
    try {
      await waitFor(() => fs.existsSync(path.join(rundir, name, 'control.sock')), 'the control socket');

      const rip = await ctl([`--vm=${name}`, '--get-rip']);
      expect(rip.status).toBe(0);
      expect(rip.stdout).toMatch(/^rip\[0\]\t\t0x[0-9a-f]{16}$/);

      const all = await ctl([`--vm=${name}`, '--get-all']);
      expect(all.status).toBe(0);
      expect(all.stdout).toMatch(/^cs\[0\]\t\t0xf000$/m); // the ROM runs in real mode at F000:xxxx
      expect(all.stdout).toMatch(/^cs desc\[0\]\t0x(00000000ffff0000|00000000000f0000)\/0x0000ffff\/0x0000009b$/m); // real-mode code segment
      expect(all.stdout).toContain('FFFF0000    65536B      bootrom     0           R-X   ');
      expect(all.stdout).toContain('active cpus:\t 0\n');
      expect(all.stdout).toContain('cpu_topology:\tsockets=1, cores=1, threads=1, maxcpus=1');

      const stats = await ctl([`--vm=${name}`, '--get-stats']);
      expect(stats.status).toBe(0);
      const total = /^total number of vm exits\s+\t(\d+)$/m.exec(stats.stdout);
      expect(Number(total?.[1])).toBeGreaterThan(0);
      expect(stats.stdout).toMatch(/^vm exits due to IO\s+\t[1-9]\d*$/m);

      const json = JSON.parse((await ctl([`--vm=${name}`, '--get-rip', '--get-stats', '--libxo=json'])).stdout);
      expect(json.bhyvectl.register.rip).toMatch(/^0x[0-9a-f]{16}$/);
      expect(json.bhyvectl.stats.stat[0].value).toBeGreaterThan(0);

      // (No --inject-nmi here: the echo ROM has no NMI handler, an NMI would wreck it.)
      const second = await tool(BHYVE, bhyveArgs(rom('echo'), name));
      expect(second.status).toBe(4);
      expect(second.lines).toEqual([expect.stringMatching(/^bhyve: VM 'life' is already running \(bhyve pid \d+\)$/)]);

      const off = await ctl([`--vm=${name}`, '--force-poweroff']);
      expect(off.status).toBe(0);
      const r = await bhyve;
      expect(r.exitCode).toBe(1);
      expect(r.stdout).toContain('echo ready');
    } finally {
      bhyve.kill();
    }
    const mismatch = await tool(BHYVE, bhyveArgs(rom('echo'), name, { mem: '128M' }));
    expect(mismatch.status).toBe(4);
    expect(mismatch.lines).toEqual([expect.stringMatching(/^bhyve: VM 'life' exists with 64M of memory, not the 128M requested/)]);

    expect((await ctl([`--vm=${name}`, '--destroy'])).status).toBe(0);
    expect(fs.existsSync(path.join(rundir, name))).toBe(false);
  });

  it('stdout and stderr closed by their reader before bhyve writes: the guest still runs to its exit status (33)', async () => {
    // sh: bhyve's output goes into a pipe whose reader (true) has exited.
    const name = `epipe-${process.pid}`;
    const r = spawnSync('bash', ['-c', '"$0" "$@" 2>&1 | true; exit "${PIPESTATUS[0]}"', BHYVE, ...bhyveArgs(rom('exit-testdev'), name)],
      { env: { ...process.env, ...env() }, timeout: 60_000, encoding: 'utf8' });
    await ctl(['--destroy', `--vm=${name}`]);
    expect(r.error).toBeUndefined();
    expect(r.status).toBe(33);
  });

  it('--destroy of a running VM powers its bhyve off (exit 1) and removes it', async () => {
    const name = 'running-destroy';
    const bhyve = startBhyve(bhyveArgs(rom('echo'), name));
    try {
      await waitFor(() => fs.existsSync(path.join(rundir, name, 'control.sock')), 'the control socket');
      expect((await ctl([`--vm=${name}`, '--destroy'])).status).toBe(0);
      expect((await bhyve).exitCode).toBe(1);
      expect(fs.existsSync(path.join(rundir, name))).toBe(false);
    } finally {
      bhyve.kill();
    }
  });

  it.each([
    ['an unknown VM', () => ctl(['--vm=nosuch', '--get-rip']), /^vm_open: nosuch could not be opened: No such file or directory$/],
    ['a kernel path outside the host path', () => tool(BHYVELOAD, ['-m', '64M', '-h', host, '-e', 'kernel=../../etc/passwd', 'k1']),
      /^bhyveload: kernel \.\.\/\.\.\/etc\/passwd is outside the host path/],
    ['a corrupt kernel', () => tool(BHYVELOAD, ['-m', '64M', '-h', host, '-e', 'kernel=/boot/corrupt', 'k1']),
      /^bhyveload: kernel \/boot\/corrupt is not a bzImage, PVH ELF or Multiboot image$/],
    ['bhyve without a boot ROM or loaded kernel', async () => {
      await ctl(['--vm=empty', '--create']);
      return tool(BHYVE, ['-m', '64M', '-s', '0,hostbridge', '-s', '31,lpc', '-o', 'x86.require_ept_rvi=false', 'empty']);
    }, /^bhyve: nothing to boot in VM 'empty'/],
  ])('%s: one line, nonzero status', async (_what, run, re) => {
    const r = await run();
    expect(r.status).not.toBe(0);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(re);
  });

  it('bhyveload of a Multiboot kernel, then bhyve runs it (command line and module on COM1, exit 33)', async () => {
    const load = await tool(BHYVELOAD, ['-m', '64M', '-h', host, '-e', 'kernel=/boot/kernel', '-e', 'cmdline=console=com1 answer=42',
      '-e', 'module.0=/boot/initfs root=initfs', 'mb']);
    expect(load.lines).toEqual([]);
    expect(load.status).toBe(0);
    const rip = await ctl(['--vm=mb', '--get-rip', '--get-rax']);
    expect(rip.stdout).toMatch(/^rip\[0\]\t\t0x00000000001[0-9a-f]{5}\nrax\[0\]\t\t0x000000002badb002$/);
    const r = await startBhyve(['-m', '64M', '-s', '0,hostbridge', '-s', '31,lpc', '-l', 'com1,stdio', '-l', 'pc-testdev',
      '-o', 'x86.require_ept_rvi=false', 'mb']);
    expect(r.stdout).toBe([
      'mb-echo: magic ok',
      'cmdline: console=com1 answer=42',
      'mem_upper: 64512',
      'mods: 1',
      'mod0: /boot/initfs root=initfs [initfs contents] size=16',
      '',
    ].join('\n'));
    expect(r.exitCode).toBe(33);
    expect((await ctl(['--vm=mb', '--destroy'])).status).toBe(0);
  });

  it('bhyvectl --inject-nmi reaches the guest: mb-echo\'s NMI handler reports it (exit 35)', async () => {
    expect((await tool(BHYVELOAD, ['-m', '64M', '-h', host, '-e', 'kernel=/boot/kernel', '-e', 'cmdline=nmi', 'nmi'])).status).toBe(0);
    const bhyve = startBhyve(['-m', '64M', '-s', '0,hostbridge', '-s', '31,lpc', '-l', 'com1,stdio', '-l', 'pc-testdev',
      '-o', 'x86.require_ept_rvi=false', 'nmi']);
    try {
      let out = '';
      bhyve.stdout?.on('data', (c: Buffer) => { out += c.toString(); });
      await waitFor(() => out.includes('nmi: waiting'), 'the guest to wait for an NMI');
      expect((await ctl(['--vm=nmi', '--inject-nmi'])).status).toBe(0);
      const r = await bhyve;
      expect(r.stdout).toMatch(/nmi: waiting\nnmi: received\n$/);
      expect(r.exitCode).toBe(35);
    } finally {
      bhyve.kill();
    }
    expect((await ctl(['--vm=nmi', '--destroy'])).status).toBe(0);
  });

  it('the bhyveload/bhyve shell loop runs through a guest reset and a power-off, then destroys the VM', async () => {
    const script = [
      'n=0',
      'while :; do',
      `  "${BHYVELOAD}" -m 64M -h "${host}" -e kernel=/boot/kernel -e cmdline=cycle vm || break`,
      `  "${BHYVE}" -m 64M -s 0,hostbridge -s 31,lpc -l com1,stdio -l pc-testdev -o x86.require_ept_rvi=false vm </dev/null 2>/dev/null`,
      '  st=$?; echo "exit $st"; n=$((n+1)); [ $n -lt 5 ] || break',
      '  [ $st -eq 0 ] || break',
      'done',
      `"${BHYVECTL}" --destroy --vm=vm`,
    ].join('\n');
    const r = await execa('sh', ['-c', script], { reject: false, env: env(), timeout: 60_000 });
    expect(r.exitCode).toBe(0);
    const lines = r.stdout.split('\n').filter((l) => /^(boot|exit) /.test(l));
    expect(lines).toEqual(['boot 1', 'exit 0', 'boot 2', 'exit 1']);
    expect(fs.existsSync(path.join(rundir, 'vm'))).toBe(false);
  });
});
