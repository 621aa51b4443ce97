// UNIX stream sockets that carry file descriptors (SCM_RIGHTS), through
// libc (koffi): Node's net module cannot pass descriptors, and vfio-user
// hands guest-memory files, region files and eventfds across its socket.
// Calls are synchronous and block only the calling thread: the vfio-user
// client runs on the device thread, where a region access must finish
// before the vCPU re-enters the guest.
//
// struct msghdr, iovec and the control buffer live in native memory (one
// scratch block per thread, grown on demand): the kernel reads pointers
// to them, which a JavaScript buffer cannot give. Payloads are copied in
// and out of that block.

import { errno, libcFunc, nativeBuffer, strerror, SysError, EINTR, EAGAIN } from './libc.js';

const socketFn = libcFunc('int socket(int domain, int type, int protocol)');
const socketpairFn = libcFunc('int socketpair(int domain, int type, int protocol, _Out_ int *sv)');
const connectFn = libcFunc('int connect(int fd, const uint8_t *addr, uint32_t len)');
const bindFn = libcFunc('int bind(int fd, const uint8_t *addr, uint32_t len)');
const listenFn = libcFunc('int listen(int fd, int backlog)');
const acceptFn = libcFunc('int accept4(int fd, void *addr, void *len, int flags)');
// The msghdr is passed by address (native scratch memory), as an integer.
const sendmsgFn = libcFunc('int64_t sendmsg(int fd, uint64_t msg, int flags)');
const recvmsgFn = libcFunc('int64_t recvmsg(int fd, uint64_t msg, int flags)');
const closeFn = libcFunc('int close(int fd)');
const setsockoptFn = libcFunc('int setsockopt(int fd, int level, int name, const uint8_t *value, uint32_t len)');
const pollFn = libcFunc('int poll(_Inout_ uint8_t *fds, unsigned long nfds, int timeout)');

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_RCVTIMEO = 20;
const ETIMEDOUT = 110;
const SCM_RIGHTS = 1;
const MSG_NOSIGNAL = 0x4000;
const MSG_WAITALL = 0x100;
const MSG_CTRUNC = 0x8;
const MSG_CMSG_CLOEXEC = 0x40000000;
const SUN_PATH_MAX = 108;
export const POLLIN = 0x1;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;

/** Most descriptors one message carries (vfio-user's max_msg_fds we offer). */
export const MAX_FDS_PER_MESSAGE = 16;

// Scratch layout: msghdr at 0 (56 bytes), iovec at 64, control at 128
// (cmsghdr 16 + 4 per fd, rounded to 8), data from 256.
const MSGHDR = 0;
const IOVEC = 64;
const CONTROL = 128;
const CONTROL_SPACE = 16 + 8 * Math.ceil((4 * MAX_FDS_PER_MESSAGE) / 8);
const DATA = 256;

let scratch: { address: bigint; bytes: Uint8Array; view: DataView } | undefined;
function scratchFor(dataLength: number): { address: bigint; bytes: Uint8Array; view: DataView } {
  if (!scratch || scratch.bytes.length < DATA + dataLength) {
    // Old blocks are never freed (nativeBuffer): grow in big steps.
    const size = DATA + Math.max(dataLength, 64 * 1024, 2 * (scratch?.bytes.length ?? 0));
    const b = nativeBuffer(size);
    scratch = { ...b, view: new DataView(b.bytes.buffer, b.bytes.byteOffset, b.bytes.length) };
  }
  return scratch;
}

function sockaddrUn(path: string): Uint8Array {
  const p = Buffer.from(path);
  if (p.length === 0 || p.length >= SUN_PATH_MAX) throw new SysError(`socket path "${path}" (at most ${SUN_PATH_MAX - 1} bytes)`, 36 /* ENAMETOOLONG */);
  const a = new Uint8Array(2 + SUN_PATH_MAX);
  new DataView(a.buffer).setUint16(0, AF_UNIX, true);
  a.set(p, 2);
  return a;
}

