// A DeviceContext for unit tests of device models: a real LocalIoBus, an
// interrupt sink and machine control that record what the device did.
import { ConfigTree } from '../../src/config/tree.js';
import type { AccessSize, DeviceContext, InterruptSink } from '../../src/devices/device.js';
import type { ExitRequest } from '../../src/vmm/exit-status.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';

export class FakeIrq implements InterruptSink {
  level = new Map<number, boolean>();
  log: Array<[number, boolean]> = [];
  pulses: number[] = [];
  setLevel(gsi: number, high: boolean): void { this.level.set(gsi, high); this.log.push([gsi, high]); }
  pulse(gsi: number): void { this.pulses.push(gsi); }
  signalMsi(): void { throw new Error('unexpected MSI'); }
}

export function fake(settings: Record<string, string> = {}) {
  const config = new ConfigTree();
  for (const [k, v] of Object.entries(settings)) config.set(k, v);
  const io = new LocalIoBus();
  const irq = new FakeIrq();
  const exits: ExitRequest[] = [];
  const ctx: DeviceContext = {
    io, irq, config, mem: new GuestMemory([]),
    machine: { requestExit: (r) => { exits.push(r); }, vcpuCount: 1 },
    stream: () => undefined,
  };
  const inp = (port: number, size: AccessSize = 1): number => {
    const v = io.portRead(port, size);
    if (v === undefined) throw new Error(`port 0x${port.toString(16)} not decoded`);
    return v;
  };
  const outp = (port: number, value: number, size: AccessSize = 1): void => {
    if (!io.portWrite(port, size, value)) throw new Error(`port 0x${port.toString(16)} not decoded`);
  };
  return { ctx, io, irq, exits, config, inp, outp };
}
