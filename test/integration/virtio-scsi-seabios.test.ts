// SeaBIOS boots from our virtio-scsi controller: Debian's 256 KiB SeaBIOS
// (bios-256k.bin) with lpc.fwcfg=qemu scans target 0 LUN 0 (INQUIRY, READ
// CAPACITY, TEST UNIT READY), reads the boot sector with READ(10), and the
// boot sector prints on COM1 and exits through pc-testdev (status 33): a
// real initiator, not ours, is content with the logical unit's answers.
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
if (skip) console.warn(`skipping virtio-scsi SeaBIOS tests: ${skip}`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vscsi-seabios-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe.skipIf(skip !== undefined)('SeaBIOS boots from virtio-scsi', () => {
  let disk = '';
  beforeAll(async () => {
    await execa(path.join(ROOT, 'scripts/build-bootsector.sh'), { stdio: ['ignore', 'ignore', 'inherit'] });
    disk = path.join(tmp, 'disk.img');
    fs.copyFileSync(path.join(GUESTS, 'bootsector.img'), disk);
  }, 60_000);

  it('a boot sector on virtio-scsi, bootindex before a blank virtio-blk disk', async () => {
    const blank = path.join(tmp, 'blank.img');
    fs.writeFileSync(blank, '');
    fs.truncateSync(blank, 1 << 20);
    const log = path.join(tmp, 'scsi.log');
    const name = vmName('vscsi-boot');
    const r = await runBhyve([
      '-m', '256M', '-s', '0,hostbridge', '-s', '1,lpc', '-s', `3,virtio-scsi,${disk},bootindex=1`,
      '-s', `2,virtio-blk,${blank},bootindex=2`,
      '-l', 'com1,stdio', '-l', 'pc-testdev', '-l', `bootrom,${SEABIOS_256K},fwcfg=qemu`,
      '-o', 'x86.require_ept_rvi=false', '-o', `lpc.debugcon.path=${log}`, name,
    ], { timeout: 120_000 });
    expect(r.stdout).toContain('boot sector running\r\n');
    expect(r.exitCode).toBe(33);
    const text = fs.readFileSync(log, 'latin1');
    expect(text).toContain("virtio-scsi vendor='BHYVE' product='BHYVE SCSI DISK' rev='0001' type=0 removable=0");
    expect(text).toContain('virtio-scsi blksize=512 sectors=2048');
    expect(text).toContain('Booting from Hard Disk...');
    expect(text).not.toContain('Boot failed');
  }, 150_000);
});