function newSocket(): number {
  const fd = socketFn(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) throw new SysError('socket(AF_UNIX)', errno());
  return fd;
}

/** Connects to the UNIX stream socket at `path`. */
export function unixConnect(path: string): number {
  const fd = newSocket();
  const a = sockaddrUn(path);
  for (;;) {
    if ((connectFn(fd, a, a.length) as number) === 0) return fd;
    const e = errno();
    if (e === EINTR) continue;
    closeFn(fd);
    throw new SysError(`connect ${path}`, e);
  }
}

/** Binds and listens on `path` (which must not exist). */
export function unixListen(path: string, backlog = 4): number {
  const fd = newSocket();
  const a = sockaddrUn(path);
  if ((bindFn(fd, a, a.length) as number) < 0 || (listenFn(fd, backlog) as number) < 0) {
    const e = errno();
    closeFn(fd);
    throw new SysError(`listen on ${path}`, e);
  }
  return fd;
}

/** Accepts one connection (blocking). */
export function unixAccept(fd: number): number {
  for (;;) {
    const c = acceptFn(fd, null, null, SOCK_CLOEXEC) as number;
    if (c >= 0) return c;
    const e = errno();
    if (e !== EINTR) throw new SysError('accept', e);
  }
}

/** A connected pair (tests, in-process peers). */
export function unixSocketPair(): [number, number] {
  const sv = new Int32Array(2);
  if ((socketpairFn(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) as number) < 0) throw new SysError('socketpair', errno());
  return [sv[0], sv[1]];
}

/** A receive on `fd` waiting longer than `ms` fails with ETIMEDOUT (SO_RCVTIMEO). */
export function setReceiveTimeout(fd: number, ms: number): void {
  const tv = new Uint8Array(16);
  const v = new DataView(tv.buffer);
  v.setBigInt64(0, BigInt(Math.floor(ms / 1000)), true);
  v.setBigInt64(8, BigInt((ms % 1000) * 1000), true);
  if ((setsockoptFn(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16) as number) < 0) throw new SysError('setsockopt SO_RCVTIMEO', errno());
}

export function closeSocket(fd: number): void {
  closeFn(fd);
}

/** Sends all of `data` with `fds` attached to its first byte (SCM_RIGHTS).
 * Throws SysError (EPIPE when the peer is gone). */
export function sendWithFds(fd: number, data: Uint8Array, fds: readonly number[] = []): void {
  if (fds.length > MAX_FDS_PER_MESSAGE) throw new SysError(`sendmsg with ${fds.length} descriptors`, 7 /* E2BIG */);
  const s = scratchFor(data.length);
  s.bytes.set(data, DATA);
  let sent = 0;
  let withFds = fds.length > 0;
  while (sent < data.length || (data.length === 0 && withFds)) {
    s.bytes.fill(0, 0, DATA);
    s.view.setBigUint64(IOVEC, s.address + BigInt(DATA + sent), true);
    s.view.setBigUint64(IOVEC + 8, BigInt(data.length - sent), true);
    s.view.setBigUint64(MSGHDR + 16, s.address + BigInt(IOVEC), true);
    s.view.setBigUint64(MSGHDR + 24, 1n, true);
    if (withFds) {
      const len = 16 + 4 * fds.length;
      s.view.setBigUint64(CONTROL, BigInt(len), true);
      s.view.setInt32(CONTROL + 8, SOL_SOCKET, true);
      s.view.setInt32(CONTROL + 12, SCM_RIGHTS, true);
      fds.forEach((f, i) => s.view.setInt32(CONTROL + 16 + 4 * i, f, true));
      s.view.setBigUint64(MSGHDR + 32, s.address + BigInt(CONTROL), true);
      s.view.setBigUint64(MSGHDR + 40, BigInt(16 + 8 * Math.ceil((4 * fds.length) / 8)), true);
    }
    const n = Number(sendmsgFn(fd, s.address + BigInt(MSGHDR), MSG_NOSIGNAL));
    if (n < 0) {
      const e = errno();
      if (e === EINTR || e === EAGAIN) continue;
      throw new SysError('sendmsg', e);
    }
    withFds = false;
    sent += n;
    if (data.length === 0) break;
  }
}

