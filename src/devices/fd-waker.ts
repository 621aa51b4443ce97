// The main thread's half of a host descriptor a device thread reads itself
// (a tap, slirp's packet socket, an evdev): while the device thread has
// read it dry and said so (armFdWaker), the main thread waits for it to
// become readable with poll(2) on libuv's threadpool (koffi async, 250 ms
// timeout so that close() is prompt), then disarms and kicks the device
// thread once. Level-triggered poll after arming: data that arrived between
// the empty read and the arming is seen at once.

import * as fs from 'node:fs';
import { pollReadable } from '../sys/tap.js';

const POLL_TIMEOUT_MS = 250;
/** Words of the waker's SharedArrayBuffer. 1 in ARMED: the device thread
 * found the descriptor empty and wants a kick when it is not. */
const ARMED = 0;
const WAKER_WORDS = 2;

export interface FdWaker {
  /** The waker's flags, for the device thread (armFdWaker). */
  readonly wake: SharedArrayBuffer;
  /** Stops waiting and closes the descriptor (the waker owns it). */
  close(): Promise<void>;
}

/** Starts waiting on `fd`; until the device thread has read anything, data
 * on it wakes the device thread. */
export function startFdWaker(fd: number, kick: () => void): FdWaker {
  const wake = new SharedArrayBuffer(WAKER_WORDS * 4);
  const ctl = new Int32Array(wake);
  Atomics.store(ctl, ARMED, 1);
  let closed = false;
  let wakeClosed: () => void = () => undefined;
  const closing = new Promise<void>((r) => { wakeClosed = r; });

  const loop = (async (): Promise<void> => {
    while (!closed) {
      if (Atomics.load(ctl, ARMED) === 0) {
        const w = Atomics.waitAsync(ctl, ARMED, 0, 1000);
        if (w.async) await Promise.race([w.value, closing]);
        continue;
      }
      const r = await pollReadable(fd, POLL_TIMEOUT_MS);
      if (closed) break;
      if (r === 'readable') {
        Atomics.store(ctl, ARMED, 0);
        kick();
      } else if (r === 'error') {
        // The interface went away, is down or was unplugged: look again later.
        await new Promise((res) => setTimeout(res, 100));
      }
    }
  })();

  return {
    wake,
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      wakeClosed();
      await loop.catch(() => undefined);
      try { fs.closeSync(fd); } catch { /* already closed */ }
    },
  };
}

/** Device thread: the descriptor is empty, kick me when it is not. */
export function armFdWaker(ctl: Int32Array): void {
  if (Atomics.load(ctl, ARMED) === 0) {
    Atomics.store(ctl, ARMED, 1);
    Atomics.notify(ctl, ARMED);
  }
}

/** Device thread: another thread (virtio-net's I/O thread) waits on the
 * descriptor now; stop kicking me for it (armFdWaker resumes). */
export function disarmFdWaker(ctl: Int32Array): void {
  Atomics.store(ctl, ARMED, 0);
}
