// eventfd(2) and its 8-byte counter (libc.ts): the doorbells KVM's
// ioeventfd (guest notify -> kernel -> fd) and irqfd (fd -> kernel ->
// interrupt) work with. Synchronous calls; a blocking read parks only the
// calling thread (an iothread worker), never the event loop of another.

import { errno, libcFunc, SysError } from './libc.js';

const eventfdFn = libcFunc('int eventfd(unsigned int initval, int flags)');
const readFn = libcFunc('int64_t read(int fd, _Out_ uint8_t *buf, size_t count)');
const writeFn = libcFunc('int64_t write(int fd, const uint8_t *buf, size_t count)');
const closeFn = libcFunc('int close(int fd)');

export const EFD_SEMAPHORE = 1;
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
const EINTR = 4;
const EAGAIN = 11;

/** A new eventfd; throws SysError on failure. */
export function eventfd(initval = 0, flags = EFD_CLOEXEC): number {
  const fd = eventfdFn(initval, flags) as number;
  if (fd < 0) throw new SysError('eventfd', errno());
  return fd;
}

/** Reads and clears the counter: blocks until it is nonzero (unless the fd
 * is non-blocking: then 0n when it is zero). EINTR is retried. Returns the
 * count, or -errno as a negative bigint on another error. */
export function eventfdRead(fd: number, buf: Uint8Array = new Uint8Array(8)): bigint {
  for (;;) {
    const r = Number(readFn(fd, buf, 8));
    if (r === 8) return new DataView(buf.buffer, buf.byteOffset, 8).getBigUint64(0, true);
    const e = errno();
    if (r < 0 && e === EINTR) continue;
    if (r < 0 && e === EAGAIN) return 0n;
    return -BigInt(e || 5);
  }
}

const one = new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0]);

/** Adds `n` (default 1) to the counter, waking a reader; 0 or -errno. */
export function eventfdWrite(fd: number, n = 1): number {
  const b = n === 1 ? one : new Uint8Array(8);
  if (n !== 1) new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  for (;;) {
    const r = Number(writeFn(fd, b, 8));
    if (r === 8) return 0;
    const e = errno();
    if (r < 0 && e === EINTR) continue;
    return -(e || 5);
  }
}

export function closeFd(fd: number): void {
  closeFn(fd);
}
