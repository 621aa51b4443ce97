import { describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import type { DeviceContext, DeviceTimer, InterruptSink } from '../../src/devices/device.js';
import {
  Hpet, HPET_BASE, HPET_CAPABILITIES, HPET_CONFIG, HPET_ISR, HPET_MAIN_COUNTER, hpetAllowedIrqs, hpetTimerCapCnf,
  hpetTimerComparator, hpetTimerFsb,
} from '../../src/devices/lpc/hpet.js';
import { BHYVE_HPET_CAPABILITIES } from '../../src/firmware/acpi/tables.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';

class FakeIrq implements InterruptSink {
  level = new Map<number, boolean>();
  pulses: number[] = [];
  msis: Array<[number, number]> = [];
  setLevel(gsi: number, high: boolean): void { this.level.set(gsi, high); }
  pulse(gsi: number): void { this.pulses.push(gsi); }
  signalMsi(address: number, data: number): void { this.msis.push([address, data]); }
}

/** Device timers on a manual clock. */
class Clock {
  ns = 1_000_000_000n;
  timers: Array<{ cb: () => void; at?: bigint }> = [];
  create(cb: () => void): DeviceTimer {
    const t: { cb: () => void; at?: bigint } = { cb };
    this.timers.push(t);
    return { armAt: (d) => { t.at = d; }, cancel: () => { t.at = undefined; }, now: () => this.ns };
  }
  /** Advances time, running expired callbacks in deadline order. */
  advance(ns: bigint): void {
    const end = this.ns + ns;
    for (;;) {
      const due = this.timers.filter((t) => t.at !== undefined && t.at <= end).sort((a, b) => Number(a.at! - b.at!))[0];
      if (!due) break;
      if (due.at! > this.ns) this.ns = due.at!;
      due.at = undefined;
      due.cb();
    }
    this.ns = end;
  }
}

const NS_PER_TICK = 100n;
const LEVEL = 0x2n, ENB = 0x4n, PERIODIC = 0x8n, VAL_SET = 0x40n, MODE32 = 0x100n, FSB_EN = 0x4000n;
const route = (pin: number): bigint => BigInt(pin) << 9n;

function setup() {
  const io = new LocalIoBus();
  const irq = new FakeIrq();
  const clock = new Clock();
  const ctx = {
    io, irq, config: new ConfigTree(), mem: new GuestMemory([]),
    machine: { requestExit: () => undefined, vcpuCount: 1 },
    stream: () => undefined,
    timer: (cb: () => void) => clock.create(cb),
  } as DeviceContext;
  const hpet = new Hpet(ctx, { now: () => clock.ns });
  const rd = (off: number, size: 4 | 8 = 8): bigint => {
    const d = new Uint8Array(size);
    expect(io.mmioRead(HPET_BASE + off, d)).toBe(true);
    return d.reduceRight((v, b) => (v << 8n) | BigInt(b), 0n);
  };
  const wr = (off: number, v: bigint, size: 4 | 8 = 8): void => {
    const d = new Uint8Array(size);
    for (let i = 0; i < size; i++) d[i] = Number((v >> BigInt(8 * i)) & 0xffn);
    expect(io.mmioWrite(HPET_BASE + off, d)).toBe(true);
  };
  return { hpet, irq, clock, rd, wr };
}

describe('HPET registers', () => {
  it('capabilities agree with the ACPI HPET table; 10 MHz; 8 timers', () => {
    const { rd } = setup();
    const cap = rd(HPET_CAPABILITIES);
    expect(Number(cap & 0xffffffffn)).toBe(BHYVE_HPET_CAPABILITIES);
    expect(cap >> 32n).toBe(100_000_000n); // fs per tick
    expect(Number((cap >> 8n) & 0x1fn) + 1).toBe(8);
    expect(rd(HPET_CAPABILITIES + 4, 4)).toBe(100_000_000n);
  });

  it('timer capabilities: IOAPIC routes 20-23 (KVM 24-pin IOAPIC), periodic, 64-bit, FSB', () => {
    const { rd } = setup();
    expect(hpetAllowedIrqs(24)).toBe(0x00f00000);
    expect(hpetAllowedIrqs(32)).toBe(0xff000000);
    const c = rd(hpetTimerCapCnf(3));
    expect(c >> 32n).toBe(0x00f00000n);
    expect(c & 0xffffn).toBe(0x8030n); // FSB_INT_DEL | SIZE | PER_INT
    expect(rd(hpetTimerComparator(3))).toBe(0xffffffffffffffffn);
  });

  it('main counter runs at 10 MHz only while enabled, and can be written', () => {
    const { rd, wr, clock } = setup();
    clock.advance(1_000_000n);
    expect(rd(HPET_MAIN_COUNTER)).toBe(0n);
    wr(HPET_CONFIG, 1n);
    clock.advance(1_000_000n); // 1 ms
    expect(rd(HPET_MAIN_COUNTER)).toBe(10_000n);
    wr(HPET_CONFIG, 0n);
    clock.advance(1_000_000n);
    expect(rd(HPET_MAIN_COUNTER)).toBe(10_000n);
    wr(HPET_MAIN_COUNTER + 4, 0x12n, 4);
    expect(rd(HPET_MAIN_COUNTER)).toBe(0x12_0000_2710n);
    expect(rd(HPET_MAIN_COUNTER + 4, 4)).toBe(0x12n);
  });

  it('ignores misaligned and narrow accesses (reads 0)', () => {
    const { rd, wr, hpet } = setup();
    wr(HPET_CONFIG, 1n, 4);
    expect(hpet.enabled()).toBe(true);
    const d = new Uint8Array(2);
    hpet.mmioRead(HPET_CAPABILITIES, d);
    expect([...d]).toEqual([0, 0]);
    hpet.mmioWrite(HPET_CONFIG, new Uint8Array([0, 0]));
    expect(hpet.enabled()).toBe(true);
    expect(rd(0x400 - 8)).toBe(0n);
  });

  it('rejects routes outside the allowed pins and keeps read-only bits', () => {
    const { rd, wr } = setup();
    wr(hpetTimerCapCnf(0), route(5) | ENB);
    expect(rd(hpetTimerCapCnf(0)) & 0x3e00n).toBe(0n);
    wr(hpetTimerCapCnf(0), route(21) | ENB);
    expect(rd(hpetTimerCapCnf(0)) & 0x3e00n).toBe(route(21));
    wr(hpetTimerCapCnf(0), 0n);
    expect(rd(hpetTimerCapCnf(0)) >> 32n).toBe(0x00f00000n);
    expect(rd(hpetTimerCapCnf(0)) & 0x8030n).toBe(0x8030n);
  });
});

describe('HPET timer interrupts', () => {
  it('one-shot, edge, to an IOAPIC pin', () => {
    const { wr, irq, clock } = setup();
    wr(hpetTimerCapCnf(0), route(20) | ENB);
    wr(hpetTimerComparator(0), 10_000n); // 1 ms
    wr(HPET_CONFIG, 1n);
    clock.advance(999_000n);
    expect(irq.pulses).toEqual([]);
    clock.advance(1_000n);
    expect(irq.pulses).toEqual([20]);
    clock.advance(10_000_000_000n);
    expect(irq.pulses).toEqual([20]); // 64-bit: no second match
  });

  it('periodic with VAL_SET: first match at the comparator, then every period', () => {
    const { wr, rd, irq, clock } = setup();
    wr(HPET_CONFIG, 1n);
    wr(hpetTimerCapCnf(2), route(22) | ENB | PERIODIC | VAL_SET);
    wr(hpetTimerComparator(2), 5_000n); // first at 0.5 ms
    wr(hpetTimerComparator(2), 10_000n); // then every 1 ms
    clock.advance(500_000n);
    expect(irq.pulses).toEqual([22]);
    clock.advance(3_000_000n);
    expect(irq.pulses).toEqual([22, 22, 22, 22]);
    expect(rd(hpetTimerComparator(2))).toBe(45_000n); // next match
  });

  it('level-triggered: status bit set, pin held until write-1-to-clear', () => {
    const { wr, rd, irq, clock } = setup();
    wr(hpetTimerCapCnf(1), route(23) | ENB | LEVEL);
    wr(hpetTimerComparator(1), 100n);
    wr(HPET_CONFIG, 1n);
    clock.advance(10_000n);
    expect(rd(HPET_ISR)).toBe(2n);
    expect(irq.level.get(23)).toBe(true);
    wr(HPET_ISR, 1n); // not this timer's bit
    expect(rd(HPET_ISR)).toBe(2n);
    wr(HPET_ISR, 2n);
    expect(rd(HPET_ISR)).toBe(0n);
    expect(irq.level.get(23)).toBe(false);
  });

  it('disabling a level interrupt drops its line', () => {
    const { wr, rd, irq, clock } = setup();
    wr(hpetTimerCapCnf(1), route(23) | ENB | LEVEL);
    wr(hpetTimerComparator(1), 100n);
    wr(HPET_CONFIG, 1n);
    clock.advance(10_000n);
    wr(hpetTimerCapCnf(1), route(23) | LEVEL);
    expect(rd(HPET_ISR)).toBe(0n);
    expect(irq.level.get(23)).toBe(false);
  });

  it('FSB delivery: MSI address and data from the FSB route register', () => {
    const { wr, irq, clock } = setup();
    wr(hpetTimerFsb(4), (0xfee00000n << 32n) | 0x41n);
    wr(hpetTimerCapCnf(4), ENB | FSB_EN);
    wr(hpetTimerComparator(4), 1_000n);
    wr(HPET_CONFIG, 1n);
    clock.advance(100_000n);
    expect(irq.msis).toEqual([[0xfee00000, 0x41]]);
    expect(irq.pulses).toEqual([]);
  });

  it('32-bit mode: comparator truncated, matches the low half, fires again after a wrap', () => {
    const { wr, rd, irq, clock } = setup();
    wr(HPET_MAIN_COUNTER, 0x1_ffff_ff00n);
    wr(hpetTimerCapCnf(5), route(20) | ENB | MODE32);
    wr(hpetTimerComparator(5), 0x7_0000_0010n);
    expect(rd(hpetTimerComparator(5))).toBe(0x10n);
    wr(HPET_CONFIG, 1n);
    clock.advance(0x110n * NS_PER_TICK - 1n);
    expect(irq.pulses).toEqual([]);
    clock.advance(1n);
    expect(irq.pulses).toEqual([20]);
    clock.advance(0x1_0000_0000n * NS_PER_TICK);
    expect(irq.pulses).toEqual([20, 20]);
  });

  it('interrupt disabled: no delivery; disabled counter: no timers', () => {
    const { wr, irq, clock } = setup();
    wr(hpetTimerCapCnf(0), route(20));
    wr(hpetTimerComparator(0), 100n);
    wr(HPET_CONFIG, 1n);
    clock.advance(1_000_000n);
    expect(irq.pulses).toEqual([]);
    wr(HPET_CONFIG, 0n);
    wr(hpetTimerCapCnf(0), route(20) | ENB);
    wr(hpetTimerComparator(0), 200_000n);
    clock.advance(100_000_000n);
    expect(irq.pulses).toEqual([]);
  });

  it('legacy replacement: timer 0 on ISA IRQ 0, timer 1 on IRQ 8', () => {
    const { wr, irq, clock } = setup();
    wr(hpetTimerCapCnf(0), ENB | PERIODIC | VAL_SET);
    wr(hpetTimerComparator(0), 10_000n);
    wr(hpetTimerCapCnf(1), ENB);
    wr(hpetTimerComparator(1), 15_000n);
    wr(HPET_CONFIG, 3n);
    clock.advance(2_000_000n);
    expect(irq.pulses).toEqual([0, 8, 0]);
  });

  it('a deadline that passed before the counter was disabled still interrupts', () => {
    const { wr, irq, clock, hpet } = setup();
    wr(hpetTimerCapCnf(0), route(20) | ENB);
    wr(hpetTimerComparator(0), 100n);
    wr(HPET_CONFIG, 1n);
    clock.ns += 1_000_000n; // time passes but the timer callback has not run yet
    wr(HPET_CONFIG, 0n);
    expect(irq.pulses).toEqual([20]);
    hpet.reset();
    expect(hpet.config).toBe(0n);
  });
});
