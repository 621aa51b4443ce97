// The legacy PC platform that test suites and old guests expect (issue 14),
// checked by one Multiboot ELF kernel (test/guests/kernels/mbelf-legacy.S,
// linked without -N so its first PT_LOAD sits at 0xff000) loaded by
// bhyveload and run by bhyve, and, where QEMU has the feature, by
// `qemu-system-x86_64 -kernel` with isa-debug-exit (and pc-testdev) in the
// same test. The check is chosen by "test=NAME" on the command line; each
// prints its lines on COM1 and ends with status 33. bhyve's fwctl exists
// only for a boot ROM (as in bhyve): test/guests/fwctl.S checks it, on
// bhyve only (QEMU has no fwctl).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { BHYVE, ROOT, bhyveArgs, kvmUnavailable, rom, runBhyve, vmName } from '../support/bhyve.js';
import { QEMU_MISSING } from '../support/probes.js';

const BHYVECTL = path.join(ROOT, 'bin/bhyvectl');
const BHYVELOAD = path.join(ROOT, 'bin/bhyveload');
const KERNEL = path.join(ROOT, 'build/kernels/mbelf-legacy.elf');
// The same linked with -N: QEMU copies the no -N kernel's whole span over
// SeaBIOS's F segment (0xff000-0xfffff), which real-mode BIOS code needs.
const KERNEL_N = path.join(ROOT, 'build/kernels/mbelf-legacy-n.elf');
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
async function onQemu(cmdline: string, extra: string[] = [], o: { tcg?: boolean; kernel?: string } = {}) {
  const r = await execa('qemu-system-x86_64', [
    ...(o.tcg ? [] : ['-accel', 'kvm']), '-accel', 'tcg', '-machine', 'pc', '-m', '64M', '-nodefaults', '-display', 'none',
    '-monitor', 'none', '-serial', 'stdio', '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-no-reboot', ...extra,
    '-kernel', o.kernel ?? KERNEL, '-append', cmdline,
  ], { reject: false, stdin: 'ignore', timeout: 150_000, stripFinalNewline: false });
  return { status: r.exitCode, stdout: String(r.stdout) };
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

  it('BIOS-era state after bhyveload: BDA, IVT, PIT tick at vector 8 wakes sti;hlt in real mode, IRQ 11 from a 4-byte pc-testdev write at 0x73', async () => {
    const r = await onBhyve('test=realmode');
    expect(r.stdout).toBe(REALMODE_OUT);
    expect(r.status).toBe(33);
  });

  it('lpc.fwcfg=bhyve with a boot ROM: bhyve\'s fwctl gives the signature, hw.ncpu, its length and ENOENT (fwctl.rom)', async () => {
    const r = await runBhyve(bhyveArgs(rom('fwctl'), vmName('fwctl'), { cpus: 3 }));
    expect(r.stdout).toBe('fwctl: signature BHYV\r\nfwctl: hw.ncpu = 3\r\nfwctl: hw.ncpu length 4\r\nfwctl: hw.nope error 2\r\n');
    expect(r.exitCode).toBe(33);
    // With lpc.fwcfg=qemu the ports are QEMU's fw_cfg: no signature.
    const q = await runBhyve(bhyveArgs(rom('fwctl'), vmName('fwctl'), { extra: ['-o', 'lpc.fwcfg=qemu'] }));
    expect(q.stdout).toBe('fwctl: FAIL no BHYV signature at port 0x511\r\n');
    expect(q.exitCode).toBe(5);
  });

  it('CPUID: bhyve\'s model by default; x86.kvm_pv and x86.cpuid.vendor expose KVM\'s PV leaves at 0x40000100 and a vendor', async () => {
    const d = await onBhyve('test=cpuid');
    expect(d.stdout).toMatch(/^cpuid: vendor (GenuineIntel|AuthenticAMD)\ncpuid: no KVM signature\n$/);
    expect(d.status).toBe(33);
    const r = await onBhyve('test=cpuid', ['-o', 'x86.kvm_pv=kvmclock,pv_eoi', '-o', 'x86.cpuid.vendor=TestVendor12']);
    expect(r.lines).toEqual([]);
    expect(r.stdout).toBe('cpuid: vendor TestVendor12\ncpuid: KVM signature at 0x40000100\ncpuid: kvmclock yes\ncpuid: pv_eoi yes\n');
    expect(r.status).toBe(33);
  });

  it('acpi_s3: the guest suspends to S3 and resumes at its FACS waking vector on an RTC alarm; off by default', async () => {
    const r = await onBhyve('test=s3', ['-o', 'acpi_s3=true']);
    expect(r.stdout).toBe('s3: entering S3\ns3: resumed at the waking vector\n');
    expect(r.status).toBe(33);
    const off = await onBhyve('test=s3');
    expect(off.stdout).toBe('s3: entering S3\nFAIL: s3: still running after SLP_EN\n');
    expect(off.status).toBe(5);
  });

  it('bhyvectl --wakeup wakes a guest in S3 with no RTC alarm armed; it resumes at its waking vector', async () => {
    const vm = `legacy${process.pid}-${seq++}`;
    const load = await tool(BHYVELOAD, ['-m', '64M', '-h', host, '-e', 'kernel=/boot/legacy', '-e', 'cmdline=test=s3,noalarm', vm], 30_000);
    expect(load.status).toBe(0);
    const child = execa(BHYVE, ['-c', '1', '-m', '64M', '-s', '0,hostbridge', '-s', '31,lpc', '-l', 'com1,stdio', '-l', 'pc-testdev',
      '-o', 'x86.require_ept_rvi=false', '-o', 'acpi_s3=true', vm], {
      reject: false, env: { BHYVE_RUNDIR: rundir, BHYVE_DEBUG: '' }, stdin: 'ignore', timeout: 90_000, stripFinalNewline: false,
    });
    try {
      let out = '';
      child.stdout!.on('data', (b: Buffer) => { out += b.toString(); });
      for (let i = 0; i < 600 && !out.includes('s3: entering S3\n'); i++) await new Promise((r) => setTimeout(r, 100));
      expect(out).toBe('s3: entering S3\n');
      // Asleep with nothing armed, it stays asleep.
      await new Promise((r) => setTimeout(r, 3000));
      expect(child.exitCode).toBeNull();
      expect(out).toBe('s3: entering S3\n');
      const ctl = await tool(BHYVECTL, [`--vm=${vm}`, '--wakeup'], 30_000);
      expect(ctl.lines).toEqual([]);
      expect(ctl.status).toBe(0);
      const r = await child;
      expect(String(r.stdout)).toBe('s3: entering S3\ns3: resumed at the waking vector\n');
      expect(r.exitCode).toBe(33);
    } finally {
      child.kill('SIGKILL');
      await child;
      await tool(BHYVECTL, ['--destroy', `--vm=${vm}`], 30_000);
    }
  });

  it('bhyvectl --wakeup on a running guest that is not in S3: one line, status 1, the guest runs on', async () => {
    const name = vmName('wakeup');
    const child = runBhyve(bhyveArgs(rom('powerbutton'), name, { extra: ['-o', 'acpi_s3=true'] }), { input: undefined });
    let out = '';
    child.stdout!.on('data', (b: Buffer) => { out += b.toString(); });
    for (let i = 0; i < 600 && !out.includes('acpi on'); i++) await new Promise((r) => setTimeout(r, 100));
    expect(out).toBe('acpi on\r\n');
    const ctl = await execa(BHYVECTL, [`--vm=${name}`, '--wakeup'], {
      reject: false, env: { BHYVE_RUNDIR: path.join(ROOT, 'build', 'run'), BHYVE_DEBUG: '' }, stdin: 'ignore', timeout: 30_000,
    });
    expect(String(ctl.stderr).split('\n').filter((l) => l !== '')).toEqual([`bhyvectl: VM '${name}': the guest is not suspended (ACPI S3); nothing to wake`]);
    expect(ctl.exitCode).toBe(1);
    // The guest was not touched: the power button still reaches it.
    child.kill('SIGTERM');
    const r = await child;
    expect(String(r.stdout)).toBe('acpi on\r\npower button\r\n');
    expect(r.exitCode).toBe(1);
  });

  it('the default platform gives the same ACPI view', async () => {
    const r = await onBhyve('test=acpi');
    expect(r.stdout).toBe(ACPI_OUT);
    expect(r.status).toBe(33);
  });
});

