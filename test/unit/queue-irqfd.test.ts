// Queue interrupts by irqfd (src/devices/virtio/queue-irqfd.ts) through the
// virtio PCI transport: a device that offloads its receive queue asks for
// an irqfd wire; the transport routes it as the MSI-X table entry of the
// queue's vector and keeps it in step as a guest driver reprograms the
// entry, masks the vector or the function, moves the queue to another
// vector or turns MSI-X off. The I/O thread's side (queueInterruptSender)
// writes the eventfd while the queue is live and otherwise falls back to
// the device thread. KVM is faked (routes and attach state recorded); the
// eventfds are real, so what the "I/O thread" signalled is read back.
import { describe, expect, it } from 'vitest';
import type { DeviceContext, HelperThreadData, KvmDoorbells, MsiIrqfd } from '../../src/devices/device.js';
import { PciBus } from '../../src/devices/pci/pci-bus.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_ISR_QUEUE,
} from '../../src/devices/virtio/virtio-constants.js';
import { VirtioDeviceBase } from '../../src/devices/virtio/virtio-device.js';
import { VirtioPci } from '../../src/devices/virtio/virtio-pci.js';
import { queueInterruptSender, type QueueIrqfdChannel } from '../../src/devices/virtio/queue-irqfd.js';
import type { Virtqueue } from '../../src/devices/virtio/virtqueue.js';
import { eventfdRead } from '../../src/sys/eventfd.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';
import { FakeDriver } from './virtio-driver.js';

/** Offloads queue 0 to a "helper" (as VirtioNet's receive queue). */
class OffloadingDevice extends VirtioDeviceBase {
  readonly deviceType = 1;
  readonly queueMaxSizes = [16, 16];
  protected readonly ownFeatures = 0n;
  protected readonly config = new Uint8Array(8);
  channel: QueueIrqfdChannel | undefined;
  asked: boolean[] | undefined;
  /** What the transport said could interrupt the driver, per queue. */
  interruptible: ReadonlyArray<boolean> | undefined;
  protected processQueue(_index: number, _q: Virtqueue): void {}
  startOffload(
    _h: HelperThreadData, _release: () => void, irqfds?: (q: ReadonlyArray<boolean>) => QueueIrqfdChannel | undefined,
    _vectored?: ReadonlyArray<boolean>, _route?: unknown, interruptible?: ReadonlyArray<boolean>,
  ): Array<number | undefined> {
    this.interruptible = interruptible;
    this.asked = [true, false];
    this.channel = irqfds?.(this.asked);
    return [99, undefined];
  }
}

const MSIX_BAR = 0xc1000000;
const MODERN_BAR = 0xc0000000;

