// The few libc calls the vmm needs, through koffi. Only this module and
// kvm.ts touch koffi. Every call is synchronous: on a vCPU thread a
// synchronous call costs one kernel round trip, an async one ~50 us more.

import koffi from 'koffi';

const lib = koffi.load('libc.so.6');

const ioctlPtr = lib.func('int ioctl(int fd, unsigned long req, _Inout_ uint8_t *arg)');
const ioctlInt = lib.func('int ioctl(int fd, unsigned long req, unsigned long arg)');
const mmapFn = lib.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)');
const munmapFn = lib.func('int munmap(void *addr, size_t len)');
const mlockFn = lib.func('int mlock(void *addr, size_t len)');
const madviseFn = lib.func('int madvise(void *addr, size_t len, int advice)');
const gettidFn = lib.func('int gettid()');
const tgkillFn = lib.func('int tgkill(int tgid, int tid, int sig)');
const strerrorFn = lib.func('const char *strerror(int errnum)');
const setaffinityFn = lib.func('int sched_setaffinity(int pid, size_t size, uint8_t *mask)');

export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const PROT_EXEC = 4;
export const MAP_SHARED = 1;
export const MADV_DONTDUMP = 16;
export const MADV_DODUMP = 17;
export const EINTR = 4;
export const EAGAIN = 11;
export const SIGUSR2 = 12;

export class SysError extends Error {
  constructor(readonly call: string, readonly errno: number) {
    super(`${call}: ${strerror(errno)}`);
  }
}

export function errno(): number {
  return koffi.errno();
}

export function strerror(e: number): string {
  return String(strerrorFn(e));
}

/** ioctl with a pointer argument; returns the result or throws SysError. */
export function ioctl(fd: number, req: number, arg: Uint8Array | null, what: string): number {
  const r = arg === null ? ioctlInt(fd, req, 0) : ioctlPtr(fd, req, arg);
  if (r < 0) throw new SysError(what, koffi.errno());
  return r;
}

/** ioctl with an integer argument; returns the result or throws SysError. */
export function ioctlValue(fd: number, req: number, arg: number, what: string): number {
  const r = ioctlInt(fd, req, arg);
  if (r < 0) throw new SysError(what, koffi.errno());
  return r;
}

/** ioctl for the hot path: returns -errno on failure instead of throwing. */
export function ioctlRaw(fd: number, req: number, arg: number): number {
  const r = ioctlInt(fd, req, arg);
  return r < 0 ? -koffi.errno() : r;
}

/** A host mapping: its address (for KVM) and a zero-copy view of its bytes. */
export interface Mapping {
  readonly address: bigint;
  readonly bytes: Uint8Array;
  readonly length: number;
  /** koffi's pointer object, for passing the mapping back to libc. */
  readonly ptr: unknown;
  unmap(): void;
}

export function mmap(length: number, prot: number, fd: number, offset: number, what: string): Mapping {
  const ptr = mmapFn(null, length, prot, MAP_SHARED, fd, BigInt(offset));
  const address = koffi.address(ptr) as bigint;
  if (address === 0xffffffffffffffffn) throw new SysError(`mmap ${what}`, koffi.errno());
  const bytes = new Uint8Array(koffi.view(ptr, length));
  let mapped = true;
  return {
    address,
    bytes,
    length,
    ptr,
    unmap() {
      if (mapped) { munmapFn(ptr, length); mapped = false; }
    },
  };
}

/** Zeroed native memory that stays put (for kernel structures that hold a
 * pointer, e.g. KVM_GET_DIRTY_LOG's bitmap), with a view of it. */
export function nativeBuffer(length: number): { address: bigint; bytes: Uint8Array } {
  const ptr = koffi.alloc('uint8_t', length);
  const bytes = new Uint8Array(koffi.view(ptr, length));
  bytes.fill(0);
  return { address: koffi.address(ptr) as bigint, bytes };
}

export function mlock(m: Mapping): void {
  if (mlockFn(m.ptr, m.length) < 0) throw new SysError('mlock', koffi.errno());
}

export function madvise(m: Mapping, advice: number): void {
  madviseFn(m.ptr, m.length, advice);
}

export function gettid(): number {
  return gettidFn();
}

export function tgkill(tgid: number, tid: number, sig: number): number {
  return tgkillFn(tgid, tid, sig);
}

/** Pins the calling thread to the given host CPUs. */
export function pinThisThread(cpus: number[]): void {
  const mask = new Uint8Array(128);
  for (const c of cpus) mask[c >> 3] |= 1 << (c & 7);
  if (setaffinityFn(0, mask.length, mask) < 0) throw new SysError('sched_setaffinity', koffi.errno());
}
