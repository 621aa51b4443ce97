// Disk-image locking that QEMU honours too (QEMU's block/file-posix.c,
// raw_apply_lock_bytes / raw_check_lock_bytes).
//
// QEMU describes what an open image may do with open-file-description
// (OFD) byte-range locks: byte 100+i is read-locked while it holds
// permission bit i, byte 200+i while it does NOT share permission bit i
// with others. A new user first takes its own bytes, then tests (F_OFD_GETLK
// with a write lock) the bytes that conflict: for each permission it holds,
// "somebody does not share it" (200+i); for each permission it does not
// share, "somebody holds it" (100+i). We take the same bytes, so a QEMU and
// a bhyve (and two bhyves) cannot both write one image. Two starting at the
// same instant may both fail, never both succeed.
//
// OFD locks belong to the open file description, not the process, so two
// opens inside one process exclude each other as well, and closing an
// unrelated fd of the same file keeps them (unlike POSIX fcntl locks).

import { F_OFD_GETLK, F_OFD_SETLK, F_RDLCK, F_UNLCK, F_WRLCK, ofdLock } from '../../sys/file.js';

/** QEMU's RAW_LOCK_PERM_BASE and RAW_LOCK_SHARED_BASE. */
export const RAW_LOCK_PERM_BASE = 100;
export const RAW_LOCK_SHARED_BASE = 200;

/** QEMU's BLK_PERM_* bits. */
export const BLK_PERM_CONSISTENT_READ = 0x1;
export const BLK_PERM_WRITE = 0x2;
export const BLK_PERM_WRITE_UNCHANGED = 0x4;
export const BLK_PERM_RESIZE = 0x8;
const PERM_BITS = 4;

function setLock(fd: number, type: number, byte: number): number {
  return ofdLock(fd, F_OFD_SETLK, type, byte);
}

/** True when another open file description holds a lock on `byte` that a
 * write lock would conflict with. Negative errno when the test failed. */
function lockedByOther(fd: number, byte: number): boolean | number {
  const r = ofdLock(fd, F_OFD_GETLK, F_WRLCK, byte);
  return r < 0 ? r : r !== F_UNLCK;
}

/** The permissions a bhyve disk asks for: read (and write when read-write),
 * sharing neither writes nor resizes, as a QEMU disk does by default. */
export function bhyvePermissions(readOnly: boolean): { perm: number; unshared: number } {
  return {
    perm: BLK_PERM_CONSISTENT_READ | (readOnly ? 0 : BLK_PERM_WRITE),
    unshared: BLK_PERM_WRITE | BLK_PERM_RESIZE,
  };
}

export type LockResult = { ok: true } | { ok: false; conflict: 'write' | 'read' | 'resize' | 'write-unchanged'; errno?: number };

const PERM_NAMES = ['read', 'write', 'write-unchanged', 'resize'] as const;

/** Takes QEMU's lock bytes for `perm` / `unshared` on fd and checks nobody
 * else's conflict; on conflict the bytes taken are released again. */
export function lockImage(fd: number, readOnly: boolean): LockResult {
  const { perm, unshared } = bhyvePermissions(readOnly);
  const taken: number[] = [];
  const fail = (bit: number, errno?: number): LockResult => {
    for (const byte of taken) setLock(fd, F_UNLCK, byte);
    return errno === undefined ? { ok: false, conflict: PERM_NAMES[bit] } : { ok: false, conflict: PERM_NAMES[bit], errno };
  };
  for (let i = 0; i < PERM_BITS; i++) {
    for (const [mask, base] of [[perm, RAW_LOCK_PERM_BASE], [unshared, RAW_LOCK_SHARED_BASE]] as const) {
      if (!(mask & (1 << i))) continue;
      const r = setLock(fd, F_RDLCK, base + i);
      // A write lock held by someone else on our byte: that is a conflict too.
      if (r < 0) return fail(i, r === -11 || r === -13 ? undefined : -r);
      taken.push(base + i);
    }
  }
  for (let i = 0; i < PERM_BITS; i++) {
    const bit = 1 << i;
    const checks: number[] = [];
    if (perm & bit) checks.push(RAW_LOCK_SHARED_BASE + i);
    if (unshared & bit) checks.push(RAW_LOCK_PERM_BASE + i);
    for (const byte of checks) {
      const r = lockedByOther(fd, byte);
      if (r === true) return fail(i);
      if (typeof r === 'number') return fail(i, -r);
    }
  }
  return { ok: true };
}

/** True when some other open of the image holds QEMU's "write" permission
 * byte (a running QEMU or bhyve writing it); takes no lock itself. */
export function imageHasWriter(fd: number): boolean {
  return lockedByOther(fd, RAW_LOCK_PERM_BASE + 1) === true;
}
