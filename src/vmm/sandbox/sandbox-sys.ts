// The kernel calls the sandbox needs, through koffi: prctl, capget/capset,
// seccomp(2) and the three Landlock calls (glibc has no wrappers for the
// last four, so they go through syscall(2)). Every function returns the
// result or -errno; the callers decide what a failure means.

import { koffi as loadKoffi } from '../../sys/koffi.js';
import { holding } from '../../sys/libc.js';

const koffi = loadKoffi();

const lib = koffi.load('libc.so.6');

const SockFprog = koffi.struct('bhyve_sock_fprog', { len: 'uint16_t', filter: 'const uint8_t *' });
const prctlFn = lib.func('int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5)');
const capgetFn = lib.func('int capget(_Inout_ uint8_t *hdr, _Inout_ uint8_t *data)');
const capsetFn = lib.func('int capset(_Inout_ uint8_t *hdr, _Inout_ uint8_t *data)');
const seccompFn = lib.func('long syscall(long nr, unsigned long op, unsigned long flags, const bhyve_sock_fprog *prog)');
const syscallPtr = lib.func('long syscall(long nr, const uint8_t *attr, unsigned long size, unsigned long flags)');
const syscall4 = lib.func('long syscall(long nr, long a, long b, const uint8_t *c, unsigned long d)');
const syscall2 = lib.func('long syscall(long nr, long a, long b)');
const closeFn = lib.func('int close(int fd)');

const SYS_SECCOMP = 317;
const SYS_LANDLOCK_CREATE_RULESET = 444;
const SYS_LANDLOCK_ADD_RULE = 445;
const SYS_LANDLOCK_RESTRICT_SELF = 446;

export const PR_GET_SECCOMP = 21;
export const PR_CAPBSET_DROP = 24;
export const PR_SET_NO_NEW_PRIVS = 38;
export const PR_GET_NO_NEW_PRIVS = 39;
export const PR_CAP_AMBIENT = 47;
export const PR_CAP_AMBIENT_CLEAR_ALL = 4;

export const SECCOMP_SET_MODE_FILTER = 1;
export const SECCOMP_FILTER_FLAG_TSYNC = 1;
export const SECCOMP_FILTER_FLAG_LOG = 2;

const result = (r: number | bigint): number => {
  const n = Number(r);
  return n < 0 ? -koffi.errno() : n;
};

export function prctl(option: number, a2 = 0, a3 = 0, a4 = 0, a5 = 0): number {
  return result(prctlFn(option, a2, a3, a4, a5));
}

const LINUX_CAPABILITY_VERSION_3 = 0x20080522;

/** The calling thread's capability sets (64 bits each). */
export interface CapSets { effective: bigint; permitted: bigint; inheritable: bigint }

export function capget(): CapSets | number {
  const hdr = new Uint8Array(8);
  new DataView(hdr.buffer).setUint32(0, LINUX_CAPABILITY_VERSION_3, true);
  const data = new Uint8Array(24);
  const r = result(capgetFn(hdr, data));
  if (r < 0) return r;
  const dv = new DataView(data.buffer);
  const word = (o: number): bigint => BigInt(dv.getUint32(o, true)) | (BigInt(dv.getUint32(o + 12, true)) << 32n);
  return { effective: word(0), permitted: word(4), inheritable: word(8) };
}

/** Sets the calling thread's capability sets (capabilities are per thread). */
export function capset(c: CapSets): number {
  const hdr = new Uint8Array(8);
  new DataView(hdr.buffer).setUint32(0, LINUX_CAPABILITY_VERSION_3, true);
  const data = new Uint8Array(24);
  const dv = new DataView(data.buffer);
  const put = (o: number, v: bigint): void => {
    dv.setUint32(o, Number(v & 0xffffffffn), true);
    dv.setUint32(o + 12, Number(v >> 32n), true);
  };
  put(0, c.effective);
  put(4, c.permitted);
  put(8, c.inheritable);
  return result(capsetFn(hdr, data));
}

