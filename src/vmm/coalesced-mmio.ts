// KVM's coalesced MMIO ring (KVM_REGISTER_COALESCED_MMIO): guest writes to
// a registered zone do not exit; KVM appends them to a ring page of the
// kvm_run mapping and the VMM applies them later, in order, before it
// handles anything else (QEMU does the same for its VGA window).

import { COALESCED_RING, COALESCED_RING_MAX } from '../sys/kvm-abi.js';
import type { IoBus } from './io-bus.js';

/**
 * Hands the ring's pending writes (the page at byte `at` of `run`) to
 * `bus`, oldest first, advancing `first` after each; returns how many.
 * A ring KVM would not write (an index past the end, a length outside
 * 1-8) is left alone or skipped, never read out of bounds.
 */
export function drainCoalescedRing(run: DataView, at: number, bus: Pick<IoBus, 'mmioWrite'>): number {
  if (at < 0 || at + 4096 > run.byteLength) return 0;
  let first = run.getUint32(at + COALESCED_RING.first, true);
  const last = run.getUint32(at + COALESCED_RING.last, true);
  let n = 0;
  while (first !== last && n < COALESCED_RING_MAX && first < COALESCED_RING_MAX) {
    const e = at + COALESCED_RING.entries + first * COALESCED_RING.entrySize;
    const addr = Number(run.getBigUint64(e, true));
    const len = run.getUint32(e + COALESCED_RING.len, true);
    if (len >= 1 && len <= 8) bus.mmioWrite(addr, new Uint8Array(run.buffer, run.byteOffset + e + COALESCED_RING.data, len).slice());
    n++;
    first = (first + 1) % COALESCED_RING_MAX;
    run.setUint32(at + COALESCED_RING.first, first, true);
  }
  return n;
}
