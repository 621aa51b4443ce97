// Host-side pumps between Node event-loop streams and the shared-memory
// byte rings that device models read and write on the device thread: input
// with backpressure, output drained to a socket without polling. Used by
// the UART backends and by virtio-console's port sockets.

import type * as net from 'node:net';
import type { ByteRing } from './byte-ring.js';

/** Moves bytes from an event-loop source into the RX ring with backpressure:
 * when the ring is full, the source is paused and the rest is kept until the
 * device thread has made room, the way bhyve stops reading its tty while the
 * guest's RX FIFO is full. */
export class RxPump {
  private pending: Uint8Array[] = [];
  private waiting = false;
  private closed = false;

  constructor(
    private readonly ring: ByteRing,
    private readonly kick: () => void,
    private readonly pause: () => void,
    private readonly resume: () => void,
  ) {}

  write(chunk: Uint8Array): void {
    if (this.closed || chunk.length === 0) return;
    if (this.pending.length > 0) {
      this.pending.push(chunk);
      return;
    }
    const n = this.ring.push(chunk);
    if (n > 0) this.kick();
    if (n < chunk.length) {
      this.pending.push(chunk.subarray(n));
      this.pause();
      void this.waitForRoom();
    }
  }

  /** Drops queued input (e.g. when a TCP client goes away). */
  clear(): void {
    this.pending = [];
  }

  close(): void {
    this.closed = true;
    this.pending = [];
  }

  private async waitForRoom(): Promise<void> {
    if (this.waiting) return;
    this.waiting = true;
    try {
      while (!this.closed && this.pending.length > 0) {
        await this.ring.waitForSpace();
        if (this.ring.isClosed()) return;
        let pushed = false;
        while (this.pending.length > 0) {
          const head = this.pending[0];
          const n = this.ring.push(head);
          if (n > 0) pushed = true;
          if (n < head.length) {
            this.pending[0] = head.subarray(n);
            break;
          }
          this.pending.shift();
        }
        if (pushed) this.kick();
      }
      if (!this.closed) this.resume();
    } finally {
      this.waiting = false;
    }
  }
}

/** How much a device on this thread may queue in a client's socket beyond
 * what the kernel took (drainRingHere), before its writes wait and drop as
 * they do with the pump on another thread. */
const MAX_QUEUED_BYTES = 1 << 20;

/** The TX rings this thread pumps, by their buffer: a device on the same
 * thread (vCPU 0 on the main thread) cannot wait for the pump, which runs
 * only between its turns, and drains its full ring itself. */
const pumpedHere = new WeakMap<SharedArrayBuffer, () => boolean>();

/** For a device's write that found its TX ring full: when this thread also
 * pumps the ring, moves the ring's bytes to the client now and returns
 * true (false: no client, the client is backed up, or another thread
 * pumps it and the caller waits as before). */
export function drainRingHere(sab: SharedArrayBuffer): boolean {
  return pumpedHere.get(sab)?.() ?? false;
}

/** Drains `tx` to the connected client until `closed()`; output with no
 * client is dropped. Waits for 'drain' when the socket pushes back. */
export async function pumpRingToSocket(tx: ByteRing, client: () => net.Socket | null, closed: () => boolean): Promise<void> {
  pumpedHere.set(tx.sab, () => {
    const c = client();
    if (c === null || c.destroyed || closed() || c.writableLength > MAX_QUEUED_BYTES) return false;
    const bytes = tx.read();
    if (bytes.length === 0) return false;
    c.write(bytes);
    return true;
  });
  while (!closed()) {
    await tx.waitForData();
    if (closed()) break;
    const bytes = tx.read();
    const c = client();
    if (c === null || bytes.length === 0) continue;
    if (!c.write(bytes)) {
      await new Promise<void>((resolve) => {
        const done = (): void => { c.removeListener('drain', done); c.removeListener('close', done); resolve(); };
        c.once('drain', done);
        c.once('close', done);
      });
    }
  }
}

/** How long a closing backend waits for a client to take the guest's last
 * bytes before it drops them with the connection. */
const FLUSH_ON_CLOSE_MS = 200;

/** Ends a client connection after `rest` (the guest's last bytes, which the
 * pump may not have sent yet) is written, or after FLUSH_ON_CLOSE_MS: the
 * socket is destroyed either way, so a server's close() does not wait for
 * the client to hang up. */
export function flushThenDestroy(c: net.Socket, rest: Uint8Array): void {
  if (c.destroyed || rest.length === 0) { c.destroy(); return; }
  const timer = setTimeout(() => c.destroy(), FLUSH_ON_CLOSE_MS);
  c.write(rest, () => { clearTimeout(timer); c.destroy(); });
}
