// bhyve's PCI UART (pci_uart.c) driven as a guest driver drives it: found
// by its IDs and class, BAR 0 sized and moved, the 16550 programmed
// through it, its interrupt on the function's INTx line (through the PIRQ
// router and an I/O APIC input), and hostile accesses.
import { describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import { initConfig, parseSlotOption } from '../../src/config/bhyve-args.js';
import type { ByteStream, DeviceContext, InterruptSink } from '../../src/devices/device.js';
import { buildPlatform } from '../../src/devices/platform.js';
import { PciUart, PCI_UART_DEVICE, PCI_UART_VENDOR, pciUartBackends } from '../../src/devices/pci-uart.js';
import { findPciDevice, isBuilt, pciHelpText } from '../../src/devices/registry.js';
import { computeLayout } from '../../src/sys/memory-map.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';
import '../support/device-models.js'; // the device models buildPlatform needs

const SLOT = 5;

class Lines implements InterruptSink {
  levels = new Map<number, boolean>();
  rises = new Map<number, number>();
  setLevel(gsi: number, high: boolean): void {
    if (high && !this.levels.get(gsi)) this.rises.set(gsi, (this.rises.get(gsi) ?? 0) + 1);
    this.levels.set(gsi, high);
  }
  pulse(): void {}
  signalMsi(): void { throw new Error('the PCI UART has no MSI'); }
  high(gsi: number): boolean { return this.levels.get(gsi) ?? false; }
}

class Stream implements ByteStream {
  input: number[] = [];
  output: number[] = [];
  readByte(): number { return this.input.length ? this.input.shift()! : -1; }
  hasInput(): boolean { return this.input.length > 0; }
  write(bytes: Uint8Array): void { this.output.push(...bytes); }
  feed(s: string): void { for (const c of Buffer.from(s, 'latin1')) this.input.push(c); }
  text(): string { return Buffer.from(this.output).toString('latin1'); }
}

function rig(o: { stream?: Stream; settings?: Record<string, string> } = {}) {
  const config = new ConfigTree();
  const all = { 'pci.0.0.0.device': 'hostbridge', 'pci.0.31.0.device': 'lpc', [`pci.0.${SLOT}.0.device`]: 'uart', ...(o.settings ?? {}) };
  for (const [k, v] of Object.entries(all)) config.set(k, v);
  const io = new LocalIoBus();
  const irq = new Lines();
  const keys: string[] = [];
  const ctx: DeviceContext = {
    io, irq, config, mem: new GuestMemory([]), machine: { requestExit: () => {}, vcpuCount: 1 },
    stream: (key) => { keys.push(key); return key === `pci.0.${SLOT}.0` ? o.stream : undefined; },
    timer: () => ({ armAt: () => {}, cancel: () => {}, now: () => process.hrtime.bigint() }),
  };
  const platform = buildPlatform(ctx, computeLayout(256 << 20));
  const dev = platform.devices.find((d): d is PciUart => d instanceof PciUart)!;
  const cfgRd = (off: number, size: 1 | 2 | 4 = 4): number => {
    io.portWrite(0xcf8, 4, (0x80000000 | (SLOT << 11) | (off & 0xfc)) >>> 0);
    return io.portRead(0xcfc + (off & 3), size)!;
  };
  const cfgWr = (off: number, v: number, size: 1 | 2 | 4 = 4): void => {
    io.portWrite(0xcf8, 4, (0x80000000 | (SLOT << 11) | (off & 0xfc)) >>> 0);
    io.portWrite(0xcfc + (off & 3), size, v);
  };
  const bar = (): number => cfgRd(0x10) & ~3;
  const inb = (off: number): number => {
    const v = io.portRead(bar() + off, 1);
    if (v === undefined) throw new Error(`port ${bar() + off} not decoded`);
    return v;
  };
  const outb = (off: number, v: number): void => {
    if (!io.portWrite(bar() + off, 1, v)) throw new Error(`port ${bar() + off} not decoded`);
  };
  // The I/O APIC input the platform routed the slot's pin to (bhyve: 16-23).
  const gsi = platform.intx.find((r) => r.slot === SLOT)!.ioapicIrq;
  return { platform, dev, io, irq, keys, cfgRd, cfgWr, bar, inb, outb, gsi };
}

/** A guest driver's set-up: 115200 8N1, FIFO on, OUT2, received-data and
 * THR-empty interrupts. */
function initPort(outb: (o: number, v: number) => void): void {
  outb(1, 0);
  outb(3, 0x80);
  outb(0, 1);
  outb(1, 0);
  outb(3, 0x03);
  outb(2, 0xc7);
  outb(4, 0x0b);
}

describe('PCI uart: the function', () => {
  it('is a SIIG CyberSerial 131f:2000, class 07/00/00, with an 8-byte I/O BAR 0 and INTA', () => {
    const r = rig();
    expect(r.cfgRd(0x00)).toBe(((PCI_UART_DEVICE << 16) | PCI_UART_VENDOR) >>> 0);
    expect(r.cfgRd(0x08) >>> 8).toBe(0x070000);
    const b0 = r.cfgRd(0x10);
    expect(b0 & 1).toBe(1);
    expect(b0 & ~3).toBeGreaterThan(0);
    for (let i = 1; i < 6; i++) expect(r.cfgRd(0x10 + 4 * i)).toBe(0);
    expect(r.cfgRd(0x3d, 1)).toBe(1); // INTA
    expect(r.cfgRd(0x3c, 1)).toBeGreaterThan(0); // the PIRQ's ISA IRQ
    // Sizing: all ones reads back the 8-byte mask with the I/O bit.
    r.cfgWr(0x10, 0xffffffff);
    expect((r.cfgRd(0x10) & 0xffff) >>> 0).toBe(0xfff9);
    expect(r.dev.name).toBe(`uart@pci.0.${SLOT}.0`);
  });

  it('is built (no longer "not supported yet"), listed plainly by -s help, and parses -s N,uart,path as bhyve', () => {
    expect(isBuilt(findPciDevice('uart')!)).toBe(true);
    expect(pciHelpText()).toContain('uart\n');
    expect(pciHelpText()).not.toContain('uart (not');
    const c = initConfig();
    parseSlotOption(c, '5,uart,tcp=127.0.0.1:4321');
    parseSlotOption(c, '6,uart');
    expect(c.get('pci.0.5.0.device')).toBe('uart');
    expect(c.get('pci.0.5.0.path')).toBe('tcp=127.0.0.1:4321');
    expect(c.get('pci.0.6.0.path')).toBeUndefined();
    expect(pciUartBackends(c)).toEqual([{ node: 'pci.0.5.0', where: '0:5:0', path: 'tcp=127.0.0.1:4321' }]);
  });

  it('asks for the host stream of its own slot node', () => {
    const r = rig();
    expect(r.keys).toContain(`pci.0.${SLOT}.0`);
  });
});

describe('PCI uart: the 16550 behind BAR 0', () => {
  it('writes THR to the backend and reads host input from RBR', () => {
    const stream = new Stream();
    const r = rig({ stream });
    initPort(r.outb);
    for (const c of Buffer.from('hello')) r.outb(0, c);
    expect(stream.text()).toBe('hello');
    stream.feed('ab');
    r.dev.poll();
    expect(r.inb(5) & 1).toBe(1);
    expect(String.fromCharCode(r.inb(0), r.inb(0))).toBe('ab');
    expect(r.inb(5) & 1).toBe(0);
    // Scratch register and the divisor latch through the BAR.
    r.outb(7, 0x5a);
    expect(r.inb(7)).toBe(0x5a);
    r.outb(3, 0x83);
    expect(r.inb(0) | (r.inb(1) << 8)).toBe(1);
    r.outb(3, 0x03);
  });

  it('raises INTx while a reason is pending and drops it when the driver has served it', () => {
    const stream = new Stream();
    const r = rig({ stream });
    initPort(r.outb);
    expect(r.irq.high(r.gsi)).toBe(false);
    r.outb(1, 0x01); // received-data interrupt
    stream.feed('x');
    r.dev.poll();
    expect(r.irq.high(r.gsi)).toBe(true);
    expect(r.dev.intxState).toBe('asserted');
    expect(r.inb(2) & 0x0f).toBe(0x0c); // IIR: RX timeout (bhyve's RX reason)
    expect(r.inb(0)).toBe('x'.charCodeAt(0));
    expect(r.irq.high(r.gsi)).toBe(false);
    expect(r.inb(2) & 0x0f).toBe(0x01);
    // THRE: enabling it raises it; reading IIR clears it.
    r.outb(1, 0x03);
    expect(r.irq.high(r.gsi)).toBe(true);
    expect(r.inb(2) & 0x0f).toBe(0x02);
    expect(r.irq.high(r.gsi)).toBe(false);
    r.outb(0, 0x41);
    expect(r.irq.high(r.gsi)).toBe(true);
    r.outb(1, 0);
    expect(r.irq.high(r.gsi)).toBe(false);
    expect(r.dev.stats()['intx assertions']).toBe(3);
  });

  it('holds the interrupt while INTxDIS is set and delivers it when cleared', () => {
    const stream = new Stream();
    const r = rig({ stream });
    initPort(r.outb);
    const cmd = r.cfgRd(0x04, 2);
    r.cfgWr(0x04, cmd | 0x400, 2);
    r.outb(1, 0x01);
    stream.feed('y');
    r.dev.poll();
    expect(r.irq.high(r.gsi)).toBe(false);
    expect(r.dev.intxState).toBe('pending');
    r.cfgWr(0x04, cmd, 2);
    expect(r.irq.high(r.gsi)).toBe(true);
  });

  it('follows its BAR when the guest moves it, and stops decoding with PORTEN off', () => {
    const stream = new Stream();
    const r = rig({ stream });
    const old = r.bar();
    r.cfgWr(0x10, 0xd000);
    expect(r.bar()).toBe(0xd000);
    expect(r.io.portRead(old, 1)).toBeUndefined();
    r.outb(0, 0x42);
    expect(stream.output).toEqual([0x42]);
    const cmd = r.cfgRd(0x04, 2);
    r.cfgWr(0x04, cmd & ~1, 2);
    expect(r.io.portRead(0xd000, 1)).toBeUndefined();
  });

  it('resets to power-on state with the line low', () => {
    const stream = new Stream();
    const r = rig({ stream });
    initPort(r.outb);
    r.outb(1, 0x02);
    expect(r.irq.high(r.gsi)).toBe(true);
    r.dev.reset();
    expect(r.irq.high(r.gsi)).toBe(false);
    expect(r.inb(1)).toBe(0);
    expect(r.inb(3)).toBe(0);
  });

  it('works without a backend: output dropped, nothing to read', () => {
    const r = rig();
    initPort(r.outb);
    r.outb(0, 0x41);
    expect(r.inb(5) & 0x61).toBe(0x60);
    expect(r.inb(0)).toBe(0xff);
  });
});

describe('PCI uart: hostile guests', () => {
  it('takes 2- and 4-byte accesses (bhyve asserts on them) as byte accesses', () => {
    const stream = new Stream();
    const r = rig({ stream });
    const base = r.bar();
    r.io.portWrite(base + 6, 2, 0x7711); // MSR (read-only) and SCR
    expect(r.inb(7)).toBe(0x77);
    r.io.portWrite(base, 4, 0x44434241);
    // THR, IER=0x42, FCR=0x43, LCR=0x44: one byte out, the rest programmed.
    expect(stream.output).toEqual([0x41]);
    expect(r.inb(3)).toBe(0x44);
    expect(r.io.portRead(base + 4, 4)).toBeTypeOf('number');
  });

  it('survives a storm of random register and config accesses with the line consistent', () => {
    const stream = new Stream();
    const r = rig({ stream });
    let x = 12345;
    const rnd = (n: number): number => { x = (x * 1103515245 + 12345) >>> 0; return (x >>> 8) % n; };
    for (let i = 0; i < 20000; i++) {
      const op = rnd(10);
      const base = r.bar();
      if (op < 4) r.io.portWrite(base + rnd(8), ([1, 2, 4] as const)[rnd(3)], rnd(0x100000000));
      else if (op < 8) r.io.portRead(base + rnd(8), ([1, 2, 4] as const)[rnd(3)]);
      else if (op === 8) { stream.feed(String.fromCharCode(rnd(256))); r.dev.poll(); }
      else r.cfgWr(0x04, rnd(0x10000) | 1, 2); // any command bits, decoding kept
      // The line is high exactly when the 16550 has an enabled reason and INTx may be raised.
      const reason = r.dev.uart.intrReason() !== 0x01;
      const allowed = (r.cfgRd(0x04, 2) & 0x400) === 0;
      expect(r.irq.high(r.gsi)).toBe(reason && allowed);
    }
    expect(stream.output.length).toBeGreaterThan(0);
  });
});
