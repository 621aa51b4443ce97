// QEMU's PIIX4_PM (hw/acpi/piix4.c) as the QEMU personality shows it: the
// Intel 82371AB/EB power-management function, 8086:7113 revision 3, class
// 06/80 (bridge, other), with QEMU's subsystem ids. SeaBIOS and OVMF built
// for QEMU find it by its ids and program its PM base; here that base moves
// the registers of the platform's one PowerManagement (pm.ts) rather than a
// second copy of them.
//
// Config registers beyond the header:
//   0x40 PMBA      32-bit PM I/O base: bits 15-6 writable (64-byte aligned),
//                  bit 0 hardwired to 1 (I/O space indicator), the rest 0
//   0x80 PMREGMISC bit 0 (PMIOSE) enables decoding of the PM I/O space
//   0x58 DEVACTB   byte 0x5b reads 0x02 (APMC_EN): no SMM is emulated, so,
//                  as QEMU does when SMM is off, SMM init is marked done and
//                  SeaBIOS (bios-256k.bin, built with SMM) does not wait for
//                  an SMI that never comes; read-only
// Any write that touches either re-applies them: the PM block is decoded at
// (PMBA & 0xffc0) while PMIOSE is set (PowerManagement.relocate). The SMBus
// registers (0x90 SMBBA, 0xd2 SMBHSTCFG) are plain storage: no SMBus
// controller is emulated.
//
// Reset state: unlike QEMU (PMBA 0x01, PMIOSE clear), PMBA reads 0x401 and
// PMIOSE is set, because bhyve's block at 0x400 is decoded from power-on and
// the FADT this platform builds says 0x400; config space so tells the truth.
// Firmware may move the block (SeaBIOS writes PMBA 0x601, "Moving pm_base to
// 0x600"): then it is decoded at 0x600 as well, and bhyve's 0x400 block, the
// one the FADT describes, keeps working (see pm.ts).
//
// Interrupt pin 0: the SCI is ISA IRQ 9 (pm.ts), not a PCI INTx line, so no
// PIRQ is spent on it and the ACPI _PRT is unchanged (QEMU reports pin A but
// also wires the SCI to IRQ 9; firmware writes 9 to the interrupt line).

import type { Device } from '../device.js';
import type { PowerManagement } from '../lpc/pm.js';
import { PCIC_BRIDGE, PCIM_HDRTYPE_NORMAL } from './config-space.js';
import { QEMU_SUBDEVICE, QEMU_SUBVENDOR } from './i440fx.js';
import { PciFunctionBase } from './pci-function.js';

export const PIIX4_PM_VENDOR = 0x8086;
export const PIIX4_PM_DEVICE = 0x7113;
export const PIIX4_PM_REVISION = 0x03;
export const PCIS_BRIDGE_OTHER = 0x80;
export const PIIX4_PMBA = 0x40;
export const PIIX4_PMREGMISC = 0x80;
export const PIIX4_PMIOSE = 0x01;
export const PIIX4_PMBA_MASK = 0xffc0;
export const PIIX4_DEVACTB = 0x58;
/** DEVACTB bit 25: SMI on writes to the APM control port (0xb2). */
export const PIIX4_DEVACTB_APMC_EN = 1 << 25;
/** The function QEMU's pc machine gives it in the ISA bridge's slot (0:1.3). */
export const PIIX4_PM_FUNC = 3;
const PMBA_RESET = 0x0400 | 0x01;
const SCI_IRQ = 9;

export class Piix4Pm extends PciFunctionBase implements Device {
  private pm?: PowerManagement;

  constructor() {
    super('piix4-pm');
    this.cfg.setIdentity({
      vendor: PIIX4_PM_VENDOR, device: PIIX4_PM_DEVICE, revision: PIIX4_PM_REVISION,
      classCode: PCIC_BRIDGE, subclass: PCIS_BRIDGE_OTHER, headerType: PCIM_HDRTYPE_NORMAL,
      subVendor: QEMU_SUBVENDOR, subDevice: QEMU_SUBDEVICE,
    });
    this.cfg.setWritable(PIIX4_PMBA, 4, PIIX4_PMBA_MASK);
    this.cfg.setWritable(PIIX4_PMREGMISC, 1, PIIX4_PMIOSE);
    this.cfg.setReadOnly(PIIX4_DEVACTB + 3, 1);
    this.cfg.set8(PIIX4_DEVACTB + 3, PIIX4_DEVACTB_APMC_EN >>> 24);
    this.resetRegisters();
  }

  /** Connects the PowerManagement whose block PMBA moves, and applies the
   * registers' current state to it. */
  bindPm(pm: PowerManagement): void {
    this.pm = pm;
    this.apply();
  }

  /** Where PMBA/PMREGMISC put the PM block now, or undefined when off. */
  get pmBase(): number | undefined {
    if ((this.cfg.get8(PIIX4_PMREGMISC) & PIIX4_PMIOSE) === 0) return undefined;
    return this.cfg.get32(PIIX4_PMBA) & PIIX4_PMBA_MASK;
  }

  cfgWrite(off: number, size: number, value: number): boolean {
    this.cfg.guestWrite(off, size, value);
    const touches = (reg: number, len: number): boolean => off < reg + len && off + size > reg;
    if (touches(PIIX4_PMBA, 4) || touches(PIIX4_PMREGMISC, 1)) this.apply();
    return true;
  }

  reset(): void {
    this.resetRegisters();
    this.apply();
  }

  private resetRegisters(): void {
    this.cfg.set32(PIIX4_PMBA, PMBA_RESET);
    this.cfg.set8(PIIX4_PMREGMISC, PIIX4_PMIOSE);
    this.cfg.set8(0x3c, SCI_IRQ); // interrupt line: the SCI
  }

  private apply(): void {
    this.pm?.relocate(this.pmBase);
  }
}
