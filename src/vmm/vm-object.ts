// The VM object: what /dev/vmm/NAME is on FreeBSD. A per-VM directory under
// the runtime directory holds the guest memory file (mappable by any process,
// so the VM can outlive one process) and a run lock (vm-lock.ts) so that
// only one bhyve runs a VM at a time. A new directory is built under a
// temporary name with its lock held and then renamed into place, so whoever
// creates a VM holds its lock from the first moment.

import fs from 'node:fs';
import path from 'node:path';

import { checkPrivateDir, ensureRuntimeRoot, openPrivateFile, runtimeDir, VmObjectError } from './runtime-dir.js';
import { checkMemoryFileSpace, formatSize } from './guest-limits.js';
import { LOCK_FILE, lockHeld, VmLock } from './vm-lock.js';

export { runtimeDir, VmObjectError };

/** FreeBSD's VM_MAX_NAMELEN (sys/dev/vmm/vmm_param.h): SPECNAMELEN (255)
 * less the device prefix, suffix and separator. */
export const VM_MAX_NAMELEN = 229;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.+-]*$/;

export function validateVmName(name: string): void {
  const bytes = Buffer.byteLength(name);
  if (bytes > VM_MAX_NAMELEN) {
    throw new VmObjectError(`VM name '${name.slice(0, 20)}...' is too long (${bytes} bytes; at most ${VM_MAX_NAMELEN})`);
  }
  if (!NAME_RE.test(name)) {
    throw new VmObjectError(`invalid VM name '${name}': use letters, digits and . _ + - (not starting with a punctuation mark)`);
  }
}

/** sun_path holds 108 bytes with the terminating NUL. */
const SUN_PATH_MAX = 107;
const PID_FILE = 'bhyve.pid';

export class VmObject {
  readonly dir: string;
  readonly memoryPath: string;
  readonly bootStatePath: string;
  private readonly pidPath: string;
  private readonly socketFile: string;
  private dirFd = -1;
  private wrotePid = false;
  private gone = false;

  private constructor(readonly name: string, root: string, readonly createdHere: boolean, private runLock?: VmLock) {
    this.dir = path.join(root, name);
    this.memoryPath = path.join(this.dir, 'memory');
    this.pidPath = path.join(this.dir, PID_FILE);
    this.socketFile = path.join(this.dir, 'control.sock');
    this.bootStatePath = path.join(this.dir, 'boot-state.json');
  }

