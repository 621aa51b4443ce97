// Frame batches (native/net-batch.c): a device queues the frames it has
// popped and checked as host addresses and lengths, and one foreign call
// writes them all to the backend's fd, a writev(2) per frame (FrameBatch);
// a backend reads what its fd holds, up to a few frames, by one call into
// slots of its own buffer (FrameReads). The system calls stay one per
// frame (a tap takes and gives no more); what goes is koffi's and N-API's
// glue around each, which cost a frame more than the system call itself
// (BENCHMARKS.md). `npm run build` compiles the library
// (scripts/build-native.mjs); without it devices send frame by frame.

import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { koffi } from './koffi.js';
import { hostAddress } from './libc.js';

/** Where the build puts the library: ../native from dist/sys/ and
 * dist/bundle/ alike; from src/sys/ (the unit tests) the built one. */
export const NET_BATCH_PATH = [new URL('../native/net-batch.so', import.meta.url), new URL('../../dist/native/net-batch.so', import.meta.url)]
  .map((u) => fileURLToPath(u)).find((p) => fs.existsSync(p)) ?? fileURLToPath(new URL('../native/net-batch.so', import.meta.url));

type WritevEach = (fd: number, iov: unknown, cnt: unknown, n: number, res: unknown) => number;
type ReadEach = (fd: number, buf: unknown, slot: number, n: number, res: unknown) => number;

/** The library's functions in this thread; undefined: not tried yet;
 * null: not built or cannot load here. */
let lib: { writevEach: WritevEach; readEach: ReadEach } | null | undefined;

/** Loads the library once per thread; false when it was not built or cannot
 * be opened (a thread started after the sandbox can still bind it when an
 * earlier one loaded it: the dynamic loader finds it by name). */
export function loadNetBatch(): boolean {
  if (lib === undefined) {
    lib = null;
    if (fs.existsSync(NET_BATCH_PATH)) {
      try {
        const l = koffi().load(NET_BATCH_PATH);
        lib = {
          writevEach: l.func('int nb_writev_each(int fd, void *iov, void *cnt, uint32_t n, void *res)') as WritevEach,
          readEach: l.func('int nb_read_each(int fd, void *buf, uint32_t slot, uint32_t n, void *res)') as ReadEach,
        };
      } catch {
        lib = null;
      }
    }
  }
  return lib !== null;
}

/** Frames in one batch at most (a flush per this many). */
export const BATCH_FRAMES = 256;
/** iovecs in one batch at most (struct iovec: address, length). */
export const BATCH_IOVECS = 1024;

/** Frames to write to one fd, as host addresses of the caller's views. */
export class FrameBatch {
  // Typed arrays, which koffi passes by their data's address (the C side
  // reads and writes them in place); the garbage collector frees them with
  // the port, e.g. when an I/O thread ends.
  /** struct iovec as 32-bit words: address low, high, length low, high. */
  private readonly iov = new Uint32Array(BATCH_IOVECS * 4);
  private readonly cnt = new Uint32Array(BATCH_FRAMES);
  /** After flush(): frame i's byte count, or -errno. */
  readonly results = new Int32Array(BATCH_FRAMES);
  /** Frames queued since the last flush. */
  frames = 0;
  private iovecs = 0;
  /** Calls made (diagnostics, tests). */
  flushes = 0;
  /** Frames the fd refused (their results were -errno). */
  errors = 0;

  private constructor(private readonly fd: number, private readonly call: WritevEach) {}

  /** A batch for `fd`, or undefined without the library. */
  static for(fd: number): FrameBatch | undefined {
    return loadNetBatch() ? new FrameBatch(fd, lib!.writevEach) : undefined;
  }

  /** No room for another frame of up to `segments` pieces: flush first. */
  full(segments: number): boolean {
    return this.frames >= BATCH_FRAMES || this.iovecs + segments > BATCH_IOVECS;
  }

  /** Queues the frame made of `views` (the caller keeps the memory they
   * show valid until flush()). False, and nothing queued, when a view does
   * not lie in a mapping made here (the caller sends that frame itself) or
   * the batch has no room (flush first). */
  add(views: readonly Uint8Array[]): boolean {
    if (this.full(views.length)) return false;
    const iov = this.iov;
    let at = this.iovecs;
    for (const v of views) {
      const addr = hostAddress(v);
      if (addr === undefined) return false;
      iov[4 * at] = addr >>> 0;
      iov[4 * at + 1] = Math.floor(addr / 0x1_0000_0000);
      iov[4 * at + 2] = v.length;
      iov[4 * at + 3] = 0;
      at++;
    }
    this.cnt[this.frames++] = at - this.iovecs;
    this.iovecs = at;
    return true;
  }

  /** Forgets the queued frames (their queue broke before they were sent:
   * the device needs a reset, and nothing of it may leak into the next). */
  discard(): void {
    this.frames = 0;
    this.iovecs = 0;
  }

  /** Writes the queued frames, each with one writev(2); results[i] says
   * how each went. Returns how many were written (or refused). */
  flush(): number {
    const n = this.frames;
    if (n > 0) {
      this.call(this.fd, this.iov, this.cnt, n, this.results);
      this.flushes++;
      for (let i = 0; i < n; i++) if (this.results[i] < 0) this.errors++;
    }
    this.frames = 0;
    this.iovecs = 0;
    return n;
  }
}

/** Frames read ahead at most by one call. */
export const READ_FRAMES = 16;

/** Frames read from one fd by one call, each into a slot of `slot` bytes
 * (the largest frame the fd delivers), handed out in order. */
export class FrameReads {
  /** The slots (a slot a small frame does not reach stays untouched, not
   * resident), passed by address as FrameBatch's arrays are. */
  private readonly buf: Uint8Array;
  private readonly lengths = new Int32Array(READ_FRAMES);
  private count = 0;
  private next = 0;
  /** Calls made (diagnostics, tests). */
  calls = 0;

  private constructor(private readonly fd: number, private readonly slot: number, private readonly call: ReadEach) {
    this.buf = new Uint8Array(READ_FRAMES * slot);
  }

  /** Reads for `fd`, or undefined without the library. */
  static for(fd: number, slot: number): FrameReads | undefined {
    return loadNetBatch() ? new FrameReads(fd, slot, lib!.readEach) : undefined;
  }

  /** Frames read and not yet taken. */
  get left(): number {
    return this.count - this.next;
  }

  /** The next frame read (a view valid until the next fill()), or null. */
  take(): Uint8Array | null {
    if (this.next >= this.count) return null;
    const i = this.next++;
    return this.buf.subarray(i * this.slot, i * this.slot + this.lengths[i]);
  }

  /** Forgets the frames read and not taken. */
  discard(): void {
    this.count = 0;
    this.next = 0;
  }

  /** Reads what the fd holds, up to READ_FRAMES frames, when every frame
   * read before was taken: the number read, 0 at end of file, or -errno
   * (-EAGAIN: nothing waiting). */
  fill(): number {
    if (this.next < this.count) return this.count - this.next;
    this.count = 0;
    this.next = 0;
    const r = this.call(this.fd, this.buf, this.slot, READ_FRAMES, this.lengths);
    this.calls++;
    if (r > 0) this.count = r;
    return r;
  }
}
