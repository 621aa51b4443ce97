// ISO 9660 reading: images made by a minimal builder written here (plain
// names, Rock Ridge NM/SL), and by genisoimage when installed (Rock Ridge,
// Joliet).

import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

import { BufferReader } from '../../src/loader/block.js';
import { Iso9660, isIso9660 } from '../../src/loader/iso9660.js';
import { DiskImageSource } from '../../src/loader/source.js';

const SECTOR = 2048;

interface Entry { name: string; data?: Uint8Array; children?: Entry[]; symlink?: string }

function both16(b: Uint8Array, off: number, v: number) { b[off] = v & 0xff; b[off + 1] = v >> 8; b[off + 2] = v >> 8; b[off + 3] = v & 0xff; }
function both32(b: Uint8Array, off: number, v: number) {
  const dv = new DataView(b.buffer, b.byteOffset);
  dv.setUint32(off, v, true); dv.setUint32(off + 4, v, false);
}

function isoName(e: Entry): string {
  if (e.children) return e.name.toUpperCase().replace(/[^A-Z0-9_]/g, '_').slice(0, 8);
  const [base, ext = ''] = e.name.toUpperCase().replace(/[^A-Z0-9_.]/g, '_').split(/\.(?=[^.]*$)/);
  return `${base.replace(/\./g, '_').slice(0, 8)}.${ext.slice(0, 3)};1`;
}

function record(name: Uint8Array, extent: number, size: number, dir: boolean, su: Uint8Array): Uint8Array {
  let len = 33 + name.length + (name.length % 2 === 0 ? 1 : 0) + su.length;
  if (len % 2) len++;
  const r = new Uint8Array(len);
  r[0] = len;
  both32(r, 2, extent);
  both32(r, 10, size);
  r[25] = dir ? 2 : 0;
  both16(r, 28, 1);
  r[32] = name.length;
  r.set(name, 33);
  r.set(su, 33 + name.length + (name.length % 2 === 0 ? 1 : 0));
  return r;
}

function susp(sig: string, body: number[]): number[] { return [sig.charCodeAt(0), sig.charCodeAt(1), 4 + body.length, 1, ...body]; }

/** A minimal ISO 9660 image; with rr, Rock Ridge NM names and SL links. */
function buildIso(root: Entry[], rr: boolean): Uint8Array {
  type Node = { e: Entry; extent: number; size: number; parent?: Node; kids: Node[] };
  const mk = (e: Entry, parent?: Node): Node => {
    const n: Node = { e, extent: 0, size: 0, parent, kids: [] };
    n.kids = (e.children ?? []).map((c) => mk(c, n));
    return n;
  };
  const top = mk({ name: '', children: root });
  const suFor = (n: Node, isRootDot = false): Uint8Array => {
    const out: number[] = [];
    if (!rr) return new Uint8Array();
    if (isRootDot) out.push(...susp('SP', [0xbe, 0xef, 0]));
    if (n.e.name) out.push(...susp('NM', [0, ...Buffer.from(n.e.name)]));
    if (n.e.symlink !== undefined) {
      const comps: number[] = [];
      const t = n.e.symlink;
      if (t.startsWith('/')) comps.push(8, 0);
      for (const c of t.split('/').filter(Boolean)) {
        if (c === '..') comps.push(4, 0);
        else if (c === '.') comps.push(2, 0);
        else comps.push(0, c.length, ...Buffer.from(c));
      }
      out.push(...susp('SL', [0, ...comps]));
    }
    return Uint8Array.from(out);
  };
  const dirRecords = (d: Node): Uint8Array[] => [
    record(Uint8Array.of(0), d.extent, d.size, true, suFor({ ...d, e: { name: '' } }, d === top)),
    record(Uint8Array.of(1), (d.parent ?? d).extent, (d.parent ?? d).size, true, new Uint8Array()),
    ...d.kids.map((k) => record(Buffer.from(isoName(k.e)), k.extent, k.size, !!k.e.children, suFor(k))),
  ];
  const layoutDir = (recs: Uint8Array[]): Uint8Array => {
    let off = 0;
    const out = new Uint8Array(64 * SECTOR);
    for (const r of recs) {
      if ((off % SECTOR) + r.length > SECTOR) off = (Math.floor(off / SECTOR) + 1) * SECTOR;
      out.set(r, off);
      off += r.length;
    }
    return out.subarray(0, Math.ceil(off / SECTOR) * SECTOR);
  };
  // Pass 1: sizes; pass 2: extents.
  const dirs: Node[] = [];
  const files: Node[] = [];
  const walk = (n: Node) => { if (n.e.children) { dirs.push(n); n.kids.forEach(walk); } else files.push(n); };
  walk(top);
  for (const d of dirs) d.size = layoutDir(dirRecords(d)).length;
  let next = 18;
  for (const d of dirs) { d.extent = next; next += d.size / SECTOR; }
  for (const f of files) { f.size = f.e.data?.length ?? 0; f.extent = f.size ? next : 0; next += Math.ceil(f.size / SECTOR); }
  const img = new Uint8Array(next * SECTOR);
  const pvd = img.subarray(16 * SECTOR);
  pvd[0] = 1; pvd.set(Buffer.from('CD001'), 1); pvd[6] = 1;
  both32(pvd, 80, next);
  both16(pvd, 120, 1); both16(pvd, 124, 1); both16(pvd, 128, SECTOR);
  pvd.set(record(Uint8Array.of(0), top.extent, top.size, true, new Uint8Array()), 156);
  const term = img.subarray(17 * SECTOR);
  term[0] = 255; term.set(Buffer.from('CD001'), 1); term[6] = 1;
  for (const d of dirs) img.set(layoutDir(dirRecords(d)), d.extent * SECTOR);
  for (const f of files) if (f.size) img.set(f.e.data!, f.extent * SECTOR);
  return img;
}

