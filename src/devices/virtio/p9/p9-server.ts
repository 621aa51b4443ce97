// A 9P2000.L file server on one shared host directory: bhyve's lib9p
// (contrib/lib9p: request.c's dispatch and fid rules, backend/fs.c's
// operations) in the dialect Linux's v9fs speaks. One request in, one
// reply out, synchronously: the virtio transport hands over each
// descriptor chain (the T-message in its device-readable part, room for
// the R-message in its device-writable part).
//
// What the guest sends is untrusted. Every field is read through a bounds
// checked reader (a short or overrunning message gets Rlerror(EPROTO)); fid
// numbers are looked up with lib9p's errno per message (ENOENT, EINVAL,
// ENOTDIR, EISDIR); counts are clamped to the negotiated msize and to the
// buffers the driver gave; names are single components (no "/", no NUL,
// not "." or ".."), checked before anything reaches the host. All host
// access goes through P9Share, which keeps it beneath the share.
//
// Data moves without copies: Tread's preadv fills the guest's reply
// buffers, Twrite's pwritev takes the guest's request buffers.
//
// As lib9p: xattrwalk and xattrcreate answer EOPNOTSUPP, lock always
// succeeds and getlock reports the range unlocked (advisory locks are the
// guest's own), fsync syncs the open file. Not as lib9p: block and
// character device nodes are refused (EPERM), to create and to open (a
// node made in the share would otherwise open a host device), FIFOs open
// non-blocking (a read never stalls the device thread), and only 9P2000.L
// is served (a Tversion for 9P2000 or 9P2000.u gets "unknown").

import fs from 'node:fs';
import type { Stat } from '../../../sys/fs-at.js';
import {
  O_ACCMODE, O_APPEND, O_CLOEXEC, O_CREAT, O_DIRECT, O_DIRECTORY, O_DSYNC, O_EXCL, O_FASYNC,
  O_LARGEFILE, O_NOATIME, O_NOCTTY, O_NOFOLLOW, O_NONBLOCK, O_RDONLY, O_SYNC, O_TRUNC, S_IFBLK,
  S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFSOCK, UTIME_NOW, UTIME_OMIT, cName, closeFd, fchmod,
  fchownat, fstatat, getdents64, lseekSet,
} from '../../../sys/fs-at.js';
import {
  GETATTR_BASIC, LOCK_SUCCESS, LOCK_TYPE_UNLCK, P9_AT_REMOVEDIR, P9_FSTYPE, P9_HEADER_SIZE, P9_MAXWELEM,
  P9_NOFID, P9_NONUNAME, P9ProtocolError, P9Reader, P9Writer, QT_DIR, QT_FILE, QT_SYMLINK, R_LERROR, SETATTR,
  T, type Qid,
} from './p9-wire.js';
import {
  EBUSY, EINVAL, EISDIR, EMFILE, EMSGSIZE, ENOENT, ENOSYS, ENOTDIR, EOPNOTSUPP, EPERM, EPROTO, EROFS, errnoOf,
  type P9Path, type P9Share,
} from './p9-share.js';

/** The part of a virtio descriptor chain the server uses. */
export interface P9Buffers {
  readonly readableLength: number;
  readonly writableLength: number;
  copyFromReadable(offset: number, dst: Uint8Array): number;
  copyToWritable(offset: number, src: Uint8Array): number;
  readableViews(offset: number, length: number, out?: Uint8Array[]): Uint8Array[];
  writableViews(offset: number, length: number, out?: Uint8Array[]): Uint8Array[];
}

/** bhyve: lc_msize = L9P_MAX_IOV * PAGE_SIZE. */
export const P9_MAX_MSIZE = 128 * 4096;
/** The smallest msize a Tversion may ask for (QEMU's P9_MIN_MSIZE). */
export const P9_MIN_MSIZE = 4096;
/** Fids a guest may hold at once, and of them open files (each holds a
 * host descriptor): a guest must not run the VMM out of either. */
export const P9_MAX_FIDS = 65536;
export const P9_MAX_OPEN = 4096;
/** size[4] type[1] tag[2] count[4]: what precedes Rread/Rreaddir data. */
const IO_HDR = 11;
/** size type tag ecode */
const RLERROR_SIZE = 11;
/** Twrite's fixed part: size type tag fid offset count. */
const TWRITE_HDR = 23;
/** lib9p's iounit: msize less the largest I/O header. */
const IOUNIT_SLACK = 24;

