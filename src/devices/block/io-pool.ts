// A small pool of I/O threads for a disk controller (bhyve's blockif has 8
// worker threads per disk for the same reason): the device thread parses a
// command and validates its buffers inside the guest's register-write exit,
// then hands the transfer (image offset, guest-physical segments) to a
// worker and returns to the guest at once; the worker does the
// preadv/pwritev straight between the image and its own mapping of guest
// RAM, marks the request done and rings the device thread's doorbell
// (DEVICE_REQUEST.POLL). The device completes the command (status, FIS or
// completion entry, interrupt) on its own thread in reap(), so its
// register state stays on that thread, except for what a request's
// completion record or register clear (below) lets the worker post: the
// part of the completion the driver polls for.
//
// Requests live in a fixed table in shared memory:
//   FREE -> READY (device thread) -> TAKEN (a worker, or the device thread
//   itself in drain()) -> DONE -> FREE (device thread, in reap()).
// drain() is what a reset or a port stop calls first: it does the READY
// requests itself, waits for the TAKEN ones and completes everything, so
// that after it nothing touches guest memory on the device's behalf (the
// synchronous model's "no command is in flight between two accesses").
// A worker that could not start leaves its requests READY: drain() and the
// device thread's reap (which does the waiting requests itself while no
// worker is up)
// still finish them (a worker that fails rings the doorbell so that one
// comes).
//
// A request may carry a completion record (`post`): 16 bytes the worker
// writes to guest memory right after the transfer, its last word (which
// holds what the driver polls, e.g. an NVMe completion entry's phase tag)
// last, one of two variants by the outcome. The driver then sees the
// command complete without the device thread; such a request can also ask
// for no doorbell ring (`kick: false`): the device thread reaps it at its
// next exit (a polled queue needs no interrupt).
//
// Or (`clear`) it may, on success only, write one word to guest memory and
// then clear bits in a word of a register page shared with the device
// (an AHCI port's PxSACT, which its driver polls from that page), before
// it is marked DONE: the driver may take the tag again before the device
// thread has reaped it (the device's completion must leave the bit alone).

import { Worker } from 'node:worker_threads';
import type { HelperThreadData } from '../device.js';
import type { GuestMemory } from '../../sys/guest-memory.js';
import type { BlockBackendOptions, BlockFile } from './block-backend.js';

/** Requests in flight at most (AHCI's 32 slots, or an NVMe batch). */
export const POOL_SLOTS = 64;
/** The longest a worker spins for the next request before it sleeps
 * (adaptive below it: io-pool-worker.ts). */
export const POOL_POLL_MAX_NS = 200_000;
/** After a sign that the workers lack a CPU (a request stolen because no
 * worker took it in time, a worker's spin preempted), this many transfers
 * run on the device thread before the pool gets one again, twice as many
 * after each further sign with no transfer done by a worker in between (up
 * to 64 times as many): on a host whose CPUs are all busy a handed-off
 * transfer waits for the scheduler while the guest polls for it, where the
 * exit would have done it at once. */
export const POOL_HOLD_OFF = 64;
/** A worker that holds a request and has finished none for this long
 * has lost its CPU: the requests behind it may be taken back. */
export const WORKER_STALL_MS = 2;
/** Guest buffer segments per request; more goes the synchronous way. */
export const POOL_MAX_SEGS = 64;

export const SLOT_STATE = { FREE: 0, READY: 1, TAKEN: 2, DONE: 3 } as const;
/** Int32 words per slot: state, write, file, nseg, result, flags, then the
 * completion record (4 words on success, the last word on failure). */
