// virtio-input (virtio spec 5.8), bhyve's pci_virtio_input.c: the events of
// a host evdev device passed through to the guest.
//
//   -s 7,virtio-input,/dev/input/eventN
//
// PCI: 1af4:1052 revision 1 (the modern id bhyve uses), subsystem
// 108e:1100, class 09/80 (input, other), as bhyve sets them; the modern
// virtio interface (virtio-input has no legacy PCI id).
//
// Queues (64 entries each, VTINPUT_RINGSZ): 0 events to the guest, 1
// status from the guest. Host events are gathered until EV_SYN and then
// handed over together, one 8-byte struct virtio_input_event per buffer; a
// group that does not fit in the buffers the guest has made available is
// dropped whole (bhyve: "not enough available descriptors"). Events are
// read from the host only while the driver is running. Status events
// (LEDs) are written to the evdev, except EV_MSC (bhyve: a multi-touch
// device would otherwise echo its own frames back).
//
// Config space (struct virtio_input_config, 136 bytes): the guest writes
// select and subsel (bytes 0 and 1; writes elsewhere are ignored), and the
// next read asks the host device (EVIOCG* ioctls, bhyve's
// pci_vtinput_read_config): ID_NAME, ID_SERIAL (none: size 0), ID_DEVIDS,
// PROP_BITS, EV_BITS for EV_KEY, EV_REL, EV_ABS, EV_MSC, EV_SW and EV_LED
// (size = up to the last non-zero byte; an empty map is "no answer"), and
// ABS_INFO of an axis. A question the device cannot answer reads as zeros,
// size included. One difference: bhyve's ABS_INFO tests the EV_ABS answer
// the wrong way round (it answers only for devices without EV_ABS); here
// a device with EV_ABS answers ABS_INFO, as the spec and QEMU do.
//
// Hostile guests: buffers shorter than an event are returned unused and
// end the group (its rest is dropped); a status buffer shorter than an
// event is returned unread; a broken ring puts the device in
// DEVICE_NEEDS_RESET (virtio-device.ts). The group of events waiting for
// EV_SYN is bounded (a device that never syncs cannot grow it).

import { ConfigError, type ConfigTree } from '../../config/tree.js';
import type { DeviceContext } from '../device.js';
import type { PciDeviceModel } from '../pci-device.js';
import { transportOf } from './virtio-input-record.js';
import { PCIR_SUBDEV_0, PCIR_SUBVEND_0 } from '../pci/config-space.js';
import {
  ABS_CNT, EV_ABS, EV_KEY, EV_LED, EV_MSC, EV_REL, EV_SW, EV_SYN, INPUT_PROP_CNT, KEY_CNT, LED_CNT, MSC_CNT, REL_CNT,
  SW_CNT, type InputEvent,
} from '../../sys/evdev.js';
import { VIRTIO_ID_INPUT } from './virtio-constants.js';
import { VirtioDeviceBase, type VirtioActivation } from './virtio-device.js';
import { VirtioPci, translatedDmaSpace } from './virtio-pci.js';
import type { Virtqueue } from './virtqueue.js';
import { attachInputBackend, type EvdevHost } from './input-backend.js';

export const VTINPUT_RINGSZ = 64;
export const VTINPUT_EVENTQ = 0;
export const VTINPUT_STATUSQ = 1;
export const VTINPUT_CONFIG_SIZE = 136;
export const VTINPUT_EVENT_SIZE = 8;
/** Events kept while waiting for EV_SYN; past this the group is dropped. */
export const VTINPUT_MAX_GROUP = 1024;

export const VTINPUT_CFG = {
  UNSET: 0x00, ID_NAME: 0x01, ID_SERIAL: 0x02, ID_DEVIDS: 0x03, PROP_BITS: 0x10, EV_BITS: 0x11, ABS_INFO: 0x12,
} as const;

/** PCI identity bhyve gives it (virtio.h, pci_vtinput_init). */
export const VIRTIO_INPUT_SUBVENDOR = 0x108e;
export const VIRTIO_INPUT_SUBDEVICE = 0x1100;
const PCIC_INPUTDEV = 0x09;
const PCIS_INPUTDEV_OTHER = 0x80;

/** Bytes of the evdev bitmap of each event type bhyve answers (a whole
 * number of longs, as evdev's ioctls fill them). */
