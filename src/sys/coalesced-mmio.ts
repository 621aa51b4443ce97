// KVM's coalesced MMIO ring: guest writes to a registered zone
// (Vm.coalescedMmio) do not exit to userspace; KVM appends them (address,
// length, data) to one ring per VM, a page of every vCPU's kvm_run mapping,
// and the vCPU goes straight back to the guest. The writes take effect when
// we replay them, in order, to the device that decodes the address: the
// device host does that before it lets any other access reach a device, so
// a device never sees a later access before an earlier buffered write
// (QEMU flushes its ring at every exit for the same reason).
//
// KVM writes an entry, then advances `last`; we read up to `last`, then
// advance `first`. A full ring makes KVM exit with the write as a plain
// MMIO exit, which the replay-first rule keeps in order.

import { COALESCED_MMIO, COALESCED_MMIO_RING, getU64, SIZEOF } from './kvm-abi.js';
import { PAGE_SIZE } from './memory-map.js';

export class CoalescedMmioRing {
  private readonly v: DataView;
  private readonly entries: number;
  /** One reusable buffer per access size (1, 2, 4, 8 bytes). */
  private readonly data: Uint8Array[] = [];

  /** `run` is a vCPU's kvm_run mapping; `pageOffset` what
   * KVM_CHECK_EXTENSION(KVM_CAP_COALESCED_MMIO) answered. */
  constructor(run: Uint8Array, pageOffset: number) {
    const at = pageOffset * PAGE_SIZE;
    if (pageOffset <= 0 || at + PAGE_SIZE > run.byteLength) throw new RangeError('the vCPU mapping has no coalesced MMIO page');
    this.v = new DataView(run.buffer, run.byteOffset + at, PAGE_SIZE);
    this.entries = Math.floor((PAGE_SIZE - SIZEOF.kvm_coalesced_mmio_ring) / SIZEOF.kvm_coalesced_mmio);
    for (const n of [1, 2, 4, 8]) this.data[n] = new Uint8Array(n);
  }

  /** Whether writes wait to be replayed. */
  get pending(): boolean {
    return this.v.getUint32(COALESCED_MMIO_RING.first, true) !== this.v.getUint32(COALESCED_MMIO_RING.last, true);
  }

  /** Hands every buffered write to `write`, oldest first; returns how
   * many. `data` is only valid during the call. */
  drain(write: (addr: number, data: Uint8Array, pio: boolean) => void): number {
    const v = this.v;
    let first = v.getUint32(COALESCED_MMIO_RING.first, true);
    const last = v.getUint32(COALESCED_MMIO_RING.last, true);
    let n = 0;
    while (first !== last && first < this.entries) {
      const e = COALESCED_MMIO_RING.coalesced_mmio + first * SIZEOF.kvm_coalesced_mmio;
      const addr = getU64(v, e + COALESCED_MMIO.phys_addr);
      const len = v.getUint32(e + COALESCED_MMIO.len, true);
      const pio = v.getUint32(e + COALESCED_MMIO.pio, true) !== 0;
      first = (first + 1) % this.entries;
      // Advance before the handler runs: a handler that drains again (or
      // throws) must not see this entry twice.
      v.setUint32(COALESCED_MMIO_RING.first, first, true);
      const buf = this.data[len];
      if (!buf) continue; // KVM only coalesces 1, 2, 4 and 8-byte writes
      for (let i = 0; i < len; i++) buf[i] = v.getUint8(e + COALESCED_MMIO.data + i);
      write(addr, buf, pio);
      n++;
    }
    return n;
  }
}
