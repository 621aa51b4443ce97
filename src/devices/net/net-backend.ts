// Host side of a NIC's network backend (bhyve's net_backends.c), shared by
// virtio-net and e1000.
//
// Backend names (the `backend` key of a NIC's slot, the first item of
// `-s N,virtio-net,tap0,...` or `-s N,e1000,slirp,...`):
//   tapN, vmnetN     the Linux tap interface of that name
//   /dev/NAME        the same, by device path (bhyve opens /dev/tapN)
//   slirp            user-mode networking through libslirp
//                    (slirp-backend.ts; keys hostfwd= and open)
// The tap is attached through /dev/net/tun (sys/tap.ts) and created when it
// does not exist and we may (root / CAP_NET_ADMIN). netgraph, netmap and
// vale are FreeBSD-only: a clear error says so. slirp hands the NIC one
// end of a packet socket pair, which behaves as a tap's fd does, so
// everything below serves both; but given the device thread's doorbell,
// slirp's thread kicks the device thread itself when it sends a frame to
// a NIC that read its end dry (it knows when frames come: no main-thread
// poll, no hop through the main thread).
//
// As in bhyve, the device thread reads and writes the tap itself: frames go
// from read(2) straight on into the guest's receive buffers, no hand-off
// through another thread. The main thread only wakes it:
//   main thread   openNetBackend(): opens the tap (non-blocking) and waits
//                 for frames with the fd waker (../fd-waker.ts), which
//                 kicks the device thread once the tap is readable after
//                 it read it dry.
//   device thread attachNetBackend(transfer): a NetPort. peek() reads the
//                 next frame into a buffer (or returns the one a previous
//                 peek read and nobody consumed: the guest had no buffers
//                 for it); an empty tap arms the waker. While the guest has
//                 no buffers nothing is read, the kernel queues (and past
//                 its txqueuelen drops), as for a NIC, and the guest's
//                 notify when it adds buffers resumes receiving. TX frames
//                 are written with one writev(2) each, synchronously.

import { UserError } from '../../user-error.js';
import * as fs from 'node:fs';
import type { ConfigTree } from '../../config/tree.js';
import { openTap, readFd, TapError, writeFd } from '../../sys/tap.js';
import { FrameBatch, FrameReads } from '../../sys/net-batch.js';
import { armFdWaker, fdWakerFlags, startFdWaker } from '../fd-waker.js';
import type { DoorbellTransfer } from '../../sys/doorbell.js';
import { openSlirpBackend, SlirpConfigError } from './slirp-backend.js';

/** Largest frame read from a tap (its MTU may be up to 65535). */
export const TAP_READ_BYTES = 65536 + 64;
const EAGAIN = 11;

/** Everything the device thread needs (structured-cloneable). */
export interface NetBackendTransfer {
  kind: 'tap' | 'slirp';
  /** The tap fd or slirp's packet socket (process-wide), read and written
   * by the device thread. */
  fd: number;
  /** The interface name, for diagnostics. */
  ifname: string;
  /** The fd waker's flags (fd-waker.ts), shared with the main thread. */
  wake: SharedArrayBuffer;
  /** The writer (slirp's thread) kicks the device thread when the flags
   * say it waits, instead of a main-thread poll: after arming, the port
   * reads once more (a frame sent just before the arming is not missed). */
  peerWakes?: boolean;
}

export interface NetBackendHost {
  readonly transfer: NetBackendTransfer;
  /** Stops the waker and closes the tap (after the device thread stopped). */
  close(): Promise<void>;
}

/** The device thread's view of a backend. Tests provide fakes. */
export interface NetPort {
  /** The oldest received frame (valid until consume()), or null when none
   * is waiting. Until consume(), peek() returns the same frame. */
  peek(): Uint8Array | null;
  /** Releases the frame peek() returned. */
  consume(): void;
  /** Sends one frame whose bytes are the concatenation of `views`; false
   * when the host refused it (the frame is dropped, as bhyve does). */
  send(views: Uint8Array[]): boolean;
  /** Reads the next frame straight into `views` (which together hold at
   * least TAP_READ_BYTES, so no frame is cut) when no frame is held from
   * peek(): its length, 0 when none is waiting, -1 when peek() holds one.
   * Absent: peek() only. */
  readInto?(views: Uint8Array[]): number;
  /** Frames written by one call (sys/net-batch.ts): absent when the
   * backend has no fd or the build made no library. */
  readonly txBatch?: FrameBatch;
  /** Drops the frame peek() holds and every frame read with it (another
   * thread takes the fd over). Absent: consume() does it. */
  dropHeld?(): void;
}

