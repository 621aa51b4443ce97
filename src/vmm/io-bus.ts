// The I/O buses a vCPU's exits are routed to. LocalIoBus holds the port and
// MMIO registries of the device models on this thread; a vCPU that does not
// own the devices uses a forwarding bus instead (see ap-mailbox.ts).

import type { AccessSize, IoRegistrar, MmioHandler, PortIoHandler } from '../devices/device.js';
import { RangeRegistry } from './range-registry.js';

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
    const r = this.ports.find(port);
    return r ? r.handler.read(port, size) : undefined;
  }

  portWrite(port: number, size: AccessSize, value: number): boolean {
    const r = this.ports.find(port);
    if (!r) return false;
    r.handler.write(port, size, value);
    return true;
  }

  mmioRead(addr: number, data: Uint8Array): boolean {
    const r = this.mmio.find(addr);
    if (!r) return false;
    r.handler.read(addr, data);
    return true;
  }

  mmioWrite(addr: number, data: Uint8Array): boolean {
    const r = this.mmio.find(addr);
    if (!r) return false;
    r.handler.write(addr, data);
    return true;
  }
}
