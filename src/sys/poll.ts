// Synchronous poll(2) over a few descriptors, for a helper worker_thread
// that blocks in the kernel on its own (the virtio-net I/O thread waits on
// its notify eventfd and the tap at once). Never call it on a thread with
// an event loop to keep: it parks the calling thread.

import { errno, libcFunc } from './libc.js';

// (a typed array passed as void * is handed to C in place, no copy)
const pollFn = libcFunc('int poll(void *fds, unsigned long nfds, int timeout)');

export const POLLIN = 0x0001;
export const POLLERR = 0x0008;
export const POLLHUP = 0x0010;
export const POLLNVAL = 0x0020;
const EINTR = 4;

/** A reusable struct pollfd array. */
export class PollSet {
  private readonly buf: Uint8Array;
  private readonly view: DataView;
  private n = 0;

  constructor(capacity: number) {
    this.buf = new Uint8Array(8 * capacity);
    this.view = new DataView(this.buf.buffer);
  }

  /** Forgets the descriptors set before. */
  clear(): void { this.n = 0; }

  /** Adds `fd` waiting for `events`; returns its index. */
  add(fd: number, events = POLLIN): number {
    const o = 8 * this.n;
    this.view.setInt32(o, fd, true);
    this.view.setInt16(o + 4, events, true);
    this.view.setInt16(o + 6, 0, true);
    return this.n++;
  }

  /** The events the last wait() saw on entry `i`. */
  revents(i: number): number { return this.view.getInt16(8 * i + 6, true); }

  /** Blocks up to `timeoutMs` (-1: no limit) for an event: the number of
   * entries with events (0 on timeout), or -errno. EINTR is retried. */
  wait(timeoutMs: number): number {
    for (;;) {
      const r = pollFn(this.buf, this.n, timeoutMs) as number;
      if (r >= 0) return r;
      const e = errno();
      if (e !== EINTR) return -e;
    }
  }
}
