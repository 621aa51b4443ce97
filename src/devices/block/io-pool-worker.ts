// One I/O thread of a disk controller's pool (io-pool.ts): maps guest RAM,
// adopts the controller's image fds, then takes READY requests, does their
// transfer (and writes their completion record), marks them DONE and rings
// the device thread's doorbell for those that ask (once until the device
// thread has looked: CTL.KICKED).

import { workerData } from 'node:worker_threads';
import { GuestMemory } from '../../sys/guest-memory.js';
import { openGuestMemory } from '../../sys/guest-ram.js';
import { mmap, preloadLibc, PROT_READ, PROT_WRITE } from '../../sys/libc.js';
import { DEVICE_REQUEST, Doorbell } from '../../sys/doorbell.js';
import { BlockFile } from './block-backend.js';
import { CTL, finishRequest, POOL_SLOTS, SLOT_INTS, SLOT_STATE, type IoPoolWorkerData } from './io-pool.js';

preloadLibc();
const d = workerData as IoPoolWorkerData;
const ctl = new Int32Array(d.shared.ctl);
const ints = new Int32Array(d.shared.slotsI);
const f64 = new Float64Array(d.shared.slotsF);

let doorbell: Doorbell | undefined;

function main(): void {
  let kick: () => void = () => {};
  if (!d.noKick) {
    const bell = Doorbell.attach(d.helper.doorbell);
    doorbell = bell;
    kick = () => { if (Atomics.exchange(ctl, CTL.KICKED, 1) === 0) bell.ring(DEVICE_REQUEST.POLL); };
  }
  const mem = openGuestMemory(d.helper.memoryPath, d.helper.layout);
  const files = d.files.map((f) => new BlockFile(f.options, { fd: f.fd, size: f.size }));
  // The device's register page, the same memory as its own mapping.
  const page = d.page ? new Int32Array(mmap(d.page.size, PROT_READ | PROT_WRITE, d.page.fd, 0, 'register page').bytes.buffer) : undefined;
  const onDone = () => { Atomics.add(ctl, CTL.DONE, 1); Atomics.notify(ctl, CTL.DONE); };
  const views: Uint8Array[] = [];
  Atomics.add(ctl, CTL.UP, 1);
  while (Atomics.load(ctl, CTL.STOP) === 0) {
    const seen = Atomics.load(ctl, CTL.SUBMITTED);
    let did = 0;
    for (let i = 0; i < POOL_SLOTS; i++) {
      const b = i * SLOT_INTS;
      if (Atomics.load(ints, b) !== SLOT_STATE.READY) continue;
      if (Atomics.compareExchange(ints, b, SLOT_STATE.READY, SLOT_STATE.TAKEN) !== SLOT_STATE.READY) continue;
      if (finishRequest(i, ints, f64, mem, files, views, page, onDone)) kick();
      did++;
    }
    if (did === 0) Atomics.wait(ctl, CTL.SUBMITTED, seen);
  }
  Atomics.sub(ctl, CTL.UP, 1);
}

try {
  main();
} catch {
  // With no worker up the device thread does the requests itself at its
  // next poll: ring for it.
  Atomics.add(ctl, CTL.FAILED, 1);
  doorbell?.ring(DEVICE_REQUEST.POLL);
}
