// What a PCI function model offers the bus: its configuration space, its
// BAR table, and optional hooks that override the default config access
// rules (bhyve's pe_cfgread / pe_cfgwrite, and pci_emul_cmd_changed).

import type { Device } from '../device.js';
import { emptyBarTable, PciConfigSpace, PCI_CONFIG_SIZE, type PciBar } from './config-space.js';

export interface PciAddress {
  bus: number;
  slot: number;
  func: number;
}

export interface PciFunction {
  /** "<emulation>@pci.B.S.F", as bhyve's pi_name. */
  readonly name: string;
  readonly cfg: PciConfigSpace;
  /** BAR 0-5 and the ROM (index 6); all 'none' until BARs are implemented. */
  readonly bars: PciBar[];
  /** Where the function sits; set by PciBus.attach. */
  address?: PciAddress;
  /** Returns a value to override the default read, or undefined. */
  cfgRead?(off: number, size: number): number | undefined;
  /** Returns true when the write was fully handled by the device. */
  cfgWrite?(off: number, size: number, value: number): boolean;
  /** Called after a guest write changed the command register. */
  commandChanged?(oldCommand: number, newCommand: number): void;
}

/** Convenience base for PCI function models that are also Devices. */
export abstract class PciFunctionBase implements PciFunction, Device {
  readonly cfg: PciConfigSpace;
  readonly bars: PciBar[] = emptyBarTable();
  address?: PciAddress;

  constructor(readonly emulation: string, configSize: number = PCI_CONFIG_SIZE) {
    this.cfg = new PciConfigSpace(configSize);
  }

  get name(): string {
    const a = this.address;
    return a ? `${this.emulation}@pci.${a.bus}.${a.slot}.${a.func}` : this.emulation;
  }
}
