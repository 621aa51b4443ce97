// ext2/ext3/ext4 read-only access: the superblock at byte 1024, block group
// descriptors (32- or 64-byte), inodes of any size, files mapped by direct and
// indirect blocks or by extent trees of any depth, directory lookup by linear
// scan (hashed directories read the same way), symbolic links resolved inside
// the image.

import { type BlockReader, type FileSystem, pathComponents, u16, u32 } from './block.js';
import { LoaderError } from './errors.js';

export const EXT_SUPER_MAGIC = 0xef53;
export const EXT4_EXTENT_MAGIC = 0xf30a;
const INCOMPAT_FILETYPE = 0x2;
const INCOMPAT_RECOVER = 0x4;
/** meta_bg moves group descriptors; not supported (mke2fs does not set it by default). */
export const INCOMPAT_META_BG = 0x10;
const INCOMPAT_EXTENTS = 0x40;
const INCOMPAT_64BIT = 0x80;
const INCOMPAT_MMP = 0x100;
const INCOMPAT_FLEX_BG = 0x200;
const INCOMPAT_EA_INODE = 0x400;
const INCOMPAT_DIRDATA = 0x1000;
const INCOMPAT_CSUM_SEED = 0x2000;
const INCOMPAT_LARGEDIR = 0x4000;
const INCOMPAT_INLINE_DATA = 0x8000;
const INCOMPAT_ENCRYPT = 0x10000;
const INCOMPAT_CASEFOLD = 0x20000;
const INCOMPAT_SUPPORTED = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_EXTENTS | INCOMPAT_64BIT
  | INCOMPAT_MMP | INCOMPAT_FLEX_BG | INCOMPAT_EA_INODE | INCOMPAT_DIRDATA | INCOMPAT_CSUM_SEED | INCOMPAT_LARGEDIR
  | INCOMPAT_INLINE_DATA | INCOMPAT_ENCRYPT | INCOMPAT_CASEFOLD;
const EXT4_EXTENTS_FL = 0x80000;
const EXT4_INLINE_DATA_FL = 0x10000000;
const S_IFMT = 0xf000;
const S_IFDIR = 0x4000;
const S_IFREG = 0x8000;
const S_IFLNK = 0xa000;
const ROOT_INO = 2;
/** Largest file we read into memory (kernels and initrds are far smaller). */
const MAX_FILE = 2 ** 31;

export function isExt(r: BlockReader): boolean {
  if (r.size < 2048) return false;
  return u16(r.read(1024, 1024), 56) === EXT_SUPER_MAGIC;
}

interface Inode {
  ino: number;
  mode: number;
  size: number;
  flags: number;
  blocks512: number;
  fileAcl: number;
  block: Uint8Array; // i_block, 60 bytes
}

export class ExtFs implements FileSystem {
  readonly type = 'ext';
  private readonly blockSize: number;
  private readonly inodesPerGroup: number;
  private readonly inodeSize: number;
  private readonly descSize: number;
  private readonly firstDataBlock: number;
  private readonly groupCount: number;
  private readonly incompat: number;
  private readonly blocksPerGroup: number;

  constructor(private readonly r: BlockReader, readonly name = 'image') {
    if (!isExt(r)) throw new LoaderError(`${name} is not an ext2/3/4 filesystem`);
    const sb = r.read(1024, 1024);
    const logBlock = u32(sb, 24);
    if (logBlock > 6) throw new LoaderError(`${name}: corrupt ext superblock (block size 2^${10 + logBlock})`);
    this.blockSize = 1024 << logBlock;
    const revLevel = u32(sb, 76);
    this.inodeSize = revLevel >= 1 ? u16(sb, 88) : 128;
    this.inodesPerGroup = u32(sb, 40);
    this.blocksPerGroup = u32(sb, 32);
    this.firstDataBlock = u32(sb, 20);
    this.incompat = revLevel >= 1 ? u32(sb, 96) : 0;
    const unknown = this.incompat & ~INCOMPAT_SUPPORTED;
    if (unknown) throw new LoaderError(`${name}: ext filesystem uses features we cannot read (incompat 0x${unknown.toString(16)})`);
    this.descSize = this.incompat & INCOMPAT_64BIT ? Math.max(32, u16(sb, 254)) : 32;
    const blocksCount = u32(sb, 4) + (this.incompat & INCOMPAT_64BIT ? u32(sb, 0x150) * 2 ** 32 : 0);
    if (this.inodesPerGroup === 0 || this.blocksPerGroup === 0 || this.inodeSize < 128 || this.inodeSize > this.blockSize) {
      throw new LoaderError(`${name}: corrupt ext superblock`);
    }
    this.groupCount = Math.ceil((blocksCount - this.firstDataBlock) / this.blocksPerGroup);
  }

