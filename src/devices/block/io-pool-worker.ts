// One I/O thread of a disk controller's pool (io-pool.ts): maps guest RAM,
// adopts the controller's image fds, then takes READY requests, does their
// transfer (and writes their completion record), marks them DONE and rings
// the device thread's doorbell for those that ask (once until the device
// thread has looked: CTL.KICKED). Between requests it spins for an adaptive
// window (virtio/adaptive-poll.ts, as virtio-blk's iothread) before it
// sleeps: a stream's next request then needs no wake-up (a wake of a
// thread asleep on the other CPU, and the submitter's notify).

import { workerData } from 'node:worker_threads';
import { GuestMemory } from '../../sys/guest-memory.js';
import { openGuestMemory } from '../../sys/guest-ram.js';
import { mmap, preloadLibc, PROT_READ, PROT_WRITE } from '../../sys/libc.js';
import { DEVICE_REQUEST, Doorbell } from '../../sys/doorbell.js';
import { eventfdWrite } from '../../sys/eventfd.js';
import { BlockFile } from './block-backend.js';
import {
  CTL, finishRequest, POOL_POLL_MAX_NS, POOL_SLOTS, serveReady, SLOT_INTS, SLOT_STATE, WORKER_STATE, WORKER_WORD, type IoPoolWorkerData,
} from './io-pool.js';
import { AdaptivePoll, PREEMPTED_NS } from '../virtio/adaptive-poll.js';

const PREEMPTED_NS_BIG = BigInt(PREEMPTED_NS);

preloadLibc();
const d = workerData as IoPoolWorkerData;
const ctl = new Int32Array(d.shared.ctl);
const ints = new Int32Array(d.shared.slotsI);
const f64 = new Float64Array(d.shared.slotsF);

/** Rings whoever reaps (the device thread's doorbell, or the submitting
 * thread's eventfd). */
let ring: () => void = () => {};
const myWord = WORKER_WORD + (d.index ?? 0);

function main(): void {
  let kick: () => void = () => {};
  if (d.wakeFd !== undefined) {
    const fd = d.wakeFd;
    ring = () => { eventfdWrite(fd); };
    kick = () => { if (Atomics.exchange(ctl, CTL.KICKED, 1) === 0) eventfdWrite(fd); };
  } else if (!d.noKick) {
    const bell = Doorbell.attach(d.helper.doorbell);
    ring = () => bell.ring(DEVICE_REQUEST.POLL);
    kick = () => { if (Atomics.exchange(ctl, CTL.KICKED, 1) === 0) bell.ring(DEVICE_REQUEST.POLL); };
  }
  const mem = openGuestMemory(d.helper.memoryPath, d.helper.layout);
  const files = d.files.map((f) => new BlockFile(f.options, { fd: f.fd, size: f.size }));
  // The device's register page, the same memory as its own mapping.
  const page = d.page ? new Int32Array(mmap(d.page.size, PROT_READ | PROT_WRITE, d.page.fd, 0, 'register page').bytes.buffer) : undefined;
  const onDone = () => { Atomics.add(ctl, CTL.DONE, 1); Atomics.notify(ctl, CTL.DONE); };
  const views: Uint8Array[] = [];
  const poll = new AdaptivePoll(POOL_POLL_MAX_NS);
  Atomics.store(ctl, myWord, WORKER_STATE.RUNNING);
  const mergeMax = d.mergeMax ?? 0;
  const taken: number[] = [];
  Atomics.add(ctl, CTL.UP, 1);
  while (Atomics.load(ctl, CTL.STOP) === 0) {
    const seen = Atomics.load(ctl, CTL.SUBMITTED);
    let did = 0;
    if (mergeMax > 0) {
      const r = serveReady(ints, f64, mem, files, views, page, onDone, mergeMax, taken);
      did = r.did;
      if (r.merged > 0) Atomics.add(ctl, CTL.MERGED, r.merged);
      if (r.kick) kick();
    } else for (let i = 0; i < POOL_SLOTS; i++) {
      const b = i * SLOT_INTS;
      if (Atomics.load(ints, b) !== SLOT_STATE.READY) continue;
      if (Atomics.compareExchange(ints, b, SLOT_STATE.READY, SLOT_STATE.TAKEN) !== SLOT_STATE.READY) continue;
      if (finishRequest(i, ints, f64, mem, files, views, page, onDone)) kick();
      did++;
    }
    if (did > 0) continue;
    // Nothing ready: spin for the adaptive window (the next request of a
    // stream comes within it, and needs no wake-up then), then sleep.
    const t0 = process.hrtime.bigint();
    let t = t0;
    const until = t0 + BigInt(poll.windowNs);
    let preempted = false;
    while (t < until && Atomics.load(ctl, CTL.SUBMITTED) === seen) {
      const now = process.hrtime.bigint();
      if (now - t > PREEMPTED_NS_BIG) { preempted = true; break; }
      t = now;
    }
    if (Atomics.load(ctl, CTL.SUBMITTED) === seen && Atomics.load(ctl, CTL.STOP) === 0) {
      Atomics.add(ctl, CTL.SLEEPING, 1);
      Atomics.wait(ctl, CTL.SUBMITTED, seen);
      Atomics.sub(ctl, CTL.SLEEPING, 1);
    }
    if (preempted) { poll.preempted(); Atomics.add(ctl, CTL.PREEMPTED, 1); }
    else poll.observe(Number(process.hrtime.bigint() - t0));
  }
  Atomics.sub(ctl, CTL.UP, 1);
}

try {
  main();
} catch {
  // With no worker up the device thread does the requests itself at its
  // next poll: ring for it.
  Atomics.add(ctl, CTL.FAILED, 1);
  try { ring(); } catch { /* nothing to ring */ }
} finally {
  Atomics.store(ctl, myWord, WORKER_STATE.ENDED);
  Atomics.add(ctl, CTL.ENDED, 1);
  Atomics.notify(ctl, CTL.ENDED);
}
