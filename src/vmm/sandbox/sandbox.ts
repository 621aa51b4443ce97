// bhyve's sandbox after start-up, the Linux counterpart of bhyve's Capsicum
// mode (and of Firecracker's jailer): once every file, tap, socket and
// thread the VM needs is open and started, bhyve
//   1. sets no_new_privs (nothing it could execute gains privileges),
//   2. drops every capability (bounding, ambient, effective, permitted,
//      inheritable): the run loop needs none,
//   3. confines its file access with Landlock where the kernel has it
//      (landlock.ts),
//   4. installs a seccomp filter allowing only the calls the run loop makes
//      (syscall-allowlist.ts), on every thread at once (TSYNC).
// Steps 1-3 are per thread in Linux, so each JavaScript thread takes them
// for itself: the main thread in enterSandbox, each vCPU thread before it
// reports ready (confineThisThread); threads started later (the virtio-blk
// iothread) inherit them. libuv's pool threads, which may have started
// before (every async fs call and, with vcpu.ap_model=pool, the APs'
// KVM_RUN run there), take them one by one on bhyve's request
// (pool-threads.ts). V8's platform workers, started with Node before any
// of bhyve's code, run only V8's background tasks (GC, compilation): no
// JavaScript, no fs; Linux has no call that confines another thread, so
// they keep root's capabilities and stay outside Landlock (held by the
// seccomp filter and no_new_privs like every thread) unless the kernel has
// Landlock's TSYNC (ABI 8), which the main thread then uses.
//
// -o security.sandbox=false turns it all off (debugging: strace, gdb, a
// profiler); -o security.sandbox_log=true keeps Landlock and the filter but
// has the filter log calls outside the list (kernel log, audit type 1326)
// and let them through, to find what a new code path needs.

import { installRoot } from '../../install-root.js';
import { koffiNativeDirectory } from '../../sys/koffi.js';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { ConfigTree } from '../../config/tree.js';
import { FS, landlockStatus, restrictThisThread, RESTRICT_SELF_TSYNC, TSYNC_ABI, type LandlockRule } from './landlock.js';
import {
  capset, prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS,
  SECCOMP_FILTER_FLAG_LOG, SECCOMP_FILTER_FLAG_TSYNC, seccompSetFilter,
} from './sandbox-sys.js';
import { buildSeccompFilter, EPERM, SECCOMP_RET_ERRNO, SECCOMP_RET_LOG } from './seccomp-filter.js';

/** What every thread applies (structured-cloneable: it goes to the vCPU
 * threads in their VcpuThreadData). */
export interface SandboxPlan {
  log: boolean;
  /** Landlock ABI version, 0 when the kernel has none. */
  landlockAbi: number;
  landlockRules: LandlockRule[];
  /** virtio-9p shares configured: none, only read-only ones, or a
   * writable one (the filter then allows what a file server needs). */
  shares?: 'ro' | 'rw';
  /** A slirp network backend runs in bhyve: new sockets stay allowed
   * (seccomp) and Landlock leaves TCP alone. */
  sockets: boolean;
  /** Notes on what this host cannot do (printed with BHYVE_DEBUG). */
  notes: string[];
}

/** The paths of the VM that the run loop may still touch. */
export interface SandboxPaths {
  /** The VM directory. */
  dir: string;
  memoryPath: string;
}

/** The plan for this VM, or undefined when security.sandbox=false. */
export function sandboxPlan(config: ConfigTree, paths: SandboxPaths): SandboxPlan | undefined {
  if (!config.getBool('security.sandbox', true)) return undefined;
  const notes: string[] = [];
  const ll = landlockStatus();
  let landlockAbi = 0;
  if ('abi' in ll) landlockAbi = ll.abi;
  else notes.push(`no Landlock: ${ll.missing}; file access is limited by the seccomp filter only (no new files, no exec)`);
  const rules: LandlockRule[] = [
    ...codeDirectories().map((p) => ({ path: p, access: FS.READ_FILE })),
    { path: paths.memoryPath, access: FS.READ_FILE | FS.WRITE_FILE },
    { path: paths.dir, access: FS.REMOVE_FILE | FS.READ_DIR },
    // Destroying renames the VM directory to a hidden name, then removes it.
    { path: path.dirname(paths.dir), access: FS.REMOVE_DIR | FS.MAKE_DIR },
    ...consoleSocketDirs(config).map((p) => ({ path: p, access: FS.REMOVE_FILE })),
    ...diskImages(config),
    // (hda's play=/rec= files need no rule: the device opens them when it
    // is created, before the vCPU thread confines itself, and only reads
    // or writes the open descriptors after: devices/hda/hda-audio.ts.)
  ];
  const shares = fileShares(config);
  rules.push(...shares.rules);
  if (shares.kind === 'rw' && landlockAbi === 0) {
    notes.push('no Landlock: writable virtio-9p shares are confined by the file server alone; the filter lets files be created');
  }
  const sockets = usesSlirp(config);
  if (sockets) rules.push(...SLIRP_READ_FILES.map((p) => ({ path: p, access: FS.READ_FILE })));
  return {
    log: config.getBool('security.sandbox_log', false), landlockAbi, landlockRules: rules, sockets, notes,
    ...(shares.kind ? { shares: shares.kind } : {}),
  };
}

