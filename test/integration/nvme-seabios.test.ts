// SeaBIOS boots from our NVMe controller: Debian's 256 KiB SeaBIOS image
// (bios-256k.bin; the 128 KiB bios.bin is built without NVMe support) with
// lpc.fwcfg=qemu finds the namespace, reads the boot sector through the
// admin and I/O queues, and the boot sector prints on COM1 and exits
// through pc-testdev (status 33).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GUESTS, ROOT, runBhyve, vmName } from '../support/bhyve.js';

const SEABIOS_256K = '/usr/share/seabios/bios-256k.bin';

function unavailable(): string | undefined {
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    return '/dev/kvm is missing or not read/writable by this user';
  }
  if (!fs.existsSync(SEABIOS_256K)) return `${SEABIOS_256K} is missing (apt-get install seabios)`;
  if (!fs.existsSync(path.join(ROOT, 'dist/cli/bhyve-main.js'))) return 'dist/ is not built: run npm run build';
  return undefined;
}
const skip = unavailable();
if (skip) console.warn(`skipping NVMe SeaBIOS tests: ${skip}`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nvme-seabios-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function args(name: string, slot: string, log: string): string[] {
  return [
    '-m', '256M', '-s', '0,hostbridge', '-s', '1,lpc', '-s', slot,
    '-l', 'com1,stdio', '-l', 'pc-testdev', '-l', `bootrom,${SEABIOS_256K},fwcfg=qemu`,
    '-o', 'x86.require_ept_rvi=false', '-o', `lpc.debugcon.path=${log}`, name,
  ];
}

describe.skipIf(skip !== undefined)('SeaBIOS boots from NVMe', () => {
  let disk = '';
  beforeAll(async () => {
    await execa(path.join(ROOT, 'scripts/build-bootsector.sh'), { stdio: ['ignore', 'ignore', 'inherit'] });
    disk = path.join(tmp, 'disk.img');
    fs.copyFileSync(path.join(GUESTS, 'bootsector.img'), disk);
  }, 60_000);

  it('a boot sector on nvme', async () => {
    const log = path.join(tmp, 'nvme.log');
    const r = await runBhyve(args(vmName('nvme-boot'), `2,nvme,${disk}`, log), { timeout: 120_000 });
    expect(r.stdout).toContain('boot sector running\r\n');
    expect(r.exitCode).toBe(33);
    const text = fs.readFileSync(log, 'latin1');
    expect(text).toContain('Searching bootorder for: /pci@i0cf8/*@2');
    expect(text).toMatch(/drive 0x[0-9a-f]+: PCHS=0\/0\/0 translation=lba LCHS=\d+\/\d+\/\d+ s=2048/);
    expect(text).toContain('Booting from Hard Disk...');
  }, 150_000);

  it('bootindex= puts the NVMe disk before a blank virtio-blk disk SeaBIOS would try first', async () => {
    const blank = path.join(tmp, 'blank.img');
    fs.writeFileSync(blank, '');
    fs.truncateSync(blank, 1 << 20);
    const log = path.join(tmp, 'order.log');
    const r = await runBhyve([
      ...args(vmName('nvme-order'), `3,nvme,${disk},bootindex=1`, log).slice(0, -1),
      '-s', `2,virtio-blk,${blank},bootindex=2`, vmName('nvme-order'),
    ], { timeout: 120_000 });
    expect(r.stdout).toContain('boot sector running\r\n');
    expect(r.exitCode).toBe(33);
    expect(fs.readFileSync(log, 'latin1')).not.toContain('Boot failed');
  }, 150_000);
});
