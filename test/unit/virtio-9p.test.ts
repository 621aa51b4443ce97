// virtio-9p played as Linux's v9fs drives it: 9P2000.L messages in guest
// RAM on the device's queue (p9-client.ts), against a share in a temporary
// directory. Beside the share sits an "outside" directory with a secret:
// no hostile message may read, create, change or remove anything there.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import { Virtio9p, VT9P_RINGSZ, vt9pLegacyConfig } from '../../src/devices/virtio/virtio-9p.js';
import { virtio9pDevice } from '../../src/devices/virtio/virtio-9p-record.js';
import { P9Share } from '../../src/devices/virtio/p9/p9-share.js';
import { T } from '../../src/devices/virtio/p9/p9-wire.js';
import { VIRTIO_ID_9P, hasFeature } from '../../src/devices/virtio/virtio-constants.js';
import { P9Client, encode } from './p9-client.js';

const E = { EPERM: 1, ENOENT: 2, EBADF: 9, EEXIST: 17, ENOTDIR: 20, EISDIR: 21, EINVAL: 22, EROFS: 30, ENOSYS: 38, ELOOP: 40, EPROTO: 71, EMSGSIZE: 90, EOPNOTSUPP: 95 };
const O = { RDONLY: 0, WRONLY: 1, RDWR: 2, CREAT: 0o100, TRUNC: 0o1000, DIRECTORY: 0o200000 };
const NOFID = 0xffffffff;

let tmp = '';
let shareDir = '';
let outside = '';

function snapshot(dir: string): string {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(d, e.name);
      const st = fs.lstatSync(p);
      out.push(`${path.relative(dir, p)} ${st.mode.toString(8)} ${st.size} ${st.mtimeMs}`);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.push(fs.readFileSync(p, 'latin1'));
    }
  };
  walk(dir);
  return out.join('\n');
}

