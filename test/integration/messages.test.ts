// Issue 9 defect 8: mistakes a user can make get one clear line, not a
// Node validation message, a raw errno or an internal error: an empty
// virtio-console port path, a directory as the UEFI vars file, -m 1K, and
// bhyvectl/bhyve on a damaged boot state. (Defect 6: a FIFO as the boot
// ROM, as a read-only disk image or as bhyveload's -d disk is refused at
// once instead of waiting for a writer forever.)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';

import { BHYVE, ROOT, kvmUnavailable, rom } from '../support/bhyve.js';

const skipWhy = kvmUnavailable() ?? (fs.existsSync(path.join(ROOT, 'build/kernels/mb-echo.bin')) ? undefined : 'build/kernels is not built (scripts/build-kernels.sh)');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'messages-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const rundir = path.join(tmp, 'run');
const env = { BHYVE_RUNDIR: rundir };
const errors = (stderr: string): string[] => stderr.split('\n').filter((l) => l !== '' && !/^bhyve: warning:/.test(l));
const base = ['-c', '1', '-m', '64M', '-s', '0,hostbridge', '-s', '31,lpc', '-o', 'x86.require_ept_rvi=false'];
const OVMF = '/usr/share/OVMF/OVMF_CODE.fd';

describe.skipIf(skipWhy)(`one clear line${skipWhy ? ` (skipped: ${skipWhy})` : ''}`, { timeout: 60_000 }, () => {
  it.each([
    ['an empty virtio-console port path', ['-l', `bootrom,${rom('echo')}`, '-s', '4,virtio-console,port1='],
      'bhyve: virtio-console at pci slot 0:4:0: vtcon: port port1 requires a path'],
    ['a virtio-console port path too long for a socket', ['-l', `bootrom,${rom('echo')}`, '-s', `4,virtio-console,p=/tmp/${'s'.repeat(120)}`],
      `bhyve: virtio-console at pci slot 0:4:0: vtcon: port p: socket path /tmp/${'s'.repeat(120)} is 125 bytes, more than a UNIX socket path holds (107)`],
    ['-m 1K', ['-m', '1K', '-l', `bootrom,${rom('echo')}`], 'bhyve: guest memory size 1K: must be a multiple of 4K and at least 1M'],
    ['a FIFO as the boot ROM', ['-l', `bootrom,${path.join(tmp, 'fifo')}`], `bhyve: boot ROM '${path.join(tmp, 'fifo')}' is not a regular file`],
    ['a read-only FIFO as a disk image', ['-l', `bootrom,${rom('echo')}`, '-s', `4,virtio-blk,${path.join(tmp, 'fifo')},ro`],
      `bhyve: virtio-blk at pci slot 0:4:0: disk image ${path.join(tmp, 'fifo')} is neither a file nor a block device`],
  ])('%s', async (_what, extra, line) => {
    fs.rmSync(path.join(tmp, 'fifo'), { force: true });
    await execa('mkfifo', [path.join(tmp, 'fifo')]);
    const r = await execa(BHYVE, [...base, ...extra, 'msg'], { reject: false, env, timeout: 20_000, stdin: 'ignore' });
    expect(errors(r.stderr)).toEqual([line]);
    expect(r.exitCode).toBe(4);
    expect(fs.existsSync(rundir) ? fs.readdirSync(rundir) : []).toEqual([]);
  });

  it.skipIf(!fs.existsSync(OVMF))('a directory as the UEFI vars file', async () => {
    const dir = path.join(tmp, 'varsdir');
    fs.mkdirSync(dir, { recursive: true });
    const r = await execa(BHYVE, [...base, '-l', `bootrom,${OVMF},${dir}`, 'msg'], { reject: false, env, timeout: 20_000, stdin: 'ignore' });
    expect(errors(r.stderr)).toEqual([`bhyve: boot variables file '${dir}' is a directory, not a regular file`]);
    expect(r.exitCode).toBe(4);
  });

  it('bhyveload -d FIFO: one line, no hang', async () => {
    fs.rmSync(path.join(tmp, 'fifo'), { force: true });
    await execa('mkfifo', [path.join(tmp, 'fifo')]);
    const r = await execa(path.join(ROOT, 'bin/bhyveload'), ['-m', '64M', '-d', path.join(tmp, 'fifo'), '-e', 'kernel=/boot/kernel', 'fifo'], { reject: false, env, timeout: 20_000 });
    expect(r.timedOut).toBe(false);
    expect(r.stderr).toBe(`bhyveload: disk image ${path.join(tmp, 'fifo')} is neither a file nor a block device`);
    expect(r.exitCode).toBe(1);
  });

  it('bhyvectl and bhyve on a damaged boot state', async () => {
    const host = path.join(tmp, 'host');
    fs.mkdirSync(path.join(host, 'boot'), { recursive: true });
    fs.copyFileSync(path.join(ROOT, 'build/kernels/mb-echo.bin'), path.join(host, 'boot/kernel'));
    const load = await execa(path.join(ROOT, 'bin/bhyveload'), ['-m', '64M', '-h', host, '-e', 'kernel=/boot/kernel', 'damaged'], { reject: false, env });
    expect(load.exitCode).toBe(0);
    const file = path.join(rundir, 'damaged', 'boot-state.json');
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace(/"rip": "0x[0-9a-f]+"/, '"rip": "zz"'));
    for (const args of [['--get-rip'], ['--get-all'], ['--set-rax=5']]) {
      const r = await execa(path.join(ROOT, 'bin/bhyvectl'), ['--vm=damaged', ...args], { reject: false, env });
      expect(r.stderr, args[0]).toBe("bhyvectl: the stored vCPU state of VM 'damaged' is corrupt (invalid value 'zz' for rip); run bhyveload again");
      expect(r.exitCode).toBe(1);
    }
    const r = await execa(BHYVE, ['-m', '64M', '-s', '0,hostbridge', '-s', '31,lpc', '-o', 'x86.require_ept_rvi=false', 'damaged'], { reject: false, env, timeout: 20_000 });
    expect(errors(r.stderr)).toEqual(["bhyve: the stored boot state of VM 'damaged' is corrupt (invalid value 'zz' for rip); run bhyveload again"]);
    expect(r.exitCode).toBe(4);
  });
});