/** What a handler returns when it wrote its reply into the chain itself. */
const DIRECT = -1;

const VERSION_L = Buffer.from('9P2000.L');
const VERSION_UNKNOWN = Buffer.from('unknown');

interface Fid {
  path: Uint8Array[];
  isDir: boolean;
  /** Host descriptor after Tlopen/Tlcreate, else -1. */
  fd: number;
  /** Opened a FIFO: reads and writes take no offset. */
  stream?: boolean;
  /** Attach's n_uname (new files are given to it), -1 when none. */
  uid: number;
}

export interface P9Stats {
  requests: number;
  errors: number;
  bytesRead: number;
  bytesWritten: number;
}

/** Thrown inside a handler: answer Rlerror(errno). */
class P9Error extends Error {
  constructor(readonly errno: number) { super(`errno ${errno}`); }
}

function fail(errno: number): never {
  throw new P9Error(errno);
}

/** -errno results of P9Share become P9Error. */
function check<T>(r: T | number): T {
  if (typeof r === 'number' && r < 0) fail(-r);
  return r as T;
}

function qidOf(st: Stat): Qid {
  const fmt = st.mode & S_IFMT;
  return { type: fmt === S_IFDIR ? QT_DIR : fmt === S_IFLNK ? QT_SYMLINK : QT_FILE, version: 0, path: st.ino };
}

/** A single name the server may hand to the host: not empty, no "/" or
 * NUL, not "." or "..". */
function validName(b: Uint8Array): boolean {
  if (b.length === 0 || b.includes(0x2f) || b.includes(0)) return false;
  if (b[0] === 0x2e && (b.length === 1 || (b.length === 2 && b[1] === 0x2e))) return false;
  return true;
}

function isDotDot(b: Uint8Array): boolean {
  return b.length === 2 && b[0] === 0x2e && b[1] === 0x2e;
}

/** lib9p's fs_oflags_dotl: the Linux open flags a server may honour; any
 * other bit is EINVAL. Returns host flags (without the access mode
 * checks, which the caller makes). */
function openFlags(l: number): number {
  if ((l & O_ACCMODE) === 3) fail(EINVAL);
  const pass = O_EXCL | O_TRUNC | O_DIRECTORY | O_APPEND | O_NONBLOCK;
  const noise = O_CREAT | O_CLOEXEC | O_DIRECT | O_DSYNC | O_FASYNC | O_LARGEFILE | O_NOATIME | O_NOCTTY | O_NOFOLLOW | O_SYNC;
  if ((l & ~(O_ACCMODE | pass | noise)) >>> 0 !== 0) fail(EINVAL);
  return (l & (O_ACCMODE | pass)) | O_NOCTTY;
}

function samePath(a: readonly Uint8Array[], b: readonly Uint8Array[], n: number): boolean {
  if (a.length < n || b.length < n) return false;
  for (let i = 0; i < n; i++) if (Buffer.compare(a[i], b[i]) !== 0) return false;
  return true;
}

export class P9Server {
  readonly stats: P9Stats = { requests: 0, errors: 0, bytesRead: 0, bytesWritten: 0 };
  private readonly fids = new Map<number, Fid>();
  private openCount = 0;
  private msize = P9_MAX_MSIZE;
  private versioned = false;
  private readonly req = Buffer.alloc(P9_MAX_MSIZE);
  private readonly reqView = new DataView(this.req.buffer, this.req.byteOffset, this.req.length);
  private readonly out: P9Writer;
  private readonly ioHdr = new Uint8Array(IO_HDR);
  private readonly ioHdrView = new DataView(this.ioHdr.buffer);
  private readonly iov: Uint8Array[] = [];
  private readonly dents = new Uint8Array(64 * 1024);
  private readonly dentsView = new DataView(this.dents.buffer);
  /** The chain being served (Tread/Twrite move data straight through it). */
  private chain: P9Buffers | undefined;

  constructor(readonly share: P9Share, readonly maxMsize = P9_MAX_MSIZE) {
    const res = Buffer.alloc(maxMsize);
    this.out = new P9Writer(res, new DataView(res.buffer, res.byteOffset, res.length));
  }

  /** Fids in use (for tests and counters). */
  get fidCount(): number { return this.fids.size; }