/** Files libslirp reads while it runs: the host's DNS servers for its DNS
 * relay (re-read when resolv.conf changes), glib's time zone. */
export const SLIRP_READ_FILES = ['/etc/resolv.conf', '/etc/localtime', '/usr/share/zoneinfo'];

/** True when a NIC of this VM has the slirp backend. */
export function usesSlirp(config: ConfigTree): boolean {
  for (const [key, value] of config.toJSON()) {
    if (/^pci\.\d+\.\d+\.\d+\.backend$/.test(key) && value.trim().startsWith('slirp')) return true;
  }
  return false;
}

/** The plan for a helper thread started before the sandbox goes up (the
 * slirp thread): bhyve's code and `readFiles` readable, nothing else;
 * undefined with security.sandbox=false. */
export function helperThreadPlan(config: ConfigTree, readFiles: readonly string[], sockets: boolean): SandboxPlan | undefined {
  if (!config.getBool('security.sandbox', true)) return undefined;
  const ll = landlockStatus();
  return {
    log: config.getBool('security.sandbox_log', false),
    landlockAbi: 'abi' in ll ? ll.abi : 0,
    landlockRules: [...codeDirectories(), ...readFiles].map((p) => ({ path: p, access: FS.READ_FILE })),
    sockets,
    notes: [],
  };
}

/** bhyve's installed tree, the directory of koffi and that of the native
 * module it loaded (a worker thread loads all three). */
export function codeDirectories(): string[] {
  const root = installRoot();
  const dirs = [root];
  const add = (dir: string | undefined): void => {
    if (dir !== undefined && !dir.startsWith(root + path.sep) && !dirs.includes(dir)) dirs.push(dir);
  };
  try {
    add(koffiDirectory(root));
  } catch { /* resolved when loaded; nothing to add */ }
  add(koffiNativeDirectory());
  return dirs;
}

/** The directory Node resolves `koffi` to from bhyve's code (its main file
 * is at the package's top): bhyve's own node_modules/koffi, its real path,
 * when it is there (the usual layout; this is on the start-up path, and
 * Node's CommonJS resolver costs 3-5 ms on first use), else what the
 * resolver says. */
function koffiDirectory(root: string): string {
  try {
    return fs.realpathSync(path.join(root, 'node_modules', 'koffi'));
  } catch {
    return path.dirname(createRequire(import.meta.url).resolve('koffi'));
  }
}

/** Directories of virtio-console port sockets (bhyve removes them at exit). */
function consoleSocketDirs(config: ConfigTree): string[] {
  const dirs = new Set<string>();
  for (const [key, value] of config.toJSON()) {
    const m = /^(pci\.\d+\.\d+\.\d+)\.port\.[^.]+\.path$/.exec(key);
    if (m && config.get(`${m[1]}.device`) === 'virtio-console') dirs.add(path.dirname(path.resolve(value)));
  }
  return [...dirs];
}

const BLOCK_DEVICES = new Set(['virtio-blk', 'ahci', 'ahci-hd', 'ahci-cd', 'nvme']);

/** Disk images: a block backend may open its image again later (with
 * nocache, a buffered descriptor for requests O_DIRECT refuses). */
export function diskImages(config: ConfigTree): LandlockRule[] {
  const rules: LandlockRule[] = [];
  for (const [key, value] of config.toJSON()) {
    // virtio-scsi names its disk `dev` (bhyve's CTL device key).
    const scsi = /^(pci\.\d+\.\d+\.\d+)\.dev$/.exec(key);
    if (scsi && config.get(`${scsi[1]}.device`) === 'virtio-scsi') {
      const ro = config.getBool(`${scsi[1]}.ro`, false);
      rules.push({ path: value, access: FS.READ_FILE | FS.IOCTL_DEV | (ro ? 0n : FS.WRITE_FILE) });
      continue;
    }
    const m = /^((pci\.\d+\.\d+\.\d+)(?:\.port\.\d+)?)\.path$/.exec(key);
    if (!m || !BLOCK_DEVICES.has(config.get(`${m[2]}.device`) ?? '')) continue;
    const ro = config.getBool(`${m[1]}.ro`, false);
    rules.push({ path: value, access: FS.READ_FILE | FS.IOCTL_DEV | (ro ? 0n : FS.WRITE_FILE) });
  }
  return rules;
}

/** Rights beneath a virtio-9p share: read it all; change it unless ro
 * (never device nodes: the file server refuses them). */
const SHARE_READ = FS.READ_FILE | FS.READ_DIR;
const SHARE_WRITE = FS.WRITE_FILE | FS.REMOVE_DIR | FS.REMOVE_FILE | FS.MAKE_DIR | FS.MAKE_REG | FS.MAKE_SOCK
  | FS.MAKE_FIFO | FS.MAKE_SYM | FS.REFER | FS.TRUNCATE;

