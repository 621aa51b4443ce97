// virtio-net (virtio spec 5.1), bhyve's pci_virtio_net.c behind the
// transport-independent VirtioDevice interface.
//
// Queues: receiveq 0, transmitq 1 (no control queue, no multiqueue), 1024
// entries each (bhyve's VTNET_RINGSZ). Features: MAC, STATUS (the link is
// always up), MRG_RXBUF (mergeable receive buffers), MTU when `mtu=` was
// given; the transport adds VERSION_1, INDIRECT_DESC and EVENT_IDX. No
// checksum or segmentation offloads, so the backend's frames pass unchanged.
//
// The virtio_net_hdr is 12 bytes (with num_buffers) under VERSION_1 or
// MRG_RXBUF, 10 bytes for a legacy driver without MRG_RXBUF. TX strips it
// and hands the frame to the backend (one writev per frame). RX prepends a
// zeroed header (num_buffers = number of buffers used) and fills:
//   - without MRG_RXBUF one chain per frame; a chain too small for the frame
//     drops the frame and returns the chain empty;
//   - with MRG_RXBUF as many chains as the frame needs, published together.
// Chains popped for a frame that then cannot be completed (the driver ran
// out of buffers) are kept for the next frame, never lost. RX runs when the
// main thread signals that frames arrived (poll) and when the driver makes
// receive buffers available (notify on queue 0); receive notifications are
// enabled only while a frame waits for buffers. Interrupts are raised once
// per batch, and only when the driver asked (NO_INTERRUPT / used_event).
//
// With a backend and KVM ioeventfds (iothread=true, the default) the receive
// queue and reading the backend's descriptor belong to an I/O thread while
// the driver runs (net-iothread.ts): receive notifies reach it by ioeventfd
// without an exit, frames by poll(2) on the tap without the main thread.
// With iothread_tx=true it serves the transmit queue as well; with false
// the device thread sends on each transmit notify exit (writev on the same
// descriptor: the two queues are independent). With auto the choice is
// made at DRIVER_OK, once for the run: the I/O thread when the driver gave
// its queues MSI-X vectors (it waits on interrupts), the exit when it
// polls.
// With switch the transmit queue moves between the two while the driver
// runs, by the direction of the traffic (net-tx-handover.ts): for a driver
// that waits on interrupts the I/O thread while the guest sends more than
// it receives and the exit while it receives a stream (its frames are
// ACKs); for a driver that polls (below) the other way round.
// With poll, the default, the choice is made at DRIVER_OK by how the
// driver takes its receive queue's completions: switch (the polling
// driver's way round) when the device has no way to interrupt it for that
// queue (no MSI-X vector; without MSI-X, no MSI and INTx disabled in the
// command register), false when it can wait on interrupts.
// Otherwise one thread owns the transmit queue from DRIVER_OK to reset.
//
// Options (bhyve's): mac=xx:xx:xx:xx:xx:xx (unicast, nonzero; default from
// net_genmac: 00:a0:98 then the first three bytes of MD5("slot-func-vmname")),
// mtu=N (ETHERMIN..65535, also offers VIRTIO_NET_F_MTU). Ours: iothread=BOOL,
// iothread_tx=BOOL|auto|switch|poll.

import type { ConfigTree } from '../../config/tree.js';
import { ConfigError } from '../../config/tree.js';
import { VIRTIO_F_VERSION_1, VIRTIO_ID_NET, featureBit } from './virtio-constants.js';
import { VirtioDeviceBase, type VirtioActivation } from './virtio-device.js';
import { DescriptorChain, emptyArray, VirtqueueError, type Virtqueue } from './virtqueue.js';
import { attachNetBackend, TAP_READ_BYTES, type NetBackendTransfer, type NetPort } from '../net/net-backend.js';
import { armFdWaker, disarmFdWaker } from '../fd-waker.js';
import type { HelperThreadData } from '../device.js';
import { BATCH_FRAMES, type FrameBatch } from '../../sys/net-batch.js';
import { NetIothread } from './net-iothread.js';
import { IOTHREAD_STATE } from './iothread-control.js';
import { TX_EXIT_BUSY, TX_THREAD, TxHandover } from './net-tx-handover.js';
import type { QueueIrqfdChannel } from './queue-irqfd.js';
import { netGenMac, parseMac } from '../net/net-utils.js';
import type { HostPortLookup } from './host-ports.js';
import type { PciDeviceModel } from '../pci-device.js';
import { createVirtioPci, type QueueNotifyRoute } from './virtio-pci.js';
// The defaults its record documents (virtio-net-record.ts).
import {
  NET_IOTHREAD_DEFAULT, NET_IOTHREAD_POLL_US, NET_IOTHREAD_REFILL_US, NET_IOTHREAD_REFILL_US_MAX, NET_IOTHREAD_TX_DEFAULT, NET_IRQFD_DEFAULT, NET_ZEROCOPY_DEFAULT, NET_BATCHIO_DEFAULT,
} from './virtio-net-record.js';
export { NET_BATCHIO_DEFAULT, NET_IOTHREAD_DEFAULT, NET_IOTHREAD_POLL_US, NET_IOTHREAD_REFILL_US, NET_IOTHREAD_REFILL_US_MAX, NET_IOTHREAD_TX_DEFAULT, NET_IRQFD_DEFAULT, NET_ZEROCOPY_DEFAULT };

