// The iothread's body (see blk-iothread.ts): map guest RAM, adopt the
// image fd, build the queue from the layout the driver programmed, then
// block in read() on the notify eventfd and process the queue at each wake;
// between batches spin on the avail ring for the adaptive window
// (adaptive-poll.ts) before sleeping again.

import fs from 'node:fs';
import { workerData } from 'node:worker_threads';
import { GuestMemory } from '../../sys/guest-memory.js';
import { mapGuestRam, ramRegions } from '../../sys/guest-ram.js';
import { eventfdRead } from '../../sys/eventfd.js';
import { libcFunc, preloadLibc } from '../../sys/libc.js';
import { DEVICE_REQUEST, Doorbell } from '../../sys/doorbell.js';
import { IOT, IOT_STATE, writeReason, type IothreadData } from './blk-iothread.js';
import { BlockFile, VirtioBlock } from './virtio-blk.js';
import { createQueues } from './virtio-device.js';
import { AdaptivePoll, PREEMPTED_NS } from './adaptive-poll.js';

const PREEMPTED_MS = PREEMPTED_NS / 1e6;
/** Between looks at the ring while spinning: a thread waiting for this CPU
 * (on a loaded host, perhaps the vCPU that is to send the next request)
 * runs first; with none, it returns at once. */
const schedYield = libcFunc('int sched_yield()');
import type { Virtqueue } from './virtqueue.js';

// koffi is initialised while this worker counts as loading (blk-iothread.ts).
preloadLibc();
const d = workerData as IothreadData;
const words = new Int32Array(d.control);
/** Set once this thread owns the queue: after that, a failure is the
 * device's (needs-reset), not a reason for the device thread to take over. */
let took = false;

function finish(state: number): void {
  Atomics.store(words, IOT.STATE, state);
  Atomics.notify(words, IOT.STATE);
}

function main(): void {
  let kick: () => void = () => {};
  if (!d.noKick) {
    const doorbell = Doorbell.attach(d.helper.doorbell);
    kick = () => doorbell.ring(DEVICE_REQUEST.POLL);
  }
  const memFd = fs.openSync(d.helper.memoryPath, 'r+');
  let mem: GuestMemory;
  try {
    mem = new GuestMemory(ramRegions(mapGuestRam(memFd, d.helper.layout)));
  } finally {
    fs.closeSync(memFd);
  }
  const dev = new VirtioBlock(new BlockFile(d.options, { fd: d.imageFd, size: d.imageSize }), d.options);
  dev.ackFeatures(d.ackedFeatures);
  // Take the queue, unless the device thread already asked us to stop.
  if (Atomics.compareExchange(words, IOT.STATE, IOT_STATE.STARTING, IOT_STATE.RUNNING) !== IOT_STATE.STARTING) {
    finish(IOT_STATE.STOPPED);
    return;
  }
  took = true;
  let broken = false;
  let queue: Virtqueue | null = null;
  try {
    const queues = createQueues(mem, d.layouts, d.ackedFeatures, d.queueMaxSizes);
    dev.activate({
      mem,
      queues,
      interrupt: {
        queue: () => { Atomics.add(words, IOT.IRQ, 1); kick(); },
        config: () => {},
      },
      needsReset: (reason) => { broken = true; writeReason(d.control, reason); kick(); },
    });
    queue = queues[0] ?? null;
  } catch (e) {
    writeReason(d.control, `queue setup: ${(e as Error).message}`);
    broken = true;
    kick();
  }
  /** Serves the queue; `held`: leaves notifications off (while polling). */
  const serve = (held = false): void => {
    const before = dev.stats.requests;
    if (held) dev.drain(0);
    else dev.queueNotify(0);
    Atomics.add(words, IOT.COMPLETED, dev.stats.requests - before);
  };
  const poll = new AdaptivePoll(Math.max(0, Math.round((d.pollUs ?? 0) * 1000)), d.pollHoldOff);
  const running = (): boolean => Atomics.load(words, IOT.STATE) === IOT_STATE.RUNNING;
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
      for (;;) {
        if (q.pending() > 0) { found = true; break; }
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
      writeReason(d.control, `iothread: read of the notify eventfd failed (errno ${-n})`);
      kick();
      break;
    }
    Atomics.add(words, IOT.WAKEUPS, 1);
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
      Atomics.add(words, IOT.POLL_HITS, 1);
      serve(true);
      held = true;
    }
    // The window may have closed right after a batch served with
    // notifications off: turn them back on (serve() re-checks the ring).
    if (held) serve();
  }
  finish(IOT_STATE.STOPPED);
}

try {
  main();
} catch (e) {
  writeReason(d.control, `iothread: ${(e as Error).message}`);
  finish(took ? IOT_STATE.STOPPED : IOT_STATE.FAILED);
}