/** The virtio-9p shares: their Landlock rules, and whether any is writable. */
function fileShares(config: ConfigTree): { rules: LandlockRule[]; kind?: 'ro' | 'rw' } {
  const rules: LandlockRule[] = [];
  let kind: 'ro' | 'rw' | undefined;
  for (const [key, value] of config.toJSON()) {
    const m = /^(pci\.\d+\.\d+\.\d+)\.path$/.exec(key);
    if (!m || config.get(`${m[1]}.device`) !== 'virtio-9p') continue;
    const ro = config.getBool(`${m[1]}.ro`, false);
    rules.push({ path: value, access: SHARE_READ | (ro ? 0n : SHARE_WRITE) });
    kind = !ro ? 'rw' : kind ?? 'ro';
  }
  return { rules, kind };
}

/** Steps 1-3 for the calling thread (`landlockFlags`: RESTRICT_SELF_TSYNC
 * takes Landlock to every thread). Returns what could not be done. */
export function confineThisThread(plan: SandboxPlan, landlockFlags = 0): string[] {
  const problems: string[] = [];
  const nnp = prctl(PR_SET_NO_NEW_PRIVS, 1);
  if (nnp < 0) problems.push(`no_new_privs: errno ${-nnp}`);
  // The bounding set needs CAP_SETPCAP, so it goes before capset; a
  // non-root bhyve has nothing to drop (EPERM is fine then).
  for (let cap = 0; cap < 64; cap++) {
    if (prctl(PR_CAPBSET_DROP, cap) === -22 /* EINVAL: past the last capability */) break;
  }
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL);
  if (plan.landlockAbi > 0) {
    const why = restrictThisThread(plan.landlockAbi, plan.landlockRules, !plan.sockets, landlockFlags);
    if (why) problems.push(`Landlock: ${why}`);
  }
  const caps = capset({ effective: 0n, permitted: 0n, inheritable: 0n });
  if (caps < 0) problems.push(`capset: errno ${-caps}`);
  return problems;
}

type SandboxListener = () => void;
const listeners: SandboxListener[] = [];

/** Runs `f` on the main thread right after the sandbox is in place (tests
 * use it to try what the sandbox must refuse). */
export function onSandboxed(f: SandboxListener): void {
  listeners.push(f);
}

/** The error that stops a VM whose sandbox could not be installed. */
export class SandboxError extends Error {}

/** Steps 1-3 on libuv's pool threads (`poolConfined`: pool-threads.ts'
 * confinePool), then on the main
 * thread (with Landlock's TSYNC where the kernel has it: every thread,
 * V8's too), then step 4; the vCPU threads have taken 1-3 already.
 * Throws SandboxError when a step fails (a sandbox asked for and silently
 * missing would be worse than no VM). */
export async function enterSandbox(plan: SandboxPlan, poolConfined: Promise<number[]>, who = 'bhyve'): Promise<void> {
  const t0 = process.hrtime.bigint();
  const tsync = plan.landlockAbi >= TSYNC_ABI;
  const pool = await poolConfined;
  const problems = confineThisThread(plan, tsync ? RESTRICT_SELF_TSYNC : 0);
  if (problems.length) throw new SandboxError(`cannot sandbox ${who}: ${problems.join('; ')} (-o security.sandbox=false runs without)`);
  const refuse = plan.log ? SECCOMP_RET_LOG : SECCOMP_RET_ERRNO | EPERM;
  const filter = buildSeccompFilter({
    refuse, pid: process.pid, renames: plan.landlockAbi > 0 || plan.shares === 'rw', shares: plan.shares,
    newSockets: plan.sockets,
  });
  const flags = SECCOMP_FILTER_FLAG_TSYNC | (plan.log ? SECCOMP_FILTER_FLAG_LOG : 0);
  const r = seccompSetFilter(filter, flags);
  if (r !== 0) {
    const why = r > 0 ? `thread ${r} could not take the filter` : `errno ${-r}`;
    throw new SandboxError(`cannot sandbox ${who}: seccomp: ${why} (-o security.sandbox=false runs without)`);
  }
  if (process.env.BHYVE_DEBUG) {
    const ll = plan.landlockAbi > 0 ? `Landlock ABI ${plan.landlockAbi}` : 'no Landlock';
    const ms = (Number(process.hrtime.bigint() - t0) / 1e6).toFixed(1);
    process.stderr.write(`${who}: sandbox: no_new_privs, capabilities dropped, ${ll}, seccomp filter${plan.log ? ' (log mode)' : ''} (${ms} ms)\n`);
    const rest = tsync ? 'Landlock on every thread (TSYNC)'
      : `the threads Node started before bhyve's code (V8's) are outside Landlock${plan.landlockAbi > 0 ? ` (ABI ${plan.landlockAbi} has no TSYNC)` : ''}${process.getuid?.() === 0 ? " and keep root's capabilities" : ''}`;
    process.stderr.write(`${who}: sandbox: libuv's ${pool.length} pool threads confined; ${rest}\n`);
    for (const n of plan.notes) process.stderr.write(`${who}: sandbox: ${n}\n`);
  }
  for (const f of listeners) f();
}
