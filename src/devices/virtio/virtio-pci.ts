// The virtio PCI transport (virtio 1.x spec section 4.1) around a
// transport-independent VirtioDevice.
//
// Interfaces, chosen by `transport` in the slot's config node:
//   - "transitional" (default): the legacy I/O BAR bhyve's virtio.c offers
//     (BAR 0, the layout below) plus the modern capabilities; device id
//     0x1000 + n (bhyve's VIRTIO_DEV_*), revision 0;
//   - "modern": modern capabilities only, device id 0x1040 + type, rev 1;
//   - "legacy": the legacy I/O BAR only, as bhyve itself.
// Both: vendor 0x1af4, subsystem vendor 0x1af4, subsystem id = device type.
//
// BARs: 0 legacy I/O registers; 1 MSI-X table + PBA (32-bit memory, as
// bhyve's vi_intr_init); 4 the modern structures (64-bit memory, 16 KiB):
//   0x0000 common configuration   0x1000 ISR status
//   0x2000 device configuration   0x3000 notifications (multiplier 4,
//                                        queue i at 0x3000 + 4*i)
// Capabilities: MSI-X (nvq + 1 vectors) unless virtio_msix=false (-W), MSI
// (1 message), then the vendor-specific virtio structures (common, notify,
// ISR, device, PCI configuration access). A legacy INTx line is always
// requested, as bhyve does ("legacy interrupts are mandatory").
//
// Legacy I/O registers (virtio 0.9.5, bhyve's virtio.h):
//   0x00 host features (32, R)   0x04 guest features (32)   0x08 queue PFN (32)
//   0x0c queue size (16, R)      0x0e queue select (16)     0x10 queue notify (16)
//   0x12 status (8)              0x13 ISR (8, read clears)
//   with MSI-X enabled: 0x14 config vector (16), 0x16 queue vector (16);
//   device configuration follows at 0x14, or 0x18 with MSI-X enabled.
//   A legacy queue is PFN*4096, size fixed at its maximum, rings laid out
//   with 4096-byte alignment.
//
// Interrupts: with MSI-X in use, a queue or config event goes to the vector
// the driver chose (none for VIRTIO_MSI_NO_VECTOR); otherwise the ISR bit is
// set and MSI message 0 is sent, or INTx asserted; reading ISR clears it and
// deasserts INTx. When the device reports it cannot go on (needsReset) the
// status gets DEVICE_NEEDS_RESET and a config interrupt is raised.
//
// Everything the guest writes is checked: out-of-range queue selects, sizes,
// vectors and offsets are ignored or read as zero, and queue addresses that
// are not guest RAM make activation fail into DEVICE_NEEDS_RESET.

import { ConfigError } from '../../config/tree.js';
import type { DeviceContext, HelperThreadData } from '../device.js';
import type { Chipset, PciSlot } from '../pci-device.js';
import { PCIR_CAP_PTR, PCIM_CMD_BUSMASTEREN, type PciCapability } from '../pci/config-space.js';
import { PciEmulFunction, type BarHandler } from '../pci/pci-emul.js';
import {
  VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_F_VERSION_1, VIRTIO_ID_9P, VIRTIO_ID_BALLOON, VIRTIO_ID_BLOCK,
  VIRTIO_ID_CONSOLE, VIRTIO_ID_NET, VIRTIO_ID_RNG, VIRTIO_ID_SCSI, VIRTIO_ISR_CONFIG, VIRTIO_ISR_QUEUE,
  VIRTIO_MSI_NO_VECTOR, VIRTIO_F_ACCESS_PLATFORM, featureBit, hasFeature,
} from './virtio-constants.js';
import type { DmaSpace } from '../iommu/dma-space.js';
import { pciEndpointId } from '../iommu/dma-space.js';
import { createQueues, offeredFeatures, type VirtioDevice, type VirtioInterrupt } from './virtio-device.js';
import type { Virtqueue, VirtqueueLayout } from './virtqueue.js';
import { QueueIrqfds, type QueueIrqfdChannel } from './queue-irqfd.js';
import { OffloadStartWatch } from './offload-start-watch.js';

export const VIRTIO_VENDOR = 0x1af4;
export const VIRTIO_PCI_MODERN_DEVICE_BASE = 0x1040;

/** Transitional device ids (bhyve's VIRTIO_DEV_*). */
export const VIRTIO_TRANSITIONAL_IDS: Readonly<Record<number, number>> = {
  [VIRTIO_ID_NET]: 0x1000,
  [VIRTIO_ID_BLOCK]: 0x1001,
  [VIRTIO_ID_BALLOON]: 0x1002,
  [VIRTIO_ID_CONSOLE]: 0x1003,
  [VIRTIO_ID_SCSI]: 0x1004,
  [VIRTIO_ID_RNG]: 0x1005,
  [VIRTIO_ID_9P]: 0x1009,
};

// Vendor capability types (spec 4.1.4).
export const VIRTIO_PCI_CAP_COMMON_CFG = 1;
export const VIRTIO_PCI_CAP_NOTIFY_CFG = 2;
export const VIRTIO_PCI_CAP_ISR_CFG = 3;
export const VIRTIO_PCI_CAP_DEVICE_CFG = 4;
export const VIRTIO_PCI_CAP_PCI_CFG = 5;
export const PCIY_VENDOR = 0x09;

// Modern BAR layout.
export const VIRTIO_MODERN_BAR = 4;
export const VIRTIO_MSIX_BAR = 1;
export const VIRTIO_LEGACY_BAR = 0;
export const MODERN_COMMON_OFF = 0x0000;
export const MODERN_ISR_OFF = 0x1000;
export const MODERN_DEVICE_OFF = 0x2000;
export const MODERN_NOTIFY_OFF = 0x3000;
export const MODERN_BAR_SIZE = 0x4000;
export const NOTIFY_OFF_MULTIPLIER = 4;
export const COMMON_CFG_SIZE = 0x38;