export interface Received {
  data: Uint8Array;
  fds: number[];
}

/**
 * Receives exactly `length` bytes (blocking), with the descriptors that came
 * with them (close-on-exec). Undefined when the peer closed the connection
 * before the first byte; SysError on a short read at EOF or another error.
 * Descriptors beyond MAX_FDS_PER_MESSAGE are lost (the kernel closes them)
 * and reported as an error.
 */
export function recvWithFds(fd: number, length: number): Received | undefined {
  const s = scratchFor(length);
  const fds: number[] = [];
  let got = 0;
  while (got < length) {
    s.bytes.fill(0, 0, DATA);
    s.view.setBigUint64(IOVEC, s.address + BigInt(DATA + got), true);
    s.view.setBigUint64(IOVEC + 8, BigInt(length - got), true);
    s.view.setBigUint64(MSGHDR + 16, s.address + BigInt(IOVEC), true);
    s.view.setBigUint64(MSGHDR + 24, 1n, true);
    s.view.setBigUint64(MSGHDR + 32, s.address + BigInt(CONTROL), true);
    s.view.setBigUint64(MSGHDR + 40, BigInt(CONTROL_SPACE), true);
    const n = Number(recvmsgFn(fd, s.address + BigInt(MSGHDR), MSG_WAITALL | MSG_CMSG_CLOEXEC));
    if (n < 0) {
      const e = errno();
      if (e === EINTR) continue;
      // A blocking socket says EAGAIN only when its receive timeout ran out.
      if (e === EAGAIN) throw new SysError('recvmsg: no answer in time', ETIMEDOUT);
      throw new SysError('recvmsg', e);
    }
    // Descriptors, if any came with these bytes.
    const controllen = Number(s.view.getBigUint64(MSGHDR + 40, true));
    let off = 0;
    while (off + 16 <= controllen) {
      const len = Number(s.view.getBigUint64(CONTROL + off, true));
      if (len < 16) break;
      if (s.view.getInt32(CONTROL + off + 8, true) === SOL_SOCKET && s.view.getInt32(CONTROL + off + 12, true) === SCM_RIGHTS) {
        for (let i = 0; i < (len - 16) / 4; i++) fds.push(s.view.getInt32(CONTROL + off + 16 + 4 * i, true));
      }
      off += 8 * Math.ceil(len / 8);
    }
    if (s.view.getInt32(MSGHDR + 48, true) & MSG_CTRUNC) {
      for (const f of fds) closeFn(f);
      throw new SysError(`recvmsg: more than ${MAX_FDS_PER_MESSAGE} descriptors in one message`, 7);
    }
    if (n === 0) {
      for (const f of fds) closeFn(f);
      if (got === 0) return undefined;
      throw new SysError(`recvmsg: connection closed after ${got} of ${length} bytes`, 104 /* ECONNRESET */);
    }
    got += n;
  }
  return { data: s.bytes.slice(DATA, DATA + length), fds };
}

/** poll(2) for POLLIN on `fds`; returns each fd's revents (0: nothing), or
 * undefined on timeout. */
export function pollIn(fds: readonly number[], timeoutMs: number): number[] | undefined {
  const p = new Uint8Array(8 * fds.length);
  const v = new DataView(p.buffer);
  fds.forEach((f, i) => { v.setInt32(8 * i, f, true); v.setInt16(8 * i + 4, POLLIN, true); });
  for (;;) {
    const r = pollFn(p, fds.length, timeoutMs) as number;
    if (r < 0) {
      const e = errno();
      if (e === EINTR) continue;
      throw new SysError(`poll: ${strerror(e)}`, e);
    }
    if (r === 0) return undefined;
    return fds.map((_, i) => v.getInt16(8 * i + 6, true));
  }
}
