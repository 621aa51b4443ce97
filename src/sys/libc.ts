// The one binding to libc, through koffi: the only module besides none
// that loads koffi (kvm.ts calls ioctl through here). koffi and libc.so.6
// are loaded on the first call, not at import, so that modules which only
// may need a system call (the device records bhyve's option parser reads)
// cost nothing until one is made. Every call is synchronous: on a vCPU
// thread a synchronous call costs one kernel round trip, an async one
// ~50 us more. Failures are SysError (the call and errno), or -errno where
// the caller's data path wants no exception.

import { koffi as loadKoffi } from './koffi.js';
import { UserError } from '../user-error.js';

export interface KoffiFunc {
  // koffi converts the result per the prototype: number, bigint, pointer.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  (...args: unknown[]): any;
  async(...args: unknown[]): void;
}
interface Koffi {
  load(path: string): { func(signature: string): KoffiFunc };
  errno(): number;
  address(ptr: unknown): bigint;
  view(ptr: unknown, length: number): ArrayBuffer;
  alloc(type: string, length: number): unknown;
}

let koffiModule: Koffi | undefined;
let libcHandle: { func(signature: string): KoffiFunc } | undefined;

function koffi(): Koffi {
  return (koffiModule ??= loadKoffi() as unknown as Koffi);
}

function lib(): { func(signature: string): KoffiFunc } {
  return (libcHandle ??= koffi().load('libc.so.6'));
}

/** Loads koffi and libc now. Worker threads call it while they load
 * (Node 20 aborts the process when a worker is terminated during koffi's
 * native initialisation, so that must not happen after they report
 * themselves loaded). */
export function preloadLibc(): void {
  lib();
}

/**
 * A libc function by its C prototype (koffi syntax), bound on first use.
 * Calls and `.async` (on libuv's threadpool) go to the real function.
 */
export function libcFunc(signature: string): KoffiFunc {
  let f: KoffiFunc | undefined;
  const call = ((...args: unknown[]) => (f ??= lib().func(signature))(...args)) as KoffiFunc;
  call.async = (...args: unknown[]) => {
    const done = args.pop() as AsyncDone;
    return (f ??= lib().func(signature)).async(...args, holding(args, done));
  };
  return call;
}

type AsyncDone = (err: unknown, r: never) => void;

/** The callback of a koffi async call, made to hold the call's arguments
 * until the call ends: koffi hands a typed array's memory to the pool
 * thread as a bare pointer and keeps no reference to it, so a collection
 * while the call waits or runs would free memory the call still reads or
 * writes (a capset header freed and reused names another pid: EPERM). */
export function holding<D extends AsyncDone>(args: readonly unknown[], done: D): D {
  return ((err: unknown, r: never) => {
    void args;
    done(err, r);
  }) as D;
}

/** The koffi function itself, bound now (call it when first needed): for
 * per-frame paths, where libcFunc's rest-and-spread wrapper costs. */
export function libcBind(signature: string): KoffiFunc {
  return lib().func(signature);
}

const ioctlPtr = libcFunc('int ioctl(int fd, unsigned long req, _Inout_ uint8_t *arg)');
// The KVM_RUN path: bound once, called without the libcFunc wrapper.
let ioctlIntFn: KoffiFunc | undefined;
function ioctlInt(fd: number, req: number, arg: number): number {
  return (ioctlIntFn ??= lib().func('int ioctl(int fd, unsigned long req, unsigned long arg)'))(fd, req, arg) as number;
}
const mmapFn = libcFunc('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)');
const munmapFn = libcFunc('int munmap(void *addr, size_t len)');
// The same calls by address, for mappings placed inside a reserved stretch.
const mmapAtFn = libcFunc('uint64_t mmap(uint64_t addr, size_t len, int prot, int flags, int fd, int64_t off)');
const munmapAtFn = libcFunc('int munmap(uint64_t addr, size_t len)');
const mlockFn = libcFunc('int mlock(void *addr, size_t len)');
const madviseFn = libcFunc('int madvise(void *addr, size_t len, int advice)');
const gettidFn = libcFunc('int gettid()');
const tgkillFn = libcFunc('int tgkill(int tgid, int tid, int sig)');
const strerrorFn = libcFunc('const char *strerror(int errnum)');
const setaffinityFn = libcFunc('int sched_setaffinity(int pid, size_t size, uint8_t *mask)');

