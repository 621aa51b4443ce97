// The slirp backend's thread (see slirp-backend.ts): libslirp and its poll
// loop, bhyve's slirp_pollfd_td_loop. It owns one end of the packet pair;
// frames the guest sent arrive there and go to slirp_input, frames
// libslirp has for the guest leave through it (send_packet). libslirp's
// own sockets (the guest's connections, hostfwd listeners, the DNS relay)
// are polled with it in one poll(2), whose timeout libslirp and its timers
// set. Before it runs, the thread confines itself (Landlock: bhyve's code
// and the files libslirp reads; capabilities dropped); the process-wide
// seccomp filter that comes later leaves it the socket calls it needs.

import { parentPort, workerData } from 'node:worker_threads';
import { SlirpStack } from '../../sys/libslirp.js';
import { confineThisThread, type SandboxPlan } from '../../vmm/sandbox/sandbox.js';
import type { HostFwdRule } from './slirp-options.js';
import type { SlirpNicWake } from './slirp-backend.js';
import { DEVICE_REQUEST, Doorbell } from '../../sys/doorbell.js';
import { takeFdWaker } from '../fd-waker.js';

export interface SlirpThreadData {
  /** This thread's end of the packet pair. */
  fd: number;
  restricted: boolean;
  hostfwd: HostFwdRule[];
  /** Words: [0] 1 = stop. */
  control: SharedArrayBuffer;
  sandbox?: SandboxPlan;
  /** When given, this thread kicks the NIC's device thread itself. */
  nicWake?: SlirpNicWake;
  debug: boolean;
}

export type SlirpThreadMessage = { type: 'ready'; version: string } | { type: 'error'; message: string };

const POLLIN = 0x1;
const POLLHUP = 0x10;
const POLLERR = 0x8;
/** Longest sleep between looks at the stop word. */
const MAX_WAIT_MS = 500;
/** Frames taken from the guest per loop turn before libslirp's sockets get
 * their turn again. */
const BATCH = 256;
/** Longest stretch of taking guest frames before libslirp's sockets and
 * timers get their turn. */
const BUSY_NS = 2_000_000n;

function main(): void {
  const d = workerData as SlirpThreadData;
  const post = (m: SlirpThreadMessage): void => parentPort!.postMessage(m);
  let stack: SlirpStack;
  try {
    stack = new SlirpStack({
      restricted: d.restricted, guestFd: d.fd,
      onGuestError: d.debug ? (m) => process.stderr.write(`bhyve: slirp: guest error: ${m}\n`) : undefined,
    });
  } catch (e) {
    post({ type: 'error', message: (e as Error).message });
    return;
  }
  for (const r of d.hostfwd) {
    const err = stack.addHostFwd(r.udp, r.hostAddr, r.hostPort, r.guestAddr, r.guestPort);
    if (err < 0) {
      post({ type: 'error', message: `Unable to add hostfwd rule '${r.text}': ${errnoText(-err)}` });
      stack.close();
      return;
    }
  }
  // The doorbell maps vCPU 0's kvm_run page: before the sandbox.
  let wakeNic = (): void => {};
  if (d.nicWake) {
    const ctl = new Int32Array(d.nicWake.wake);
    const doorbell = Doorbell.attach(d.nicWake.doorbell);
    let seen = 0;
    wakeNic = () => {
      if (stack.sentFrames !== seen) {
        seen = stack.sentFrames;
        if (takeFdWaker(ctl)) doorbell.ring(DEVICE_REQUEST.POLL);
      }
    };
  }
  if (d.sandbox) {
    const problems = confineThisThread(d.sandbox);
    if (problems.length) {
      post({ type: 'error', message: `cannot sandbox the slirp thread: ${problems.join('; ')} (-o security.sandbox=false runs without)` });
      stack.close();
      return;
    }
  }
  post({ type: 'ready', version: stack.version });
  const control = new Int32Array(d.control);
  const buf = new Uint8Array(65536 + 64);
  let eof = false;
  /** Frames from the guest into libslirp until the socket is dry. */
  const drain = (): void => {
    for (let i = 0; i < BATCH; i++) {
      const n = stack.recvFrame(d.fd, buf);
      if (n <= 0) {
        if (n === 0) eof = true; // the device side closed
        return;
      }
      stack.input(buf, n);
    }
  };
  while (Atomics.load(control, 0) === 0 && !eof) {
    const rev = stack.pollOnce(d.fd, MAX_WAIT_MS);
    wakeNic();
    if (rev & POLLIN) {
      // While the guest keeps sending, a frame costs a recv and a
      // slirp_input, not a whole turn of libslirp's poll set: frames are
      // taken for up to BUSY_MS between turns.
      const until = process.hrtime.bigint() + BUSY_NS;
      // (libslirp answers some frames at once: ARP, ICMP echo, DHCP)
      do { drain(); wakeNic(); } while (!eof && process.hrtime.bigint() < until && stack.readable(d.fd, 1));
    } else if (rev & (POLLHUP | POLLERR)) {
      break;
    }
  }
  stack.close();
}

function errnoText(e: number): string {
  const names: Record<number, string> = { 98: 'Address already in use', 13: 'Permission denied', 99: 'Cannot assign requested address', 22: 'Invalid argument' };
  return names[e] ?? `errno ${e}`;
}

main();
