// The virtio test guests (test/guests/virtio/) on our bhyve: PCI enumeration,
// BARs as bhyve assigned them, the modern virtio transport, virtio-blk (pattern
// written, FLUSHed, read back, checked against the image file) and virtio-rnd.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bhyveArgs, kvmUnavailable, rom, runBhyve, vmName } from '../support/bhyve.js';

const skip = kvmUnavailable() ?? (fs.existsSync(rom('virtio-blk')) ? undefined : 'virtio test guests are not built: run scripts/build-guests.sh');
if (skip) console.warn(`skipping virtio integration tests: ${skip}`);

describe.skipIf(skip !== undefined)('virtio test guests on bhyve', () => {
  let tmp = '';
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'virtio-int-'));
  });
  afterAll(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('virtio-blk writes, flushes and reads back 4 MiB; the image holds it', async () => {
    const img = path.join(tmp, 'blk.img');
    fs.writeFileSync(img, '');
    fs.truncateSync(img, 8 << 20);
    const r = await runBhyve(bhyveArgs(rom('virtio-blk'), vmName('vblk'), {
      extra: ['-s', `3,virtio-blk,${img},ser=TESTSERIAL`, '-s', '4,virtio-rnd'],
    }), { timeout: 60_000 });
    expect(r.stdout, `${r.stdout}${r.stderr}`).toMatch(/pci 00:03\.0 1af4:10(01|42) class 010000 virtio-blk\r\n/);
    expect(r.stdout).toContain("virtio-blk: serial 'TESTSERIAL'\r\n");
    const m = r.stdout.match(/virtio-blk: wrote (\d+) sectors, read back OK, checksum ([0-9a-f]{8})\r\n/);
    expect(m, `${r.stdout}${r.stderr}`).not.toBeNull();
    expect(Number(m![1])).toBe(8192);
    expect(r.exitCode).toBe(33);
    const data = fs.readFileSync(img).subarray(0, 8192 * 512);
    expect(crc32(data).toString(16).padStart(8, '0')).toBe(m![2]);
  });

  it('virtio-rnd reads two different blocks of entropy', async () => {
    const r = await runBhyve(bhyveArgs(rom('virtio-rnd'), vmName('vrnd'), { extra: ['-s', '4,virtio-rnd'] }), { timeout: 60_000 });
    const a = r.stdout.match(/virtio-rnd: read 1 ([0-9a-f]{128})\r\n/);
    const b = r.stdout.match(/virtio-rnd: read 2 ([0-9a-f]{128})\r\n/);
    expect(a, `${r.stdout}${r.stderr}`).not.toBeNull();
    expect(b).not.toBeNull();
    expect(a![1]).not.toBe(b![1]);
    expect(r.stdout).toContain('virtio-rnd: OK\r\n');
    expect(r.exitCode).toBe(33);
  });
});
