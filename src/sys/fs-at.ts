// The *at() file calls Node has no binding for (openat, fstatat, mkdirat,
// renameat, ...), for a file server that resolves every name relative to a
// directory descriptor it holds (devices/virtio/p9/). Names are raw bytes
// (NUL-terminated Uint8Arrays): a guest's file names need not be UTF-8.
// Synchronous (libc.ts); failures come back as -errno, never as exceptions,
// so a server maps them straight to its protocol's error replies.

import { errno, libcFunc } from './libc.js';

const openatFn = libcFunc('int openat(int dirfd, const uint8_t *path, int flags, uint32_t mode)');
const closeFn = libcFunc('int close(int fd)');
const fstatatFn = libcFunc('int fstatat(int dirfd, const uint8_t *path, _Out_ uint8_t *st, int flags)');
const mkdiratFn = libcFunc('int mkdirat(int dirfd, const uint8_t *path, uint32_t mode)');
const mknodatFn = libcFunc('int mknodat(int dirfd, const uint8_t *path, uint32_t mode, uint64_t dev)');
const symlinkatFn = libcFunc('int symlinkat(const uint8_t *target, int dirfd, const uint8_t *path)');
const linkatFn = libcFunc('int linkat(int olddirfd, const uint8_t *oldpath, int newdirfd, const uint8_t *newpath, int flags)');
const renameatFn = libcFunc('int renameat(int olddirfd, const uint8_t *oldpath, int newdirfd, const uint8_t *newpath)');
const unlinkatFn = libcFunc('int unlinkat(int dirfd, const uint8_t *path, int flags)');
const readlinkatFn = libcFunc('int64_t readlinkat(int dirfd, const uint8_t *path, _Out_ uint8_t *buf, size_t size)');
const fchmodatFn = libcFunc('int fchmodat(int dirfd, const uint8_t *path, uint32_t mode, int flags)');
const fchmodFn = libcFunc('int fchmod(int fd, uint32_t mode)');
const fchownatFn = libcFunc('int fchownat(int dirfd, const uint8_t *path, uint32_t uid, uint32_t gid, int flags)');
const utimensatFn = libcFunc('int utimensat(int dirfd, const uint8_t *path, const uint8_t *times, int flags)');
const fstatfsFn = libcFunc('int fstatfs(int fd, _Out_ uint8_t *buf)');
const getdentsFn = libcFunc('int64_t getdents64(int fd, _Out_ uint8_t *buf, size_t size)');
const lseekFn = libcFunc('int64_t lseek(int fd, int64_t offset, int whence)');

export const AT_FDCWD = -100;
export const AT_SYMLINK_NOFOLLOW = 0x100;
export const AT_REMOVEDIR = 0x200;
export const AT_EMPTY_PATH = 0x1000;

export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_ACCMODE = 3;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_NOCTTY = 0o400;
export const O_TRUNC = 0o1000;
export const O_APPEND = 0o2000;
export const O_NONBLOCK = 0o4000;
export const O_DSYNC = 0o10000;
export const O_FASYNC = 0o20000;
export const O_DIRECT = 0o40000;
export const O_LARGEFILE = 0o100000;
export const O_DIRECTORY = 0o200000;
export const O_NOFOLLOW = 0o400000;
export const O_NOATIME = 0o1000000;
export const O_CLOEXEC = 0o2000000;
export const O_SYNC = 0o4010000;
export const O_PATH = 0o10000000;

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

export const UTIME_NOW = (1 << 30) - 1;
export const UTIME_OMIT = (1 << 30) - 2;

export const SEEK_SET = 0;

/** struct stat (x86-64), the fields a file server reports. Numbers that may
 * pass 2^53 (inode, device, sizes) are bigints. */
export interface Stat {
  dev: bigint;
  ino: bigint;
  nlink: bigint;
  mode: number;
  uid: number;
  gid: number;
  rdev: bigint;
  size: bigint;
  blksize: bigint;
  blocks: bigint;
  atimeSec: bigint; atimeNsec: bigint;
  mtimeSec: bigint; mtimeNsec: bigint;
  ctimeSec: bigint; ctimeNsec: bigint;
}

const STAT_SIZE = 144;
const statBuf = new Uint8Array(STAT_SIZE);
const statView = new DataView(statBuf.buffer);

function parseStat(): Stat {
  const v = statView;
  return {
    dev: v.getBigUint64(0, true),
    ino: v.getBigUint64(8, true),
    nlink: v.getBigUint64(16, true),
    mode: v.getUint32(24, true),
    uid: v.getUint32(28, true),
    gid: v.getUint32(32, true),
    rdev: v.getBigUint64(40, true),
    size: v.getBigInt64(48, true),
    blksize: v.getBigInt64(56, true),
    blocks: v.getBigInt64(64, true),
    atimeSec: v.getBigInt64(72, true), atimeNsec: v.getBigInt64(80, true),
    mtimeSec: v.getBigInt64(88, true), mtimeNsec: v.getBigInt64(96, true),
    ctimeSec: v.getBigInt64(104, true), ctimeNsec: v.getBigInt64(112, true),
  };
}