/** seccomp(SECCOMP_SET_MODE_FILTER, flags, prog); `filter` is struct
 * sock_filter[]. With TSYNC, a positive result is the id of a thread that
 * could not be synchronized. */
export function seccompSetFilter(filter: Uint8Array, flags: number): number {
  return result(seccompFn(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, flags, { len: filter.length / 8, filter }));
}

const LANDLOCK_CREATE_RULESET_VERSION = 1;
const LANDLOCK_RULE_PATH_BENEATH = 1;

/** The Landlock ABI version, or -errno (ENOSYS: not built in; EOPNOTSUPP:
 * built in but not enabled at boot). */
export function landlockAbi(): number {
  return result(syscallPtr(SYS_LANDLOCK_CREATE_RULESET, null, 0, LANDLOCK_CREATE_RULESET_VERSION));
}

/** landlock_create_ruleset with struct landlock_ruleset_attr's first
 * `size` bytes (8, 16 or 24 by ABI). */
export function landlockCreateRuleset(attr: Uint8Array, size: number): number {
  return result(syscallPtr(SYS_LANDLOCK_CREATE_RULESET, attr, size, 0));
}

/** landlock_add_rule(LANDLOCK_RULE_PATH_BENEATH) for the directory or file
 * open as `parentFd` (O_PATH is enough). */
export function landlockAddPathRule(rulesetFd: number, allowedAccess: bigint, parentFd: number): number {
  // struct landlock_path_beneath_attr is packed: u64 allowed_access; s32 parent_fd.
  const attr = new Uint8Array(12);
  const dv = new DataView(attr.buffer);
  dv.setBigUint64(0, allowedAccess, true);
  dv.setInt32(8, parentFd, true);
  return result(syscall4(SYS_LANDLOCK_ADD_RULE, rulesetFd, LANDLOCK_RULE_PATH_BENEATH, attr, 0));
}

/** Restricts the calling thread (and the threads it starts later); with
 * LANDLOCK_RESTRICT_SELF_TSYNC in `flags`, every thread (ABI 8). */
export function landlockRestrictSelf(rulesetFd: number, flags = 0): number {
  return result(syscall2(SYS_LANDLOCK_RESTRICT_SELF, rulesetFd, flags));
}

// The same calls run on a thread of libuv's pool (koffi async): the result
// or -errno (koffi restores the pool thread's errno around the callback).
const onPool = (start: (done: (err: unknown, r: number | bigint) => void) => void): Promise<number> =>
  new Promise((resolve) => start((err, r) => resolve(err ? -5 /* EIO */ : result(r))));

const SYS_GETTID = 186;

/** prctl on a pool thread. */
export const prctlOnPool = (option: number, a2 = 0): Promise<number> =>
  onPool((done) => prctlFn.async(option, a2, 0, 0, 0, done));

/** landlock_restrict_self on a pool thread. */
export const landlockRestrictSelfOnPool = (rulesetFd: number): Promise<number> =>
  onPool((done) => syscall2.async(SYS_LANDLOCK_RESTRICT_SELF, rulesetFd, 0, done));

/** Clears a pool thread's capability sets (capset with all sets empty). */
export const capsetNoneOnPool = (): Promise<number> => {
  const hdr = new Uint8Array(8);
  new DataView(hdr.buffer).setUint32(0, LINUX_CAPABILITY_VERSION_3, true);
  const data = new Uint8Array(24);
  return onPool((done) => capsetFn.async(hdr, data, holding([hdr, data], done)));
};

/** The id of the pool thread that runs it. */
export const gettidOnPool = (): Promise<number> =>
  onPool((done) => syscall2.async(SYS_GETTID, 0, 0, done));

/** Closes an fd that Node's fs did not open (a worker thread warns when
 * fs.closeSync closes one). */
export function closeRaw(fd: number): void {
  closeFn(fd);
}
