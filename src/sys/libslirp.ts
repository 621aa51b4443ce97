// libslirp (Debian's libslirp0, the user-mode TCP/IP stack QEMU and bhyve
// use) through koffi, for the thread that runs it (devices/net/
// slirp-thread.ts). libslirp is single-threaded and callback-driven: every
// callback below runs synchronously inside a call this thread made
// (slirp_input, slirp_pollfds_fill/poll, slirp_handle_timer), so koffi
// calls plain JavaScript functions on this same thread.
//
// The stack is set up as bhyve's _slirp_init does: version-4 config,
// IPv4 only, network 10.0.2.0/24, host (gateway) 10.0.2.2, DNS relay
// 10.0.2.3, DHCP from 10.0.2.15, no emulation helpers, `restricted`
// unless the backend is `open`. Frames for the guest go straight from
// send_packet's buffer to a packet socket (no copy into JavaScript).

import { createRequire } from 'node:module';

/* eslint-disable @typescript-eslint/no-explicit-any */
type Koffi = any;

const SLIRP_POLL_IN = 1 << 0;
const SLIRP_POLL_OUT = 1 << 1;
const SLIRP_POLL_PRI = 1 << 2;
const SLIRP_POLL_ERR = 1 << 3;
const SLIRP_POLL_HUP = 1 << 4;
const POLLIN = 0x1;
const POLLPRI = 0x2;
const POLLOUT = 0x4;
const POLLERR = 0x8;
const POLLHUP = 0x10;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const AF_INET = 2;
export const SLIRP_HOSTFWD_UDP = 1;
export const SLIRP_MTU = 2048; // bhyve's SLIRP_MTU

/** Guest-visible addresses, bhyve's hard-coded ones. */
export const SLIRP_NET = { network: '10.0.2.0', netmask: '255.255.255.0', host: '10.0.2.2', dns: '10.0.2.3', dhcpStart: '10.0.2.15' } as const;

export class LibslirpError extends Error {}

interface Bindings {
  koffi: Koffi;
  slirp_new: any; slirp_cleanup: any; slirp_input: any; slirp_pollfds_fill: any; slirp_pollfds_poll: any;
  slirp_handle_timer: any; slirp_add_hostxfwd: any; slirp_version_string: any;
  send: any; recv: any; poll: any; close: any;
  Config: any; Cb: any; AddPollCb: any; GetReventsCb: any;
  SendCb: any; ErrCb: any; ClockCb: any; TimerFreeCb: any; TimerModCb: any; FdCb: any; NotifyCb: any; InitCb: any; TimerNewOpaqueCb: any;
}

let bindings: Bindings | undefined;

/** Loads koffi, libslirp.so.0 and the prototypes; throws LibslirpError
 * with what to install when the library is missing. */
