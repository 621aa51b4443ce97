// What the device rigs of the unit tests and the fuzz harness share
// (ahci-driver.ts, nvme-driver.ts, xhci-driver.ts, e1000.test.ts): a
// platform built from config keys on a LocalIoBus, without KVM, and the
// accesses a guest driver makes to one PCI function on bus 0:
// configuration mechanism #1 (ports 0xcf8/0xcfc) and little-endian MMIO
// relative to one of its BARs.

import { ConfigTree } from '../../src/config/tree.js';
import type { DeviceContext, InterruptSink, KvmDoorbells } from '../../src/devices/device.js';
import { buildPlatform, type Platform } from '../../src/devices/platform.js';
import type { GuestMemory } from '../../src/sys/guest-memory.js';
import { computeLayout } from '../../src/sys/memory-map.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';
import type { FakeCoalescedRing } from './fake-coalesced-ring.js';
import '../support/device-models.js'; // the device models buildPlatform needs

/** The rigs' memory layout: 256 MiB of RAM. */
export const RIG_LAYOUT = computeLayout(256 << 20);

/** A platform with a hostbridge at 0:0 and an lpc at 0:31, plus `settings`. */
export function buildRigPlatform(io: LocalIoBus, irq: InterruptSink, mem: GuestMemory, settings: Record<string, string>,
  kvm?: KvmDoorbells): Platform {
  const config = new ConfigTree();
  for (const [k, v] of Object.entries({ 'pci.0.0.0.device': 'hostbridge', 'pci.0.31.0.device': 'lpc', ...settings })) config.set(k, v);
  const ctx: DeviceContext = {
    io, irq, config, mem, machine: { requestExit: () => {}, vcpuCount: 1 }, stream: () => undefined,
    // The platform's clocks (RTC, HPET) are not driven here: their timers never fire.
    timer: () => ({ armAt: () => {}, cancel: () => {}, now: () => process.hrtime.bigint() }),
    kvm,
  };
  return buildPlatform(ctx, RIG_LAYOUT);
}

/** Function 0 of `slot` on bus 0, as its driver reaches it. */
export abstract class PciRig {
  readonly io = new LocalIoBus();
  /** KVM's coalesced MMIO ring, when the rig has one: wr() appends to it
   * for an address in a zone the device registered, instead of exiting. */
  protected coalesced: FakeCoalescedRing | undefined;

  /** `strict`: an MMIO access nothing decodes throws (else a read gives 0
   * and a write is dropped, as on a bus). */
  constructor(readonly slot: number, private readonly strict = false) {}

  /** The address rd() and wr() offsets are from (the BAR the rig drives). */
  protected abstract get mmioBase(): number;

  cfgRd(off: number, size: 1 | 2 | 4 = 4): number {
    this.io.portWrite(0xcf8, 4, (0x80000000 | (this.slot << 11) | (off & 0xfc)) >>> 0);
    return this.io.portRead(0xcfc + (off & 3), size)!;
  }

  cfgWr(off: number, v: number, size: 1 | 2 | 4 = 4): void {
    this.io.portWrite(0xcf8, 4, (0x80000000 | (this.slot << 11) | (off & 0xfc)) >>> 0);
    this.io.portWrite(0xcfc + (off & 3), size, v);
  }

  rd(off: number, size = 4): number {
    const d = new Uint8Array(size);
    if (!this.io.mmioRead(this.mmioBase + off, d) && this.strict) throw new Error(`BAR+0x${off.toString(16)} not decoded`);
    let v = 0;
    for (let i = 0; i < size; i++) v += d[i] * 2 ** (8 * i);
    return v;
  }

  wr(off: number, v: number, size = 4): void {
    const d = new Uint8Array(size);
    for (let i = 0; i < size; i++) d[i] = Math.floor(v / 2 ** (8 * i)) & 0xff;
    if (this.coalesced?.append(this.mmioBase + off, d)) return;
    if (!this.io.mmioWrite(this.mmioBase + off, d) && this.strict) throw new Error(`BAR+0x${off.toString(16)} not decoded`);
  }
}