// Common configuration offsets (struct virtio_pci_common_cfg).
export const VIRTIO_PCI_COMMON_DFSELECT = 0x00;
export const VIRTIO_PCI_COMMON_DF = 0x04;
export const VIRTIO_PCI_COMMON_GFSELECT = 0x08;
export const VIRTIO_PCI_COMMON_GF = 0x0c;
export const VIRTIO_PCI_COMMON_MSIX = 0x10;
export const VIRTIO_PCI_COMMON_NUMQ = 0x12;
export const VIRTIO_PCI_COMMON_STATUS = 0x14;
export const VIRTIO_PCI_COMMON_CFGGENERATION = 0x15;
export const VIRTIO_PCI_COMMON_Q_SELECT = 0x16;
export const VIRTIO_PCI_COMMON_Q_SIZE = 0x18;
export const VIRTIO_PCI_COMMON_Q_MSIX = 0x1a;
export const VIRTIO_PCI_COMMON_Q_ENABLE = 0x1c;
export const VIRTIO_PCI_COMMON_Q_NOFF = 0x1e;
export const VIRTIO_PCI_COMMON_Q_DESCLO = 0x20;
export const VIRTIO_PCI_COMMON_Q_DESCHI = 0x24;
export const VIRTIO_PCI_COMMON_Q_AVAILLO = 0x28;
export const VIRTIO_PCI_COMMON_Q_AVAILHI = 0x2c;
export const VIRTIO_PCI_COMMON_Q_USEDLO = 0x30;
export const VIRTIO_PCI_COMMON_Q_USEDHI = 0x34;

// Legacy registers.
export const VIRTIO_PCI_HOST_FEATURES = 0x00;
export const VIRTIO_PCI_GUEST_FEATURES = 0x04;
export const VIRTIO_PCI_QUEUE_PFN = 0x08;
export const VIRTIO_PCI_QUEUE_NUM = 0x0c;
export const VIRTIO_PCI_QUEUE_SEL = 0x0e;
export const VIRTIO_PCI_QUEUE_NOTIFY = 0x10;
export const VIRTIO_PCI_STATUS = 0x12;
export const VIRTIO_PCI_ISR = 0x13;
export const VIRTIO_MSI_CONFIG_VECTOR = 0x14;
export const VIRTIO_MSI_QUEUE_VECTOR = 0x16;
export const VIRTIO_PCI_CONFIG_OFF = (msix: boolean): number => (msix ? 0x18 : 0x14);
export const VIRTIO_PCI_QUEUE_ADDR_SHIFT = 12;
export const VIRTIO_PCI_VRING_ALIGN = 4096;

export type VirtioPciTransport = 'transitional' | 'modern' | 'legacy';

/** A device model that takes its queue notifications on eventfds (served
 * by a helper thread): after activation the transport asks for one eventfd
 * per queue and registers each as a KVM ioeventfd on the queue's modern
 * notify address, so the guest's notify never exits to userspace. Notifies
 * that do reach the transport still go through queueNotify. */
export interface NotifyOffload {
  /** `release` removes the ioeventfds again (a helper that could not start:
   * the device takes its notifies back by exit). `irqfds`, where KVM
   * offers them, wires the named queues' interrupts straight to their
   * MSI-X vectors for the helper (queue-irqfd.ts); undefined when not.
   * `vectored` says per queue whether the driver gave it an MSI-X vector
   * (with MSI-X enabled) by the time it set DRIVER_OK. `route` moves a
   * queue's notifies between the exit and an eventfd while the driver runs
   * (the device thread only; until reset). `interruptible` says per queue
   * whether the device could interrupt the driver for it at all then (an
   * MSI-X vector; or, without MSI-X, MSI or INTx not disabled): a queue
   * without is one the driver polls. */
  startOffload(
    helper: HelperThreadData, release: () => void,
    irqfds?: (queues: ReadonlyArray<boolean>) => QueueIrqfdChannel | undefined,
    vectored?: ReadonlyArray<boolean>,
    route?: QueueNotifyRoute,
    interruptible?: ReadonlyArray<boolean>,
  ): Array<number | undefined> | undefined;
  /** True while the helper startOffload started is still loading: the
   * transport then calls the device's poll() now and then until it is not
   * (offload-start-watch.ts), so a helper that could not load, and so
   * could not ring the device thread, is still noticed. */
  offloadStarting?(): boolean;
}

/** A queue's notify address routed to an eventfd by KVM_IOEVENTFD (no
 * exit), or back to the exit, at run time. */
export interface QueueNotifyRoute {
  /** Routes queue `q`'s notifies to `fd`; false when KVM or the transport
   * cannot (a legacy transport: its notify register is shared). */
  toEventfd(q: number, fd: number): boolean;
  /** Back to the exit (a no-op when not routed). */
  toExit(q: number): void;
}

export interface VirtioPciOptions {
  /** bhyve emulation name, for pi_name ("virtio-blk"). */
  emulation: string;
  classCode: number;
  subclass: number;
  progIf?: number;
  /** MSI-X (default) or MSI only (virtio_msix=false, -W). */
  msix?: boolean;
  transport?: VirtioPciTransport;
  /** The function's DMA space when it is behind the IOMMU: the device
   * offers VIRTIO_F_ACCESS_PLATFORM, requires it, and its queues translate
   * every address (virtqueue.ts). Absent: guest physical addresses. */
  dma?: DmaSpace;
}

interface QueueRegs {
  size: number;
  msixVector: number;
  enabled: boolean;
  desc: number;
  avail: number;
  used: number;
}

function lo32(n: number): number { return (n % 0x100000000) >>> 0; }
function hi32(n: number): number { return Math.floor(n / 0x100000000) >>> 0; }
function ones(size: number): number { return size === 4 ? 0xffffffff : (1 << (8 * size)) - 1; }

