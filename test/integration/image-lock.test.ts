// Disk images are locked as QEMU locks them (block/file-posix.c's OFD lock
// bytes), so a bhyve and a QEMU never both write one image: bhyve refuses
// an image a running QEMU has open read-write, and QEMU refuses one bhyve
// has open.
import { spawn, type ChildProcess } from 'node:child_process';
import { execa } from 'execa';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { BlockDeviceError, BlockFile } from '../../src/devices/block/block-backend.js';
import { imageHasWriter, lockImage } from '../../src/devices/block/image-lock.js';
import { HAVE_QEMU } from '../support/guest-rom.js';
import { BHYVE, ROOT, bhyveArgs, kvmUnavailable, rom, runBhyve, vmName } from '../support/bhyve.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'imglock-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
function image(): string {
  const p = path.join(tmp, `d${n++}.img`);
  fs.writeFileSync(p, Buffer.alloc(1 << 20));
  return p;
}

const procs: ChildProcess[] = [];
const files: BlockFile[] = [];
afterEach(() => {
  for (const p of procs.splice(0)) p.kill('SIGKILL');
  for (const f of files.splice(0)) f.close();
});

/** QEMU holding the image as a read-write IDE disk (or read-only disk), CPUs
 * stopped; resolves once its write lock byte is visible, or with its
 * output when it exited instead. */
function qemuOn(img: string, readOnly = false): { proc: ChildProcess; out: () => string; exited: Promise<number | null> } {
  const proc = spawn('qemu-system-x86_64', [
    '-machine', 'pc', '-accel', 'tcg', '-S', '-nodefaults', '-display', 'none', '-monitor', 'none', '-serial', 'none',
    // IDE disks cannot be read-only: the read-only peer is a virtio-blk disk.
    ...(readOnly
      ? ['-drive', `file=${img},format=raw,if=none,id=d0,readonly=on`, '-device', 'virtio-blk-pci,drive=d0']
      : ['-drive', `file=${img},format=raw,if=ide`]),
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(proc);
  let text = '';
  proc.stdout!.on('data', (b) => { text += String(b); });
  proc.stderr!.on('data', (b) => { text += String(b); });
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  return { proc, out: () => text, exited };
}

async function waitFor(cond: () => boolean, ms = 20_000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

describe('image locks shared with QEMU', () => {
  it('bhyve backends exclude each other: writers alone, readers together', () => {
    const img = image();
    files.push(new BlockFile({ path: img }));
    expect(() => new BlockFile({ path: img })).toThrow(BlockDeviceError);
    expect(() => new BlockFile({ path: img, readOnly: true })).toThrow(/in use by another VM/);
    files.pop()!.close();
    files.push(new BlockFile({ path: img, readOnly: true }), new BlockFile({ path: img, readOnly: true }));
    expect(() => new BlockFile({ path: img })).toThrow(/in use by another VM/);
  });

  it('takes QEMU\'s bytes: 101 (holds write) and 201 (does not share write)', () => {
    const img = image();
    files.push(new BlockFile({ path: img }));
    const fd = fs.openSync(img, 'r');
    try {
      expect(imageHasWriter(fd)).toBe(true);
      // A read-only QEMU-style user takes read and "no shared write": refused.
      expect(lockImage(fd, true)).toEqual({ ok: false, conflict: 'write' });
    } finally { fs.closeSync(fd); }
    files.pop()!.close();
    const fd2 = fs.openSync(img, 'r');
    try { expect(imageHasWriter(fd2)).toBe(false); } finally { fs.closeSync(fd2); }
  });

  it.skipIf(!HAVE_QEMU)('bhyve refuses an image a running QEMU writes, and QEMU one bhyve writes', async () => {
    const img = image();
    const q = qemuOn(img);
    const probe = fs.openSync(img, 'r');
    try {
      const up = await Promise.race([waitFor(() => imageHasWriter(probe)), q.exited.then(() => false)]);
      expect(up, `QEMU did not take its lock: ${q.out()}`).toBe(true);
    } finally { fs.closeSync(probe); }
    expect(() => new BlockFile({ path: img })).toThrow(/in use by another VM \(bhyve or QEMU\)/);
    expect(() => new BlockFile({ path: img, readOnly: true })).toThrow(/in use by another VM/);
    q.proc.kill('SIGKILL');
    await q.exited;
    files.push(new BlockFile({ path: img })); // free again once QEMU is gone

    const q2 = qemuOn(img);
    const code = await Promise.race([q2.exited, new Promise<string>((r) => setTimeout(() => r('still running'), 20_000))]);
    expect(code).not.toBe('still running');
    expect(code).not.toBe(0);
    expect(q2.out()).toMatch(/Failed to get "write" lock/);
    // QEMU read-only also needs writes unshared: refused while bhyve writes.
    const q3 = qemuOn(img, true);
    const code3 = await Promise.race([q3.exited, new Promise<string>((r) => setTimeout(() => r('still running'), 20_000))]);
    expect(code3).not.toBe('still running');
    expect(q3.out()).toMatch(/Failed to get shared "write" lock/);
  }, 60_000);

  it.skipIf(!HAVE_QEMU || kvmUnavailable() !== undefined)('bin/bhyve exits 4 with one line when QEMU holds the image', async () => {
    const img = image();
    const q = qemuOn(img);
    const probe = fs.openSync(img, 'r');
    try { expect(await waitFor(() => imageHasWriter(probe))).toBe(true); } finally { fs.closeSync(probe); }
    const r = await runBhyve(bhyveArgs(rom('exit-testdev'), vmName('lock'), { extra: ['-s', `2,virtio-blk,${img}`] }));
    expect(r.exitCode).toBe(4);
    // One error line (besides the no-EPT warning), no stack trace.
    expect(String(r.stderr).trim().split('\n').filter((l) => !l.includes('warning:'))).toHaveLength(1);
    expect(String(r.stderr)).toMatch(/in use by another VM/);
  }, 60_000);

  it.skipIf(!HAVE_QEMU || kvmUnavailable() !== undefined)('QEMU refuses an image a running bin/bhyve has open (virtio-blk and an ahci disk)', async () => {
    for (const slot of ['virtio-blk,IMG', 'ahci,hd:IMG']) {
      const img = image();
      // echo.rom runs until it reads "q" on COM1: the VM holds the image meanwhile.
      const child = execa(BHYVE, bhyveArgs(rom('echo'), vmName('lockhold'), { extra: ['-s', `2,${slot.replace('IMG', img)}`] }), {
        reject: false, stdin: 'pipe', env: { BHYVE_RUNDIR: `${ROOT}/build/run` }, timeout: 60_000,
      });
      let out = '';
      child.stdout!.on('data', (b: Buffer) => { out += String(b); });
      expect(await waitFor(() => out.includes('echo ready'))).toBe(true);
      const q = qemuOn(img);
      const code = await Promise.race([q.exited, new Promise<string>((r) => setTimeout(() => r('still running'), 20_000))]);
      expect(code).not.toBe('still running');
      expect(q.out()).toMatch(/Failed to get "write" lock/);
      child.stdin!.write('q');
      expect((await child).exitCode).toBe(33);
      // and once bhyve is gone, QEMU may have it
      const probe = fs.openSync(img, 'r');
      try { expect(imageHasWriter(probe)).toBe(false); } finally { fs.closeSync(probe); }
    }
  }, 120_000);
});
