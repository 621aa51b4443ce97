// Routing of PCI INTx lines, as bhyve's pci_emul.c (pci_lintr_request,
// pci_lintr_route), pci_irq.c (pirq_alloc_pin, pci_irq_assert) and ioapic.c
// (ioapic_pci_alloc_irq) do it:
//
//   - each function that asked for a line gets the least-used of its slot's
//     four pins INTA-D (PCIR_INTPIN);
//   - each used slot pin gets an IOAPIC input 16-23 (round robin; with a boot
//     ROM the fixed 16 + (4 + slot + pin) % 8) and a PIRQ pin of the LPC
//     bridge's router (least used; with a boot ROM (4 + slot + pin) % 8),
//     which picks an ISA IRQ; PCIR_INTLINE reads that ISA IRQ;
//   - asserting a line raises the IOAPIC input and, while the PIRQ register
//     routes to a valid ISA IRQ, that IRQ too (bhyve's vm_isa_assert_irq).
// Lines shared by several functions are counted, so the input goes low only
// when the last function deasserts.

import type { InterruptSink } from '../device.js';
import { PCIR_INTLINE, PCIR_INTPIN } from './config-space.js';
import type { PciBus } from './pci-bus.js';
import { PciEmulFunction, type IntxLine } from './pci-emul.js';
import type { PirqRouter } from './pirq.js';
import type { IntxRoute } from '../../firmware/built-machine.js';

/** IOAPIC inputs bhyve gives PCI: 16 .. 16+PCI_IOAPIC_PINS-1. */
export const PCI_IOAPIC_BASE = 16;
export const PCI_IOAPIC_PINS = 8;

export type { IntxRoute };

export class IntxRouter {
  private readonly routes = new Map<string, IntxRoute>();
  private readonly slotPinUse = new Map<string, number[]>();
  private readonly ioapicActive = new Map<number, number>();
  private lastIoapicPin = 0;

  constructor(private readonly irq: InterruptSink, private readonly pirq: PirqRouter, private readonly bootrom: boolean) {}

  /** Routes every function on `pci` that asked for INTx. */
  routeAll(pci: PciBus): IntxRoute[] {
    for (const fn of pci.functions()) {
      if (fn instanceof PciEmulFunction && fn.wantsIntx && fn.address) this.route(fn);
    }
    return this.list();
  }

  /** Every slot pin in use, bus/slot/pin order (bhyve's pci_walk_lintr). */
  list(): IntxRoute[] {
    return [...this.routes.values()].sort((a, b) => a.bus - b.bus || a.slot - b.slot || a.pin - b.pin);
  }

  route(fn: PciEmulFunction): IntxRoute {
    const { bus, slot } = fn.address!;
    const sk = `${bus}.${slot}`;
    let use = this.slotPinUse.get(sk);
    if (!use) { use = [0, 0, 0, 0]; this.slotPinUse.set(sk, use); }
    let best = 0;
    for (let p = 1; p < 4; p++) if (use[p] < use[best]) best = p;
    use[best]++;
    const pin = best + 1;
    const rk = `${sk}.${pin}`;
    let r = this.routes.get(rk);
    if (!r) {
      const fixed = (4 + slot + pin) % PCI_IOAPIC_PINS;
      const ioapicIrq = PCI_IOAPIC_BASE + (this.bootrom ? fixed : (this.lastIoapicPin++ % PCI_IOAPIC_PINS));
      const pirqPin = this.pirq.allocPin(this.bootrom ? { slot, intpin: pin } : undefined);
      r = { bus, slot, pin, pirqPin, ioapicIrq };
      this.routes.set(rk, r);
    }
    fn.cfg.set8(PCIR_INTPIN, pin);
    fn.cfg.set8(PCIR_INTLINE, this.pirq.irqOf(r.pirqPin));
    fn.intx = this.line(r);
    return r;
  }

  private line(r: IntxRoute): IntxLine {
    return {
      gsi: r.ioapicIrq,
      assert: () => {
        this.pirq.assert(r.pirqPin);
        const n = (this.ioapicActive.get(r.ioapicIrq) ?? 0) + 1;
        this.ioapicActive.set(r.ioapicIrq, n);
        if (n === 1) this.irq.setLevel(r.ioapicIrq, true);
      },
      deassert: () => {
        this.pirq.deassert(r.pirqPin);
        const n = this.ioapicActive.get(r.ioapicIrq) ?? 0;
        if (n === 0) return;
        this.ioapicActive.set(r.ioapicIrq, n - 1);
        if (n === 1) this.irq.setLevel(r.ioapicIrq, false);
      },
    };
  }
}
