// The system calls a sandboxed bhyve may still make (x86-64 numbers), and
// the few whose arguments are checked. This file is the one list: the
// seccomp filter (seccomp-filter.ts) is built from it and nothing else.
//
// How the list was made: `strace -f -o trace bin/bhyve ...` over the test
// guests (every guest in build/guests, with 1 and 2 vCPUs, virtio-blk with
// and without iothread=true, virtio-net on a tap, virtio-console sockets,
// com1 on stdio and on tcp=, bhyvectl requests, SIGTERM/SIGINT, guest
// power-off, reset and triple fault), keeping the calls made after the
// seccomp(2) call that installs the filter. Who makes them: the vCPU loops
// (ioctl KVM_RUN, tgkill kicks), the device models (preadv/pwritev on
// images, read/write on taps, eventfds; virtio-input's read, write and
// EVIOCG* ioctls on the evdev it opened before the sandbox went up;
// passthru's VFIO/iommufd ioctls, pread64/pwrite64 on the device file and
// eventfd2 for its interrupts, on files opened before), the main thread's libuv loop
// (epoll, accept4 on the control socket and com1 tcp listener), V8 and its
// GC threads (mmap, mprotect, madvise, futex), Node starting a worker
// thread (virtio-blk's iothread starts at each DRIVER_OK: clone, statx,
// openat, readlink on our own modules) and the clean-up at exit (unlink,
// rmdir, getdents64). When a new code path needs a call that is missing
// here, the call fails with EPERM; run bhyve with -o security.sandbox_log=true
// and read the kernel log (`dmesg | grep type=1326`: each record names the
// call by number, `syscall=59`; `grep -w 59
// /usr/include/x86_64-linux-gnu/asm/unistd_64.h` names it), or strace -f
// the run, then add the call below with who needs it.
//
// Measured (12 runs: the exit-* guests, smp and timers with 2 vCPUs,
// virtio-blk with and without the iothread, fw_cfg, echo with bhyvectl
// requests, irq-echo on com1 tcp=): 58,859 calls after the filter went up,
// 50 different ones, all below; the only refusals were clone3 (ENOSYS, by
// design) and Landlock's EACCES for /proc and /etc/ld.so.cache files a new
// worker thread probes and does without.

/** Calls allowed with any arguments, the most frequent first (the filter
 * tests them in this order). */
export const ALLOWED_SYSCALLS: ReadonlyArray<readonly [name: string, nr: number]> = [
  // vCPU loop, device models, event loop, V8
  ['futex', 202], ['read', 0], ['write', 1], ['epoll_pwait', 281], ['epoll_wait', 232],
  ['readv', 19], ['writev', 20], ['pread64', 17], ['pwrite64', 18],
  ['preadv', 295], ['pwritev', 296], ['preadv2', 327], ['pwritev2', 328],
  ['mmap', 9], ['mprotect', 10], ['munmap', 11], ['madvise', 28], ['mremap', 25], ['brk', 12],
  ['close', 3], ['fstat', 5], ['newfstatat', 262], ['statx', 332], ['lseek', 8],
  ['fcntl', 72], ['dup', 32], ['dup3', 292], ['pipe2', 293], ['eventfd2', 290],
  ['epoll_ctl', 233], ['epoll_create1', 291], ['poll', 7], ['ppoll', 271],
  ['fsync', 74], ['fdatasync', 75], ['fallocate', 285], ['flock', 73], ['ftruncate', 77],
  ['getdents64', 217], ['readlink', 89], ['readlinkat', 267], ['access', 21],
  ['faccessat', 269], ['faccessat2', 439], ['getcwd', 79],
  // Clean-up at exit: the VM directory and sockets; Landlock confines
  // these to the VM's files.
  ['unlink', 87], ['unlinkat', 263], ['rmdir', 84],
  // Sockets that are already open: the control socket and com1 tcp=
  // listeners accept, clients are read and written. No new sockets.
  ['accept4', 288], ['accept', 43], ['recvfrom', 45], ['recvmsg', 47], ['sendto', 44],
  ['sendmsg', 46], ['shutdown', 48], ['getsockopt', 55], ['setsockopt', 54],
  ['getsockname', 51], ['getpeername', 52],
  // Signals and threads (the kick is tgkill, checked below)
  ['rt_sigaction', 13], ['rt_sigprocmask', 14], ['rt_sigreturn', 15], ['sigaltstack', 131],
  ['restart_syscall', 219], ['gettid', 186], ['getpid', 39], ['getppid', 110],
  ['set_robust_list', 273], ['get_robust_list', 274], ['rseq', 334], ['set_tid_address', 218],
  ['exit', 60], ['exit_group', 231], ['sched_yield', 24], ['sched_getaffinity', 204],
  ['sched_getparam', 143], ['sched_getscheduler', 145], ['membarrier', 324],
  ['arch_prctl', 158], ['prlimit64', 302], ['getrlimit', 97],
  // Time, identity, randomness (read-only questions)
  ['clock_gettime', 228], ['clock_getres', 229], ['clock_nanosleep', 230], ['nanosleep', 35],
  ['gettimeofday', 96], ['getrusage', 98], ['times', 100], ['sysinfo', 99], ['uname', 63],
  ['getuid', 102], ['geteuid', 107], ['getgid', 104], ['getegid', 108],
  ['getresuid', 118], ['getresgid', 120], ['capget', 125], ['getrandom', 318],
  ['pkey_alloc', 330], ['pkey_mprotect', 329],
];

