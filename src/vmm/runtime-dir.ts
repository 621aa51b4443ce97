// Where VM objects live, and the checks that keep other local users out of
// them. Without XDG_RUNTIME_DIR a non-root user's runtime root sits in the
// shared temporary directory, where anyone can create the path first (a
// mode 777 directory with a mode 666 memory file inside) and then read the
// guest's memory. So every directory and file of a VM object must be ours
// and closed to group and others; files are created with O_EXCL and opened
// with O_NOFOLLOW, never through a planted symbolic link.

import fs from 'node:fs';
import { UserError } from '../user-error.js';
import os from 'node:os';
import path from 'node:path';

/** A VM object that cannot be created, opened or trusted; one line. */
export class VmObjectError extends UserError { override readonly name: string = 'VmObjectError'; }

/** statfs f_type of the file systems that keep files in memory (tmpfs and
 * ramfs; linux/magic.h). */
const MEMORY_FS_TYPES = new Set([0x01021994, 0x858458f6]);

/** Where guest memory may live when the usual place is on a disk. */
const SHM_DIR = '/dev/shm';

/** Whether `dir` is on a file system kept in memory; false when it cannot
 * be told (missing, say). */
export function onMemoryFs(dir: string): boolean {
  try {
    return MEMORY_FS_TYPES.has(Number(fs.statfsSync(dir).type));
  } catch {
    return false;
  }
}

/** What runtimeDir() looks at, replaceable for tests. */
export interface RuntimeHost {
  euid: number | undefined;
  tmpdir: string;
  onMemoryFs(dir: string): boolean;
}

const thisHost = (): RuntimeHost => ({ euid: process.geteuid?.(), tmpdir: os.tmpdir(), onMemoryFs });

/** /run/bhyve for root, $XDG_RUNTIME_DIR/bhyve otherwise (else bhyve-UID in
 * the temporary directory); BHYVE_RUNDIR overrides. The directory holds
 * guest memory, so where /run (or the temporary directory) is on a disk
 * the same name under /dev/shm is used instead, when that is in memory:
 * on a disk the dirty pages of guest memory are written back to it (and
 * write-protected again, so the guest's next write faults through the
 * file system), and VFIO cannot pin them. */
export function runtimeDir(env: NodeJS.ProcessEnv = process.env, host: RuntimeHost = thisHost()): string {
  if (env.BHYVE_RUNDIR) return env.BHYVE_RUNDIR;
  // (the directory itself may be a mount of its own)
  const inMemory = (parent: string, name: string): string => {
    const usual = path.join(parent, name);
    if (host.onMemoryFs(usual) || host.onMemoryFs(parent) || !host.onMemoryFs(SHM_DIR)) return usual;
    return path.join(SHM_DIR, name);
  };
  if (host.euid === 0) return inMemory('/run', 'bhyve');
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, 'bhyve');
  return inMemory(host.tmpdir, `bhyve-${host.euid ?? 'user'}`);
}

const euid = (): number => process.geteuid?.() ?? 0;
const octal = (mode: number): string => `0${(mode & 0o7777).toString(8)}`;

/** Why `st` (from lstat or fstat) may not be trusted as ours, or undefined.
 * `closed` are the permission bits group and others must not have. */
export function untrustedWhy(st: fs.Stats, kind: 'directory' | 'file', closed: number): string | undefined {
  if (st.isSymbolicLink()) return 'is a symbolic link';
  if (kind === 'directory' && !st.isDirectory()) return 'is not a directory';
  if (kind === 'file' && !st.isFile()) return 'is not a regular file';
  if (st.uid !== euid()) return `is owned by uid ${st.uid}, not by this user (uid ${euid()})`;
  if ((st.mode & closed) !== 0) return `is open to other users (mode ${octal(st.mode)})`;
  return undefined;
}

/** Throws unless the directory at `p` (not followed if a link) is ours and
 * not writable by group or others. */
export function checkPrivateDir(p: string, what: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch (e) {
    throw new VmObjectError(`cannot use ${what} ${p}: ${(e as Error).message}`);
  }
  const why = untrustedWhy(st, 'directory', 0o022);
  if (why) throw new VmObjectError(`refusing ${what} ${p}: it ${why}; remove it or set BHYVE_RUNDIR to a directory of your own`);
}

/** Creates the runtime root (mode 0700) when missing, then checks it. */
export function ensureRuntimeRoot(root: string): void {
  try {
    fs.mkdirSync(path.dirname(root), { recursive: true, mode: 0o700 });
    fs.mkdirSync(root, { mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new VmObjectError(`cannot create runtime directory ${root}: ${(e as Error).message} (set BHYVE_RUNDIR to a writable directory)`);
    }
  }
  checkPrivateDir(root, 'runtime directory');
}

const { O_CREAT, O_EXCL, O_NOFOLLOW, O_RDWR, O_WRONLY, O_RDONLY } = fs.constants;

/** Opens a file of a VM object: created with O_EXCL when `create`, never
 * through a symbolic link, and refused unless it is ours and closed to
 * group and others (`closed` bits). */
export function openPrivateFile(p: string, what: string, how: 'create' | 'read' | 'write', closed = 0o066): number {
  const flags = how === 'create' ? O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW : (how === 'read' ? O_RDONLY : O_RDWR) | O_NOFOLLOW;
  let fd: number;
  try {
    fd = fs.openSync(p, flags, 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw new VmObjectError(`refusing ${what} ${p}: it is a symbolic link`);
    throw e;
  }
  let why: string | undefined;
  try {
    why = untrustedWhy(fs.fstatSync(fd), 'file', closed);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  if (why) {
    fs.closeSync(fd);
    throw new VmObjectError(`refusing ${what} ${p}: it ${why}`);
  }
  return fd;
}
