// The transport-independent virtio device interface (the role of
// Firecracker's / cloud-hypervisor's VirtioDevice trait and of bhyve's
// struct virtio_consts). A transport (virtio-pci modern or legacy, later
// virtio-mmio) owns the device status register, feature negotiation windows,
// queue registers, ISR and MSI-X vectors; the device model owns its feature
// offer, its config space and what happens on each queue.
//
// Lifecycle the transport drives:
//   1. read deviceFeatures (plus VIRTIO_TRANSPORT_FEATURES it adds itself),
//      readConfig/writeConfig at any time;
//   2. driver writes features, sets FEATURES_OK -> ackFeatures(driverFeatures)
//      (the transport rejects FEATURES_OK when it returns false);
//   3. DRIVER_OK -> build one Virtqueue per enabled queue (createQueues) and
//      activate({ mem, queues, interrupt, needsReset });
//   4. queue notify (doorbell / ioeventfd) -> queueNotify(index);
//   5. status 0 written -> reset().
// When the device calls `needsReset(reason)` the transport sets
// DEVICE_NEEDS_RESET in the device status and raises a config-change
// interrupt; the device ignores its queues until reset().

import type { GuestMemory } from '../../sys/guest-memory.js';
import type { DmaSpace } from '../iommu/dma-space.js';
import {
  VIRTIO_DEVICE_NAMES, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, VIRTIO_TRANSPORT_FEATURES,
  featureBit, hasFeature,
} from './virtio-constants.js';
import { DescriptorChain, Virtqueue, VirtqueueError, type VirtqueueLayout } from './virtqueue.js';

/** How a device raises interrupts; the transport maps them to ISR bits and
 * MSI-X vectors (or INTx). */
export interface VirtioInterrupt {
  /** Used-buffer notification for queue `index`. */
  queue(index: number): void;
  /** Configuration-change notification. */
  config(): void;
}

export interface VirtioActivation {
  readonly mem: GuestMemory;
  /** One entry per queue the device declared; null for a queue the driver
   * left disabled. */
  readonly queues: ReadonlyArray<Virtqueue | null>;
  readonly interrupt: VirtioInterrupt;
  /** The device can no longer operate until reset: the transport sets
   * DEVICE_NEEDS_RESET and raises a config-change interrupt. */
  needsReset(reason: string): void;
}

export interface VirtioDevice {
  /** Virtio device id (VIRTIO_ID_*). */
  readonly deviceType: number;
  /** Largest size of each queue; the length is the number of queues. */
  readonly queueMaxSizes: readonly number[];
  /** Features the device offers (includes VIRTIO_F_VERSION_1). */
  readonly deviceFeatures: bigint;
  /** Features accepted in the last successful ackFeatures. */
  readonly ackedFeatures: bigint;
  /** Bytes of device-specific configuration space. */
  readonly configSize: number;
  /** Driver's feature choice at FEATURES_OK; false refuses it (a feature
   * the device depends on is missing). Bits never offered are dropped. */
  ackFeatures(driverFeatures: bigint): boolean;
  /** Reads config space [offset, offset+data.length); bytes past the end
   * read as zero. */
  readConfig(offset: number, data: Uint8Array): void;
  writeConfig(offset: number, data: Uint8Array): void;
  activate(activation: VirtioActivation): void;
  readonly activated: boolean;
  /** The driver notified queue `index`. Never throws: a broken chain puts
   * the device into the needs-reset state instead. */
  queueNotify(index: number): void;
  /** Set after the device asked for a reset; the reason, for diagnostics. */
  readonly needsResetReason: string | undefined;
  /** Back to the state after construction (status 0 written). */
  reset(): void;
  /** Releases host resources (files, sockets). */
  close?(): void;
  /** Host input may have arrived (the main thread kicked the device
   * thread); called only while the driver is running (DRIVER_OK, no
   * DEVICE_NEEDS_RESET). */
  poll?(): void;
  /** Device counters for bhyvectl --get-stats (e.g. which thread served
   * the requests), by description. */
  counters?(): Record<string, number>;
}

/** Every feature the transport may offer for `device`. */
export function offeredFeatures(device: VirtioDevice): bigint {
  return device.deviceFeatures | VIRTIO_TRANSPORT_FEATURES;
}

/** Builds the activation queues from the transport's queue registers
 * (addresses translated through `dma` when the function is behind the
 * IOMMU); throws VirtqueueError when the driver programmed an invalid
 * queue or the IOMMU refused its rings. */