  /** Serves one request; returns the bytes written into the chain's
   * device-writable part (0 when no reply can be made: the request has no
   * readable header or no room for even an error). */
  handle(chain: P9Buffers): number {
    this.stats.requests++;
    // Without a header or room for even Rlerror nothing can be answered:
    // the request is dropped unexecuted (the chain comes back empty).
    if (chain.writableLength < RLERROR_SIZE
      || chain.copyFromReadable(0, this.req.subarray(0, P9_HEADER_SIZE)) < P9_HEADER_SIZE) {
      this.stats.errors++;
      return 0;
    }
    const size = this.reqView.getUint32(0, true);
    const type = this.req[4];
    const tag = this.reqView.getUint16(5, true);
    let len: number;
    try {
      if (size < P9_HEADER_SIZE || size > chain.readableLength || size > this.msize) fail(EPROTO);
      // Twrite's payload stays in guest memory; other messages are copied.
      const want = type === T.WRITE ? Math.min(size, TWRITE_HDR) : size;
      chain.copyFromReadable(0, this.req.subarray(0, want));
      const r = new P9Reader(this.req, this.reqView, P9_HEADER_SIZE, want);
      this.chain = chain;
      len = this.dispatch(type, tag, r, size);
    } catch (e) {
      if (!(e instanceof P9Error) && !(e instanceof P9ProtocolError)) throw e;
      len = this.error(tag, e instanceof P9Error ? e.errno : EPROTO);
    } finally {
      this.chain = undefined;
    }
    if (len === DIRECT) return this.directLen;
    if (len > chain.writableLength) {
      // The driver left too little room for the reply.
      len = this.error(tag, EMSGSIZE);
    }
    chain.copyToWritable(0, this.out.buf.subarray(0, len));
    return len;
  }

  /** The length of a reply written straight into the chain (Rread). */
  private directLen = 0;

  private error(tag: number, errno: number): number {
    this.stats.errors++;
    return this.out.begin(R_LERROR, tag).u32(errno).finish();
  }

  private reply(type: number, tag: number): P9Writer {
    return this.out.begin(type + 1, tag);
  }

  private dispatch(type: number, tag: number, r: P9Reader, size: number): number {
    if (type === T.VERSION) return this.version(tag, r);
    // lib9p answers nothing but Tversion before a version is agreed.
    if (!this.versioned) fail(ENOSYS);
    switch (type) {
      case T.ATTACH: return this.attach(tag, r);
      case T.WALK: return this.walk(tag, r);
      case T.CLUNK: return this.clunk(tag, r);
      case T.REMOVE: return this.remove(tag, r);
      case T.FLUSH: r.u16(); return this.reply(type, tag).finish();
      case T.GETATTR: return this.getattr(tag, r);
      case T.SETATTR: return this.setattr(tag, r);
      case T.LOPEN: return this.lopen(tag, r);
      case T.LCREATE: return this.lcreate(tag, r);
      case T.READ: return this.read(tag, r);
      case T.WRITE: return this.write(tag, r, size);
      case T.READDIR: return this.readdir(tag, r);
      case T.MKDIR: return this.mkdir(tag, r);
      case T.SYMLINK: return this.symlink(tag, r);
      case T.MKNOD: return this.mknod(tag, r);
      case T.READLINK: return this.readlink(tag, r);
      case T.LINK: return this.link(tag, r);
      case T.RENAME: return this.rename(tag, r);
      case T.RENAMEAT: return this.renameat(tag, r);
      case T.UNLINKAT: return this.unlinkat(tag, r);
      case T.STATFS: return this.statfs(tag, r);
      case T.FSYNC: return this.fsync(tag, r);
      case T.LOCK: return this.lock(tag, r);
      case T.GETLOCK: return this.getlock(tag, r);
      case T.XATTRWALK: return this.xattrwalk(r);
      case T.XATTRCREATE: return this.xattrcreate(r);
      default:
        fail(ENOSYS);
    }
  }

  /** Extended attributes are not offered (bhyve's lib9p: EOPNOTSUPP),
   * after lib9p's fid checks. */
  private xattrwalk(r: P9Reader): never {
    this.fid(r.u32(), ENOENT);
    const newfid = r.u32();
    r.str();
    if (this.fids.has(newfid)) fail(EINVAL);
    fail(EOPNOTSUPP);
  }

  private xattrcreate(r: P9Reader): never {
    const f = this.fid(r.u32(), EINVAL);
    if (f.fd >= 0) fail(EINVAL);
    fail(EOPNOTSUPP);
  }