export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const PROT_EXEC = 4;
export const MAP_SHARED = 1;
export const MADV_DONTDUMP = 16;
export const MADV_DODUMP = 17;
export const EINTR = 4;
export const EAGAIN = 11;
export const EIO = 5;
export const SIGUSR2 = 12;

/** A failed system call: the call and errno. The host's state (a device
 * missing, a permission, a limit) is the user's to fix, so it is a user
 * error; code that knows better wraps it. */
export class SysError extends UserError {
  override readonly name: string = 'SysError';
  constructor(readonly call: string, readonly errno: number) {
    super(`${call}: ${strerror(errno)}`);
  }
}

/** errno of the last libc call on this thread. */
export function errno(): number {
  return koffi().errno();
}

export function strerror(e: number): string {
  return String(strerrorFn(e));
}

// The throwing ioctls retry when a signal interrupted them: KVM_CREATE_VM
// and friends return EINTR when, say, SIGTERM arrives during start-up, and
// the signal is the run's business (startup-signals.ts), not an error of
// the call. KVM_RUN, where EINTR is the kick, goes through ioctlRaw.

/** ioctl with a pointer argument; returns the result or throws SysError. */
export function ioctl(fd: number, req: number, arg: Uint8Array | null, what: string): number {
  for (;;) {
    const r = arg === null ? ioctlInt(fd, req, 0) : ioctlPtr(fd, req, arg);
    if (r >= 0) return r;
    const e = errno();
    if (e !== EINTR) throw new SysError(what, e);
  }
}

/** ioctl with an integer argument; returns the result or throws SysError. */
export function ioctlValue(fd: number, req: number, arg: number, what: string): number {
  for (;;) {
    const r = ioctlInt(fd, req, arg);
    if (r >= 0) return r;
    const e = errno();
    if (e !== EINTR) throw new SysError(what, e);
  }
}

/** ioctl for the hot path: returns -errno on failure instead of throwing. */
export function ioctlRaw(fd: number, req: number, arg: number): number {
  const r = ioctlInt(fd, req, arg);
  return r < 0 ? -errno() : r;
}

/** ioctlRaw on libuv's threadpool (koffi async): the calling thread's event
 * loop stays free while the call blocks a pool thread; `done` gets the
 * result or -errno back on the calling thread. */