const SI = { STATE: 0, WRITE: 1, FILE: 2, NSEG: 3, RESULT: 4, FLAGS: 5, POST: 6, POST_ERR: 10, CLEAR_WORD: 11, CLEAR_MASK: 12, CLEAR_VALUE: 13 } as const;
export const SLOT_INTS = 14;
const FLAG = { KICK: 1, POST: 2, CLEAR: 4 } as const;
/** Float64 words per slot: offset, record address, then (gpa, len) pairs. */
const SF = { OFFSET: 0, POST_GPA: 1, SEGS: 2 } as const;
const SLOT_F64 = SF.SEGS + 2 * POOL_MAX_SEGS;
/** Control words. */
export const CTL = {
  /** 0 running, 1 stop. */
  STOP: 0,
  /** Bumped at each submit: the workers wait on it. */
  SUBMITTED: 1,
  /** Bumped at each completion: drain() waits on it. */
  DONE: 2,
  /** Set by a worker when it rang the doorbell, cleared by reap(): one
   * kick covers every completion until the device thread looks. */
  KICKED: 3,
  /** Workers that are up (mapped RAM, waiting for requests). */
  UP: 4,
  /** Workers that failed to start. */
  FAILED: 5,
  /** Workers asleep in Atomics.wait (a submit wakes them; spinning ones
   * see SUBMITTED change by themselves). */
  SLEEPING: 6,
  /** Bumped by a worker whose spin lost its CPU (the host's CPUs are busy). */
  PREEMPTED: 7,
  /** Workers that have left for good: returned from their loop after
   * close(), failed in it, or could not load their module (the bundle
   * loader reports that: workerData.loadFailure, one word per worker
   * from WORKER_WORD). */
  ENDED: 8,
  /** Requests a worker did within a merged transfer (serveReady). */
  MERGED: 10,
} as const;
/** Per worker from here: WORKER_STATE.* (its load-failure report moves
 * LOADING to LOAD_FAILED). */
export const WORKER_WORD = 16;
const MAX_WORKERS = 16;
export const WORKER_STATE = { LOADING: 0, RUNNING: 1, ENDED: 2, LOAD_FAILED: 3 } as const;
const CTL_WORDS = WORKER_WORD + MAX_WORKERS;
/** Where a worker that could not load leaves why (the last one's). */
const REASON_OFF = 4 * CTL_WORDS;
const REASON_MAX = 256;
/** Word 9: the length of that reason. */
const REASON_LEN_WORD = 9;

export interface IoPoolShared {
  ctl: SharedArrayBuffer;
  slotsI: SharedArrayBuffer;
  slotsF: SharedArrayBuffer;
}

/** What a worker gets, structured-clonable. */
export interface IoPoolWorkerData {
  helper: HelperThreadData;
  shared: IoPoolShared;
  files: Array<{ fd: number; size: number; options: BlockBackendOptions }>;
  /** The device's register page (`clear` requests), to map from its fd. */
  page?: { fd: number; size: number };
  /** Unit tests: no doorbell (no vCPU to kick). */
  noKick?: boolean;
  /** Instead of the device thread's doorbell, an eventfd the submitting
   * thread sleeps on (virtio-blk's iothread): a completion writes it. */
  wakeFd?: number;
  /** This worker's word (WORKER_WORD + index). */
  index?: number;
  loadFailure?: {
    sab: SharedArrayBuffer; stateWord: number; from: number; to: number;
    reasonOffset: number; reasonMax: number; reasonLenWord: number;
  };
  /** Requests that continue each other are done as one transfer of at
   * most this many bytes (serveReady); 0: one transfer per request. */
  mergeMax?: number;
}

/** Does request `i`'s transfer with `mem` and `files`; returns the bytes
 * moved or -1 on an error (a segment outside RAM, an I/O error). Shared by
 * the workers and the device thread (drain). */
export function performRequest(i: number, ints: Int32Array, f64: Float64Array, mem: GuestMemory, files: BlockFile[], views: Uint8Array[]): number {
  const b = i * SLOT_INTS;
  const fb = i * SLOT_F64;
  const file = files[ints[b + SI.FILE]];
  if (!file) return -1;
  const write = ints[b + SI.WRITE] !== 0;
  const nseg = ints[b + SI.NSEG];
  views.length = 0;
  try {
    for (let s = 0; s < nseg; s++) mem.slices(f64[fb + SF.SEGS + 2 * s], f64[fb + SF.SEGS + 1 + 2 * s], views);
    return write ? file.writev(views, f64[fb + SF.OFFSET]) : file.readv(views, f64[fb + SF.OFFSET]);
  } catch {
    return -1;
  } finally {
    views.length = 0;
  }
}

/** Does request `i` (performRequest), stores its result, writes its
 * completion record if it has one, marks it DONE and clears its register
 * bits (`clear`); returns whether the device thread wants a doorbell ring
 * for it. */