function device(ro = false, tag = 'hostshare'): Virtio9p {
  return new Virtio9p(new P9Share(shareDir, ro), tag);
}

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'v9p-'));
  shareDir = path.join(tmp, 'share');
  outside = path.join(tmp, 'outside');
  fs.mkdirSync(shareDir);
  fs.mkdirSync(outside);
  fs.writeFileSync(path.join(outside, 'secret'), 'do not touch');
  fs.writeFileSync(path.join(shareDir, 'hello.txt'), 'hello from the host\n');
  fs.mkdirSync(path.join(shareDir, 'sub'));
  fs.symlinkSync(outside, path.join(shareDir, 'out-dir'));
  fs.symlinkSync(path.join(outside, 'secret'), path.join(shareDir, 'out-file'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('virtio-9p device', () => {
  it('offers the mount tag in its configuration, as bhyve', () => {
    const dev = device(false, 'hostshare');
    expect(dev.deviceType).toBe(VIRTIO_ID_9P);
    expect(dev.queueMaxSizes).toEqual([VT9P_RINGSZ]);
    expect(hasFeature(dev.deviceFeatures, 0)).toBe(true);
    expect(dev.configSize).toBe(258);
    const cfg = new Uint8Array(2 + 9);
    dev.readConfig(0, cfg);
    expect(Buffer.from(cfg).readUInt16LE(0)).toBe(9);
    expect(Buffer.from(cfg.subarray(2)).toString()).toBe('hostshare');
    expect(() => device(false, 'x'.repeat(257))).toThrow(/too long/);
    dev.close();
  });

  it('parses sharename=/path[,ro] as pci_vt9p_legacy_config and checks the slot', () => {
    const t = new ConfigTree();
    vt9pLegacyConfig(t, 'pci.0.5.0', 'ro,data=/srv/data');
    expect(t.get('pci.0.5.0.sharename')).toBe('data');
    expect(t.get('pci.0.5.0.path')).toBe('/srv/data');
    expect(t.get('pci.0.5.0.ro')).toBe('true');
    expect(() => vt9pLegacyConfig(new ConfigTree(), 'pci.0.5.0', 'a=/x,b=/y')).toThrow(/more than one share name/);
    const s = { bus: 0, slot: 5, func: 0, node: 'pci.0.5.0', where: '0:5:0' };
    const c = new ConfigTree();
    c.set('pci.0.5.0.device', 'virtio-9p');
    expect(() => virtio9pDevice.validate!(c, s)).toThrow(/path required/);
    c.set('pci.0.5.0.path', '/x');
    expect(() => virtio9pDevice.validate!(c, s)).toThrow(/share name required/);
    c.set('pci.0.5.0.sharename', 'y'.repeat(257));
    expect(() => virtio9pDevice.validate!(c, s)).toThrow(/too long/);
  });
});

describe('9P2000.L server', () => {
  it('creates, writes, reads back, lists, renames and removes files in the share', () => {
    const c = new P9Client(device());
    const root = c.start();
    expect(root).toBe(fs.statSync(shareDir, { bigint: true }).ino);
    // read a host file
    expect(P9Client.nwqid(c.walk(0, 1, ['hello.txt']))).toBe(1);
    expect(c.lopen(1, O.RDONLY).errno).toBeUndefined();
    const r = c.read(1, 0, 4096);
    expect(r.raw.readUInt32LE(7)).toBe(20);
    expect(r.raw.subarray(11, 31).toString()).toBe('hello from the host\n');
    expect(r.used).toBe(31);
    c.clunk(1);
    // create and write a new file
    c.walk(0, 2, []);
    const cr = c.lcreate(2, 'new.bin', O.RDWR, 0o640);
    expect(cr.errno).toBeUndefined();
    expect(cr.raw.readUInt32LE(7 + 13)).toBe(65536 - 24); // iounit
    const data = Buffer.alloc(100_000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff;
    let off = 0;
    while (off < data.length) {
      const chunk = data.subarray(off, off + 60_000);
      const w = c.write(2, off, chunk);
      expect(w.errno).toBeUndefined();
      off += w.raw.readUInt32LE(7);
    }
    expect(fs.readFileSync(path.join(shareDir, 'new.bin')).equals(data)).toBe(true);
    expect(fs.statSync(path.join(shareDir, 'new.bin')).mode & 0o777).toBe(0o640);
    // read back in pieces, the reply buffer split over three descriptors
    const back = c.sendRaw(encode(T.READ, 7, [['u32', 2], ['u64', 1000], ['u32', 30000]]), 30011, 3);
    expect(back.raw.readUInt32LE(7)).toBe(30000);
    expect(back.raw.subarray(11).equals(data.subarray(1000, 31000))).toBe(true);
    // getattr
    const ga = c.getattr(2);
    expect(ga.raw.readBigUInt64LE(7)).toBe(0x7ffn);
    expect(ga.raw.readBigUInt64LE(7 + 8 + 13 + 12 + 8 + 8)).toBe(100_000n);
    // mkdir, readdir
    expect(c.mkdir(0, 'dir1').errno).toBeUndefined();
    expect(fs.statSync(path.join(shareDir, 'dir1')).isDirectory()).toBe(true);
    c.walk(0, 3, []);
    expect(c.lopen(3, O.RDONLY | O.DIRECTORY).errno).toBeUndefined();
    const rd = c.rpc(T.READDIR, [['u32', 3], ['u64', 0], ['u32', 8192]]);
    expect(P9Client.dirNames(rd).sort()).toEqual(['.', '..', 'dir1', 'hello.txt', 'new.bin', 'out-dir', 'out-file', 'sub']);
    // readdir with a small count continues at the last entry's offset
    const names: string[] = [];
    let offset = 0n;
    for (let i = 0; i < 20; i++) {
      const p = c.rpc(T.READDIR, [['u32', 3], ['u64', offset], ['u32', 40]]);
      const count = p.raw.readUInt32LE(7);
      if (count === 0) break;
      let at = 11;
      while (at < 11 + count) {
        const n = p.raw.readUInt16LE(at + 22);
        names.push(p.raw.subarray(at + 24, at + 24 + n).toString());
        offset = p.raw.readBigUInt64LE(at + 13);
        at += 24 + n;
      }
    }
    expect(names.sort()).toEqual(['.', '..', 'dir1', 'hello.txt', 'new.bin', 'out-dir', 'out-file', 'sub']);
    // renameat, and a fid on the old name follows it
    c.walk(0, 4, ['dir1']);
    expect(c.rpc(T.RENAMEAT, [['u32', 0], ['str', 'dir1'], ['u32', 0], ['str', 'dir2']]).errno).toBeUndefined();
    expect(fs.existsSync(path.join(shareDir, 'dir2'))).toBe(true);
    expect(c.lcreate(4, 'inside', O.WRONLY).errno).toBeUndefined();
    expect(fs.existsSync(path.join(shareDir, 'dir2', 'inside'))).toBe(true);
    // symlink, readlink (the target is stored, not followed), link
    expect(c.rpc(T.SYMLINK, [['u32', 0], ['str', 'ln'], ['str', '/etc/passwd'], ['u32', 0]]).errno).toBeUndefined();
    expect(fs.readlinkSync(path.join(shareDir, 'ln'))).toBe('/etc/passwd');
    c.walk(0, 5, ['ln']);
    const rl = c.rpc(T.READLINK, [['u32', 5]]);
    expect(rl.raw.subarray(9).toString()).toBe('/etc/passwd');
    c.walk(0, 6, ['hello.txt']);
    expect(c.rpc(T.LINK, [['u32', 0], ['u32', 6], ['str', 'hello2.txt']]).errno).toBeUndefined();
    expect(fs.statSync(path.join(shareDir, 'hello.txt')).nlink).toBe(2);
    // setattr: size and mode
    expect(c.rpc(T.SETATTR, [['u32', 6], ['u32', 0x1 | 0x8], ['u32', 0o600], ['u32', 0], ['u32', 0], ['u64', 5],
      ['u64', 0], ['u64', 0], ['u64', 0], ['u64', 0]]).errno).toBeUndefined();
    expect(fs.readFileSync(path.join(shareDir, 'hello.txt'), 'utf8')).toBe('hello');
    expect(fs.statSync(path.join(shareDir, 'hello.txt')).mode & 0o777).toBe(0o600);
    // statfs, fsync, lock, getlock
    const sf = c.rpc(T.STATFS, [['u32', 0]]);
    expect(sf.raw.readUInt32LE(7)).toBe(0x01021997);
    expect(c.rpc(T.FSYNC, [['u32', 2], ['u32', 0]]).errno).toBeUndefined();
    const lk = c.rpc(T.LOCK, [['u32', 2], ['u8', 1], ['u32', 0], ['u64', 0], ['u64', 0], ['u32', 1], ['str', 'guest']]);
    expect(lk.raw[7]).toBe(0);
    const gl = c.rpc(T.GETLOCK, [['u32', 2], ['u8', 1], ['u64', 10], ['u64', 20], ['u32', 1], ['str', 'guest']]);
    expect(gl.raw[7]).toBe(2);
    // unlinkat a file and a directory; remove
    expect(c.rpc(T.UNLINKAT, [['u32', 0], ['str', 'hello2.txt'], ['u32', 0]]).errno).toBeUndefined();
    expect(c.rpc(T.UNLINKAT, [['u32', 0], ['str', 'sub'], ['u32', 0x200]]).errno).toBeUndefined();
    expect(fs.existsSync(path.join(shareDir, 'sub'))).toBe(false);
    expect(c.rpc(T.REMOVE, [['u32', 5]]).errno).toBeUndefined();
    expect(fs.existsSync(path.join(shareDir, 'ln'))).toBe(false);
    // mknod: a FIFO yes, a device node never
    expect(c.rpc(T.MKNOD, [['u32', 0], ['str', 'fifo'], ['u32', 0o010644], ['u32', 0], ['u32', 0], ['u32', 0]]).errno).toBeUndefined();
    expect(fs.lstatSync(path.join(shareDir, 'fifo')).isFIFO()).toBe(true);
    expect(c.rpc(T.MKNOD, [['u32', 0], ['str', 'sda'], ['u32', 0o060600], ['u32', 8], ['u32', 0], ['u32', 0]]).errno).toBe(E.EPERM);
    expect(fs.existsSync(path.join(shareDir, 'sda'))).toBe(false);
    // a FIFO opens without waiting for a writer and reads nothing
    c.walk(0, 8, ['fifo']);
    expect(c.lopen(8, O.RDONLY).errno).toBeUndefined();
    expect(c.read(8, 0, 100).raw.readUInt32LE(7)).toBe(0);
    // xattrs as bhyve: not supported
    expect(c.rpc(T.XATTRWALK, [['u32', 0], ['u32', 9], ['str', 'user.x']]).errno).toBe(E.EOPNOTSUPP);
    expect(c.rpc(T.XATTRCREATE, [['u32', 0], ['str', 'user.x'], ['u64', 1], ['u32', 0]]).errno).toBe(E.EOPNOTSUPP);
    expect(c.rpc(T.FLUSH, [['u16', 3]]).errno).toBeUndefined();
    for (const f of [0, 2, 3, 4, 6, 8]) expect(c.clunk(f).errno).toBeUndefined();
    expect((c.dev as Virtio9p).server.fidCount).toBe(0);
    expect(c.resets).toEqual([]);
    expect(snapshot(outside)).toContain('do not touch');
  });

  it('never leaves the share: .., absolute names, symlinks out, links planted on the host', () => {
    const before = snapshot(outside);
    const c = new P9Client(device());
    const root = c.start();
    // ".." at the root is the root; ".." below it goes back up, no further
    const up = c.walk(0, 1, ['..', '..', '..']);
    expect(P9Client.nwqid(up)).toBe(3);
    expect(up.raw.readBigUInt64LE(9 + 5)).toBe(root);
    expect(up.raw.readBigUInt64LE(9 + 26 + 5)).toBe(root);
    c.walk(1, 2, ['..', 'hello.txt']);
    expect(c.lopen(2, O.RDONLY).errno).toBeUndefined();
    expect(c.read(2, 0, 100).raw.subarray(11).toString()).toBe('hello from the host\n');
    // names with a slash, "." and absolute names
    expect(c.walk(0, 3, ['/etc']).errno).toBe(E.EINVAL);
    expect(c.walk(0, 3, ['../outside']).errno).toBe(E.EINVAL);
    expect(c.walk(0, 3, ['.']).errno).toBe(E.EINVAL);
    expect(c.walk(0, 3, ['']).errno).toBe(E.EINVAL);
    expect(c.walk(0, 3, [Buffer.from('hello.txt\0x')]).errno).toBe(E.EINVAL);
    for (const bad of ['..', '.', '/tmp/evil', 'a/b', '../outside/secret', '']) {
      expect(c.lcreate(0, bad, O.RDWR).errno, bad).toBe(E.EINVAL);
      expect(c.mkdir(0, bad).errno, bad).toBe(E.EINVAL);
      expect(c.rpc(T.SYMLINK, [['u32', 0], ['str', bad], ['str', 'x'], ['u32', 0]]).errno).toBe(E.EINVAL);
      expect(c.rpc(T.UNLINKAT, [['u32', 0], ['str', bad], ['u32', 0]]).errno).toBe(E.EINVAL);
      expect(c.rpc(T.RENAMEAT, [['u32', 0], ['str', 'hello.txt'], ['u32', 0], ['str', bad]]).errno).toBe(E.EINVAL);
    }
    // a link out of the share is a link, never a way through
    const w = c.walk(0, 4, ['out-dir', 'secret']);
    expect(P9Client.nwqid(w)).toBe(1); // stops at the link: newfid not made
    expect(c.getattr(4).errno).toBe(E.ENOENT);
    c.walk(0, 5, ['out-dir']);
    expect(c.lopen(5, O.RDONLY).errno).toBe(E.EPERM);
    expect(c.lcreate(5, 'planted', O.RDWR).errno).toBe(E.ENOTDIR);
    expect(c.mkdir(5, 'planted').errno).toBe(E.ENOTDIR);
    c.walk(0, 6, ['out-file']);
    expect(c.lopen(6, O.RDONLY).errno).toBe(E.EPERM);
    expect(c.lopen(6, O.RDWR | O.TRUNC).errno).toBe(E.EPERM);
    // setattr on a link changes the link's own times at most, never its target
    expect(c.rpc(T.SETATTR, [['u32', 6], ['u32', 0x8], ['u32', 0], ['u32', 0], ['u32', 0], ['u64', 0],
      ['u64', 0], ['u64', 0], ['u64', 0], ['u64', 0]]).errno).not.toBeUndefined();
    expect(c.rpc(T.SETATTR, [['u32', 6], ['u32', 0x1], ['u32', 0o777], ['u32', 0], ['u32', 0], ['u64', 0],
      ['u64', 0], ['u64', 0], ['u64', 0], ['u64', 0]]).errno).toBe(E.EOPNOTSUPP);
    // a hard link to the link is a link to the link
    expect(c.rpc(T.LINK, [['u32', 0], ['u32', 6], ['str', 'hard']]).errno).toBeUndefined();
    expect(fs.lstatSync(path.join(shareDir, 'hard')).isSymbolicLink()).toBe(true);
    // a directory the guest holds, swapped on the host for a link out
    c.walk(0, 7, ['sub']);
    fs.rmdirSync(path.join(shareDir, 'sub'));
    fs.symlinkSync(outside, path.join(shareDir, 'sub'));
    expect(c.lcreate(7, 'through-swap', O.RDWR).errno).toBe(E.ENOTDIR);
    expect(c.mkdir(7, 'through-swap').errno).toBe(E.ENOTDIR);
    expect(c.rpc(T.UNLINKAT, [['u32', 7], ['str', 'secret'], ['u32', 0]]).errno).toBe(E.ENOTDIR);
    expect(c.rpc(T.RENAMEAT, [['u32', 7], ['str', 'secret'], ['u32', 0], ['str', 'stolen']]).errno).toBe(E.ENOTDIR);
    c.walk(0, 8, []);
    expect(c.rpc(T.LINK, [['u32', 7], ['u32', 8], ['str', 'x']]).errno).not.toBeUndefined();
    // the guest's own link to the outside, then walking and creating through it
    expect(c.rpc(T.SYMLINK, [['u32', 0], ['str', 'esc'], ['str', '../outside'], ['u32', 0]]).errno).toBeUndefined();
    expect(P9Client.nwqid(c.walk(0, 9, ['esc', 'secret']))).toBe(1);
    c.walk(0, 10, ['esc']);
    expect(c.lcreate(10, 'x', O.RDWR).errno).toBe(E.ENOTDIR);
    expect(snapshot(outside)).toBe(before);
    expect(c.resets).toEqual([]);
  });

  it('answers hostile messages with Rlerror and the right errno', () => {
    const c = new P9Client(device());
    // before Tversion, nothing but Tversion
    expect(c.rpc(T.ATTACH, [['u32', 0], ['u32', NOFID], ['str', 'u'], ['str', ''], ['u32', 0]]).errno).toBe(E.ENOSYS);
    // an unknown version is "unknown" (and still no session)
    const v = c.rpc(T.VERSION, [['u32', 8192], ['str', '9P2000.u']]);
    expect(v.raw.subarray(13).toString()).toBe('unknown');
    expect(c.rpc(T.VERSION, [['u32', 512], ['str', '9P2000.L']]).errno).toBe(E.EMSGSIZE);
    // msize is capped at bhyve's 512 KiB
    const big = c.rpc(T.VERSION, [['u32', 16 << 20], ['str', '9P2000.L']]);
    expect(big.raw.readUInt32LE(7)).toBe(512 * 1024);
    c.start(65536);
    // bad fids: lib9p's errno per message
    expect(c.getattr(77).errno).toBe(E.ENOENT);
    expect(c.read(77, 0, 10).errno).toBe(E.EINVAL);
    expect(c.write(77, 0, Buffer.from('x')).errno).toBe(E.EINVAL);
    expect(c.clunk(77).errno).toBe(E.ENOENT);
    expect(c.rpc(T.REMOVE, [['u32', 77]]).errno).toBe(E.EINVAL);
    expect(c.rpc(T.STATFS, [['u32', 77]]).errno).toBe(E.EINVAL);
    expect(c.walk(77, 78, []).errno).toBe(E.ENOENT);
    expect(c.rpc(T.ATTACH, [['u32', 0], ['u32', NOFID], ['str', 'u'], ['str', ''], ['u32', 0]]).errno).toBe(E.EINVAL);
    expect(c.rpc(T.ATTACH, [['u32', 5], ['u32', 3], ['str', 'u'], ['str', ''], ['u32', 0]]).errno).toBe(E.EINVAL);
    c.walk(0, 1, []);
    expect(c.walk(0, 1, []).errno).toBe(E.EINVAL); // newfid in use
    expect(c.walk(0, NOFID, []).errno).toBe(E.EINVAL);
    expect(c.read(1, 0, 10).errno).toBe(E.EINVAL); // not open
    expect(c.rpc(T.READDIR, [['u32', 1], ['u64', 0], ['u32', 100]]).errno).toBe(E.EINVAL);
    c.walk(0, 2, ['hello.txt']);
    expect(c.rpc(T.READDIR, [['u32', 2], ['u64', 0], ['u32', 100]]).errno).toBe(E.ENOTDIR);
    expect(c.lcreate(2, 'x', O.RDWR).errno).toBe(E.ENOTDIR);
    expect(c.walk(2, 3, ['x']).errno).toBe(E.ENOTDIR);
    expect(c.lopen(2, 3).errno).toBe(E.EINVAL); // access mode 3
    expect(c.lopen(2, 0o40000000).errno).toBe(E.EINVAL); // an unknown flag bit
    expect(c.lopen(1, O.WRONLY).errno).toBe(E.EPERM); // a directory for writing
    expect(c.lopen(2, O.RDONLY).errno).toBeUndefined();
    expect(c.lopen(2, O.RDONLY).errno).toBe(E.EINVAL); // already open
    // huge counts are clamped to the buffers and the msize
    const r = c.read(2, 0, 0xffffffff, 64);
    expect(r.raw.readUInt32LE(7)).toBe(20);
    const r2 = c.read(2, 5, 0xffffffff, 16);
    expect(r2.raw.readUInt32LE(7)).toBe(5);
    expect(r2.used).toBe(16);
    expect(c.read(2, 2 ** 60, 10).errno).toBe(E.EINVAL);
    // Twrite's count past its data
    c.walk(0, 4, []);
    c.lcreate(4, 'w.bin', O.RDWR);
    expect(c.writeRaw(4, 0, Buffer.from('abc'), 1000).errno).toBe(E.EPROTO);
    expect(c.writeRaw(4, 0, Buffer.from('abc'), 0xffffffff).errno).toBe(E.EPROTO);
    expect(fs.statSync(path.join(shareDir, 'w.bin')).size).toBe(0);
    // Twalk with more than 16 names
    expect(c.walk(0, 5, Array(17).fill('sub')).errno).toBe(E.EPROTO);
    // short messages, sizes that lie, strings that overrun
    expect(c.sendRaw(encode(T.GETATTR, 9, [['u32', 0]])).errno).toBe(E.EPROTO);
    const lying = Buffer.from(encode(T.CLUNK, 9, [['u32', 0]]));
    lying.writeUInt32LE(1000, 0);
    expect(c.sendRaw(lying).errno).toBe(E.EPROTO);
    lying.writeUInt32LE(3, 0);
    expect(c.sendRaw(lying).errno).toBe(E.EPROTO);
    const overrun = Buffer.from(encode(T.MKDIR, 9, [['u32', 0], ['str', 'abc'], ['u32', 0o755], ['u32', 0]]));
    overrun.writeUInt16LE(60000, 11);
    expect(c.sendRaw(overrun).errno).toBe(E.EPROTO);
    expect(fs.existsSync(path.join(shareDir, 'abc'))).toBe(false);
    // no header at all, and no room for any reply: the chain comes back empty
    expect(c.sendRaw(new Uint8Array(3)).used).toBe(0);
    expect(c.sendRaw(encode(T.CLUNK, 9, [['u32', 1]]), 4).used).toBe(0);
    expect(c.getattr(1).errno).toBeUndefined(); // that clunk was not done
    // too little room for the reply: EMSGSIZE
    expect(c.sendRaw(encode(T.GETATTR, 9, [['u32', 0], ['u64', 0x7ffn]]), 64).errno).toBe(E.EMSGSIZE);
    // unknown and 9P2000-only message types
    expect(c.rpc(200, []).errno).toBe(E.ENOSYS);
    expect(c.rpc(T.AUTH, [['u32', 9], ['str', 'u'], ['str', ''], ['u32', 0]]).errno).toBe(E.ENOSYS);
    expect(c.rpc(T.STAT, [['u32', 0]]).errno).toBe(E.ENOSYS);
    // exists already
    expect(c.mkdir(0, 'sub').errno).toBe(E.EEXIST);
    expect(c.lcreate(1, 'hello.txt', O.RDWR).errno).toBe(E.EEXIST);
    // root cannot be removed or renamed
    c.walk(0, 6, []);
    expect(c.rpc(T.RENAME, [['u32', 6], ['u32', 0], ['str', 'x']]).errno).toBe(16);
    expect(c.rpc(T.REMOVE, [['u32', 6]]).errno).toBe(16);
    expect(fs.existsSync(shareDir)).toBe(true);
    expect(c.resets).toEqual([]);
    // Tversion ends the session: every fid is gone
    c.rpc(T.VERSION, [['u32', 65536], ['str', '9P2000.L']]);
    expect((c.dev as Virtio9p).server.fidCount).toBe(0);
  });

  it('a read-only share refuses every change with EROFS', () => {
    const before = snapshot(shareDir);
    const c = new P9Client(device(true));
    c.start();
    c.walk(0, 1, []);
    expect(c.lcreate(1, 'x', O.RDWR).errno).toBe(E.EROFS);
    expect(c.mkdir(0, 'd').errno).toBe(E.EROFS);
    expect(c.rpc(T.SYMLINK, [['u32', 0], ['str', 's'], ['str', 't'], ['u32', 0]]).errno).toBe(E.EROFS);
    expect(c.rpc(T.MKNOD, [['u32', 0], ['str', 'f'], ['u32', 0o010644], ['u32', 0], ['u32', 0], ['u32', 0]]).errno).toBe(E.EROFS);
    expect(c.rpc(T.UNLINKAT, [['u32', 0], ['str', 'hello.txt'], ['u32', 0]]).errno).toBe(E.EROFS);
    expect(c.rpc(T.RENAMEAT, [['u32', 0], ['str', 'hello.txt'], ['u32', 0], ['str', 'y']]).errno).toBe(E.EROFS);
    c.walk(0, 2, ['hello.txt']);
    expect(c.rpc(T.LINK, [['u32', 0], ['u32', 2], ['str', 'z']]).errno).toBe(E.EROFS);
    expect(c.rpc(T.SETATTR, [['u32', 2], ['u32', 0x8], ['u32', 0], ['u32', 0], ['u32', 0], ['u64', 0],
      ['u64', 0], ['u64', 0], ['u64', 0], ['u64', 0]]).errno).toBe(E.EROFS);
    expect(c.lopen(2, O.WRONLY).errno).toBe(E.EROFS);
    expect(c.lopen(2, O.RDONLY | O.TRUNC).errno).toBe(E.EROFS);
    expect(c.lopen(2, O.RDONLY).errno).toBeUndefined();
    expect(c.write(2, 0, Buffer.from('x')).errno).toBe(E.EROFS);
    expect(c.read(2, 0, 5).raw.subarray(11).toString()).toBe('hello');
    c.walk(0, 3, ['hello.txt']);
    expect(c.rpc(T.REMOVE, [['u32', 3]]).errno).toBe(E.EROFS);
    expect(snapshot(shareDir)).toBe(before);
  });

  it('a device reset ends the session and closes every file', () => {
    const dev = device();
    const c = new P9Client(dev);
    c.start();
    c.walk(0, 1, ['hello.txt']);
    c.lopen(1, O.RDONLY);
    expect(dev.server.fidCount).toBe(2);
    dev.reset();
    expect(dev.server.fidCount).toBe(0);
    dev.close();
  });

  it('a missing share directory is one clear error', () => {
    expect(() => new P9Share(path.join(tmp, 'nope'), false)).toThrow(/failed to open '.*nope': No such file or directory/);
  });
});
