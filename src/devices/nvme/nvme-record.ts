// nvme's record (pci-device.ts, bhyve's pci_de_nvme): its name, keys,
// legacy option string and checks, for the option parsing and start-time
// checks; the emulation is nvme.ts, loaded when a run configures one.

import { blockifLegacyConfig, parseLegacyConfig, setValue } from '../../config/legacy.js';
import { BLOCKIF_KEYS, requireBlockPath } from '../block/blockif-keys.js';
import type { LegacyParser, PciDeviceRecord } from '../pci-device.js';

export const NVME_QUEUES = 16;
export const NVME_MAX_QENTRIES = 2048;
export const NVME_IOSLOTS = 8;

// 0: on this project's 2-CPU hosts without other load, the exit path
// measured faster on every sequential row (write 0.91-0.98x of QEMU
// against 0.64-0.81x with one thread); with the host loaded the thread
// won (BENCHMARKS.md, NVMe). Hosts with CPUs to spare: try iopool=1.
export const IOPOOL_THREADS_DEFAULT = 0;
export const IOPOOL_MIN_DEFAULT = 65536;
/** Whether the I/O thread takes the I/O queues once the driver sent
 * Doorbell Buffer Config. True: on the idle 2-CPU host (2026-12-03 20:30,
 * load ~1, two interleaved runs of bench/disk-controller.mjs --mib 128)
 * the thread was ahead of the doorbell exits on every row but seq read,
 * where both were even: 1.08/1.14/0.72/2.67/2.69x and 1.07/1.03/0.55/
 * 2.98/5.03x of QEMU against 0.84/0.84/0.73/0.48/1.43x and 0.74/0.75/
 * 0.59/0.41/1.43x. Under load (6-9, the engineer's A/B) the exits led on
 * the sequential rows. */
export const IOTHREAD_DEFAULT = true;
/** The I/O thread's longest spin before it sleeps (as virtio-blk's). */
export const IOTHREAD_POLL_US_DEFAULT = 32;

/** pci_nvme_legacy_config(): `ram=MiB[,opts]` or a blockif string. */
const nvmeLegacy: LegacyParser = (tree, node, opts) => {
  if (opts === undefined) return;
  if (opts.startsWith('ram=')) {
    const comma = opts.indexOf(',');
    if (comma < 0) { setValue(tree, `${node}.ram`, opts.slice(4)); return; }
    setValue(tree, `${node}.ram`, opts.slice(4, comma));
    parseLegacyConfig(tree, node, opts.slice(comma + 1));
  } else {
    blockifLegacyConfig(tree, node, opts);
  }
};

export const nvmeDevice: PciDeviceRecord = {
  name: 'nvme', description: 'NVMe controller', legacyConfig: nvmeLegacy,
  keys: [
    ...BLOCKIF_KEYS,
    { key: 'maxq', default: String(NVME_QUEUES), description: 'nvme maximum number of queues' },
    { key: 'qsz', default: String(NVME_MAX_QENTRIES), description: 'nvme queue size' },
    { key: 'ioslots', default: String(NVME_IOSLOTS), description: 'nvme I/O slots' },
    { key: 'sectsz', description: 'nvme sector size (512, 4096 or 8192)' },
    { key: 'eui64', description: 'nvme namespace EUI-64' },
    { key: 'dsm', default: 'auto', description: 'nvme dataset management support (auto, enable, disable)' },
    { key: 'ram', description: 'nvme RAM-backed namespace size in MiB' },
    { key: 'cqcoalesce', default: 'true', description: 'nvme completion queue doorbells through KVM\'s coalesced MMIO ring' },
    { key: 'dbbuf', default: 'true', description: 'nvme offers Doorbell Buffer Config (shadow doorbells and EventIdx, OACS bit 8)' },
    { key: 'iothread', default: String(IOTHREAD_DEFAULT), description: 'nvme I/O thread that owns the I/O queues once the driver sent Doorbell Buffer Config (false: they stay in the doorbell exits)' },
    { key: 'iothread_poll_us', default: String(IOTHREAD_POLL_US_DEFAULT), description: 'nvme longest time the I/O thread spins on the shadow doorbells before it sleeps (adaptive; 0: never)' },
    { key: 'iopool', default: String(IOPOOL_THREADS_DEFAULT), description: 'nvme I/O threads for large reads and writes (0: every command runs in its doorbell exit)' },
    { key: 'iopool_min', default: String(IOPOOL_MIN_DEFAULT), description: 'nvme smallest read or write, in bytes, handed to the I/O threads' },
  ],
  bootable: true,
  validate: (c, s) => { if (c.get(`${s.node}.ram`) === undefined) requireBlockPath(c, s.node, s, 'nvme', 'nvme,/path/to/disk.img'); },
  model: () => import('./nvme.js').then((m) => m.nvmeModel),
};