export function finishRequest(i: number, ints: Int32Array, f64: Float64Array, mem: GuestMemory, files: BlockFile[], views: Uint8Array[],
  page: Int32Array | undefined, onDone: () => void): boolean {
  return completeRequest(i, performRequest(i, ints, f64, mem, files, views), ints, f64, mem, page, onDone);
}

/** Bytes request `i` moves when all goes well (the sum of its segments). */
function requestBytes(i: number, ints: Int32Array, f64: Float64Array): number {
  const b = i * SLOT_INTS;
  const fb = i * SLOT_F64;
  let n = 0;
  for (let s = 0; s < ints[b + SI.NSEG]; s++) n += f64[fb + SF.SEGS + 1 + 2 * s];
  return n;
}

/**
 * A worker's pass over the table with merging (`mergeMax` > 0): takes
 * every READY request, then does those that continue each other (same
 * file, same direction, each starting where the one before ends in the
 * image) as one preadv/pwritev of at most `mergeMax` bytes, and completes
 * each (finishRequest's steps) after it. A merged transfer that fails or
 * comes up short is done again request by request, so each one's result
 * is its own (a write or read of the same bytes again changes nothing).
 * Requests in flight together may be done in any order, so merging them
 * is what doing them one after another would be, with one system call.
 * Returns how many were done and whether the device thread wants a ring.
 */
export function serveReady(ints: Int32Array, f64: Float64Array, mem: GuestMemory, files: BlockFile[], views: Uint8Array[],
  page: Int32Array | undefined, onDone: () => void, mergeMax: number, taken: number[]): { did: number; merged: number; kick: boolean } {
  taken.length = 0;
  for (let i = 0; i < POOL_SLOTS; i++) {
    const b = i * SLOT_INTS;
    if (Atomics.load(ints, b) !== SLOT_STATE.READY) continue;
    if (Atomics.compareExchange(ints, b, SLOT_STATE.READY, SLOT_STATE.TAKEN) !== SLOT_STATE.READY) continue;
    taken.push(i);
  }
  return serveTaken(ints, f64, mem, files, views, page, onDone, mergeMax, taken);
}

/** serveReady's second half: does the requests `taken` (TAKEN by this
 * thread), merged where they continue each other. */
function serveTaken(ints: Int32Array, f64: Float64Array, mem: GuestMemory, files: BlockFile[], views: Uint8Array[],
  page: Int32Array | undefined, onDone: () => void, mergeMax: number, taken: number[]): { did: number; merged: number; kick: boolean } {
  if (taken.length === 0) return { did: 0, merged: 0, kick: false };
  // By file, direction and image offset: runs that continue each other sit together.
  if (taken.length > 1) {
    taken.sort((x, y) => ints[x * SLOT_INTS + SI.FILE] - ints[y * SLOT_INTS + SI.FILE]
      || ints[x * SLOT_INTS + SI.WRITE] - ints[y * SLOT_INTS + SI.WRITE]
      || f64[x * SLOT_F64 + SF.OFFSET] - f64[y * SLOT_F64 + SF.OFFSET]);
  }
  let kick = false;
  let together = 0;
  for (let g = 0; g < taken.length;) {
    const first = taken[g];
    const file = ints[first * SLOT_INTS + SI.FILE];
    const write = ints[first * SLOT_INTS + SI.WRITE];
    let end = f64[first * SLOT_F64 + SF.OFFSET] + requestBytes(first, ints, f64);
    let bytes = end - f64[first * SLOT_F64 + SF.OFFSET];
    let h = g + 1;
    while (h < taken.length) {
      const i = taken[h];
      const n = requestBytes(i, ints, f64);
      if (ints[i * SLOT_INTS + SI.FILE] !== file || ints[i * SLOT_INTS + SI.WRITE] !== write
        || f64[i * SLOT_F64 + SF.OFFSET] !== end || bytes + n > mergeMax) break;
      end += n;
      bytes += n;
      h++;
    }
    if (h - g === 1) {
      if (finishRequest(first, ints, f64, mem, files, views, page, onDone)) kick = true;
      g = h;
      continue;
    }
    let merged = -1;
    const f = files[file];
    views.length = 0;
    try {
      for (let k = g; k < h; k++) {
        const i = taken[k];
        const fb = i * SLOT_F64;
        for (let s = 0; s < ints[i * SLOT_INTS + SI.NSEG]; s++) mem.slices(f64[fb + SF.SEGS + 2 * s], f64[fb + SF.SEGS + 1 + 2 * s], views);
      }
      if (f) merged = write ? f.writev(views, f64[first * SLOT_F64 + SF.OFFSET]) : f.readv(views, f64[first * SLOT_F64 + SF.OFFSET]);
    } catch {
      merged = -1;
    } finally {
      views.length = 0;
    }
    if (merged === bytes) together += h - g;
    for (let k = g; k < h; k++) {
      const i = taken[k];
      const r = merged === bytes ? requestBytes(i, ints, f64) : performRequest(i, ints, f64, mem, files, views);
      if (completeRequest(i, r, ints, f64, mem, page, onDone)) kick = true;
    }
    g = h;
  }
  return { did: taken.length, merged: together, kick };
}

