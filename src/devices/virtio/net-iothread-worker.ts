// The virtio-net I/O thread's body (see net-iothread.ts): map guest RAM,
// build the queues from the layouts the driver programmed, then poll(2) the
// notify eventfd and the tap together and serve the queues at each wake.

import fs from 'node:fs';
import { workerData } from 'node:worker_threads';
import { GuestMemory } from '../../sys/guest-memory.js';
import { mapGuestRam, ramRegions } from '../../sys/guest-ram.js';
import { eventfdRead } from '../../sys/eventfd.js';
import { preloadLibc } from '../../sys/libc.js';
import { POLLERR, POLLHUP, POLLIN, POLLNVAL, PollSet } from '../../sys/poll.js';
import { DEVICE_REQUEST, Doorbell } from '../../sys/doorbell.js';
import { fdNetPort } from '../net/net-backend.js';
import { NIOT, NIOT_STATE, writeNetReason, type NetIothreadData } from './net-iothread.js';
import { VirtioNet, VTNET_RXQ, VTNET_TXQ } from './virtio-net.js';
import { createQueues } from './virtio-device.js';

// koffi is initialised while this worker counts as loading (net-iothread.ts).
preloadLibc();
const d = workerData as NetIothreadData;
const words = new Int32Array(d.control);
/** Set once this thread owns the queues: after that a failure is the
 * device's (needs-reset), not a reason for the device thread to take over. */
let took = false;
/** How long the tap stays out of the poll set after it reported an error
 * (the interface is down or went away), as the main thread's waker does. */
const TAP_ERROR_BACKOFF_MS = 100;

function finish(state: number): void {
  Atomics.store(words, NIOT.STATE, state);
  Atomics.notify(words, NIOT.STATE);
}

/** Rings the device thread (set first thing, so a failure can ring too). */
let kick: () => void = () => {};

function main(): void {
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
  const port = fdNetPort(d.netFd);
  const dev = new VirtioNet({ mac: d.device.mac, mtu: d.device.mtu, iothread: false }, port);
  dev.ackFeatures(d.ackedFeatures);
  // Take the queues, unless the device thread already asked us to stop.
  if (Atomics.compareExchange(words, NIOT.STATE, NIOT_STATE.STARTING, NIOT_STATE.RUNNING) !== NIOT_STATE.STARTING) {
    finish(NIOT_STATE.STOPPED);
    return;
  }
  took = true;
  let broken = false;
  try {
    dev.activate({
      mem,
      queues: createQueues(mem, d.transmit ? d.layouts : [d.layouts[VTNET_RXQ] ?? null, null], d.ackedFeatures, d.queueMaxSizes),
      interrupt: {
        queue: (i) => { Atomics.or(words, NIOT.IRQ, 1 << i); kick(); },
        config: () => {},
      },
      needsReset: (reason) => { broken = true; writeNetReason(d.control, reason); kick(); },
    });
  } catch (e) {
    writeNetReason(d.control, `queue setup: ${(e as Error).message}`);
    broken = true;
    kick();
  }
  let rx = 0;
  let tx = 0;
  const publish = (): void => {
    Atomics.add(words, NIOT.RX_FRAMES, dev.stats.rxFrames - rx);
    Atomics.add(words, NIOT.TX_FRAMES, dev.stats.txFrames - tx);
    rx = dev.stats.rxFrames;
    tx = dev.stats.txFrames;
  };
  // Notifies and frames may have come before this thread was up.
  if (!broken) {
    dev.queueNotify(VTNET_TXQ);
    dev.queueNotify(VTNET_RXQ);
    publish();
  }
  const set = new PollSet(2);
  const buf = new Uint8Array(8);
  let tapQuietUntil = 0;
  for (;;) {
    set.clear();
    set.add(d.notifyFd, POLLIN);
    // The tap only while its frames can go somewhere: not while one waits
    // for receive buffers (the driver's notify brings us back), not after
    // the device broke, not while it reports an error.
    const watchTap = !broken && !port.holding && (tapQuietUntil === 0 || Date.now() >= tapQuietUntil);
    const tapAt = watchTap ? set.add(d.netFd, POLLIN) : -1;
    const r = set.wait(tapAt < 0 && tapQuietUntil !== 0 ? TAP_ERROR_BACKOFF_MS : -1);
    if (Atomics.load(words, NIOT.STATE) !== NIOT_STATE.RUNNING) break;
    if (r < 0) {
      writeNetReason(d.control, `I/O thread: poll failed (errno ${-r})`);
      kick();
      break;
    }
    Atomics.add(words, NIOT.WAKEUPS, 1);
    const notified = (set.revents(0) & POLLIN) !== 0;
    if (notified) {
      const n = eventfdRead(d.notifyFd, buf);
      if (n < 0n) {
        writeNetReason(d.control, `I/O thread: read of the notify eventfd failed (errno ${-n})`);
        kick();
        break;
      }
    }
    if (broken) continue;
    let tapReady = false;
    if (tapAt >= 0) {
      const ev = set.revents(tapAt);
      if (ev & (POLLERR | POLLHUP | POLLNVAL)) tapQuietUntil = Date.now() + TAP_ERROR_BACKOFF_MS;
      else { tapQuietUntil = 0; tapReady = (ev & POLLIN) !== 0; }
    } else if (tapQuietUntil !== 0 && Date.now() >= tapQuietUntil) {
      tapQuietUntil = 0;
    }
    if (notified) dev.queueNotify(VTNET_TXQ);
    // A notify matters to the receive side only while a frame waits for
    // buffers; otherwise receiving starts when the tap has a frame.
    if (tapReady || (notified && port.holding)) dev.queueNotify(VTNET_RXQ);
    publish();
  }
  publish();
  finish(NIOT_STATE.STOPPED);
}

try {
  main();
} catch (e) {
  writeNetReason(d.control, `I/O thread: ${(e as Error).message}`);
  finish(took ? NIOT_STATE.STOPPED : NIOT_STATE.FAILED);
  // The device thread takes the queues back (FAILED) or enters needs-reset.
  kick();
}