export const VIRTIO_NET_F_CSUM = 0;
export const VIRTIO_NET_F_GUEST_CSUM = 1;
export const VIRTIO_NET_F_MTU = 3;
export const VIRTIO_NET_F_MAC = 5;
export const VIRTIO_NET_F_MRG_RXBUF = 15;
export const VIRTIO_NET_F_STATUS = 16;
export const VIRTIO_NET_S_LINK_UP = 1;

/** bhyve's VTNET_RINGSZ. */
export const VTNET_RINGSZ = 1024;
export const VTNET_RXQ = 0;
export const VTNET_TXQ = 1;
/** ETHERMIN and bhyve's VTNET_MAX_MTU. */
export const VTNET_MIN_MTU = 46;
export const VTNET_MAX_MTU = 65535;
export const ETHERMTU = 1500;
/** sizeof(struct virtio_net_config): mac, status, max_virtqueue_pairs, mtu. */
export const VTNET_CONFIG_SIZE = 12;
/** Largest frame accepted from the guest (bhyve's VTNET_MAX_PKT_LEN). */
export const VTNET_MAX_PKT_LEN = 65536 + 64;
const ETHER_HDR_LEN = 14;

export { formatMac, netGenMac, parseMac } from '../net/net-utils.js';

export interface NetOptions {
  mac: Uint8Array;
  /** Set when mtu= was given (offers VIRTIO_NET_F_MTU). */
  mtu?: number;
  /** Serve the queues on an I/O thread (net-iothread.ts) fed by KVM
   * ioeventfds, when the vmm offers them (default: NET_IOTHREAD_DEFAULT). */
  iothread?: boolean;
  /** The I/O thread serves the transmit queue too (default:
   * NET_IOTHREAD_TX_DEFAULT); false: transmit notifies exit to the device
   * thread, which sends at once; 'auto': the I/O thread when the driver
   * has MSI-X vectors on its queues at DRIVER_OK; 'switch': handed
   * between the exit and the thread by the direction of the traffic while
   * the driver runs (net-tx-handover.ts); 'poll': 'switch' for a driver
   * that polls its receive queue (no interrupt for it can reach the driver
   * at DRIVER_OK: no MSI-X vector, no MSI, INTx disabled), false for one
   * that can wait on interrupts. */
  iothreadTx?: IothreadTx;
  /** The I/O thread raises queue interrupts by irqfd (KVM injects the
   * queue's MSI-X message) rather than through the device thread (default:
   * NET_IRQFD_DEFAULT). */
  irqfd?: boolean;
  /** Receive straight into the guest's buffers when a chain holds the
   * largest frame (default: NET_ZEROCOPY_DEFAULT); else through a bounce
   * buffer. */
  zeroCopy?: boolean;
  /** Write the frames of a transmit notify by one call into a small native
   * library (net-batch.ts), when the backend offers it (default:
   * NET_BATCHIO_DEFAULT); false: one call per frame. */
  batchIo?: boolean;
  /** Microseconds the I/O thread watches for receive buffers while a
   * frame waits, before sleeping (default: NET_IOTHREAD_POLL_US). */
  iothreadPollUs?: number;
  /** Microseconds the I/O thread sleeps, when the driver adds a receive
   * buffer after running out, for more before receiving resumes (default:
   * NET_IOTHREAD_REFILL_US). */
  iothreadRefillUs?: number;
}

/** bhyve's net_parsemtu() plus the VTNET_MIN_MTU..VTNET_MAX_MTU check. */
export function parseMtu(s: string): number {
  const t = s.trim();
  const n = /^0[xX][0-9a-fA-F]+$/.test(t) ? parseInt(t, 16) : /^0[0-7]*$/.test(t) ? parseInt(t, 8) : /^[1-9][0-9]*$/.test(t) ? Number(t) : NaN;
  if (!Number.isFinite(n)) throw new ConfigError(`Invalid MTU ${s}`);
  if (n < VTNET_MIN_MTU || n > VTNET_MAX_MTU) throw new ConfigError(`Invalid MTU ${s} (must be ${VTNET_MIN_MTU}..${VTNET_MAX_MTU})`);
  return n;
}

