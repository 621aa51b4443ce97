// The run lock of a VM object: an open-file-description (OFD) write lock on
// the file `lock` in the VM's directory. The kernel holds it for as long as
// the owner keeps the file open and drops it when the owner dies, so no PID
// is trusted (a stale bhyve.pid naming some live process blocks nothing).
// bhyveload holds it while it writes guest memory, bhyve for its whole run,
// bhyvectl while it creates or destroys the VM; bhyvectl asks whether it is
// held (F_OFD_GETLK) without taking it.

import fs from 'node:fs';

import { koffi as loadKoffi } from '../sys/koffi.js';

const koffi = loadKoffi();

import { openPrivateFile, untrustedWhy, VmObjectError } from './runtime-dir.js';

const lib = koffi.load('libc.so.6');
const fcntlFn = lib.func('int fcntl(int fd, int cmd, ...)');

const F_OFD_GETLK = 36;
const F_OFD_SETLK = 37;

const F_WRLCK = 1;
const F_UNLCK = 2;
const EAGAIN = 11;
const EACCES = 13;
const EINTR = 4;

export const LOCK_FILE = 'lock';

/** struct flock (x86-64): l_type, l_whence (short), l_start, l_len (off_t),
 * l_pid (int); 32 bytes. The whole file: start 0, length 0. */
function flockStruct(type: number): Uint8Array {
  const b = new Uint8Array(32);
  new DataView(b.buffer).setInt16(0, type, true);
  return b;
}

function fcntlLock(fd: number, cmd: number, arg: Uint8Array): number {
  for (;;) {
    const r = fcntlFn(fd, cmd, 'uint8_t *', arg) as number;
    if (r >= 0) return 0;
    const e = koffi.errno();
    if (e !== EINTR) return -e;
  }
}

/** A held run lock; release() (or the process's death) drops it. */
export class VmLock {
  private constructor(private fd: number) {}

  /** Takes the lock of the VM directory `dir` without waiting: the lock, or
   * 'busy' when another open file holds it, or 'gone' when the directory
   * went away (destroyed meanwhile). */
  static tryAcquire(dir: string): VmLock | 'busy' | 'gone' {
    const p = `${dir}/${LOCK_FILE}`;
    for (let attempt = 0; attempt < 10; attempt++) {
      let fd: number;
      try {
        fd = fs.openSync(p, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return 'gone';
        if (code === 'ELOOP') throw new VmObjectError(`refusing lock file ${p}: it is a symbolic link`);
        throw new VmObjectError(`cannot open lock file ${p}: ${(e as Error).message}`);
      }
      const why = untrustedWhy(fs.fstatSync(fd), 'file', 0o022);
      if (why) { fs.closeSync(fd); throw new VmObjectError(`refusing lock file ${p}: it ${why}`); }
      const r = fcntlLock(fd, F_OFD_SETLK, flockStruct(F_WRLCK));
      if (r === -EAGAIN || r === -EACCES) { fs.closeSync(fd); return 'busy'; }
      if (r < 0) { fs.closeSync(fd); throw new VmObjectError(`cannot lock ${p}: errno ${-r}`); }
      // Locked; but the file may have been unlinked (VM destroyed) between
      // open and lock: only the file still at the path counts.
      const held = fs.fstatSync(fd);
      let now: fs.Stats | undefined;
      try { now = fs.lstatSync(p); } catch { now = undefined; }
      if (now && now.ino === held.ino && now.dev === held.dev) return new VmLock(fd);
      fs.closeSync(fd);
      if (!now && !fs.existsSync(dir)) return 'gone';
    }
    return 'busy';
  }

  /** Takes the lock of a fresh file `p` (its directory not yet published). */
  static createIn(dir: string): VmLock {
    const fd = openPrivateFile(`${dir}/${LOCK_FILE}`, 'lock file', 'create');
    const r = fcntlLock(fd, F_OFD_SETLK, flockStruct(F_WRLCK));
    if (r < 0) { fs.closeSync(fd); throw new VmObjectError(`cannot lock ${dir}/${LOCK_FILE}: errno ${-r}`); }
    return new VmLock(fd);
  }

  get held(): boolean { return this.fd >= 0; }

  release(): void {
    if (this.fd < 0) return;
    fs.closeSync(this.fd); // closing the last descriptor drops an OFD lock
    this.fd = -1;
  }
}

/** Whether some open file holds the run lock of VM directory `dir`. */
export function lockHeld(dir: string): boolean {
  let fd: number;
  try {
    fd = fs.openSync(`${dir}/${LOCK_FILE}`, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch {
    return false; // no lock file: nobody has ever locked this VM
  }
  try {
    const q = flockStruct(F_WRLCK);
    if (fcntlLock(fd, F_OFD_GETLK, q) < 0) return false;
    return new DataView(q.buffer).getInt16(0, true) !== F_UNLCK;
  } finally {
    fs.closeSync(fd);
  }
}