  /** lib9p's fid_lookup: the fid, or `err` when the guest has none. */
  private fid(n: number, err: number): Fid {
    const f = this.fids.get(n);
    if (!f) fail(err);
    return f;
  }

  /** A directory fid not opened for I/O (lib9p: F_REQUIRE_DIR | F_FORBID_OPEN). */
  private dirFid(n: number): Fid {
    const f = this.fid(n, ENOENT);
    if (!f.isDir) fail(ENOTDIR);
    if (f.fd >= 0) fail(EINVAL);
    return f;
  }

  private newFid(n: number, f: Fid): void {
    if (n === P9_NOFID || this.fids.has(n)) fail(EINVAL);
    if (this.fids.size >= P9_MAX_FIDS) fail(EMFILE);
    this.fids.set(n, f);
  }

  private closeFid(f: Fid): void {
    if (f.fd >= 0) {
      closeFd(f.fd);
      f.fd = -1;
      this.openCount--;
    }
  }

  /** Drops every fid (Tversion, device reset). */
  reset(): void {
    for (const f of this.fids.values()) this.closeFid(f);
    this.fids.clear();
    this.versioned = false;
    this.msize = this.maxMsize;
  }

  private version(tag: number, r: P9Reader): number {
    const msize = r.u32();
    const v = r.str();
    this.reset();
    if (msize < P9_MIN_MSIZE) fail(EMSGSIZE);
    const ok = Buffer.compare(Buffer.from(v), VERSION_L) === 0;
    this.msize = Math.min(msize, this.maxMsize);
    this.versioned = ok;
    return this.reply(T.VERSION, tag).u32(this.msize).str(ok ? VERSION_L : VERSION_UNKNOWN).finish();
  }

  private attach(tag: number, r: P9Reader): number {
    const fid = r.u32();
    const afid = r.u32();
    r.str(); // uname
    r.str(); // aname: one share per device
    const nUname = r.u32();
    // No Tauth, so no auth fid can exist (lib9p: EINVAL).
    if (afid !== P9_NOFID) fail(EINVAL);
    const st = check(fstatat(this.share.rootFd, null, 0));
    this.newFid(fid, { path: [], isDir: true, fd: -1, uid: nUname === P9_NONUNAME ? -1 : nUname });
    return this.reply(T.ATTACH, tag).qid(qidOf(st)).finish();
  }

  private walk(tag: number, r: P9Reader): number {
    const f = this.fid(r.u32(), ENOENT);
    const newfid = r.u32();
    const n = r.u16();
    if (n > P9_MAXWELEM) throw new P9ProtocolError(`Twalk of ${n} names`);
    const names: Uint8Array[] = [];
    for (let i = 0; i < n; i++) names.push(r.str());
    const same = this.fids.get(newfid) === f;
    if (!same && (newfid === P9_NOFID || this.fids.has(newfid))) fail(EINVAL);
    const path = f.path.slice();
    let isDir = f.isDir;
    const qids: Qid[] = [];
    let err = 0;
    for (const name of names) {
      if (!isDir) { err = ENOTDIR; break; }
      if (isDotDot(name)) {
        // ".." never reaches the host: the path loses its last name, and at
        // the root stays the root.
        path.pop();
      } else if (!validName(name)) {
        err = EINVAL;
        break;
      } else {
        path.push(cName(name));
      }
      const st = this.share.stat(path);
      if (typeof st === 'number') { err = -st; break; }
      const q = qidOf(st);
      qids.push(q);
      isDir = q.type === QT_DIR;
    }
    if (qids.length === 0 && n > 0) fail(err);
    if (qids.length === n) {
      if (same) {
        this.closeFid(f);
        f.path = path;
        f.isDir = isDir;
      } else {
        this.newFid(newfid, { path, isDir, fd: -1, uid: f.uid });
      }
    }
    const w = this.reply(T.WALK, tag).u16(qids.length);
    for (const q of qids) w.qid(q);
    return w.finish();
  }

  private clunk(tag: number, r: P9Reader): number {
    const n = r.u32();
    const f = this.fid(n, ENOENT);
    this.closeFid(f);
    this.fids.delete(n);
    return this.reply(T.CLUNK, tag).finish();
  }

