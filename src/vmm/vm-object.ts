// The VM object: what /dev/vmm/NAME is on FreeBSD. A per-VM directory under
// the runtime directory holds the guest memory file (mappable by any process,
// so the VM can outlive one process) and a lock so that only one bhyve runs
// a VM at a time.

import { UserError } from '../user-error.js';
import fs from 'node:fs';
import path from 'node:path';

export class VmObjectError extends UserError {}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,230}$/;

export function validateVmName(name: string): void {
  if (!NAME_RE.test(name) || name === '.' || name === '..') {
    throw new VmObjectError(`invalid VM name '${name}': use letters, digits and . _ + - (not starting with a punctuation mark)`);
  }
}

/** /run/bhyve for root, $XDG_RUNTIME_DIR/bhyve otherwise; BHYVE_RUNDIR overrides. */
export function runtimeDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.BHYVE_RUNDIR) return env.BHYVE_RUNDIR;
  if (process.getuid?.() === 0) return '/run/bhyve';
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, 'bhyve');
  return path.join('/tmp', `bhyve-${process.getuid?.() ?? 'user'}`);
}

export class VmObject {
  readonly dir: string;
  readonly memoryPath: string;
  readonly controlSocketPath: string;
  readonly bootStatePath: string;
  private readonly lockPath: string;
  private locked = false;

  private constructor(readonly name: string, root: string, readonly createdHere: boolean) {
    this.dir = path.join(root, name);
    this.memoryPath = path.join(this.dir, 'memory');
    this.lockPath = path.join(this.dir, 'bhyve.pid');
    this.controlSocketPath = path.join(this.dir, 'control.sock');
    this.bootStatePath = path.join(this.dir, 'boot-state.json');
  }

  /** Creates the VM object NAME without memory (bhyvectl --create);
   * fails when it exists. */
  static create(name: string, root = runtimeDir()): VmObject {
    validateVmName(name);
    makeRoot(root);
    const dir = path.join(root, name);
    try {
      fs.mkdirSync(dir, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new VmObjectError(`VM '${name}' already exists`);
      throw new VmObjectError(`cannot create ${dir}: ${(e as Error).message}`);
    }
    return new VmObject(name, root, true);
  }

  /** Opens an existing VM object; fails when there is none. */
  static open(name: string, root = runtimeDir()): VmObject {
    validateVmName(name);
    const dir = path.join(root, name);
    if (!fs.existsSync(dir)) throw new VmObjectError(`no VM named '${name}' (in ${root})`);
    return new VmObject(name, root, false);
  }

  /** Opens the VM object NAME, creating it (and its memory file) when absent. */
  static openOrCreate(name: string, memsize: number, root = runtimeDir()): VmObject {
    validateVmName(name);
    makeRoot(root);
    const dir = path.join(root, name);
    let created = false;
    try {
      fs.mkdirSync(dir, { mode: 0o700 });
      created = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new VmObjectError(`cannot create ${dir}: ${(e as Error).message}`);
    }
    const obj = new VmObject(name, root, created);
    obj.ensureMemory(memsize);
    return obj;
  }

  /** Size of the guest memory file, or undefined when memory is not set up. */
  memorySize(): number | undefined {
    try { return fs.statSync(this.memoryPath).size; } catch { return undefined; }
  }

  /** Sets up guest memory of `memsize` bytes, or checks that it matches. */
  ensureMemory(memsize: number): void {
    let st: fs.Stats | undefined;
    try { st = fs.statSync(this.memoryPath); } catch { st = undefined; }
    if (st && st.size !== memsize) {
      throw new VmObjectError(
        `VM '${this.name}' exists with ${st.size / 1048576}M of memory, not the ${memsize / 1048576}M requested (-m must match; destroy it with bhyvectl --destroy --vm=${this.name})`,
      );
    }
    if (!st) {
      const fd = fs.openSync(this.memoryPath, 'wx', 0o600);
      try { fs.ftruncateSync(fd, memsize); } finally { fs.closeSync(fd); }
    }
  }

  /** The pid of the live bhyve running this VM, if any. */
  runningPid(): number | undefined {
    try {
      const pid = Number.parseInt(fs.readFileSync(this.lockPath, 'utf8'), 10);
      return Number.isInteger(pid) && pid > 0 && processAlive(pid) ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** The state a loader left for vCPU 0 (bhyveload), if any. */
  readBootState(): unknown | undefined {
    let text: string;
    try { text = fs.readFileSync(this.bootStatePath, 'utf8'); } catch { return undefined; }
    try {
      return JSON.parse(text);
    } catch {
      throw new VmObjectError(`boot state of VM '${this.name}' is corrupt (${this.bootStatePath}); run bhyveload again`);
    }
  }

  writeBootState(state: unknown): void {
    const tmp = `${this.bootStatePath}.tmp`;
    fs.writeFileSync(tmp, `${JSON.stringify(state, null, 1)}\n`, { mode: 0o600 });
    fs.renameSync(tmp, this.bootStatePath);
  }

  /** Takes the run lock; throws when another live process holds it. */
  lock(): void {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = fs.openSync(this.lockPath, 'wx', 0o600);
        fs.writeSync(fd, `${process.pid}\n`);
        fs.closeSync(fd);
        this.locked = true;
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new VmObjectError(`cannot lock VM '${this.name}': ${(e as Error).message}`);
        const pid = Number.parseInt(fs.readFileSync(this.lockPath, 'utf8'), 10);
        if (Number.isInteger(pid) && pid > 0 && processAlive(pid)) {
          throw new VmObjectError(`VM '${this.name}' is already running (bhyve pid ${pid})`);
        }
        fs.rmSync(this.lockPath, { force: true }); // stale lock from a dead process
      }
    }
    throw new VmObjectError(`cannot lock VM '${this.name}'`);
  }

  unlock(): void {
    if (this.locked) { fs.rmSync(this.lockPath, { force: true }); this.locked = false; }
  }

  /** Removes the VM object and its memory. */
  destroy(): void {
    this.unlock();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

function makeRoot(root: string): void {
  try {
    fs.mkdirSync(root, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new VmObjectError(`cannot create runtime directory ${root}: ${(e as Error).message} (set BHYVE_RUNDIR to a writable directory)`);
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
