// The UEFI variable store below the boot ROM (`-l bootrom,ROM,VARS`,
// lpc.bootvars), written by the guest through CFI flash commands as bhyve's
// bootrom.c lets EDK II do, so that variables persist across runs.
//
// bhyve's handler emulates the few Intel/Sharp basic command set commands
// that convince EDK II's flash driver (QemuFlashFvbServicesRuntimeDxe, and
// bhyve's own BhyvePkg) that the firmware volume is writable flash:
//   0x10 / 0x40  program: the next write stores its bytes in the VARS file
//   0x20 + 0xd0  block erase (4 KiB blocks, as QEMU's OVMF flash; bhyve
//                does not erase, EDK II's QemuFlash does issue it)
//   0x50         clear status (back to read-array, as QEMU's pflash)
//   0x70         read status (reads return the status register)
//   0xff         read array (reads return the file's bytes)
// Any other command returns to read-array. The status register reads 0x80
// (ready) at reset and after every program/erase, 0x00 after a clear, so
// EDK II's probe (0x50, then 0x70 reads 0x00) detects "FLASH"; a bad erase
// confirm sets the command-sequence error bits (0x30), as QEMU.
//
// Reads must go to the file in read-array mode and to the status register
// otherwise. In read-array mode the file is mapped read-only into the guest
// (a KVM slot owned by the device thread, ctx.memoryMap) so reads cost no
// exit and writes exit here as MMIO; any other mode unmaps the slot so that
// reads trap too (QEMU's "romd" mode off), and read-array maps it back.
//
// Stores reach the file through a shared mapping; on the way back to
// read-array after a program/erase, and at close, the file is fdatasync'ed
// so that a variable the firmware saw written is on disk.

import { fsPath } from '../../config/raw-argv.js';
import fs from 'node:fs';
import { bootromPlacement } from '../../vmm/bootrom.js';
import type { Device, DeviceContext, MemoryMapControl } from '../device.js';

export const CFI_PROGRAM = 0x10;
export const CFI_PROGRAM_ALT = 0x40;
export const CFI_BLOCK_ERASE = 0x20;
export const CFI_CONFIRM = 0xd0;
export const CFI_CLEAR_STATUS = 0x50;
export const CFI_READ_STATUS = 0x70;
export const CFI_READ_ARRAY = 0xff;

export const CFI_STATUS_READY = 0x80;
/** Erase error + program error: "improper command sequence". */
export const CFI_STATUS_SEQUENCE_ERROR = 0x30;
/** Erase block size of QEMU's OVMF flash (and EDK II's QEMU_FLASH_BLOCK_SIZE). */
export const CFI_BLOCK_SIZE = 0x1000;

type Mode = 'array' | 'status' | 'program' | 'erase';

export interface BootVarsOptions {
  path: string;
  gpa: number;
  size: number;
}

export class BootVars implements Device {
  readonly name = 'bootvars';
  /** The flash's mode (what the next read returns / the next write means). */
  mode: Mode = 'array';
  status = CFI_STATUS_READY;
  private mapped = false;
  private dirty = false;
  private fd: number | undefined;
  private readonly bytes: Uint8Array;

  constructor(ctx: DeviceContext, private readonly map: MemoryMapControl, readonly opts: BootVarsOptions) {
    this.bytes = map.view({ kind: 'bootvars', offset: 0 }, opts.size);
    this.fd = fs.openSync(fsPath(opts.path), 'r+');
    ctx.io.registerMmio('bootvars', opts.gpa, opts.size, {
      read: (addr, data) => this.read(addr - opts.gpa, data),
      write: (addr, data) => this.write(addr - opts.gpa, data),
    });
    this.setRomd(true);
  }

  /** The VARS file's contents as the guest sees them in read-array mode. */
  get contents(): Uint8Array {
    return this.bytes;
  }

  read(off: number, data: Uint8Array): void {
    if (off < 0 || off + data.length > this.opts.size) { data.fill(0xff); return; }
    if (this.mode === 'array') data.set(this.bytes.subarray(off, off + data.length));
    else data.fill(this.status);
  }

  write(off: number, data: Uint8Array): void {
    if (off < 0 || off + data.length > this.opts.size || data.length === 0) return;
    switch (this.mode) {
      case 'program':
        // bhyve stores the whole access (EDK II writes one byte at a time).
        this.bytes.set(data, off);
        this.dirty = true;
        this.status |= CFI_STATUS_READY;
        this.enter('status');
        return;
      case 'erase':
        if (data[0] === CFI_CONFIRM) {
          const base = off - (off % CFI_BLOCK_SIZE);
          this.bytes.fill(0xff, base, Math.min(base + CFI_BLOCK_SIZE, this.opts.size));
          this.dirty = true;
          this.status |= CFI_STATUS_READY;
        } else {
          this.status |= CFI_STATUS_SEQUENCE_ERROR;
        }
        this.enter('status');
        return;
      default:
        this.command(data[0]);
    }
  }

  private command(cmd: number): void {
    switch (cmd) {
      case CFI_PROGRAM:
      case CFI_PROGRAM_ALT:
        this.enter('program');
        break;
      case CFI_BLOCK_ERASE:
        this.enter('erase');
        break;
      case CFI_CLEAR_STATUS:
        this.status = 0;
        this.enter('array');
        break;
      case CFI_READ_STATUS:
        this.enter('status');
        break;
      default: // CFI_READ_ARRAY and anything we do not emulate
        this.enter('array');
        break;
    }
  }

  private enter(mode: Mode): void {
    this.mode = mode;
    if (mode === 'array') this.flush();
    this.setRomd(mode === 'array');
  }

  private setRomd(on: boolean): void {
    if (on === this.mapped) return;
    if (on) this.map.map(this.opts.gpa, this.opts.size, { kind: 'bootvars', offset: 0 }, true);
    else this.map.unmap(this.opts.gpa);
    this.mapped = on;
  }

  /** Puts what the guest wrote on disk. */
  flush(): void {
    if (!this.dirty || this.fd === undefined) return;
    fs.fdatasyncSync(this.fd);
    this.dirty = false;
  }

  reset(): void {
    this.status = CFI_STATUS_READY;
    this.enter('array');
  }

  close(): void {
    this.flush();
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }
}

/** The VARS flash for `lpc.bootvars`, placed as bhyve places it (right below
 * the boot ROM); undefined without a VARS file or a memory map to put it in. */
export function createBootVars(ctx: DeviceContext): BootVars | undefined {
  const rom = ctx.config.get('lpc.bootrom');
  const path = ctx.config.get('lpc.bootvars');
  if (rom === undefined || path === undefined || !ctx.memoryMap) return undefined;
  const size = fs.statSync(path).size;
  const { varsGpa } = bootromPlacement(fs.statSync(rom).size, size);
  return new BootVars(ctx, ctx.memoryMap, { path, gpa: varsGpa, size });
}
