// The host bridge as QEMU's "pc" machine shows it (hw/pci-host/i440fx.c):
// an Intel 82441FX PMC, 8086:1237 revision 2, class 06/00, with QEMU's
// subsystem ids 1af4:1100 (SeaBIOS checks these to know it runs on QEMU
// hardware) and the PAM registers at 0x59-0x5f that shadow the legacy BIOS
// window (pam.ts). bhyve uses this personality with lpc.fwcfg=qemu, where
// the firmware is QEMU's (SeaBIOS, OVMF built for QEMU).
//
// Config registers beyond the header: PAM0-PAM6 (0x59-0x5f, reset 0), the
// SMRAM control register (0x72, reset 0x02: SMRAM closed, C_BASE_SEG 010,
// as QEMU; no SMRAM is emulated, its value is only stored). The rest of the
// device-specific area is plain storage, as in PciConfigSpace.

import type { Device } from '../device.js';
import { PCIC_BRIDGE, PCIM_HDRTYPE_NORMAL, PCIS_BRIDGE_HOST } from './config-space.js';
import { I440FX_PAM0, PAM_REGS, type PamShadow } from './pam.js';
import { PciFunctionBase } from './pci-function.js';

export const I440FX_VENDOR = 0x8086;
export const I440FX_DEVICE = 0x1237;
export const I440FX_REVISION = 0x02;
/** QEMU's default PCI subsystem ids (Red Hat / QEMU virtual machine). */
export const QEMU_SUBVENDOR = 0x1af4;
export const QEMU_SUBDEVICE = 0x1100;
export const I440FX_SMRAM = 0x72;
const SMRAM_RESET = 0x02;

export class I440fxHostBridge extends PciFunctionBase implements Device {
  constructor(private readonly pam?: PamShadow) {
    super('hostbridge');
    this.cfg.setIdentity({
      vendor: I440FX_VENDOR, device: I440FX_DEVICE, revision: I440FX_REVISION,
      classCode: PCIC_BRIDGE, subclass: PCIS_BRIDGE_HOST, headerType: PCIM_HDRTYPE_NORMAL,
      subVendor: QEMU_SUBVENDOR, subDevice: QEMU_SUBDEVICE,
    });
    this.cfg.set8(I440FX_SMRAM, SMRAM_RESET);
    // The reserved low nibble of PAM0 reads as 0.
    this.cfg.wmask[I440FX_PAM0] = 0x30;
    for (let i = 1; i < PAM_REGS; i++) this.cfg.wmask[I440FX_PAM0 + i] = 0x33;
  }

  cfgWrite(off: number, size: number, value: number): boolean {
    this.cfg.guestWrite(off, size, value);
    if (off < I440FX_PAM0 + PAM_REGS && off + size > I440FX_PAM0) this.syncPam();
    return true;
  }

  private syncPam(): void {
    if (!this.pam) return;
    const regs = Array.from({ length: PAM_REGS }, (_, i) => this.cfg.get8(I440FX_PAM0 + i));
    this.pam.setRegisters(regs);
  }

  reset(): void {
    for (let i = 0; i < PAM_REGS; i++) this.cfg.set8(I440FX_PAM0 + i, 0);
    this.cfg.set8(I440FX_SMRAM, SMRAM_RESET);
    this.pam?.reset();
  }
}
