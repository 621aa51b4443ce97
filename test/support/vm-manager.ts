// Helpers for the tests of examples/vm (test/integration/examples-*.test.ts):
// a temporary network namespace the manager runs in, a datastore of its own
// (a plain directory or a btrfs file system on a loop device the test makes
// and removes), and the manager run as an operator would run it.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { GUESTS, ROOT, kvmUnavailable } from './bhyve.js';
import { NO_TAP_NETNS } from './probes.js';

export const VM = path.join(ROOT, 'examples/vm');

function onPath(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

/** Why the examples cannot run here (root, KVM, ip netns, the guests), or undefined. */
export function examplesUnavailable(extra: Array<[string, string]> = []): string | undefined {
  const k = kvmUnavailable() ?? NO_TAP_NETNS;
  if (k) return k;
  if (!fs.existsSync(path.join(GUESTS, 'virtio-net.rom'))) return 'virtio test guests are not built: run scripts/build-guests.sh';
  for (const [cmd, pkg] of [['unshare', 'util-linux'], ['nsenter', 'util-linux'], ['setpriv', 'util-linux'], ...extra]) {
    if (!onPath(cmd)) return `${cmd} is missing (apt-get install ${pkg})`;
  }
  return undefined;
}

/** A temporary directory, a network namespace, and `vm` run inside it with
 * its own VM_DIR and BHYVE_RUNDIR. The namespace is entered with nsenter,
 * not `ip netns exec`, which would give `vm` a mount namespace of its own
 * where the network namespaces it adds (netns=yes) stay invisible. */
export class Site {
  readonly tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'examples-'));
  readonly ns = `ex${process.pid}${Math.random().toString(36).slice(2, 6)}`;
  readonly rundir = path.join(this.tmp, 'run');
  private loops: string[] = [];
  private mounts: string[] = [];
  vmDir: string;

  constructor() {
    fs.mkdirSync(this.rundir, { mode: 0o700 });
    this.vmDir = path.join(this.tmp, 'vms');
    execFileSync('ip', ['netns', 'add', this.ns]);
    this.sh('ip link set lo up');
  }

  env(vmDir = this.vmDir): Record<string, string> {
    return { VM_DIR: vmDir, BHYVE_RUNDIR: this.rundir, PATH: `${path.join(ROOT, 'bin')}:${process.env.PATH}` };
  }

  /** `vm ARGS...` in the namespace; resolves with its result (no throw). */
  vm(args: string[], o: { vmDir?: string; input?: string | Buffer; timeout?: number; encoding?: 'utf8' | 'buffer' } = {}) {
    return execa('nsenter', [`--net=/run/netns/${this.ns}`, VM, ...args], {
      reject: false, timeout: o.timeout ?? 120_000, env: this.env(o.vmDir),
      input: o.input, stdin: o.input === undefined ? 'ignore' : undefined,
      encoding: o.encoding === 'buffer' ? 'buffer' : 'utf8',
    });
  }

  /** `vm ARGS...`, which must succeed; its stdout. */
  async ok(args: string[], o: { vmDir?: string } = {}): Promise<string> {
    const r = await this.vm(args, o);
    if (r.exitCode !== 0) throw new Error(`vm ${args.join(' ')}: status ${r.exitCode}\n${r.stdout}\n${r.stderr}`);
    return r.stdout as string;
  }

  /** A long-running `vm ARGS...` (console, start -f). */
  spawn(args: string[], o: { vmDir?: string; env?: Record<string, string> } = {}): ResultPromise {
    return execa('nsenter', [`--net=/run/netns/${this.ns}`, VM, ...args], {
      reject: false, timeout: 180_000, env: { ...this.env(o.vmDir), ...(o.env ?? {}) }, stdin: 'pipe', encoding: 'latin1',
    });
  }

  /** A shell command in the namespace. */
  sh(cmd: string, env: Record<string, string> = {}): string {
    return execFileSync('nsenter', [`--net=/run/netns/${this.ns}`, 'sh', '-c', cmd], { encoding: 'utf8', env: { ...process.env, ...env } });
  }

  /** A btrfs file system on a loop device of SIZE, mounted at tmp/NAME. */
  btrfsPool(name: string, size = '300M'): string {
    const img = path.join(this.tmp, `${name}.img`);
    execFileSync('truncate', ['-s', size, img]);
    const dev = execFileSync('losetup', ['-f', '--show', img], { encoding: 'utf8' }).trim();
    this.loops.push(dev);
    execFileSync('mkfs.btrfs', ['-q', dev]);
    const mnt = path.join(this.tmp, name);
    fs.mkdirSync(mnt);
    execFileSync('mount', [dev, mnt]);
    this.mounts.push(mnt);
    return mnt;
  }

  /** A loop device over a copy of FILE grown to SIZE (a raw block-device disk). */
  loopDevice(file: string, size: string): string {
    const img = path.join(this.tmp, `blk${this.loops.length}.img`);
    fs.copyFileSync(file, img);
    execFileSync('truncate', ['-s', size, img]);
    const dev = execFileSync('losetup', ['-f', '--show', img], { encoding: 'utf8' }).trim();
    this.loops.push(dev);
    return dev;
  }

  /** Stops whatever still runs (by the pids the manager recorded), removes
   * the namespaces, mounts, loop devices and files. */
  cleanup(): void {
    for (const dir of [this.vmDir, ...this.mounts]) {
      const run = path.join(dir, '.run');
      if (!fs.existsSync(run)) continue;
      for (const vm of fs.readdirSync(run)) {
        for (const f of ['bhyve.pid', 'loop.pid']) {
          try {
            const pid = Number(fs.readFileSync(path.join(run, vm, f), 'utf8'));
            // A confined bhyve is the child of the unshare wrapper bhyve.pid names.
            let children: number[] = [];
            try { children = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number); } catch { /* gone */ }
            for (const p of [pid, ...children]) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
          } catch { /* no pid file */ }
        }
        spawnSync('ip', ['netns', 'del', `vm-${vm}`]);
      }
    }
    spawnSync('ip', ['netns', 'del', this.ns]);
    for (const m of this.mounts.reverse()) spawnSync('umount', ['-l', m]);
    for (const l of this.loops) spawnSync('losetup', ['-d', l]);
    fs.rmSync(this.tmp, { recursive: true, force: true });
  }
}

/** Polls FN until it returns true (or throws after TIMEOUT ms, with what
 * SHOW returns then: the VM's log, say, so a failure says why). */
export async function until(what: string, fn: () => boolean, timeout = 60_000, show?: () => string): Promise<void> {
  const end = Date.now() + timeout;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${show ? `:\n${show()}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The VM's log (vm.log in its directory). */
export function vmLog(vmDir: string, name: string): string {
  try { return fs.readFileSync(path.join(vmDir, name, 'vm.log'), 'latin1'); } catch { return ''; }
}

/** KEY="VALUE" lines. */
export function conf(o: Record<string, string | number>): string {
  return Object.entries(o).map(([k, v]) => `${k}="${v}"\n`).join('');
}

/** bhyve flags every test VM gets: the test exit device, no EPT needed. */
export const TEST_FLAGS = '-l pc-testdev -o x86.require_ept_rvi=false';
