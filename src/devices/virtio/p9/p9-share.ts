// The host directory a virtio-9p device shares, and the only code that
// touches it. Confinement (bhyve gets it from Capsicum on the root
// descriptor; here it is done by hand, as QEMU's 9p "local" backend does):
//   - the share is one directory descriptor opened at start-up; every name
//     is resolved from it, one component at a time, with
//     openat(O_PATH | O_DIRECTORY | O_NOFOLLOW): a symbolic link or a
//     non-directory in the middle of a path fails (ELOOP / ENOTDIR), so no
//     link, planted by the guest or not, is ever followed on the host;
//   - the last component is handed to an *at() call that does not follow
//     links either (AT_SYMLINK_NOFOLLOW, O_NOFOLLOW, or an open of the file
//     itself for chmod, which has no such flag);
//   - components are single names the server checked (no "/", no NUL, never
//     "." or ".."): ".." is taken off the fid's path by the server, so the
//     kernel never sees a name that could leave the share;
//   - a read-only share refuses every change (EROFS) before any call.
// Paths are lists of NUL-terminated components; [] is the share's root.
// Every method returns a value or -errno and never throws for what the
// guest asked.

import fs from 'node:fs';
import {
  AT_REMOVEDIR, AT_SYMLINK_NOFOLLOW, O_CLOEXEC, O_DIRECTORY, O_NOFOLLOW, O_NONBLOCK, O_PATH, O_RDONLY,
  O_WRONLY, S_IFDIR, S_IFLNK, S_IFMT, cName, closeFd, fchmod, fchmodat, fchownat, fstatat, fstatfs, linkat,
  mkdirat, mknodat, openat, readlinkat, renameat, symlinkat, unlinkat, utimensat, type Stat, type StatFs,
} from '../../../sys/fs-at.js';

export const EPERM = 1;
export const ENOENT = 2;
export const EIO = 5;
export const EBADF = 9;
export const EACCES = 13;
export const EBUSY = 16;
export const EEXIST = 17;
export const ENOTDIR = 20;
export const EISDIR = 21;
export const EINVAL = 22;
export const EMFILE = 24;
export const EROFS = 30;
export const ERANGE = 34;
export const ENOSYS = 38;
export const ELOOP = 40;
export const EPROTO = 71;
export const EMSGSIZE = 90;
export const EOPNOTSUPP = 95;
export const ENXIO = 6;

/** A component list: NUL-terminated names from the share's root. */
export type P9Path = readonly Uint8Array[];

const DOT = cName('.');

export class P9Share {
  readonly rootFd: number;

  /** Opens the directory; throws an Error with one clear line when it cannot
   * (bhyve: "failed to open '%s': %s"). */
  constructor(readonly hostPath: string, readonly readOnly: boolean) {
    try {
      this.rootFd = fs.openSync(hostPath, O_PATH | O_DIRECTORY | O_CLOEXEC);
    } catch (e) {
      throw new Error(`failed to open '${hostPath}': ${e instanceof Error && 'code' in e ? describe(e) : String(e)}`);
    }
  }

  close(): void {
    closeFd(this.rootFd);
  }

  /** An O_PATH descriptor of directory `dir` (the root descriptor itself
   * for []), or -errno. Give it back with release(). */
  dirFd(dir: P9Path): number {
    let fd = this.rootFd;
    for (const name of dir) {
      const next = openat(fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd !== this.rootFd) closeFd(fd);
      if (next < 0) return next;
      fd = next;
    }
    return fd;
  }

  release(fd: number): void {
    if (fd >= 0 && fd !== this.rootFd) closeFd(fd);
  }

  /** Runs `f` with the descriptor of `path`'s parent and its last name
   * ("." for the root). */
  private at<T>(path: P9Path, f: (dirfd: number, name: Uint8Array) => T | number): T | number {
    const d = this.dirFd(path.slice(0, -1));
    if (d < 0) return d;
    try {
      return f(d, path.length ? path[path.length - 1] : DOT);
    } finally {
      this.release(d);
    }
  }

  /** Runs `f` with the descriptor of directory `dir`. */
  private inDir<T>(dir: P9Path, f: (dirfd: number) => T | number): T | number {
    const d = this.dirFd(dir);
    if (d < 0) return d;
    try {
      return f(d);
    } finally {
      this.release(d);
    }
  }

  /** lstat of the file itself. */
  stat(path: P9Path): Stat | number {
    return this.at(path, (d, n) => fstatat(d, n, AT_SYMLINK_NOFOLLOW));
  }

  /** Opens the file itself (never through a link); the caller checks what
   * it opened. */
  open(path: P9Path, flags: number): number {
    return this.at(path, (d, n) => openat(d, n, flags | O_NOFOLLOW | O_CLOEXEC));
  }

