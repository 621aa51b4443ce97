// The seccomp program, run by a classic-BPF interpreter here: which calls it
// allows, refuses or answers ENOSYS, and that it is a valid program (every
// jump inside it, every path ending in a return). The list's numbers are
// checked against the kernel headers where they are installed.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  AUDIT_ARCH_X86_64, buildSeccompFilter, ENOSYS, EPERM, SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO,
  SECCOMP_RET_KILL_PROCESS, SECCOMP_RET_LOG,
} from '../../src/vmm/sandbox/seccomp-filter.js';
import { IOMMUFD, VFIO } from '../../src/sys/vfio-abi.js';
import { ALLOWED_SYSCALLS, CHECKED_SYSCALLS, SHARE_READ_SYSCALLS, SHARE_WRITE_SYSCALLS } from '../../src/vmm/sandbox/syscall-allowlist.js';

const PID = 4242;
const REFUSE = SECCOMP_RET_ERRNO | EPERM;

/** Runs the program on one struct seccomp_data. */
function run(prog: Uint8Array, nr: number, args: number[] = [], arch = AUDIT_ARCH_X86_64): number {
  const data = new DataView(new ArrayBuffer(64));
  data.setInt32(0, nr, true);
  data.setUint32(4, arch, true);
  args.forEach((a, i) => data.setBigUint64(16 + 8 * i, BigInt(a), true));
  const dv = new DataView(prog.buffer, prog.byteOffset, prog.byteLength);
  const n = prog.length / 8;
  let acc = 0;
  for (let pc = 0; pc < n;) {
    const code = dv.getUint16(pc * 8, true);
    const jt = dv.getUint8(pc * 8 + 2);
    const jf = dv.getUint8(pc * 8 + 3);
    const k = dv.getUint32(pc * 8 + 4, true);
    switch (code) {
      case 0x20: acc = data.getUint32(k, true); pc++; break;
      case 0x15: pc += 1 + (acc === k ? jt : jf); break;
      case 0x35: pc += 1 + (acc >= k ? jt : jf); break;
      case 0x45: pc += 1 + ((acc & k) !== 0 ? jt : jf); break;
      case 0x06: return k >>> 0;
      default: throw new Error(`unexpected BPF opcode 0x${code.toString(16)} at ${pc}`);
    }
  }
  throw new Error('ran off the end of the program');
}

const prog = buildSeccompFilter({ refuse: REFUSE, pid: PID });
const C = CHECKED_SYSCALLS;