function parseMicros(key: string, s: string | undefined, dflt: number, max: number): number {
  if (s === undefined) return dflt;
  const n = /^[0-9]+$/.test(s.trim()) ? Number(s.trim()) : NaN;
  if (!(n >= 0 && n <= max)) throw new ConfigError(`Invalid ${key} ${s} (0 to ${max} microseconds)`);
  return n;
}

export type IothreadTx = boolean | 'auto' | 'switch' | 'poll';

/** iothread_tx: a bool, auto or poll (decided at DRIVER_OK) or switch
 * (while the driver runs). */
function parseIothreadTx(config: ConfigTree, path: string): IothreadTx {
  const v = config.get(path);
  if (v === undefined) return NET_IOTHREAD_TX_DEFAULT;
  const w = v.trim().toLowerCase();
  if (w === 'auto' || w === 'switch' || w === 'poll') return w;
  try {
    return config.getBool(path, false);
  } catch {
    // getBool's line names only the boolean spellings.
    throw new ConfigError(`invalid value '${v}' for ${path} (use true/false, on/off, yes/no, 1/0, auto, switch or poll)`);
  }
}

/** Options of the virtio-net slot `node` (pci.B.S.F). */
export function netOptionsFromConfig(config: ConfigTree, node: string, slot: number, func: number): NetOptions {
  const macStr = config.get(`${node}.mac`);
  const mtuStr = config.get(`${node}.mtu`);
  return {
    mac: macStr !== undefined ? parseMac(macStr) : netGenMac(slot, func, config.get('name') ?? ''),
    mtu: mtuStr !== undefined ? parseMtu(mtuStr) : undefined,
    iothread: config.getBool(`${node}.iothread`, NET_IOTHREAD_DEFAULT),
    iothreadTx: parseIothreadTx(config, `${node}.iothread_tx`),
    irqfd: config.getBool(`${node}.irqfd`, NET_IRQFD_DEFAULT),
    zeroCopy: config.getBool(`${node}.zerocopy`, NET_ZEROCOPY_DEFAULT),
    batchIo: config.getBool(`${node}.batchio`, NET_BATCHIO_DEFAULT),
    iothreadPollUs: parseMicros('iothread_poll_us', config.get(`${node}.iothread_poll_us`), NET_IOTHREAD_POLL_US, 1_000_000),
    iothreadRefillUs: parseMicros('iothread_refill_us', config.get(`${node}.iothread_refill_us`), NET_IOTHREAD_REFILL_US, NET_IOTHREAD_REFILL_US_MAX),
  };
}

/** iothread_tx=switch: hands the I/O thread a transmit notify (it looks
 * at the queue as for one of the driver's, net-tx-handover.ts). */
function forwardTransmit(t: NetIothread, h: TxHandover): void {
  h.forwarding();
  t.notify();
}

export class VirtioNet extends VirtioDeviceBase {
  readonly deviceType = VIRTIO_ID_NET;
  readonly queueMaxSizes: readonly number[] = [VTNET_RINGSZ, VTNET_RINGSZ];
  protected readonly ownFeatures: bigint;
  protected readonly config = new Uint8Array(VTNET_CONFIG_SIZE);
  private readonly port: NetPort | undefined;
  /** RX chains popped but not yet used (the frame they were for did not fit). */
  private readonly stash: DescriptorChain[] = [];
  private readonly spare: DescriptorChain[] = [];
  private readonly txViews: Uint8Array[] = [];
  private readonly rxViews: Uint8Array[] = [];
  private readonly hdr = new Uint8Array(12);
  private hdrLen = 12;
  private mergeable = false;
  private activationRef: VirtioActivation | undefined;
  private readonly opts: NetOptions;
  /** The backend's descriptor, which an I/O thread can take over. */
  private readonly backend: NetBackendTransfer | undefined;
  /** Removes the transport's ioeventfds (NotifyOffload's release). */
  private releaseOffload: () => void = () => {};
  /** Whether the I/O thread serves the transmit queue too (decided at
   * startOffload; false while the device thread owns it). */
  private txOnIothread = false;
  /** iothread_tx=switch: who owns the transmit queue now (this side: the
   * device thread's). */
  private txHandover: TxHandover | undefined;
  /** iothread_tx=switch: moves the transmit notifies between the exit and
   * the I/O thread's eventfd (the transport's KVM_IOEVENTFD). */
  private txRoute: QueueNotifyRoute | undefined;
  /** Set on the I/O thread's copy of the model (net-iothread-worker.ts):
   * it serves the transmit queue only while the hand-over gives it. */
  txHandoverThread: TxHandover | undefined;
  /** Set on the I/O thread's copy: rings the device thread (its poll()). */
  kickDeviceThread: (() => void) | undefined;
  /** The I/O thread that owns the queues while the driver runs, if any. */
  iothread: NetIothread | undefined;
  /** Counters of I/O threads that have stopped, and notifies this thread
   * handed to one (bhyvectl --get-stats). */
  private readonly offloaded = { rxFrames: 0, txFrames: 0, wakeups: 0, forwarded: 0, handovers: 0, routed: 0 };

