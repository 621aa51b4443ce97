// virtio-net's iothread_tx=switch (net-tx-handover.ts): the transmit queue
// moves between the device thread (the notify exit) and the I/O thread
// while the driver runs. Both sides are VirtioNet models on the same guest
// memory, as on the VMM: the device thread's (its I/O thread a stand-in
// whose notify() the test delivers to the other model when it chooses) and
// the I/O thread's copy (what net-iothread-worker.ts builds). The test
// plays the driver (kicks only when the device asks, with or without
// EVENT_IDX) and the traffic the direction is judged by, and checks that
// every frame reaches the wire once, in order, through hand-overs both ways.

import { describe, expect, it, vi } from 'vitest';

vi.mock('../../src/devices/virtio/net-iothread.js', () => ({
  NetIothread: class {
    readonly notifyFd = 99;
    readonly failedToStart = false;
    readonly starting = false;
    /** IOTHREAD_STATE.RUNNING: the thread took its queues. */
    readonly state = 1;
    startError(): string | undefined { return undefined; }
    readonly rxFrames = 0;
    readonly txFrames = 0;
    readonly wakeups = 0;
    forwarded = 0;
    constructor(readonly data: { transmit: boolean; txHandover?: SharedArrayBuffer }) {}
    notify(): void { this.forwarded++; }
    stop(): void {}
    takeInterrupts(): number { return 0; }
    brokenReason(): string | undefined { return undefined; }
  },
}));

const { VirtioNet, VIRTIO_NET_F_MAC } = await import('../../src/devices/virtio/virtio-net.js');
const { VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTQ_USED_F_NO_NOTIFY, featureBit } = await import('../../src/devices/virtio/virtio-constants.js');
const { createQueues } = await import('../../src/devices/virtio/virtio-device.js');
const { TxHandover, TX_EXIT_IDLE, TX_THREAD } = await import('../../src/devices/virtio/net-tx-handover.js');
const { FakeDriver } = await import('./virtio-driver.js');
const { activateQueues } = await import('./virtio-queues.js');