/** Replaces bytes [off, off+size) of a `fsize`-byte field at `foff`. */
function mergeField(old: number, foff: number, fsize: number, off: number, size: number, value: number): number {
  let v = old;
  for (let i = 0; i < size; i++) {
    const b = off + i - foff;
    if (b < 0 || b >= fsize) continue;
    const byte = (value >>> (8 * i)) & 0xff;
    v = (v & ~(0xff << (8 * b))) | (byte << (8 * b));
  }
  return v >>> 0;
}

export class VirtioPci extends PciEmulFunction {
  readonly device: VirtioDevice;
  readonly transport: VirtioPciTransport;
  readonly useMsix: boolean;
  readonly dma: DmaSpace | undefined;
  private readonly queues: QueueRegs[];
  private status = 0;
  private isr = 0;
  private deviceFeatureSelect = 0;
  private driverFeatureSelect = 0;
  private driverFeatures = 0n;
  private configVector = VIRTIO_MSI_NO_VECTOR;
  private queueSelect = 0;
  private configGeneration = 0;
  private activeQueues: Array<Virtqueue | null> = [];
  /** Why the device last entered DEVICE_NEEDS_RESET. */
  lastError: string | undefined;
  private pciCfgCap: PciCapability | undefined;
  /** The look at a helper that is still loading (watchOffloadStart). */
  private startWatch: { watch: OffloadStartWatch; check: () => boolean } | undefined;
  /** ioeventfds registered for NotifyOffload, removed at reset. */
  private ioeventfds: Array<{ fd: number; addr: number }> = [];
  /** Queue notifies that reached this thread (an exit), not an ioeventfd. */
  private notifiesByExit = 0;
  /** The helper thread's queue interrupts by irqfd, while it runs. */
  private queueIrqfds: QueueIrqfds | undefined;
  /** Messages sent through irqfds that have been closed. */
  private irqfdMessages = 0;
  private readonly legacyConfigBase = (): number => VIRTIO_PCI_CONFIG_OFF(this.msixEnabledNow());

  constructor(ctx: DeviceContext, device: VirtioDevice, opts: VirtioPciOptions) {
    super(opts.emulation, ctx);
    this.device = device;
    this.transport = opts.transport ?? 'transitional';
    this.useMsix = opts.msix ?? true;
    this.dma = opts.dma;
    const nq = device.queueMaxSizes.length;
    this.queues = device.queueMaxSizes.map((max) => ({
      size: max, msixVector: VIRTIO_MSI_NO_VECTOR, enabled: false, desc: 0, avail: 0, used: 0,
    }));
    const type = device.deviceType;
    const modernOnly = this.transport === 'modern';
    const transitionalId = VIRTIO_TRANSITIONAL_IDS[type];
    if (!modernOnly && transitionalId === undefined) {
      throw new Error(`${opts.emulation}: virtio device type ${type} has no legacy PCI id; use transport=modern`);
    }
    this.cfg.setIdentity({
      vendor: VIRTIO_VENDOR,
      device: modernOnly ? VIRTIO_PCI_MODERN_DEVICE_BASE + type : transitionalId!,
      revision: modernOnly ? 1 : 0,
      classCode: opts.classCode,
      subclass: opts.subclass,
      progIf: opts.progIf ?? 0,
      subVendor: VIRTIO_VENDOR,
      subDevice: type,
    });

    if (this.transport !== 'modern') {
      const size = VIRTIO_PCI_CONFIG_OFF(true) + device.configSize;
      this.allocBar(VIRTIO_LEGACY_BAR, 'io', size, {
        read: (o, s) => this.legacyRead(o, s),
        write: (o, s, v) => this.legacyWrite(o, s, v),
      });
    }
    if (this.useMsix) this.addMsixCap(nq + 1, VIRTIO_MSIX_BAR);
    this.addMsiCap(1);
    if (this.transport !== 'legacy') {
      this.allocBar(VIRTIO_MODERN_BAR, 'mem64', MODERN_BAR_SIZE, {
        read: (o, s) => this.modernRead(o, s),
        write: (o, s, v) => this.modernWrite(o, s, v),
      });
      this.addVirtioCap(VIRTIO_PCI_CAP_COMMON_CFG, MODERN_COMMON_OFF, COMMON_CFG_SIZE);
      this.addVirtioCap(VIRTIO_PCI_CAP_NOTIFY_CFG, MODERN_NOTIFY_OFF, Math.max(1, nq) * NOTIFY_OFF_MULTIPLIER, NOTIFY_OFF_MULTIPLIER);
      this.addVirtioCap(VIRTIO_PCI_CAP_ISR_CFG, MODERN_ISR_OFF, 1);
      if (device.configSize > 0) this.addVirtioCap(VIRTIO_PCI_CAP_DEVICE_CFG, MODERN_DEVICE_OFF, device.configSize);
      this.addPciCfgCap();
    }
    this.requestIntx();
  }

  // ---- capabilities ----

  private addVirtioCap(cfgType: number, offset: number, length: number, notifyMultiplier?: number): number {
    const len = notifyMultiplier === undefined ? 16 : 20;
    const cap = new Uint8Array(len);
    const dv = new DataView(cap.buffer);
    cap[2] = len;
    cap[3] = cfgType;
    cap[4] = VIRTIO_MODERN_BAR;
    dv.setUint32(8, offset, true);
    dv.setUint32(12, length, true);
    if (notifyMultiplier !== undefined) dv.setUint32(16, notifyMultiplier, true);
    return this.cfg.addCapability(PCIY_VENDOR, cap, new Uint8Array(len));
  }

  /** VIRTIO_PCI_CAP_PCI_CFG: bar, offset, length writable; pci_cfg_data
   * is a window into the selected BAR. */
  private addPciCfgCap(): void {
    const cap = new Uint8Array(20);
    cap[2] = 20;
    cap[3] = VIRTIO_PCI_CAP_PCI_CFG;
    const w = new Uint8Array(20);
    w[4] = 0xff;
    w.fill(0xff, 8, 16);
    const off = this.cfg.addCapability(PCIY_VENDOR, cap, w);
    this.pciCfgCap = this.cfg.capabilities().find((c) => c.offset === off);
  }