const BITMAP_BYTES: Readonly<Record<number, number>> = {
  [EV_KEY]: longs(KEY_CNT), [EV_REL]: longs(REL_CNT), [EV_ABS]: longs(ABS_CNT), [EV_MSC]: longs(MSC_CNT),
  [EV_SW]: longs(SW_CNT), [EV_LED]: longs(LED_CNT),
};
function longs(bits: number): number { return Math.ceil(bits / 64) * 8; }

export class VirtioInput extends VirtioDeviceBase {
  readonly deviceType = VIRTIO_ID_INPUT;
  readonly queueMaxSizes: readonly number[] = [VTINPUT_RINGSZ, VTINPUT_RINGSZ];
  protected readonly ownFeatures = 0n;
  protected readonly config = new Uint8Array(VTINPUT_CONFIG_SIZE);
  private readonly cfgView = new DataView(this.config.buffer);
  /** The answer to the current select/subsel is in `config`. */
  private valid = false;
  private group: InputEvent[] = [];
  private activationRef: VirtioActivation | undefined;
  readonly counts = { eventsDelivered: 0, eventsDropped: 0, statusWritten: 0, statusFailed: 0, badBuffers: 0 };
  private readonly one = new Uint8Array(VTINPUT_EVENT_SIZE);
  private readonly oneView = new DataView(this.one.buffer);

  constructor(private readonly host: EvdevHost) {
    super();
  }

  // ---- config space ----

  readConfig(offset: number, data: Uint8Array): void {
    if (!this.valid) {
      if (!this.answer()) { data.fill(0); return; }
      this.valid = true;
    }
    super.readConfig(offset, data);
  }

  writeConfig(offset: number, data: Uint8Array): void {
    if (offset < 0 || offset + data.length > 2) return; // only select and subsel are writable
    this.config.set(data, offset);
    this.valid = false;
  }

  /** Fills size and the union for select/subsel from the host; false when
   * the host has no answer. */
  private answer(): boolean {
    const select = this.config[0];
    const subsel = this.config[1];
    const u = this.config.subarray(8);
    u.fill(0);
    let size = 0;
    switch (select) {
      case VTINPUT_CFG.UNSET:
        break;
      case VTINPUT_CFG.ID_NAME: {
        const name = this.host.name();
        if (name === undefined) return false;
        const n = Math.min(name.length, u.length);
        u.set(name.subarray(0, n));
        size = n;
        break;
      }
      case VTINPUT_CFG.ID_SERIAL:
        break; // bhyve: serial isn't supported
      case VTINPUT_CFG.ID_DEVIDS: {
        const id = this.host.id();
        if (id === undefined) return false;
        this.cfgView.setUint16(8, id.bustype, true);
        this.cfgView.setUint16(10, id.vendor, true);
        this.cfgView.setUint16(12, id.product, true);
        this.cfgView.setUint16(14, id.version, true);
        size = 8;
        break;
      }
      case VTINPUT_CFG.PROP_BITS: {
        const map = u.subarray(0, longs(INPUT_PROP_CNT));
        if (!this.host.props(map) || (size = usedBytes(map)) === 0) return false;
        break;
      }
      case VTINPUT_CFG.EV_BITS: {
        const len = BITMAP_BYTES[subsel];
        if (len === undefined) return false;
        const map = u.subarray(0, len);
        if (!this.host.bits(subsel, map) || (size = usedBytes(map)) === 0) return false;
        break;
      }
      case VTINPUT_CFG.ABS_INFO: {
        if (subsel >= ABS_CNT) return false;
        const axes = new Uint8Array(longs(ABS_CNT));
        if (!this.host.bits(EV_ABS, axes) || (axes[subsel >> 3] & (1 << (subsel & 7))) === 0) return false;
        const a = this.host.abs(subsel);
        if (a === undefined) return false;
        this.cfgView.setInt32(8, a.min, true);
        this.cfgView.setInt32(12, a.max, true);
        this.cfgView.setInt32(16, a.fuzz, true);
        this.cfgView.setInt32(20, a.flat, true);
        this.cfgView.setInt32(24, a.res, true);
        size = 20;
        break;
      }
      default:
        return false;
    }
    this.config[2] = size;
    return true;
  }

  // ---- queues ----