export function createQueues(
  mem: GuestMemory, layouts: ReadonlyArray<VirtqueueLayout | null>, ackedFeatures: bigint,
  maxSizes: readonly number[], dma?: DmaSpace,
): Array<Virtqueue | null> {
  const eventIdx = hasFeature(ackedFeatures, VIRTIO_RING_F_EVENT_IDX);
  const indirect = hasFeature(ackedFeatures, VIRTIO_RING_F_INDIRECT_DESC);
  return layouts.map((layout, index) => {
    if (layout === null) return null;
    const max = maxSizes[index];
    if (max === undefined) throw new VirtqueueError(`queue ${index} does not exist`);
    if (layout.size > max) throw new VirtqueueError(`queue ${index}: size ${layout.size} exceeds the maximum ${max}`);
    return new Virtqueue(mem, layout, { eventIdx, indirect, index, dma });
  });
}

/** Common plumbing for device models: feature bookkeeping, config-space
 * byte access over a buffer the device fills, activation state, and a
 * notify path that turns any exception into the needs-reset state. */
export abstract class VirtioDeviceBase implements VirtioDevice {
  abstract readonly deviceType: number;
  abstract readonly queueMaxSizes: readonly number[];
  /** Device-specific feature bits; VIRTIO_F_VERSION_1 is added. */
  protected abstract readonly ownFeatures: bigint;
  /** Device-specific configuration space, little-endian. */
  protected abstract readonly config: Uint8Array;
  /** Handles a notify for an enabled queue. May throw: errors become
   * needs-reset. */
  protected abstract processQueue(index: number, queue: Virtqueue): void;

  private acked = 0n;
  private activation: VirtioActivation | undefined;
  private brokenReason: string | undefined;
  /** A reusable chain for devices that finish each chain before popping the
   * next. */
  protected readonly scratchChain = new DescriptorChain();

  get deviceFeatures(): bigint { return this.ownFeatures | featureBit(VIRTIO_F_VERSION_1); }
  get ackedFeatures(): bigint { return this.acked; }
  get configSize(): number { return this.config.length; }
  get activated(): boolean { return this.activation !== undefined; }
  get needsResetReason(): string | undefined { return this.brokenReason; }
  protected get mem(): GuestMemory | undefined { return this.activation?.mem; }
  /** The activated queues (null: left disabled by the driver). */
  protected get queues(): ReadonlyArray<Virtqueue | null> | undefined { return this.activation?.queues; }

  ackFeatures(driverFeatures: bigint): boolean {
    this.acked = driverFeatures & offeredFeatures(this);
    return true;
  }

  protected hasAcked(bit: number): boolean { return hasFeature(this.acked, bit); }

  readConfig(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      const o = offset + i;
      data[i] = o >= 0 && o < this.config.length ? this.config[o] : 0;
    }
  }

  /** Config writes are ignored unless a device overrides this. */
  writeConfig(_offset: number, _data: Uint8Array): void {}

  activate(activation: VirtioActivation): void {
    this.activation = activation;
    this.brokenReason = undefined;
  }

  queueNotify(index: number): void {
    const act = this.activation;
    if (act === undefined || this.brokenReason !== undefined) return;
    const queue = act.queues[index];
    if (queue === undefined || queue === null) return;
    try {
      this.processQueue(index, queue);
    } catch (e) {
      this.fail(e);
    }
  }

  /** Enters the needs-reset state (once) and tells the transport. */
  protected fail(e: unknown): void {
    if (this.brokenReason !== undefined) return;
    const reason = e instanceof VirtqueueError ? e.message
      : `${VIRTIO_DEVICE_NAMES[this.deviceType] ?? `virtio device type ${this.deviceType}`}: ${e instanceof Error ? e.message : String(e)}`;
    this.brokenReason = reason;
    try {
      this.activation?.needsReset(reason);
    } catch {
      // The transport's own failure must not escape into the vCPU loop.
    }
  }

  /** Raises the used-buffer interrupt for `index` when the driver wants it. */
  protected signalUsed(index: number, queue: Virtqueue): void {
    if (queue.needsInterrupt()) this.activation?.interrupt.queue(index);
  }

  reset(): void {
    this.acked = 0n;
    this.activation = undefined;
    this.brokenReason = undefined;
    this.onReset();
  }

  /** Device-specific reset work. */
  protected onReset(): void {}
}
