// PCI configuration mechanism #1 and the table of functions behind it, as
// bhyve's pci_emul.c (pci_emul_cfgaddr, pci_emul_cfgdata, pci_cfgrw):
//
//   CONFIG_ADDRESS 0xcf8, 32-bit only: bit 31 enable, bits 23-16 bus,
//     15-11 device, 10-8 function, 7-2 register. Narrower accesses read
//     all-ones and are ignored on write (0xcf9 is the reset control
//     register, a separate device; see pm.ts).
//   CONFIG_DATA 0xcfc-0xcff: 1, 2 or 4 bytes; the register offset is the
//     dword from CONFIG_ADDRESS plus (port - 0xcfc).
//
// Absent functions, disabled CONFIG_ADDRESS and unaligned accesses read
// all-ones and drop writes. The multi-function bit of the header type is
// computed on every read from whether the slot holds more than one function.
//
// configRead/configWrite take (bus, slot, func, offset) so a later ECAM
// window (bhyve: 0xe0000000, 1 MiB per bus) can share the same table.

import type { AccessSize, Device, DeviceContext, MmioHandler, PortIoHandler } from '../device.js';
import { PCI_EMUL_ECFG_BASE, PCI_EMUL_ECFG_SIZE } from './bar-alloc.js';
import {
  PCIM_MFDEV, PCIR_COMMAND, PCIR_HDRTYPE, PCIR_REVID,
} from './config-space.js';
import type { PciFunction } from './pci-function.js';

export const CONF1_ADDR_PORT = 0xcf8;
export const CONF1_DATA_PORT = 0xcfc;
export const CONF1_ENABLE = 0x80000000;

export const PCI_BUSMAX = 255;
export const PCI_SLOTMAX = 31;
export const PCI_FUNCMAX = 7;

function ones(size: number): number {
  return size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
}

function key(bus: number, slot: number, func: number): number {
  return (bus << 8) | (slot << 3) | func;
}

export class PciBus implements Device {
  readonly name = 'pci';
  private readonly funcs = new Map<number, PciFunction>();
  private cfgEnable = false;
  private cfgBus = 0;
  private cfgSlot = 0;
  private cfgFunc = 0;
  private cfgOff = 0;

  /** Places a function at bus:slot:func; throws when the place is taken. */
  attach(bus: number, slot: number, func: number, fn: PciFunction): void {
    if (!Number.isInteger(bus) || bus < 0 || bus > PCI_BUSMAX
      || !Number.isInteger(slot) || slot < 0 || slot > PCI_SLOTMAX
      || !Number.isInteger(func) || func < 0 || func > PCI_FUNCMAX) {
      throw new RangeError(`invalid PCI address ${bus}:${slot}:${func} (bus 0-255, slot 0-31, function 0-7)`);
    }
    const k = key(bus, slot, func);
    if (this.funcs.has(k)) throw new Error(`pci slot ${bus}:${slot}:${func} already occupied!`);
    fn.address = { bus, slot, func };
    this.funcs.set(k, fn);
  }

  lookup(bus: number, slot: number, func: number): PciFunction | undefined {
    return this.funcs.get(key(bus, slot, func));
  }

  /** All attached functions in bus/slot/function order. */
  functions(): PciFunction[] {
    return [...this.funcs.entries()].sort((a, b) => a[0] - b[0]).map(([, f]) => f);
  }

  /** Buses that hold at least one function. */
  buses(): number[] {
    return [...new Set([...this.funcs.keys()].map((k) => k >> 8))].sort((a, b) => a - b);
  }

  /** True when more than one function sits in the slot (bhyve's pci_emul_is_mfdev). */
  isMultiFunction(bus: number, slot: number): boolean {
    let n = 0;
    for (let f = 0; f <= PCI_FUNCMAX; f++) if (this.funcs.has(key(bus, slot, f))) n++;
    return n > 1;
  }

  /** Registers CONFIG_ADDRESS (0xcf8, one port: 0xcf9 belongs to the reset
   * register) and CONFIG_DATA (0xcfc-0xcff). */
  register(ctx: Pick<DeviceContext, 'io'>): void {
    const addr: PortIoHandler = {
      read: (_port, size) => this.addrRead(size),
      write: (_port, size, value) => this.addrWrite(size, value),
    };
    const data: PortIoHandler = {
      read: (port, size) => this.dataRead(port, size),
      write: (port, size, value) => this.dataWrite(port, size, value),
    };
    ctx.io.registerPorts('pci-cfgaddr', CONF1_ADDR_PORT, 1, addr);
    ctx.io.registerPorts('pci-cfgdata', CONF1_DATA_PORT, 4, data);
  }

