// Host side of a virtio-net backend (bhyve's net_backends.c, tap only).
//
// Backend names (the `backend` key of a virtio-net slot, the first item of
// `-s N,virtio-net,tap0,...`):
//   tapN, vmnetN     the Linux tap interface of that name
//   /dev/NAME        the same, by device path (bhyve opens /dev/tapN)
// The tap is attached through /dev/net/tun (libc-tap.ts) and created when it
// does not exist and we may (root / CAP_NET_ADMIN). netgraph, netmap, vale
// and slirp are FreeBSD-only or not built: a clear error says so.
//
// The work is split across our two threads:
//   main thread   openNetBackend(): opens the tap (non-blocking), waits for
//                 it to become readable with poll(2) on libuv's threadpool
//                 (koffi async, one outstanding call per tap, 250 ms timeout
//                 so that close() is prompt), then drains every waiting frame
//                 with read(2) into a FrameRing and kicks the device thread
//                 once per batch. When the ring is full it stops reading
//                 until the device thread has made room; the kernel queues
//                 (and past its txqueuelen drops) meanwhile, as a NIC would.
//   device thread attachNetBackend(transfer): a NetPort. RX frames are
//                 peeked in place in the ring; TX frames are written to the
//                 tap fd with one writev(2) each, synchronously.

import * as fs from 'node:fs';
import type { ConfigTree } from '../../config/tree.js';
import { openTap, pollReadable, TapError } from '../../vmm/libc-tap.js';
import { FrameRing } from './frame-ring.js';

/** RX ring size: room for ~700 full-size Ethernet frames. */
export const NET_RX_RING_BYTES = 1 << 20;
/** Largest frame read from a tap (its MTU may be up to 65535). */
const TAP_READ_BYTES = 65536 + 64;
/** Longest frames drained per wakeup before yielding to the event loop. */
const DRAIN_BATCH = 256;
const POLL_TIMEOUT_MS = 250;

/** Everything the device thread needs (structured-cloneable). */
export interface NetBackendTransfer {
  kind: 'tap';
  /** The tap fd (process-wide), for TX writes from the device thread. */
  fd: number;
  /** The interface name, for diagnostics. */
  ifname: string;
  /** The RX FrameRing, filled by the main thread. */
  rx: SharedArrayBuffer;
}

export interface NetBackendHost {
  readonly transfer: NetBackendTransfer;
  /** Stops reading and closes the tap (after the device thread stopped). */
  close(): Promise<void>;
}

/** The device thread's view of a backend. Tests provide fakes. */
export interface NetPort {
  /** The oldest received frame, in place (valid until consume()), or null. */
  peek(): Uint8Array | null;
  /** Releases the frame peek() returned. */
  consume(): void;
  /** Sends one frame whose bytes are the concatenation of `views`; false
   * when the host refused it (the frame is dropped, as bhyve does). */
  send(views: Uint8Array[]): boolean;
}

export class NetBackendError extends Error {}

const UNSUPPORTED_BACKENDS = ['netgraph', 'netmap', 'vale', 'slirp'];

/** The tap interface name a backend string names; throws NetBackendError
 * for backends this host cannot provide. */
export function tapNameOf(backend: string): string {
  const b = backend.trim();
  for (const u of UNSUPPORTED_BACKENDS) {
    if (b.startsWith(u)) {
      throw new NetBackendError(`net backend '${b}': ${u} is not available on Linux (use a tap interface: tapN)`);
    }
  }
  if (b.startsWith('/dev/')) {
    const name = b.slice('/dev/'.length);
    if (name === 'net/tun') throw new NetBackendError(`net backend '${b}': name the tap interface (tapN or /dev/tapN), not the clone device`);
    if (name.includes('/') || name.length === 0) throw new NetBackendError(`net backend '${b}': not a tap device path (use tapN or /dev/tapN)`);
    return name;
  }
  if (b.startsWith('tap') || b.startsWith('vmnet')) return b;
  throw new NetBackendError(`net backend '${b}': unknown backend type (use tapN, vmnetN or /dev/tapN)`);
}

/** Opens the backend of the virtio-net slot `node` on the main thread, or
 * returns undefined when the slot has no backend (bhyve permits that: the
 * NIC is up and every frame sent is dropped). */
export function openNetBackend(config: ConfigTree, node: string, kick: () => void): NetBackendHost | undefined {
  const backend = config.get(`${node}.backend`);
  if (backend === undefined) return undefined;
  const name = tapNameOf(backend);
  let tap;
  try {
    tap = openTap(name);
  } catch (e) {
    if (e instanceof TapError) throw new NetBackendError(`net backend '${backend}': ${e.message}`);
    throw e;
  }
  return startTapReader(tap.fd, tap.name, kick);
}

/** Runs the main-thread reader for an open, non-blocking tap (or any
 * packet fd that returns one frame per read). Exported for tests. */
export function startTapReader(fd: number, ifname: string, kick: () => void): NetBackendHost {
  const ring = FrameRing.create(NET_RX_RING_BYTES);
  const buf = Buffer.allocUnsafe(TAP_READ_BYTES);
  let closed = false;

  const loop = (async (): Promise<void> => {
    while (!closed) {
      const r = await pollReadable(fd, POLL_TIMEOUT_MS);
      if (closed) break;
      if (r === 'timeout') continue;
      if (r === 'error') {
        await new Promise((res) => setTimeout(res, 100));
        continue;
      }
      let pushed = 0;
      for (let i = 0; i < DRAIN_BATCH && !closed; i++) {
        let n: number;
        try {
          n = fs.readSync(fd, buf, 0, buf.length, null);
        } catch {
          break; // EAGAIN: drained (or the tap went away: poll tells)
        }
        if (n <= 0) break;
        const frame = buf.subarray(0, n);
        if (n > ring.maxFrame) { ring.countDrop(); continue; }
        if (!ring.fits(n)) {
          if (pushed > 0) { kick(); pushed = 0; }
          await ring.waitForSpace(n);
          if (closed) break;
        }
        if (ring.push(frame)) pushed++;
        else ring.countDrop();
      }
      if (pushed > 0) kick();
    }
  })();

  return {
    transfer: { kind: 'tap', fd, ifname, rx: ring.sab },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      ring.close();
      await loop.catch(() => undefined);
      try { fs.closeSync(fd); } catch { /* already closed */ }
    },
  };
}

/** The device thread's NetPort for a transfer. */
export function attachNetBackend(t: NetBackendTransfer): NetPort & { readonly txErrors: number } {
  const ring = FrameRing.from(t.rx);
  const fd = t.fd;
  let txErrors = 0;
  return {
    peek: () => ring.peek(),
    consume: () => ring.consume(),
    send(views: Uint8Array[]): boolean {
      try {
        fs.writevSync(fd, views);
        return true;
      } catch {
        // EIO while the interface is down, ENOBUFS...: dropped, as a NIC would.
        txErrors++;
        return false;
      }
    },
    get txErrors() { return txErrors; },
  };
}
