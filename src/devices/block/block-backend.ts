// The host side of a disk, shared by virtio-blk, AHCI and NVMe (bhyve's
// block_if.c): an open raw image or block device with bhyve's options,
// locked so that neither another bhyve nor a QEMU writes it at the same
// time (image-lock.ts), and read/write/flush/discard on it.
//
// Options (bhyve's blockif keys): path, ro, nocache (O_DIRECT), direct /
// sync (O_SYNC), sectorsize=logical[/physical], nodelete, ser= (serial=).
//
// I/O is synchronous (preadv/pwritev straight between the file and the
// guest-memory views, no copies) on whichever thread owns the request.

import { createHash } from 'node:crypto';
import { fsPath } from '../../config/raw-argv.js';
import * as fs from 'node:fs';
import type { ConfigTree } from '../../config/tree.js';
import { ConfigError } from '../../config/tree.js';
import {
  FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, fallocate, fileSize, isUnsupported,
} from '../../sys/file.js';
import { lockImage } from './image-lock.js';

// The blockif keys and the path check are record-side (blockif-keys.ts);
// kept importable from here.
export { BLOCKIF_KEYS, requireBlockPath } from './blockif-keys.js';

/** A disk-image problem the user can fix; one line, no stack trace. */
export class BlockDeviceError extends ConfigError { override readonly name: string = 'BlockDeviceError'; }

/** bhyve's blockif options, common to every disk controller. */
export interface BlockBackendOptions {
  path: string;
  readOnly?: boolean;
  /** O_DIRECT: bypass the host page cache. */
  nocache?: boolean;
  /** O_SYNC: every write is durable when it completes. */
  sync?: boolean;
  /** Logical sector size (default 512). */
  sectorSize?: number;
  /** Physical sector size. */
  physicalSectorSize?: number;
  /** Disables DISCARD / TRIM / deallocate. */
  nodelete?: boolean;
  /** Serial number for identify data; default derived from the path. */
  serial?: string;
}

/** Parses bhyve's `sectorsize=logical[/physical]`. */
export function parseSectorSize(value: string): { logical: number; physical: number } {
  const m = /^(\d+)(?:\/(\d+))?$/.exec(value);
  const logical = m ? Number(m[1]) : NaN;
  const physical = m ? (m[2] !== undefined ? Number(m[2]) : logical) : NaN;
  const pow2 = (n: number) => Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;
  if (!pow2(logical) || !pow2(physical) || logical < 512 || physical < logical || physical > (1 << 20)) {
    throw new BlockDeviceError(`invalid sector size "${value}": use sectorsize=logical[/physical], powers of two, `
      + 'logical >= 512 and physical >= logical');
  }
  return { logical, physical };
}

/** Reads the blockif options of a config node (pci.B.S.F, or an AHCI
 * port's pci.B.S.F.port.N); `what` names the disk in errors. */
export function blockBackendOptionsFromConfig(tree: ConfigTree, node: string, what: string): BlockBackendOptions {
  const path = tree.get(`${node}.path`);
  if (path === undefined || path === '') throw new BlockDeviceError(`${what} at ${node}: no disk image path given`);
  const opts: BlockBackendOptions = {
    path,
    readOnly: tree.getBool(`${node}.ro`, false),
    nocache: tree.getBool(`${node}.nocache`, false),
    sync: tree.getBool(`${node}.direct`, false) || tree.getBool(`${node}.sync`, false),
    nodelete: tree.getBool(`${node}.nodelete`, false),
  };
  const ss = tree.get(`${node}.sectorsize`);
  if (ss !== undefined) {
    const { logical, physical } = parseSectorSize(ss);
    opts.sectorSize = logical;
    opts.physicalSectorSize = physical;
  }
  const serial = tree.get(`${node}.serial`) ?? tree.get(`${node}.ser`);
  if (serial !== undefined) opts.serial = serial;
  return opts;
}

/** bhyve's identifier: "BHYVE-XXXX-XXXX-XXXX" from the first 6 bytes of
 * the MD5 of the path (virtio-blk's GET_ID, AHCI's and NVMe's serial). */
export function bhyveSerial(path: string): string {
  const d = createHash('md5').update(path).digest();
  const h = (i: number) => d[i].toString(16).toUpperCase().padStart(2, '0');
  return `BHYVE-${h(0)}${h(1)}-${h(2)}${h(3)}-${h(4)}${h(5)}`;
}

function errnoOf(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && 'code' in e ? String((e as { code: unknown }).code) : undefined;
}

/** An open, locked raw image or block device. */
export class BlockFile {
  readonly path: string;
  readonly readOnly: boolean;
  readonly size: number;
  private fd: number;
  /** With O_DIRECT, a page-cache fd for buffers that are not aligned. */
  private bufferedFd = -1;
  private readonly direct: boolean;
  private punchSupported = true;
  private zeroRangeSupported = true;
  private adopted = false;
  /** The options it was opened with (an I/O thread adopting the fd needs them). */
  readonly options: BlockBackendOptions;