  /** The pci_cfg_data window of the PCI configuration access capability. */
  private pciCfgWindow(off: number, size: number): { barOff: number; len: 1 | 2 | 4 } | undefined {
    const c = this.pciCfgCap;
    if (!c || off !== c.offset + 16 || (size !== 1 && size !== 2 && size !== 4)) return undefined;
    const bar = this.cfg.get8(c.offset + 4);
    const barOff = this.cfg.get32(c.offset + 8);
    const len = this.cfg.get32(c.offset + 12);
    if (bar !== VIRTIO_MODERN_BAR || (len !== 1 && len !== 2 && len !== 4) || barOff + len > MODERN_BAR_SIZE) return undefined;
    return { barOff, len };
  }

  cfgRead(off: number, size: number): number | undefined {
    const w = this.pciCfgWindow(off, size);
    if (!w) return undefined;
    return this.modernRead(w.barOff, w.len) & ones(size);
  }

  protected deviceCfgWrite(off: number, size: number, value: number): boolean {
    const c = this.pciCfgCap;
    if (!c || off + size <= c.offset || off >= c.offset + 20) return false;
    if (off >= c.offset + 16) {
      const w = this.pciCfgWindow(off, size);
      if (w) this.modernWrite(w.barOff, w.len, value & ones(w.len));
      return true;
    }
    this.cfg.guestWrite(off, size, value);
    return true;
  }

  /** Offset of the first capability, for tests walking the list. */
  get capPtr(): number { return this.cfg.get8(PCIR_CAP_PTR); }

  // ---- status, features, reset ----

  get deviceStatus(): number { return this.status; }
  get isrStatus(): number { return this.isr; }

  private offered(): bigint {
    let f = offeredFeatures(this.device);
    // A modern-capable device always offers VERSION_1; a legacy-only one
    // cannot (its feature register is 32 bits).
    if (this.transport === 'legacy') f &= 0xffffffffn;
    else if (this.dma !== undefined) f |= featureBit(VIRTIO_F_ACCESS_PLATFORM);
    return f;
  }

  private resetDevice(): void {
    this.stopStartWatch();
    this.dropIoeventfds();
    this.device.reset();
    this.dropIrqfds();
    this.status = 0;
    this.isr = 0;
    this.deviceFeatureSelect = 0;
    this.driverFeatureSelect = 0;
    this.driverFeatures = 0n;
    this.configVector = VIRTIO_MSI_NO_VECTOR;
    this.queueSelect = 0;
    this.activeQueues = [];
    this.device.queueMaxSizes.forEach((max, i) => {
      this.queues[i] = { size: max, msixVector: VIRTIO_MSI_NO_VECTOR, enabled: false, desc: 0, avail: 0, used: 0 };
    });
    this.intxDeassert();
  }

  /** A guest write of the device status (both interfaces). */
  private writeStatus(value: number, legacy: boolean): void {
    value &= 0xff;
    if (value === 0) { this.resetDevice(); return; }
    const old = this.status;
    // The device's NEEDS_RESET bit stays until reset; the driver cannot clear bits.
    let next = (old & VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET) | (value & ~VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET);
    if ((next & VIRTIO_CONFIG_S_FEATURES_OK) && !(old & VIRTIO_CONFIG_S_FEATURES_OK)) {
      if (!this.negotiate(legacy)) next &= ~VIRTIO_CONFIG_S_FEATURES_OK;
    }
    if ((next & VIRTIO_CONFIG_S_DRIVER_OK) && !(old & VIRTIO_CONFIG_S_DRIVER_OK)) {
      if (legacy && !(next & VIRTIO_CONFIG_S_FEATURES_OK)) {
        // Legacy drivers have no FEATURES_OK step: features are final now.
        if (!this.negotiate(true)) next |= VIRTIO_CONFIG_S_FAILED;
      } else if (!(next & VIRTIO_CONFIG_S_FEATURES_OK)) {
        // DRIVER_OK without FEATURES_OK: a modern driver broke the protocol.
        next &= ~VIRTIO_CONFIG_S_DRIVER_OK;
        this.status = next;
        return;
      }
      this.status = next;
      if (!(next & VIRTIO_CONFIG_S_FAILED)) this.activate();
      return;
    }
    this.status = next;
  }

  /** Checks the driver's features; false rejects FEATURES_OK. */
  private negotiate(legacy: boolean): boolean {
    const offered = this.offered();
    const want = this.driverFeatures;
    if ((want & ~offered) !== 0n) return false;
    if (!legacy && !hasFeature(want, VIRTIO_F_VERSION_1)) return false;
    // Behind the IOMMU a driver that would hand us guest physical
    // addresses (no ACCESS_PLATFORM: a legacy driver, or one unaware of
    // the IOMMU) must not get the device (spec 6.1: it SHOULD fail).
    if (this.dma !== undefined && !hasFeature(want, VIRTIO_F_ACCESS_PLATFORM)) return false;
    return this.device.ackFeatures(want);
  }

  private activate(): void {
    const layouts: Array<VirtqueueLayout | null> = this.queues.map((q) => (q.enabled
      ? { size: q.size, desc: q.desc, avail: q.avail, used: q.used } : null));
    let queues: Array<Virtqueue | null>;
    try {
      queues = createQueues(this.ctx.mem, layouts, this.device.ackedFeatures, this.device.queueMaxSizes, this.dma);
    } catch (e) {
      this.needsReset(`queue setup: ${(e as Error).message}`);
      return;
    }
    this.activeQueues = queues;
    const interrupt: VirtioInterrupt = {
      queue: (i) => this.queueInterrupt(i),
      config: () => this.configInterrupt(),
    };
    try {
      this.device.activate({
        mem: this.ctx.mem, queues, interrupt, needsReset: (reason) => this.needsReset(reason),
      });
    } catch (e) {
      this.needsReset(`activation: ${(e as Error).message}`);
      return;
    }
    this.offloadNotifies();
  }