export function loadLibslirp(): Bindings {
  if (bindings) return bindings;
  const koffi: Koffi = createRequire(import.meta.url)('koffi');
  let lib: Koffi;
  try {
    lib = koffi.load('libslirp.so.0');
  } catch (e) {
    throw new LibslirpError(`cannot load libslirp.so.0 (install it: apt-get install libslirp0): ${(e as Error).message}`);
  }
  const libc = koffi.load('libc.so.6');
  const inAddr = koffi.struct('bhyve_in_addr', { s_addr: 'uint32_t' });
  const in6Addr = koffi.struct('bhyve_in6_addr', { w: koffi.array('uint32_t', 4) });
  const Config = koffi.struct('bhyve_SlirpConfig', {
    version: 'uint32_t', restricted: 'int', in_enabled: 'bool', vnetwork: inAddr, vnetmask: inAddr, vhost: inAddr,
    in6_enabled: 'bool', vprefix_addr6: in6Addr, vprefix_len: 'uint8_t', vhost6: in6Addr,
    vhostname: 'const char *', tftp_server_name: 'const char *', tftp_path: 'const char *', bootfile: 'const char *',
    vdhcp_start: inAddr, vnameserver: inAddr, vnameserver6: in6Addr, vdnssearch: 'void *', vdomainname: 'const char *',
    if_mtu: 'size_t', if_mru: 'size_t', disable_host_loopback: 'bool', enable_emu: 'bool',
    outbound_addr: 'void *', outbound_addr6: 'void *', disable_dns: 'bool', disable_dhcp: 'bool',
  });
  const SendCb = koffi.proto('intptr_t bhyve_slirp_send(const void *buf, size_t len, void *opaque)');
  const ErrCb = koffi.proto('void bhyve_slirp_guest_error(const char *msg, void *opaque)');
  const ClockCb = koffi.proto('int64_t bhyve_slirp_clock(void *opaque)');
  const TimerNewCb = koffi.proto('void *bhyve_slirp_timer_new(void *cb, void *cb_opaque, void *opaque)');
  const TimerFreeCb = koffi.proto('void bhyve_slirp_timer_free(void *timer, void *opaque)');
  const TimerModCb = koffi.proto('void bhyve_slirp_timer_mod(void *timer, int64_t expire, void *opaque)');
  const FdCb = koffi.proto('void bhyve_slirp_fd(int fd, void *opaque)');
  const NotifyCb = koffi.proto('void bhyve_slirp_notify(void *opaque)');
  const InitCb = koffi.proto('void bhyve_slirp_init_completed(void *slirp, void *opaque)');
  const TimerNewOpaqueCb = koffi.proto('void *bhyve_slirp_timer_new_opaque(int id, void *cb_opaque, void *opaque)');
  const Cb = koffi.struct('bhyve_SlirpCb', {
    send_packet: koffi.pointer(SendCb), guest_error: koffi.pointer(ErrCb), clock_get_ns: koffi.pointer(ClockCb),
    timer_new: koffi.pointer(TimerNewCb), timer_free: koffi.pointer(TimerFreeCb), timer_mod: koffi.pointer(TimerModCb),
    register_poll_fd: koffi.pointer(FdCb), unregister_poll_fd: koffi.pointer(FdCb), notify: koffi.pointer(NotifyCb),
    init_completed: koffi.pointer(InitCb), timer_new_opaque: koffi.pointer(TimerNewOpaqueCb),
  });
  const AddPollCb = koffi.proto('int bhyve_slirp_add_poll(int fd, int events, void *opaque)');
  const GetReventsCb = koffi.proto('int bhyve_slirp_get_revents(int idx, void *opaque)');
  bindings = {
    koffi,
    slirp_new: lib.func('void *slirp_new(const bhyve_SlirpConfig *cfg, const bhyve_SlirpCb *cb, void *opaque)'),
    slirp_cleanup: lib.func('void slirp_cleanup(void *slirp)'),
    slirp_input: lib.func('void slirp_input(void *slirp, const void *pkt, int len)'),
    slirp_pollfds_fill: lib.func('void slirp_pollfds_fill(void *slirp, _Inout_ uint32_t *timeout, bhyve_slirp_add_poll *cb, void *opaque)'),
    slirp_pollfds_poll: lib.func('void slirp_pollfds_poll(void *slirp, int select_error, bhyve_slirp_get_revents *cb, void *opaque)'),
    slirp_handle_timer: lib.func('void slirp_handle_timer(void *slirp, int id, void *cb_opaque)'),
    slirp_add_hostxfwd: lib.func('int slirp_add_hostxfwd(void *slirp, const uint8_t *haddr, uint32_t hlen, const uint8_t *gaddr, uint32_t glen, int flags)'),
    slirp_version_string: lib.func('const char *slirp_version_string(void)'),
    send: libc.func('intptr_t send(int fd, const void *buf, size_t len, int flags)'),
    recv: libc.func('intptr_t recv(int fd, void *buf, size_t len, int flags)'),
    poll: libc.func('int poll(_Inout_ uint8_t *fds, unsigned long nfds, int timeout)'),
    close: libc.func('int close(int fd)'),
    Config, Cb, AddPollCb, GetReventsCb, SendCb, ErrCb, ClockCb, TimerFreeCb, TimerModCb, FdCb, NotifyCb, InitCb, TimerNewOpaqueCb,
  };
  return bindings;
}

/** IPv4 dotted quad as the 32-bit value of a struct in_addr in memory
 * (network byte order read as a little-endian word). */
function inAddr(s: string): number {
  const p = s.split('.').map(Number);
  return ((p[3] << 24) | (p[2] << 16) | (p[1] << 8) | p[0]) >>> 0;
}

/** struct sockaddr_in for an address ('' = INADDR_ANY) and port. */
function sockaddrIn(addr: string, port: number): Uint8Array {
  const b = new Uint8Array(16);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, AF_INET, true);
  dv.setUint16(2, port, false);
  if (addr !== '') dv.setUint32(4, inAddr(addr), true);
  return b;
}

export interface SlirpStackOptions {
  /** libslirp's `restricted`: the guest reaches only the virtual network's
   * own services (DHCP, DNS relay) and hostfwd, no outside connections. */
  restricted: boolean;
  /** The packet socket frames for the guest are sent on. */
  guestFd: number;
  /** Called with libslirp's complaints about the guest's packets. */
  onGuestError?(msg: string): void;
}

interface Timer { id: number; cbOpaque: unknown; expireMs: number }