  /** Statistics, for tests and diagnostics. */
  readonly stats = { rxFrames: 0, rxBytes: 0, rxDropped: 0, txFrames: 0, txBytes: 0, txDropped: 0, txBatches: 0, interrupts: 0 };
  /** batchio: frames to send, written by one call per queueful (the
   * backend's, when it has one and the build made the library). */
  private readonly txBatch: FrameBatch | undefined;
  /** The chains of the frames in txBatch, in order. */
  private readonly txHeads = new Uint16Array(BATCH_FRAMES);

  constructor(opts: NetOptions, port: NetPort | undefined, backend?: NetBackendTransfer) {
    super();
    this.port = port;
    this.opts = opts;
    this.txBatch = (opts.batchIo ?? NET_BATCHIO_DEFAULT) ? port?.txBatch : undefined;
    this.backend = backend;
    let f = featureBit(VIRTIO_NET_F_MAC) | featureBit(VIRTIO_NET_F_STATUS) | featureBit(VIRTIO_NET_F_MRG_RXBUF);
    if (opts.mtu !== undefined) f |= featureBit(VIRTIO_NET_F_MTU);
    this.ownFeatures = f;
    this.config.set(opts.mac, 0);
    const dv = new DataView(this.config.buffer);
    dv.setUint16(6, VIRTIO_NET_S_LINK_UP, true);
    dv.setUint16(8, 1, true); // max_virtqueue_pairs
    dv.setUint16(10, opts.mtu ?? ETHERMTU, true);
  }

  /** The MAC address in config space. */
  get mac(): Uint8Array { return this.config.slice(0, 6); }

