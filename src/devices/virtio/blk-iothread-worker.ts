// The iothread's body (see blk-iothread.ts): map guest RAM, adopt the
// image fd, build the queue from the layout the driver programmed, then
// block in read() on the notify eventfd and process the queue at each wake;
// between batches spin on the avail ring for the adaptive window
// (adaptive-poll.ts) before sleeping again.
//
// With iothread_readers=N, reads of READER_MIN_BYTES and more go to N
// reader threads (the block I/O pool of ../block/io-pool.ts, started by
// this thread when it takes the queue), several at once, as QEMU's thread
// pool does them: one thread copying from the page cache is the limit of
// a sequential read on a host with CPUs to spare. A reader
// moves the data between the image and its own mapping of guest RAM and
// writes this thread's eventfd; this thread alone writes the used ring (it
// reaps at each wake and while it spins), so the ring keeps one writer.
// Reads no reader has taken yet this thread does itself when it has
// nothing else to do. Requests that change the image (or FLUSH) wait for
// the reads in flight. Readers that cannot load leave every read to this
// thread (the pool refuses them while no reader is up); after a sign that
// they lack a CPU the pool refuses reads for a while (its hold-off).

import { workerData } from 'node:worker_threads';
import { eventfdRead } from '../../sys/eventfd.js';
import { libcFunc, preloadLibc } from '../../sys/libc.js';
import { IOT, type BlkIothreadData } from './blk-iothread.js';
import { deviceThreadKick, IOTHREAD_STATE, IothreadWorkerControl, mapWorkerGuestMemory } from './iothread-control.js';
import { BlockFile, VirtioBlock } from './virtio-blk.js';
import { BlockIoPool } from '../block/io-pool.js';
import { createQueues } from './virtio-device.js';
import { AdaptivePoll, PREEMPTED_NS } from './adaptive-poll.js';
import type { Virtqueue } from './virtqueue.js';

const PREEMPTED_MS = PREEMPTED_NS / 1e6;
/** Between looks at the ring while spinning: a thread waiting for this CPU
 * (on a loaded host, perhaps the vCPU that is to send the next request)
 * runs first; with none, it returns at once. */
const schedYield = libcFunc('int sched_yield()');

// koffi is initialised while this worker counts as loading (iothread-control.ts).
preloadLibc();
const d = workerData as BlkIothreadData;
const ctl = new IothreadWorkerControl(d.control);
let pool: BlockIoPool | undefined;

/** Stops the reader threads, after the reads in flight, and waits until
 * they have left (this thread's end would terminate them, and one
 * terminated while it loads koffi aborts the process). */
function stopReaders(dev?: VirtioBlock): void {
  if (!pool) return;
  try { dev?.finishReads(); } catch { /* drained below */ }
  pool.close();
  pool.awaitWorkersEnded();
}