/** finishRequest's second half: request `i` moved `result` bytes (-1: failed). */
function completeRequest(i: number, result: number, ints: Int32Array, f64: Float64Array, mem: GuestMemory,
  page: Int32Array | undefined, onDone: () => void): boolean {
  const b = i * SLOT_INTS;
  const fb = i * SLOT_F64;
  ints[b + SI.RESULT] = result;
  const flags = ints[b + SI.FLAGS];
  const expected = requestBytes(i, ints, f64);
  const ok = result === expected;
  if (flags & FLAG.POST) {
    const last = ok ? ints[b + SI.POST + 3] : ints[b + SI.POST_ERR];
    try {
      const rec = mem.slice(f64[fb + SF.POST_GPA], 16);
      const dv = new DataView(rec.buffer, rec.byteOffset, 16);
      for (let w = 0; w < 3; w++) dv.setInt32(4 * w, ints[b + SI.POST + w], true);
      // The word the driver polls goes last, as one store.
      if ((rec.byteOffset & 3) === 0) Atomics.store(new Int32Array(rec.buffer, rec.byteOffset + 12, 1), 0, last);
      else dv.setInt32(12, last, true);
    } catch {
      // The record's address was checked at submit; a region that went away
      // meanwhile leaves the guest without it, as a lost DMA write.
    }
  }
  // Cleared before DONE: once drain() has seen every request DONE no
  // thread touches the register page any more (a port reset after it
  // stays reset).
  const clear = (flags & FLAG.CLEAR) !== 0 && ok && page !== undefined;
  if (clear) {
    try { mem.writeU32(f64[fb + SF.POST_GPA], ints[b + SI.CLEAR_VALUE] >>> 0); } catch { /* as a lost DMA write */ }
    Atomics.and(page!, ints[b + SI.CLEAR_WORD], ~ints[b + SI.CLEAR_MASK]);
  }
  Atomics.store(ints, b + SI.STATE, SLOT_STATE.DONE);
  onDone();
  // A failure always goes back to the device thread (its error state).
  return (flags & FLAG.KICK) !== 0 || ((flags & FLAG.CLEAR) !== 0 && !clear);
}

/** On success: `value` to the guest word at `gpa`, then bits `mask` of word
 * `word` of the shared register page cleared. */
export interface RegisterClear {
  gpa: number;
  value: number;
  word: number;
  mask: number;
}

/** What a request writes to guest memory when its transfer is done. */
export interface CompletionRecord {
  gpa: number;
  /** The 16 bytes as four little-endian words, on success (all bytes moved). */
  ok: readonly [number, number, number, number];
  /** The last word instead, on failure. */
  errLast: number;
}

type Done = (result: number) => void;

