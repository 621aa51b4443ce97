// QEMU's ISA debug console (isa-debugcon, hw/char/debugcon.c) at I/O port
// 0x402, where SeaBIOS (and OVMF's debug builds) print their debug log.
// Enabled by `lpc.debugcon.path`: `stdio` (or `stderr`) sends the log to
// bhyve's standard error (standard output usually carries COM1), anything
// else names a file that is created or truncated. A read returns 0xe9, the
// value by which SeaBIOS recognises an active debug console (without one
// the port reads all-ones and SeaBIOS stays quiet).
//
// bhyve's PM1a_EN register (16-bit, 0x402-0x403) shares the port. QEMU
// moves its ACPI PM block away (SeaBIOS programs the PIIX4 PM base); our PM
// block stays at bhyve's 0x400, so with a debug console byte accesses of
// 0x402 are the console and 16-bit accesses stay PM1a_EN (ACPI accesses
// PM1 registers at their full width). See DebugCon.overPm().

import { fsPath } from '../config/raw-argv.js';
import fs from 'node:fs';
import type { AccessSize, Device, DeviceContext, PortIoHandler } from '../devices/device.js';
import { ConfigError } from '../config/tree.js';

export const DEBUGCON_PORT = 0x402;
export const DEBUGCON_READBACK = 0xe9;

export class DebugCon implements Device {
  readonly name = 'debugcon';
  private fd: number;
  private readonly ownFd: boolean;
  private buf: number[] = [];

  constructor(ctx: Pick<DeviceContext, 'io'>, path: string, port = DEBUGCON_PORT, opts: { register: boolean } = { register: true }) {
    if (path === 'stdio' || path === 'stderr') {
      this.fd = 2;
      this.ownFd = false;
    } else {
      try {
        this.fd = fs.openSync(fsPath(path), 'w');
      } catch (e) {
        throw new ConfigError(`lpc.debugcon.path: cannot open '${path}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
      this.ownFd = true;
    }
    if (!opts.register) return;
    ctx.io.registerPorts('debugcon', port, 1, this.ports);
  }

  readonly ports: PortIoHandler = {
    read: (_p: number, _s: AccessSize) => DEBUGCON_READBACK,
    write: (_p: number, _s: AccessSize, v: number) => this.put(v & 0xff),
  };

  /** A handler for a port range that contains the console's port and
   * belongs to `other` for everything but byte accesses of that port. */
  overPm(other: PortIoHandler, port = DEBUGCON_PORT): PortIoHandler {
    return {
      read: (p, size) => (p === port && size === 1 ? DEBUGCON_READBACK : other.read(p, size)),
      write: (p, size, v) => { if (p === port && size === 1) this.put(v & 0xff); else other.write(p, size, v); },
    };
  }

  private put(b: number): void {
    this.buf.push(b);
    if (b === 0x0a || this.buf.length >= 4096) this.flush();
  }

  flush(): void {
    if (this.buf.length === 0 || this.fd < 0) return;
    const bytes = Uint8Array.from(this.buf);
    this.buf = [];
    try { fs.writeSync(this.fd, bytes); } catch { /* a closed log must not stop the guest */ }
  }

  close(): void {
    this.flush();
    if (this.ownFd && this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
  }
}
