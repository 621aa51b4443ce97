// libuv's threadpool, seen from the kernel: the thread ids of its threads.
// A call made with koffi's .async runs on whichever pool thread is free, so
// a KVM_RUN issued that way (vmm/ap-pool.ts) can only be interrupted by
// signalling every pool thread. libuv starts all of its threads on first
// use and keeps them, so they are found once: as many blocking reads of one
// eventfd as the pool may have threads are queued, each parks a thread in
// read(2), and /proc/self/task/<tid>/syscall names the threads blocked
// reading that fd. One write then releases them all.

import fs from 'node:fs';
import { closeFd, EFD_CLOEXEC, EFD_NONBLOCK, EFD_SEMAPHORE, eventfd, eventfdRead, eventfdWrite } from './eventfd.js';
import { libcFunc } from './libc.js';
import { threadpoolSize } from './threadpool-size.js';

const readFn = libcFunc('int64_t read(int fd, _Out_ uint8_t *buf, size_t count)');
const SYS_READ = 0; // x86_64
const SETTLE_MS = 30;
const GIVE_UP_MS = 2000;

export { threadpoolSize } from './threadpool-size.js';

/** Thread ids of libuv's pool threads. Call while nothing else keeps them
 * busy (before the backends start): a thread busy elsewhere is not found
 * until it is free, and the search ends once the count has stopped
 * growing for SETTLE_MS. */
export async function findPoolThreads(size = threadpoolSize()): Promise<number[]> {
  const efd = eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE);
  const bufs = Array.from({ length: size }, () => new Uint8Array(8));
  const reads = bufs.map((b) => new Promise<void>((resolve) => readFn.async(efd, b, 8, () => resolve())));
  const unhook = releaseAtExit(() => eventfdWrite(efd, size));
  let tids: number[] = [];
  try {
    const start = Date.now();
    let lastGrowth = start;
    while (tids.length < size && Date.now() - start < GIVE_UP_MS) {
      await new Promise((r) => setTimeout(r, 2));
      const now = readersOf(efd);
      if (now.length > tids.length) { tids = now; lastGrowth = Date.now(); }
      else if (tids.length > 0 && Date.now() - lastGrowth > SETTLE_MS) break;
    }
  } finally {
    eventfdWrite(efd, size);
    await Promise.all(reads);
    unhook();
    closeFd(efd);
  }
  return tids;
}

/** Threads of this process blocked in read(fd). Each file is read through
 * libc, not fs.readFileSync: the searches poll every thread's file every
 * few ms, and Node's argument checks behind each fs call (one shared
 * function) then became hot enough for V8 to compile with TurboFan during
 * start-up at -c 2 and more, ~3 MiB of RSS the first time
 * (test/integration/startup-tiering.test.ts). */
export function readersOf(fd: number): number[] {
  const want = `${SYS_READ} 0x${fd.toString(16)} `;
  const out: number[] = [];
  for (const t of fs.readdirSync('/proc/self/task')) {
    if (readSmallFile(`/proc/self/task/${t}/syscall`).startsWith(want)) out.push(Number(t));
  }
  return out;
}

const openFn = libcFunc('int open(const char *path, int flags)');
const O_RDONLY_CLOEXEC = 0o2000000;
const scratch = new Uint8Array(256);

/** The first bytes of a /proc file as Latin-1, '' when it cannot be read
 * (the thread ended). */
function readSmallFile(path: string): string {
  const fd = openFn(path, O_RDONLY_CLOEXEC) as number;
  if (fd < 0) return '';
  try {
    const n = Number(readFn(fd, scratch, scratch.length));
    return n > 0 ? String.fromCharCode(...scratch.subarray(0, n)) : '';
  } finally {
    closeFd(fd);
  }
}

// An exit nobody planned for (an uncaught exception, process.exit()) tears
// Node down through libuv, which joins every pool thread: one parked in a
// read that only this process's JavaScript would end (the searches here,
// the sandbox's confinement of the pool) or in an AP's KVM_RUN would hold
// the process forever, its status never reported. Whoever parks or runs
// such work registers how to end it; Node runs 'exit' listeners before the
// join, on those paths too.
const exitReleases = new Set<() => void>();
let exitHooked = false;

/** Runs `release` if the process exits while it is registered (it must
 * only make the pool's blocked calls return, synchronously); returns the
 * function that unregisters it. */
export function releaseAtExit(release: () => void): () => void {
  if (!exitHooked) {
    exitHooked = true;
    process.on('exit', () => {
      for (const r of exitReleases) {
        try { r(); } catch { /* the next one still runs */ }
      }
    });
  }
  exitReleases.add(release);
  return () => { exitReleases.delete(release); };
}

// Waits that hold a pool thread for a while (a tap poller's poll(2), up to
// 250 ms) also watch this eventfd: while it is readable they end at once,
// so that the sandbox can park every pool thread without waiting them out
// (vmm/sandbox/pool-threads.ts).
let interruptFd = -1;

/** The eventfd a pool wait watches beside its own descriptor. */
export function poolWaitInterrupt(): number {
  if (interruptFd < 0) interruptFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  return interruptFd;
}

/** Ends the pool's waits (and makes new ones end at once) until
 * resumePoolWaits. */
export function interruptPoolWaits(): void {
  eventfdWrite(poolWaitInterrupt(), 1);
}

export function resumePoolWaits(): void {
  if (interruptFd >= 0) eventfdRead(interruptFd);
}
