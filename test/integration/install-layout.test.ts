// bhyve installed with its node_modules elsewhere (a link, as pnpm and
// `npm link` make them): the sandbox's Landlock rules must cover the code
// its threads load after the sandbox is in force. A virtio-blk iothread
// starts at the driver's DRIVER_OK, when Landlock already restricts file
// access, and loads koffi's native module from its platform package; with
// only bhyve's tree and the koffi package allowed, that load failed and
// the device's queue was never served (the guest waited forever).
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { bhyveArgs, installedCopy, kvmUnavailable, rom, vmName } from '../support/bhyve.js';

const skip = kvmUnavailable() ?? (fs.existsSync(rom('virtio-blk')) ? undefined : 'virtio test guests are not built');

describe.skipIf(skip !== undefined)(`bhyve with node_modules outside its tree${skip ? ` (skipped: ${skip})` : ''}`, { timeout: 120_000 }, () => {
  it('a virtio-blk iothread started under the sandbox loads and serves the queue', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bhyve-install-'));
    try {
      const { bhyve, rundir } = installedCopy(tmp);
      const img = path.join(tmp, 'blk.img');
      fs.writeFileSync(img, '');
      fs.truncateSync(img, 8 << 20);
      const r = await execa(bhyve,
        bhyveArgs(rom('virtio-blk'), vmName('instlay'), { extra: ['-s', `3,virtio-blk,${img},iothread=true`] }),
        { reject: false, timeout: 60_000, env: { BHYVE_RUNDIR: rundir } });
      expect(r.stdout, `${r.stdout}\n${r.stderr}`).toMatch(/virtio-blk: wrote \d+ sectors, read back OK/);
      expect(r.exitCode, r.stderr).toBe(33);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('a virtio-blk iothread whose bundle cannot load: the device thread serves the queue', async () => {
    // What an unreadable koffi.node or a missing file does: the worker's
    // bundle throws while loader.cjs loads it, before any code of ours can
    // ring the device thread; the guest's notifies go to the ioeventfd.
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bhyve-loadfail-'));
    try {
      const { bhyve, rundir } = installedCopy(tmp, 'blk-iothread-worker');
      const img = path.join(tmp, 'blk.img');
      fs.writeFileSync(img, '');
      fs.truncateSync(img, 8 << 20);
      const r = await execa(bhyve,
        bhyveArgs(rom('virtio-blk'), vmName('loadfail'), { extra: ['-s', `3,virtio-blk,${img},iothread=true`] }),
        { reject: false, timeout: 60_000, env: { BHYVE_RUNDIR: rundir } });
      expect(r.stdout, `${r.stdout}\n${r.stderr}`).toMatch(/virtio-blk: wrote \d+ sectors, read back OK/);
      expect(r.exitCode, r.stderr).toBe(33);
      expect(r.stderr).toMatch(/virtio-blk: iothread could not start \(blk-iothread-worker: could not load: cannot load koffi\.node: EACCES\)/);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
