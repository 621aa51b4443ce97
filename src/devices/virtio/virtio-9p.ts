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
import { ConfigError } from '../../config/tree.js';
import { setBool, setValue } from '../../config/legacy.js';
import type { LegacyParser, PciDeviceRecord, PciSlot } from '../pci-device.js';
import { VIRTIO_ID_9P, featureBit } from './virtio-constants.js';
import { VirtioDeviceBase } from './virtio-device.js';
import { createVirtioPci, VIRTIO_PCI_KEYS } from './virtio-pci.js';
import type { Virtqueue } from './virtqueue.js';
import { P9Server } from './p9/p9-server.js';
import { P9Share } from './p9/p9-share.js';

/** bhyve's VT9P_RINGSZ. */
export const VT9P_RINGSZ = 256;
/** bhyve's VT9P_MAXTAGSZ. */
export const VT9P_MAXTAGSZ = 256;
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

/** pci_vt9p_legacy_config(): one `sharename=/path` item, every other item
 * a boolean set to true (`ro`). */
export const vt9pLegacyConfig: LegacyParser = (tree, node, opts) => {
  if (opts === undefined) return;
  let named = false;
  for (const token of opts.split(',')) {
    const eq = token.indexOf('=');
    if (eq >= 0) {
      if (named) throw new ConfigError('virtio-9p: more than one share name given');
      named = true;
      setValue(tree, `${node}.sharename`, token.slice(0, eq));
      setValue(tree, `${node}.path`, token.slice(eq + 1));
    } else if (token !== '') {
      setBool(tree, `${node}.${token}`, true);
    }
  }
};

/** pci_vt9p_init's checks that need no host access. */
function validate(config: ConfigTree, s: PciSlot): void {
  const node = s.node;
  if (config.get(`${node}.path`) === undefined) {
    throw new ConfigError(`pci slot ${s.where}: virtio-9p: path required (e.g. -s ${s.slot},virtio-9p,sharename=/path)`);
  }
  const tag = config.get(`${node}.sharename`);
  if (tag === undefined) throw new ConfigError(`pci slot ${s.where}: virtio-9p: share name required (sharename=/path)`);
  if (Buffer.byteLength(tag, 'utf8') > VT9P_MAXTAGSZ) {
    throw new ConfigError(`pci slot ${s.where}: virtio-9p: share name too long (at most ${VT9P_MAXTAGSZ} bytes)`);
  }
  config.getBool(`${node}.ro`, false);
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

/** bhyve's pci_de_v9p. */
export const virtio9pDevice: PciDeviceRecord = {
  name: 'virtio-9p',
  description: 'virtio 9p (VirtFS) file sharing',
  legacyConfig: vt9pLegacyConfig,
  keys: [
    { key: 'sharename', description: 'virtio-9p share name (the guest\'s mount tag)' },
    { key: 'path', description: 'shared host directory' },
    { key: 'ro', default: 'false', description: 'read-only share' },
    ...VIRTIO_PCI_KEYS,
  ],
  validate,
  create: (ctx, s, chipset) => createVirtioPci(ctx, s, chipset, 'virtio-9p', PCIC_STORAGE, () => openShare(ctx.config, s.node)),
};
