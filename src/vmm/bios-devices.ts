// The device half of the state a BIOS leaves (src/loader/bios-state.ts
// writes the memory half), applied before the first run of a kernel that
// bhyveload prepared: the in-kernel 8259s, PIT and the BSP's local APIC
// are set through KVM as SeaBIOS leaves them.
//
//   8259 master  ICW2 0x08, ICW4 (8086 mode), IMR 0xf8: IRQ 0 (timer),
//                1 (keyboard) and 2 (cascade) unmasked
//   8259 slave   ICW2 0x70, ICW4, IMR 0xfe: IRQ 8 (RTC) unmasked
//   PIT ch. 0    mode 3 (square wave), lobyte/hibyte, count 0 = 65536:
//                1193182 / 65536 = 18.2 Hz on IRQ 0
//   BSP LAPIC    software-enabled (SVR bit 8), LINT0 ExtINT and LINT1 NMI,
//                level (0x8700, 0x8400: SeaBIOS's values), so the 8259's
//                interrupts reach the CPU in virtual wire mode

import { IRQCHIP, IRQCHIP_STATE, PIC_STATE, PIT_CHANNEL_STATE, PIT_STATE2, SIZEOF } from '../sys/kvm-abi.js';

export const BIOS_PIC = [
  { chip: IRQCHIP.PIC_MASTER, base: 0x08, imr: 0xf8 },
  { chip: IRQCHIP.PIC_SLAVE, base: 0x70, imr: 0xfe },
] as const;
export const PIT_MODE_SQUARE_WAVE = 3;
/** rw_mode/read_state/write_state: lobyte then hibyte (RW_STATE_WORD0). */
export const PIT_RW_WORD = 3;
export const APIC_SVR = 0xf0;
export const APIC_LVT0 = 0x350;
export const APIC_LVT1 = 0x360;
export const APIC_SVR_ENABLE = 0x100;
export const LINT0_EXTINT = 0x8700;
export const LINT1_NMI = 0x8400;

/** One 8259 as an initialisation sequence (ICW1-4, OCW1) leaves it. */
export function biosPic(state: Uint8Array, base: number, imr: number): void {
  const p = IRQCHIP_STATE.chip;
  state[p + PIC_STATE.irq_base] = base;
  state[p + PIC_STATE.imr] = imr;
  state[p + PIC_STATE.irr] = 0;
  state[p + PIC_STATE.isr] = 0;
  state[p + PIC_STATE.last_irr] = 0;
  state[p + PIC_STATE.priority_add] = 0;
  state[p + PIC_STATE.read_reg_select] = 0;
  state[p + PIC_STATE.poll] = 0;
  state[p + PIC_STATE.special_mask] = 0;
  state[p + PIC_STATE.init_state] = 0;
  state[p + PIC_STATE.auto_eoi] = 0;
  state[p + PIC_STATE.rotate_on_auto_eoi] = 0;
  state[p + PIC_STATE.special_fully_nested_mode] = 0;
  state[p + PIC_STATE.init4] = 1;
}

/** PIT channel 0 programmed for the BIOS tick (the other channels kept). */
export function biosPit(state: Uint8Array): void {
  const c = PIT_STATE2.channels;
  const dv = new DataView(state.buffer, state.byteOffset, SIZEOF.kvm_pit_state2);
  dv.setUint32(c + PIT_CHANNEL_STATE.count, 0, true); // 0 = 65536
  state[c + PIT_CHANNEL_STATE.mode] = PIT_MODE_SQUARE_WAVE;
  state[c + PIT_CHANNEL_STATE.rw_mode] = PIT_RW_WORD;
  state[c + PIT_CHANNEL_STATE.read_state] = PIT_RW_WORD;
  state[c + PIT_CHANNEL_STATE.write_state] = PIT_RW_WORD;
  state[c + PIT_CHANNEL_STATE.bcd] = 0;
  state[c + PIT_CHANNEL_STATE.gate] = 1;
  state[c + PIT_CHANNEL_STATE.count_latched] = 0;
  state[c + PIT_CHANNEL_STATE.status_latched] = 0;
}

/** The BSP's local APIC in virtual wire mode. */
export function biosLapic(regs: Uint8Array): void {
  const dv = new DataView(regs.buffer, regs.byteOffset, SIZEOF.kvm_lapic_state);
  dv.setUint32(APIC_SVR, dv.getUint32(APIC_SVR, true) | APIC_SVR_ENABLE, true);
  dv.setUint32(APIC_LVT0, LINT0_EXTINT, true);
  dv.setUint32(APIC_LVT1, LINT1_NMI, true);
}

export interface BiosDeviceTarget {
  getIrqchip(chip: number): Uint8Array;
  setIrqchip(state: Uint8Array): void;
  getPit2(): Uint8Array;
  setPit2(state: Uint8Array): void;
}
export interface BiosLapicTarget {
  getLapic(): Uint8Array;
  setLapic(state: Uint8Array): void;
}

/** Applies the BIOS's device state to the VM and its boot vCPU. */
export function applyBiosDevices(vm: BiosDeviceTarget, bsp: BiosLapicTarget): void {
  for (const { chip, base, imr } of BIOS_PIC) {
    const s = vm.getIrqchip(chip);
    biosPic(s, base, imr);
    vm.setIrqchip(s);
  }
  const pit = vm.getPit2();
  biosPit(pit);
  vm.setPit2(pit);
  const lapic = bsp.getLapic();
  biosLapic(lapic);
  bsp.setLapic(lapic);
}
