// Linux tap devices through /dev/net/tun (ioctl TUNSETIFF), an
// asynchronous poll(2) for the main thread's tap waker, and a non-blocking
// read(2) that reports EAGAIN as a value (no exception per empty read).
//
// openTap(name): opens /dev/net/tun non-blocking and close-on-exec and
// attaches it to the tap interface `name` with IFF_TAP | IFF_NO_PI (frames
// without the 4-byte packet-information prefix). TUNSETIFF creates the
// interface when it does not exist (root or CAP_NET_ADMIN); a tap created
// that way is not persistent and disappears when the fd is closed, like
// FreeBSD's /dev/tapN cloned on open.

import { UserError } from '../user-error.js';
import * as fs from 'node:fs';
import { errno, libcBind, libcFunc, strerror, type KoffiFunc } from './libc.js';
import { poolWaitInterrupt } from './threadpool.js';

const ioctlPtr = libcFunc('int ioctl(int fd, unsigned long req, _Inout_ uint8_t *arg)');
const pollFn = libcFunc('int poll(_Inout_ uint8_t *fds, unsigned long nfds, int timeout)');
// (a typed array passed as void * is handed to C in place, no copy)
// Per frame: bound on first use and called without libcFunc's wrapper.
let readFn: KoffiFunc | undefined;
let writeFn: KoffiFunc | undefined;

/** _IOW('T', 202, int) */
export const TUNSETIFF = 0x400454ca;
export const IFF_TAP = 0x0002;
export const IFF_NO_PI = 0x1000;
export const IFF_VNET_HDR = 0x4000;
export const IFNAMSIZ = 16;
const IFREQ_SIZE = 40;
const POLLIN = 0x0001;
const POLLERR = 0x0008;
const POLLHUP = 0x0010;
const POLLNVAL = 0x0020;

const EPERM = 1;
const EACCES = 13;
const EBUSY = 16;
const EINVAL = 22;

export class TapError extends UserError { override readonly name: string = 'TapError'; }

export interface Tap {
  readonly fd: number;
  /** The interface name the kernel attached us to. */
  readonly name: string;
}

/** Opens and attaches the tap interface `name`; throws TapError with one
 * line saying what failed and how to fix it. */
export function openTap(name: string): Tap {
  if (name.length === 0 || Buffer.byteLength(name) >= IFNAMSIZ || /[\s/:]/.test(name)) {
    throw new TapError(`invalid tap interface name '${name}' (at most ${IFNAMSIZ - 1} characters, no '/', ':' or spaces)`);
  }
  let fd: number;
  try {
    fd = fs.openSync('/dev/net/tun', fs.constants.O_RDWR | fs.constants.O_NONBLOCK | 0o2000000 /* O_CLOEXEC */);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? '/dev/net/tun does not exist (load the tun module: modprobe tun)'
      : code === 'EACCES' || code === 'EPERM' ? 'permission denied opening /dev/net/tun (run as root or grant access to /dev/net/tun)'
        : `cannot open /dev/net/tun: ${(e as Error).message}`;
    throw new TapError(why);
  }
  const ifr = new Uint8Array(IFREQ_SIZE);
  ifr.set(Buffer.from(name, 'utf8'), 0);
  const flags = IFF_TAP | IFF_NO_PI;
  ifr[16] = flags & 0xff;
  ifr[17] = (flags >> 8) & 0xff;
  const r = ioctlPtr(fd, TUNSETIFF, ifr) as number;
  if (r < 0) {
    const err = errno();
    fs.closeSync(fd);
    const why = err === EPERM || err === EACCES
      ? `permission denied attaching tap '${name}' (create it first with 'ip tuntap add dev ${name} mode tap user $USER', or run as root)`
      : err === EBUSY ? `tap '${name}' is in use by another process`
        : err === EINVAL ? `'${name}' exists and is not a tap interface`
          : `TUNSETIFF ${name}: ${strerror(err)}`;
    throw new TapError(why);
  }
  const nul = ifr.indexOf(0);
  const actual = Buffer.from(ifr.subarray(0, nul < 0 || nul > IFNAMSIZ ? IFNAMSIZ : nul)).toString('utf8');
  return { fd, name: actual };
}

export type PollResult = 'readable' | 'timeout' | 'error';

/** poll(2) for readability of `fd` on libuv's threadpool (koffi async), so
 * the event loop stays free. At most `timeoutMs` milliseconds. */
export function pollReadable(fd: number, timeoutMs: number): Promise<PollResult> {
  // A second pollfd: the pool's interrupt (sys/threadpool.ts), which ends
  // the wait early ('timeout') when the sandbox parks the pool.
  const pfd = new Uint8Array(16);
  const dv = new DataView(pfd.buffer);
  dv.setInt32(0, fd, true);
  dv.setInt16(4, POLLIN, true);
  dv.setInt32(8, poolWaitInterrupt(), true);
  dv.setInt16(12, POLLIN, true);
  return new Promise((resolve) => {
    pollFn.async(pfd, 2, timeoutMs, (err: unknown, res: number) => {
      if (err || res < 0) { resolve(res < 0 ? 'timeout' : 'error'); return; }
      const revents = dv.getInt16(6, true);
      if (revents === 0) { resolve('timeout'); return; }
      if (revents & (POLLERR | POLLHUP | POLLNVAL)) resolve('error');
      else resolve('readable');
    });
  });
}

/** read(2) into `buf`: the byte count, or -errno (-EAGAIN when an O_NONBLOCK
 * fd has nothing waiting). */
export function readFd(fd: number, buf: Uint8Array): number {
  const n = Number((readFn ??= libcBind('long read(int fd, void *buf, unsigned long count)'))(fd, buf, buf.length));
  return n < 0 ? -errno() : n;
}

/** write(2) of `buf` (one frame to a tap or packet socket): the byte
 * count, or -errno. (Cheaper than fs.writevSync's binding for one view.) */
export function writeFd(fd: number, buf: Uint8Array): number {
  const n = Number((writeFn ??= libcBind('long write(int fd, const void *buf, unsigned long count)'))(fd, buf, buf.length));
  return n < 0 ? -errno() : n;
}

/** True when the host can create tap devices here (for test skips). */
export function tunAvailable(): boolean {
  try {
    fs.accessSync('/dev/net/tun', fs.constants.R_OK | fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

