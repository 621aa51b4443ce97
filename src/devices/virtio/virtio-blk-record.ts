// virtio-blk's record (pci-device.ts): its name, keys and checks, for the
// option parsing and start-time checks; the emulation is virtio-blk.ts,
// loaded when a run configures one.

import { blockifLegacyConfig } from '../../config/legacy.js';
import { BLOCKIF_KEYS, requireBlockPath } from '../block/blockif-keys.js';
import type { PciDeviceRecord } from '../pci-device.js';
import { VIRTIO_PCI_KEYS } from './virtio-pci-keys.js';

/** Default of iothreadPollUs: QEMU's poll-max-ns for an IOThread (32768
 * ns). BHYVE_IOTHREAD_POLL_US overrides it, for benchmarks. */
export const IOTHREAD_POLL_US = Number(process.env.BHYVE_IOTHREAD_POLL_US ?? 32);

/** Default of iothreadReaders: threads beside the iothread that do its
 * large reads (virtio-blk.ts READER_MIN_BYTES and up), several at once,
 * as QEMU's thread pool does. None: on the 2-CPU hosts we measured (one
 * CPU taken by the polling vCPU, the host loaded) they never made the
 * sequential read faster, and their start-up took CPU from the write
 * phase (bench/virtio-blk.mjs --readers 0,2). BHYVE_IOTHREAD_READERS
 * overrides it, for benchmarks. */
export const IOTHREAD_READERS = Number(process.env.BHYVE_IOTHREAD_READERS ?? 0);
/** Most reader threads accepted. */
export const IOTHREAD_READERS_MAX = 8;

/** Whether `pci.B.S.F.iothread` defaults to on. On: on the idle 2-CPU
 * kvm_pvm host the iothread beat the notify exit in every figure of
 * bench/virtio-blk.mjs (BENCHMARKS.md: 1.56/1.16/0.77/2.08/2.05x of QEMU
 * against 1.15/1.07/0.52/0.37/0.76x), as bhyve's blockif does the I/O off
 * the vCPU too. */
export const IOTHREAD_DEFAULT = true;

/** bhyve's pci_de_vblk. */
export const virtioBlkDevice: PciDeviceRecord = {
  name: 'virtio-blk',
  description: 'virtio block device',
  legacyConfig: blockifLegacyConfig,
  keys: [
    ...BLOCKIF_KEYS,
    { key: 'iothread', default: String(IOTHREAD_DEFAULT), description: 'serve the request queue on its own thread, fed by an ioeventfd' },
    { key: 'iothread_poll_us', default: String(IOTHREAD_POLL_US), description: 'longest time the iothread spins on the queue before it sleeps (adaptive; 0: never)' },
    { key: 'iothread_readers', default: String(IOTHREAD_READERS), description: 'threads that do the iothread\'s large reads, several at once (0: the iothread does them)' },
    ...VIRTIO_PCI_KEYS,
  ],
  bootable: true,
  validate: (config, s) => requireBlockPath(config, s.node, s, 'virtio-blk', 'virtio-blk,/path/to/disk.img'),
  model: () => import('./virtio-blk.js').then((m) => m.virtioBlkModel),
};
