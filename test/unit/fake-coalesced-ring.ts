// KVM's coalesced MMIO as far as a device model sees it, for unit tests:
// the zones the device registered, and a ring page that a test driver's
// write appends to (as KVM does for an address in a zone) instead of an
// exit. The LocalIoBus replays the ring before any access that does exit.

import { CoalescedMmioRing } from '../../src/sys/coalesced-mmio.js';
import { COALESCED_MMIO, COALESCED_MMIO_RING, SIZEOF } from '../../src/sys/kvm-abi.js';
import type { LocalIoBus } from '../../src/vmm/io-bus.js';

export class FakeCoalescedRing {
  readonly zones = new Map<number, number>();
  private readonly page: DataView;
  /** Writes that went to the ring instead of exiting. */
  buffered = 0;

  constructor(private readonly io: LocalIoBus) {
    const run = new Uint8Array(3 * 4096);
    this.page = new DataView(run.buffer, 2 * 4096, 4096);
    io.attachCoalescedRing(new CoalescedMmioRing(run, 2));
  }

  /** KvmDoorbells.coalesce */
  coalesce(addr: number, len: number, on: boolean): boolean {
    if (on) {
      if (this.zones.has(addr)) return false;
      this.zones.set(addr, len);
    } else {
      if (!this.zones.delete(addr)) return false;
      this.io.flushCoalesced();
    }
    return true;
  }

  /** KVM's side of a guest write: appended to the ring (false when no zone
   * covers it or the ring is full: then it exits). */
  append(addr: number, data: Uint8Array): boolean {
    const v = this.page;
    let zone = false;
    for (const [a, len] of this.zones) if (addr >= a && addr + data.length <= a + len) zone = true;
    if (!zone) return false;
    const max = Math.floor((4096 - SIZEOF.kvm_coalesced_mmio_ring) / SIZEOF.kvm_coalesced_mmio);
    const first = v.getUint32(COALESCED_MMIO_RING.first, true);
    const last = v.getUint32(COALESCED_MMIO_RING.last, true);
    if ((last + 1) % max === first) return false;
    const e = COALESCED_MMIO_RING.coalesced_mmio + last * SIZEOF.kvm_coalesced_mmio;
    v.setBigUint64(e + COALESCED_MMIO.phys_addr, BigInt(addr), true);
    v.setUint32(e + COALESCED_MMIO.len, data.length, true);
    v.setUint32(e + COALESCED_MMIO.pio, 0, true);
    data.forEach((b, i) => v.setUint8(e + COALESCED_MMIO.data + i, b));
    v.setUint32(COALESCED_MMIO_RING.last, (last + 1) % max, true);
    this.buffered++;
    return true;
  }

  /** Whether writes wait in the ring. */
  get pending(): boolean {
    return this.page.getUint32(COALESCED_MMIO_RING.first, true) !== this.page.getUint32(COALESCED_MMIO_RING.last, true);
  }
}