const MAC = Uint8Array.from([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
const V1 = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_NET_F_MAC);
const HDR = 12;
const QSIZE = 16;
const FRAME = 1000;
/** The window the test sets: a few frames. */
const WINDOW = 4 * FRAME;

/** A small deterministic PRNG (the run is the same every time). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 2 ** 32; };
}

/** The transport's KVM_IOEVENTFD route for the transmit queue, as a
 * stand-in: where the driver's kicks go. */
function routeStandIn() {
  return {
    routed: false,
    calls: [] as string[],
    toEventfd(q: number, fd: number): boolean { this.calls.push(`eventfd ${q} ${fd}`); this.routed = true; return true; },
    toExit(q: number): void { this.calls.push(`exit ${q}`); this.routed = false; },
  };
}

function setup(features = V1, vectored = [true, true], withRoute = false) {
  /** Frames on the wire: [sequence number, side that wrote it]. */
  const wire: Array<[number, 'exit' | 'thread']> = [];
  const port = (side: 'exit' | 'thread') => ({
    peek: () => null, consume: () => {}, holding: false,
    send: (v: Uint8Array[]) => {
      const f = Uint8Array.from(v.flatMap((x) => [...x]));
      wire.push([new DataView(f.buffer).getUint32(14, true), side]);
      return true;
    },
  });
  const dev = new VirtioNet({ mac: MAC, iothreadTx: 'switch' }, port('exit'), { kind: 'tap', fd: -1, ifname: 'x', wake: new SharedArrayBuffer(8) });
  const rx = new FakeDriver(QSIZE, 1 << 20);
  const tx = new FakeDriver(QSIZE, 1 << 20);
  const exitSide = activateQueues(dev, [rx, tx], features);
  const helper = { memoryPath: '', layout: { lowmem: 0, highmem: 0 }, doorbell: { sab: new SharedArrayBuffer(8), vcpuFd: -1, mmapSize: 0 } };
  const route = routeStandIn();
  // A driver without MSI-X vectors here takes no interrupts at all (INTx off): it polls.
  const fds = dev.startOffload(helper, () => {}, undefined, vectored, withRoute ? route : undefined, vectored);
  const stand = dev.iothread as unknown as { forwarded: number; data: { transmit: boolean; txHandover?: SharedArrayBuffer } };
  // The I/O thread's model, as the worker builds it.
  const thr = new VirtioNet({ mac: MAC, iothread: false }, port('thread'));
  thr.ackFeatures(features);
  const threadResets: string[] = [];
  const threadIrqs: number[] = [];
  thr.activate({
    mem: tx.mem,
    queues: createQueues(tx.mem, [null, tx.layout], features, [1024, 1024]),
    interrupt: { queue: (i) => threadIrqs.push(i), config: () => {} },
    needsReset: (r) => threadResets.push(r),
  });
  const buf = stand.data.txHandover;
  const h = buf ? new TxHandover(buf) : undefined;
  /** Kicks the thread gave the device thread (its poll() serves them). */
  let deviceKicks = 0;
  thr.kickDeviceThread = () => { deviceKicks++; };
  if (h) {
    thr.txHandoverThread = h;
    // The test's window (startOffload set the VMM's).
    Atomics.store(h.words, 9, WINDOW);
  }
  const bufs = Array.from({ length: QSIZE }, () => tx.alloc(HDR + FRAME));
  let seq = 0;
  let forwardsSeen = 0;
  /** Kicks KVM turned into a signal of the thread's eventfd. */
  let eventfdKicks = 0;
  /** The driver queues a frame numbered `seq` and kicks if the device asks
   * (VIRTQ_USED_F_NO_NOTIFY clear, or past avail_event under EVENT_IDX). */
  const send = (): void => {
    const b = bufs[seq % QSIZE];
    const f = new Uint8Array(HDR + FRAME);
    new DataView(f.buffer).setUint32(HDR + 14, seq, true);
    tx.fill(b, f);
    const old = tx.availIdx;
    tx.offer(tx.chain([{ addr: b, len: HDR + FRAME }]));
    seq++;
    const eventIdx = (features & featureBit(VIRTIO_RING_F_EVENT_IDX)) !== 0n;
    const kick = eventIdx
      ? ((tx.availIdx - tx.availEvent() - 1) & 0xffff) < ((tx.availIdx - old) & 0xffff)
      : (tx.usedFlags() & VIRTQ_USED_F_NO_NOTIFY) === 0;
    if (kick && route.routed) eventfdKicks++;
    else if (kick) dev.queueNotify(1);
  };
  /** The I/O thread wakes for the notifies forwarded to it or routed to
   * its eventfd. */
  const threadWakes = (): void => {
    if (stand.forwarded === forwardsSeen && eventfdKicks === 0) return;
    forwardsSeen = stand.forwarded;
    eventfdKicks = 0;
    thr.queueNotify(1);
  };
  /** The device thread serves the thread's kicks. */
  const deviceServes = (): void => {
    if (deviceKicks === 0) return;
    deviceKicks = 0;
    dev.poll();
  };
  /** The guest receives `bytes` (what the I/O thread reports). */
  const received = (bytes: number): void => h!.addRx(bytes);
  const outstanding = (): number => (tx.availIdx - tx.usedIdx()) & 0xffff;
  return {
    dev, thr, tx, h, wire, fds, stand, route, send, threadWakes, deviceServes, received, outstanding, exitSide, threadResets, threadIrqs,
    seq: () => seq, deviceKicks: () => deviceKicks, eventfdKicks: () => eventfdKicks,
  };
}

describe('virtio-net iothread_tx=switch', () => {
  it('no transmit ioeventfd: the thread gets the queue layout and the hand-over block, the exit the queue to start with', () => {
    for (const vectored of [[true, true], [false, false]]) {
      const v = setup(V1, vectored);
      expect(v.fds?.map((fd) => fd !== undefined)).toEqual([true, false]);
      expect(v.stand.data.transmit).toBe(false);
      expect(v.h).toBeDefined();
      expect(v.h!.owner).toBe(TX_EXIT_IDLE);
      v.send();
      expect(v.wire).toEqual([[0, 'exit']]);
    }
  });

  for (const [name, features, vectored, withRoute] of [
    ['split ring, MSI-X', V1, true, false], ['EVENT_IDX, MSI-X', V1 | featureBit(VIRTIO_RING_F_EVENT_IDX), true, false],
    ['split ring, polling', V1, false, false], ['EVENT_IDX, polling', V1 | featureBit(VIRTIO_RING_F_EVENT_IDX), false, false],
    ['split ring, MSI-X, notifies routed', V1, true, true], ['EVENT_IDX, MSI-X, notifies routed', V1 | featureBit(VIRTIO_RING_F_EVENT_IDX), true, true],
    ['split ring, polling, notifies routed', V1, false, true], ['EVENT_IDX, polling, notifies routed', V1 | featureBit(VIRTIO_RING_F_EVENT_IDX), false, true],
  ] as const) {
    it(`${name}: frames through hand-overs both ways reach the wire once each, in order, and every chain comes back`, () => {
      const v = setup(features, [vectored, vectored], withRoute);
      const r = rng(7);
      const N = 3000;
      for (let guard = 0; v.seq() < N; guard++) {
        if (guard > 20 * N) throw new Error(`stuck at ${v.seq()}: owner ${v.h!.owner}, outstanding ${v.outstanding()}, wire ${v.wire.length}`);
        // Phases of traffic: the guest streams out (its sends dominate),
        // then receives (a window of receive bytes per few frames).
        const phase = Math.floor(v.seq() / 400) % 2;
        const k = 1 + Math.floor(r() * 4);
        for (let i = 0; i < k && v.seq() < N && v.outstanding() < QSIZE; i++) v.send();
        if (phase === 1) v.received(3 * WINDOW);
        // The I/O thread runs when it runs: now, or after more frames;
        // the device thread serves its kicks now or later.
        if (r() < 0.6) v.threadWakes();
        if (r() < 0.3) v.deviceServes();
        if (v.outstanding() === QSIZE) { v.deviceServes(); v.threadWakes(); }
      }
      // Whatever the driver kicked for last is served.
      for (let i = 0; i < 4; i++) { v.deviceServes(); v.threadWakes(); }
      expect(v.exitSide.resets).toEqual([]);
      expect(v.threadResets).toEqual([]);
      expect(v.wire.map(([s]) => s)).toEqual(Array.from({ length: N }, (_, i) => i));
      expect(v.tx.usedIdx()).toBe(N & 0xffff);
      const byExit = v.wire.filter(([, s]) => s === 'exit').length;
      expect(byExit).toBeGreaterThan(N / 10);
      expect(N - byExit).toBeGreaterThan(N / 10);
      expect(v.h!.handovers).toBeGreaterThanOrEqual(6);
      expect(v.dev.counters()['transmit queue hand-overs']).toBe(v.h!.handovers);
      // Routed: the notifies went to the thread's eventfd and back, more than once.
      const routes = v.route.calls.filter((c) => c.startsWith('eventfd')).length;
      if (withRoute) expect(routes).toBeGreaterThanOrEqual(2);
      else expect(v.route.calls).toEqual([]);
      expect(v.dev.counters()['transmit notifies routed to the I/O thread']).toBe(routes);
    });
  }

  it('notifies routed: they go to the thread\'s eventfd while it has the queue where it belongs, and back to the exit after it lets go', () => {
    const v = setup(V1, [true, true], true);
    for (let i = 0; i < 4; i++) v.send(); // a window of sending: the thread's
    expect(v.h!.owner).toBe(TX_THREAD);
    expect(v.route.calls).toEqual([]);
    v.send(); // exits, is forwarded, and routes the next ones
    expect(v.stand.forwarded).toBe(1);
    expect(v.route.calls).toEqual(['eventfd 1 99']);
    expect(v.h!.notifiesToThread).toBe(true);
    v.threadWakes();
    expect(v.wire[4]).toEqual([4, 'thread']);
    v.send(); // KVM signals the eventfd: no exit, nothing forwarded
    expect(v.eventfdKicks()).toBe(1);
    expect(v.stand.forwarded).toBe(1);
    v.threadWakes();
    expect(v.wire[5]).toEqual([5, 'thread']);
    // Receiving: the thread lets go after its next send and asks for the exit route.
    v.received(2 * WINDOW);
    v.send();
    v.threadWakes();
    expect(v.wire[6]).toEqual([6, 'thread']);
    expect(v.h!.owner).toBe(TX_EXIT_IDLE);
    expect(v.deviceKicks()).toBe(1);
    // Before the device thread acts, a kick still reaches the eventfd: the
    // thread takes the queue back for it, sends, and lets go again (no second kick).
    v.send();
    expect(v.eventfdKicks()).toBe(1);
    v.threadWakes();
    expect(v.wire[7]).toEqual([7, 'thread']);
    expect(v.h!.owner).toBe(TX_EXIT_IDLE);
    expect(v.deviceKicks()).toBe(1);
    // The device thread routes them back and has the thread look once more.
    const forwarded = v.stand.forwarded;
    v.deviceServes();
    expect(v.route.calls).toEqual(['eventfd 1 99', 'exit 1']);
    expect(v.h!.notifiesToThread).toBe(false);
    expect(v.stand.forwarded).toBe(forwarded + 1);
    v.threadWakes(); // nothing pending: the queue stays with the exit
    expect(v.h!.owner).toBe(TX_EXIT_IDLE);
    v.send();
    expect(v.wire[8]).toEqual([8, 'exit']);
    expect(v.tx.usedIdx()).toBe(9);
  });

  it('notifies routed: a chain whose notify the thread had to refuse while the exit was sending is forwarded once the exit lets go', () => {
    const v = setup(V1, [true, true], true);
    for (let i = 0; i < 5; i++) v.send();
    v.threadWakes();
    v.received(2 * WINDOW);
    v.send();
    v.threadWakes(); // the thread lets go; the route still points at it
    expect(v.h!.owner).toBe(TX_EXIT_IDLE);
    expect(v.h!.notifiesToThread).toBe(true);
    // A notify that exited anyway (sent before the route changed): the
    // exit takes the queue and sends. Just before it lets go, the driver
    // adds a chain and kicks, which reaches the thread: it must refuse (EXIT_BUSY).
    const devH = (v.dev as unknown as { txHandover: InstanceType<typeof TxHandover> }).txHandover;
    const release = devH.release.bind(devH);
    let raced = false;
    devH.release = (q, self, can) => {
      if (!raced) {
        raced = true;
        const b = v.tx.alloc(HDR + FRAME);
        const f = new Uint8Array(HDR + FRAME);
        new DataView(f.buffer).setUint32(HDR + 14, 100, true);
        v.tx.fill(b, f);
        v.tx.offer(v.tx.chain([{ addr: b, len: HDR + FRAME }]));
        expect(v.h!.owner).toBe(1); // EXIT_BUSY
        v.thr.queueNotify(1);
      }
      return release(q, self, can);
    };
    const sent = v.wire.length;
    v.dev.queueNotify(1);
    expect(raced).toBe(true);
    expect(v.wire.length).toBe(sent); // nothing pending when it took the queue; the chain came after
    // The exit, having let go, found the chain pending and forwarded it.
    v.threadWakes();
    expect(v.wire[sent]).toEqual([100, 'thread']);
    expect(v.outstanding()).toBe(0);
  });

  it('the guest streaming out moves the queue to the thread at the end of a window, receiving moves it back', () => {
    const v = setup();
    for (let i = 0; i < 4; i++) v.send(); // one window of transmit bytes, on the exit
    expect(v.wire.every(([, s]) => s === 'exit')).toBe(true);
    expect(v.h!.owner).toBe(TX_THREAD);
    v.send(); // forwarded, not sent here
    expect(v.wire.length).toBe(4);
    expect(v.stand.forwarded).toBe(1);
    v.threadWakes();
    expect(v.wire[4]).toEqual([4, 'thread']);
    v.received(2 * WINDOW);
    v.send();
    v.threadWakes(); // the thread sends it, then judges the window: the exit's
    expect(v.wire[5]).toEqual([5, 'thread']);
    expect(v.h!.owner).toBe(TX_EXIT_IDLE);
    v.send();
    expect(v.wire[6]).toEqual([6, 'exit']);
    expect(v.h!.handovers).toBe(2);
  });

  it('a driver that polls: the other way round (the thread while the guest receives, the exit while it floods out)', () => {
    const v = setup(V1, [false, false]);
    for (let i = 0; i < 12; i++) v.send(); // three windows of sending: the exit's
    expect(v.wire.every(([, s]) => s === 'exit')).toBe(true);
    expect(v.h!.owner).toBe(TX_EXIT_IDLE);
    expect(v.stand.forwarded).toBe(0);
    v.received(2 * WINDOW);
    v.send(); // sent on the exit, then the window says: the thread's
    expect(v.wire[12]).toEqual([12, 'exit']);
    expect(v.h!.owner).toBe(TX_THREAD);
    v.send();
    v.threadWakes();
    expect(v.wire[13]).toEqual([13, 'thread']);
    expect(v.h!.handovers).toBe(1);
  });

  it('a notify forwarded to the thread just before it let the queue go: the thread takes it back and sends the chains no one else will', () => {
    const v = setup();
    for (let i = 0; i < 4; i++) v.send();
    expect(v.h!.owner).toBe(TX_THREAD);
    // The thread lets go (receive traffic), with nothing pending.
    v.received(2 * WINDOW);
    v.send();
    v.threadWakes();
    expect(v.h!.owner).toBe(TX_EXIT_IDLE);
    // A chain pending with no forwarded notify (a receive notify woke the
    // thread): the guest's own notify will reach the device thread.
    v.tx.offer(v.tx.chain([{ addr: v.tx.alloc(HDR + FRAME), len: HDR + FRAME }]));
    v.thr.queueNotify(1);
    expect(v.wire.length).toBe(5);
    expect(v.h!.owner).toBe(TX_EXIT_IDLE);
    // Its notify forwarded while the thread still owned the queue: the
    // device thread will not see another one for it.
    v.h!.forwarding();
    v.thr.queueNotify(1);
    expect(v.wire.length).toBe(6);
    expect(v.wire[5][1]).toBe('thread');
    expect(v.tx.usedIdx()).toBe(6);
    // ... and, the traffic being the exit's, gives it back at once.
    expect(v.h!.owner).toBe(TX_EXIT_IDLE);
    // A notify with nothing pending does not take the queue.
    v.thr.queueNotify(1);
    expect(v.h!.owner).toBe(TX_EXIT_IDLE);
  });

  it('a hostile chain is DEVICE_NEEDS_RESET on whichever side owns the queue', () => {
    const onExit = setup();
    onExit.tx.offer(QSIZE + 3); // a head past the table
    onExit.dev.queueNotify(1);
    expect(onExit.exitSide.resets.length).toBe(1);
    expect(onExit.h!.owner).toBe(TX_EXIT_IDLE); // let go, to no thread

    const onThread = setup();
    for (let i = 0; i < 4; i++) onThread.send();
    expect(onThread.h!.owner).toBe(TX_THREAD);
    onThread.tx.setAvailIdx(onThread.tx.availIdx + QSIZE + 1); // avail idx far ahead
    onThread.dev.queueNotify(1);
    onThread.threadWakes();
    expect(onThread.threadResets.length).toBe(1);
    expect(onThread.exitSide.resets).toEqual([]);
  });
});
