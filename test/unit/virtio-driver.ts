// A virtio driver for unit tests: guest RAM is a plain Uint8Array, and the
// test builds descriptor tables and avail rings in it exactly as a guest
// driver would, then plays the transport (activate, notify) and reads the
// used ring back. No /dev/kvm.

import { GuestMemory } from '../../src/sys/guest-memory.js';
import type { VirtioActivation, VirtioDevice } from '../../src/devices/virtio/virtio-device.js';
import { createQueues, offeredFeatures } from '../../src/devices/virtio/virtio-device.js';
import {
  VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
} from '../../src/devices/virtio/virtio-constants.js';
import type { VirtqueueLayout } from '../../src/devices/virtio/virtqueue.js';

export interface Buf {
  addr: number;
  len: number;
  write?: boolean;
}

export const RAM_BASE = 0x10000;

export class FakeDriver {
  readonly bytes: Uint8Array;
  readonly mem: GuestMemory;
  readonly view: DataView;
  readonly layout: VirtqueueLayout;
  private nextDesc = 0;
  availIdx = 0;
  private heap: number;

  readonly base: number;

  /** RAM at [RAM_BASE, RAM_BASE+ramSize); rings at the bottom, a bump heap
   * for buffers above them. `shared`: the RAM is `bytes` at guest physical
   * `base` instead (memory another thread maps too). */
  constructor(readonly size = 16, ramSize = 1 << 20, shared?: { bytes: Uint8Array; base: number }) {
    this.base = shared?.base ?? RAM_BASE;
    this.bytes = shared?.bytes ?? new Uint8Array(ramSize);
    this.view = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
    this.mem = new GuestMemory([{ gpa: this.base, bytes: this.bytes }]);
    const desc = this.base;
    const avail = desc + 16 * size;
    const used = (avail + 6 + 2 * size + 4095) & ~4095;
    this.layout = { size, desc, avail, used };
    this.heap = (used + 6 + 8 * size + 4095) & ~4095;
  }

  get ramEnd(): number { return this.base + this.bytes.length; }

  off(gpa: number): number { return gpa - this.base; }

  /** Allocates `len` bytes of guest RAM (aligned). */
  alloc(len: number, align = 16): number {
    this.heap = Math.ceil(this.heap / align) * align;
    const a = this.heap;
    this.heap += len;
    if (this.heap > this.ramEnd) throw new Error('test heap exhausted');
    return a;
  }

  fill(gpa: number, data: Uint8Array): void { this.bytes.set(data, this.off(gpa)); }
  read(gpa: number, len: number): Uint8Array { return this.bytes.slice(this.off(gpa), this.off(gpa) + len); }

  setDesc(i: number, addr: number | bigint, len: number, flags: number, next: number, table = this.layout.desc): void {
    const o = this.off(table) + 16 * i;
    this.view.setBigUint64(o, BigInt(addr), true);
    this.view.setUint32(o + 8, len, true);
    this.view.setUint16(o + 12, flags, true);
    this.view.setUint16(o + 14, next, true);
  }

  /** Writes descriptors for `bufs` (taking free slots in order) and returns
   * the head index; does not publish it. */
  chain(bufs: Buf[]): number {
    const idx = bufs.map(() => { const i = this.nextDesc; this.nextDesc = (this.nextDesc + 1) % this.size; return i; });
    bufs.forEach((b, k) => {
      const last = k === bufs.length - 1;
      this.setDesc(idx[k], b.addr, b.len, (b.write ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT), last ? 0 : idx[k + 1]);
    });
    return idx[0];
  }

  /** Builds an indirect table for `bufs` and one direct descriptor naming it. */
  indirectChain(bufs: Buf[]): number {
    const table = this.alloc(16 * bufs.length);
    bufs.forEach((b, k) => {
      const last = k === bufs.length - 1;
      this.setDesc(k, b.addr, b.len, (b.write ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT), last ? 0 : k + 1, table);
    });
    const head = this.nextDesc;
    this.nextDesc = (this.nextDesc + 1) % this.size;
    this.setDesc(head, table, 16 * bufs.length, VIRTQ_DESC_F_INDIRECT, 0);
    return head;
  }

  /** Puts a head in the avail ring and publishes the new avail idx. */
  offer(head: number): void {
    const o = this.off(this.layout.avail);
    this.view.setUint16(o + 4 + 2 * (this.availIdx % this.size), head, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.view.setUint16(o + 2, this.availIdx, true);
  }

  setAvailIdx(v: number): void { this.view.setUint16(this.off(this.layout.avail) + 2, v & 0xffff, true); }
  setAvailFlags(v: number): void { this.view.setUint16(this.off(this.layout.avail), v, true); }
  setUsedEvent(v: number): void { this.view.setUint16(this.off(this.layout.avail) + 4 + 2 * this.size, v, true); }
  availEvent(): number { return this.view.getUint16(this.off(this.layout.used) + 4 + 8 * this.size, true); }
  usedFlags(): number { return this.view.getUint16(this.off(this.layout.used), true); }
  usedIdx(): number { return this.view.getUint16(this.off(this.layout.used) + 2, true); }
  usedElem(n: number): { id: number; len: number } {
    const o = this.off(this.layout.used) + 4 + 8 * (n % this.size);
    return { id: this.view.getUint32(o, true), len: this.view.getUint32(o + 4, true) };
  }
}

/** Plays the transport: negotiates features and activates `device` with
 * one queue laid out by `driver`; records interrupts and reset requests. */
export function activate(device: VirtioDevice, driver: FakeDriver, driverFeatures?: bigint) {
  const interrupts: number[] = [];
  const configInterrupts: number[] = [];
  const resets: string[] = [];
  device.ackFeatures(driverFeatures ?? offeredFeatures(device));
  const queues = createQueues(driver.mem, [driver.layout], device.ackedFeatures, device.queueMaxSizes);
  const activation: VirtioActivation = {
    mem: driver.mem,
    queues,
    interrupt: { queue: (i) => interrupts.push(i), config: () => configInterrupts.push(1) },
    needsReset: (reason) => { resets.push(reason); configInterrupts.push(1); },
  };
  device.activate(activation);
  return { interrupts, configInterrupts, resets, queue: queues[0]! };
}