/** A NUL-terminated copy of a name for the C calls. */
export function cName(name: Uint8Array | string): Uint8Array {
  const b = typeof name === 'string' ? Buffer.from(name, 'utf8') : name;
  const out = new Uint8Array(b.length + 1);
  out.set(b);
  return out;
}

const EMPTY = cName('');

function ret(r: number | bigint): number {
  const n = Number(r);
  return n < 0 ? -errno() : n;
}

export function openat(dirfd: number, name: Uint8Array, flags: number, mode = 0): number {
  return ret(openatFn(dirfd, name, flags, mode));
}

export function closeFd(fd: number): number {
  return ret(closeFn(fd));
}

/** fstatat(2); the Stat, or -errno. An empty name with AT_EMPTY_PATH
 * stats `dirfd` itself. */
export function fstatat(dirfd: number, name: Uint8Array | null, flags: number): Stat | number {
  const r = fstatatFn(dirfd, name ?? EMPTY, statBuf, name === null ? flags | AT_EMPTY_PATH : flags) as number;
  if (r < 0) return -errno();
  return parseStat();
}

export function mkdirat(dirfd: number, name: Uint8Array, mode: number): number {
  return ret(mkdiratFn(dirfd, name, mode));
}

export function mknodat(dirfd: number, name: Uint8Array, mode: number, dev: bigint): number {
  return ret(mknodatFn(dirfd, name, mode, dev));
}

export function symlinkat(target: Uint8Array, dirfd: number, name: Uint8Array): number {
  return ret(symlinkatFn(target, dirfd, name));
}

export function linkat(olddirfd: number, oldname: Uint8Array, newdirfd: number, newname: Uint8Array, flags: number): number {
  return ret(linkatFn(olddirfd, oldname, newdirfd, newname, flags));
}

export function renameat(olddirfd: number, oldname: Uint8Array, newdirfd: number, newname: Uint8Array): number {
  return ret(renameatFn(olddirfd, oldname, newdirfd, newname));
}

export function unlinkat(dirfd: number, name: Uint8Array, flags: number): number {
  return ret(unlinkatFn(dirfd, name, flags));
}

/** readlinkat(2) into `buf`; the length, or -errno. */
export function readlinkat(dirfd: number, name: Uint8Array, buf: Uint8Array): number {
  return ret(readlinkatFn(dirfd, name, buf, buf.length));
}

export function fchmodat(dirfd: number, name: Uint8Array, mode: number, flags: number): number {
  return ret(fchmodatFn(dirfd, name, mode, flags));
}

export function fchmod(fd: number, mode: number): number {
  return ret(fchmodFn(fd, mode));
}

export function fchownat(dirfd: number, name: Uint8Array | null, uid: number, gid: number, flags: number): number {
  return ret(fchownatFn(dirfd, name ?? EMPTY, uid >>> 0, gid >>> 0, name === null ? flags | AT_EMPTY_PATH : flags));
}

/** utimensat(2); a time is [sec, nsec] (nsec UTIME_NOW / UTIME_OMIT allowed). */
export function utimensat(dirfd: number, name: Uint8Array, atime: [bigint, number], mtime: [bigint, number], flags: number): number {
  const ts = new Uint8Array(32);
  const v = new DataView(ts.buffer);
  v.setBigInt64(0, atime[0], true);
  v.setBigInt64(8, BigInt(atime[1]), true);
  v.setBigInt64(16, mtime[0], true);
  v.setBigInt64(24, BigInt(mtime[1]), true);
  return ret(utimensatFn(dirfd, name, ts, flags));
}

/** struct statfs (x86-64), the fields 9P's Rstatfs carries. */
export interface StatFs {
  type: bigint;
  bsize: bigint;
  blocks: bigint;
  bfree: bigint;
  bavail: bigint;
  files: bigint;
  ffree: bigint;
  fsid: [number, number];
  namelen: bigint;
}

export function fstatfs(fd: number): StatFs | number {
  const b = new Uint8Array(120);
  const r = fstatfsFn(fd, b) as number;
  if (r < 0) return -errno();
  const v = new DataView(b.buffer);
  return {
    type: v.getBigInt64(0, true),
    bsize: v.getBigInt64(8, true),
    blocks: v.getBigUint64(16, true),
    bfree: v.getBigUint64(24, true),
    bavail: v.getBigUint64(32, true),
    files: v.getBigUint64(40, true),
    ffree: v.getBigUint64(48, true),
    fsid: [v.getInt32(56, true), v.getInt32(60, true)],
    namelen: v.getBigInt64(64, true),
  };
}

/** getdents64(2) into `buf`: bytes of struct linux_dirent64 records, or
 * -errno. */
export function getdents64(fd: number, buf: Uint8Array): number {
  return ret(getdentsFn(fd, buf, buf.length));
}

export function lseekSet(fd: number, offset: bigint): number {
  return ret(lseekFn(fd, offset, SEEK_SET));
}
