// The virtio-net I/O thread's body (see net-iothread.ts): map guest RAM,
// build the queues from the layouts the driver programmed, then poll(2) the
// notify eventfd and the tap together and serve the queues at each wake.

import { workerData } from 'node:worker_threads';
import { eventfdRead } from '../../sys/eventfd.js';
import { preloadLibc } from '../../sys/libc.js';
import { POLLERR, POLLHUP, POLLIN, POLLNVAL, PollSet } from '../../sys/poll.js';
import { fdNetPort } from '../net/net-backend.js';
import { deviceThreadKick, IothreadWorkerControl, mapWorkerGuestMemory } from './iothread-control.js';
import { NIOT, NIOT_STATE, type NetIothreadData } from './net-iothread.js';
import { queueInterruptSender } from './queue-irqfd.js';
import type { Virtqueue } from './virtqueue.js';
import { NET_BATCHIO_DEFAULT, VirtioNet, VTNET_RXQ, VTNET_TXQ } from './virtio-net.js';
import { createQueues } from './virtio-device.js';
import { TxHandover } from './net-tx-handover.js';

// koffi is initialised while this worker counts as loading (net-iothread.ts).
preloadLibc();
const d = workerData as NetIothreadData;
const ctl = new IothreadWorkerControl(d.control);
const words = ctl.words;
/** How long the tap stays out of the poll set after it reported an error
 * (the interface is down or went away), as the main thread's waker does. */
const TAP_ERROR_BACKOFF_MS = 100;

/** Rings the device thread (set first thing, so a failure can ring too). */
let kick: () => void = () => {};

function main(): void {
  kick = deviceThreadKick(d.helper, d.noKick);
  const mem = mapWorkerGuestMemory(d.helper);
  const port = fdNetPort(d.netFd, undefined, false, d.device.batchIo ?? NET_BATCHIO_DEFAULT);
  const dev = new VirtioNet({ mac: d.device.mac, mtu: d.device.mtu, zeroCopy: d.device.zeroCopy, batchIo: d.device.batchIo, iothread: false }, port);
  dev.ackFeatures(d.ackedFeatures);
  const handover = d.txHandover ? new TxHandover(d.txHandover) : undefined;
  dev.txHandoverThread = handover;
  dev.kickDeviceThread = () => kick();
  // Take the queues, unless the device thread already asked us to stop.
  if (!ctl.take()) return;
  let broken = false;
  let rxQueue: Virtqueue | null = null;
  try {
    const queues = createQueues(mem, d.transmit || handover ? d.layouts : [d.layouts[VTNET_RXQ] ?? null, null], d.ackedFeatures, d.queueMaxSizes);
    rxQueue = queues[VTNET_RXQ] ?? null;
    dev.activate({
      mem,
      queues,
      interrupt: {
        queue: queueInterruptSender(d.irqfds, (i) => { Atomics.or(words, NIOT.IRQ, 1 << i); kick(); }),
        config: () => {},
      },
      needsReset: (reason) => { broken = true; ctl.fail(reason); kick(); },
    });
  } catch (e) {
    ctl.fail(`queue setup: ${(e as Error).message}`);
    broken = true;
    kick();
  }
  let rx = 0;
  let tx = 0;
  let rxBytes = 0;
  const publish = (): void => {
    ctl.add(NIOT.RX_FRAMES, dev.stats.rxFrames - rx);
    ctl.add(NIOT.TX_FRAMES, dev.stats.txFrames - tx);
    handover?.addRx(dev.stats.rxBytes - rxBytes);
    rx = dev.stats.rxFrames;
    tx = dev.stats.txFrames;
    rxBytes = dev.stats.rxBytes;
  };
  // Notifies and frames may have come before this thread was up.
  if (!broken) {
    dev.queueNotify(VTNET_TXQ);
    dev.queueNotify(VTNET_RXQ);
    publish();
  }
  const pollNs = BigInt(Math.max(0, Math.round((d.pollUs ?? 0) * 1000)));
  /** A frame waits for receive buffers: rather than sleep until the
   * driver's notify (an exit for the guest per buffer it adds, a wake-up
   * here), watch the avail ring for up to pollNs after the last buffer
   * came, with the driver's notifications off; on again before sleeping. */
  const pollForBuffers = (q: Virtqueue): void => {
    let deadline = process.hrtime.bigint() + pollNs;
    q.disableNotification();
    while (!broken && port.holding && ctl.running) {
      let more: boolean;
      try { more = q.pending() > 0; } catch { more = true; /* queueNotify reports it */ }
      if (more) {
        dev.queueNotify(VTNET_RXQ);
        if (!port.holding) return; // receive() left notifications as they should be
        q.disableNotification();
        deadline = process.hrtime.bigint() + pollNs;
      } else if (process.hrtime.bigint() > deadline) {
        break;
      }
    }
    // Still waiting: ask for the notify again, and look once more (a
    // buffer added before that is seen here, not lost).
    if (!broken && port.holding) {
      let more = true;
      try { more = q.enableNotification(); } catch { /* queueNotify reports it */ }
      if (more) dev.queueNotify(VTNET_RXQ);
    }
  };
  const refillWaitMs = Math.max(0, d.refillWaitUs ?? 0) / 1000;
  const nap = new Int32Array(new SharedArrayBuffer(4));
  /** The driver ran out of receive buffers and has just added one (its
   * notify): rather than take that one buffer, read one frame and run out
   * again (a notify, an exit of the guest and a wake-up here per frame
   * while the guest is the slower side), sleep a little with its notifies
   * off so that it returns a batch, then fill them all. receive() turns the
   * notifies on again if the batch runs out too. */
  const waitForRefill = (q: Virtqueue): void => {
    try { q.disableNotification(); } catch { return; /* queueNotify reports it */ }
    Atomics.wait(nap, 0, 0, refillWaitMs);
  };
  const set = new PollSet(2);
  const buf = new Uint8Array(8);
  let tapQuietUntil = 0;
  for (;;) {
    if (pollNs > 0n && port.holding && rxQueue && !broken) {
      pollForBuffers(rxQueue);
      publish();
    }
    set.clear();
    set.add(d.notifyFd, POLLIN);
    // The tap only while its frames can go somewhere: not while one waits
    // for receive buffers (the driver's notify brings us back), not after
    // the device broke, not while it reports an error.
    const watchTap = !broken && !port.holding && (tapQuietUntil === 0 || Date.now() >= tapQuietUntil);
    const tapAt = watchTap ? set.add(d.netFd, POLLIN) : -1;
    const r = set.wait(tapAt < 0 && tapQuietUntil !== 0 ? TAP_ERROR_BACKOFF_MS : -1);
    if (!ctl.running) break;
    if (r < 0) {
      ctl.fail(`I/O thread: poll failed (errno ${-r})`);
      kick();
      break;
    }
    Atomics.add(words, NIOT.WAKEUPS, 1);
    const notified = (set.revents(0) & POLLIN) !== 0;
    if (notified) {
      const n = eventfdRead(d.notifyFd, buf);
      if (n < 0n) {
        ctl.fail(`I/O thread: read of the notify eventfd failed (errno ${-n})`);
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
    if (notified && port.holding && refillWaitMs > 0 && rxQueue) waitForRefill(rxQueue);
    if (tapReady || (notified && port.holding)) dev.queueNotify(VTNET_RXQ);
    publish();
  }
  publish();
  ctl.finish(NIOT_STATE.STOPPED);
}

try {
  main();
} catch (e) {
  ctl.crashed(`I/O thread: ${(e as Error).message}`);
  // The device thread takes the queues back (FAILED) or enters needs-reset.
  kick();
}
