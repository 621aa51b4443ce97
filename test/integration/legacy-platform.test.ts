// The legacy PC platform that test suites and old guests expect (issue 14),
// checked by one Multiboot ELF kernel (test/guests/kernels/mbelf-legacy.S,
// linked without -N so its first PT_LOAD sits at 0xff000) loaded by
// bhyveload and run by bhyve, and, where QEMU has the feature, by
// `qemu-system-x86_64 -kernel` with isa-debug-exit (and pc-testdev) in the
// same test. The check is chosen by "test=NAME" on the command line; each
// prints its lines on COM1 and ends with status 33.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { BHYVE, ROOT, kvmUnavailable } from '../support/bhyve.js';
import { QEMU_MISSING } from '../support/probes.js';

const BHYVECTL = path.join(ROOT, 'bin/bhyvectl');
const BHYVELOAD = path.join(ROOT, 'bin/bhyveload');
const KERNEL = path.join(ROOT, 'build/kernels/mbelf-legacy.elf');
const skipWhy = kvmUnavailable()
  ?? (spawnSync('sh', ['-c', 'command -v as && command -v ld'], { encoding: 'utf8' }).status === 0
    ? undefined : 'GNU binutils (as, ld) are not installed');
const qemuSkip = skipWhy ?? QEMU_MISSING;

let tmp = '';
let rundir = '';
let host = '';
let seq = 0;

beforeAll(() => {
  if (skipWhy) return;
  const b = spawnSync('sh', [path.join(ROOT, 'scripts/build-kernels.sh')], { encoding: 'utf8' });
  if (b.status !== 0) throw new Error(`scripts/build-kernels.sh failed: ${b.stderr}`);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'legacy-platform-'));
  rundir = path.join(tmp, 'run');
  host = path.join(tmp, 'host');
  fs.mkdirSync(path.join(host, 'boot'), { recursive: true });
  fs.copyFileSync(KERNEL, path.join(host, 'boot/legacy'));
});

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

async function tool(bin: string, args: string[], timeout: number) {
  const r = await execa(bin, args, {
    reject: false, env: { BHYVE_RUNDIR: rundir, BHYVE_DEBUG: '' }, stdin: 'ignore', timeout, stripFinalNewline: false,
  });
  return {
    status: r.exitCode ?? -1, stdout: String(r.stdout),
    lines: String(r.stderr).split('\n').filter((l) => l !== '' && !/^bhyve: warning:/.test(l)),
  };
}

/** bhyveload the kernel with `cmdline`, run it with bhyve and `extra`, destroy the VM. */
async function onBhyve(cmdline: string, extra: string[] = [], opts: { cpus?: number; timeout?: number } = {}) {
  const vm = `legacy${process.pid}-${seq++}`;
  const load = await tool(BHYVELOAD, ['-m', '64M', '-h', host, '-e', 'kernel=/boot/legacy', '-e', `cmdline=${cmdline}`, vm], 30_000);
  expect(load.lines).toEqual([]);
  expect(load.status).toBe(0);
  const run = await tool(BHYVE, ['-c', String(opts.cpus ?? 1), '-m', '64M', '-s', '0,hostbridge', '-s', '31,lpc',
    '-l', 'com1,stdio', '-l', 'pc-testdev', '-o', 'x86.require_ept_rvi=false', ...extra, vm], opts.timeout ?? 90_000);
  await tool(BHYVECTL, ['--destroy', `--vm=${vm}`], 30_000);
  return run;
}

/** The same kernel under QEMU: -kernel (SeaBIOS and its multiboot option ROM first). */
function onQemu(cmdline: string, extra: string[] = []) {
  const r = spawnSync('qemu-system-x86_64', [
    '-accel', 'kvm', '-accel', 'tcg', '-machine', 'pc', '-m', '64M', '-nodefaults', '-display', 'none', '-monitor', 'none',
    '-serial', 'stdio', '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-no-reboot', ...extra,
    '-kernel', KERNEL, '-append', cmdline,
  ], { encoding: 'latin1', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout };
}

describe.skipIf(skipWhy !== undefined)(`the legacy PC platform on bhyve${skipWhy ? ` (skipped: ${skipWhy})` : ''}`, { timeout: 180_000 }, () => {
  it('bhyveload loads a Multiboot ELF linked without -N (first PT_LOAD at 0xff000) and it runs', async () => {
    const r = await onBhyve('');
    expect(r.lines).toEqual([]);
    expect(r.stdout).toBe('mbelf-legacy: loaded, entry 0x0010000c\n');
    expect(r.status).toBe(33);
  });

  it('RTC register A: the guest sees UIP rise and fall around the update of the seconds', async () => {
    const r = await onBhyve('test=uip');
    expect(r.stdout).toBe('uip: rising edge seen, the seconds moved when it fell\n');
    expect(r.status).toBe(33);
  });

  it('lpc.fwcfg=qemu without a boot ROM: the RSDP, FADT, FACS and the FADT\'s PM timer are there', async () => {
    const r = await onBhyve('test=acpi', ['-o', 'lpc.fwcfg=qemu']);
    expect(r.stdout).toBe(ACPI_OUT);
    expect(r.status).toBe(33);
  });

  it('the default platform (bhyve\'s fwctl) gives the same ACPI view', async () => {
    const r = await onBhyve('test=acpi');
    expect(r.stdout).toBe(ACPI_OUT);
    expect(r.status).toBe(33);
  });
});

const ACPI_OUT = 'acpi: RSDP found\nacpi: FADT found\nacpi: FACS found\nacpi: PM timer advances\n';

describe.skipIf(qemuSkip !== undefined)(`the same kernel under QEMU${qemuSkip ? ` (skipped: ${qemuSkip})` : ''}`, { timeout: 180_000 }, () => {
  it('QEMU loads the Multiboot ELF linked without -N', () => {
    const r = onQemu('');
    expect(r.stdout).toBe('mbelf-legacy: loaded, entry 0x0010000c\n');
    expect(r.status).toBe(33);
  });

  it('QEMU: UIP edge', () => {
    const r = onQemu('test=uip');
    expect(r.stdout).toBe('uip: rising edge seen, the seconds moved when it fell\n');
    expect(r.status).toBe(33);
  });

  it('QEMU: ACPI tables and PM timer', () => {
    const r = onQemu('test=acpi');
    expect(r.stdout).toBe(ACPI_OUT);
    expect(r.status).toBe(33);
  });
});
