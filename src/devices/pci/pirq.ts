// The 8-pin PCI interrupt router of bhyve's pci_irq.c (ICH10-compatible):
// eight PIRQ registers, PIRQA-D at LPC config 0x60-0x63 and PIRQE-H at
// 0x68-0x6b. Each register is bit 7 "disabled" plus an ISA IRQ in bits 3-0;
// only IRQs 3-7, 9-12 and 14-15 are valid routes. A pin asserted while its
// register is rewritten moves its interrupt to the new IRQ.
//
// Extension point for legacy INTx: the PCI engineer who adds INTx calls
// useIrq/reserveIrq while devices are created, allocPin() to route a slot's
// pin, and assert/deassert from the device. No device uses INTx yet.

import type { InterruptSink } from '../device.js';

export const NPIRQS = 8;
export const PIRQ_DIS = 0x80;
export const PIRQ_IRQ = 0x0f;
/** IRQs 3-7, 9-12 and 14-15. */
export const PERMITTED_IRQS = 0xdef8;
const NIRQ_COUNTS = 16;
const IRQ_DISABLED = 0xff;

export function irqPermitted(irq: number): boolean {
  return ((1 << irq) & PERMITTED_IRQS) !== 0;
}

function validRoute(reg: number): boolean {
  return (reg & PIRQ_DIS) === 0 && irqPermitted(reg & PIRQ_IRQ);
}

export class PirqRouter {
  private readonly regs = new Uint8Array(NPIRQS).fill(PIRQ_DIS);
  private readonly useCount = new Array<number>(NPIRQS).fill(0);
  private readonly activeCount = new Array<number>(NPIRQS).fill(0);
  private readonly irqCounts = new Array<number>(NIRQ_COUNTS);

  constructor(private readonly irq: InterruptSink) {
    for (let i = 0; i < NIRQ_COUNTS; i++) this.irqCounts[i] = irqPermitted(i) ? 0 : IRQ_DISABLED;
  }

  /** The register of pin 1..8 (bhyve's pirq_read). */
  read(pin: number): number {
    this.check(pin);
    return this.regs[pin - 1];
  }

  /** A guest write of pin 1..8's register (bhyve's pirq_write). */
  write(pin: number, value: number): void {
    this.check(pin);
    const i = pin - 1;
    const nv = value & (PIRQ_DIS | PIRQ_IRQ);
    if (this.regs[i] === nv) return;
    if (this.activeCount[i] !== 0 && validRoute(this.regs[i])) this.irq.setLevel(this.regs[i] & PIRQ_IRQ, false);
    this.regs[i] = nv;
    if (this.activeCount[i] !== 0 && validRoute(this.regs[i])) this.irq.setLevel(this.regs[i] & PIRQ_IRQ, true);
  }

  /** Keeps an ISA IRQ away from PCI routing (used by LPC devices). */
  reserveIrq(irq: number): void {
    this.irqCounts[irq] = IRQ_DISABLED;
  }

  /** Counts a fixed user of an IRQ (e.g. the ACPI SCI) so routing avoids it. */
  useIrq(irq: number): void {
    if (this.irqCounts[irq] !== IRQ_DISABLED) this.irqCounts[irq]++;
  }

  /** Picks the least-used pin and routes it to the least-used IRQ; returns
   * the pin (1..8). With `fixedSlotPin` (boot ROM boots) the pin is
   * (4 + slot + intpin) % 8 as bhyve does. */
  allocPin(fixedSlotPin?: { slot: number; intpin: number }): number {
    let best = 0;
    if (fixedSlotPin) {
      best = (4 + fixedSlotPin.slot + fixedSlotPin.intpin) % NPIRQS;
    } else {
      for (let p = 1; p < NPIRQS; p++) if (this.useCount[p] < this.useCount[best]) best = p;
    }
    this.useCount[best]++;
    if (this.regs[best] === PIRQ_DIS) {
      let bestIrq = -1;
      for (let irq = 0; irq < NIRQ_COUNTS; irq++) {
        if (this.irqCounts[irq] === IRQ_DISABLED) continue;
        if (bestIrq === -1 || this.irqCounts[irq] < this.irqCounts[bestIrq]) bestIrq = irq;
      }
      if (bestIrq < 0) throw new Error('no ISA IRQ left for PCI interrupt routing');
      this.irqCounts[bestIrq]++;
      this.regs[best] = bestIrq;
    }
    return best + 1;
  }

  /** The ISA IRQ pin 1..8 is routed to (register bits 3-0). */
  irqOf(pin: number): number {
    return this.read(pin) & PIRQ_IRQ;
  }

  assert(pin: number): void {
    this.check(pin);
    const i = pin - 1;
    if (++this.activeCount[i] === 1 && validRoute(this.regs[i])) this.irq.setLevel(this.regs[i] & PIRQ_IRQ, true);
  }

  deassert(pin: number): void {
    this.check(pin);
    const i = pin - 1;
    if (this.activeCount[i] === 0) return;
    if (--this.activeCount[i] === 0 && validRoute(this.regs[i])) this.irq.setLevel(this.regs[i] & PIRQ_IRQ, false);
  }

  private check(pin: number): void {
    if (!Number.isInteger(pin) || pin < 1 || pin > NPIRQS) throw new RangeError(`PIRQ pin ${pin} out of range 1-${NPIRQS}`);
  }
}