  readFile(path: string): Uint8Array {
    const ino = this.resolve(path, true);
    const inode = this.readInode(ino);
    if ((inode.mode & S_IFMT) === S_IFDIR) throw new LoaderError(`${this.name}:${path}: Is a directory`);
    if ((inode.mode & S_IFMT) !== S_IFREG) throw new LoaderError(`${this.name}:${path}: not a regular file`);
    return this.readData(inode);
  }

  /** Inode number of a path; symbolic links are followed inside the image. */
  resolve(path: string, followLast: boolean, depth = 0): number {
    if (depth > 40) throw new LoaderError(`${this.name}:${path}: too many levels of symbolic links`);
    const parts = pathComponents(path);
    let cur = ROOT_INO;
    for (let i = 0; i < parts.length; i++) {
      const dir = this.readInode(cur);
      if ((dir.mode & S_IFMT) !== S_IFDIR) throw new LoaderError(`${this.name}:${path}: Not a directory`);
      const p = parts[i];
      const next = this.lookupIn(dir, p);
      if (next === undefined) throw new LoaderError(`${this.name}:${path}: No such file or directory`);
      const node = this.readInode(next);
      if ((node.mode & S_IFMT) === S_IFLNK && (followLast || i < parts.length - 1)) {
        const target = this.readLink(node);
        const base = target.startsWith('/') ? '' : '/' + parts.slice(0, i).join('/');
        return this.resolve(normalize(`${base}/${target}/${parts.slice(i + 1).join('/')}`), followLast, depth + 1);
      }
      cur = next;
    }
    return cur;
  }

  private readLink(node: Inode): string {
    const aclBlocks = node.fileAcl ? this.blockSize / 512 : 0;
    const fast = node.size < 60 && !(node.flags & (EXT4_EXTENTS_FL | EXT4_INLINE_DATA_FL)) && node.blocks512 - aclBlocks <= 0;
    const bytes = fast || node.flags & EXT4_INLINE_DATA_FL ? node.block.subarray(0, node.size) : this.readData(node);
    return Buffer.from(bytes).toString('utf8');
  }

  private lookupIn(dir: Inode, name: string): number | undefined {
    const data = this.readData(dir);
    const target = Buffer.from(name, 'utf8');
    // Inline directories start with the parent's inode number (4 bytes).
    let off = dir.flags & EXT4_INLINE_DATA_FL ? 4 : 0;
    while (off + 8 <= data.length) {
      const ino = u32(data, off);
      const recLen = u16(data, off + 4);
      const nameLen = data[off + 6];
      if (recLen < 8 || off + recLen > data.length) {
        throw new LoaderError(`${this.name}: corrupt ext directory entry in inode ${dir.ino}`);
      }
      if (ino !== 0 && nameLen === target.length && off + 8 + nameLen <= data.length
        && Buffer.compare(Buffer.from(data.subarray(off + 8, off + 8 + nameLen)), target) === 0) return ino;
      off += recLen;
    }
    return undefined;
  }