describe('seccomp filter', () => {
  it('is a valid program: jumps stay inside, the last instruction returns, under BPF_MAXINSNS', () => {
    const dv = new DataView(prog.buffer);
    const n = prog.length / 8;
    expect(n).toBeLessThanOrEqual(4096);
    for (let pc = 0; pc < n; pc++) {
      const code = dv.getUint16(pc * 8, true);
      if ((code & 0x07) === 0x05) {
        expect(pc + 1 + dv.getUint8(pc * 8 + 2)).toBeLessThan(n);
        expect(pc + 1 + dv.getUint8(pc * 8 + 3)).toBeLessThan(n);
      }
    }
    expect(dv.getUint16((n - 1) * 8, true)).toBe(0x06);
  });

  it('refuses new sockets (socket, connect, bind, listen) unless a slirp backend asked for them', () => {
    for (const nr of [41, 42, 49, 50]) expect(run(prog, nr, [2, 1, 0]), `syscall ${nr}`).toBe(REFUSE);
    const withSockets = buildSeccompFilter({ refuse: REFUSE, pid: PID, newSockets: true });
    for (const nr of [41, 42, 49, 50]) expect(run(withSockets, nr, [2, 1, 0]), `syscall ${nr}`).toBe(SECCOMP_RET_ALLOW);
    expect(run(withSockets, 59 /* execve */)).toBe(REFUSE);
  });

  it('allows every call on the list, with any arguments', () => {
    for (const [name, nr] of ALLOWED_SYSCALLS) expect(run(prog, nr, [0xffffffff, 7, 7]), name).toBe(SECCOMP_RET_ALLOW);
  });

  it('refuses what a taken-over VMM would want: exec, fork, new sockets, ptrace, mount, capset, setuid, bpf', () => {
    const refused = { execve: 59, execveat: 322, fork: 57, vfork: 58, socket: 41, connect: 42, bind: 49, ptrace: 101,
      mount: 165, capset: 126, setuid: 105, bpf: 321, init_module: 175, unshare: 272, mkdir: 83, rename: 82,
      creat: 85, io_uring_setup: 425, process_vm_writev: 311, kexec_load: 246, seccomp: 317 };
    for (const [name, nr] of Object.entries(refused)) expect(run(prog, nr), name).toBe(REFUSE);
  });

  it('ioctl: KVM requests pass, TIOCSTI and TIOCLINUX (typing into the terminal) do not', () => {
    expect(run(prog, C.ioctl, [5, 0xae80 /* KVM_RUN */])).toBe(SECCOMP_RET_ALLOW);
    expect(run(prog, C.ioctl, [5, 0xc008ae67 /* KVM_IRQ_LINE_STATUS */])).toBe(SECCOMP_RET_ALLOW);
    expect(run(prog, C.ioctl, [0, 0x5412])).toBe(REFUSE);
    expect(run(prog, C.ioctl, [0, 0x541c])).toBe(REFUSE);
    expect(run(prog, C.ioctl, [0, 0x5401 /* TCGETS */])).toBe(SECCOMP_RET_ALLOW);
  });

  it('passthru of a host device at run time: its VFIO/iommufd ioctls, pread64/pwrite64 on regions, eventfd2, mmap', () => {
    // vfio-backend.ts: SET_IRQS when the guest enables MSI/MSI-X, RESET on FLR,
    // MAP/UNMAP as the guest's IOMMU mappings change (either API).
    for (const req of [VFIO.DEVICE_SET_IRQS, VFIO.DEVICE_RESET, VFIO.IOMMU_MAP_DMA, VFIO.IOMMU_UNMAP_DMA, IOMMUFD.IOAS_MAP, IOMMUFD.IOAS_UNMAP]) {
      expect([req, run(prog, C.ioctl, [7, req])]).toEqual([req, SECCOMP_RET_ALLOW]);
    }
    for (const name of ['pread64', 'pwrite64', 'eventfd2', 'mmap', 'munmap']) {
      const nr = ALLOWED_SYSCALLS.find(([n]) => n === name)![1];
      expect([name, run(prog, nr, [7])]).toEqual([name, SECCOMP_RET_ALLOW]);
    }
    // Opening a VFIO file happens before the sandbox; afterwards an open with O_CREAT is still refused.
    expect(run(prog, C.openat, [-100, 0, 0o100 | 2])).toBe(REFUSE);
  });

  it('clone makes threads only; clone3 and openat2 answer ENOSYS so that libc falls back', () => {
    const thread = 0x3d0f00; // glibc pthread_create's flags, CLONE_THREAD included
    expect(run(prog, C.clone, [thread])).toBe(SECCOMP_RET_ALLOW);
    expect(run(prog, C.clone, [0x1200011 /* fork() */])).toBe(REFUSE);
    expect(run(prog, C.clone3, [0])).toBe(SECCOMP_RET_ERRNO | ENOSYS);
    expect(run(prog, C.openat2, [0])).toBe(SECCOMP_RET_ERRNO | ENOSYS);
  });

  it('open and openat of existing files only: O_CREAT and O_TMPFILE are refused', () => {
    expect(run(prog, C.openat, [-100 >>> 0, 0, 0o2000002 /* O_RDWR|O_CLOEXEC */])).toBe(SECCOMP_RET_ALLOW);
    expect(run(prog, C.openat, [-100 >>> 0, 0, 0o101 /* O_WRONLY|O_CREAT */])).toBe(REFUSE);
    expect(run(prog, C.openat, [-100 >>> 0, 0, 0o20200002 /* O_TMPFILE|O_RDWR */])).toBe(REFUSE);
    expect(run(prog, C.open, [0, 0o1101 /* O_CREAT|O_TRUNC|O_WRONLY */])).toBe(REFUSE);
    expect(run(prog, C.open, [0, 0])).toBe(SECCOMP_RET_ALLOW);
  });

  it('virtio-9p shares: fstatfs for any; for a writable one the *at() calls and O_CREAT, never O_TMPFILE', () => {
    const names = (list: ReadonlyArray<readonly [string, number]>) => list.map(([, nr]) => nr);
    const ro = buildSeccompFilter({ refuse: REFUSE, pid: PID, shares: 'ro' });
    const rw = buildSeccompFilter({ refuse: REFUSE, pid: PID, shares: 'rw' });
    for (const nr of names(SHARE_READ_SYSCALLS)) {
      expect(run(prog, nr)).toBe(REFUSE);
      expect(run(ro, nr)).toBe(SECCOMP_RET_ALLOW);
    }
    for (const nr of names(SHARE_WRITE_SYSCALLS)) {
      expect(run(prog, nr)).toBe(REFUSE);
      expect(run(ro, nr)).toBe(REFUSE);
      expect(run(rw, nr)).toBe(SECCOMP_RET_ALLOW);
    }
    expect(run(ro, C.openat, [-100 >>> 0, 0, 0o101])).toBe(REFUSE);
    expect(run(rw, C.openat, [3, 0, 0o2400302 /* O_RDWR|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC */])).toBe(SECCOMP_RET_ALLOW);
    expect(run(rw, C.openat, [3, 0, 0o20200002 /* O_TMPFILE|O_RDWR */])).toBe(REFUSE);
    expect(run(rw, 59 /* execve */)).toBe(REFUSE);
  });

  it('signals reach this process only', () => {
    expect(run(prog, C.tgkill, [PID, PID + 3, 12])).toBe(SECCOMP_RET_ALLOW);
    expect(run(prog, C.tgkill, [1, 1, 9])).toBe(REFUSE);
    expect(run(prog, C.kill, [PID, 15])).toBe(SECCOMP_RET_ALLOW);
    expect(run(prog, C.kill, [1, 9])).toBe(REFUSE);
    expect(run(prog, C.kill, [0xffffffff /* -1: everyone */, 9])).toBe(REFUSE);
  });

  it('rename only where Landlock confines it (the filter is told so)', () => {
    for (const nr of [C.rename, C.renameat, C.renameat2]) {
      expect(run(prog, nr)).toBe(REFUSE);
      expect(run(buildSeccompFilter({ refuse: REFUSE, pid: PID, renames: true }), nr)).toBe(SECCOMP_RET_ALLOW);
    }
  });

  it('prctl: thread names only', () => {
    expect(run(prog, C.prctl, [15])).toBe(SECCOMP_RET_ALLOW);
    expect(run(prog, C.prctl, [16])).toBe(SECCOMP_RET_ALLOW);
    expect(run(prog, C.prctl, [4 /* PR_SET_DUMPABLE */, 1])).toBe(REFUSE);
  });

  it('other ABIs: x32 numbers are refused, i386 (another arch) kills', () => {
    expect(run(prog, 0x40000000 | 59)).toBe(REFUSE);
    expect(run(prog, 0x40000000 | 0)).toBe(REFUSE);
    expect(run(prog, 11, [], 0x40000003 /* AUDIT_ARCH_I386 */)).toBe(SECCOMP_RET_KILL_PROCESS);
  });

  it('log mode lets refused calls through the kernel log instead', () => {
    const logging = buildSeccompFilter({ refuse: SECCOMP_RET_LOG, pid: PID });
    expect(run(logging, 59)).toBe(SECCOMP_RET_LOG);
    expect(run(logging, 0)).toBe(SECCOMP_RET_ALLOW);
    expect(run(logging, C.clone3)).toBe(SECCOMP_RET_ERRNO | ENOSYS);
  });

  const header = '/usr/include/x86_64-linux-gnu/asm/unistd_64.h';
  it.skipIf(!fs.existsSync(header))('numbers match the kernel headers (skipped: no linux-libc-dev headers)', () => {
    const nrs = new Map<string, number>();
    for (const m of fs.readFileSync(header, 'utf8').matchAll(/^#define __NR_(\w+) (\d+)$/gm)) nrs.set(m[1], Number(m[2]));
    for (const [name, nr] of [...ALLOWED_SYSCALLS, ...SHARE_READ_SYSCALLS, ...SHARE_WRITE_SYSCALLS]) expect(nrs.get(name), name).toBe(nr);
    for (const [name, nr] of Object.entries(CHECKED_SYSCALLS)) expect(nrs.get(name), name).toBe(nr);
  });
});