  /** The control socket's path as bind/connect take it: the real path when
   * it fits sun_path, else the same file through /proc/self/fd and an open
   * descriptor of the VM directory, so the path can never be truncated. */
  get controlSocketPath(): string {
    if (Buffer.byteLength(this.socketFile) <= SUN_PATH_MAX) return this.socketFile;
    if (this.dirFd < 0) this.dirFd = fs.openSync(this.dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
    return `/proc/self/fd/${this.dirFd}/control.sock`;
  }

  /** The control socket's real path (for messages and existence checks). */
  get controlSocketFile(): string { return this.socketFile; }

  /** Creates the VM object NAME without memory (bhyvectl --create), holding
   * its lock; fails when it exists. */
  static create(name: string, root = runtimeDir()): VmObject {
    validateVmName(name);
    ensureRuntimeRoot(root);
    const obj = VmObject.createLocked(name, root);
    if (!obj) throw new VmObjectError(`VM '${name}' already exists`);
    return obj;
  }

  /** Opens an existing VM object without locking it; fails when there is none. */
  static open(name: string, root = runtimeDir()): VmObject {
    validateVmName(name);
    const dir = path.join(root, name);
    if (!fs.existsSync(dir)) throw new VmObjectError(`no VM named '${name}' (in ${root})`);
    checkPrivateDir(root, 'runtime directory');
    checkPrivateDir(dir, 'VM directory');
    return new VmObject(name, root, false);
  }

  /** Opens the VM object NAME, creating it when absent, and takes its run
   * lock; throws when another process holds the lock. `memsize` given:
   * sets up (or checks) guest memory under the lock. */
  static acquire(name: string, memsize: number | undefined, root = runtimeDir()): VmObject {
    validateVmName(name);
    ensureRuntimeRoot(root);
    for (let attempt = 0; attempt < 20; attempt++) {
      const dir = path.join(root, name);
      let obj: VmObject | undefined;
      if (fs.existsSync(dir)) {
        checkPrivateDir(dir, 'VM directory');
        const lock = VmLock.tryAcquire(dir);
        if (lock === 'busy') {
          const pid = new VmObject(name, root, false).holderPid();
          throw new VmObjectError(`VM '${name}' is already running${pid === undefined ? '' : ` (bhyve pid ${pid})`}`);
        }
        if (lock !== 'gone') obj = new VmObject(name, root, false, lock);
      } else {
        obj = VmObject.createLocked(name, root);
      }
      if (!obj) continue; // destroyed or created meanwhile: look again
      try {
        if (memsize !== undefined) obj.ensureMemory(memsize);
      } catch (e) {
        if (obj.createdHere) obj.destroy(); else obj.unlock();
        throw e;
      }
      return obj;
    }
    throw new VmObjectError(`cannot open VM '${name}': it keeps being created and destroyed`);
  }

  /** Builds the directory under a temporary name with its lock held, then
   * renames it into place; undefined when NAME exists already. */
  private static createLocked(name: string, root: string): VmObject | undefined {
    const tmp = path.join(root, `.new-${process.pid}-${uniqueSuffix()}`);
    try {
      fs.mkdirSync(tmp, { mode: 0o700 });
    } catch (e) {
      throw new VmObjectError(`cannot create VM '${name}' in ${root}: ${(e as Error).message}`);
    }
    const lock = VmLock.createIn(tmp);
    try {
      fs.renameSync(tmp, path.join(root, name));
    } catch (e) {
      lock.release();
      fs.rmSync(tmp, { recursive: true, force: true });
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' || code === 'ENOTEMPTY' || code === 'ENOTDIR' || code === 'EISDIR') return undefined;
      throw new VmObjectError(`cannot create VM '${name}' in ${root}: ${(e as Error).message}`);
    }
    return new VmObject(name, root, true, lock);
  }

  /** Whether this process holds the run lock. */
  get locked(): boolean { return this.runLock?.held ?? false; }

  /** Whether a process (this one or another) holds the run lock. */
  running(): boolean {
    return this.locked || lockHeld(this.dir);
  }

  /** The pid the running bhyve wrote, when it runs and said so. */
  holderPid(): number | undefined {
    try {
      const pid = Number.parseInt(fs.readFileSync(this.pidPath, 'utf8'), 10);
      return Number.isInteger(pid) && pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** The pid of the bhyve running this VM (0 when it wrote none), or
   * undefined when nobody holds the run lock. A pid file alone means nothing. */
  runningPid(): number | undefined {
    if (!lockHeld(this.dir)) return undefined;
    return this.holderPid() ?? 0;
  }

  /** Writes bhyve.pid (for people and messages; the lock is what counts). */
  writePid(): void {
    if (!this.locked) throw new VmObjectError(`VM '${this.name}' is not locked`);
    fs.rmSync(this.pidPath, { force: true });
    const fd = openPrivateFile(this.pidPath, 'pid file', 'create', 0o022);
    try { fs.writeSync(fd, `${process.pid}\n`); } finally { fs.closeSync(fd); }
    this.wrotePid = true;
  }

  /** Size of the guest memory file, or undefined when memory is not set up. */
  memorySize(): number | undefined {
    try { return fs.statSync(this.memoryPath).size; } catch { return undefined; }
  }

  /** Opens the guest memory file read-write after checking it is ours. */
  openMemory(): number {
    return openPrivateFile(this.memoryPath, 'guest memory file', 'write');
  }

  /** Sets up guest memory of `memsize` bytes, or checks that it matches. */
  ensureMemory(memsize: number): void {
    let fd: number;
    try {
      fd = this.openMemory();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      checkMemoryFileSpace(memsize, this.dir);
      fd = openPrivateFile(this.memoryPath, 'guest memory file', 'create');
      try {
        fs.ftruncateSync(fd, memsize);
      } catch (err) {
        fs.closeSync(fd);
        fs.rmSync(this.memoryPath, { force: true });
        // EFBIG: more than the file system's largest file.
        throw new VmObjectError(`cannot set up ${formatSize(memsize)} of guest memory in ${this.memoryPath}: ${(err as Error).message.replace(/^[A-Z]+: /, '').replace(/, ftruncate$/, '')}`);
      }
      fs.closeSync(fd);
      return;
    }
    const size = fs.fstatSync(fd).size;
    fs.closeSync(fd);
    if (size !== memsize) {
      throw new VmObjectError(
        `VM '${this.name}' exists with ${size / 1048576}M of memory, not the ${memsize / 1048576}M requested (-m must match; destroy it with bhyvectl --destroy --vm=${this.name})`,
      );
    }
  }

  /** The state a loader left for vCPU 0 (bhyveload), if any. */
  readBootState(): unknown | undefined {
    let text: string;
    let fd: number;
    try { fd = openPrivateFile(this.bootStatePath, 'boot state', 'read', 0o022); } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    try { text = fs.readFileSync(fd, 'utf8'); } finally { fs.closeSync(fd); }
    try {
      return JSON.parse(text);
    } catch {
      throw new VmObjectError(`boot state of VM '${this.name}' is corrupt (${this.bootStatePath}); run bhyveload again`);
    }
  }

  writeBootState(state: unknown): void {
    const tmp = `${this.bootStatePath}.tmp`;
    fs.rmSync(tmp, { force: true });
    const fd = openPrivateFile(tmp, 'boot state', 'create', 0o022);
    try { fs.writeFileSync(fd, `${JSON.stringify(state, null, 1)}\n`); } finally { fs.closeSync(fd); }
    fs.renameSync(tmp, this.bootStatePath);
  }

  /** Takes the run lock of an opened object; throws when it is held. */
  lock(): void {
    if (this.locked) return;
    const lock = VmLock.tryAcquire(this.dir);
    if (lock === 'gone') throw new VmObjectError(`VM '${this.name}' was destroyed`);
    if (lock === 'busy') {
      const pid = this.holderPid();
      throw new VmObjectError(`VM '${this.name}' is already running${pid === undefined ? '' : ` (bhyve pid ${pid})`}`);
    }
    this.runLock = lock;
  }

  /** Drops the run lock (and the pid file of this process). */
  unlock(): void {
    if (!this.locked) return;
    // (Known without reading it back: the sandbox may not allow reads here.)
    if (this.wrotePid) { fs.rmSync(this.pidPath, { force: true }); this.wrotePid = false; }
    this.closeDirFd();
    this.runLock?.release();
  }

  /** Removes the VM object and its memory; needs the run lock, which it
   * drops. The directory leaves its name in one step (rename). */
  destroy(): void {
    if (this.gone) return;
    if (!this.locked) throw new VmObjectError(`VM '${this.name}' is not locked`);
    this.closeDirFd();
    const root = path.dirname(this.dir);
    const doomed = path.join(root, `.dead-${process.pid}-${uniqueSuffix()}`);
    try {
      try {
        fs.renameSync(this.dir, doomed);
      } catch {
        // The sandbox (Landlock) allows removing but not renaming: remove
        // in place, the lock file last, so a waiting locker sees it go.
        for (const f of fs.readdirSync(this.dir)) if (f !== LOCK_FILE) fs.rmSync(path.join(this.dir, f), { recursive: true, force: true });
        fs.rmSync(this.dir, { recursive: true, force: true });
        this.gone = true;
        return;
      }
      fs.rmSync(doomed, { recursive: true, force: true });
      this.gone = true;
    } finally {
      this.wrotePid = false;
      this.runLock?.release();
    }
  }

  private closeDirFd(): void {
    if (this.dirFd >= 0) { fs.closeSync(this.dirFd); this.dirFd = -1; }
  }
}

/** A suffix that keeps this process's temporary names in the runtime
 * directory apart (with its pid): that directory is private (checked), so
 * nobody else can make a name there first, and unpredictable names are not
 * needed; Math.random keeps node:crypto out of start-up (~17 modules). */
function uniqueSuffix(): string {
  return `${process.hrtime.bigint().toString(36)}${Math.floor(Math.random() * 2 ** 32).toString(36)}`;
}