  /** Registers the PCIe enhanced configuration window (ECAM): 4 KiB per
   * function, 1 MiB per bus, at bhyve's PCI_EMUL_ECFG_BASE. Accesses of 1,
   * 2 or 4 aligned bytes reach configRead/configWrite; others read all-ones
   * and are dropped, as bhyve's pci_emul_ecfg_handler does. */
  registerEcam(ctx: Pick<DeviceContext, 'io'>, base = PCI_EMUL_ECFG_BASE, size = PCI_EMUL_ECFG_SIZE): void {
    const decode = (addr: number) => {
      const rel = addr - base;
      return { bus: (rel >>> 20) & PCI_BUSMAX, slot: (rel >>> 15) & PCI_SLOTMAX, func: (rel >>> 12) & PCI_FUNCMAX, coff: rel & 0xfff };
    };
    const h: MmioHandler = {
      read: (addr, data) => {
        const n = data.length;
        let v = 0xffffffff;
        if (n === 1 || n === 2 || n === 4) {
          const a = decode(addr);
          v = this.configRead(a.bus, a.slot, a.func, a.coff, n);
        }
        for (let i = 0; i < n; i++) data[i] = i < 4 ? (v >>> (8 * i)) & 0xff : 0xff;
      },
      write: (addr, data) => {
        const n = data.length;
        if (n !== 1 && n !== 2 && n !== 4) return;
        let v = 0;
        for (let i = 0; i < n; i++) v |= data[i] << (8 * i);
        const a = decode(addr);
        this.configWrite(a.bus, a.slot, a.func, a.coff, n, v >>> 0);
      },
    };
    ctx.io.registerMmio('pci-ecfg', base, size, h);
  }

  // ---- mechanism #1 ----

  addrRead(size: AccessSize): number {
    if (size !== 4) return ones(size);
    let x = (this.cfgBus << 16) | (this.cfgSlot << 11) | (this.cfgFunc << 8) | this.cfgOff;
    if (this.cfgEnable) x |= CONF1_ENABLE;
    return x >>> 0;
  }

  addrWrite(size: AccessSize, value: number): void {
    if (size !== 4) return;
    const x = value >>> 0;
    this.cfgEnable = (x & CONF1_ENABLE) !== 0;
    this.cfgOff = x & 0xfc;
    this.cfgFunc = (x >>> 8) & PCI_FUNCMAX;
    this.cfgSlot = (x >>> 11) & PCI_SLOTMAX;
    this.cfgBus = (x >>> 16) & PCI_BUSMAX;
  }

  dataRead(port: number, size: AccessSize): number {
    if (!this.cfgEnable) return ones(size);
    const coff = this.cfgOff + (port - CONF1_DATA_PORT);
    return this.configRead(this.cfgBus, this.cfgSlot, this.cfgFunc, coff, size);
  }

  dataWrite(port: number, size: AccessSize, value: number): void {
    if (!this.cfgEnable) return;
    const coff = this.cfgOff + (port - CONF1_DATA_PORT);
    this.configWrite(this.cfgBus, this.cfgSlot, this.cfgFunc, coff, size, value);
  }

  // ---- config access shared by all mechanisms ----

  configRead(bus: number, slot: number, func: number, coff: number, size: number): number {
    const fn = this.funcs.get(key(bus, slot, func));
    if (!fn || (size !== 1 && size !== 2 && size !== 4) || (coff & (size - 1)) !== 0) return ones(size);
    let v = fn.cfgRead?.(coff, size);
    if (v === undefined) v = fn.cfg.guestRead(coff, size);
    // Multi-function bit of the header type byte (pci_emul_hdrtype_fixup).
    if (coff <= PCIR_HDRTYPE && coff + size > PCIR_HDRTYPE) {
      const bit = PCIM_MFDEV << (8 * (PCIR_HDRTYPE - coff));
      v = this.isMultiFunction(bus, slot) ? (v | bit) : (v & ~bit);
    }
    return (v & ones(size)) >>> 0;
  }

  configWrite(bus: number, slot: number, func: number, coff: number, size: number, value: number): void {
    const fn = this.funcs.get(key(bus, slot, func));
    if (!fn || (size !== 1 && size !== 2 && size !== 4) || (coff & (size - 1)) !== 0) return;
    value = (value & ones(size)) >>> 0;
    if (fn.cfgWrite?.(coff, size, value)) return;
    const touchesCommand = coff < PCIR_COMMAND + 2 && coff + size > PCIR_COMMAND && coff < PCIR_REVID;
    const oldCmd = fn.cfg.get16(PCIR_COMMAND);
    fn.cfg.guestWrite(coff, size, value);
    if (touchesCommand) {
      const newCmd = fn.cfg.get16(PCIR_COMMAND);
      if (newCmd !== oldCmd) fn.commandChanged?.(oldCmd, newCmd);
    }
  }
}