  private remove(tag: number, r: P9Reader): number {
    const n = r.u32();
    const f = this.fid(n, EINVAL);
    // The fid is gone whatever happens (lib9p, the protocol).
    this.closeFid(f);
    this.fids.delete(n);
    if (this.share.readOnly) fail(EROFS);
    if (f.path.length === 0) fail(EBUSY);
    const st = check(this.share.stat(f.path));
    check(this.share.unlink(f.path.slice(0, -1), f.path[f.path.length - 1], (st.mode & S_IFMT) === S_IFDIR));
    return this.reply(T.REMOVE, tag).finish();
  }

  private getattr(tag: number, r: P9Reader): number {
    const f = this.fid(r.u32(), ENOENT);
    const mask = r.u64();
    const st = check(this.share.stat(f.path));
    return this.reply(T.GETATTR, tag)
      .u64(mask & BigInt(GETATTR_BASIC))
      .qid(qidOf(st))
      .u32(st.mode).u32(st.uid).u32(st.gid)
      .u64(st.nlink).u64(st.rdev).u64(st.size).u64(st.blksize).u64(st.blocks)
      .u64(st.atimeSec).u64(st.atimeNsec).u64(st.mtimeSec).u64(st.mtimeNsec).u64(st.ctimeSec).u64(st.ctimeNsec)
      .u64(0).u64(0) // btime: not in Linux's struct stat
      .u64(0).u64(0) // gen, data_version
      .finish();
  }

  private setattr(tag: number, r: P9Reader): number {
    const f = this.fid(r.u32(), ENOENT);
    const valid = r.u32();
    const mode = r.u32();
    const uid = r.u32();
    const gid = r.u32();
    const size = r.u64();
    const atime: [bigint, number] = [r.u64(), Number(r.u64() & 0x3fffffffn)];
    const mtime: [bigint, number] = [r.u64(), Number(r.u64() & 0x3fffffffn)];
    if (this.share.readOnly) fail(EROFS);
    const st = check(this.share.stat(f.path));
    if ((valid & SETATTR.SIZE) && (st.mode & S_IFMT) === S_IFDIR) fail(EISDIR);
    if (valid & SETATTR.MODE) check(this.share.chmod(f.path, mode & 0o777));
    if (valid & (SETATTR.UID | SETATTR.GID)) {
      check(this.share.chown(f.path, valid & SETATTR.UID ? uid : -1, valid & SETATTR.GID ? gid : -1));
    }
    if (valid & SETATTR.SIZE) {
      if (size > BigInt(Number.MAX_SAFE_INTEGER)) fail(EINVAL);
      check(this.share.truncate(f.path, size));
    }
    if (valid & (SETATTR.ATIME | SETATTR.MTIME)) {
      const a: [bigint, number] = !(valid & SETATTR.ATIME) ? [0n, UTIME_OMIT] : valid & SETATTR.ATIME_SET ? atime : [0n, UTIME_NOW];
      const m: [bigint, number] = !(valid & SETATTR.MTIME) ? [0n, UTIME_OMIT] : valid & SETATTR.MTIME_SET ? mtime : [0n, UTIME_NOW];
      if (a[1] > 999_999_999 && a[1] !== UTIME_NOW && a[1] !== UTIME_OMIT) fail(EINVAL);
      if (m[1] > 999_999_999 && m[1] !== UTIME_NOW && m[1] !== UTIME_OMIT) fail(EINVAL);
      check(this.share.utimes(f.path, a, m));
    }
    return this.reply(T.SETATTR, tag).finish();
  }

  private takeOpenSlot(): void {
    if (this.openCount >= P9_MAX_OPEN) fail(EMFILE);
  }

  private lopen(tag: number, r: P9Reader): number {
    const f = this.fid(r.u32(), ENOENT);
    const lflags = r.u32();
    if (f.fd >= 0) fail(EINVAL);
    const flags = openFlags(lflags);
    const acc = flags & O_ACCMODE;
    if (this.share.readOnly && (acc !== O_RDONLY || (flags & O_TRUNC))) fail(EROFS);
    this.takeOpenSlot();
    const first = check(this.share.stat(f.path));
    const fmt = first.mode & S_IFMT;
    if (fmt === S_IFLNK || fmt === S_IFBLK || fmt === S_IFCHR) fail(EPERM);
    let fd: number;
    if (fmt === S_IFDIR) {
      if (acc !== O_RDONLY || (flags & O_TRUNC)) fail(EPERM);
      fd = check(this.share.open(f.path, O_RDONLY | O_DIRECTORY));
    } else {
      // Non-blocking: a FIFO without a peer must not stall the device.
      fd = check(this.share.open(f.path, (flags & ~O_DIRECTORY) | O_NONBLOCK));
    }
    // What was opened is what was looked at (lib9p's re-check).
    const st = fstatat(fd, null, 0);
    if (typeof st === 'number' || st.ino !== first.ino || st.dev !== first.dev) {
      closeFd(fd);
      fail(EPERM);
    }
    f.fd = fd;
    f.isDir = fmt === S_IFDIR;
    f.stream = fmt === S_IFIFO || fmt === S_IFSOCK;
    this.openCount++;
    return this.reply(T.LOPEN, tag).qid(qidOf(st)).u32(this.msize - IOUNIT_SLACK).finish();
  }

