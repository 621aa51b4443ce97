// The seccomp BPF program built from syscall-allowlist.ts: classic BPF over
// struct seccomp_data { int nr; u32 arch; u64 ip; u64 args[6]; }. The
// program is a straight list (jumps never exceed 255): arch check, x32
// check, the argument-checked calls, then one compare-and-allow pair per
// allowed call, and the refusal at the end.

import {
  ALLOWED_SYSCALLS, CHECKED_SYSCALLS, SHARE_READ_SYSCALLS, SHARE_WRITE_SYSCALLS, SOCKET_SYSCALLS, CLONE_THREAD,
  O_CREAT, O_TMPFILE_BIT, PR_GET_NAME, PR_SET_NAME,
  TIOCLINUX, TIOCSTI,
} from './syscall-allowlist.js';

const BPF_LD_W_ABS = 0x20;
const BPF_JEQ_K = 0x15;
const BPF_JSET_K = 0x45;
const BPF_JGE_K = 0x35;
const BPF_RET_K = 0x06;

export const AUDIT_ARCH_X86_64 = 0xc000003e;
const X32_SYSCALL_BIT = 0x40000000;

export const SECCOMP_RET_KILL_PROCESS = 0x80000000;
export const SECCOMP_RET_ERRNO = 0x00050000;
export const SECCOMP_RET_LOG = 0x7ffc0000;
export const SECCOMP_RET_ALLOW = 0x7fff0000;
export const EPERM = 1;
export const ENOSYS = 38;

const OFF_NR = 0;
const OFF_ARCH = 4;
/** Low 32 bits of args[i] (little endian). */
const argLow = (i: number): number => 16 + 8 * i;

interface Insn { code: number; jt: number; jf: number; k: number }
const stmt = (code: number, k: number): Insn => ({ code, jt: 0, jf: 0, k });
const jump = (code: number, k: number, jt: number, jf: number): Insn => ({ code, jt, jf, k });
const ret = (k: number): Insn => stmt(BPF_RET_K, k);

export interface FilterOptions {
  /** What a call outside the list gets: SECCOMP_RET_ERRNO|EPERM normally,
   * SECCOMP_RET_LOG to find missing calls (logged and allowed). */
  refuse: number;
  /** This process's id: kill and tgkill may only target it. */
  pid: number;
  /** Allow rename(2) and its kin: only when Landlock limits them to the
   * VM's own directory (without it, any file of the user could move). */
  renames?: boolean;
  /** virtio-9p shares: 'ro' adds SHARE_READ_SYSCALLS; 'rw' also
   * SHARE_WRITE_SYSCALLS and openat/open with O_CREAT (O_TMPFILE stays
   * refused). */
  shares?: 'ro' | 'rw';
  /** Allow new sockets (socket, connect, bind, listen): only when a slirp
   * network backend makes the guest's connections from inside bhyve. */
  newSockets?: boolean;
}

/** The filter's instructions, 8 bytes each (struct sock_filter). */
export function buildSeccompFilter(o: FilterOptions): Uint8Array {
  const { refuse } = o;
  const allow = ret(SECCOMP_RET_ALLOW);
  const deny = ret(refuse);
  const prog: Insn[] = [
    stmt(BPF_LD_W_ABS, OFF_ARCH),
    jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
    ret(SECCOMP_RET_KILL_PROCESS), // another ABI (i386 int 0x80) has other numbers
    stmt(BPF_LD_W_ABS, OFF_NR),
    jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
    deny,
  ];
  /** A block for one call: its checks run with the call's number in A and
   * must end in a return; the number is reloaded after it. */
  const block = (nr: number, body: Insn[]): void => {
    prog.push(jump(BPF_JEQ_K, nr, 0, body.length), ...body);
  };
  const C = CHECKED_SYSCALLS;
  // ioctl: the KVM calls are the hot path, so this block comes first.
  block(C.ioctl, [
    stmt(BPF_LD_W_ABS, argLow(1)),
    jump(BPF_JEQ_K, TIOCSTI, 2, 0),
    jump(BPF_JEQ_K, TIOCLINUX, 1, 0),
    allow,
    deny,
  ]);
  // Reload nr after each block that loaded an argument: blocks return, so
  // the reload is only reached by the fall-through path.
  const reload = stmt(BPF_LD_W_ABS, OFF_NR);
  prog.push(reload);
  const refusedOpen = o.shares === 'rw' ? O_TMPFILE_BIT : O_CREAT | O_TMPFILE_BIT;
  for (const [nr, arg] of [[C.open, 1], [C.openat, 2]] as const) {
    block(nr, [
      stmt(BPF_LD_W_ABS, argLow(arg)),
      jump(BPF_JSET_K, refusedOpen, 1, 0),
      allow,
      deny,
    ]);
    prog.push(reload);
  }
  block(C.clone, [
    stmt(BPF_LD_W_ABS, argLow(0)),
    jump(BPF_JSET_K, CLONE_THREAD, 0, 1),
    allow,
    deny,
  ]);
  prog.push(reload);
  for (const nr of [C.kill, C.tgkill]) {
    block(nr, [
      stmt(BPF_LD_W_ABS, argLow(0)),
      jump(BPF_JEQ_K, o.pid >>> 0, 0, 1),
      allow,
      deny,
    ]);
    prog.push(reload);
  }
  block(C.prctl, [
    stmt(BPF_LD_W_ABS, argLow(0)),
    jump(BPF_JEQ_K, PR_SET_NAME, 1, 0),
    jump(BPF_JEQ_K, PR_GET_NAME, 0, 1),
    allow,
    deny,
  ]);
  prog.push(reload);
  if (o.renames) for (const nr of [C.rename, C.renameat, C.renameat2]) block(nr, [allow]);
  if (o.newSockets) for (const [, nr] of SOCKET_SYSCALLS) block(nr, [allow]);
  block(C.clone3, [ret(SECCOMP_RET_ERRNO | ENOSYS)]);
  block(C.openat2, [ret(SECCOMP_RET_ERRNO | ENOSYS)]);
  for (const [, nr] of ALLOWED_SYSCALLS) block(nr, [allow]);
  if (o.shares) for (const [, nr] of SHARE_READ_SYSCALLS) block(nr, [allow]);
  if (o.shares === 'rw') for (const [, nr] of SHARE_WRITE_SYSCALLS) block(nr, [allow]);
  prog.push(deny);

  const out = new Uint8Array(prog.length * 8);
  const dv = new DataView(out.buffer);
  prog.forEach((ins, i) => {
    dv.setUint16(i * 8, ins.code, true);
    dv.setUint8(i * 8 + 2, ins.jt);
    dv.setUint8(i * 8 + 3, ins.jf);
    dv.setUint32(i * 8 + 4, ins.k >>> 0, true);
  });
  return out;
}
