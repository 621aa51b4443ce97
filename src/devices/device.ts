// The interface between device models and the vmm core. A device model sees
// only this: address-range registration for port I/O and MMIO, interrupt
// lines, bounds-checked guest memory, its own config node, and a way to end
// the run. It never reaches into KVM or the run loop.

import type { ConfigTree } from '../config/tree.js';
import type { GuestMemory } from '../vmm/guest-memory.js';
import type { ExitRequest } from '../vmm/exit-status.js';

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
}

/** A running device model. `poll` runs on the device thread whenever the
 * main thread signals that host input may have arrived. */
export interface Device {
  readonly name: string;
  poll?(): void;
  reset?(): void;
}