const kernel = new Uint8Array(5000).map((_, i) => (i * 31) & 0xff);
const initrd = new Uint8Array(3 * SECTOR + 17).map((_, i) => (i * 7) & 0xff);
const tree = (): Entry[] => [
  { name: 'boot', children: [
    { name: 'vmlinuz', data: kernel },
    { name: 'initrd.img', data: initrd },
    { name: 'current', symlink: 'vmlinuz' },
    { name: 'grub', children: [{ name: 'abs', symlink: '/boot/vmlinuz' }, { name: 'up', symlink: '../initrd.img' }] },
  ] },
  { name: 'readme.txt', data: Buffer.from('hello') },
];

describe('ISO 9660 (built here)', () => {
  it('finds files by plain ISO 9660 names, case-insensitively, without version suffix', () => {
    const iso = new Iso9660(new BufferReader(buildIso(tree(), false)));
    expect(iso.readFile('/BOOT/VMLINUZ')).toEqual(kernel);
    expect(iso.readFile('/boot/initrd.img')).toEqual(initrd);
    expect(Buffer.from(iso.readFile('readme.txt')).toString()).toBe('hello');
    expect(() => iso.readFile('/boot/missing')).toThrow(/\/boot\/missing: No such file or directory/);
    expect(() => iso.readFile('/boot')).toThrow(/Is a directory/);
    expect(() => iso.readFile('/readme.txt/x')).toThrow(/Not a directory/);
  });

  it('uses Rock Ridge names and follows Rock Ridge symbolic links', () => {
    const iso = new Iso9660(new BufferReader(buildIso(tree(), true)));
    expect(iso.readFile('/boot/vmlinuz')).toEqual(kernel);
    expect(iso.readFile('/boot/initrd.img')).toEqual(initrd);
    expect(iso.readFile('/boot/current')).toEqual(kernel);
    expect(iso.readFile('/boot/grub/abs')).toEqual(kernel);
    expect(iso.readFile('/boot/grub/up')).toEqual(initrd);
  });

  it('recognises ISO images and refuses others and truncated ones', () => {
    const img = buildIso(tree(), true);
    expect(isIso9660(new BufferReader(img))).toBe(true);
    expect(isIso9660(new BufferReader(new Uint8Array(40 * SECTOR)))).toBe(false);
    expect(() => new Iso9660(new BufferReader(new Uint8Array(40 * SECTOR)), 'x.img')).toThrow('x.img is not an ISO 9660 image');
    const cut = new Iso9660(new BufferReader(img.subarray(0, img.length - SECTOR), 'cut.iso'), 'cut.iso');
    expect(() => cut.readFile('/readme.txt')).toThrow(/past its end.*corrupt or truncated/);
  });

  it('serves files to bhyveload through a disk image source', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iso-'));
    const file = path.join(dir, 'cd.iso');
    fs.writeFileSync(file, buildIso(tree(), true));
    const src = new DiskImageSource(file);
    expect(src.description).toBe(`disk image ${file} (iso9660)`);
    expect(src.readFile('/boot/vmlinuz', 'kernel')).toEqual(kernel);
    expect(() => src.readFile('/nope', 'initrd')).toThrow(/^initrd .*\/nope: No such file or directory/);
    src.close();
  });
});

const genisoimage = spawnSync('genisoimage', ['-version']).status === 0 ? 'genisoimage' : undefined;

describe.skipIf(!genisoimage)(genisoimage ? 'ISO 9660 made by genisoimage' : 'ISO 9660 made by genisoimage (skipped: genisoimage is not installed)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'geniso-'));
  const root = path.join(dir, 'root');
  fs.mkdirSync(path.join(root, 'boot', 'deep', 'er'), { recursive: true });
  fs.writeFileSync(path.join(root, 'boot', 'vmlinuz-6.1.0-amd64'), kernel);
  fs.writeFileSync(path.join(root, 'boot', 'deep', 'er', 'Initrd.Image.gz'), initrd);
  fs.symlinkSync('vmlinuz-6.1.0-amd64', path.join(root, 'boot', 'vmlinuz'));
  const many = Array.from({ length: 120 }, (_, i) => `file-with-a-long-name-${i}.txt`);
  for (const n of many) fs.writeFileSync(path.join(root, 'boot', n), n);
  const make = (name: string, flags: string[]) => {
    const out = path.join(dir, name);
    execFileSync('genisoimage', ['-quiet', ...flags, '-o', out, root]);
    return new Iso9660(new BufferReader(new Uint8Array(fs.readFileSync(out))));
  };

  it('reads Rock Ridge names, symlinks and large directories', () => {
    const iso = make('rr.iso', ['-R', '-J']);
    expect(iso.readFile('/boot/vmlinuz-6.1.0-amd64')).toEqual(kernel);
    expect(iso.readFile('/boot/vmlinuz')).toEqual(kernel);
    expect(iso.readFile('/boot/deep/er/Initrd.Image.gz')).toEqual(initrd);
    expect(Buffer.from(iso.readFile('/boot/file-with-a-long-name-119.txt')).toString()).toBe('file-with-a-long-name-119.txt');
  });

  it('reads Joliet names when there is no Rock Ridge', () => {
    const iso = make('joliet.iso', ['-J']);
    expect(iso.readFile('/boot/vmlinuz-6.1.0-amd64')).toEqual(kernel);
    expect(iso.readFile('/boot/deep/er/Initrd.Image.gz')).toEqual(initrd);
  });
});