  /** New files belong to the attaching user (and the group the guest
   * names) where the host lets us; a VMM without that right leaves them
   * its own (QEMU's security_model=none). */
  private giveAway(dirfd: number, name: Uint8Array | null, uid: number, gid: number): void {
    fchownat(dirfd, name, uid, gid, 0x100 /* AT_SYMLINK_NOFOLLOW */);
  }

  private created(dir: P9Path, name: Uint8Array): Stat {
    return check(this.share.stat([...dir, cName(name)]));
  }

  private lcreate(tag: number, r: P9Reader): number {
    const f = this.dirFid(r.u32());
    const name = r.str();
    const lflags = r.u32();
    const mode = r.u32();
    const gid = r.u32();
    if (!validName(name)) fail(EINVAL);
    const flags = openFlags(lflags) & ~(O_EXCL | O_DIRECTORY);
    if (this.share.readOnly) fail(EROFS);
    this.takeOpenSlot();
    const fd = check(this.share.create(f.path, cName(name), flags | O_NONBLOCK, mode & 0o777));
    fchmod(fd, mode & 0o777); // not the VMM's umask
    this.giveAway(fd, null, f.uid, gid);
    const st = fstatat(fd, null, 0);
    if (typeof st === 'number') { closeFd(fd); fail(-st); }
    f.path = [...f.path, cName(name)];
    f.isDir = false;
    f.fd = fd;
    this.openCount++;
    return this.reply(T.LCREATE, tag).qid(qidOf(st)).u32(this.msize - IOUNIT_SLACK).finish();
  }

  private mkdir(tag: number, r: P9Reader): number {
    const f = this.dirFid(r.u32());
    const name = r.str();
    const mode = r.u32();
    const gid = r.u32();
    if (!validName(name)) fail(EINVAL);
    const cn = cName(name);
    check(this.share.mkdir(f.path, cn, mode & 0o1777));
    const path = [...f.path, cn];
    this.share.chmod(path, mode & 0o1777);
    this.chownNew(path, f.uid, gid);
    return this.reply(T.MKDIR, tag).qid(qidOf(this.created(f.path, name))).finish();
  }

  private chownNew(path: P9Path, uid: number, gid: number): void {
    this.share.chown(path, uid, gid);
  }

  private symlink(tag: number, r: P9Reader): number {
    const f = this.dirFid(r.u32());
    const name = r.str();
    const target = r.str();
    const gid = r.u32();
    if (!validName(name) || target.length === 0 || target.includes(0)) fail(EINVAL);
    const cn = cName(name);
    // The target is stored, never followed by the server.
    check(this.share.symlink(f.path, cn, cName(target)));
    this.chownNew([...f.path, cn], f.uid, gid);
    return this.reply(T.SYMLINK, tag).qid(qidOf(this.created(f.path, name))).finish();
  }

  private mknod(tag: number, r: P9Reader): number {
    const f = this.dirFid(r.u32());
    const name = r.str();
    const mode = r.u32();
    r.u32(); // major
    r.u32(); // minor
    const gid = r.u32();
    if (!validName(name)) fail(EINVAL);
    const fmt = mode & S_IFMT;
    if (fmt === S_IFBLK || fmt === S_IFCHR) fail(EPERM);
    if (fmt !== S_IFIFO && fmt !== S_IFSOCK) fail(EINVAL);
    const cn = cName(name);
    check(this.share.mknod(f.path, cn, fmt | (mode & 0o777)));
    this.chownNew([...f.path, cn], f.uid, gid);
    return this.reply(T.MKNOD, tag).qid(qidOf(this.created(f.path, name))).finish();
  }