  /** With `adopt`, uses an fd another BlockFile (of this process) opened
   * and locked (an iothread's view of the device's image); close() leaves
   * that fd open. */
  constructor(opts: BlockBackendOptions, adopt?: { fd: number; size: number }) {
    this.path = opts.path;
    this.options = opts;
    this.readOnly = opts.readOnly ?? false;
    this.direct = opts.nocache ?? false;
    if (adopt) {
      this.fd = adopt.fd;
      this.size = adopt.size;
      this.adopted = true;
      return;
    }
    const { constants: C } = fs;
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused
    // below); regular files and block devices ignore it.
    let flags = (this.readOnly ? C.O_RDONLY : C.O_RDWR) | C.O_NONBLOCK;
    if (opts.nocache) flags |= C.O_DIRECT;
    if (opts.sync) flags |= C.O_SYNC;
    try {
      this.fd = fs.openSync(fsPath(this.path), flags);
    } catch (e) {
      const code = errnoOf(e);
      if (code === 'ENOENT') throw new BlockDeviceError(`disk image ${this.path} does not exist`);
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
        throw new BlockDeviceError(`disk image ${this.path}: permission denied${this.readOnly ? '' : ' (add ",ro" for read-only access)'}`);
      }
      if (code === 'EISDIR') throw new BlockDeviceError(`disk image ${this.path} is a directory`);
      if (code === 'EINVAL' && opts.nocache) {
        throw new BlockDeviceError(`disk image ${this.path}: its file system does not support O_DIRECT (drop "nocache")`);
      }
      throw new BlockDeviceError(`disk image ${this.path}: ${e instanceof Error ? e.message : String(e)}`);
    }
    try {
      const st = fs.fstatSync(this.fd);
      if (!st.isFile() && !st.isBlockDevice()) throw new BlockDeviceError(`disk image ${this.path} is neither a file nor a block device`);
      const lock = lockImage(this.fd, this.readOnly);
      if (!lock.ok && lock.errno === undefined) {
        throw new BlockDeviceError(`disk image ${this.path} is in use by another VM (bhyve or QEMU)`
          + `${this.readOnly ? ' that opened it read-write' : ''}; stop that VM or attach the image with ",ro" in both`);
      }
      if (!lock.ok) throw new BlockDeviceError(`disk image ${this.path}: cannot lock it (errno ${lock.errno})`);
      const size = st.isFile() ? st.size : fileSize(this.fd);
      if (size < 0) throw new BlockDeviceError(`disk image ${this.path}: cannot determine its size (errno ${-size})`);
      this.size = size;
    } catch (e) {
      fs.closeSync(this.fd);
      throw e;
    }
  }

  /** Reads into the views at `position`; returns the bytes read (short at
   * end of file). Throws on an I/O error. */
  readv(views: Uint8Array[], position: number): number {
    try {
      return this.transfer(this.fd, views, position, false);
    } catch (e) {
      if (!(this.direct && errnoOf(e) === 'EINVAL')) throw e;
      return this.transfer(this.buffered(), views, position, false);
    }
  }

  /** Writes the views at `position`; returns the bytes written. */
  writev(views: Uint8Array[], position: number): number {
    try {
      return this.transfer(this.fd, views, position, true);
    } catch (e) {
      if (!(this.direct && errnoOf(e) === 'EINVAL')) throw e;
      const fd = this.buffered();
      const n = this.transfer(fd, views, position, true);
      fs.fdatasyncSync(fd); // keep nocache's "not in the page cache" promise for durability
      return n;
    }
  }

  private transfer(fd: number, views: Uint8Array[], position: number, write: boolean): number {
    let total = 0;
    for (let i = 0; i < views.length; i++) total += views[i].length;
    const first = write ? fs.writevSync(fd, views, position) : fs.readvSync(fd, views, position);
    if (first === total) return total;
    // Partial transfer: finish view by view, bounded by the byte count.
    let done = first;
    let skip = first;
    for (let i = 0; i < views.length; i++) {
      const v = views[i];
      if (skip >= v.length) { skip -= v.length; continue; }
      let off = skip;
      skip = 0;
      while (off < v.length) {
        const n = write
          ? fs.writeSync(fd, v, off, v.length - off, position + done)
          : fs.readSync(fd, v, off, v.length - off, position + done);
        if (n <= 0) return done; // end of file
        off += n;
        done += n;
      }
    }
    return done;
  }

  private buffered(): number {
    if (this.bufferedFd < 0) {
      this.bufferedFd = fs.openSync(fsPath(this.path), this.readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR);
    }
    return this.bufferedFd;
  }

  flush(): void {
    fs.fdatasyncSync(this.fd);
  }

  /** Deallocates [offset, offset+length) so it reads back as zeros.
   * Returns 0, or -errno (unsupported file systems give EOPNOTSUPP). */
  discard(offset: number, length: number): number {
    if (!this.punchSupported) return -95;
    const r = fallocate(this.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
    if (r < 0 && isUnsupported(r)) this.punchSupported = false;
    return r;
  }

  /** Makes [offset, offset+length) read back as zeros: punching a hole when
   * `unmap` allows it, else zeroing the range, else writing zeros. */
  writeZeroes(offset: number, length: number, unmap: boolean): void {
    if (unmap && this.discard(offset, length) === 0) return;
    if (this.zeroRangeSupported) {
      const r = fallocate(this.fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length);
      if (r === 0) return;
      if (!isUnsupported(r)) throw new Error(`fallocate: errno ${-r}`);
      this.zeroRangeSupported = false;
    }
    const fd = this.direct ? this.buffered() : this.fd;
    const chunk = Math.min(length, 1 << 20);
    const zeros = new Uint8Array(chunk);
    for (let done = 0; done < length;) {
      const n = fs.writeSync(fd, zeros, 0, Math.min(chunk, length - done), offset + done);
      if (n <= 0) throw new Error('short write');
      done += n;
    }
    if (this.direct) fs.fdatasyncSync(fd);
  }

  close(): void {
    if (this.bufferedFd >= 0) { fs.closeSync(this.bufferedFd); this.bufferedFd = -1; }
    if (this.fd >= 0 && !this.adopted) fs.closeSync(this.fd);
    this.fd = -1;
  }

  /** The image's fd, for an iothread to adopt. */
  get descriptor(): number { return this.fd; }
}