  /** A driver without VIRTIO_NET_F_MAC may program the address (bhyve
   * accepts writes to the mac bytes and ignores the rest). */
  writeConfig(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      const o = offset + i;
      if (o >= 0 && o < 6) this.config[o] = data[i];
    }
  }

  activate(activation: VirtioActivation): void {
    super.activate(activation);
    this.activationRef = activation;
    this.mergeable = this.hasAcked(VIRTIO_NET_F_MRG_RXBUF);
    this.hdrLen = this.mergeable || this.hasAcked(VIRTIO_F_VERSION_1) ? 12 : 10;
    this.stash.length = 0;
  }

  protected onReset(): void {
    this.stopIothread();
    this.stash.length = 0;
    this.activationRef = undefined;
  }

  close(): void {
    this.stopIothread();
  }

  /** Called by the transport after activation (virtio-pci.ts
   * NotifyOffload): hands the queues and the backend's descriptor to an I/O
   * thread when configured, and returns its eventfd for each queue, for the
   * transport to register as ioeventfds. */
  startOffload(
    helper: HelperThreadData, release: () => void = () => {},
    irqfds?: (queues: ReadonlyArray<boolean>) => QueueIrqfdChannel | undefined,
    vectored?: ReadonlyArray<boolean>,
    route?: QueueNotifyRoute,
    interruptible?: ReadonlyArray<boolean>,
  ): Array<number | undefined> | undefined {
    const act = this.activationRef;
    const b = this.backend;
    if (!(this.opts.iothread ?? NET_IOTHREAD_DEFAULT) || !act || !b || this.iothread || this.needsResetReason !== undefined) return undefined;
    const vect = vectored?.[VTNET_RXQ] === true || vectored?.[VTNET_TXQ] === true;
    const setting = this.opts.iothreadTx ?? NET_IOTHREAD_TX_DEFAULT;
    // poll: a driver that polls its receive queue gets switch (its ACKs
    // then leave from the thread that reads the stream, not from exits that
    // stop its vCPU); one that waits on interrupts keeps the exit (false).
    // Polling: the device has no way to interrupt it for that queue (no
    // MSI-X vector; without MSI-X, no MSI and INTx disabled). A ring flag
    // (VIRTQ_AVAIL_F_NO_INTERRUPT) would not do: drivers that halt when
    // idle, as NAPI does, keep it set while busy too.
    const polls = interruptible?.[VTNET_RXQ] === false;
    const tx = setting === 'poll' ? (polls ? 'switch' : false) : setting;
    this.txOnIothread = tx === 'auto' ? vect : tx === 'switch' ? false : tx;
    // switch: transmit notifies exit here at first, and the thread serves
    // the queue while the hand-over gives it the queue (their route follows);
    // which way round depends on whether the driver waits on interrupts.
    const txq = act.queues[VTNET_TXQ];
    if (tx === 'switch' && txq) {
      this.txHandover = new TxHandover();
      this.txHandover.init(txq, polls);
      this.txRoute = route;
    }
    const onThread = act.queues.map((q, i) => q !== null && (i === VTNET_RXQ || this.txOnIothread));
    const interrupting = act.queues.map((q, i) => onThread[i] || (i === VTNET_TXQ && this.txHandover !== undefined));
    this.iothread = new NetIothread({
      irqfds: (this.opts.irqfd ?? NET_IRQFD_DEFAULT) ? irqfds?.(interrupting) : undefined,
      helper,
      netFd: b.fd,
      device: { mac: this.mac, mtu: this.opts.mtu, zeroCopy: this.opts.zeroCopy, batchIo: this.opts.batchIo },
      transmit: this.txOnIothread,
      txHandover: this.txHandover?.buffer,
      pollUs: this.opts.iothreadPollUs ?? NET_IOTHREAD_POLL_US,
      refillWaitUs: this.opts.iothreadRefillUs ?? NET_IOTHREAD_REFILL_US,
      ackedFeatures: this.ackedFeatures,
      queueMaxSizes: [...this.queueMaxSizes],
      layouts: act.queues.map((q) => (q ? { ...q.layout } : null)),
    });
    // The I/O thread polls the descriptor itself: the main thread's waker
    // stops kicking us for it, and a frame this thread read but could not
    // place (before a reset), and any read with it, is dropped, as a NIC's
    // reset drops it: the thread reads the descriptor from here on.
    disarmFdWaker(new Int32Array(b.wake));
    if (this.port?.dropHeld) this.port.dropHeld();
    else this.port?.consume();
    this.releaseOffload = release;
    return onThread.map((on) => (on ? this.iothread!.notifyFd : undefined));
  }

  /** NotifyOffload: the I/O thread is still loading. */
  offloadStarting(): boolean { return this.iothread?.starting ?? false; }

  /** The I/O thread never took the queues: notifies come here again (the
   * ioeventfds go), and this thread serves both queues. */
  private iothreadFallback(): void {
    const why = this.iothread?.startError() || 'no reason given';
    process.stderr.write(`bhyve: warning: virtio-net: I/O thread could not start (${why}); the device thread serves the queues\n`);
    this.releaseOffload();
    this.stopIothread();
    this.queueNotify(VTNET_TXQ);
    this.queueNotify(VTNET_RXQ);
  }

  private stopIothread(): void {
    this.releaseOffload = () => {};
    this.txOnIothread = false;
    this.txRoute = undefined;
    this.offloaded.handovers += this.txHandover?.handovers ?? 0;
    this.txHandover = undefined;
    const t = this.iothread;
    if (!t) return;
    t.stop();
    this.offloaded.rxFrames += t.rxFrames;
    this.offloaded.txFrames += t.txFrames;
    this.offloaded.wakeups += t.wakeups;
    this.iothread = undefined;
    // The descriptor is this thread's again: the main thread watches it.
    if (this.backend) armFdWaker(new Int32Array(this.backend.wake));
  }

  /** Which thread moved the frames, and how notifies reached it. */
  counters(): Record<string, number> {
    const t = this.iothread;
    return {
      'frames received on the device thread': this.stats.rxFrames,
      'frames sent on the device thread': this.stats.txFrames,
      'frame batches written on the device thread': this.stats.txBatches,
      'frames received on the I/O thread': this.offloaded.rxFrames + (t?.rxFrames ?? 0),
      'frames sent on the I/O thread': this.offloaded.txFrames + (t?.txFrames ?? 0),
      'I/O thread wakeups': this.offloaded.wakeups + (t?.wakeups ?? 0),
      'notifies forwarded to the I/O thread': this.offloaded.forwarded,
      'transmit queue hand-overs': this.offloaded.handovers + (this.txHandover?.handovers ?? 0),
      'transmit notifies routed to the I/O thread': this.offloaded.routed,
    };
  }

  /** Host frames may have arrived (the main thread kicked us), or the I/O
   * thread asked for interrupts or failed. */
  poll(): void {
    if (!this.activated || this.needsResetReason !== undefined) return;
    const t = this.iothread;
    if (t) {
      if (t.failedToStart) { this.iothreadFallback(); return; }
      const h = this.txHandover;
      if (h && this.txRoute && h.takeExitRouteRequest()) {
        // The thread let the queue go to the exit: its notifies come here
        // again; one that reached the thread's eventfd before is looked at
        // there once more.
        this.txRoute.toExit(VTNET_TXQ);
        h.setNotifiesToThread(false);
        forwardTransmit(t, h);
      }
      const bits = t.takeInterrupts();
      for (let i = 0; i < 2; i++) {
        if (bits & (1 << i)) { this.stats.interrupts++; this.activationRef?.interrupt.queue(i); }
      }
      const reason = t.brokenReason();
      if (reason !== undefined) this.fail(new VirtqueueError(reason));
      return;
    }
    this.queueNotify(VTNET_RXQ);
  }

  protected processQueue(index: number, queue: Virtqueue): void {
    const t = this.iothread;
    if (t && (index === VTNET_RXQ || this.txOnIothread)) {
      if (!t.failedToStart) { this.offloaded.forwarded++; t.notify(); return; }
      this.iothreadFallback();
      return;
    }
    if (index === VTNET_RXQ) this.receive(queue);
    else if (index === VTNET_TXQ) {
      if (t && this.txHandover) this.transmitSwitched(queue, t, this.txHandover);
      else if (this.txHandoverThread) this.transmitOnThread(queue, this.txHandoverThread);
      else this.transmit(queue);
    }
  }

  /** iothread_tx=switch, the device thread's side: send when the queue is
   * ours, else hand the notify to the I/O thread. */
  private transmitSwitched(queue: Virtqueue, t: NetIothread, h: TxHandover): void {
    if (t.failedToStart) { this.iothreadFallback(); return; }
    if (!h.deviceTake(queue)) {
      this.offloaded.forwarded++;
      forwardTransmit(t, h);
      // The thread has the queue where it belongs: its notifies go there
      // from now on, without stopping the vCPU.
      if (this.txRoute && h.shouldRouteToThread() && this.txRoute.toEventfd(VTNET_TXQ, t.notifyFd)) {
        h.setNotifiesToThread(true);
        this.offloaded.routed++;
      }
      return;
    }
    let ok = false;
    try {
      h.addTx(this.transmit(queue));
      ok = true;
    } finally {
      // A queue that broke goes nowhere (the device needs a reset).
      h.release(queue, TX_EXIT_BUSY, ok && t.state === IOTHREAD_STATE.RUNNING);
    }
    // A notify that went to the thread while this side sent was refused
    // there (EXIT_BUSY): its chain is still pending.
    let left = 0;
    try { left = h.notifiesToThread ? queue.pending() : 0; } catch { left = 1; /* the thread reports the ring */ }
    if (left > 0) forwardTransmit(t, h);
  }

  /** iothread_tx=switch, the I/O thread's side. */
  private transmitOnThread(queue: Virtqueue, h: TxHandover): void {
    if (!h.threadTake(queue, () => queue.pending())) return;
    h.addTx(this.transmit(queue));
    if (h.release(queue, TX_THREAD, true) !== TX_THREAD && h.requestExitRoute()) this.kickDeviceThread?.();
  }

  // ---- TX ----

  /** Sends what the queue holds; returns the bytes sent. */
  private transmit(queue: Virtqueue): number {
    const chain = this.scratchChain;
    const batch = this.txBatch;
    let done = 0;
    let bytes = 0;
    // No notifies while the queue is being drained (QEMU's virtio-net does
    // the same): with the I/O thread the driver runs meanwhile, and each
    // notify would cost it an exit and this thread a wake-up for chains it
    // takes anyway. enableNotification() asks again once the queue is empty.
    queue.disableNotification();
    try {
      do {
        while (queue.pop(chain) !== null) {
          bytes += this.transmitChain(queue, chain, batch);
          done++;
        }
        if (batch) bytes += this.flushTx(queue, batch);
      } while (queue.enableNotification());
    } catch (e) {
      // A broken ring: the device needs a reset; frames batched before the
      // bad chain go nowhere (its chains are never returned either).
      batch?.discard();
      throw e;
    }
    if (done > 0) this.signal(VTNET_TXQ, queue);
    return bytes;
  }

  /** Sends the frame of `chain`, or queues it in `batch` (its chain goes
   * back at the flush); returns the bytes sent meanwhile. */
  private transmitChain(queue: Virtqueue, chain: DescriptorChain, batch: FrameBatch | undefined): number {
    const len = chain.readableLength - this.hdrLen;
    let bytes = 0;
    if (len >= ETHER_HDR_LEN && len <= VTNET_MAX_PKT_LEN && this.port) {
      const views = chain.readableViews(this.hdrLen, len, this.txViews);
      if (batch) {
        if (batch.full(views.length)) bytes += this.flushTx(queue, batch);
        if (batch.add(views)) {
          this.txHeads[batch.frames - 1] = chain.head;
          emptyArray(views);
          return bytes;
        }
        // Not in a mapping of ours (a test's plain memory): sent here,
        // after the frames before it.
        bytes += this.flushTx(queue, batch);
      }
      if (this.port.send(views)) {
        this.stats.txFrames++;
        this.stats.txBytes += len;
        bytes += len;
      } else {
        this.stats.txDropped++;
      }
      emptyArray(views);
    } else {
      // Nonsensical (no room for a header and an Ethernet header), or no
      // backend: dropped, the chain goes back (bhyve's iov_trim_hdr).
      this.stats.txDropped++;
    }
    queue.pushUsed(chain.head, 0);
    return bytes;
  }

  /** Writes the batched frames and hands their chains back, in the order
   * they were popped; returns the bytes sent. */
  private flushTx(queue: Virtqueue, batch: FrameBatch): number {
    const n = batch.flush();
    if (n > 0) this.stats.txBatches++;
    const results = batch.results;
    let bytes = 0;
    for (let i = 0; i < n; i++) {
      const r = results[i];
      if (r >= 0) {
        this.stats.txFrames++;
        this.stats.txBytes += r;
        bytes += r;
      } else {
        // EIO while the interface is down, ENOBUFS...: dropped, as a NIC would.
        this.stats.txDropped++;
      }
      queue.pushUsed(this.txHeads[i], 0);
    }
    return bytes;
  }

  // ---- RX ----

  private takeChain(queue: Virtqueue): DescriptorChain | null {
    const c = this.spare.pop() ?? new DescriptorChain();
    if (queue.pop(c) === null) { this.spare.push(c); return null; }
    return c;
  }

  private release(c: DescriptorChain): void {
    c.clear();
    this.spare.push(c);
  }

  /** Pops chains into the stash until they hold `need` bytes (one chain
   * without MRG_RXBUF): 'ok'; 'wait' when the driver has no more buffers
   * for now; 'never' when even a whole queue of its buffers cannot hold the
   * frame. */
  private gather(queue: Virtqueue, need: number): 'ok' | 'wait' | 'never' {
    for (;;) {
      if (!this.mergeable && this.stash.length >= 1) return 'ok';
      if (this.mergeable) {
        let have = 0;
        for (const c of this.stash) have += c.writableLength;
        if (have >= need) return 'ok';
        if (this.stash.length >= queue.size) return 'never';
      }
      let c = this.takeChain(queue);
      if (c === null) {
        // Out of buffers: ask for a notification, then look once more.
        if (!queue.enableNotification()) return 'wait';
        c = this.takeChain(queue);
        if (c === null) return 'wait';
      }
      this.stash.push(c);
    }
  }

  /** Hands a stashed chain back unused (length 0). */
  private returnEmpty(queue: Virtqueue): void {
    const c = this.stash.shift()!;
    queue.pushUsed(c.head, 0);
    this.release(c);
  }

  /** Reads a frame from the backend straight into the first stashed (or
   * next available) chain when that chain can hold the largest frame the
   * backend can deliver: no copy through a bounce buffer. 'copy' when this
   * cannot be done now (no chain, a smaller chain, a frame already read):
   * the bounce-buffer path takes over, with its own out-of-buffers logic. */
  private receiveDirect(queue: Virtqueue, port: NetPort): 'done' | 'none' | 'copy' {
    if (this.stash.length === 0) {
      const c = this.takeChain(queue);
      if (c === null) return 'copy';
      this.stash.push(c);
    }
    const c = this.stash[0];
    if (c.writableLength < this.hdrLen + TAP_READ_BYTES) return 'copy';
    const views = c.writableViews(this.hdrLen, TAP_READ_BYTES, this.rxViews);
    const n = port.readInto!(views);
    emptyArray(views);
    if (n < 0) return 'copy';
    if (n === 0) return 'none';
    const hdr = this.hdr;
    hdr.fill(0);
    if (this.hdrLen === 12) hdr[10] = 1; // num_buffers
    c.copyToWritable(0, hdr.subarray(0, this.hdrLen));
    queue.pushUsed(c.head, this.hdrLen + n);
    this.release(this.stash.shift()!);
    this.stats.rxFrames++;
    this.stats.rxBytes += n;
    return 'done';
  }

  private receive(queue: Virtqueue): void {
    const port = this.port;
    let used = 0;
    let starved = false;
    if (port) {
      const direct = (this.opts.zeroCopy ?? NET_ZEROCOPY_DEFAULT) && port.readInto !== undefined;
      for (;;) {
        if (direct) {
          const r = this.receiveDirect(queue, port);
          if (r === 'none') break;
          if (r === 'done') { used++; continue; }
        }
        const frame = port.peek();
        if (frame === null) break;
        const need = this.hdrLen + frame.length;
        const g = this.gather(queue, need);
        if (g === 'wait') { starved = true; break; }
        if (g === 'never') {
          // The driver's buffers can never hold this frame: drop it.
          while (this.stash.length > 0) { this.returnEmpty(queue); used++; }
          this.stats.rxDropped++;
          port.consume();
          continue;
        }
        if (this.stash[0].writableLength < this.hdrLen) {
          // No room for the header in the first buffer: that buffer is
          // nonsensical; give it back empty and try the frame again.
          this.returnEmpty(queue);
          used++;
          continue;
        }
        used += this.deliver(queue, frame, need);
        port.consume();
      }
    }
    // As QEMU and bhyve do: the driver's receive notifications are wanted
    // only while a frame waits for buffers (gather() enabled them then).
    // While buffers are on hand, frames arriving drive receive() and a kick
    // per refilled buffer would be an exit per frame.
    if (!starved) queue.disableNotification();
    if (used > 0) this.signal(VTNET_RXQ, queue);
  }

  /** Writes header + frame into the stashed chains; returns the number of
   * used entries published. */
  private deliver(queue: Virtqueue, frame: Uint8Array, need: number): number {
    // The common case, one buffer that holds header and frame (either
    // mode): written in place, without the segment walks below.
    const first = this.stash[0].writable[0];
    if (first !== undefined && first.length >= need) {
      const c = this.stash[0];
      first.fill(0, 0, this.hdrLen);
      if (this.hdrLen === 12) first[10] = 1; // num_buffers
      first.set(frame, this.hdrLen);
      queue.pushUsed(c.head, need);
      this.release(this.stash.shift()!);
      this.stats.rxFrames++;
      this.stats.rxBytes += frame.length;
      return 1;
    }
    const hdr = this.hdr;
    hdr.fill(0);
    if (!this.mergeable) {
      const c = this.stash[0];
      if (c.writableLength < need) {
        // A buffer too small for the frame: the frame is dropped and the
        // buffer returned empty.
        this.stats.rxDropped++;
        this.returnEmpty(queue);
        return 1;
      }
      if (this.hdrLen === 12) hdr[10] = 1; // num_buffers
      c.copyToWritable(0, hdr.subarray(0, this.hdrLen));
      c.copyToWritable(this.hdrLen, frame);
      queue.pushUsed(c.head, need);
      this.release(this.stash.shift()!);
      this.stats.rxFrames++;
      this.stats.rxBytes += frame.length;
      return 1;
    }
    // Mergeable: count the chains the frame takes, then fill them; the
    // header (num_buffers = n) goes at the start of the first.
    let n = 0;
    let left = need;
    while (left > 0) { left -= Math.min(left, this.stash[n].writableLength); n++; }
    hdr[10] = n & 0xff;
    hdr[11] = (n >> 8) & 0xff;
    let pos = 0; // position in header + frame
    for (let i = 0; i < n; i++) {
      const c = this.stash[i];
      const take = Math.min(c.writableLength, need - pos);
      let off = 0;
      if (i === 0) {
        c.copyToWritable(0, hdr.subarray(0, this.hdrLen));
        off = this.hdrLen;
      }
      if (take > off) {
        const fStart = pos + off - this.hdrLen;
        c.copyToWritable(off, frame.subarray(fStart, fStart + (take - off)));
      }
      pos += take;
      queue.pushUsed(c.head, take);
    }
    for (let i = 0; i < n; i++) this.release(this.stash.shift()!);
    this.stats.rxFrames++;
    this.stats.rxBytes += frame.length;
    return n;
  }

  private signal(index: number, queue: Virtqueue): void {
    if (queue.needsInterrupt()) {
      this.stats.interrupts++;
      this.activationRef?.interrupt.queue(index);
    }
  }
}