  /** NotifyOffload: route each queue's modern notify address to the
   * device's eventfd through KVM_IOEVENTFD. */
  private offloadNotifies(): void {
    const kvm = this.ctx.kvm;
    const dev = this.device as VirtioDevice & Partial<NotifyOffload>;
    // A helper thread maps guest RAM by guest physical address: behind
    // the IOMMU the queues stay here, where they are translated.
    if (!kvm || typeof dev.startOffload !== 'function' || this.dma !== undefined) return;
    let fds: Array<number | undefined> | undefined;
    const irqfds = (queues: ReadonlyArray<boolean>): QueueIrqfdChannel | undefined => {
      this.dropIrqfds();
      this.queueIrqfds = QueueIrqfds.open(kvm, queues, {
        msixActive: () => this.msixEnabledNow(),
        vectorOf: (q) => {
          const v = this.queues[q]?.msixVector ?? VIRTIO_MSI_NO_VECTOR;
          return v !== VIRTIO_MSI_NO_VECTOR && v < this.msixVectorCount ? v : undefined;
        },
        entry: (v) => this.msixEntry(v),
        raiseVector: (v) => { this.generateMsix(v); },
        raiseQueue: (q) => this.queueInterrupt(q),
      });
      return this.queueIrqfds?.channel;
    };
    try {
      const msix = this.msixEnabledNow();
      const vectored = this.queues.map((q) => msix && q.msixVector !== VIRTIO_MSI_NO_VECTOR && q.msixVector < this.msixVectorCount);
      // Without MSI-X a queue interrupt goes by MSI, else by INTx unless the
      // driver disabled it (pci-emul.ts lintrPermitted).
      const lineOrMsi = !msix && (this.msiEnabledNow() || !this.intxDisabledNow());
      const interruptible = vectored.map((v) => v || lineOrMsi);
      fds = dev.startOffload(kvm.helper, () => this.dropIoeventfds(), irqfds, vectored, {
        toEventfd: (q, fd) => this.notifyToEventfd(q, fd),
        toExit: (q) => this.notifyToExit(q),
      }, interruptible);
    } catch {
      this.dropIrqfds();
      return; // the device keeps serving notifies on this thread
    }
    if (fds && typeof dev.offloadStarting === 'function') this.watchOffloadStart(dev as NotifyOffload & VirtioDevice);
    fds?.forEach((fd, q) => { if (fd !== undefined) this.notifyToEventfd(q, fd); });
  }

  /** Queue `q`'s modern notify address where the BAR is now; none for a
   * legacy transport. */
  private notifyAddress(q: number): number | undefined {
    const base = this.transport === 'legacy' ? undefined : this.barRegisteredAt(VIRTIO_MODERN_BAR);
    return base === undefined ? undefined : base + MODERN_NOTIFY_OFF + q * NOTIFY_OFF_MULTIPLIER;
  }

  /** Routes queue `q`'s notifies to `fd` (KVM_IOEVENTFD, kept for reset);
   * false when there is no modern notify address, it is routed already, or
   * KVM refused. */
  private notifyToEventfd(q: number, fd: number): boolean {
    const kvm = this.ctx.kvm;
    const addr = this.notifyAddress(q);
    if (!kvm || addr === undefined || this.ioeventfds.some((e) => e.addr === addr) || !kvm.ioeventfd(fd, addr)) return false;
    this.ioeventfds.push({ fd, addr });
    return true;
  }

  /** Queue `q`'s notifies exit again (a no-op when not routed). */
  private notifyToExit(q: number): void {
    const addr = this.notifyAddress(q);
    const i = this.ioeventfds.findIndex((e) => e.addr === addr);
    if (i < 0) return;
    this.ctx.kvm?.ioeventfd(this.ioeventfds[i].fd, this.ioeventfds[i].addr, true);
    this.ioeventfds.splice(i, 1);
  }

  /** Until the helper has loaded (or failed to), looks at it on a timer. */
  private watchOffloadStart(dev: NotifyOffload & VirtioDevice): void {
    const watch = OffloadStartWatch.of(this.ctx);
    if (!watch || !dev.offloadStarting!()) return;
    this.stopStartWatch();
    const check = (): boolean => {
      if (dev.offloadStarting!()) return true;
      this.startWatch = undefined;
      dev.poll?.(); // FAILED: the device takes its queues back
      return false;
    };
    this.startWatch = { watch, check };
    watch.watch(check);
  }

  private stopStartWatch(): void {
    this.startWatch?.watch.unwatch(this.startWatch.check);
    this.startWatch = undefined;
  }

  private dropIoeventfds(): void {
    for (const { fd, addr } of this.ioeventfds) this.ctx.kvm?.ioeventfd(fd, addr, true);
    this.ioeventfds = [];
  }

  /** Only once the helper has stopped writing them (device reset/close). */
  private dropIrqfds(): void {
    const q = this.queueIrqfds;
    if (!q) return;
    this.irqfdMessages += q.sent;
    q.close();
    this.queueIrqfds = undefined;
  }

  /** Queues whose interrupts reach KVM by irqfd now, a bit per queue (for
   * tests and diagnostics). */
  get irqfdQueues(): number { return this.queueIrqfds?.liveMask ?? 0; }

  protected interruptSetupChanged(): void {
    this.queueIrqfds?.sync();
  }

  protected msixPbaReading(): void {
    this.queueIrqfds?.collectPending();
  }

