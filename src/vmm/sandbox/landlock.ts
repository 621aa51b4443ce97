// Landlock: once bhyve runs, the only files it may still open or remove
// are its own. The ruleset handles every access right the kernel's ABI
// knows (so anything not granted below is refused with EACCES) and grants:
//   - read: bhyve's own modules (a worker thread started later, such as
//     virtio-blk's iothread at each DRIVER_OK, loads them);
//   - read and write: the VM's memory file (that iothread maps guest RAM)
//     and the disk images (read only for ,ro), which a block backend may
//     open again (a buffered descriptor beside an O_DIRECT one);
//   - remove files: in the VM directory (memory, lock, boot state, control
//     socket at exit) and in the directories of virtio-console sockets,
//     which bhyve created and removes at exit (bhyve's Capsicum rights on
//     such a directory descriptor allow the same);
//   - beneath a virtio-9p share: read, and unless ro, make, change,
//     link, rename and remove files and directories (no device nodes);
//   - remove and make directories: in the runtime root (destroying the VM,
//     when bhyve created it or -D asks, renames its directory to a hidden
//     name and removes it; mkdir itself stays refused by seccomp).
// With ABI 4 and later, TCP bind and connect are handled and not granted:
// no new TCP endpoints (unless a slirp backend needs them: then TCP is not
// handled and the seccomp filter's socket calls decide). Landlock applies per thread: every JavaScript
// thread applies it for itself (sandbox.ts) and threads started later
// inherit it.

import fs from 'node:fs';
import { closeRaw, landlockAbi, landlockAddPathRule, landlockCreateRuleset, landlockRestrictSelf } from './sandbox-sys.js';

export const FS = {
  EXECUTE: 1n << 0n,
  WRITE_FILE: 1n << 1n,
  READ_FILE: 1n << 2n,
  READ_DIR: 1n << 3n,
  REMOVE_DIR: 1n << 4n,
  REMOVE_FILE: 1n << 5n,
  MAKE_CHAR: 1n << 6n,
  MAKE_DIR: 1n << 7n,
  MAKE_REG: 1n << 8n,
  MAKE_SOCK: 1n << 9n,
  MAKE_FIFO: 1n << 10n,
  MAKE_BLOCK: 1n << 11n,
  MAKE_SYM: 1n << 12n,
  REFER: 1n << 13n,
  TRUNCATE: 1n << 14n,
  IOCTL_DEV: 1n << 15n,
} as const;
const NET_BIND_TCP = 1n;
const NET_CONNECT_TCP = 2n;

/** Rights a rule on a regular file may carry (the kernel refuses others). */
const FILE_RIGHTS = FS.EXECUTE | FS.WRITE_FILE | FS.READ_FILE | FS.TRUNCATE | FS.IOCTL_DEV;

/** The filesystem rights handled at each ABI version (index: version). */
function handledFs(abi: number): bigint {
  let all = (1n << 13n) - 1n; // ABI 1: EXECUTE .. MAKE_SYM
  if (abi >= 2) all |= FS.REFER;
  if (abi >= 3) all |= FS.TRUNCATE;
  if (abi >= 5) all |= FS.IOCTL_DEV;
  return all;
}

/** A path and what may be done beneath it. */
export interface LandlockRule { path: string; access: bigint }

/** What the kernel offers: its Landlock ABI, or why there is none. */
export function landlockStatus(): { abi: number } | { missing: string } {
  const v = landlockAbi();
  if (v > 0) return { abi: v };
  if (v === -38) return { missing: 'the kernel has no Landlock (CONFIG_SECURITY_LANDLOCK)' };
  if (v === -95) return { missing: 'Landlock is not enabled at boot (add landlock to the lsm= kernel parameter)' };
  return { missing: `landlock_create_ruleset failed (errno ${-v})` };
}

const O_PATH = 0o10000000;
const O_CLOEXEC = 0o2000000;

/** LANDLOCK_RESTRICT_SELF_TSYNC (ABI 8, Linux 7.0): the calling thread's
 * new domain goes to every thread of the process at once, replacing what
 * each had (and no_new_privs with it). */
export const RESTRICT_SELF_TSYNC = 1 << 3;
export const TSYNC_ABI = 8;

/** Builds the ruleset for `rules`: its fd (the caller closes it with
 * closeRaw), or why not. Paths that no longer exist are skipped: nothing
 * there to grant. */
export function createRuleset(abi: number, rules: readonly LandlockRule[], handleNet = true): { fd: number } | { error: string } {
  const attr = new Uint8Array(24);
  const dv = new DataView(attr.buffer);
  const fsRights = handledFs(abi);
  dv.setBigUint64(0, fsRights, true);
  let size = 8;
  // handleNet false: TCP left to seccomp (a slirp backend connects and binds).
  if (abi >= 4 && handleNet) { dv.setBigUint64(8, NET_BIND_TCP | NET_CONNECT_TCP, true); size = 16; }
  const ruleset = landlockCreateRuleset(attr, size);
  if (ruleset < 0) return { error: `landlock_create_ruleset failed (errno ${-ruleset})` };
  for (const rule of rules) {
    let fd: number;
    try {
      fd = fs.openSync(rule.path, O_PATH | O_CLOEXEC);
    } catch {
      continue;
    }
    try {
      const isDir = fs.fstatSync(fd).isDirectory();
      const access = rule.access & fsRights & (isDir ? fsRights : FILE_RIGHTS);
      if (access === 0n) continue;
      const r = landlockAddPathRule(ruleset, access, fd);
      if (r < 0) {
        closeRaw(ruleset);
        return { error: `landlock_add_rule on ${rule.path} failed (errno ${-r})` };
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  return { fd: ruleset };
}

/** Builds the ruleset and restricts the calling thread (`flags`: 0 or
 * RESTRICT_SELF_TSYNC). Returns undefined on success, else why not (the
 * thread is then unchanged). */
export function restrictThisThread(abi: number, rules: readonly LandlockRule[], handleNet = true, flags = 0): string | undefined {
  const ruleset = createRuleset(abi, rules, handleNet);
  if ('error' in ruleset) return ruleset.error;
  try {
    const r = landlockRestrictSelf(ruleset.fd, flags);
    if (r < 0) return `landlock_restrict_self failed (errno ${-r})`;
    return undefined;
  } finally {
    closeRaw(ruleset.fd);
  }
}