/** The device thread's side. */
export class BlockIoPool {
  private readonly ctl: Int32Array;
  private readonly ints: Int32Array;
  private readonly f64: Float64Array;
  private readonly shared: IoPoolShared;
  private readonly callbacks: Array<Done | undefined> = new Array(POOL_SLOTS).fill(undefined);
  private readonly submittedAt = new Float64Array(POOL_SLOTS);
  private readonly workers: Worker[] = [];
  private readonly views: Uint8Array[] = [];
  /** Slots this thread handed out and has not completed, oldest first
   * (reap and steal look at these only, not at every slot). */
  private readonly owned: number[] = [];
  /** Slots free to hand out. */
  private readonly free: number[] = [];
  private inFlight = 0;
  /** Requests refused because no worker was up yet (done by the caller). */
  beforeUp = 0;
  private closed = false;
  private workerData: IoPoolWorkerData | undefined;
  private readonly threads: number;
  private readonly workerUrl: URL | undefined;
  /** Requests the device thread did itself (drain, a pool that is not up). */
  stolen = 0;
  submitted = 0;
  /** Transfers refused while held off (POOL_HOLD_OFF): done by the caller. */
  heldOff = 0;
  /** Refusals left before the pool takes transfers again. */
  private holdOff = 0;
  private readonly holdOffLength: number;
  /** Hold-offs in a row with no transfer a worker did in between: each
   * doubles the next (a host that stays busy gets fewer probes). */
  private lateStreak = 0;
  /** Slots whose request the device thread did itself. */
  private readonly doneHere = new Uint8Array(POOL_SLOTS);
  private preemptedSeen = 0;

  /** The register page `clear` requests change (as 32-bit words). */
  private readonly page: Int32Array | undefined;
  /** Merged transfers up to this many bytes (serveReady; 0: none). */
  private readonly mergeMax: number;
  private readonly taken: number[] = [];

  constructor(threads: number, helper: HelperThreadData | undefined, private readonly files: BlockFile[],
    private readonly mem: () => GuestMemory,
    opts: { noKick?: boolean; workerUrl?: URL; page?: { words: Int32Array; fd?: number }; holdOff?: number; wakeFd?: number; mergeMax?: number } = {}) {
    this.page = opts.page?.words;
    this.mergeMax = opts.mergeMax ?? 0;
    this.holdOffLength = opts.holdOff ?? POOL_HOLD_OFF;
    this.shared = {
      ctl: new SharedArrayBuffer(REASON_OFF + REASON_MAX),
      slotsI: new SharedArrayBuffer(4 * SLOT_INTS * POOL_SLOTS),
      slotsF: new SharedArrayBuffer(8 * SLOT_F64 * POOL_SLOTS),
    };
    this.ctl = new Int32Array(this.shared.ctl);
    this.ints = new Int32Array(this.shared.slotsI);
    this.f64 = new Float64Array(this.shared.slotsF);
    this.workerData = helper && threads > 0 ? {
      helper, shared: this.shared, noKick: opts.noKick, wakeFd: opts.wakeFd, mergeMax: opts.mergeMax,
      files: files.map((f) => ({ fd: f.descriptor, size: f.size, options: f.options })),
      page: opts.page?.fd !== undefined ? { fd: opts.page.fd, size: opts.page.words.byteLength } : undefined,
    } : undefined;
    this.threads = Math.min(threads, MAX_WORKERS);
    this.workerUrl = opts.workerUrl;
    for (let i = POOL_SLOTS - 1; i >= 0; i--) this.free.push(i);
    this.canClear = this.page !== undefined && (this.workerData === undefined || this.workerData.page !== undefined);
  }

  /** Starts the workers now if they are not (a device calls this when its
   * driver starts a queue or port, so that they are up by the first
   * request; it must be after the sandbox, i.e. while the guest runs: a
   * new thread inherits the sandbox, sandbox.ts). */
  startWorkers(): void {
    const data = this.workerData;
    this.workerData = undefined;
    if (!data) return;
    for (let t = 0; t < this.threads; t++) {
      const loadFailure = {
        sab: this.shared.ctl, stateWord: WORKER_WORD + t, from: WORKER_STATE.LOADING, to: WORKER_STATE.LOAD_FAILED,
        reasonOffset: REASON_OFF, reasonMax: REASON_MAX, reasonLenWord: REASON_LEN_WORD,
      };
      const w = new Worker(this.workerUrl ?? new URL('./io-pool-worker.js', import.meta.url),
        { workerData: { ...data, index: t, loadFailure }, stdout: false, stderr: false });
      // The device thread never returns to its event loop while the guest
      // runs: the worker reports through the control words only (a module
      // that cannot load: the bundle loader's report, above). Where the
      // loop does run, an error is not thrown again from the event.
      w.on('error', () => {
        Atomics.compareExchange(this.ctl, WORKER_WORD + t, WORKER_STATE.LOADING, WORKER_STATE.LOAD_FAILED);
      });
      w.unref();
      this.workers.push(w);
    }
  }

