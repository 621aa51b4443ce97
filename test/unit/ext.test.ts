// ext2/3/4 reading from images made by mke2fs -d (e2fsprogs), whole or
// inside MBR and GPT partitioned disks.

import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

import { BufferReader } from '../../src/loader/block.js';
import { ExtFs, isExt } from '../../src/loader/ext.js';
import { listPartitions } from '../../src/loader/partition.js';
import { DiskImageSource, openFileSystem } from '../../src/loader/source.js';

const mke2fs = ['/sbin/mke2fs', '/usr/sbin/mke2fs', 'mke2fs'].find((p) => spawnSync(p, ['-V']).status === 0);
const reason = 'mke2fs (e2fsprogs) is not installed';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ext-'));
const root = path.join(dir, 'root');
const kernel = new Uint8Array(300 * 1024 + 123).map((_, i) => (i * 31 + (i >> 10)) & 0xff);
const small = Buffer.from('small file\n');
const longTarget = '../vmlinuz-6.1.0-56-amd64-with-a-deliberately-long-name-to-need-a-block'; // over 60 bytes: a slow symlink
const BS = 4096;

/** Byte-for-byte comparison (vitest's deep equality is slow on large arrays). */
function expectBytes(got: Uint8Array, want: Uint8Array) {
  expect(got.length).toBe(want.length);
  expect(Buffer.from(got.buffer, got.byteOffset, got.length).equals(Buffer.from(want.buffer, want.byteOffset, want.length))).toBe(true);
}

function populate() {
  fs.mkdirSync(path.join(root, 'boot', 'grub'), { recursive: true });
  fs.mkdirSync(path.join(root, 'etc'));
  fs.writeFileSync(path.join(root, 'boot', 'vmlinuz-6.1.0-56-amd64'), kernel);
  fs.writeFileSync(path.join(root, 'boot', 'vmlinuz-6.1.0-56-amd64-with-a-deliberately-long-name-to-need-a-block'), kernel);
  fs.writeFileSync(path.join(root, 'etc', 'small'), small);
  fs.symlinkSync('boot/vmlinuz-6.1.0-56-amd64', path.join(root, 'vmlinuz'));
  fs.symlinkSync('/etc/small', path.join(root, 'boot', 'grub', 'abs'));
  fs.symlinkSync(longTarget, path.join(root, 'boot', 'grub', 'long'));
  fs.symlinkSync('/boot/grub', path.join(root, 'grubdir'));
  // A sparse file: 24 data blocks separated by holes, i.e. 24 extents (an extent tree of depth 1).
  const fd = fs.openSync(path.join(root, 'boot', 'sparse'), 'w');
  for (let i = 0; i < 24; i++) fs.writeSync(fd, Buffer.alloc(BS, i + 1), 0, BS, i * 2 * BS);
  fs.closeSync(fd);
  // Many entries: a directory spanning several blocks (hashed when dir_index is on).
  fs.mkdirSync(path.join(root, 'many'));
  for (let i = 0; i < 400; i++) fs.writeFileSync(path.join(root, 'many', `entry-with-a-longish-name-${i}`), String(i));
}

function mkfs(name: string, args: string[], sizeK = 8192): string {
  const img = path.join(dir, name);
  execFileSync(mke2fs!, ['-q', '-F', ...args, '-d', root, img, `${sizeK}k`], { stdio: 'pipe' });
  return img;
}

const sparseExpected = (() => {
  const b = new Uint8Array(47 * BS);
  for (let i = 0; i < 24; i++) b.fill(i + 1, i * 2 * BS, i * 2 * BS + BS);
  return b;
})();

function checkAll(fsys: ExtFs) {
  expectBytes(fsys.readFile('/boot/vmlinuz-6.1.0-56-amd64'), kernel);
  expectBytes(fsys.readFile('/vmlinuz'), kernel);
  expect(Buffer.from(fsys.readFile('/boot/grub/abs')).toString()).toBe('small file\n');
  expectBytes(fsys.readFile('/boot/grub/long'), kernel);
  expect(Buffer.from(fsys.readFile('/grubdir/abs')).toString()).toBe('small file\n');
  expectBytes(fsys.readFile('/boot/sparse'), sparseExpected);
  expect(Buffer.from(fsys.readFile('/many/entry-with-a-longish-name-399')).toString()).toBe('399');
  expect(Buffer.from(fsys.readFile('/many/../etc/./small')).toString()).toBe('small file\n');
  expect(() => fsys.readFile('/boot/nope')).toThrow(/\/boot\/nope: No such file or directory/);
  expect(() => fsys.readFile('/boot')).toThrow(/Is a directory/);
  expect(() => fsys.readFile('/etc/small/x')).toThrow(/Not a directory/);
}