  /** The device cannot go on until reset (spec 2.1.2). */
  needsReset(reason: string): void {
    this.lastError = reason;
    if (this.status & VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET) return;
    this.status |= VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET;
    this.configGeneration = (this.configGeneration + 1) & 0xff;
    this.configInterrupt();
  }

  // ---- interrupts ----

  private queueInterrupt(i: number): void {
    if (this.msixEnabledNow()) {
      const v = this.queues[i]?.msixVector ?? VIRTIO_MSI_NO_VECTOR;
      if (v !== VIRTIO_MSI_NO_VECTOR) this.generateMsix(v);
      return;
    }
    this.raiseIsr(VIRTIO_ISR_QUEUE);
  }

  private configInterrupt(): void {
    if (this.msixEnabledNow()) {
      if (this.configVector !== VIRTIO_MSI_NO_VECTOR) this.generateMsix(this.configVector);
      return;
    }
    this.raiseIsr(VIRTIO_ISR_CONFIG);
  }

  private raiseIsr(bit: number): void {
    this.isr |= bit;
    if (this.msiEnabledNow()) this.generateMsi(0);
    else this.intxAssert();
  }

  private readIsr(): number {
    const v = this.isr;
    this.isr = 0;
    this.intxDeassert();
    return v;
  }

  private notify(q: number): void {
    if (!(this.status & VIRTIO_CONFIG_S_DRIVER_OK) || (this.status & VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET)) return;
    if (q < 0 || q >= this.queues.length || !this.activeQueues[q]) return;
    this.notifiesByExit++;
    try {
      this.device.queueNotify(q);
    } catch (e) {
      this.needsReset(`queue ${q}: ${(e as Error).message}`);
    }
  }

  private setVector(v: number): number {
    return v === VIRTIO_MSI_NO_VECTOR || (this.useMsix && v < this.msixVectorCount) ? v : VIRTIO_MSI_NO_VECTOR;
  }

  // ---- modern BAR ----

  modernRead(off: number, size: 1 | 2 | 4): number {
    if (off >= MODERN_COMMON_OFF && off < MODERN_COMMON_OFF + COMMON_CFG_SIZE) return this.commonRead(off - MODERN_COMMON_OFF, size);
    if (off === MODERN_ISR_OFF) return this.readIsr();
    if (off >= MODERN_DEVICE_OFF && off < MODERN_DEVICE_OFF + 0x1000) return this.configRead(off - MODERN_DEVICE_OFF, size);
    return 0;
  }

  modernWrite(off: number, size: 1 | 2 | 4, value: number): void {
    if (off >= MODERN_COMMON_OFF && off < MODERN_COMMON_OFF + COMMON_CFG_SIZE) { this.commonWrite(off - MODERN_COMMON_OFF, size, value); return; }
    if (off >= MODERN_DEVICE_OFF && off < MODERN_DEVICE_OFF + 0x1000) { this.configWrite(off - MODERN_DEVICE_OFF, size, value); return; }
    if (off >= MODERN_NOTIFY_OFF && off < MODERN_NOTIFY_OFF + 0x1000) {
      const rel = off - MODERN_NOTIFY_OFF;
      if (rel % NOTIFY_OFF_MULTIPLIER === 0) this.notify(rel / NOTIFY_OFF_MULTIPLIER);
    }
  }

  private configRead(off: number, size: number): number {
    if (off >= this.device.configSize) return 0;
    const b = new Uint8Array(size);
    this.device.readConfig(off, b);
    let v = 0;
    for (let i = 0; i < size; i++) v |= b[i] << (8 * i);
    return v >>> 0;
  }

  private configWrite(off: number, size: number, value: number): void {
    if (off >= this.device.configSize) return;
    const b = new Uint8Array(Math.min(size, this.device.configSize - off));
    for (let i = 0; i < b.length; i++) b[i] = (value >>> (8 * i)) & 0xff;
    this.device.writeConfig(off, b);
  }

  private get selected(): QueueRegs | undefined {
    return this.queues[this.queueSelect];
  }

  private commonField(off: number): number {
    const q = this.selected;
    const f = this.offered();
    switch (off) {
      case VIRTIO_PCI_COMMON_DFSELECT: return this.deviceFeatureSelect;
      case VIRTIO_PCI_COMMON_DF:
        return this.deviceFeatureSelect > 1 ? 0 : Number((f >> BigInt(32 * this.deviceFeatureSelect)) & 0xffffffffn);
      case VIRTIO_PCI_COMMON_GFSELECT: return this.driverFeatureSelect;
      case VIRTIO_PCI_COMMON_GF:
        return this.driverFeatureSelect > 1 ? 0 : Number((this.driverFeatures >> BigInt(32 * this.driverFeatureSelect)) & 0xffffffffn);
      case VIRTIO_PCI_COMMON_MSIX: return this.configVector;
      case VIRTIO_PCI_COMMON_NUMQ: return this.queues.length;
      case VIRTIO_PCI_COMMON_STATUS: return this.status;
      case VIRTIO_PCI_COMMON_CFGGENERATION: return this.configGeneration;
      case VIRTIO_PCI_COMMON_Q_SELECT: return this.queueSelect;
      case VIRTIO_PCI_COMMON_Q_SIZE: return q ? q.size : 0;
      case VIRTIO_PCI_COMMON_Q_MSIX: return q ? q.msixVector : VIRTIO_MSI_NO_VECTOR;
      case VIRTIO_PCI_COMMON_Q_ENABLE: return q?.enabled ? 1 : 0;
      case VIRTIO_PCI_COMMON_Q_NOFF: return q ? this.queueSelect : 0;
      case VIRTIO_PCI_COMMON_Q_DESCLO: return q ? lo32(q.desc) : 0;
      case VIRTIO_PCI_COMMON_Q_DESCHI: return q ? hi32(q.desc) : 0;
      case VIRTIO_PCI_COMMON_Q_AVAILLO: return q ? lo32(q.avail) : 0;
      case VIRTIO_PCI_COMMON_Q_AVAILHI: return q ? hi32(q.avail) : 0;
      case VIRTIO_PCI_COMMON_Q_USEDLO: return q ? lo32(q.used) : 0;
      case VIRTIO_PCI_COMMON_Q_USEDHI: return q ? hi32(q.used) : 0;
      default: return 0;
    }
  }

