// A connected pair of AF_UNIX SOCK_SEQPACKET sockets: each read returns one
// whole frame and each write(v) sends one, as a tap's fd does, so a NIC's
// data path takes either unchanged. The slirp backend puts libslirp's
// thread at one end and the device thread at the other (bhyve's slirp
// helper talks to its frontend over the same kind of pair).

import { errno, libcFunc, SysError } from './libc.js';

const socketpairFn = libcFunc('int socketpair(int domain, int type, int protocol, _Out_ int *sv)');
const setsockoptFn = libcFunc('int setsockopt(int fd, int level, int name, const int *val, unsigned int len)');

const AF_UNIX = 1;
const SOCK_SEQPACKET = 5;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;

/** Two non-blocking, close-on-exec packet sockets, connected, each with
 * `bufBytes` of send and receive buffer (bhyve gives its pair 1 MiB so
 * that bursts from libslirp are not dropped). */
export function packetPair(bufBytes = 1 << 20): [number, number] {
  const sv = [0, 0];
  if (socketpairFn(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) !== 0) {
    throw new SysError('socketpair', errno());
  }
  for (const fd of sv) {
    setsockoptFn(fd, SOL_SOCKET, SO_SNDBUF, [bufBytes], 4);
    setsockoptFn(fd, SOL_SOCKET, SO_RCVBUF, [bufBytes], 4);
  }
  return [sv[0], sv[1]];
}
