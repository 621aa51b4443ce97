// virtio-9p (virtio spec 5.11), bhyve's pci_virtio_9p.c: one request queue
// of 256 entries carrying 9P2000.L messages to a file server on a host
// directory (p9/p9-server.ts, confined by p9/p9-share.ts), and the mount
// tag in the device configuration (tag_len, then the tag, at most 256
// bytes), offered with VIRTIO_9P_MOUNT_TAG.
//
//   -s N,virtio-9p,sharename=/path[,ro]
//
// sets pci.B.S.F.sharename (the mount tag), .path and .ro. Requests are
// served on the device thread inside the notify exit, as virtio-blk's.

import type { ConfigTree } from '../../config/tree.js';
// (The legacy parser moved with the record; importable from here.)
export { vt9pLegacyConfig } from './virtio-9p-record.js';
import { ConfigError } from '../../config/tree.js';
import type { PciDeviceModel } from '../pci-device.js';
import { VIRTIO_ID_9P, featureBit } from './virtio-constants.js';
import { VirtioDeviceBase } from './virtio-device.js';
import { createVirtioPci } from './virtio-pci.js';
import type { Virtqueue } from './virtqueue.js';
import { P9Server } from './p9/p9-server.js';
import { P9Share } from './p9/p9-share.js';

/** bhyve's VT9P_RINGSZ. */
export const VT9P_RINGSZ = 256;
/** bhyve's VT9P_MAXTAGSZ (the record checks it). */
import { VT9P_MAXTAGSZ } from './virtio-9p-record.js';
export { VT9P_MAXTAGSZ };
/** Feature bit: the configuration holds a mount tag. */
export const VIRTIO_9P_MOUNT_TAG = 0;

export class Virtio9p extends VirtioDeviceBase {
  readonly deviceType = VIRTIO_ID_9P;
  readonly queueMaxSizes: readonly number[] = [VT9P_RINGSZ];
  protected readonly ownFeatures = featureBit(VIRTIO_9P_MOUNT_TAG);
  protected readonly config: Uint8Array;
  readonly server: P9Server;

  constructor(readonly share: P9Share, readonly tag: string) {
    super();
    const t = Buffer.from(tag, 'utf8');
    if (t.length > VT9P_MAXTAGSZ) throw new Error('share name too long');
    // struct virtio_9p_config is tag_len[2] then tag[VT9P_MAXTAGSZ].
    this.config = new Uint8Array(2 + VT9P_MAXTAGSZ);
    new DataView(this.config.buffer).setUint16(0, t.length, true);
    this.config.set(t, 2);
    this.server = new P9Server(share);
  }

  protected processQueue(index: number, queue: Virtqueue): void {
    const chain = this.scratchChain;
    do {
      while (queue.pop(chain) !== null) queue.pushUsed(chain.head, this.server.handle(chain));
    } while (queue.enableNotification());
    this.signalUsed(index, queue);
  }

  counters(): Record<string, number> {
    const s = this.server.stats;
    return {
      '9p requests': s.requests,
      '9p errors': s.errors,
      '9p bytes read': s.bytesRead,
      '9p bytes written': s.bytesWritten,
    };
  }

  /** A new driver starts a new 9P session: every fid (and file) goes. */
  protected onReset(): void {
    this.server.reset();
  }

  close(): void {
    this.server.reset();
    this.share.close();
  }
}

/** Opens the share a slot names; one line when it cannot. */
export function openShare(config: ConfigTree, node: string): Virtio9p {
  const path = config.get(`${node}.path`)!;
  const ro = config.getBool(`${node}.ro`, false);
  let share: P9Share;
  try {
    share = new P9Share(path, ro);
  } catch (e) {
    throw new ConfigError(`virtio-9p: ${e instanceof Error ? e.message : String(e)}`);
  }
  return new Virtio9p(share, config.get(`${node}.sharename`)!);
}

/** PCI class bhyve gives virtio-9p (PCIC_STORAGE). */
const PCIC_STORAGE = 0x01;

/** The emulation of its record (virtio-9p-record.ts). */
export const virtio9pModel: PciDeviceModel = {
  create: (ctx, s, chipset) => createVirtioPci(ctx, s, chipset, 'virtio-9p', PCIC_STORAGE, () => openShare(ctx.config, s.node)),
};