describe.skipIf(!mke2fs)(mke2fs ? 'ext2/3/4 made by mke2fs -d' : `ext2/3/4 (skipped: ${reason})`, () => {
  populate();
  const variants: [string, string[]][] = [
    ['ext2, 1 KiB blocks, 128-byte inodes (indirect blocks)', ['-t', 'ext2', '-b', '1024', '-I', '128']],
    ['ext3, 4 KiB blocks', ['-t', 'ext3', '-b', '4096']],
    ['ext4 (extents, flex_bg)', ['-t', 'ext4', '-b', '4096']],
    ['ext4 with 64-bit group descriptors, 1 KiB blocks', ['-t', 'ext4', '-O', '64bit', '-b', '1024']],
    ['ext4 without dir_index', ['-t', 'ext4', '-O', '^dir_index']],
  ];
  for (const [name, args] of variants) {
    it(`reads ${name}`, () => {
      const img = mkfs(name.replace(/\W+/g, '_') + '.img', args);
      const r = new BufferReader(new Uint8Array(fs.readFileSync(img)));
      expect(isExt(r)).toBe(true);
      checkAll(new ExtFs(r, img));
    });
  }

  it('the sparse file really has an extent tree of depth > 0', () => {
    const img = mkfs('depth.img', ['-t', 'ext4', '-b', '4096']);
    const out = execFileSync(path.join(path.dirname(mke2fs!.startsWith('/') ? mke2fs! : '/usr/sbin/x'), 'debugfs'), ['-R', 'stat /boot/sparse', img], { stdio: 'pipe' }).toString();
    expect(out).toMatch(/\(ETB0\)/);
  });

  it('finds the filesystem inside MBR and GPT partitioned disks', () => {
    const fsImg = new Uint8Array(fs.readFileSync(mkfs('part.img', ['-t', 'ext4'])));
    const first = 2048;
    // MBR.
    const mbr = new Uint8Array(first * 512 + fsImg.length);
    mbr.set(fsImg, first * 512);
    mbr[446 + 4] = 0x83;
    new DataView(mbr.buffer).setUint32(446 + 8, first, true);
    new DataView(mbr.buffer).setUint32(446 + 12, fsImg.length / 512, true);
    mbr[510] = 0x55; mbr[511] = 0xaa;
    const rm = new BufferReader(mbr);
    expect(listPartitions(rm)).toEqual([{ index: 1, offset: first * 512, size: fsImg.length, scheme: 'mbr' }]);
    const m = openFileSystem(rm, 'mbr.img');
    expect(m.where).toBe('ext, mbr partition 1');
    expectBytes(m.fs.readFile('/vmlinuz'), kernel);
    // GPT: protective MBR, header at LBA 1, entries at LBA 2, an empty first entry.
    const gpt = new Uint8Array((first + 34) * 512 + fsImg.length);
    gpt.set(fsImg, first * 512);
    gpt[446 + 4] = 0xee;
    new DataView(gpt.buffer).setUint32(446 + 8, 1, true);
    new DataView(gpt.buffer).setUint32(446 + 12, gpt.length / 512 - 1, true);
    gpt[510] = 0x55; gpt[511] = 0xaa;
    const hdr = new DataView(gpt.buffer, 512);
    gpt.set(Buffer.from('EFI PART'), 512);
    hdr.setBigUint64(72, 2n, true);
    hdr.setUint32(80, 128, true);
    hdr.setUint32(84, 128, true);
    const e = new DataView(gpt.buffer, 1024 + 128);
    new Uint8Array(gpt.buffer, 1024 + 128, 16).fill(0xaf);
    e.setBigUint64(32, BigInt(first), true);
    e.setBigUint64(40, BigInt(first + fsImg.length / 512 - 1), true);
    const g = openFileSystem(new BufferReader(gpt), 'gpt.img');
    expect(g.where).toBe('ext, gpt partition 2');
    expectBytes(g.fs.readFile('/boot/grub/long'), kernel);
    // Through the bhyveload source, from a file.
    const file = path.join(dir, 'gpt-disk.img');
    fs.writeFileSync(file, gpt);
    const src = new DiskImageSource(file);
    expect(src.description).toBe(`disk image ${file} (ext, gpt partition 2)`);
    expectBytes(src.readFile('vmlinuz', 'kernel'), kernel);
    src.close();
  });

  it('refuses what is not an ext filesystem, and corrupt or truncated images, clearly', () => {
    expect(() => new ExtFs(new BufferReader(new Uint8Array(8192)), 'blank.img')).toThrow('blank.img is not an ext2/3/4 filesystem');
    const file = path.join(dir, 'blank.img');
    fs.writeFileSync(file, new Uint8Array(1 << 20));
    expect(() => new DiskImageSource(file)).toThrow(/^disk image .*blank\.img holds no ISO 9660 or ext2\/3\/4 filesystem/);
    expect(() => new DiskImageSource(path.join(dir, 'missing.img'))).toThrow(/^disk image .*missing\.img: No such file or directory$/);
    const whole = new Uint8Array(fs.readFileSync(mkfs('cut.img', ['-t', 'ext4'])));
    const cut = new ExtFs(new BufferReader(whole.subarray(0, 256 * 1024), 'cut.img'), 'cut.img');
    expect(() => cut.readFile('/boot/vmlinuz-6.1.0-56-amd64')).toThrow(/cut\.img: .*(past its end|corrupt)/);
  });
});