  /** Requests handed out and not yet completed by reap(). */
  get pending(): number { return this.inFlight; }

  /** Workers up and waiting. */
  get workersUp(): number { return Atomics.load(this.ctl, CTL.UP); }

  /** Workers started whose module could not load. */
  get workersFailedToLoad(): number {
    let n = 0;
    for (let t = 0; t < this.workers.length; t++) if (Atomics.load(this.ctl, WORKER_WORD + t) === WORKER_STATE.LOAD_FAILED) n++;
    return n;
  }

  /** Why the last worker that could not load did not. */
  loadError(): string {
    const n = Atomics.load(this.ctl, REASON_LEN_WORD);
    return Buffer.from(new Uint8Array(this.shared.ctl, REASON_OFF, n)).toString('utf8');
  }

  /** Completions so far (workers' and this thread's): a thread that
   * polls for them watches this change. */
  get completions(): number { return Atomics.load(this.ctl, CTL.DONE); }
  /** Requests the workers did within merged transfers. */
  get merged(): number { return Atomics.load(this.ctl, CTL.MERGED); }

  /** Hands a transfer to the pool; `done` runs on this thread (in reap or
   * drain) with the bytes moved or -1. False when the pool is full, the
   * request has too many segments or the pool is closed: do it here. */
  /** Whether `clear` requests may be submitted: there is a register page,
   * and the threads (if any) can map it. */
  readonly canClear: boolean;

  submit(file: number, write: boolean, offset: number, segs: ReadonlyArray<readonly [number, number]>, done: Done,
    opts: { post?: CompletionRecord; clear?: RegisterClear; kick?: boolean } = {}): boolean {
    if (this.closed || segs.length > POOL_MAX_SEGS || this.inFlight >= POOL_SLOTS) return false;
    if (this.workerData) this.startWorkers();
    // Until a worker is up (they start with the first request, and take a
    // while), the caller does its requests itself: a guest that polls for
    // completion without exiting would otherwise wait for nothing.
    if (this.threads > 0 && !this.workerData && this.workers.length > 0 && Atomics.load(this.ctl, CTL.UP) === 0) {
      this.beforeUp++;
      return false;
    }
    const preempted = Atomics.load(this.ctl, CTL.PREEMPTED);
    if (preempted !== this.preemptedSeen) { this.preemptedSeen = preempted; this.holdOffAgain(); }
    if (this.holdOff > 0 && this.workers.length > 0) {
      this.holdOff--;
      this.heldOff++;
      return false;
    }
    const i = this.free.pop();
    if (i === undefined) return false;
    const b = i * SLOT_INTS;
    const fb = i * SLOT_F64;
    this.ints[b + SI.WRITE] = write ? 1 : 0;
    this.ints[b + SI.FILE] = file;
    this.ints[b + SI.NSEG] = segs.length;
    this.f64[fb + SF.OFFSET] = offset;
    for (let s = 0; s < segs.length; s++) { this.f64[fb + SF.SEGS + 2 * s] = segs[s][0]; this.f64[fb + SF.SEGS + 1 + 2 * s] = segs[s][1]; }
    const post = opts.post;
    const clear = opts.clear;
    this.ints[b + SI.FLAGS] = (opts.kick === false ? 0 : FLAG.KICK) | (post ? FLAG.POST : 0) | (clear ? FLAG.CLEAR : 0);
    if (clear) {
      this.f64[fb + SF.POST_GPA] = clear.gpa;
      this.ints[b + SI.CLEAR_VALUE] = clear.value | 0;
      this.ints[b + SI.CLEAR_WORD] = clear.word;
      this.ints[b + SI.CLEAR_MASK] = clear.mask | 0;
    }
    if (post) {
      this.f64[fb + SF.POST_GPA] = post.gpa;
      for (let w = 0; w < 4; w++) this.ints[b + SI.POST + w] = post.ok[w] | 0;
      this.ints[b + SI.POST_ERR] = post.errLast | 0;
    }
    this.callbacks[i] = done;
    this.submittedAt[i] = performance.now();
    this.inFlight++;
    this.submitted++;
    this.owned.push(i);
    Atomics.store(this.ints, b + SI.STATE, SLOT_STATE.READY);
    Atomics.add(this.ctl, CTL.SUBMITTED, 1);
    // A worker that spins (io-pool-worker.ts) sees the count change; one
    // asleep needs the wake-up.
    if (this.workers.length && Atomics.load(this.ctl, CTL.SLEEPING) > 0) Atomics.notify(this.ctl, CTL.SUBMITTED, 1);
    return true;
  }

