// virtio-net's record (pci-device.ts; bhyve's pci_de_vnet): keys and
// defaults, the legacy backend string, the slirp keys' check; the emulation
// is virtio-net.ts, loaded when a run configures one.

import { netbeLegacyConfig } from '../../config/legacy.js';
import { validateSlirpKeys } from '../net/slirp-options.js';
import type { PciDeviceRecord } from '../pci-device.js';
import { VIRTIO_PCI_KEYS } from './virtio-pci-keys.js';

/** Whether `pci.B.S.F.iothread` defaults to on for virtio-net. */
export const NET_IOTHREAD_DEFAULT = true;
/** What `pci.B.S.F.iothread_tx` defaults to. On the host we measured (2
 * CPUs, shared) a guest sending flat out got more through its own notify
 * exits than through a hand-off to another thread (true lost the UDP flood
 * rows); 'auto' (the thread for a driver with MSI-X vectors, fixed at
 * DRIVER_OK) gained its TCP stream to the host but lost its stream from the
 * host (its ACKs written on the thread that reads the data). 'switch' hands
 * the queue over by the direction of the traffic while the driver runs
 * (net-tx-handover.ts): for a driver that waits on interrupts it lost to
 * false (MSI-X: its stream to the host, 261 -> 216 MB/s; INTx: 283 -> 180;
 * given the polling driver's way round instead, INTx lost its stream from
 * the host, 256 -> 179), for one that polls it won both streams. So
 * 'poll': switch for a driver that polls (no interrupt for its receive
 * queue can reach it: no MSI-X vector, no MSI, INTx disabled), false for
 * every other (bench/virtio-net-tcp.mjs, BENCHMARKS.md). */
export const NET_IOTHREAD_TX_DEFAULT: boolean | 'auto' | 'switch' | 'poll' = 'poll';
/** Whether `pci.B.S.F.irqfd` defaults to on. */
export const NET_IRQFD_DEFAULT = true;
/** Default of `pci.B.S.F.iothread_poll_us`. */
export const NET_IOTHREAD_POLL_US = 0;
/** Default of `pci.B.S.F.iothread_refill_us`. */
export const NET_IOTHREAD_REFILL_US = 20;
/** Largest `iothread_refill_us` (the sleep also delays the thread's stop). */
export const NET_IOTHREAD_REFILL_US_MAX = 10_000;
/** Whether `pci.B.S.F.zerocopy` defaults to on. */
export const NET_ZEROCOPY_DEFAULT = true;

/** Whether `pci.B.S.F.batchio` defaults to on (used when the build made
 * the library, src/sys/net-batch.ts). */
export const NET_BATCHIO_DEFAULT = true;

/** bhyve's pci_de_vnet; the host side is the tap the main thread opened
 * (devices/virtio/host-ports.ts). */
export const virtioNetDevice: PciDeviceRecord = {
  name: 'virtio-net',
  description: 'virtio network device',
  legacyConfig: netbeLegacyConfig,
  keys: [
    { key: 'backend', description: 'network backend (tapN, vmnetN, /dev/tapN or slirp)' },
    { key: 'hostfwd', description: 'slirp backend: host port forwarding rules, separated by ;' },
    { key: 'open', default: 'false', description: 'slirp backend: allow the guest outbound connections' },
    { key: 'mac', description: 'MAC address (default: derived from the VM name and slot)' },
    { key: 'mtu', default: '1500', description: 'MTU offered to the guest' },
    { key: 'iothread', default: String(NET_IOTHREAD_DEFAULT), description: 'receive frames on a thread of its own, fed by an ioeventfd and the backend' },
    { key: 'iothread_tx', default: String(NET_IOTHREAD_TX_DEFAULT), description: 'send frames on that thread too (transmit notifies by ioeventfd); auto: when the driver uses MSI-X queue vectors; switch: moved between the notify exit and that thread while the driver runs, by the direction of the traffic; poll: switch when the driver polls its receive queue (no MSI-X vector, no MSI, INTx disabled), false when it can wait on interrupts' },
    { key: 'irqfd', default: String(NET_IRQFD_DEFAULT), description: 'that thread raises MSI-X queue interrupts by irqfd, not through vCPU 0' },
    { key: 'iothread_poll_us', default: String(NET_IOTHREAD_POLL_US), description: 'microseconds the I/O thread watches for receive buffers while a frame waits, before sleeping' },
    { key: 'iothread_refill_us', default: String(NET_IOTHREAD_REFILL_US), description: 'microseconds the I/O thread sleeps, when the driver adds a receive buffer after running out, for it to add more' },
    { key: 'zerocopy', default: String(NET_ZEROCOPY_DEFAULT), description: 'read frames straight into receive buffers that hold the largest frame' },
    { key: 'batchio', default: String(NET_BATCHIO_DEFAULT), description: 'write the frames of a transmit notify by one call into a small native library (a writev per frame), not one call each' },
    { key: 'bootindex', description: 'boot order index for the firmware' },
    ...VIRTIO_PCI_KEYS,
  ],
  bootable: true,
  validate: (config, s) => validateSlirpKeys(config, s.node, s.where, 'virtio-net'),
  model: () => import('./virtio-net.js').then((m) => m.virtioNetModel),
};