function main(): void {
  const kick = deviceThreadKick(d.helper, d.noKick);
  const mem = mapWorkerGuestMemory(d.helper);
  const dev = new VirtioBlock(new BlockFile(d.options, { fd: d.imageFd, size: d.imageSize }), d.options);
  dev.ackFeatures(d.ackedFeatures);
  // Take the queue, unless the device thread already asked us to stop.
  if (!ctl.take()) return;
  let broken = false;
  let queue: Virtqueue | null = null;
  try {
    const queues = createQueues(mem, d.layouts, d.ackedFeatures, d.queueMaxSizes);
    dev.activate({
      mem,
      queues,
      interrupt: {
        queue: () => { Atomics.add(ctl.words, IOT.IRQ, 1); kick(); },
        config: () => {},
      },
      needsReset: (reason) => { broken = true; ctl.fail(reason); kick(); },
    });
    queue = queues[0] ?? null;
    if ((d.readers ?? 0) > 0) {
      pool = new BlockIoPool(d.readers!, d.helper, [dev.file], () => mem, {
        wakeFd: d.notifyFd, noKick: d.noKick, holdOff: d.readerHoldOff, workerUrl: d.readerWorkerUrl ? new URL(d.readerWorkerUrl) : undefined,
      });
      dev.readers = { pool, mem, minBytes: d.readerMinBytes ?? 1 };
      // Started now, not at the first large read (the pool's own habit):
      // a reader loads for tens of milliseconds of CPU, which the first
      // reads would wait behind (measured: a sequential read with lazily
      // started readers ran at half the speed of one without).
      pool.startWorkers();
    }
  } catch (e) {
    ctl.fail(`queue setup: ${(e as Error).message}`);
    broken = true;
    kick();
  }
  /** Serves the queue; `held`: leaves notifications off (while polling). */
  let counted = 0;
  let toReaders = 0;
  let takenBack = 0;
  const serve = (held = false): void => {
    dev.reapReads();
    if (held) dev.drain(0);
    else dev.serveQuiet(0);
    // Reads no reader has taken yet: do them here rather than wait (a
    // third reader; and all of them while the readers get no CPU).
    if (d.helpReaders !== false) {
      while (running() && dev.helpWithRead()) { dev.reapReads(); dev.drain(0); }
    }
    // COMPLETED last: whoever sees it cover a request (a test that waits
    // for it) also sees the hand-over and take-back counts of that request.
    ctl.add(IOT.TO_READERS, dev.readsToReaders - toReaders);
    toReaders = dev.readsToReaders;
    if (pool) { ctl.add(IOT.TAKEN_BACK, pool.stolen - takenBack); takenBack = pool.stolen; }
    ctl.add(IOT.COMPLETED, dev.stats.requests - counted);
    counted = dev.stats.requests;
  };
  const poll = new AdaptivePoll(Math.max(0, Math.round((d.pollUs ?? 0) * 1000)), d.pollHoldOff);
  const running = (): boolean => ctl.running;
  /** Spins up to the poll window for new chains, with notifications off
   * (VIRTQ_USED_F_NO_NOTIFY, or avail_event held under EVENT_IDX); when
   * nothing came they are back on before it returns. True when work came
   * (or the ring is broken: serve() reports that). */
  const spin = (q: Virtqueue): boolean => {
    const start = performance.now();
    const end = start + poll.windowNs / 1e6;
    let found = false;
    try {
      q.disableNotification(true);
      let last = start;
      const done = pool?.completions ?? 0;
      for (;;) {
        if (q.pending() > 0) { found = true; break; }
        // A reader finished (or one is late: reapReads takes it back).
        if (pool && pool.pending > 0 && (pool.completions !== done || dev.reapReads())) { found = true; break; }
        schedYield();
        const now = performance.now();
        if (now - last > PREEMPTED_MS) { poll.preempted(); break; }
        last = now;
        if (now >= end || !running()) break;
      }
      if (!found) found = q.enableNotification();
    } catch {
      found = true;
    }
    if (found && poll.windowNs > 0) poll.observe((performance.now() - start) * 1e6);
    return found;
  };
  const buf = new Uint8Array(8);
  let spun = 0;
  for (;;) {
    const t0 = performance.now();
    const n = eventfdRead(d.notifyFd, buf);
    if (!running()) break;
    if (n < 0n) {
      ctl.fail(`iothread: read of the notify eventfd failed (errno ${-n})`);
      kick();
      break;
    }
    ctl.add(IOT.WAKEUPS, 1);
    if (broken) continue;
    // The wait: the fruitless spin and the sleep.
    poll.observe((performance.now() - t0) * 1e6 + spun);
    serve();
    // Adaptive polling: stay on the ring while requests keep coming.
    spun = 0;
    let held = false;
    while (queue && !broken && poll.windowNs > 0 && running()) {
      const window = poll.windowNs;
      if (!spin(queue)) { spun = window; break; }
      ctl.add(IOT.POLL_HITS, 1);
      serve(true);
      held = true;
    }
    // The window may have closed right after a batch served with
    // notifications off: turn them back on (serve() re-checks the ring).
    if (held) serve();
  }
  stopReaders(dev);
  ctl.add(IOT.COMPLETED, dev.stats.requests - counted);
  ctl.finish(IOTHREAD_STATE.STOPPED);
}

try {
  main();
} catch (e) {
  // No reader may touch guest memory once this thread says it stopped.
  try { stopReaders(); } catch { /* as far as it went */ }
  // FAILED before the queue was taken (the device thread serves it), else
  // STOPPED with the reason (needs-reset at the device thread's next poll).
  ctl.crashed(`iothread: ${(e as Error).message}`);
  // The device thread must look now: the guest's notifies reach only this
  // thread's eventfd, so without a kick it would wait for us forever.
  try { deviceThreadKick(d.helper, d.noKick)(); } catch { /* no doorbell to ring */ }
}