  private readlink(tag: number, r: P9Reader): number {
    const f = this.fid(r.u32(), ENOENT);
    if (f.isDir) fail(EISDIR);
    if (f.fd >= 0) fail(EINVAL);
    const target = check(this.share.readlink(f.path));
    return this.reply(T.READLINK, tag).str(target).finish();
  }

  private link(tag: number, r: P9Reader): number {
    const d = this.dirFid(r.u32());
    const f = this.fid(r.u32(), ENOENT);
    const name = r.str();
    if (f.isDir) fail(EISDIR);
    if (!validName(name)) fail(EINVAL);
    check(this.share.link(f.path, d.path, cName(name)));
    return this.reply(T.LINK, tag).finish();
  }

  /** After a rename, fids at or below the old path follow it. */
  private moved(from: P9Path, to: Uint8Array[]): void {
    for (const f of this.fids.values()) {
      if (samePath(f.path, from, from.length)) f.path = [...to, ...f.path.slice(from.length)];
    }
  }

  private rename(tag: number, r: P9Reader): number {
    const f = this.fid(r.u32(), ENOENT);
    const d = this.dirFid(r.u32());
    const name = r.str();
    if (!validName(name)) fail(EINVAL);
    if (this.share.readOnly) fail(EROFS);
    if (f.path.length === 0) fail(EBUSY);
    const from = f.path.slice();
    const to = [...d.path, cName(name)];
    check(this.share.rename(from.slice(0, -1), from[from.length - 1], d.path, to[to.length - 1]));
    this.moved(from, to);
    return this.reply(T.RENAME, tag).finish();
  }

  private renameat(tag: number, r: P9Reader): number {
    const od = this.dirFid(r.u32());
    const oldName = r.str();
    const nd = this.dirFid(r.u32());
    const newName = r.str();
    if (!validName(oldName) || !validName(newName)) fail(EINVAL);
    const from = [...od.path, cName(oldName)];
    const to = [...nd.path, cName(newName)];
    check(this.share.rename(od.path, from[from.length - 1], nd.path, to[to.length - 1]));
    this.moved(from, to);
    return this.reply(T.RENAMEAT, tag).finish();
  }

  private unlinkat(tag: number, r: P9Reader): number {
    const d = this.dirFid(r.u32());
    const name = r.str();
    const flags = r.u32();
    if (!validName(name)) fail(EINVAL);
    check(this.share.unlink(d.path, cName(name), (flags & P9_AT_REMOVEDIR) !== 0));
    return this.reply(T.UNLINKAT, tag).finish();
  }

  private statfs(tag: number, r: P9Reader): number {
    const f = this.fid(r.u32(), EINVAL);
    const s = check(this.share.statfs(f.path));
    const fsid = (BigInt(s.fsid[0] >>> 0) << 32n) | BigInt(s.fsid[1] >>> 0);
    return this.reply(T.STATFS, tag)
      .u32(P9_FSTYPE).u32(Number(s.bsize)).u64(s.blocks).u64(s.bfree).u64(s.bavail).u64(s.files).u64(s.ffree)
      .u64(fsid).u32(Number(s.namelen))
      .finish();
  }

  private openFid(n: number, err: number): Fid & { fd: number } {
    const f = this.fid(n, err);
    if (f.fd < 0) fail(EINVAL);
    return f;
  }

  private fsync(tag: number, r: P9Reader): number {
    const f = this.openFid(r.u32(), ENOENT);
    try {
      fs.fsyncSync(f.fd);
    } catch (e) {
      fail(errnoOf(e));
    }
    return this.reply(T.FSYNC, tag).finish();
  }

  private lock(tag: number, r: P9Reader): number {
    const f = this.fid(r.u32(), ENOENT);
    const type = r.u8();
    r.u32(); r.u64(); r.u64(); r.u32(); r.str(); // flags start length proc_id client_id
    if (f.fd < 0) fail(EINVAL);
    if (type > LOCK_TYPE_UNLCK) fail(EINVAL);
    return this.reply(T.LOCK, tag).u8(LOCK_SUCCESS).finish();
  }

  private getlock(tag: number, r: P9Reader): number {
    const f = this.fid(r.u32(), ENOENT);
    const type = r.u8();
    const start = r.u64();
    const length = r.u64();
    const procId = r.u32();
    r.str();
    if (f.fd < 0) fail(EINVAL);
    if (type > LOCK_TYPE_UNLCK) fail(EINVAL);
    return this.reply(T.GETLOCK, tag).u8(LOCK_TYPE_UNLCK).u64(start).u64(length).u32(procId).str(new Uint8Array(0)).finish();
  }

