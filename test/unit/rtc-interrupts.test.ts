import { describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import type { DeviceContext, DeviceTimer, InterruptSink } from '../../src/devices/device.js';
import { Rtc, RTC_IRQ } from '../../src/devices/lpc/rtc.js';
import { computeLayout } from '../../src/sys/memory-map.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';

class FakeIrq implements InterruptSink {
  pulses: number[] = [];
  setLevel(): void { throw new Error('the RTC pulses IRQ 8'); }
  pulse(gsi: number): void { this.pulses.push(gsi); }
  signalMsi(): void { throw new Error('unexpected MSI'); }
}

// Thursday 2024-02-29 13:45:07 UTC
const T0 = Date.UTC(2024, 1, 29, 13, 45, 7);
const SEC = 1_000_000_000n;

function setup() {
  let up = 5n * SEC + 250_000_000n; // the clock's second boundaries fall at .25 s
  const timers: Array<{ cb: () => void; at?: bigint }> = [];
  const timer = (cb: () => void): DeviceTimer => {
    const t: { cb: () => void; at?: bigint } = { cb };
    timers.push(t);
    return { armAt: (d) => { t.at = d; }, cancel: () => { t.at = undefined; }, now: () => up };
  };
  const io = new LocalIoBus();
  const irq = new FakeIrq();
  const config = new ConfigTree();
  config.set('rtc.use_localtime', 'false');
  const ctx = {
    io, irq, config, mem: new GuestMemory([]), timer,
    machine: { requestExit: () => undefined, vcpuCount: 1 }, stream: () => undefined,
  } as DeviceContext;
  const rtc = new Rtc(ctx, computeLayout(64 * 1024 * 1024), { now: () => T0, uptime: () => up });
  const read = (reg: number): number => { io.portWrite(0x70, 1, reg); return io.portRead(0x71, 1)!; };
  const write = (reg: number, v: number): void => { io.portWrite(0x70, 1, reg); io.portWrite(0x71, 1, v); };
  /** Advances the clock, running the device timers as the host would. */
  const advance = (ns: bigint): void => {
    const end = up + ns;
    for (;;) {
      const due = timers.filter((t) => t.at !== undefined && t.at <= end).sort((a, b) => Number(a.at! - b.at!))[0];
      if (!due) break;
      if (due.at! > up) up = due.at!;
      due.at = undefined;
      due.cb();
    }
    up = end;
  };
  return { rtc, irq, read, write, advance, timers };
}

describe('RTC periodic interrupt', () => {
  it('fires at the register A rate on IRQ 8; register C reads PF|IRQF and clears', () => {
    const { irq, read, write, advance, rtc } = setup();
    write(0x0a, 0x2f); // divider on, rate 15: 2 Hz
    write(0x0b, 0x42); // PIE, 24h
    expect(rtc.interruptState().period).toBe(500_000_000n);
    advance(499_000_000n);
    expect(irq.pulses).toEqual([]);
    advance(1_000_000n);
    expect(irq.pulses).toEqual([RTC_IRQ]);
    advance(600_000_000n); // IRQF still set: no new edge
    expect(irq.pulses).toEqual([RTC_IRQ]);
    expect(read(0x0c)).toBe(0xc0);
    expect(read(0x0c)).toBe(0x00);
    advance(400_000_000n);
    expect(irq.pulses).toEqual([RTC_IRQ, RTC_IRQ]);
    expect(read(0x0c)).toBe(0xc0);
  });

  it('rate 6 is 1024 Hz; rates 1 and 2 are 256 and 128 Hz; rate 0 and PIE off stop it', () => {
    const { write, rtc, timers } = setup();
    write(0x0b, 0x42);
    write(0x0a, 0x26);
    expect(rtc.interruptState().period).toBe(976_562n);
    write(0x0a, 0x21);
    expect(rtc.interruptState().period).toBe(3_906_250n);
    write(0x0a, 0x22);
    expect(rtc.interruptState().period).toBe(7_812_500n);
    write(0x0a, 0x20);
    expect(rtc.interruptState().period).toBe(0n);
    write(0x0a, 0x26);
    write(0x0b, 0x02);
    expect(rtc.interruptState().period).toBe(0n);
    expect(timers.every((t) => t.at === undefined)).toBe(true);
  });

  it('no timer is armed while no interrupt is enabled', () => {
    const { timers, read } = setup();
    expect(read(0x0c)).toBe(0);
    expect(timers).toHaveLength(0);
  });
});

describe('RTC update-ended and alarm interrupts', () => {
  it('UIE: one UF interrupt per second, at the second boundary', () => {
    const { irq, read, write, advance } = setup();
    write(0x0b, 0x12); // UIE
    advance(SEC - 1n);
    expect(irq.pulses).toEqual([]);
    advance(1n);
    expect(irq.pulses).toEqual([RTC_IRQ]);
    expect(read(0x00)).toBe(0x08);
    expect(read(0x0c)).toBe(0x90);
    advance(SEC);
    expect(irq.pulses).toEqual([RTC_IRQ, RTC_IRQ]);
    expect(read(0x0c)).toBe(0x90);
    expect(read(0x00)).toBe(0x09);
  });

  it('AIE: interrupts when the alarm matches, with 0xC0+ as "any"', () => {
    const { irq, read, write, advance } = setup();
    write(0x01, 0x10); // 13:45:10
    write(0x03, 0x45);
    write(0x05, 0x13);
    write(0x0b, 0x22); // AIE
    advance(2n * SEC);
    expect(irq.pulses).toEqual([]);
    advance(SEC);
    expect(irq.pulses).toEqual([RTC_IRQ]);
    expect(read(0x0c)).toBe(0xa0);
    advance(5n * SEC);
    expect(irq.pulses).toEqual([RTC_IRQ]);
    write(0x01, 0xff); // every second
    advance(SEC);
    expect(irq.pulses).toEqual([RTC_IRQ, RTC_IRQ]);
    expect(read(0x0c)).toBe(0xa0);
  });

  it('an alarm passed between callouts is still seen; flags are raised only when enabled', () => {
    const { read, write, advance } = setup();
    write(0x01, 0x09);
    write(0x03, 0xc0);
    write(0x05, 0xc0);
    advance(5n * SEC);
    expect(read(0x0c)).toBe(0x00); // AIE off: no AF (vrtc)
    write(0x01, 0x30);
    write(0x0b, 0x22);
    advance(20n * SEC);
    expect(read(0x0c)).toBe(0xa0);
  });

  it('enabling an interrupt whose flag is pending raises IRQF and pulses', () => {
    const { irq, read, write, advance } = setup();
    write(0x0b, 0x12); // UIE
    advance(SEC);
    expect(irq.pulses).toHaveLength(1);
    write(0x0b, 0x02); // UIE off: UF stays, IRQF drops
    expect(read(0x0c)).toBe(0x10);
    write(0x0b, 0x12);
    advance(SEC);
    expect(irq.pulses).toHaveLength(2);
    write(0x0b, 0x12); // IRQF already set: no new edge
    expect(irq.pulses).toHaveLength(2);
    write(0x0b, 0x02); // IRQF drops with UIE, UF stays
    write(0x0b, 0x12); // UF pending: IRQF again, a new edge
    expect(irq.pulses).toHaveLength(3);
    expect(read(0x0c)).toBe(0x90);
  });

  it('setting the time (B.SET) stops update interrupts until it is cleared', () => {
    const { irq, read, write, advance } = setup();
    write(0x0b, 0x12);
    write(0x0b, 0x92); // SET
    advance(3n * SEC);
    expect(irq.pulses).toEqual([]);
    write(0x00, 0x30);
    write(0x0b, 0x12); // time now 13:45:30, not an update event
    expect(read(0x0c)).toBe(0);
    advance(SEC);
    expect(irq.pulses).toEqual([RTC_IRQ]);
    expect(read(0x00)).toBe(0x31);
  });
});
