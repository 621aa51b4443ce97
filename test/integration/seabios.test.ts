// SeaBIOS (Debian's /usr/share/seabios/bios.bin) on our bhyve with
// lpc.fwcfg=qemu: it finds the virtio-blk disk, loads its boot sector
// (test/guests/bootsector, built by scripts/build-bootsector.sh) and runs
// it; the boot sector prints on COM1 and exits through pc-testdev (33).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { FEATURES } from '../../src/devices/registry.js';
import { GUESTS, ROOT, runBhyve, vmName } from '../support/bhyve.js';
import { KVM_UNUSABLE } from '../support/probes.js';

const SEABIOS = '/usr/share/seabios/bios.bin';
const SEABIOS_256K = '/usr/share/seabios/bios-256k.bin';
const DISK = path.join(GUESTS, 'bootsector.img');

function unavailable(): string | undefined {
  if (KVM_UNUSABLE) return KVM_UNUSABLE;
  if (!fs.existsSync(SEABIOS)) return `${SEABIOS} is missing (apt-get install seabios)`;
  if (!fs.existsSync(path.join(ROOT, 'dist/cli/bhyve-main.js'))) return 'dist/ is not built: run npm run build';
  return undefined;
}

const skip = unavailable();
if (skip) console.warn(`skipping SeaBIOS integration tests: ${skip}`);

function args(name: string, extra: string[] = [], disk = `2,virtio-blk,${DISK}`, bios = SEABIOS): string[] {
  return [
    '-m', '256M', '-s', '0,hostbridge', '-s', '1,lpc', '-s', disk,
    '-l', 'com1,stdio', '-l', 'pc-testdev', '-l', `bootrom,${bios},fwcfg=qemu`,
    '-o', 'x86.require_ept_rvi=false', ...extra, name,
  ];
}

describe.skipIf(skip !== undefined)('SeaBIOS boots a virtio-blk disk', () => {
  beforeAll(async () => {
    await execa(path.join(ROOT, 'scripts/build-bootsector.sh'), { stdio: ['ignore', 'ignore', 'inherit'] });
  }, 60_000);

  it('runs the boot sector, which prints on COM1 and exits through pc-testdev', async () => {
    const r = await runBhyve(args(vmName('seabios')), { timeout: 90_000 });
    expect(r.stdout).toContain('boot sector running\r\n');
    expect(r.exitCode).toBe(33);
    expect(r.stderr).not.toMatch(/Error|at .*\.js/);
  }, 120_000);

  it('logs on the debug console: QEMU i440FX, fw_cfg DMA, e820, the disk, the boot order', async () => {
    const log = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'seabios-')), 'debugcon.log');
    const r = await runBhyve(args(vmName('seabios-dbg'), ['-o', `lpc.debugcon.path=${log}`], `3,virtio-blk,${DISK},bootindex=1`),
      { timeout: 90_000 });
    expect(r.exitCode).toBe(33);
    expect(r.stdout).toContain('boot sector running\r\n');
    const text = fs.readFileSync(log, 'latin1');
    expect(text).toContain('Running on QEMU (i440fx)');
    expect(text).toContain('QEMU fw_cfg DMA interface supported');
    expect(text).toMatch(/qemu\/e820: addr 0x0000000000100000 len 0x000000000ff00000 \[RAM\]/);
    expect(text).toContain('found virtio-blk at 00:03.0');
    expect(text).toContain('Searching bootorder for: /pci@i0cf8/*@3');
    expect(text).not.toContain('out of I/O address space');
    expect(text).toContain('Booting from Hard Disk...');
    fs.rmSync(path.dirname(log), { recursive: true, force: true });
  }, 120_000);

  it.skipIf(!fs.existsSync(SEABIOS_256K))('boots with the 256 KiB image over the legacy virtio interface', async () => {
    const log = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'seabios-')), 'debugcon.log');
    const r = await runBhyve(args(vmName('seabios-256k'), ['-o', `lpc.debugcon.path=${log}`],
      `2,virtio-blk,${DISK},transport=legacy`, SEABIOS_256K), { timeout: 90_000 });
    expect(r.stdout).toContain('boot sector running\r\n');
    expect(r.exitCode).toBe(33);
    const text = fs.readFileSync(log, 'latin1');
    expect(text).toContain('using legacy (0.9.5) virtio mode');
    // This build (CONFIG_ACPI_PARSE, unlike bios.bin) walks our DSDT with its
    // small AML parser (dsdt_parser.c) to find devices; a construct it cannot
    // read shows as "parse_termlist: parse error, skip from ..." lines.
    expect(text).toMatch(/ACPI: parse DSDT at 0x[0-9a-f]+ \(len \d+\)/);
    expect(text).not.toMatch(/parse_term|parse_namestring|parse_pkg|deep recursion|overrun/);
    fs.rmSync(path.dirname(log), { recursive: true, force: true });
  }, 120_000);

  // -f files reach fw_cfg once the vmm passes them to buildPlatform (then
  // registry.ts marks fwcfg-files implemented): etc/sercon-port, a 2-byte
  // little-endian port number, makes SeaBIOS print its screen on COM1.
  it.skipIf(!FEATURES['fwcfg-files'].implemented)('hands -f files to the firmware (etc/sercon-port: SeaBIOS on COM1)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'seabios-'));
    const port = path.join(dir, 'sercon-port');
    fs.writeFileSync(port, Uint8Array.of(0xf8, 0x03));
    const r = await runBhyve(args(vmName('seabios-f'), ['-f', `etc/sercon-port,file=${port}`]), { timeout: 90_000 });
    expect(r.stdout).toContain('SeaBIOS (version');
    expect(r.stdout).toContain('Booting from Hard Disk');
    expect(r.stdout).toContain('boot sector running\r\n');
    expect(r.exitCode).toBe(33);
    fs.rmSync(dir, { recursive: true, force: true });
  }, 120_000);
});
