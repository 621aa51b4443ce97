// virtio-9p.rom (test/guests/virtio/guest-9p.c) speaks 9P2000.L from ring
// 3 with no file system in the guest: reads a host file, creates, writes,
// fsyncs and reads back 256 KiB, makes a directory, renames, lists the
// root, then tries to leave the share (".." at the root, a name with a
// slash, the host's link to a directory outside, a link of its own). The
// same ROM runs on our bhyve (-s virtio-9p) and on QEMU (-device
// virtio-9p-pci with -fsdev local,security_model=none); both must end
// alike, and the directory beside the share must be untouched.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { GUESTS, bhyveArgs, kvmUnavailable, vmName } from '../support/bhyve.js';
import { HAVE_QEMU, MODE, romWith, runHeld, runQemu, stat } from '../support/guest-rom.js';

const skip = kvmUnavailable() ?? (fs.existsSync(path.join(GUESTS, 'virtio-9p.rom')) ? undefined : 'virtio-9p.rom is not built: run scripts/build-guests.sh');
if (skip) console.warn(`skipping virtio-9p guest tests: ${skip}`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'v9p-guest-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;

/** A share with host.txt and a link "escape" to a sibling directory. */
function share(): { dir: string; outside: string } {
  const base = path.join(tmp, `run${n++}`);
  const dir = path.join(base, 'share');
  const outside = path.join(base, 'outside');
  fs.mkdirSync(dir, { recursive: true });
  fs.mkdirSync(outside);
  fs.writeFileSync(path.join(dir, 'host.txt'), 'hello from the host\n');
  fs.writeFileSync(path.join(outside, 'secret'), 'secret\n');
  fs.symlinkSync(outside, path.join(dir, 'escape'));
  return { dir, outside };
}

function pattern(): Buffer {
  const b = Buffer.alloc(256 * 1024);
  for (let i = 0; i < b.length; i++) b[i] = (i * 131 + Math.floor(i / 512) * 7 + 1) & 0xff;
  return b;
}

function common(out: string, s: { dir: string; outside: string }): void {
  expect(out).toContain("virtio-9p: mount tag 'hostshare'");
  expect(out).toContain('virtio-9p: version 9P2000.L msize 131072');
  expect(out).toContain("virtio-9p: host.txt says 'hello from the host'");
  const sum = crc32(pattern()).toString(16).padStart(8, '0');
  expect(out).toContain(`virtio-9p: wrote 262144 bytes to guest.txt, read back OK, checksum ${sum}`);
  const listed = /virtio-9p: listed:(.*)\r\n/.exec(out)![1].trim().split(' ').sort();
  expect(listed).toEqual(['escape', 'gdir', 'guest.txt', 'host.txt', 'renamed.txt']);
  expect(out).toMatch(/virtio-9p: escapes refused: slash \d+, through link (partial|error), open link \d+, create via link \d+, mkdir via own link \d+/);
  // The host holds what the guest wrote, and nothing left the share.
  expect(fs.readFileSync(path.join(s.dir, 'guest.txt')).equals(pattern())).toBe(true);
  expect(fs.readFileSync(path.join(s.dir, 'renamed.txt'), 'utf8')).toBe('renamed\n');
  expect(fs.statSync(path.join(s.dir, 'gdir')).isDirectory()).toBe(true);
  expect(fs.readlinkSync(path.join(s.dir, 'mine'))).toBe('../outside');
  expect(fs.readdirSync(s.outside)).toEqual(['secret']);
  expect(fs.readFileSync(path.join(s.outside, 'secret'), 'utf8')).toBe('secret\n');
  expect(fs.existsSync(path.join(path.dirname(s.dir), 'planted'))).toBe(false);
}

describe.skipIf(skip !== undefined)('virtio-9p.rom on bhyve and QEMU', () => {
  for (const [label, mode] of [['polling', MODE.POLL], ['MSI-X', MODE.MSIX]] as const) {
    it(`bhyve, ${label}`, async () => {
      const s = share();
      const name = vmName(`v9p-${label}`);
      const r = await runHeld(bhyveArgs(romWith(tmp, 'virtio-9p', mode | MODE.HOLD), name,
        { extra: ['-s', `4,virtio-9p,hostshare=${s.dir}`] }), name);
      expect(r.status, r.out).toBe(33);
      common(r.out, s);
      // bhyve's errnos: EINVAL for the slash, EPERM to open a link, ENOTDIR through one
      expect(r.out).toContain('virtio-9p: escapes refused: slash 22, through link partial, open link 1, create via link 20, mkdir via own link 20');
      expect(r.out).toMatch(/pci 00:04\.0 1af4:1009 class 010000 virtio-9p/);
      expect(stat(r.stats, 'virtio-9p@pci.0.4.0', '9p requests')).toBeGreaterThan(20);
      expect(stat(r.stats, 'virtio-9p@pci.0.4.0', '9p bytes written')).toBe(262144 + 8);
      if (mode === MODE.MSIX) expect(r.out).toMatch(/virtio-9p: interrupts: msix queue vector [0-9a-f]+ [1-9]\d*/);
    }, 120_000);

    it.skipIf(!HAVE_QEMU)(`QEMU (-device virtio-9p-pci), ${label}`, async () => {
      const s = share();
      const r = await runQemu(romWith(tmp, 'virtio-9p', mode), [
        '-fsdev', `local,id=fs0,path=${s.dir},security_model=none`,
        '-device', 'virtio-9p-pci,fsdev=fs0,mount_tag=hostshare,disable-legacy=on',
      ]);
      expect(r.status, r.out).toBe(33);
      common(r.out, s);
    }, 120_000);
  }

  it('bhyve, a read-only share: the guest cannot create its file and says so', async () => {
    const s = share();
    const name = vmName('v9p-ro');
    const r = await runHeld(bhyveArgs(romWith(tmp, 'virtio-9p', MODE.POLL | MODE.HOLD), name,
      { extra: ['-s', `4,virtio-9p,hostshare=${s.dir},ro`] }), name);
    expect(r.out).toContain("virtio-9p: host.txt says 'hello from the host'");
    expect(r.out).toContain('FAIL: virtio-9p: Tlcreate guest.txt: Rlerror 30');
    expect(r.status).toBe(3);
    expect(fs.readdirSync(s.dir).sort()).toEqual(['escape', 'host.txt']);
  }, 120_000);

  it('bhyve refuses a missing share directory with one line', async () => {
    const { execa } = await import('execa');
    const name = vmName('v9p-missing');
    const r = await execa(path.join(GUESTS, '../../bin/bhyve'), bhyveArgs(romWith(tmp, 'virtio-9p', 0), name,
      { extra: ['-s', `4,virtio-9p,hostshare=${path.join(tmp, 'nope')}`] }), {
      reject: false, timeout: 60_000, env: { BHYVE_RUNDIR: path.join(GUESTS, '../run') },
    });
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/virtio-9p: failed to open '.*nope': No such file or directory/);
  }, 60_000);
});
