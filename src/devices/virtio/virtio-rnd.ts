// virtio-rng / bhyve's virtio-rnd (virtio spec 5.4): one request queue whose
// device-writable buffers are filled from the host's CSPRNG, in place in
// guest memory.

import { randomFillSync } from 'node:crypto';
import { VIRTIO_ID_RNG } from './virtio-constants.js';
import { VirtioDeviceBase } from './virtio-device.js';
import type { Virtqueue } from './virtqueue.js';
import type { PciDeviceModel } from '../pci-device.js';
import { createVirtioPci } from './virtio-pci.js';

/** bhyve's VTRND_RINGSZ. */
export const VTRND_RINGSZ = 64;
/** Most bytes handed out per request (the spec lets the device write fewer
 * than offered; a guest must not make us generate gigabytes in one go). */
export const VTRND_MAX_PER_REQUEST = 64 * 1024;

export class VirtioRnd extends VirtioDeviceBase {
  readonly deviceType = VIRTIO_ID_RNG;
  readonly queueMaxSizes: readonly number[] = [VTRND_RINGSZ];
  protected readonly ownFeatures = 0n;
  protected readonly config = new Uint8Array(0);
  /** Bytes of entropy handed to the guest. */
  bytesProvided = 0;

  protected processQueue(index: number, queue: Virtqueue): void {
    const chain = this.scratchChain;
    do {
      while (queue.pop(chain) !== null) {
        // Device-readable buffers have no meaning here and are ignored.
        const segs = chain.writable;
        let filled = 0;
        for (let i = 0; i < segs.length && filled < VTRND_MAX_PER_REQUEST; i++) {
          const seg = segs[i];
          const n = Math.min(seg.length, VTRND_MAX_PER_REQUEST - filled);
          randomFillSync(seg, 0, n);
          filled += n;
        }
        this.bytesProvided += filled;
        queue.pushUsed(chain.head, filled);
      }
    } while (queue.enableNotification());
    this.signalUsed(index, queue);
  }
}

/** PCI class bhyve gives virtio-rnd (PCIC_CRYPTO). */
const PCIC_CRYPTO = 0x10;

/** The emulation of its record (virtio-rnd-record.ts). */
export const virtioRndModel: PciDeviceModel = {
  create: (ctx, s, chipset) => createVirtioPci(ctx, s, chipset, 'virtio-rnd', PCIC_CRYPTO, () => new VirtioRnd()),
};
