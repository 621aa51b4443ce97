// virtio-net's I/O thread (src/devices/virtio/net-iothread*.ts) driven as a
// guest and a host would: the receive and transmit rings in a memory file
// that the test maps and the worker maps again, notifies through the
// eventfd (what KVM's ioeventfd does on a guest notify), and a packet
// socket pair standing in for the tap (one frame per read and write, as a
// tap's fd). No /dev/kvm: the worker runs with noKick. The worker is the
// compiled one (dist/), so the suite is skipped before `npm run build`.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { NetIothread, NIOT_STATE } from '../../src/devices/virtio/net-iothread.js';
import { VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VirtioNet } from '../../src/devices/virtio/virtio-net.js';
import { VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTQ_DESC_F_NEXT, featureBit } from '../../src/devices/virtio/virtio-constants.js';
import { packetPair } from '../../src/sys/packet-pair.js';
import { readFd } from '../../src/sys/tap.js';
import { FakeDriver } from './virtio-driver.js';
import { QueueIrqfds, type QueueIrqfdChannel } from '../../src/devices/virtio/queue-irqfd.js';
import type { MsiIrqfd } from '../../src/devices/device.js';
import { eventfdRead } from '../../src/sys/eventfd.js';
import { compiledWorker, IothreadScratch, until, workerHelper } from '../support/iothread-harness.js';