  /** Bytes of I/O a request may move: its count, within the msize and the
   * buffers the driver gave. */
  private ioCount(count: number, room: number): number {
    return Math.max(0, Math.min(count, this.msize - IO_HDR, room));
  }

  private read(tag: number, r: P9Reader): number {
    const f = this.openFid(r.u32(), EINVAL);
    const offset = r.u64();
    const count = r.u32();
    if (f.isDir) fail(EISDIR);
    if (offset > BigInt(Number.MAX_SAFE_INTEGER)) fail(EINVAL);
    const chain = this.chain!;
    if (chain.writableLength < IO_HDR) fail(EMSGSIZE);
    const n = this.ioCount(count, chain.writableLength - IO_HDR);
    let got = 0;
    if (n > 0) {
      try {
        got = fs.readvSync(f.fd, chain.writableViews(IO_HDR, n, this.iov), f.stream ? undefined : Number(offset));
      } catch (e) {
        fail(errnoOf(e));
      }
    }
    this.stats.bytesRead += got;
    const v = this.ioHdrView;
    v.setUint32(0, IO_HDR + got, true);
    this.ioHdr[4] = T.READ + 1;
    v.setUint16(5, tag, true);
    v.setUint32(7, got, true);
    chain.copyToWritable(0, this.ioHdr);
    this.directLen = IO_HDR + got;
    return DIRECT;
  }

  private write(tag: number, r: P9Reader, size: number): number {
    const f = this.fid(r.u32(), EINVAL);
    const offset = r.u64();
    const count = r.u32();
    if (f.isDir) fail(EISDIR);
    if (f.fd < 0) fail(EINVAL);
    if (count > size - TWRITE_HDR) throw new P9ProtocolError(`Twrite count ${count} past the message's ${size - TWRITE_HDR} bytes`);
    if (this.share.readOnly) fail(EROFS);
    if (offset > BigInt(Number.MAX_SAFE_INTEGER)) fail(EINVAL);
    let put = 0;
    if (count > 0) {
      try {
        put = fs.writevSync(f.fd, this.chain!.readableViews(TWRITE_HDR, count, this.iov), f.stream ? undefined : Number(offset));
      } catch (e) {
        fail(errnoOf(e));
      }
    }
    this.stats.bytesWritten += put;
    return this.reply(T.WRITE, tag).u32(put).finish();
  }

  private readdir(tag: number, r: P9Reader): number {
    const f = this.fid(r.u32(), ENOENT);
    const offset = r.u64();
    const count = r.u32();
    if (!f.isDir) fail(ENOTDIR);
    if (f.fd < 0) fail(EINVAL);
    const limit = this.ioCount(count, Math.min(this.chain!.writableLength, this.out.buf.length) - IO_HDR);
    check(lseekSet(f.fd, offset));
    const w = this.reply(T.READDIR, tag).u32(0);
    let used = 0;
    let full = false;
    while (!full) {
      const n = check(getdents64(f.fd, this.dents));
      if (n === 0) break;
      const v = this.dentsView;
      for (let at = 0; at < n;) {
        const reclen = v.getUint16(at + 16, true);
        const nameEnd = this.dents.indexOf(0, at + 19);
        const name = this.dents.subarray(at + 19, nameEnd < 0 || nameEnd > at + reclen ? at + reclen : nameEnd);
        const size = P9_QID_ENTRY + name.length;
        if (used + size > limit) { full = true; break; }
        const dtype = this.dents[at + 18];
        w.qid({ type: dtype === DT_DIR ? QT_DIR : dtype === DT_LNK ? QT_SYMLINK : QT_FILE, version: 0, path: v.getBigUint64(at, true) })
          .u64(v.getBigUint64(at + 8, true)).u8(dtype).str(name);
        used += size;
        at += reclen;
      }
    }
    w.view.setUint32(P9_HEADER_SIZE, used, true);
    return w.finish();
  }
}

const DT_DIR = 4;
const DT_LNK = 10;
/** qid[13] offset[8] type[1] name length[2]: a Rreaddir entry but its name. */
const P9_QID_ENTRY = 13 + 8 + 1 + 2;
