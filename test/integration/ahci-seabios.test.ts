// SeaBIOS (Debian's bios.bin, lpc.fwcfg=qemu) boots from our AHCI
// controller: the boot sector of a hard disk on ahci-hd, an El Torito
// (no-emulation) CD image on ahci-cd, and the disk behind a CD on a
// two-port ahci. The boot sector prints on COM1 and exits through
// pc-testdev (status 33).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GUESTS, ROOT, runBhyve, vmName } from '../support/bhyve.js';

const SEABIOS = '/usr/share/seabios/bios.bin';
const HAVE_GENISO = spawnSync('sh', ['-c', 'command -v genisoimage'], { encoding: 'utf8' }).status === 0;

function unavailable(): string | undefined {
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    return '/dev/kvm is missing or not read/writable by this user';
  }
  if (!fs.existsSync(SEABIOS)) return `${SEABIOS} is missing (apt-get install seabios)`;
  if (!fs.existsSync(path.join(ROOT, 'dist/cli/bhyve-main.js'))) return 'dist/ is not built: run npm run build';
  return undefined;
}
const skip = unavailable();
if (skip) console.warn(`skipping AHCI SeaBIOS tests: ${skip}`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ahci-seabios-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let disk = '';
let iso = '';

function args(name: string, slot: string, log: string): string[] {
  return [
    '-m', '256M', '-s', '0,hostbridge', '-s', '1,lpc', '-s', slot,
    '-l', 'com1,stdio', '-l', 'pc-testdev', '-l', `bootrom,${SEABIOS},fwcfg=qemu`,
    '-o', 'x86.require_ept_rvi=false', '-o', `lpc.debugcon.path=${log}`, name,
  ];
}

describe.skipIf(skip !== undefined)('SeaBIOS boots from AHCI', () => {
  beforeAll(async () => {
    await execa(path.join(ROOT, 'scripts/build-bootsector.sh'), { stdio: ['ignore', 'ignore', 'inherit'] });
    disk = path.join(tmp, 'disk.img');
    fs.copyFileSync(path.join(GUESTS, 'bootsector.img'), disk);
    if (HAVE_GENISO) {
      const dir = path.join(tmp, 'cdroot');
      fs.mkdirSync(dir);
      fs.copyFileSync(path.join(GUESTS, 'bootsector.bin'), path.join(dir, 'boot.bin'));
      iso = path.join(tmp, 'cd.iso');
      await execa('genisoimage', ['-quiet', '-o', iso, '-b', 'boot.bin', '-no-emul-boot', '-boot-load-size', '4', dir]);
    }
  }, 60_000);

  it('a hard disk on ahci-hd', async () => {
    const log = path.join(tmp, 'hd.log');
    const r = await runBhyve(args(vmName('ahci-hd'), `2,ahci-hd,${disk}`, log), { timeout: 90_000 });
    expect(r.stdout).toContain('boot sector running\r\n');
    expect(r.exitCode).toBe(33);
    const text = fs.readFileSync(log, 'latin1');
    expect(text).toContain('AHCI controller at 00:02.0');
    expect(text).toContain('AHCI/0: registering: "AHCI/0: BHYVE SATA DISK ATA-9 Hard-Disk (1 MiBytes)"');
    expect(text).toContain('Booting from Hard Disk...');
  }, 120_000);

  it.skipIf(!HAVE_GENISO)('an El Torito CD on ahci-cd', async () => {
    const log = path.join(tmp, 'cd.log');
    const r = await runBhyve(args(vmName('ahci-cd'), `2,ahci-cd,${iso}`, log), { timeout: 90_000 });
    expect(r.stdout).toContain('boot sector running\r\n');
    expect(r.exitCode).toBe(33);
    const text = fs.readFileSync(log, 'latin1');
    expect(text).toContain('DVD/CD [AHCI/0: BHYVE SATA DVD ROM ATAPI-9 DVD/CD]');
    expect(text).toContain('Booting from DVD/CD...');
  }, 120_000);

  it.skipIf(!HAVE_GENISO)('ahci,cd:ISO,hd:DISK: both ports found, the model set per port', async () => {
    const log = path.join(tmp, 'two.log');
    const r = await runBhyve(args(vmName('ahci-two'), `3,ahci,cd:${iso},ro,hd:${disk},model=Storage Test Disk,nmrr=1`, log), { timeout: 90_000 });
    expect(r.exitCode).toBe(33);
    const text = fs.readFileSync(log, 'latin1');
    expect(text).toContain('AHCI/0: registering: "DVD/CD [AHCI/0: BHYVE SATA DVD ROM ATAPI-9 DVD/CD]"');
    expect(text).toContain('AHCI/1: registering: "AHCI/1: Storage Test Disk ATA-9 Hard-Disk (1 MiBytes)"');
  }, 120_000);
});