  /** Completes the requests that are done (their callbacks run here).
   * Without a worker up, does the waiting requests first. Returns how
   * many completed. */
  reap(): number {
    // Cleared even with nothing in flight: a worker that finished a
    // request and rang after this thread had already reaped it left
    // KICKED set, and would ring for none of the next requests (a thread
    // that sleeps until rung, virtio-blk's iothread, would sleep on).
    Atomics.store(this.ctl, CTL.KICKED, 0);
    if (this.inFlight === 0) return 0;
    if (Atomics.load(this.ctl, CTL.UP) === 0) this.stealReady(0);
    return this.completeDone();
  }

  /** Does here the requests no worker has taken for `minAgeMs` (a worker
   * that waits for a CPU, e.g. behind the vCPU on a loaded host, would
   * leave the guest polling for them); reap() completes them. Returns how
   * many. */
  stealStale(minAgeMs: number): number {
    if (this.inFlight === 0) return 0;
    // The oldest request is owned[0]: nothing is stale while it is young.
    if (performance.now() - this.submittedAt[this.owned[0]] < minAgeMs) return 0;
    // A worker in the middle of a transfer (a merged one takes a while)
    // takes the waiting requests next: it has a CPU.
    if (this.workers.length > 0 && this.workerBusy()) return 0;
    const before = this.stolen;
    this.stealReady(minAgeMs);
    const n = this.stolen - before;
    if (n > 0 && this.workers.length > 0) this.holdOffAgain();
    return n;
  }

  /** Does the oldest request no worker has taken yet here (the submitting
   * thread, with nothing else to do, helps its workers rather than wait
   * for them); reap() completes it. False when none is waiting. Unlike
   * stealStale, no sign that the workers lack a CPU: no hold-off. */
  runOneReady(): boolean {
    const owned = this.owned;
    for (let k = 0; k < owned.length; k++) {
      const i = owned[k];
      const b = i * SLOT_INTS;
      if (Atomics.load(this.ints, b + SI.STATE) !== SLOT_STATE.READY) continue;
      if (Atomics.compareExchange(this.ints, b + SI.STATE, SLOT_STATE.READY, SLOT_STATE.TAKEN) !== SLOT_STATE.READY) continue;
      finishRequest(i, this.ints, this.f64, this.mem(), this.files, this.views, this.page, () => {});
      this.stolen++;
      this.doneHere[i] = 1;
      return true;
    }
    return false;
  }

  /** Whether a worker is in the middle of a transfer: it holds a request
   * (TAKEN; this thread takes them only inside stealReady, which finishes
   * them before it returns) and has not been stuck on it (no request done
   * by a worker for WORKER_STALL_MS: it lost its CPU in the middle). */
  private workerBusy(): boolean {
    let holds = false;
    for (const i of this.owned) if (Atomics.load(this.ints, i * SLOT_INTS + SI.STATE) === SLOT_STATE.TAKEN) { holds = true; break; }
    if (!holds) return false;
    const done = Atomics.load(this.ctl, CTL.DONE);
    const now = performance.now();
    if (done !== this.workerDoneSeen) { this.workerDoneSeen = done; this.workerDoneAt = now; }
    return now - this.workerDoneAt < WORKER_STALL_MS;
  }
  private workerDoneSeen = -1;
  private workerDoneAt = 0;