/** What a virtio-9p file server (devices/virtio/p9/) adds, only when a
 * share is configured: reading a share needs fstatfs (Tstatfs); changing
 * one needs the *at() calls that make, link, rename and change files
 * (Landlock confines them to the shares; openat with O_CREAT is let
 * through then too, see seccomp-filter.ts). */
export const SHARE_READ_SYSCALLS: ReadonlyArray<readonly [name: string, nr: number]> = [
  ['fstatfs', 138],
];
export const SHARE_WRITE_SYSCALLS: ReadonlyArray<readonly [name: string, nr: number]> = [
  ['mkdirat', 258], ['mknodat', 259], ['fchownat', 260], ['linkat', 265], ['symlinkat', 266],
  ['fchmodat', 268], ['fchmod', 91], ['utimensat', 280],
];
/** New sockets, allowed only when a slirp network backend runs inside
 * bhyve (its thread opens the guest's TCP/UDP/ICMP connections and the
 * hostfwd listeners, as bhyve's slirp helper process does). */
export const SOCKET_SYSCALLS: ReadonlyArray<readonly [name: string, nr: number]> = [
  ['socket', 41], ['connect', 42], ['bind', 49], ['listen', 50],
];

/** Calls allowed only with some arguments (seccomp-filter.ts). */
export const CHECKED_SYSCALLS = {
  /** Any request but TIOCSTI and TIOCLINUX, which would type into the
   * terminal bhyve was started from (a way out to the operator's shell).
   * KVM's ioctls on the VM and vCPU fds stay allowed. */
  ioctl: 16,
  /** Threads only (CLONE_THREAD): Node's workers, libuv and V8 threads. */
  clone: 56,
  /** Opening existing files only (no O_CREAT, no O_TMPFILE). */
  open: 2,
  openat: 257,
  /** Signals to this process only (the vCPU kick is tgkill(pid, tid, SIGUSR2)). */
  kill: 62,
  tgkill: 234,
  /** Thread names only (PR_SET_NAME, PR_GET_NAME). */
  prctl: 157,
  /** Only where Landlock confines them (FilterOptions.renames): the VM
   * directory leaves its name in one step when bhyve destroys it. */
  rename: 82,
  renameat: 264,
  renameat2: 316,
  /** Answered ENOSYS so that glibc falls back to clone(2), whose flags a
   * filter can see, and open(2) callers fall back to openat. */
  clone3: 435,
  openat2: 437,
} as const;

export const TIOCSTI = 0x5412;
export const TIOCLINUX = 0x541c;
export const CLONE_THREAD = 0x10000;
export const O_CREAT = 0o100;
export const O_TMPFILE_BIT = 0o20000000;
export const PR_SET_NAME = 15;
export const PR_GET_NAME = 16;