/** Builds the virtio-net model of slot `node` on the device thread, with
 * the tap the main thread opened for it (ctx.hostPorts). */
export function createVirtioNet(
  ctx: { config: ConfigTree; hostPorts?: Pick<HostPortLookup, 'net'> }, node: string, slot: number, func: number,
): VirtioNet {
  const opts = netOptionsFromConfig(ctx.config, node, slot, func);
  let port: NetPort | undefined;
  if (ctx.config.get(`${node}.backend`) !== undefined && ctx.hostPorts) {
    const t = ctx.hostPorts.net(node);
    if (t === undefined) throw new ConfigError(`virtio-net at ${node}: its backend was not opened`);
    port = attachNetBackend(t, opts.batchIo ?? NET_BATCHIO_DEFAULT);
    return new VirtioNet(opts, port, t);
  }
  return new VirtioNet(opts, port);
}

/** PCI class bhyve gives virtio-net (PCIC_NETWORK). */
const PCIC_NETWORK = 0x02;

/** The emulation of its record (virtio-net-record.ts). */
export const virtioNetModel: PciDeviceModel = {
  create: (ctx, s, chipset) => createVirtioPci(ctx, s, chipset, 'virtio-net', PCIC_NETWORK,
    () => createVirtioNet(ctx, s.node, s.slot, s.func)),
};
