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

/** Whether `pci.B.S.F.iothread` defaults to on. Off: on the hosts we
 * measured (kvm_pvm, 2 CPUs) the notify exit with the I/O done inline is
 * faster in every figure of bench/virtio-blk.mjs (BENCHMARKS.md). */
export const IOTHREAD_DEFAULT = false;

/** bhyve's pci_de_vblk. */
export const virtioBlkDevice: PciDeviceRecord = {
  name: 'virtio-blk',
  description: 'virtio block device',
  legacyConfig: blockifLegacyConfig,
  keys: [
    ...BLOCKIF_KEYS,
    { key: 'iothread', default: String(IOTHREAD_DEFAULT), description: 'serve the request queue on its own thread, fed by an ioeventfd' },
    { key: 'iothread_poll_us', default: String(IOTHREAD_POLL_US), description: 'longest time the iothread spins on the queue before it sleeps (adaptive; 0: never)' },
    ...VIRTIO_PCI_KEYS,
  ],
  bootable: true,
  validate: (config, s) => requireBlockPath(config, s.node, s, 'virtio-blk', 'virtio-blk,/path/to/disk.img'),
  model: () => import('./virtio-blk.js').then((m) => m.virtioBlkModel),
};
