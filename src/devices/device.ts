// The interface between device models and the vmm core. A device model sees
// only this: address-range registration for port I/O and MMIO, interrupt
// lines, bounds-checked guest memory, its own config node, and a way to end
// the run. It never reaches into KVM or the run loop.

import type { ConfigTree } from '../config/tree.js';
import type { GuestMemory } from '../sys/guest-memory.js';
import type { ExitRequest } from '../vmm/exit-status.js';
import type { HostPortLookup } from './virtio/host-ports.js';
import type { DoorbellTransfer } from '../sys/doorbell.js';

export type AccessSize = 1 | 2 | 4;

/** Handles x86 port I/O inside a registered range. `port` is absolute. */
export interface PortIoHandler {
  read(port: number, size: AccessSize): number;
  write(port: number, size: AccessSize, value: number): void;
}

/** Handles MMIO inside a registered range. `addr` is the absolute guest
 * physical address; `data` holds 1..8 bytes, little-endian. */
export interface MmioHandler {
  read(addr: number, data: Uint8Array): void;
  write(addr: number, data: Uint8Array): void;
}

export interface IoRegistrar {
  registerPorts(name: string, base: number, length: number, handler: PortIoHandler): void;
  registerMmio(name: string, base: number, length: number, handler: MmioHandler): void;
  /** Removes the port range registered at `base` (a PCI BAR moving or
   * stopping decoding); false when nothing was registered there. */
  unregisterPorts(base: number): boolean;
  unregisterMmio(base: number): boolean;
}

/** Interrupt delivery through KVM's in-kernel PIC/IOAPIC/LAPIC. */
export interface InterruptSink {
  /** Drives an ISA/IOAPIC line (GSI) to a level. */
  setLevel(gsi: number, high: boolean): void;
  /** Raises then lowers a line: an edge for edge-triggered ISA interrupts. */
  pulse(gsi: number): void;
  /** Delivers an MSI message. */
  signalMsi(address: number, data: number): void;
}

/** Byte stream to a host backend (tty, stdio, socket), usable synchronously
 * from the thread that runs the device. */
export interface ByteStream {
  /** Next received byte, or -1 when none is waiting. */
  readByte(): number;
  /** True when at least one received byte is waiting. */
  hasInput(): boolean;
  write(bytes: Uint8Array): void;
}

export interface MachineControl {
  /** Ends the run of every vCPU with the given bhyve(8) outcome. */
  requestExit(request: ExitRequest): void;
  /** Number of vCPUs configured. */
  readonly vcpuCount: number;
  /** ACPI S3 (acpi_s3): stops the boot vCPU with RAM kept (it waits as in
   * INIT, running no guest code) until wake(). On the device thread. */
  sleep?(): void;
  /** Resumes the boot vCPU from sleep() in real mode at `vector` (the FACS
   * waking vector: CS = vector >> 4, IP = vector & 0xf, as SeaBIOS enters it). */
  wake?(vector: number): void;
}

/** What backs a guest-physical range mapped by a device model. */
export type MemoryBacking =
  /** Guest RAM at this byte offset of the RAM file (lowmem first, then highmem). */
  | { kind: 'ram'; offset: number }
  /** The boot ROM file at this byte offset (always read-only to the guest). */
  | { kind: 'bootrom'; offset: number }
  /** The VARS file (lpc.bootvars) at this byte offset; the host view is
   * writable and shared with the file (bootvars.ts, CFI flash). */
  | { kind: 'bootvars'; offset: number }
  /** The fbuf framebuffer file (display/framebuffer-file.ts) at this byte offset. */
  | { kind: 'framebuffer'; offset: number };

/** Lets a device model (chipset shadow RAM, flash) change what guest memory
 * a range decodes to. Ranges are page aligned; writes to a read-only range
 * exit to the MMIO handler registered for it, if any. */
export interface MemoryMapControl {
  map(gpa: number, size: number, backing: MemoryBacking, readonly: boolean, logDirty?: boolean): void;
  /** The KVM memory slot of the range mapped at `gpa` (for KVM_GET_DIRTY_LOG
   * of a range mapped with logDirty), if there is one. */
  slotAt?(gpa: number): number | undefined;
  unmap(gpa: number): void;
  /** A host view of a backing, for devices that copy between them. */
  view(backing: MemoryBacking, size: number): Uint8Array;
}

/** A one-shot timer for a device model; its callback runs on the device
 * thread. Re-arm from the callback for periodic behaviour. */
export interface DeviceTimer {
  /** Fires once at CLOCK_MONOTONIC time `deadlineNs` (replaces any earlier arming). */
  armAt(deadlineNs: bigint): void;
  cancel(): void;
  /** The current CLOCK_MONOTONIC time in nanoseconds. */
  now(): bigint;
}

