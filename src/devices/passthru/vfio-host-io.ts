// The host calls the VFIO backend makes, behind one interface: open a
// device node, ioctl, pread/pwrite at a region's offset, mmap a region,
// close. The real implementation opens every path under the host root
// (normally "/": the same root host-device.ts checks sysfs under) and makes
// the calls through libc; unit tests hand the backend a responder that
// plays the kernel instead (test/unit/passthru-vfio.test.ts), since no
// machine here has an IOMMU or a VFIO device.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ioctl as libcIoctl, ioctlValue, mmap as libcMmap, mmapAreas, PROT_READ, PROT_WRITE, SysError, type Mapping } from '../../sys/libc.js';

/** A host call that failed: which call, on which file, and errno. */
export class VfioCallError extends Error {
  constructor(readonly call: string, readonly file: string, readonly errno: number) {
    super(`${call} ${file}: errno ${errno}`);
  }
}

export interface VfioHostIo {
  /** Opens `file` (a host path such as /dev/vfio/5) read-write, close-on-exec; throws VfioCallError. */
  open(file: string): number;
  close(fd: number): void;
  /** An ioctl with a structure (in and out), an integer, or no argument; returns its result, throws VfioCallError. */
  ioctl(fd: number, request: number, arg: Uint8Array | number | null, what: string): number;
  /** pread(2)/pwrite(2): bytes done; throws VfioCallError. */
  pread(fd: number, buf: Uint8Array, offset: number): number;
  pwrite(fd: number, buf: Uint8Array, offset: number): number;
  /** Maps `length` bytes of `fd` from `offset` shared, read-write; with
   * `areas`, only those parts (relative to `offset`), the rest a hole. */
  mmap(fd: number, length: number, offset: number, what: string, areas?: ReadonlyArray<{ offset: number; size: number }>): Mapping;
}

const ERRNO = os.constants.errno as Record<string, number>;

function errnoOf(e: unknown): number {
  if (e instanceof SysError) return e.errno;
  const code = (e as NodeJS.ErrnoException).code;
  return (code && ERRNO[code]) || ERRNO.EIO;
}

/** The host's VFIO, under `root`. */
export function hostVfioIo(root = '/'): VfioHostIo {
  const names = new Map<number, string>();
  const nameOf = (fd: number): string => names.get(fd) ?? `fd ${fd}`;
  return {
    open(file) {
      try {
        // Node opens with O_CLOEXEC.
        const fd = fs.openSync(path.join(root, file), fs.constants.O_RDWR);
        names.set(fd, file);
        return fd;
      } catch (e) {
        throw new VfioCallError('open', file, errnoOf(e));
      }
    },
    close(fd) {
      names.delete(fd);
      try { fs.closeSync(fd); } catch { /* already closed */ }
    },
    ioctl(fd, request, arg, what) {
      try {
        return typeof arg === 'number' ? ioctlValue(fd, request, arg, what) : libcIoctl(fd, request, arg, what);
      } catch (e) {
        throw new VfioCallError(what, nameOf(fd), errnoOf(e));
      }
    },
    pread(fd, buf, offset) {
      try { return fs.readSync(fd, buf, 0, buf.length, offset); } catch (e) { throw new VfioCallError('pread', nameOf(fd), errnoOf(e)); }
    },
    pwrite(fd, buf, offset) {
      try { return fs.writeSync(fd, buf, 0, buf.length, offset); } catch (e) { throw new VfioCallError('pwrite', nameOf(fd), errnoOf(e)); }
    },
    mmap(fd, length, offset, what, areas) {
      try {
        return areas ? mmapAreas(length, fd, offset, areas, what) : libcMmap(length, PROT_READ | PROT_WRITE, fd, offset, what);
      } catch (e) {
        throw new VfioCallError('mmap', nameOf(fd), errnoOf(e));
      }
    },
  };
}