export function ioctlRawAsync(fd: number, req: number, arg: number, done: (r: number) => void): void {
  ioctlIntFn ??= lib().func('int ioctl(int fd, unsigned long req, unsigned long arg)');
  ioctlIntFn.async(fd, req, arg, (err: unknown, r: number) => {
    // koffi hands the pool thread's errno to this callback.
    done(err ? -EIO : r < 0 ? -(errno() || EIO) : r);
  });
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

/** Where each mapping's ArrayBuffer lies in this process, for calls that
 * take host addresses of guest buffers (net-batch.ts). A WeakMap: an
 * unmapped view's entry goes with it. */
const hostBases = new WeakMap<ArrayBufferLike, number>();

function withHostAddress(view: Uint8Array, address: bigint): Uint8Array {
  hostBases.set(view.buffer, Number(address));
  return view;
}

/** The host address of a view's first byte when the view lies in a mapping
 * made here (mmap, anonymousMapping); undefined for any other memory. */
export function hostAddress(view: Uint8Array): number | undefined {
  const base = hostBases.get(view.buffer);
  return base === undefined ? undefined : base + view.byteOffset;
}

export function mmap(length: number, prot: number, fd: number, offset: number, what: string): Mapping {
  const ptr = mmapFn(null, length, prot, MAP_SHARED, fd, BigInt(offset));
  const address = koffi().address(ptr);
  if (address === 0xffffffffffffffffn) throw new SysError(`mmap ${what}`, errno());
  // The view is made on first use: V8 counts an ArrayBuffer over external
  // memory against its external-memory limit (64 MiB at first), and guest
  // RAM crossing it costs a full garbage collection of the thread's heap.
  // The main thread maps RAM for KVM's memory slots (the address alone)
  // and reads it only for the debugger.
  let bytes: Uint8Array | undefined;
  let mapped = true;
  return {
    address,
    get bytes() {
      if (bytes === undefined) bytes = withHostAddress(new Uint8Array(koffi().view(ptr, length)), address);
      return bytes;
    },
    length,
    ptr,
    unmap() {
      if (mapped) { munmapFn(ptr, length); mapped = false; }
    },
  };
}

const MAP_ANONYMOUS = 0x20;

/** Zeroed, page-aligned memory of this process (shared anonymous), e.g.
 * for pages a device lets the guest map through a KVM memory slot. */
export function anonymousMapping(length: number, what: string): Mapping {
  const ptr = mmapFn(null, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0n);
  const address = koffi().address(ptr);
  if (address === 0xffffffffffffffffn) throw new SysError(`mmap ${what}`, errno());
  const bytes = withHostAddress(new Uint8Array(koffi().view(ptr, length)), address);
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

const MAP_PRIVATE = 0x02;
const MAP_FIXED = 0x10;
const MAP_NORESERVE = 0x4000;
const MAP_FAILED = 0xffffffffffffffffn;

/**
 * Maps some areas of `fd` (offsets relative to `offset`, page aligned) at
 * the same distances inside one reserved stretch of `length` bytes: a
 * VFIO BAR whose MSI-X table pages the kernel will not let a process map.
 * The pages between stay reserved and inaccessible (PROT_NONE). Only the
 * address is offered (no view: touching a hole would fault).
 */
export function mmapAreas(length: number, fd: number, offset: number, areas: ReadonlyArray<{ offset: number; size: number }>, what: string): Mapping {
  const base = BigInt(mmapAtFn(0n, length, 0, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0n));
  if (base === MAP_FAILED) throw new SysError(`mmap ${what}`, errno());
  for (const a of areas) {
    const at = BigInt(mmapAtFn(base + BigInt(a.offset), a.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, BigInt(offset + a.offset)));
    if (at === MAP_FAILED) {
      const e = errno();
      munmapAtFn(base, length);
      throw new SysError(`mmap ${what} +0x${a.offset.toString(16)}`, e);
    }
  }
  let mapped = true;
  return {
    address: base,
    get bytes(): Uint8Array { throw new Error(`${what}: a mapping with holes has no view`); },
    length,
    ptr: null,
    unmap() {
      if (mapped) { munmapAtFn(base, length); mapped = false; }
    },
  };
}

/** Zeroed native memory that stays put (for kernel structures that hold a
 * pointer, e.g. KVM_GET_DIRTY_LOG's bitmap), with a view of it. Never freed. */
export function nativeBuffer(length: number): { address: bigint; bytes: Uint8Array } {
  const ptr = koffi().alloc('uint8_t', length);
  const bytes = new Uint8Array(koffi().view(ptr, length));
  bytes.fill(0);
  return { address: koffi().address(ptr), bytes };
}

export function mlock(m: Mapping): void {
  if (mlockFn(m.ptr, m.length) < 0) throw new SysError('mlock', errno());
}

export function madvise(m: Mapping, advice: number): void {
  madviseFn(m.ptr, m.length, advice);
}

export function gettid(): number {
  return gettidFn() as number;
}

export function tgkill(tgid: number, tid: number, sig: number): number {
  return tgkillFn(tgid, tid, sig) as number;
}

/** Pins the calling thread to the given host CPUs. */
export function pinThisThread(cpus: number[]): void {
  const mask = new Uint8Array(128);
  for (const c of cpus) mask[c >> 3] |= 1 << (c & 7);
  if (setaffinityFn(0, mask.length, mask) < 0) throw new SysError('sched_setaffinity', errno());
}