export interface DeviceContext {
  readonly io: IoRegistrar;
  readonly irq: InterruptSink;
  readonly mem: GuestMemory;
  readonly config: ConfigTree;
  readonly machine: MachineControl;
  /** Opens the host stream prepared on the main thread for a backend key
   * (e.g. "lpc.com1"); undefined when that device has no backend. */
  stream(key: string): ByteStream | undefined;
  /** Present when the platform leaves a range for devices to map (the
   * legacy BIOS window 0xC0000-0xFFFFF with lpc.fwcfg=qemu; the VARS file
   * below the boot ROM whenever lpc.bootvars is set). */
  readonly memoryMap?: MemoryMapControl;
  /** A timer whose callback runs on the device thread. */
  timer(callback: () => void): DeviceTimer;
  /** The host backends the main thread opened (a virtio-net tap,
   * virtio-console port sockets: virtio/host-ports.ts), by kind and slot
   * node ("pci.0.3.0"). Absent in contexts without host backends (unit
   * tests). */
  hostPorts?: HostPortLookup;
  /** KVM doorbells for devices that move their data path off the device
   * thread (virtio-blk's iothread). Absent in unit tests and wherever the
   * vmm cannot offer them. */
  readonly kvm?: KvmDoorbells;
}

/** What a device may ask of KVM directly: route a guest write to an
 * eventfd inside the kernel (KVM_IOEVENTFD), and hand a helper thread what
 * it needs to map guest RAM and to wake the device thread. */
export interface KvmDoorbells {
  /** Registers (or with `deassign` removes) an ioeventfd: a guest MMIO write
   * at `addr` (any length when KVM allows it, else 2 bytes) signals eventfd
   * `fd` without an exit to userspace. False when KVM refused it. */
  ioeventfd(fd: number, addr: number, deassign?: boolean): boolean;
  /** Registers (`on`) or removes a coalesced MMIO zone (KVM's coalesced
   * ring, sys/coalesced-mmio.ts): guest writes to [addr, addr+len) no
   * longer exit; they reach the range's MMIO handler, in order, before the
   * next access that does exit (to any device), or at flushCoalesced().
   * False when KVM offers no ring or refused. */
  coalesce?(addr: number, len: number, on: boolean): boolean;
  /** Replays the writes buffered in the coalesced ring now. */
  flushCoalesced?(): void;
  /** True while the MMIO write being handled was buffered in the ring. */
  replayingCoalesced?(): boolean;
  /** Host pages the guest maps read-only (reads cost no exit), e.g. a
   * device's register block; undefined where KVM cannot map them. */
  registerPages?(size: number): RegisterPages | undefined;
  /** An eventfd whose signals inject an MSI inside the kernel (a GSI
   * routed as an MSI, KVM_IRQFD): passthrough interrupts without an exit
   * or a thread. Undefined where KVM offers no irqfd. */
  msiIrqfd?(fd: number): MsiIrqfd | undefined;
  /** A level interrupt on I/O APIC input `gsi` raised by eventfd `fd`,
   * lowered by the guest's EOI, which signals `resampleFd`
   * (KVM_IRQFD_FLAG_RESAMPLE): passthrough INTx. Undefined where refused. */
  intxIrqfd?(fd: number, resampleFd: number, gsi: number): { close(): void } | undefined;
  /** Maps host memory (a passthrough device's mmap-able BAR) into the
   * guest at `gpa`, read-write, through a KVM memory slot; false when KVM
   * refused (the range then stays trapped). */
  mapHostMemory?(gpa: number, size: number, address: bigint): boolean;
  unmapHostMemory?(gpa: number): void;
  /** Tells KVM's VFIO pseudo-device that this VM uses a VFIO group or
   * device file (passthrough of a host device): KVM then honours the
   * guest's cache flushes and memory types when the device's DMA does not
   * snoop the CPU caches. Undefined where KVM refused it. */
  vfioFile?(fd: number): { close(): void } | undefined;
  /** Structured-clonable data for a helper worker_thread (see
   * devices/virtio/blk-iothread.ts): the guest RAM file and layout, and
   * what a kick of the device thread needs. */
  readonly helper: HelperThreadData;
}

/** Pages of host memory a device fills (`bytes`) and the guest reads
 * through a read-only KVM memory slot: a guest write there exits to the
 * MMIO handler registered for the range, as before. */
export interface RegisterPages {
  readonly bytes: Uint8Array;
  /** A memfd holding them, for a helper thread to map the same memory
   * (an I/O thread that updates a register the driver polls). */
  readonly fd?: number;
  /** Maps the pages at guest physical `gpa` (page aligned); false when KVM
   * refused (the range then decodes through MMIO alone). */
  map(gpa: number): boolean;
  unmap(): void;
}

/** An MSI route fed by an eventfd (KvmDoorbells.msiIrqfd). */
export interface MsiIrqfd {
  readonly gsi: number;
  /** Sets the message the eventfd injects. */
  route(address: number, data: number): void;
  /** Connects the eventfd to the route (after route()); signals then inject. */
  attach(): void;
  /** Disconnects it: signals stay counted in the eventfd (masked vectors). */
  detach(): void;
  close(): void;
}

export interface HelperThreadData {
  memoryPath: string;
  layout: { lowmem: number; highmem: number };
  /** Rings the device thread (sys/doorbell.ts). */
  doorbell: DoorbellTransfer;
}

/** A running device model. `poll` runs on the device thread whenever the
 * main thread signals that host input may have arrived. */
export interface Device {
  readonly name: string;
  poll?(): void;
  reset?(): void;
  /** Releases host resources (files, locks, sockets) when the VM stops. */
  close?(): void;
  /** Counters for `bhyvectl --get-stats` (which path served a request,
   * which interrupts were sent), by description. */
  stats?(): Record<string, number>;
}