export class NetBackendError extends UserError { override readonly name: string = 'NetBackendError'; }

const UNSUPPORTED_BACKENDS = ['netgraph', 'netmap', 'vale'];

/** The tap interface name a backend string names; throws NetBackendError
 * for backends this host cannot provide. */
export function tapNameOf(backend: string): string {
  const b = backend.trim();
  for (const u of UNSUPPORTED_BACKENDS) {
    if (b.startsWith(u)) {
      throw new NetBackendError(`net backend '${b}': ${u} is not available on Linux (use a tap interface, tapN, or slirp)`);
    }
  }
  if (b.startsWith('/dev/')) {
    const name = b.slice('/dev/'.length);
    if (name === 'net/tun') throw new NetBackendError(`net backend '${b}': name the tap interface (tapN or /dev/tapN), not the clone device`);
    if (name.includes('/') || name.length === 0) throw new NetBackendError(`net backend '${b}': not a tap device path (use tapN or /dev/tapN)`);
    return name;
  }
  if (b.startsWith('tap') || b.startsWith('vmnet')) return b;
  throw new NetBackendError(`net backend '${b}': unknown backend type (use tapN, vmnetN, /dev/tapN or slirp)`);
}

/** True for the slirp backend's name. */
export function isSlirpBackend(backend: string): boolean {
  return backend.trim() === 'slirp';
}

/** Opens the backend of the NIC slot `node` on the main thread, or
 * returns undefined when the slot has no backend (bhyve permits that: the
 * NIC is up and every frame sent is dropped). */
export async function openNetBackend(config: ConfigTree, node: string, kick: () => void, doorbell?: DoorbellTransfer): Promise<NetBackendHost | undefined> {
  const backend = config.get(`${node}.backend`);
  if (backend === undefined) return undefined;
  if (isSlirpBackend(backend)) {
    const wake = doorbell ? fdWakerFlags() : undefined;
    let slirp;
    try {
      slirp = await openSlirpBackend(config, node, wake && doorbell ? { wake, doorbell } : undefined);
    } catch (e) {
      if (e instanceof SlirpConfigError) throw new NetBackendError(`net backend 'slirp': ${e.message}`);
      throw e;
    }
    if (wake) {
      return {
        transfer: { kind: 'slirp', fd: slirp.fd, ifname: 'slirp', wake, peerWakes: true },
        async close(): Promise<void> {
          await slirp.close();
          try { fs.closeSync(slirp.fd); } catch { /* closed */ }
        },
      };
    }
    const host = startTapWaker(slirp.fd, 'slirp', kick, 'slirp');
    return {
      transfer: host.transfer,
      async close(): Promise<void> {
        await host.close();
        await slirp.close();
      },
    };
  }
  if (config.get(`${node}.hostfwd`) !== undefined || config.get(`${node}.open`) !== undefined) {
    throw new NetBackendError(`net backend '${backend}': hostfwd and open are slirp options`);
  }
  const name = tapNameOf(backend);
  let tap;
  try {
    tap = openTap(name);
  } catch (e) {
    if (e instanceof TapError) throw new NetBackendError(`net backend '${backend}': ${e.message}`);
    throw e;
  }
  return startTapWaker(tap.fd, tap.name, kick);
}

/** Runs the main-thread waker for an open, non-blocking tap (or any packet
 * fd that returns one frame per read); it owns the fd from now on.
 * Exported for tests and benchmarks. */
export function startTapWaker(fd: number, ifname: string, kick: () => void, kind: NetBackendTransfer['kind'] = 'tap'): NetBackendHost {
  const waker = startFdWaker(fd, kick);
  return { transfer: { kind, fd, ifname, wake: waker.wake }, close: () => waker.close() };
}