const worker = compiledWorker('net-iothread-worker');
const scratch = new IothreadScratch('net-iot-');
const RAM = 4 << 20;
const QSIZE = 64;
const HDR = 12;
const MAC = Uint8Array.from([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

function frame(len: number, seed: number): Uint8Array {
  const f = new Uint8Array(len);
  for (let i = 0; i < len; i++) f[i] = (i * 7 + seed) & 0xff;
  return f;
}

/** A guest (RAM in a file both threads map, a driver per queue) and a host
 * end of the "tap". */
function guest(features = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_NET_F_MAC) | featureBit(VIRTIO_NET_F_MRG_RXBUF)) {
  const { memoryPath, bytes } = scratch.guestRam(RAM);
  const half = RAM / 2;
  const rx = new FakeDriver(QSIZE, 0, { bytes: bytes.subarray(0, half), base: 0 });
  const tx = new FakeDriver(QSIZE, 0, { bytes: bytes.subarray(half), base: half });
  const [vmEnd, hostEnd] = packetPair();
  scratch.defer(() => { fs.closeSync(vmEnd); fs.closeSync(hostEnd); });
  const start = (over: { memoryPath?: string; transmit?: boolean; irqfds?: QueueIrqfdChannel; pollUs?: number; refillWaitUs?: number } = {}) => {
    const t = new NetIothread({
      helper: workerHelper(over.memoryPath ?? memoryPath, RAM),
      netFd: vmEnd,
      device: { mac: MAC },
      transmit: over.transmit ?? true,
      ackedFeatures: features,
      queueMaxSizes: [1024, 1024],
      layouts: [rx.layout, tx.layout],
      irqfds: over.irqfds,
      pollUs: over.pollUs,
      refillWaitUs: over.refillWaitUs,
      noKick: true,
    }, worker.url);
    scratch.defer(() => t.stop());
    return t;
  };
  /** Receive buffers of `len` bytes. */
  const postRx = (n: number, len = 2048) => {
    const addrs: number[] = [];
    for (let i = 0; i < n; i++) {
      const a = rx.alloc(len);
      addrs.push(a);
      rx.offer(rx.chain([{ addr: a, len, write: true }]));
    }
    return addrs;
  };
  /** A frame to send, header and frame in two descriptors. */
  const sendTx = (f: Uint8Array) => {
    const h = tx.alloc(HDR);
    const b = tx.alloc(f.length);
    tx.fill(b, f);
    tx.offer(tx.chain([{ addr: h, len: HDR }, { addr: b, len: f.length }]));
  };
  const hostRead = (): Uint8Array | null => {
    const buf = new Uint8Array(70000);
    const n = readFd(hostEnd, buf);
    return n > 0 ? buf.slice(0, n) : null;
  };
  const hostWrite = (f: Uint8Array) => fs.writeSync(hostEnd, f);
  return { rx, tx, start, postRx, sendTx, hostRead, hostWrite, vmEnd };
}

describe.skipIf(!worker.present)('virtio-net I/O thread', () => {
  it('sends what the transmit queue holds on a notify, receives what the tap holds without one, asks for interrupts', async () => {
    const g = guest();
    const t = g.start();
    const out = [frame(60, 1), frame(1514, 2), frame(9000, 3)];
    for (const f of out) g.sendTx(f);
    t.notify();
    await until(() => g.tx.usedIdx() === 3, 'three used transmit entries');
    for (const f of out) expect(g.hostRead()).toEqual(f);
    expect(t.txFrames).toBe(3);
    expect(t.takeInterrupts() & 2).toBe(2);

    // Frames from the host: no notify, the thread polls the tap itself.
    const bufs = g.postRx(8);
    const inbound = [frame(1514, 4), frame(64, 5)];
    for (const f of inbound) g.hostWrite(f);
    await until(() => g.rx.usedIdx() === 2, 'two used receive entries');
    inbound.forEach((f, i) => {
      const u = g.rx.usedElem(i);
      expect(u.len).toBe(HDR + f.length);
      const got = g.rx.read(bufs[u.id === 0 ? 0 : 1], HDR + f.length);
      expect(got[10]).toBe(1); // num_buffers
      expect(got.subarray(HDR)).toEqual(f);
    });
    expect(t.rxFrames).toBe(2);
    expect(t.takeInterrupts() & 1).toBe(1);
    expect(t.brokenReason()).toBeUndefined();
    t.stop();
    expect(t.state).toBe(NIOT_STATE.STOPPED);
  });

  it('without the transmit queue (iothread_tx=false) a notify sends nothing; receiving works the same', async () => {
    const g = guest();
    const t = g.start({ transmit: false });
    g.sendTx(frame(60, 1));
    t.notify();
    const bufs = g.postRx(2);
    g.hostWrite(frame(200, 7));
    await until(() => g.rx.usedIdx() === 1, 'the received frame');
    expect(g.rx.read(bufs[0] + HDR, 200)).toEqual(frame(200, 7));
    await new Promise((r) => setTimeout(r, 50));
    expect(g.tx.usedIdx()).toBe(0);
    expect(g.hostRead()).toBeNull();
    expect(t.txFrames).toBe(0);
    t.stop();
  });

  it('a frame waiting for buffers is kept, the thread does not spin, the notify that adds buffers delivers it', async () => {
    const g = guest(featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_NET_F_MRG_RXBUF) | featureBit(VIRTIO_RING_F_EVENT_IDX));
    const t = g.start();
    await until(() => t.state === NIOT_STATE.RUNNING, 'the thread to run');
    const f = frame(1514, 9);
    g.hostWrite(f);
    g.hostWrite(frame(100, 10));
    await new Promise((r) => setTimeout(r, 300));
    // Starved: the tap is out of the poll set (at most the one wake-up for
    // the frame, none if the thread read it as it started).
    expect(t.wakeups).toBeLessThanOrEqual(1);
    expect(g.rx.usedIdx()).toBe(0);
    // Receive notifications are on while the frame waits (event idx: the
    // next avail index the driver publishes).
    expect(g.rx.availEvent()).toBe(0);
    g.postRx(1);
    t.notify();
    await until(() => g.rx.usedIdx() === 1, 'the waiting frame');
    expect(g.rx.usedElem(0).len).toBe(HDR + f.length);
    // The second frame needs another buffer: notifications on again.
    expect(g.rx.availEvent()).toBe(1);
    g.postRx(1);
    t.notify();
    await until(() => g.rx.usedIdx() === 2, 'the second frame');
    expect(g.rx.usedElem(1).len).toBe(HDR + 100);
    t.stop();
  });

  it('iothread_poll_us: while a frame waits, buffers the driver adds are taken without its notify (notifications off meanwhile)', async () => {
    const g = guest();
    const t = g.start({ transmit: false, pollUs: 2_000_000 });
    await until(() => t.state === NIOT_STATE.RUNNING, 'the thread to run');
    g.hostWrite(frame(1514, 11));
    g.hostWrite(frame(200, 12));
    // Starved and polling: the driver is asked not to notify.
    await until(() => (g.rx.usedFlags() & 1) === 1, 'VIRTQ_USED_F_NO_NOTIFY while polling');
    g.postRx(1); // no notify
    await until(() => g.rx.usedIdx() === 1, 'the first frame, taken by polling');
    g.postRx(1);
    await until(() => g.rx.usedIdx() === 2, 'the second frame');
    expect(g.rx.usedElem(1).len).toBe(HDR + 200);
    t.stop();
  });

  it('iothread_refill_us: the notify that ends a shortage of buffers is followed by a sleep with notifications off, then a batch', async () => {
    const g = guest();
    const t = g.start({ transmit: false, refillWaitUs: 300_000 });
    await until(() => t.state === NIOT_STATE.RUNNING, 'the thread to run');
    const inbound = [frame(1514, 21), frame(300, 22), frame(60, 23)];
    for (const f of inbound) g.hostWrite(f);
    await new Promise((r) => setTimeout(r, 100));
    // Starved: the driver is asked to notify.
    expect(g.rx.usedFlags() & 1).toBe(0);
    g.postRx(1);
    t.notify();
    // The thread sleeps with notifications off rather than taking the one buffer ...
    await until(() => (g.rx.usedFlags() & 1) === 1, 'VIRTQ_USED_F_NO_NOTIFY after the notify');
    expect(g.rx.usedIdx()).toBe(0);
    // ... so buffers the driver adds meanwhile (no notify: it was asked not to) come in the same batch.
    g.postRx(3);
    await until(() => g.rx.usedIdx() === 3, 'all three frames in one batch');
    inbound.forEach((f, i) => expect(g.rx.usedElem(i).len).toBe(HDR + f.length));
    expect(t.rxFrames).toBe(3);
    t.stop();
  });

  it('guest bad input on the thread: a looping chain and a wild address are needs-reset; stop() still returns', async () => {
    for (const bad of ['loop', 'wild'] as const) {
      const g = guest();
      const t = g.start();
      const h = g.tx.alloc(HDR + 64);
      if (bad === 'loop') {
        g.tx.setDesc(0, h, HDR, VIRTQ_DESC_F_NEXT, 1);
        g.tx.setDesc(1, h, 64, VIRTQ_DESC_F_NEXT, 0);
      } else {
        g.tx.setDesc(0, 0xfff_0000_0000, HDR + 64, 0, 0);
      }
      g.tx.offer(0);
      t.notify();
      await until(() => t.brokenReason() !== undefined, 'the needs-reset report');
      expect(t.brokenReason()).toMatch(bad === 'loop' ? /loop/ : /buffer 0xfff00000000/);
      // Broken: nothing more is served, frames from the host stay queued.
      g.postRx(2);
      g.hostWrite(frame(64, 1));
      t.notify();
      await new Promise((r) => setTimeout(r, 50));
      expect(g.rx.usedIdx()).toBe(0);
      t.stop();
      expect(t.state).toBe(NIOT_STATE.STOPPED);
    }
  });

  it('large receive buffers are filled straight from the backend (zerocopy), header and frame intact', async () => {
    const g = guest();
    const t = g.start({ transmit: false });
    const bufs = g.postRx(2, 70000);
    const inbound = [frame(60000, 8), frame(1514, 9)];
    for (const f of inbound) g.hostWrite(f);
    await until(() => g.rx.usedIdx() === 2, 'two used receive entries');
    inbound.forEach((f, i) => {
      const u = g.rx.usedElem(i);
      expect(u.len).toBe(HDR + f.length);
      const got = g.rx.read(bufs[u.id === 0 ? 0 : 1], HDR + f.length);
      expect(Array.from(got.subarray(0, HDR))).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
      expect(Buffer.from(got.subarray(HDR)).equals(Buffer.from(f))).toBe(true);
    });
    t.stop();
  });

  it('with irqfds wired (MSI-X in use), receive interrupts are eventfd writes, not requests to the device thread', async () => {
    const attached: boolean[] = [];
    const wires = QueueIrqfds.open({
      msiIrqfd: (): MsiIrqfd => {
        const i = attached.push(false) - 1;
        return { gsi: 24 + i, route: () => {}, attach: () => { attached[i] = true; }, detach: () => { attached[i] = false; }, close: () => {} };
      },
    }, [true, false], {
      msixActive: () => true, vectorOf: () => 1, entry: () => ({ address: 0xfee00000, data: 0x41, masked: false }),
      raiseVector: () => {}, raiseQueue: () => {},
    })!;
    scratch.defer(() => wires.close());
    expect(wires.liveMask).toBe(1);
    expect(attached).toEqual([true]);
    const g = guest();
    const t = g.start({ transmit: true, irqfds: wires.channel });
    g.postRx(4);
    g.hostWrite(frame(100, 9));
    await until(() => g.rx.usedIdx() === 1, 'the received frame');
    await until(() => wires.sent > 0, 'the irqfd write');
    expect(eventfdRead(wires.channel.fds[0]!)).toBe(1n);
    expect(t.takeInterrupts() & 1).toBe(0);
    // The transmit queue has no wire: its interrupt still goes through the device thread.
    g.sendTx(frame(60, 1));
    t.notify();
    await until(() => g.tx.usedIdx() === 1, 'the sent frame');
    await until(() => (t.takeInterrupts() & 2) !== 0, 'the transmit interrupt request');
    t.stop();
  });

  it('stop() before the worker took the queues, and a worker that cannot start', async () => {
    const g = guest();
    const early = g.start();
    early.stop();
    expect([NIOT_STATE.STOP, NIOT_STATE.STOPPED]).toContain(early.state);
    await until(() => early.state === NIOT_STATE.STOPPED, 'the early worker to stop by itself');
    const bad = g.start({ memoryPath: path.join(scratch.dir, 'no-such-memory-file') });
    await until(() => bad.failedToStart, 'the start failure');
    expect(bad.startError()).toMatch(/no-such-memory-file|ENOENT/);
    bad.stop();
  });

  it('the device thread offers its queues only with iothread on and a backend', () => {
    const helper = workerHelper('', 0);
    const noBackend = new VirtioNet({ mac: MAC }, undefined);
    expect(noBackend.startOffload(helper)).toBeUndefined(); // not activated either
    const off = new VirtioNet({ mac: MAC, iothread: false }, undefined, { kind: 'tap', fd: -1, ifname: 'x', wake: new SharedArrayBuffer(8) });
    expect(off.startOffload(helper)).toBeUndefined();
  });
});