  private readInode(ino: number): Inode {
    if (ino < 1) throw new LoaderError(`${this.name}: corrupt ext filesystem (inode ${ino})`);
    const group = Math.floor((ino - 1) / this.inodesPerGroup);
    const index = (ino - 1) % this.inodesPerGroup;
    if (group >= this.groupCount) throw new LoaderError(`${this.name}: corrupt ext filesystem (inode ${ino} beyond the last group)`);
    const gdBlock = this.firstDataBlock + 1;
    const gd = this.r.read(gdBlock * this.blockSize + group * this.descSize, this.descSize);
    const table = u32(gd, 8) + (this.descSize >= 64 ? u32(gd, 0x28) * 2 ** 32 : 0);
    const raw = this.r.read(table * this.blockSize + index * this.inodeSize, 128);
    return {
      ino,
      mode: u16(raw, 0),
      size: u32(raw, 4) + u32(raw, 0x6c) * 2 ** 32,
      flags: u32(raw, 0x20),
      blocks512: u32(raw, 0x1c),
      fileAcl: u32(raw, 0x68),
      block: Uint8Array.from(raw.subarray(0x28, 0x28 + 60)),
    };
  }

  private readData(inode: Inode): Uint8Array {
    if (inode.size > MAX_FILE) throw new LoaderError(`${this.name}: file of ${inode.size} bytes is too large to load`);
    if (inode.flags & EXT4_INLINE_DATA_FL) {
      if (inode.size > 60) throw new LoaderError(`${this.name}: inline-data file of ${inode.size} bytes is not supported`);
      return inode.block.subarray(0, inode.size);
    }
    const out = new Uint8Array(inode.size);
    const nblocks = Math.ceil(inode.size / this.blockSize);
    const put = (logical: number, physical: number, count: number) => {
      for (let i = 0; i < count; i++) {
        const l = logical + i;
        if (l >= nblocks) return;
        const len = Math.min(this.blockSize, inode.size - l * this.blockSize);
        out.set(this.r.read((physical + i) * this.blockSize, len), l * this.blockSize);
      }
    };
    if (inode.flags & EXT4_EXTENTS_FL) this.walkExtents(inode.block, put, 0);
    else this.walkBlockMap(inode.block, nblocks, put);
    return out;
  }

  private walkExtents(node: Uint8Array, put: (l: number, p: number, n: number) => void, depthSeen: number): void {
    if (u16(node, 0) !== EXT4_EXTENT_MAGIC) throw new LoaderError(`${this.name}: corrupt ext extent header`);
    const entries = u16(node, 2);
    const depth = u16(node, 6);
    if (depthSeen > 5 || 12 + entries * 12 > node.length) throw new LoaderError(`${this.name}: corrupt ext extent tree`);
    for (let i = 0; i < entries; i++) {
      const e = 12 + i * 12;
      if (depth === 0) {
        const logical = u32(node, e);
        let len = u16(node, e + 4);
        const uninit = len > 32768;
        if (uninit) len -= 32768; // unwritten extent: reads as zeros
        const start = u16(node, e + 6) * 2 ** 32 + u32(node, e + 8);
        if (!uninit) put(logical, start, len);
      } else {
        const leaf = u32(node, e + 4) + u16(node, e + 8) * 2 ** 32;
        this.walkExtents(this.r.read(leaf * this.blockSize, this.blockSize), put, depthSeen + 1);
      }
    }
  }

  private walkBlockMap(iblock: Uint8Array, nblocks: number, put: (l: number, p: number, n: number) => void): void {
    const per = this.blockSize / 4;
    let logical = 0;
    const walk = (ptr: number, level: number): void => {
      if (logical >= nblocks) return;
      if (level === 0) {
        if (ptr !== 0) put(logical, ptr, 1);
        logical += 1;
        return;
      }
      const span = per ** level;
      if (ptr === 0) { logical += span; return; }
      const blk = this.r.read(ptr * this.blockSize, this.blockSize);
      for (let i = 0; i < per && logical < nblocks; i++) walk(u32(blk, i * 4), level - 1);
    };
    for (let i = 0; i < 12; i++) walk(u32(iblock, i * 4), 0);
    walk(u32(iblock, 48), 1);
    walk(u32(iblock, 52), 2);
    walk(u32(iblock, 56), 3);
  }
}

function normalize(path: string): string {
  const out: string[] = [];
  for (const c of pathComponents(path)) {
    if (c === '..') out.pop();
    else out.push(c);
  }
  return '/' + out.join('/');
}