function rig(withIrqfd = true) {
  const routes = new Map<number, { address: number; data: number; attached: boolean; closed: boolean }>();
  const msis: Array<[number, number]> = [];
  const drv0 = new FakeDriver(16, 1 << 20);
  const drv1 = new FakeDriver(16, 0, { bytes: drv0.bytes.subarray(1 << 19), base: drv0.base + (1 << 19) });
  let gsi = 24;
  const kvm: KvmDoorbells = {
    ioeventfd: () => true,
    helper: { memoryPath: '', layout: { lowmem: 0, highmem: 0 }, doorbell: { sab: new SharedArrayBuffer(8), vcpuFd: -1, mmapSize: 0 } },
    ...(withIrqfd ? {
      msiIrqfd(_fd: number): MsiIrqfd {
        const g = gsi++;
        const r = { address: 0, data: 0, attached: false, closed: false };
        routes.set(g, r);
        return {
          gsi: g,
          route: (a, d) => { r.address = a; r.data = d; },
          attach: () => { r.attached = true; },
          detach: () => { r.attached = false; },
          close: () => { r.attached = false; r.closed = true; },
        };
      },
    } : {}),
  };
  const io = new LocalIoBus();
  const ctx: DeviceContext = {
    io, mem: drv0.mem, config: undefined as never, stream: () => undefined, timer: undefined as never,
    irq: { setLevel: () => {}, pulse: () => {}, signalMsi: (a, d) => { msis.push([a, d]); } },
    machine: { requestExit: () => {}, vcpuCount: 1 },
    kvm,
  };
  const dev = new OffloadingDevice();
  const fn = new VirtioPci(ctx, dev, { emulation: 'virtio-test', classCode: 0xff, subclass: 0, transport: 'modern' });
  const bus = new PciBus();
  bus.attach(0, 5, 0, fn);
  const cwr = (off: number, v: number, size = 4) => bus.configWrite(0, 5, 0, off, size, v);
  cwr(0x14, MSIX_BAR); // BAR 1
  cwr(0x20, MODERN_BAR); // BAR 4 (64-bit)
  cwr(0x24, 0);
  cwr(0x04, 0x0006, 2);
  const msixCap = fn.cfg.findCapability(0x11)!.offset;
  const msixControl = (enable: boolean, fmask = false) => cwr(msixCap + 2, (enable ? 0x8000 : 0) | (fmask ? 0x4000 : 0), 2);
  const mwr32 = (a: number, v: number) => io.mmioWrite(a, Uint8Array.of(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24));
  const mrd8 = (a: number) => { const d = new Uint8Array(1); io.mmioRead(a, d); return d[0]; };
  const entry = (v: number, address: number, data: number, masked: boolean) => {
    mwr32(MSIX_BAR + 16 * v, address);
    mwr32(MSIX_BAR + 16 * v + 4, 0);
    mwr32(MSIX_BAR + 16 * v + 8, data);
    mwr32(MSIX_BAR + 16 * v + 12, masked ? 1 : 0);
  };
  const common = (off: number, size: 1 | 2 | 4, v: number) => fn.modernWrite(off, size, v);
  const S = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
  /** The driver's set-up up to DRIVER_OK, queue q on vector vq[q]. */
  const start = (vq: number[]) => {
    common(0x14, 1, S);
    common(0x08, 4, 1);
    common(0x0c, 4, 1); // VERSION_1
    common(0x14, 1, S | VIRTIO_CONFIG_S_FEATURES_OK);
    [drv0, drv1].forEach((d, q) => {
      common(0x16, 2, q);
      common(0x18, 2, d.layout.size);
      common(0x1a, 2, vq[q]);
      common(0x20, 4, d.layout.desc);
      common(0x28, 4, d.layout.avail);
      common(0x30, 4, d.layout.used);
      common(0x1c, 2, 1);
    });
    common(0x14, 1, S | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
  };
  /** The queue vector of queue q (what a driver may rewrite any time). */
  const setQueueVector = (q: number, v: number) => { common(0x16, 2, q); common(0x1a, 2, v); };
  const fallbacks: number[] = [];
  const sender = () => queueInterruptSender(dev.channel, (q) => fallbacks.push(q));
  const signalled = () => Number(eventfdRead(dev.channel!.fds[0]!));
  return { fn, dev, routes, msis, msixControl, entry, start, setQueueVector, sender, fallbacks, signalled, mrd8, common, cwr };
}

describe('virtio-pci: which queues an interrupt could reach the driver for, at DRIVER_OK', () => {
  const NO_VECTOR = 0xffff;
  it('MSI-X: the queues with a vector', () => {
    const r = rig();
    r.msixControl(true);
    r.start([1, NO_VECTOR]);
    expect(r.dev.interruptible).toEqual([true, false]);
  });
  it('INTx: every queue while the line is enabled, none once the driver disabled it', () => {
    const on = rig();
    on.start([NO_VECTOR, NO_VECTOR]);
    expect(on.dev.interruptible).toEqual([true, true]);
    const off = rig();
    off.cwr(0x04, 0x0406, 2); // Interrupt Disable
    off.start([NO_VECTOR, NO_VECTOR]);
    expect(off.dev.interruptible).toEqual([false, false]);
  });
  it('MSI-X enabled takes precedence over the INTx line (vectors alone count)', () => {
    const r = rig();
    r.msixControl(true);
    r.start([NO_VECTOR, NO_VECTOR]);
    expect(r.dev.interruptible).toEqual([false, false]);
  });
});

describe('virtio-pci: an offloaded queue\'s interrupts by irqfd', () => {
  it('routes the queue\'s MSI-X vector to KVM, detaches while masked and keeps the pending bit', () => {
    const r = rig();
    r.msixControl(true);
    r.entry(1, 0xfee00000, 0x41, false);
    r.entry(2, 0xfee01000, 0x42, false);
    r.start([1, 2]);
    expect(r.dev.asked).toEqual([true, false]);
    expect(r.dev.channel?.fds[0]).toBeGreaterThanOrEqual(0);
    expect(r.dev.channel?.fds[1]).toBeUndefined();
    expect(r.fn.irqfdQueues).toBe(1);
    const [route] = [...r.routes.values()];
    expect(route).toMatchObject({ address: 0xfee00000, data: 0x41, attached: true });

    // The I/O thread raises queue 0: one eventfd write, nothing through
    // the device thread, no message sent by the transport itself.
    const send = r.sender();
    send(0);
    expect(r.fallbacks).toEqual([]);
    expect(r.signalled()).toBe(1);
    expect(r.msis).toEqual([]);
    expect(r.fn.stats()['msi-x messages by irqfd']).toBe(1);

    // The guest reprograms the entry: the route follows.
    r.entry(1, 0xfee02000, 0x51, false);
    expect(route).toMatchObject({ address: 0xfee02000, data: 0x51, attached: true });

    // Masked: detached; a signal then shows in the PBA and is sent once at unmask.
    r.entry(1, 0xfee02000, 0x51, true);
    expect(route.attached).toBe(false);
    send(0);
    expect(r.fallbacks).toEqual([]);
    expect(r.mrd8(MSIX_BAR + 0x1000) & 2).toBe(2); // vector 1 pending
    expect(r.msis).toEqual([]);
    r.entry(1, 0xfee02000, 0x51, false);
    expect(r.msis).toEqual([[0xfee02000, 0x51]]);
    expect(r.mrd8(MSIX_BAR + 0x1000) & 2).toBe(0);
    expect(route.attached).toBe(true);

    // The function mask detaches too; unmasking sends what came meanwhile.
    r.msixControl(true, true);
    expect(route.attached).toBe(false);
    send(0);
    r.msixControl(true, false);
    expect(r.msis).toHaveLength(2);
    expect(route.attached).toBe(true);

    // The driver moves queue 0 to vector 2.
    r.setQueueVector(0, 2);
    expect(route).toMatchObject({ address: 0xfee01000, data: 0x42, attached: true });
  });

  it('falls back to the device thread without MSI-X or without a vector, and raises what was signalled at the switch', () => {
    const r = rig();
    r.msixControl(true);
    r.entry(1, 0xfee00000, 0x41, false);
    r.start([1, 0xffff]);
    const send = r.sender();
    expect(r.fn.irqfdQueues).toBe(1);
    // A signal the thread wrote just before the guest turned MSI-X off
    // (KVM not consuming it here, as if the write raced the switch) is
    // raised by the transport the way interrupts go now: the ISR bit.
    send(0);
    r.msixControl(false);
    expect(r.fn.irqfdQueues).toBe(0);
    expect(r.fn.isrStatus & VIRTIO_ISR_QUEUE).toBe(VIRTIO_ISR_QUEUE);
    expect([...r.routes.values()][0].attached).toBe(false);
    // Interrupts now go through the device thread.
    send(0);
    expect(r.fallbacks).toEqual([0]);
    expect(r.signalled()).toBe(0);
    // MSI-X back on: live again.
    r.msixControl(true);
    expect(r.fn.irqfdQueues).toBe(1);
    send(0);
    expect(r.fallbacks).toEqual([0]);
    // No vector for the queue: not live (the driver wants no interrupt).
    r.setQueueVector(0, 0xffff);
    expect(r.fn.irqfdQueues).toBe(0);
    send(0);
    expect(r.fallbacks).toEqual([0, 0]);
  });

  it('closes the wires at reset, and offers none when KVM has no irqfd', () => {
    const r = rig();
    r.msixControl(true);
    r.entry(1, 0xfee00000, 0x41, false);
    r.start([1, 0xffff]);
    const fd = r.dev.channel!.fds[0]!;
    r.common(0x14, 1, 0); // reset
    expect([...r.routes.values()].every((x) => x.closed && !x.attached)).toBe(true);
    expect(r.fn.irqfdQueues).toBe(0);
    expect(eventfdRead(fd)).toBeLessThan(0n); // closed (EBADF)
    const none = rig(false);
    none.msixControl(true);
    none.start([1, 0xffff]);
    expect(none.dev.asked).toEqual([true, false]);
    expect(none.dev.channel).toBeUndefined();
    expect(none.fn.irqfdQueues).toBe(0);
  });
});
