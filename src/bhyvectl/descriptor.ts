// Segment descriptors as bhyvectl shows and takes them: base, limit and the
// access rights in the VMX encoding bhyve's vm_get_desc/vm_set_desc use
// (type | S<<4 | DPL<<5 | P<<7 | AVL<<12 | L<<13 | D/B<<14 | G<<15 |
// unusable<<16), converted to and from KVM's unpacked struct kvm_segment.

import type { SegmentJson } from '../vmm/vcpu-state.js';

export const ACCESS_UNUSABLE = 1 << 16;

/** The VMX access-rights word of a segment. */
export function encodeAccess(s: Pick<SegmentJson, 'type' | 's' | 'dpl' | 'present' | 'avl' | 'l' | 'db' | 'g' | 'unusable'>): number {
  return ((s.type & 0xf) | ((s.s & 1) << 4) | ((s.dpl & 3) << 5) | ((s.present & 1) << 7)
    | ((s.avl & 1) << 12) | ((s.l & 1) << 13) | ((s.db & 1) << 14) | ((s.g & 1) << 15)
    | ((s.unusable & 1) << 16)) >>> 0;
}

/** The segment fields an access-rights word stands for. */
export function decodeAccess(access: number): Pick<SegmentJson, 'type' | 's' | 'dpl' | 'present' | 'avl' | 'l' | 'db' | 'g' | 'unusable'> {
  return {
    type: access & 0xf,
    s: (access >>> 4) & 1,
    dpl: (access >>> 5) & 3,
    present: (access >>> 7) & 1,
    avl: (access >>> 12) & 1,
    l: (access >>> 13) & 1,
    db: (access >>> 14) & 1,
    g: (access >>> 15) & 1,
    unusable: (access >>> 16) & 1,
  };
}