  private static readonly FIELDS: ReadonlyArray<[number, number]> = [
    [0x00, 4], [0x04, 4], [0x08, 4], [0x0c, 4], [0x10, 2], [0x12, 2], [0x14, 1], [0x15, 1],
    [0x16, 2], [0x18, 2], [0x1a, 2], [0x1c, 2], [0x1e, 2],
    [0x20, 4], [0x24, 4], [0x28, 4], [0x2c, 4], [0x30, 4], [0x34, 4],
  ];

  commonRead(off: number, size: number): number {
    let v = 0;
    for (const [foff, fsize] of VirtioPci.FIELDS) {
      if (foff + fsize <= off || foff >= off + size) continue;
      const fv = this.commonField(foff);
      for (let i = 0; i < size; i++) {
        const b = off + i - foff;
        if (b >= 0 && b < fsize) v |= ((fv >>> (8 * b)) & 0xff) << (8 * i);
      }
    }
    return v >>> 0;
  }

  commonWrite(off: number, size: number, value: number): void {
    for (const [foff, fsize] of VirtioPci.FIELDS) {
      if (foff + fsize <= off || foff >= off + size) continue;
      this.setCommonField(foff, mergeField(this.commonField(foff), foff, fsize, off, size, value));
    }
  }

  private setCommonField(off: number, v: number): void {
    const q = this.selected;
    // Queue registers are frozen once the driver is running.
    const running = (this.status & VIRTIO_CONFIG_S_DRIVER_OK) !== 0;
    const setAddr = (which: 'desc' | 'avail' | 'used', hi: boolean) => {
      if (!q || running || q.enabled) return;
      q[which] = hi ? v * 0x100000000 + lo32(q[which]) : hi32(q[which]) * 0x100000000 + v;
    };
    switch (off) {
      case VIRTIO_PCI_COMMON_DFSELECT: this.deviceFeatureSelect = v; break;
      case VIRTIO_PCI_COMMON_GFSELECT: this.driverFeatureSelect = v; break;
      case VIRTIO_PCI_COMMON_GF: {
        if (this.driverFeatureSelect > 1 || (this.status & VIRTIO_CONFIG_S_FEATURES_OK)) break;
        const shift = BigInt(32 * this.driverFeatureSelect);
        this.driverFeatures = (this.driverFeatures & ~(0xffffffffn << shift)) | (BigInt(v) << shift);
        break;
      }
      case VIRTIO_PCI_COMMON_MSIX: this.configVector = this.setVector(v); break;
      case VIRTIO_PCI_COMMON_STATUS: this.writeStatus(v, false); break;
      case VIRTIO_PCI_COMMON_Q_SELECT: this.queueSelect = v; break;
      case VIRTIO_PCI_COMMON_Q_SIZE: {
        if (!q || running || q.enabled) break;
        const max = this.device.queueMaxSizes[this.queueSelect];
        if (v >= 1 && v <= max) q.size = v;
        break;
      }
      case VIRTIO_PCI_COMMON_Q_MSIX: if (q) { q.msixVector = this.setVector(v); this.queueIrqfds?.sync(); } break;
      case VIRTIO_PCI_COMMON_Q_ENABLE: if (q && !running && v === 1) q.enabled = true; break;
      case VIRTIO_PCI_COMMON_Q_DESCLO: setAddr('desc', false); break;
      case VIRTIO_PCI_COMMON_Q_DESCHI: setAddr('desc', true); break;
      case VIRTIO_PCI_COMMON_Q_AVAILLO: setAddr('avail', false); break;
      case VIRTIO_PCI_COMMON_Q_AVAILHI: setAddr('avail', true); break;
      case VIRTIO_PCI_COMMON_Q_USEDLO: setAddr('used', false); break;
      case VIRTIO_PCI_COMMON_Q_USEDHI: setAddr('used', true); break;
      default: break; // read-only: device_feature, num_queues, generation, notify_off
    }
  }

  // ---- legacy I/O BAR ----

  private legacyPfn(q: QueueRegs | undefined): number {
    return q && q.enabled ? Math.floor(q.desc / VIRTIO_PCI_VRING_ALIGN) >>> 0 : 0;
  }

  legacyRead(off: number, size: 1 | 2 | 4): number {
    const cfgBase = this.legacyConfigBase();
    if (off >= cfgBase) return this.configRead(off - cfgBase, size);
    const field = (foff: number): number => {
      const q = this.selected;
      switch (foff) {
        case VIRTIO_PCI_HOST_FEATURES: return Number(this.offered() & 0xffffffffn);
        case VIRTIO_PCI_GUEST_FEATURES: return Number(this.driverFeatures & 0xffffffffn);
        case VIRTIO_PCI_QUEUE_PFN: return this.legacyPfn(q);
        case VIRTIO_PCI_QUEUE_NUM: return q ? this.device.queueMaxSizes[this.queueSelect] : 0;
        case VIRTIO_PCI_QUEUE_SEL: return this.queueSelect;
        case VIRTIO_PCI_QUEUE_NOTIFY: return 0;
        case VIRTIO_PCI_STATUS: return this.status;
        case VIRTIO_PCI_ISR: return this.readIsr();
        case VIRTIO_MSI_CONFIG_VECTOR: return this.configVector;
        case VIRTIO_MSI_QUEUE_VECTOR: return q ? q.msixVector : VIRTIO_MSI_NO_VECTOR;
        default: return 0;
      }
    };
    return this.legacyAccess(off, size, cfgBase, (foff, fsize) => {
      const fv = field(foff);
      return fv & ones(fsize);
    });
  }

