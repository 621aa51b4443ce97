// virtio-net's iothread_tx=auto: at DRIVER_OK the device hands the transmit
// queue to its I/O thread only when the driver gave its queues MSI-X
// vectors (it waits on interrupts: a TCP stream's segments are written
// while it runs); a driver that polls keeps the transmit notify exit. The
// I/O thread is replaced by a stand-in: what is checked is which queues
// startOffload() gives the thread (an ioeventfd each) and which it keeps.

import { describe, expect, it, vi } from 'vitest';

vi.mock('../../src/devices/virtio/net-iothread.js', () => ({
  NetIothread: class {
    readonly notifyFd = 99;
    readonly failedToStart = false;
    readonly starting = false;
    startError(): string | undefined { return undefined; }
    readonly rxFrames = 0;
    readonly txFrames = 0;
    readonly wakeups = 0;
    forwarded = 0;
    constructor(readonly data: { transmit: boolean }) {}
    notify(): void { this.forwarded++; }
    stop(): void {}
    takeInterrupts(): number { return 0; }
    brokenReason(): string | undefined { return undefined; }
  },
}));

const { VirtioNet, VIRTIO_NET_F_MAC } = await import('../../src/devices/virtio/virtio-net.js');
const { VIRTIO_F_VERSION_1, featureBit } = await import('../../src/devices/virtio/virtio-constants.js');
const { FakeDriver } = await import('./virtio-driver.js');
type IothreadTx = import('../../src/devices/virtio/virtio-net.js').IothreadTx;
const { activateQueues } = await import('./virtio-queues.js');

const MAC = Uint8Array.from([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
const V1 = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_NET_F_MAC);

function device(iothreadTx: IothreadTx | undefined) {
  const sent: number[] = [];
  const port = { peek: () => null, consume: () => {}, send: (v: Uint8Array[]) => { sent.push(v.reduce((n, x) => n + x.length, 0)); return true; }, holding: false };
  const dev = new VirtioNet({ mac: MAC, iothreadTx }, port, { kind: 'tap', fd: -1, ifname: 'x', wake: new SharedArrayBuffer(8) });
  const rx = new FakeDriver(16, 1 << 20);
  const tx = new FakeDriver(16, 1 << 20);
  activateQueues(dev, [rx, tx], V1);
  const helper = { memoryPath: '', layout: { lowmem: 0, highmem: 0 }, doorbell: { sab: new SharedArrayBuffer(8), vcpuFd: -1, mmapSize: 0 } };
  return {
    dev, tx, sent,
    offload: (vectored?: boolean[], interruptible?: boolean[]) => dev.startOffload(helper, () => {}, undefined, vectored, undefined, interruptible),
  };
}

/** Which queues the I/O thread gets for this setting and driver. */
function owners(iothreadTx: IothreadTx, vectored: boolean[] | undefined): boolean[] | undefined {
  const { dev, offload } = device(iothreadTx);
  const fds = offload(vectored);
  const transmit = (dev.iothread as unknown as { data: { transmit: boolean } } | undefined)?.data.transmit;
  dev.close();
  const got = fds?.map((fd) => fd !== undefined);
  // The thread is told it owns the transmit queue exactly when it got its ioeventfd.
  expect(transmit).toBe(got?.[1]);
  return got;
}

describe('virtio-net iothread_tx=auto', () => {
  it('the I/O thread gets the transmit queue only for a driver with MSI-X queue vectors', () => {
    expect(owners('auto', [false, false])).toEqual([true, false]);
    expect(owners('auto', undefined)).toEqual([true, false]);
    expect(owners('auto', [true, true])).toEqual([true, true]);
    expect(owners('auto', [true, false])).toEqual([true, true]);
    expect(owners(true, [false, false])).toEqual([true, true]);
    expect(owners(false, [true, true])).toEqual([true, false]);
  });

  it('one owner at a time: a polling driver\'s transmit notify is sent on the device thread, an interrupt driver\'s goes to the thread; after reset the device thread has it again', () => {
    const frame = (t: InstanceType<typeof FakeDriver>) => {
      const b = t.alloc(12 + 60);
      t.offer(t.chain([{ addr: b, len: 72 }]));
    };
    const poll = device('auto');
    poll.offload([false, false]);
    frame(poll.tx);
    poll.dev.queueNotify(1);
    expect(poll.sent).toEqual([60]);
    expect(poll.tx.usedIdx()).toBe(1);
    poll.dev.close();

    const irq = device('auto');
    irq.offload([true, true]);
    frame(irq.tx);
    irq.dev.queueNotify(1);
    expect(irq.sent).toEqual([]); // not sent here: forwarded to the thread
    expect(irq.tx.usedIdx()).toBe(0);
    expect((irq.dev.iothread as unknown as { forwarded: number }).forwarded).toBe(1);
    irq.dev.reset();
    expect(irq.dev.iothread).toBeUndefined();
  });
});

/** The way round the transmit hand-over was given, or undefined without one. */
function handoverPolicy(dev: InstanceType<typeof VirtioNet>): 'polling' | 'interrupts' | undefined {
  const h = (dev as unknown as { txHandover?: { threadWhenReceiving: boolean } }).txHandover;
  if (!h) return undefined;
  return h.threadWhenReceiving ? 'polling' : 'interrupts';
}

describe('virtio-net iothread_tx=poll (the default)', () => {
  const frame = (t: InstanceType<typeof FakeDriver>) => {
    const b = t.alloc(12 + 60);
    t.offer(t.chain([{ addr: b, len: 72 }]));
  };

  it('a driver no receive interrupt can reach (it polls) gets switch, the polling way round', () => {
    for (const setting of [undefined, 'poll'] as const) {
      const d = device(setting);
      const fds = d.offload([false, false], [false, false]);
      expect(fds?.map((fd) => fd !== undefined)).toEqual([true, false]); // notifies exit at first
      expect(handoverPolicy(d.dev)).toBe('polling');
      // The exit owns the queue at first: a notify is sent right here.
      frame(d.tx);
      d.dev.queueNotify(1);
      expect(d.sent).toEqual([60]);
      d.dev.close();
    }
  });

  it('a driver that can wait on interrupts (MSI-X vectors, MSI, INTx), or a transport that does not say, keeps the transmit queue on the exit, without a hand-over (as false)', () => {
    for (const [vectored, interruptible] of [
      [[true, true], [true, true]], [[false, false], [true, true]], [[false, false], undefined], [undefined, undefined],
      // a receive interrupt but none for the transmit queue: still no poller
      [[true, false], [true, false]],
    ] as const) {
      const d = device(undefined);
      const fds = d.offload(vectored as boolean[] | undefined, interruptible as boolean[] | undefined);
      expect(fds?.map((fd) => fd !== undefined)).toEqual([true, false]);
      expect(handoverPolicy(d.dev)).toBeUndefined();
      frame(d.tx);
      d.dev.queueNotify(1);
      expect(d.sent).toEqual([60]);
      d.dev.close();
    }
  });

  it('explicit switch: the polling way round for a driver no interrupt can reach, the other for one with MSI-X vectors, MSI or INTx', () => {
    for (const [vectored, interruptible, want] of [
      [[true, true], [true, true], 'interrupts'], [[false, false], [true, true], 'interrupts'], [[false, false], [false, false], 'polling'],
    ] as const) {
      const d = device('switch');
      d.offload([...vectored], [...interruptible]);
      expect(handoverPolicy(d.dev)).toBe(want);
      d.dev.close();
    }
  });
});