  /** Creates and opens a regular file (O_EXCL: never an existing one). */
  create(dir: P9Path, name: Uint8Array, flags: number, mode: number): number {
    if (this.readOnly) return -EROFS;
    return this.inDir(dir, (d) => openat(d, name, flags | O_NOFOLLOW | O_CLOEXEC | 0o100 /* O_CREAT */ | 0o200 /* O_EXCL */, mode));
  }

  mkdir(dir: P9Path, name: Uint8Array, mode: number): number {
    if (this.readOnly) return -EROFS;
    return this.inDir(dir, (d) => mkdirat(d, name, mode));
  }

  mknod(dir: P9Path, name: Uint8Array, mode: number): number {
    if (this.readOnly) return -EROFS;
    return this.inDir(dir, (d) => mknodat(d, name, mode, 0n));
  }

  symlink(dir: P9Path, name: Uint8Array, target: Uint8Array): number {
    if (this.readOnly) return -EROFS;
    return this.inDir(dir, (d) => symlinkat(target, d, name));
  }

  /** A new name `name` in `dir` for the file at `file` (not following it
   * when it is a link). */
  link(file: P9Path, dir: P9Path, name: Uint8Array): number {
    if (this.readOnly) return -EROFS;
    return this.at(file, (fd, fname) => this.inDir(dir, (d) => linkat(fd, fname, d, name, 0)));
  }

  rename(oldDir: P9Path, oldName: Uint8Array, newDir: P9Path, newName: Uint8Array): number {
    if (this.readOnly) return -EROFS;
    return this.inDir(oldDir, (od) => this.inDir(newDir, (nd) => renameat(od, oldName, nd, newName)));
  }

  unlink(dir: P9Path, name: Uint8Array, removeDir: boolean): number {
    if (this.readOnly) return -EROFS;
    return this.inDir(dir, (d) => unlinkat(d, name, removeDir ? AT_REMOVEDIR : 0));
  }

  /** The target of a symbolic link, or -errno (EINVAL: not a link). */
  readlink(path: P9Path): Uint8Array | number {
    const buf = new Uint8Array(4096);
    return this.at(path, (d, n) => {
      const len = readlinkat(d, n, buf);
      return len < 0 ? len : buf.slice(0, len);
    });
  }

  /** chmod of the file itself: opened without following (Linux has no
   * fchmodat(AT_SYMLINK_NOFOLLOW)), a link refused as Linux refuses it. */
  chmod(path: P9Path, mode: number): number {
    if (this.readOnly) return -EROFS;
    return this.at(path, (d, n) => {
      for (const how of [O_RDONLY, O_WRONLY]) {
        const fd = openat(d, n, how | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0) {
          const r = fchmod(fd, mode);
          closeFd(fd);
          return r;
        }
        if (fd === -ELOOP) return -EOPNOTSUPP;
        if (fd !== -EACCES && fd !== -ENXIO && fd !== -EPERM) return fd;
      }
      // Unreadable and unwritable, or a socket: checked not to be a link,
      // and no one but this server changes the share under it.
      const st = fstatat(d, n, AT_SYMLINK_NOFOLLOW);
      if (typeof st === 'number') return st;
      if ((st.mode & S_IFMT) === S_IFLNK) return -EOPNOTSUPP;
      return fchmodat(d, n, mode, 0);
    });
  }

  chown(path: P9Path, uid: number, gid: number): number {
    if (this.readOnly) return -EROFS;
    return this.at(path, (d, n) => fchownat(d, n, uid, gid, AT_SYMLINK_NOFOLLOW));
  }

  utimes(path: P9Path, atime: [bigint, number], mtime: [bigint, number]): number {
    if (this.readOnly) return -EROFS;
    return this.at(path, (d, n) => utimensat(d, n, atime, mtime, AT_SYMLINK_NOFOLLOW));
  }

  truncate(path: P9Path, size: bigint): number {
    if (this.readOnly) return -EROFS;
    const st = this.stat(path);
    if (typeof st === 'number') return st;
    if ((st.mode & S_IFMT) === S_IFDIR) return -EISDIR;
    const fd = this.open(path, O_WRONLY | O_NONBLOCK);
    if (fd < 0) return fd;
    try {
      fs.ftruncateSync(fd, Number(size));
      return 0;
    } catch (e) {
      return -errnoOf(e);
    } finally {
      closeFd(fd);
    }
  }

  statfs(path: P9Path): StatFs | number {
    const fd = this.open(path, O_PATH);
    if (fd < 0) return fd;
    try {
      return fstatfs(fd);
    } finally {
      closeFd(fd);
    }
  }
}

/** errno of a Node fs exception (EIO when it has none). */
export function errnoOf(e: unknown): number {
  const n = typeof e === 'object' && e !== null && 'errno' in e ? Number((e as { errno: unknown }).errno) : NaN;
  return Number.isFinite(n) && n !== 0 ? Math.abs(n) : EIO;
}

function describe(e: Error): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'No such file or directory';
  if (code === 'ENOTDIR') return 'Not a directory';
  if (code === 'EACCES') return 'Permission denied';
  return code ?? e.message;
}
