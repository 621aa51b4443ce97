// The I/O buses a vCPU's exits are routed to. LocalIoBus holds the port and
// MMIO registries of the device models on this thread; a vCPU that does not
// own the devices uses a forwarding bus instead (see ap-mailbox.ts).

import type { AccessSize, IoRegistrar, MmioHandler, PortIoHandler } from '../devices/device.js';
import { RangeRegistry } from './range-registry.js';
import type { CoalescedMmioRing } from '../sys/coalesced-mmio.js';

export interface IoBus {
  /** The value read, or undefined when no device decodes the port. */
  portRead(port: number, size: AccessSize): number | undefined;
  /** False when no device decodes the port. */
  portWrite(port: number, size: AccessSize, value: number): boolean;
  /** False when no device decodes the address (data left untouched). */
  mmioRead(addr: number, data: Uint8Array): boolean;
  mmioWrite(addr: number, data: Uint8Array): boolean;
}

export class LocalIoBus implements IoBus, IoRegistrar {
  readonly ports = new RangeRegistry<PortIoHandler>('I/O port');
  readonly mmio = new RangeRegistry<MmioHandler>('MMIO');
  /** KVM's coalesced MMIO ring, when devices buffer writes in it: its
   * writes are replayed before any other access reaches a device. */
  private ring: CoalescedMmioRing | undefined;
  /** Buffered writes replayed so far (diagnostics, tests). */
  coalescedWrites = 0;
  /** True while a buffered write is being handed to its device. */
  replaying = false;

  attachCoalescedRing(ring: CoalescedMmioRing): void {
    this.ring = ring;
  }

  /** Replays the writes KVM buffered in the coalesced ring, in order. */
  flushCoalesced(): void {
    const ring = this.ring;
    if (ring === undefined || !ring.pending || this.replaying) return;
    this.replaying = true;
    try {
      this.coalescedWrites += this.drainRing(ring);
    } finally {
      this.replaying = false;
    }
  }

  private drainRing(ring: CoalescedMmioRing): number {
    return ring.drain((addr, data, pio) => {
      if (!pio) { this.mmio.find(addr)?.handler.write(addr, data); return; }
      if (data.length > 4) return; // no 8-byte port writes
      let value = 0;
      for (let i = data.length - 1; i >= 0; i--) value = value * 256 + data[i];
      this.ports.find(addr)?.handler.write(addr, data.length as AccessSize, value);
    });
  }

  registerPorts(name: string, base: number, length: number, handler: PortIoHandler): void {
    if (base + length > 0x10000) throw new RangeError(`I/O port range of ${name} ends past 0xffff`);
    this.ports.register(name, base, length, handler);
  }

  registerMmio(name: string, base: number, length: number, handler: MmioHandler): void {
    this.mmio.register(name, base, length, handler);
  }

  unregisterPorts(base: number): boolean {
    return this.ports.unregister(base);
  }

  unregisterMmio(base: number): boolean {
    return this.mmio.unregister(base);
  }

  portRead(port: number, size: AccessSize): number | undefined {
    if (this.ring !== undefined) this.flushCoalesced();
    const r = this.ports.find(port);
    return r ? r.handler.read(port, size) : undefined;
  }

  portWrite(port: number, size: AccessSize, value: number): boolean {
    if (this.ring !== undefined) this.flushCoalesced();
    const r = this.ports.find(port);
    if (!r) return false;
    r.handler.write(port, size, value);
    return true;
  }

  mmioRead(addr: number, data: Uint8Array): boolean {
    if (this.ring !== undefined) this.flushCoalesced();
    const r = this.mmio.find(addr);
    if (!r) return false;
    r.handler.read(addr, data);
    return true;
  }

  mmioWrite(addr: number, data: Uint8Array): boolean {
    if (this.ring !== undefined) this.flushCoalesced();
    const r = this.mmio.find(addr);
    if (!r) return false;
    r.handler.write(addr, data);
    return true;
  }
}
