// The VM's MSI routes for irqfds (passthrough MSI/MSI-X vectors): each
// eventfd gets a GSI above the I/O APIC's, routed as an MSI with the
// message the guest programmed. KVM_SET_GSI_ROUTING replaces the whole
// table, so the device thread keeps every route here and sends the table
// (the PC's wiring from Vm.setGsiRouting plus these) on each change.

import type { MsiIrqfd } from '../devices/device.js';
import { IOAPIC_NUM_PINS } from '../sys/kvm-abi.js';
import type { Vm } from '../sys/kvm.js';

/** KVM_MAX_IRQ_ROUTES on x86 is 4096; leave the PC's routes their room. */
const MAX_MSI_ROUTES = 4000;

export class MsiRoutes {
  private readonly routes = new Map<number, { gsi: number; address: number; data: number }>();
  private readonly free: number[] = [];
  private next = IOAPIC_NUM_PINS;

  constructor(private readonly vm: Pick<Vm, 'setGsiRouting' | 'irqfd'>) {}

  /** Routes in use, for tests and stats. */
  get size(): number { return this.routes.size; }

  irqfd(fd: number): MsiIrqfd {
    if (this.routes.size >= MAX_MSI_ROUTES) throw new RangeError('out of MSI routes');
    const gsi = this.free.pop() ?? this.next++;
    let attached = false;
    let closed = false;
    const self = this;
    return {
      gsi,
      route(address: number, data: number): void {
        const r = self.routes.get(gsi);
        if (r && r.address === address && r.data === data) return;
        self.routes.set(gsi, { gsi, address, data });
        self.commit();
      },
      attach(): void {
        if (attached || closed || !self.routes.has(gsi)) return;
        self.vm.irqfd(fd, gsi);
        attached = true;
      },
      detach(): void {
        if (!attached) return;
        self.vm.irqfd(fd, gsi, true);
        attached = false;
      },
      close(): void {
        if (closed) return;
        this.detach();
        closed = true;
        if (self.routes.delete(gsi)) self.commit();
        self.free.push(gsi);
      },
    };
  }

  private commit(): void {
    this.vm.setGsiRouting([...this.routes.values()]);
  }
}