/** One libslirp instance and its poll loop state. */
export class SlirpStack {
  private readonly b: Bindings;
  private readonly slirp: unknown;
  private readonly registered: unknown[] = [];
  private readonly cbMem: unknown;
  private pollfds = new Uint8Array(8 * 16);
  private pollDv = new DataView(this.pollfds.buffer);
  private npoll = 0;
  private readonly timeout = new Uint32Array(1);
  private readonly onePoll = new Uint8Array(8);
  private readonly onePollDv = new DataView(this.onePoll.buffer);
  /** clock_get_ns's clock (process.hrtime) in ms is performance.now() +
   * this: the poll loop reads the time twice a turn, without a BigInt. */
  private readonly msBase = Number(process.hrtime.bigint()) / 1e6 - performance.now();
  /** Timers with an expiry set (timer_mod), of this.timers. */
  private armedTimers = 0;
  private readonly timers = new Map<bigint, Timer>();
  private readonly addPoll: unknown;
  private readonly getRevents: unknown;
  /** Frames libslirp had for the guest that the socket refused (full). */
  sendDropped = 0;
  guestErrors = 0;

  constructor(o: SlirpStackOptions) {
    const b = (this.b = loadLibslirp());
    const k = b.koffi;
    const reg = (fn: (...a: any[]) => unknown, proto: unknown): unknown => {
      const p = k.register(fn, k.pointer(proto));
      this.registered.push(p);
      return p;
    };
    const fd = o.guestFd;
    const cbs = {
      send_packet: reg((buf: unknown, len: number | bigint) => {
        const n = Number(b.send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL));
        if (n < 0) this.sendDropped++; // the device side is not reading: dropped, TCP retransmits
        return Number(len);
      }, b.SendCb),
      guest_error: reg((msg: string) => { this.guestErrors++; o.onGuestError?.(msg); }, b.ErrCb),
      clock_get_ns: reg(() => process.hrtime.bigint(), b.ClockCb),
      timer_new: null,
      timer_free: reg((t: unknown) => {
        const key = k.address(t);
        const tm = this.timers.get(key);
        if (tm && tm.expireMs !== Infinity) this.armedTimers--;
        this.timers.delete(key);
      }, b.TimerFreeCb),
      timer_mod: reg((t: unknown, expire: number | bigint) => {
        const tm = this.timers.get(k.address(t));
        if (!tm) return;
        if (tm.expireMs === Infinity) this.armedTimers++;
        tm.expireMs = Number(expire);
      }, b.TimerModCb),
      register_poll_fd: reg(() => undefined, b.FdCb),
      unregister_poll_fd: reg(() => undefined, b.FdCb),
      notify: reg(() => undefined, b.NotifyCb),
      init_completed: reg(() => undefined, b.InitCb),
      timer_new_opaque: reg((id: number, cbOpaque: unknown) => {
        const handle = k.alloc('uint8_t', 1);
        this.timers.set(k.address(handle), { id, cbOpaque, expireMs: Infinity });
        this.registered.push(handle); // kept alive with the stack
        return handle;
      }, b.TimerNewOpaqueCb),
    };
    // libslirp keeps the callbacks' address: the table lives in C memory.
    this.cbMem = k.alloc(b.Cb, 1);
    k.encode(this.cbMem, b.Cb, cbs);
    const zero6 = { w: [0, 0, 0, 0] };
    const cfg = {
      version: 4, restricted: o.restricted ? 1 : 0, in_enabled: true,
      vnetwork: { s_addr: inAddr(SLIRP_NET.network) }, vnetmask: { s_addr: inAddr(SLIRP_NET.netmask) },
      vhost: { s_addr: inAddr(SLIRP_NET.host) },
      in6_enabled: false, vprefix_addr6: zero6, vprefix_len: 0, vhost6: zero6,
      vhostname: null, tftp_server_name: null, tftp_path: null, bootfile: null,
      vdhcp_start: { s_addr: inAddr(SLIRP_NET.dhcpStart) }, vnameserver: { s_addr: inAddr(SLIRP_NET.dns) }, vnameserver6: zero6,
      vdnssearch: null, vdomainname: null, if_mtu: SLIRP_MTU, if_mru: SLIRP_MTU,
      disable_host_loopback: false, enable_emu: false, outbound_addr: null, outbound_addr6: null,
      disable_dns: false, disable_dhcp: false,
    };
    this.slirp = b.slirp_new(cfg, this.cbMem, null);
    if (this.slirp === null) throw new LibslirpError('slirp_new failed');
    this.addPoll = reg((pfd: number, events: number) => this.addPollFd(pfd, events), b.AddPollCb);
    this.getRevents = reg((idx: number) => this.revents(idx), b.GetReventsCb);
  }

  get version(): string { return this.b.slirp_version_string(); }

  /** slirp_add_hostxfwd: 0, or -errno (bind failed: the port is in use...). */
  addHostFwd(udp: boolean, hostAddr: string, hostPort: number, guestAddr: string, guestPort: number): number {
    const r = this.b.slirp_add_hostxfwd(this.slirp, sockaddrIn(hostAddr, hostPort), 16, sockaddrIn(guestAddr, guestPort), 16,
      udp ? SLIRP_HOSTFWD_UDP : 0);
    return r < 0 ? -this.b.koffi.errno() : 0;
  }

  /** A frame from the guest. */
  input(frame: Uint8Array, len: number): void {
    this.b.slirp_input(this.slirp, frame, len);
  }

  private addPollFd(fd: number, events: number): number {
    if ((this.npoll + 1) * 8 > this.pollfds.length) {
      const n = new Uint8Array(this.pollfds.length * 2);
      n.set(this.pollfds);
      this.pollfds = n;
      this.pollDv = new DataView(n.buffer);
    }
    const i = this.npoll++;
    const dv = this.pollDv;
    let ev = 0;
    if (events & SLIRP_POLL_IN) ev |= POLLIN;
    if (events & SLIRP_POLL_OUT) ev |= POLLOUT;
    if (events & SLIRP_POLL_PRI) ev |= POLLPRI;
    if (events & SLIRP_POLL_ERR) ev |= POLLERR;
    if (events & SLIRP_POLL_HUP) ev |= POLLHUP;
    dv.setInt32(i * 8, fd, true);
    dv.setInt16(i * 8 + 4, ev, true);
    dv.setInt16(i * 8 + 6, 0, true);
    return i;
  }

  private revents(idx: number): number {
    if (idx < 0 || idx >= this.npoll) return 0;
    const r = this.pollDv.getInt16(idx * 8 + 6, true);
    let ev = 0;
    if (r & POLLIN) ev |= SLIRP_POLL_IN;
    if (r & POLLOUT) ev |= SLIRP_POLL_OUT;
    if (r & POLLPRI) ev |= SLIRP_POLL_PRI;
    if (r & POLLERR) ev |= SLIRP_POLL_ERR;
    if (r & POLLHUP) ev |= SLIRP_POLL_HUP;
    return ev;
  }

  /** One turn of bhyve's slirp_pollfd_td_loop: the stack's sockets and
   * `ownFd` (slot 0) are polled for at most `maxMs` (less when libslirp or
   * a timer wants to run sooner), libslirp handles what is ready, due
   * timers fire. Returns ownFd's revents. */
  pollOnce(ownFd: number, maxMs: number): number {
    this.npoll = 0;
    this.addPollFd(ownFd, SLIRP_POLL_IN);
    this.timeout[0] = maxMs;
    this.b.slirp_pollfds_fill(this.slirp, this.timeout, this.addPoll, null);
    let wait = this.timeout[0];
    if (this.armedTimers > 0) {
      const nowMs = this.nowMs();
      for (const t of this.timers.values()) if (t.expireMs !== Infinity) wait = Math.max(0, Math.min(wait, Math.ceil(t.expireMs - nowMs)));
    }
    const n = this.b.poll(this.pollfds, this.npoll, Math.min(wait, maxMs));
    this.b.slirp_pollfds_poll(this.slirp, n < 0 ? 1 : 0, this.getRevents, null);
    if (this.armedTimers > 0) {
      const now = this.nowMs();
      for (const t of this.timers.values()) {
        if (t.expireMs <= now) {
          t.expireMs = Infinity;
          this.armedTimers--;
          this.b.slirp_handle_timer(this.slirp, t.id, t.cbOpaque);
        }
      }
    }
    return n > 0 ? this.pollDv.getInt16(6, true) : 0;
  }

  private nowMs(): number { return this.msBase + performance.now(); }

  /** poll(2) on `fd` alone for at most `ms`: true when it is readable.
   * (The busy path: frames from the guest keep coming, libslirp's own
   * sockets wait for the next full turn.) */
  readable(fd: number, ms: number): boolean {
    const p = this.onePoll;
    const dv = this.onePollDv;
    dv.setInt32(0, fd, true);
    dv.setInt16(4, POLLIN, true);
    dv.setInt16(6, 0, true);
    return this.b.poll(p, 1, ms) > 0 && (dv.getInt16(6, true) & POLLIN) !== 0;
  }

  /** recv(2) of one frame from a non-blocking packet socket: length, 0 at
   * end of file, or -1 when none is waiting. */
  recvFrame(fd: number, buf: Uint8Array): number {
    const n = Number(this.b.recv(fd, buf, buf.length, MSG_DONTWAIT));
    return n < 0 ? -1 : n;
  }

  close(): void {
    this.b.slirp_cleanup(this.slirp);
    for (const p of this.registered) {
      try { this.b.koffi.unregister(p); } catch { /* an allocation, not a callback */ }
    }
  }
}
