// Application processors on libuv's threadpool (src/vmm/ap-pool.ts,
// vcpu.ap_model=pool, the default) against one worker thread each
// (vcpu.ap_model=thread), and the same ROMs on QEMU. Nothing is timed: the
// structural facts are that every AP of a 16-vCPU guest checks in, that only
// vCPU 0 has a thread of its own (one V8 isolate loads the vCPU code), and
// that what reaches an AP from outside (forwarded port exits, kicks for
// bhyvectl and the halt watchdog) works on the pool.
import { execa } from 'execa';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BHYVE, bhyveArgs, kvmUnavailable, rom, ROOT, runBhyve, vmName } from '../support/bhyve.js';
import { HAVE_QEMU } from '../support/probes.js';

const skipWhy = kvmUnavailable();
const BHYVECTL = path.join(ROOT, 'bin/bhyvectl');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ap-pool-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** smp-exits.rom with its parameter (port 0x80 writes per AP) set. */
function smpExits(writes: number): string {
  const out = path.join(tmp, `smp-exits-${writes}.rom`);
  const b = fs.readFileSync(rom('smp-exits'));
  b.writeUInt32LE(writes, 0xffe0);
  fs.writeFileSync(out, b);
  return out;
}

/** How many vCPU worker threads loaded their code (BHYVE_TRACE_STARTUP). */
const vcpuThreadsLoaded = (stderr: string): number => stderr.split('\n').filter((l) => / vcpu: modules in$/.test(l)).length;

const TIMEOUT = 120_000;

describe.skipIf(skipWhy !== undefined)(`APs on the pool${skipWhy ? ` (skipped: ${skipWhy})` : ''}`, { timeout: TIMEOUT }, () => {
  it.each([
    ['with no vCPU thread in the process (vCPU 0 on the main thread)', 'pool16', [], 0],
    ['vcpu.bsp_model=thread: with vCPU 0 on a thread of its own', 'pool16t', ['-o', 'vcpu.bsp_model=thread'], 1],
  ] as const)('every AP of a 16-vCPU guest checks in, %s', async (_what, name, extra, threads) => {
    const r = await runBhyve(bhyveArgs(smpExits(0), vmName(name), { cpus: 16, extra: [...extra] }),
      { env: { BHYVE_TRACE_STARTUP: '1' }, timeout: TIMEOUT });
    expect(r.stdout, String(r.stderr)).toBe('BSP 0 up\r\nall 16 cpus up\r\n');
    expect(r.exitCode).toBe(33);
    expect(vcpuThreadsLoaded(String(r.stderr))).toBe(threads);
  });

  it('vcpu.ap_model=thread gives each AP its own thread, and the guest sees the same', async () => {
    const r = await runBhyve(bhyveArgs(smpExits(0), vmName('thread4'), { cpus: 4, extra: ['-o', 'vcpu.ap_model=thread'] }),
      { env: { BHYVE_TRACE_STARTUP: '1' }, timeout: TIMEOUT });
    expect(r.stdout, String(r.stderr)).toBe('BSP 0 up\r\nall 4 cpus up\r\n');
    expect(r.exitCode).toBe(33);
    expect(vcpuThreadsLoaded(String(r.stderr))).toBe(3); // the APs'; vCPU 0 runs on the main thread
  });

  it('APs\' port exits reach the devices on vCPU 0: each AP prints, and writes port 0x80 200 times', async () => {
    const printed = await runBhyve(bhyveArgs(rom('smp'), vmName('smp4'), { cpus: 4 }), { timeout: TIMEOUT });
    expect(printed.stdout, String(printed.stderr)).toMatch(/^BSP 0 up\r\n(AP [123] up\r\n){3}all 4 cpus up\r\n$/);
    for (const id of [1, 2, 3]) expect(printed.stdout).toContain(`AP ${id} up`);
    expect(printed.exitCode).toBe(33);
    const writes = await runBhyve(bhyveArgs(smpExits(200), vmName('exits4'), { cpus: 4 }), { timeout: TIMEOUT });
    expect(writes.stdout, String(writes.stderr)).toBe('BSP 0 up\r\nall 4 cpus up\r\n');
    expect(writes.exitCode).toBe(33);
  });

  it('the halt watchdog reaches APs on the pool: all halted with interrupts off ends the run with 2', async () => {
    // exit-halt's BSP does cli; hlt and never starts its APs.
    const r = await runBhyve(bhyveArgs(rom('exit-halt'), vmName('halt4'), { cpus: 4 }), { timeout: TIMEOUT });
    expect(r.stdout).toBe('halting\r\n');
    expect(r.exitCode).toBe(2);
  });

  it('bhyvectl reads an AP\'s registers while the AP waits in KVM_RUN on a pool thread', async () => {
    const rundir = path.join(tmp, 'run');
    fs.mkdirSync(rundir, { recursive: true, mode: 0o700 });
    const name = vmName('ctl4');
    // echo.rom waits for input on COM1; its APs wait for a SIPI that never comes.
    const child = execa(BHYVE, bhyveArgs(rom('echo'), name, { cpus: 4 }), {
      reject: false, timeout: TIMEOUT, stdin: 'pipe', env: { BHYVE_RUNDIR: rundir }, stripFinalNewline: false,
    });
    let out = '';
    child.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
    try {
      for (let i = 0; i < 600 && !out.includes('echo ready'); i++) await new Promise((r) => setTimeout(r, 50));
      expect(out).toContain('echo ready');
      const ctl = spawnSync(process.execPath, [BHYVECTL, `--vm=${name}`, '--cpu=3', '--get-rip'],
        { env: { ...process.env, BHYVE_RUNDIR: rundir }, encoding: 'utf8', timeout: 30_000 });
      expect(ctl.stdout, ctl.stderr).toMatch(/^rip\[3\]\t\t0x[0-9a-f]{16}$/m);
      expect(ctl.status).toBe(0);
    } finally {
      child.stdin!.write('q');
    }
    const r = await child;
    expect(r.exitCode, `${r.stdout}${r.stderr}`).toBe(33);
  });
});

describe.skipIf(!HAVE_QEMU)('the same ROM on QEMU', () => {
  it('every AP of a 16-vCPU guest checks in', () => {
    const r = spawnSync('qemu-system-x86_64', [
      '-accel', 'kvm', '-accel', 'tcg', '-machine', 'pc', '-smp', '16', '-m', '64M',
      '-nodefaults', '-display', 'none', '-monitor', 'none', '-serial', 'stdio',
      '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-no-reboot', '-bios', smpExits(200),
    ], { encoding: 'latin1', timeout: TIMEOUT });
    expect(r.stdout).toBe('BSP 0 up\r\nall 16 cpus up\r\n');
    expect(r.status).toBe(33);
  }, TIMEOUT);
});