/** The device thread's NetPort for a transfer. */
export function attachNetBackend(t: NetBackendTransfer, batchIo = true): FdNetPort {
  const ctl = new Int32Array(t.wake);
  return fdNetPort(t.fd, () => armFdWaker(ctl), t.peerWakes === true, batchIo);
}

/** A NetPort on a tap fd (or packet socket), and what its owner needs to
 * know about it. */
export interface FdNetPort extends NetPort {
  /** True while a frame peek() read waits to be consumed (the guest had no
   * buffers for it), or frames read with it wait behind it: whoever waits
   * for the fd must not, until the driver adds buffers. */
  readonly holding: boolean;
  readonly txErrors: number;
  readonly rxErrors: number;
}

/** The NetPort on `fd`; `onEmpty` runs when a read found it dry (the main
 * thread's waker is armed there; the virtio-net I/O thread polls the fd
 * itself and passes nothing). `rereadAfterEmpty`: the writer kicks when
 * the waker is armed (NetBackendTransfer.peerWakes), so read once more
 * after onEmpty for a frame written just before the arming. `batchIo`:
 * read up to READ_FRAMES frames by one call and offer a FrameBatch for
 * sending (sys/net-batch.ts), when the build made the library. */
export function fdNetPort(fd: number, onEmpty: () => void = () => {}, rereadAfterEmpty = false, batchIo = true): FdNetPort {
  const reads = batchIo ? FrameReads.for(fd, TAP_READ_BYTES) : undefined;
  const buf = reads ? undefined : new Uint8Array(TAP_READ_BYTES);
  let pending: Uint8Array | null = null;
  let txErrors = 0;
  let rxErrors = 0;
  const txBatch = batchIo ? FrameBatch.for(fd) : undefined;
  /** The next frame: one read ahead, else what a read gets; or the read's
   * result when it got none (0, -errno). */
  const next = (): Uint8Array | number => {
    if (reads) {
      const f = reads.take();
      if (f !== null) return f;
      const n = reads.fill();
      return n > 0 ? reads.take()! : n;
    }
    const n = readFd(fd, buf!);
    return n > 0 ? buf!.subarray(0, n) : n;
  };
  return {
    peek(): Uint8Array | null {
      if (pending !== null) return pending;
      let f = next();
      if (typeof f === 'number') {
        // EAGAIN: read dry. Anything else (EIO while the interface is
        // down...): nothing to receive now; the waker tells when there is.
        if (f < 0 && f !== -EAGAIN) rxErrors++;
        onEmpty();
        if (!rereadAfterEmpty) return null;
        f = next();
        if (typeof f === 'number') return null;
      }
      pending = f;
      return pending;
    },
    consume(): void {
      pending = null;
    },
    dropHeld(): void {
      pending = null;
      reads?.discard();
    },
    readInto(views: Uint8Array[]): number {
      if (pending !== null || (reads !== undefined && reads.left > 0)) return -1;
      const once = (): number => {
        if (views.length === 1) return readFd(fd, views[0]);
        try {
          return fs.readvSync(fd, views);
        } catch (e) {
          // Node's errno is negative on Linux: -errno either way.
          return -Math.abs((e as { errno?: number }).errno ?? EAGAIN);
        }
      };
      let n = once();
      if (n <= 0) {
        if (n < 0 && n !== -EAGAIN) rxErrors++;
        onEmpty();
        if (!rereadAfterEmpty) return 0;
        n = once();
        if (n <= 0) return 0;
      }
      return n;
    },
    send(views: Uint8Array[]): boolean {
      if (views.length === 1) {
        // (e1000 hands whole frames)
        if (writeFd(fd, views[0]) >= 0) return true;
        txErrors++;
        return false;
      }
      try {
        fs.writevSync(fd, views);
        return true;
      } catch {
        // EIO while the interface is down, ENOBUFS...: dropped, as a NIC would.
        txErrors++;
        return false;
      }
    },
    txBatch,
    get holding() { return pending !== null || (reads !== undefined && reads.left > 0); },
    get txErrors() { return txErrors + (txBatch?.errors ?? 0); },
    get rxErrors() { return rxErrors; },
  };
}