  /** Finishes every request now: does the waiting ones here, waits for
   * those a worker is doing (bounded by `timeoutMs`), completes all. */
  drain(timeoutMs = 30_000): void {
    if (this.inFlight === 0) return;
    this.stealReady(0);
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      let busy = false;
      for (const i of this.owned) if (Atomics.load(this.ints, i * SLOT_INTS + SI.STATE) === SLOT_STATE.TAKEN) busy = true;
      if (!busy || performance.now() > deadline) break;
      const seen = Atomics.load(this.ctl, CTL.DONE);
      Atomics.wait(this.ctl, CTL.DONE, seen, 5);
    }
    this.completeDone();
  }

  /** The workers lack a CPU: refuse the next transfers, for longer each
   * time in a row (at most 64 times the base). */
  private holdOffAgain(): void {
    this.holdOff = this.holdOffLength * (1 << Math.min(this.lateStreak, 6));
    this.lateStreak++;
  }

  /** Does the READY requests older than `minAgeMs` on this thread. */
  private stealReady(minAgeMs: number): void {
    const now = performance.now();
    const owned = this.owned;
    const taken = this.taken;
    taken.length = 0;
    for (let k = 0; k < owned.length; k++) {
      const i = owned[k];
      const b = i * SLOT_INTS;
      if (now - this.submittedAt[i] < minAgeMs) break; // oldest first: the rest are younger
      if (Atomics.load(this.ints, b + SI.STATE) !== SLOT_STATE.READY) continue;
      if (Atomics.compareExchange(this.ints, b + SI.STATE, SLOT_STATE.READY, SLOT_STATE.TAKEN) !== SLOT_STATE.READY) continue;
      taken.push(i);
      this.stolen++;
      this.doneHere[i] = 1;
    }
    if (taken.length === 0) return;
    if (this.mergeMax > 0) {
      const r = serveTaken(this.ints, this.f64, this.mem(), this.files, this.views, this.page, () => {}, this.mergeMax, taken);
      if (r.merged > 0) Atomics.add(this.ctl, CTL.MERGED, r.merged);
    } else {
      for (const i of taken) finishRequest(i, this.ints, this.f64, this.mem(), this.files, this.views, this.page, () => {});
    }
    taken.length = 0;
  }

  private completeDone(): number {
    let n = 0;
    const owned = this.owned;
    for (let k = 0; k < owned.length;) {
      const i = owned[k];
      const b = i * SLOT_INTS;
      if (Atomics.load(this.ints, b + SI.STATE) !== SLOT_STATE.DONE) { k++; continue; }
      const cb = this.callbacks[i];
      const result = this.ints[b + SI.RESULT];
      this.callbacks[i] = undefined;
      Atomics.store(this.ints, b + SI.STATE, SLOT_STATE.FREE);
      owned.splice(k, 1);
      this.free.push(i);
      // A transfer a worker did ends a streak of hold-offs.
      if (this.doneHere[i]) this.doneHere[i] = 0;
      else if (this.workers.length > 0) this.lateStreak = 0;
      this.inFlight--;
      n++;
      // The callback may submit (and push to owned): k already points at
      // the next entry.
      cb?.(result);
    }
    return n;
  }

  /** Finishes what is in flight and stops the workers. */
  close(): void {
    if (this.closed) return;
    this.drain();
    this.closed = true;
    Atomics.store(this.ctl, CTL.STOP, 1);
    Atomics.add(this.ctl, CTL.SUBMITTED, 1);
    Atomics.notify(this.ctl, CTL.SUBMITTED);
    // Not terminate(): Node 20 aborts the process when a worker is
    // terminated while koffi initialises (see virtio/blk-iothread.ts); a
    // stopped worker returns from its loop and ends by itself.
    this.started = this.workers.length;
    this.workers.length = 0;
  }

  private started = 0;

  /** After close(): waits (bounded) until every worker started has left
   * (or could not load). A thread that started workers must not end
   * before them: its end terminates them, and a worker terminated while
   * koffi initialises aborts the process (Node 20). True when all left. */
  awaitWorkersEnded(timeoutMs = 10_000): boolean {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let left = 0;
      for (let t = 0; t < this.started; t++) {
        const s = Atomics.load(this.ctl, WORKER_WORD + t);
        if (s === WORKER_STATE.ENDED || s === WORKER_STATE.LOAD_FAILED) left++;
      }
      if (left === this.started) return true;
      if (Date.now() > deadline) return false;
      Atomics.wait(this.ctl, CTL.ENDED, Atomics.load(this.ctl, CTL.ENDED), 5);
    }
  }
}
