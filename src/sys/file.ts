// File calls Node does not have: fallocate(2) (punch holes, zero ranges),
// flock(2) (advisory whole-file locks) and fcntl(2)'s open-file-description
// byte-range locks (disk images are locked with QEMU's lock bytes,
// devices/block/image-lock.ts). Synchronous calls (libc.ts); errors come back as negative errno
// values so the data path can map them to device status codes without
// exceptions.

import { errno, libcFunc } from './libc.js';

const fallocateFn = libcFunc('int fallocate(int fd, int mode, int64_t offset, int64_t len)');
const flockFn = libcFunc('int flock(int fd, int operation)');
const fcntlLockFn = libcFunc('int fcntl(int fd, int cmd, _Inout_ uint8_t *lock)');

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

export const EINTR = 4;
export const EAGAIN = 11;
export const EWOULDBLOCK = EAGAIN;
export const ENODEV = 19;
export const EINVAL = 22;
export const ENOSYS = 38;
export const EOPNOTSUPP = 95;

/** fallocate(2); 0 on success, -errno on failure (EINTR retried). */
export function fallocate(fd: number, mode: number, offset: number, length: number): number {
  for (let tries = 0; tries < 100; tries++) {
    const r = fallocateFn(fd, mode, BigInt(offset), BigInt(length)) as number;
    if (r === 0) return 0;
    const e = errno();
    if (e !== EINTR) return -e;
  }
  return -EINTR;
}

/** flock(2); 0 on success, -errno on failure (EINTR retried). */
export function flock(fd: number, operation: number): number {
  for (let tries = 0; tries < 100; tries++) {
    const r = flockFn(fd, operation) as number;
    if (r === 0) return 0;
    const e = errno();
    if (e !== EINTR) return -e;
  }
  return -EINTR;
}

/** True when the errno means "this file system / device cannot do that". */
export function isUnsupported(negErrno: number): boolean {
  return negErrno === -EOPNOTSUPP || negErrno === -ENOSYS || negErrno === -ENODEV || negErrno === -EINVAL;
}

const lseekFn = libcFunc('int64_t lseek(int fd, int64_t offset, int whence)');
export const SEEK_END = 2;

/** The size in bytes of a regular file or block device (lseek to the end;
 * fstat reports 0 for block devices). -errno on failure. */
export function fileSize(fd: number): number {
  const r = Number(lseekFn(fd, 0n, SEEK_END));
  return r < 0 ? -errno() : r;
}

export const F_OFD_GETLK = 36;
export const F_OFD_SETLK = 37;
export const F_RDLCK = 0;
export const F_WRLCK = 1;
export const F_UNLCK = 2;
/** sizeof(struct flock) on x86-64: l_type, l_whence, l_start, l_len, l_pid. */
const FLOCK_SIZE = 32;

/** An OFD lock request on one byte: F_OFD_SETLK takes or drops it,
 * F_OFD_GETLK asks whether another open file description holds a lock
 * that conflicts (returns the type found, F_UNLCK for none). Returns
 * -errno on failure. */
export function ofdLock(fd: number, cmd: number, type: number, byte: number): number {
  const b = new Uint8Array(FLOCK_SIZE);
  const v = new DataView(b.buffer);
  v.setInt16(0, type, true);
  v.setInt16(2, 0, true); // SEEK_SET
  v.setBigInt64(8, BigInt(byte), true);
  v.setBigInt64(16, 1n, true);
  const r = fcntlLockFn(fd, cmd, b) as number;
  if (r !== 0) return -errno();
  return cmd === F_OFD_GETLK ? v.getInt16(0, true) : 0;
}
