// The iothread's body (see blk-iothread.ts): map guest RAM, adopt the
// image fd, build the queue from the layout the driver programmed, then
// block in read() on the notify eventfd and process the queue at each wake.

import fs from 'node:fs';
import { workerData } from 'node:worker_threads';
import { GuestMemory } from '../../sys/guest-memory.js';
import { mapGuestRam, ramRegions } from '../../sys/guest-ram.js';
import { eventfdRead } from '../../sys/eventfd.js';
import { preloadLibc } from '../../sys/libc.js';
import { DEVICE_REQUEST, Doorbell } from '../../sys/doorbell.js';
import { IOT, IOT_STATE, writeReason, type IothreadData } from './blk-iothread.js';
import { BlockFile, VirtioBlock } from './virtio-blk.js';
import { createQueues } from './virtio-device.js';
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
  const serve = (): void => {
    const before = dev.stats.requests;
    dev.queueNotify(0);
    Atomics.add(words, IOT.COMPLETED, dev.stats.requests - before);
  };
  const pollNs = BigInt(Math.max(0, Math.round((d.pollUs ?? 0) * 1000)));
  const buf = new Uint8Array(8);
  for (;;) {
    const n = eventfdRead(d.notifyFd, buf);
    if (Atomics.load(words, IOT.STATE) !== IOT_STATE.RUNNING) break;
    if (n < 0n) {
      writeReason(d.control, `iothread: read of the notify eventfd failed (errno ${-n})`);
      kick();
      break;
    }
    Atomics.add(words, IOT.WAKEUPS, 1);
    if (broken) continue;
    serve();
    // Adaptive polling (QEMU's aio poll): stay awake a little for the next
    // request rather than paying a thread wake-up for it.
    if (pollNs > 0n && queue) {
      let deadline = process.hrtime.bigint() + pollNs;
      while (!broken && Atomics.load(words, IOT.STATE) === IOT_STATE.RUNNING) {
        let more = false;
        try { more = queue.pending() > 0; } catch { more = true; /* queueNotify reports it */ }
        if (more) {
          serve();
          deadline = process.hrtime.bigint() + pollNs;
        } else if (process.hrtime.bigint() > deadline) {
          break;
        }
      }
    }
  }
  finish(IOT_STATE.STOPPED);
}

try {
  main();
} catch (e) {
  writeReason(d.control, `iothread: ${(e as Error).message}`);
  finish(took ? IOT_STATE.STOPPED : IOT_STATE.FAILED);
}
