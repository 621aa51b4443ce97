// A passthrough device's MSI and MSI-X, emulated as pci_passthru.c does:
// the guest programs the capability and the MSI-X table in our shadow
// copies, never in the device; each vector the guest enables becomes an
// eventfd the device signals (VFIO/vfio-user SET_IRQS) and a KVM MSI route
// with the guest's message, the eventfd wired to it by KVM_IRQFD, so an
// interrupt reaches the guest with no exit and no thread of ours.
//
// A masked vector (its mask bit, or the function mask) is detached from
// KVM: the device's signals stay counted in the eventfd, the PBA shows
// them pending, and unmasking delivers one message, as the PCI spec asks.
// Without KVM irqfds (unit tests) the device thread's poll() reads the
// eventfds and sends the messages itself.

import type { KvmDoorbells, MsiIrqfd } from '../device.js';
import { closeFd, eventfd, eventfdRead, EFD_CLOEXEC, EFD_NONBLOCK } from '../../sys/eventfd.js';
import { PCI_IRQ } from '../../sys/vfio-abi.js';
import type { PassthruBackend } from './passthru-backend.js';

export interface IrqEnv {
  backend: PassthruBackend;
  kvm?: Pick<KvmDoorbells, 'msiIrqfd'>;
  signalMsi(address: number, data: number): void;
}

/** One vector: the device's eventfd and its route to the guest. */
class VectorWire {
  readonly fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  private readonly irqfd: MsiIrqfd | undefined;
  private address = 0;
  private data = 0;
  private deliverable = false;
  /** Signalled while masked (the PBA bit). */
  pending = false;

  constructor(private readonly env: IrqEnv) {
    this.irqfd = env.kvm?.msiIrqfd?.(this.fd);
  }

  get inKernel(): boolean { return this.irqfd !== undefined; }

  /** The guest's message and whether it may be sent now. */
  program(address: number, data: number, deliverable: boolean): void {
    const was = this.deliverable;
    this.address = address;
    this.data = data;
    this.deliverable = deliverable;
    if (this.irqfd) {
      this.irqfd.route(address, data);
      if (!deliverable) { this.irqfd.detach(); return; }
    }
    if (deliverable && !was) {
      // Unmasked: what came while masked is sent once now.
      if (this.drain()) this.pending = true;
      if (this.pending) { this.pending = false; this.env.signalMsi(this.address, this.data); }
    }
    if (deliverable) this.irqfd?.attach();
  }

  /** Consumes the eventfd's count; true when the device had signalled. */
  drain(): boolean {
    return eventfdRead(this.fd) > 0n;
  }

  /** Without irqfds: deliver or hold what the device signalled. */
  poll(): number {
    if (this.irqfd && this.deliverable) return 0;
    if (!this.drain()) return 0;
    if (this.deliverable) { this.env.signalMsi(this.address, this.data); return 1; }
    this.pending = true;
    return 0;
  }

  /** For a PBA read: a masked vector's signals so far. */
  isPending(): boolean {
    if (!this.deliverable && this.drain()) this.pending = true;
    return this.pending;
  }

  close(): void {
    this.irqfd?.close();
    closeFd(this.fd);
  }
}

export const MSIX_ENTRY = 16;

/** The MSI-X capability, table and PBA of a passthrough function. */
export class MsixEmulation {
  readonly table: Uint8Array;
  private enabled = false;
  private functionMask = false;
  private wires: VectorWire[] = [];
  private pendingBits: boolean[];
  /** Messages this code sent itself (poll path, unmask of a pending vector). */
  delivered = 0;

  constructor(private readonly env: IrqEnv, readonly count: number) {
    this.table = new Uint8Array(count * MSIX_ENTRY);
    this.pendingBits = new Array(count).fill(false);
    this.reset();
  }

  reset(): void {
    this.disableWires();
    this.table.fill(0);
    for (let v = 0; v < this.count; v++) this.table[v * MSIX_ENTRY + 12] = 1; // masked
    this.enabled = false;
    this.functionMask = false;
    this.pendingBits.fill(false);
  }

  get isEnabled(): boolean { return this.enabled; }
  /** Vectors whose interrupts go straight through KVM. */
  get inKernelVectors(): number { return this.wires.filter((w) => w.inKernel).length; }

