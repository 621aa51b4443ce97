// 9P2000.L on the wire: message numbers, the qid, and bounds-checked
// little-endian readers and writers. Every field a guest sends is read
// through P9Reader, which throws P9ProtocolError on a message that ends
// early or names a string longer than what is left: the server answers
// that with Rlerror(EPROTO) and never reads past the message.

export const P9_HEADER_SIZE = 7; // size[4] type[1] tag[2]
export const P9_NOTAG = 0xffff;
export const P9_NOFID = 0xffffffff;
export const P9_NONUNAME = 0xffffffff;
/** Most names in one Twalk (the protocol's MAXWELEM). */
export const P9_MAXWELEM = 16;
export const P9_QID_SIZE = 13;

export const T = {
  LERROR: 6, STATFS: 8, LOPEN: 12, LCREATE: 14, SYMLINK: 16, MKNOD: 18, RENAME: 20, READLINK: 22,
  GETATTR: 24, SETATTR: 26, XATTRWALK: 30, XATTRCREATE: 32, READDIR: 40, FSYNC: 50, LOCK: 52,
  GETLOCK: 54, LINK: 70, MKDIR: 72, RENAMEAT: 74, UNLINKAT: 76, VERSION: 100, AUTH: 102, ATTACH: 104,
  FLUSH: 108, WALK: 110, OPEN: 112, CREATE: 114, READ: 116, WRITE: 118, CLUNK: 120, REMOVE: 122,
  STAT: 124, WSTAT: 126,
} as const;
/** Rlerror: the only error reply of 9P2000.L. */
export const R_LERROR = 7;

// qid.type
export const QT_DIR = 0x80;
export const QT_SYMLINK = 0x02;
export const QT_FILE = 0x00;

// Tgetattr request_mask / Rgetattr valid
export const GETATTR_BASIC = 0x7ff;

// Tsetattr valid
export const SETATTR = {
  MODE: 0x1, UID: 0x2, GID: 0x4, SIZE: 0x8, ATIME: 0x10, MTIME: 0x20, CTIME: 0x40,
  ATIME_SET: 0x80, MTIME_SET: 0x100,
} as const;

// Tlock / Tgetlock
export const LOCK_TYPE_RDLCK = 0;
export const LOCK_TYPE_WRLCK = 1;
export const LOCK_TYPE_UNLCK = 2;
export const LOCK_SUCCESS = 0;

/** Tunlinkat flags: AT_REMOVEDIR. */
export const P9_AT_REMOVEDIR = 0x200;
/** Rstatfs type bhyve's lib9p reports (V9FS_MAGIC). */
export const P9_FSTYPE = 0x01021997;

export interface Qid { type: number; version: number; path: bigint }

/** The message broke the wire format (too short, a string overruns it). */
export class P9ProtocolError extends Error {}

export class P9Reader {
  private pos: number;
  constructor(private readonly buf: Uint8Array, private readonly view: DataView, start: number, private readonly end: number) {
    this.pos = start;
  }

  get offset(): number { return this.pos; }
  get remaining(): number { return this.end - this.pos; }

  private need(n: number): number {
    const at = this.pos;
    if (n > this.end - at) throw new P9ProtocolError(`message ends ${n - (this.end - at)} bytes early`);
    this.pos = at + n;
    return at;
  }

  u8(): number { return this.buf[this.need(1)]; }
  u16(): number { return this.view.getUint16(this.need(2), true); }
  u32(): number { return this.view.getUint32(this.need(4), true); }
  u64(): bigint { return this.view.getBigUint64(this.need(8), true); }
  /** A string's bytes (a view into the message; not NUL-checked). */
  str(): Uint8Array {
    const n = this.u16();
    const at = this.need(n);
    return this.buf.subarray(at, at + n);
  }
}

export class P9Writer {
  pos = 0;
  constructor(readonly buf: Uint8Array, readonly view: DataView) {}

  /** Starts a reply: header with size filled in by finish(). */
  begin(type: number, tag: number): this {
    this.pos = 0;
    this.u32(0).u8(type).u16(tag);
    return this;
  }

  /** Writes the total size into the header; returns it. */
  finish(): number {
    this.view.setUint32(0, this.pos, true);
    return this.pos;
  }

  private room(n: number): number {
    const at = this.pos;
    if (at + n > this.buf.length) throw new RangeError('9p reply larger than its buffer');
    this.pos = at + n;
    return at;
  }

  u8(v: number): this { this.buf[this.room(1)] = v; return this; }
  u16(v: number): this { this.view.setUint16(this.room(2), v, true); return this; }
  u32(v: number): this { this.view.setUint32(this.room(4), v >>> 0, true); return this; }
  u64(v: bigint | number): this { this.view.setBigUint64(this.room(8), BigInt.asUintN(64, BigInt(v)), true); return this; }
  str(b: Uint8Array): this {
    this.u16(b.length);
    this.buf.set(b, this.room(b.length));
    return this;
  }
  qid(q: Qid): this { return this.u8(q.type).u32(q.version).u64(q.path); }
}