const ACPI_OUT = 'acpi: RSDP found\nacpi: FADT found\nacpi: FACS found\nacpi: PM timer advances\n';
const REALMODE_OUT = [
  'realmode: BDA base memory size ok',
  'realmode: the PIT tick (IRQ 0 at vector 8) woke sti;hlt',
  'realmode: IRQ 11 from pc-testdev taken at vector 0x73',
  '',
].join('\n');

describe.skipIf(qemuSkip !== undefined)(`the same kernel under QEMU${qemuSkip ? ` (skipped: ${qemuSkip})` : ''}`, { timeout: 180_000 }, () => {
  it('QEMU loads the Multiboot ELF linked without -N', async () => {
    const r = await onQemu('');
    expect(r.stdout).toBe('mbelf-legacy: loaded, entry 0x0010000c\n');
    expect(r.status).toBe(33);
  });

  it('QEMU: UIP edge', async () => {
    const r = await onQemu('test=uip');
    expect(r.stdout).toBe('uip: rising edge seen, the seconds moved when it fell\n');
    expect(r.status).toBe(33);
  });

  // QEMU on kvm_pvm hosts delivers no interrupt to real mode (its irq-echo
  // run stays silent too), and its TCG drops 4-byte writes to pc-testdev's
  // byte-wide IRQ ports (its KVM path splits them): TCG, one byte write.
  it('QEMU (TCG): SeaBIOS\'s state: BDA, IVT, PIT tick at vector 8, IRQ 11 at 0x73', async () => {
    const r = await onQemu('test=realmode,bytewrite', ['-device', 'pc-testdev'], { tcg: true, kernel: KERNEL_N });
    expect(r.stdout).toBe(REALMODE_OUT);
    expect(r.status).toBe(33);
  });

  it('QEMU: KVM\'s PV leaves at 0x40000000 with kvmclock and PV EOI', async () => {
    const r = await onQemu('test=cpuid');
    expect(r.stdout).toMatch(/\ncpuid: KVM signature at 0x40000000\ncpuid: kvmclock yes\ncpuid: pv_eoi yes\n$/);
    expect(r.status).toBe(33);
  });

  it('QEMU: S3 and the RTC alarm wake, resumed by SeaBIOS at the waking vector', async () => {
    const r = await onQemu('test=s3', [], { kernel: KERNEL_N });
    expect(r.stdout).toBe('s3: entering S3\ns3: resumed at the waking vector\n');
    expect(r.status).toBe(33);
  });

  it('QEMU: ACPI tables and PM timer', async () => {
    const r = await onQemu('test=acpi');
    expect(r.stdout).toBe(ACPI_OUT);
    expect(r.status).toBe(33);
  });
});