  /** The capability's control bits changed (enable, function mask). */
  control(enabled: boolean, functionMask: boolean): void {
    if (enabled && !this.enabled) {
      this.wires = Array.from({ length: this.count }, () => new VectorWire(this.env));
      this.env.backend.setIrqEventfds(PCI_IRQ.MSIX, this.wires.map((w) => w.fd));
    } else if (!enabled && this.enabled) {
      this.disableWires();
    }
    this.enabled = enabled;
    this.functionMask = functionMask;
    for (let v = 0; v < this.count; v++) this.update(v);
  }

  private disableWires(): void {
    if (this.wires.length === 0) return;
    this.env.backend.setIrqEventfds(PCI_IRQ.MSIX, []);
    for (const w of this.wires) w.close();
    this.wires = [];
  }

  private entry(v: number): { address: number; data: number; masked: boolean } {
    const d = new DataView(this.table.buffer, v * MSIX_ENTRY, MSIX_ENTRY);
    return { address: d.getUint32(4, true) * 0x100000000 + d.getUint32(0, true), data: d.getUint32(8, true), masked: (d.getUint32(12, true) & 1) !== 0 };
  }

  private update(v: number): void {
    const w = this.wires[v];
    if (!w) return;
    const e = this.entry(v);
    w.program(e.address, e.data, this.enabled && !this.functionMask && !e.masked);
  }

  tableRead(off: number, size: number): number {
    let x = 0;
    for (let i = 0; i < size; i++) x |= (off + i < this.table.length ? this.table[off + i] : 0) << (8 * i);
    return x >>> 0;
  }

  tableWrite(off: number, size: number, value: number): void {
    if (off >= this.table.length) return;
    for (let i = 0; i < size && off + i < this.table.length; i++) this.table[off + i] = (value >>> (8 * i)) & 0xff;
    const v = Math.floor(off / MSIX_ENTRY);
    // Reserved vector-control bits read as zero.
    this.table[v * MSIX_ENTRY + 12] &= 1;
    this.table.fill(0, v * MSIX_ENTRY + 13, v * MSIX_ENTRY + 16);
    this.update(v);
  }

  pbaRead(off: number, size: number): number {
    let x = 0;
    for (let i = 0; i < size; i++) {
      for (let b = 0; b < 8; b++) {
        const v = (off + i) * 8 + b;
        if (v < this.count && this.isPending(v)) x |= 1 << (8 * i + b);
      }
    }
    return x >>> 0;
  }

  private isPending(v: number): boolean {
    const w = this.wires[v];
    return w ? w.isPending() : this.pendingBits[v];
  }

  /** Sends what the device signalled where KVM does not (see top). */
  poll(): void {
    for (const w of this.wires) this.delivered += w.poll();
  }

  close(): void {
    this.disableWires();
  }
}

/** The MSI capability of a passthrough function: one to 32 messages, no
 * per-vector masking (the capability is shown without it). */
export class MsiEmulation {
  private wires: VectorWire[] = [];
  delivered = 0;

  constructor(private readonly env: IrqEnv, readonly maxMessages: number) {}

  get isEnabled(): boolean { return this.wires.length > 0; }

  /** The guest's MSI state after a capability write. */
  program(enabled: boolean, messages: number, address: number, data: number): void {
    const n = enabled ? Math.max(1, Math.min(messages, this.maxMessages)) : 0;
    if (n !== this.wires.length) {
      if (this.wires.length) {
        this.env.backend.setIrqEventfds(PCI_IRQ.MSI, []);
        for (const w of this.wires) w.close();
      }
      this.wires = Array.from({ length: n }, () => new VectorWire(this.env));
      if (n) this.env.backend.setIrqEventfds(PCI_IRQ.MSI, this.wires.map((w) => w.fd));
    }
    // Multiple messages modify the low bits of the data.
    this.wires.forEach((w, i) => w.program(address, (data & ~(n - 1)) | i, true));
  }

  poll(): void {
    for (const w of this.wires) this.delivered += w.poll();
  }

  close(): void {
    this.program(false, 0, 0, 0);
  }
}