  protected processQueue(index: number, queue: Virtqueue): void {
    // Event buffers are only taken when host events come (bhyve's
    // pci_vtinput_notify_eventq does nothing).
    if (index !== VTINPUT_STATUSQ) return;
    const chain = this.scratchChain;
    do {
      while (queue.pop(chain) !== null) {
        if (chain.copyFromReadable(0, this.one) === VTINPUT_EVENT_SIZE) {
          const ev = { type: this.oneView.getUint16(0, true), code: this.oneView.getUint16(2, true), value: this.oneView.getInt32(4, true) };
          if (ev.type !== EV_MSC) {
            if (this.host.write(ev)) this.counts.statusWritten++;
            else this.counts.statusFailed++;
          }
        } else {
          this.counts.badBuffers++;
        }
        queue.pushUsed(chain.head, 0);
      }
    } while (queue.enableNotification());
    this.signalUsed(index, queue);
  }

  /** Host events arrived (the driver is running): gather them and hand
   * each complete group to the guest. */
  poll(): void {
    try {
      this.takeHostEvents();
    } catch (e) {
      this.fail(e); // a broken event ring: DEVICE_NEEDS_RESET
    }
  }

  private takeHostEvents(): void {
    for (const ev of this.host.readEvents()) {
      if (this.group.length >= VTINPUT_MAX_GROUP) {
        this.counts.eventsDropped += this.group.length;
        this.group = [];
      }
      this.group.push(ev);
      if (ev.type === EV_SYN) this.sendGroup();
    }
  }

  private sendGroup(): void {
    const group = this.group;
    this.group = [];
    const queue = this.activeQueue(VTINPUT_EVENTQ);
    if (queue === null || queue.pending() < group.length) {
      this.counts.eventsDropped += group.length;
      return;
    }
    const chain = this.scratchChain;
    let i = 0;
    for (; i < group.length; i++) {
      if (queue.pop(chain) === null) break;
      if (chain.writableLength < VTINPUT_EVENT_SIZE) {
        this.counts.badBuffers++;
        queue.pushUsed(chain.head, 0);
        break;
      }
      const ev = group[i];
      this.oneView.setUint16(0, ev.type, true);
      this.oneView.setUint16(2, ev.code, true);
      this.oneView.setInt32(4, ev.value, true);
      chain.copyToWritable(0, this.one);
      queue.pushUsed(chain.head, VTINPUT_EVENT_SIZE);
      this.counts.eventsDelivered++;
    }
    this.counts.eventsDropped += group.length - i;
    this.signalUsed(VTINPUT_EVENTQ, queue);
  }

  activate(activation: VirtioActivation): void {
    super.activate(activation);
    this.activationRef = activation;
    // Host events that came while the driver was not running stayed with
    // the host device, and the waker waits to be re-armed: take them now.
    this.poll();
  }

  private activeQueue(index: number): Virtqueue | null {
    return this.needsResetReason === undefined ? this.activationRef?.queues[index] ?? null : null;
  }

  protected onReset(): void {
    this.activationRef = undefined;
    this.group = [];
    this.valid = false;
    this.config.fill(0);
  }

  counters(): Record<string, number> {
    return {
      'events delivered': this.counts.eventsDelivered, 'events dropped': this.counts.eventsDropped,
      'status events written': this.counts.statusWritten, 'status events refused': this.counts.statusFailed,
      'bad buffers': this.counts.badBuffers,
    };
  }
}

/** Bytes of `map` up to its last non-zero one. */
function usedBytes(map: Uint8Array): number {
  for (let i = map.length - 1; i >= 0; i--) if (map[i] !== 0) return i + 1;
  return 0;
}

/** The emulation of its record (virtio-input-record.ts). */
export const virtioInputModel: PciDeviceModel = {
  create: (ctx, s, chipset) => {
    const transport = transportOf(ctx.config, s.node);
    const t = ctx.hostPorts?.input?.(s.node);
    if (t === undefined) throw new Error(`no host device was opened for ${s.node}`);
    const fn = new VirtioPci(ctx, new VirtioInput(attachInputBackend(t)), {
      emulation: 'virtio-input', classCode: PCIC_INPUTDEV, subclass: PCIS_INPUTDEV_OTHER, msix: chipset.msix, transport,
      dma: translatedDmaSpace(chipset, s),
    });
    fn.cfg.set16(PCIR_SUBVEND_0, VIRTIO_INPUT_SUBVENDOR);
    fn.cfg.set16(PCIR_SUBDEV_0, VIRTIO_INPUT_SUBDEVICE);
    return fn;
  },
};