  legacyWrite(off: number, size: 1 | 2 | 4, value: number): void {
    const cfgBase = this.legacyConfigBase();
    if (off >= cfgBase) { this.configWrite(off - cfgBase, size, value); return; }
    // bhyve's vi_pci_write: registers take writes of their own size only.
    const q = this.selected;
    const running = (this.status & VIRTIO_CONFIG_S_DRIVER_OK) !== 0;
    const fsize = VirtioPci.legacyFieldSize(off, cfgBase);
    if (fsize !== size) return;
    switch (off) {
      case VIRTIO_PCI_GUEST_FEATURES:
        if (!running) this.driverFeatures = BigInt(value >>> 0) & this.offered();
        break;
      case VIRTIO_PCI_QUEUE_PFN: {
        if (!q || running) break;
        const max = this.device.queueMaxSizes[this.queueSelect];
        if (value === 0) { q.enabled = false; q.desc = q.avail = q.used = 0; break; }
        const base = (value >>> 0) * VIRTIO_PCI_VRING_ALIGN;
        q.size = max;
        q.desc = base;
        q.avail = base + 16 * max;
        q.used = Math.ceil((q.avail + 4 + 2 * max + 2) / VIRTIO_PCI_VRING_ALIGN) * VIRTIO_PCI_VRING_ALIGN;
        q.enabled = true;
        break;
      }
      case VIRTIO_PCI_QUEUE_SEL: this.queueSelect = value; break;
      case VIRTIO_PCI_QUEUE_NOTIFY: this.notify(value); break;
      case VIRTIO_PCI_STATUS: this.writeStatus(value, true); break;
      case VIRTIO_MSI_CONFIG_VECTOR: this.configVector = this.setVector(value); break;
      case VIRTIO_MSI_QUEUE_VECTOR: if (q) { q.msixVector = this.setVector(value); this.queueIrqfds?.sync(); } break;
      default: break;
    }
  }

  private static legacyFieldSize(off: number, cfgBase: number): number {
    if (off >= cfgBase) return 0;
    switch (off) {
      case 0x00: case 0x04: case 0x08: return 4;
      case 0x0c: case 0x0e: case 0x10: case 0x14: case 0x16: return 2;
      case 0x12: case 0x13: return 1;
      default: return 0;
    }
  }

  private legacyAccess(off: number, size: number, cfgBase: number, read: (foff: number, fsize: number) => number): number {
    const fsize = VirtioPci.legacyFieldSize(off, cfgBase);
    // Unaligned or mis-sized reads of registers read as zero (bhyve warns
    // and returns all-ones; zero never looks like a valid feature set).
    if (fsize === 0 || fsize !== size) return 0;
    return read(off, fsize);
  }

  /** Bus mastering must be on for DMA; we do not enforce it (bhyve does
   * not), but expose it for diagnostics. */
  get busMaster(): boolean {
    return (this.cfg.get16(0x04) & PCIM_CMD_BUSMASTEREN) !== 0;
  }

  reset(): void {
    this.resetDevice();
  }

  close(): void {
    this.stopStartWatch();
    this.dropIoeventfds();
    this.device.close?.();
    this.dropIrqfds();
  }

  /** The transport's counters and the device model's (bhyvectl --get-stats):
   * notifies that exited to this thread (those KVM turned into an ioeventfd
   * signal never do) and the interrupts sent, by kind. */
  stats(): Record<string, number> {
    const c = this.interruptCounts;
    return {
      'queue notifies by exit': this.notifiesByExit,
      'msi-x messages': c.msix,
      'msi-x messages held by a mask': c.msixHeld,
      'msi-x messages by irqfd': this.irqfdMessages + (this.queueIrqfds?.sent ?? 0),
      'msi messages': c.msi,
      'intx assertions': c.intx,
      ...(this.device.counters?.() ?? {}),
    };
  }

  /** Host input may have arrived: let a running device take it. */
  poll(): void {
    if (!(this.status & VIRTIO_CONFIG_S_DRIVER_OK) || (this.status & VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET)) return;
    try {
      this.device.poll?.();
    } catch (e) {
      this.needsReset(`poll: ${(e as Error).message}`);
    }
  }
}

export { VIRTIO_PCI_KEYS } from './virtio-pci-keys.js';

/** The slot's DMA space when it is behind the IOMMU, else undefined (the
 * untranslated path). */
export function translatedDmaSpace(chipset: Chipset, s: PciSlot): DmaSpace | undefined {
  const ep = pciEndpointId(s.bus, s.slot, s.func);
  return chipset.dma?.isTranslated(ep) ? chipset.dma.forEndpoint(ep) : undefined;
}

/**
 * What each virtio record's create() does: reads `transport`, opens the
 * device model and puts it on the PCI transport with the record's PCI
 * class (bhyve's vi_pci_init), MSI-X unless virtio_msix=false. The model is
 * closed again when the transport cannot be built.
 */
export function createVirtioPci(ctx: DeviceContext, s: PciSlot, chipset: Chipset, emulation: string, classCode: number, open: () => VirtioDevice): VirtioPci {
  const t = ctx.config.get(`${s.node}.transport`) ?? 'transitional';
  if (t !== 'transitional' && t !== 'modern' && t !== 'legacy') {
    throw new ConfigError(`${emulation}@${s.node}: invalid transport "${t}" (use legacy, modern or transitional)`);
  }
  const dma = translatedDmaSpace(chipset, s);
  if (dma && t === 'legacy') {
    throw new ConfigError(`${emulation}@${s.node}: iommu=true needs VIRTIO_F_ACCESS_PLATFORM, which transport=legacy cannot offer`);
  }
  const device = open();
  try {
    return new VirtioPci(ctx, device, {
      emulation, classCode, subclass: 0, msix: chipset.msix, transport: t, dma,
    });
  } catch (e) {
    device.close?.();
    throw e;
  }
}
