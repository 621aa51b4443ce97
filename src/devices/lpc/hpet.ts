// The HPET (IA-PC High Precision Event Timer) at 0xfed00000, 1 KiB of MMIO.
// bhyve keeps it in the kernel (vmm.ko's vhpet.c); here it is a device model
// on the device thread, with timer interrupts through ctx.timer deadlines.
//
// What the guest sees, following vhpet.c except where noted:
//   - capabilities: the low half is BHYVE_HPET_CAPABILITIES, the value the
//     ACPI HPET table (src/firmware/acpi/tables.ts) publishes as its event
//     timer block ID: vendor 0x8086, 8 timers, revision 1, a 64-bit main
//     counter and legacy replacement routing (vhpet.c itself keeps a 32-bit
//     counter and refuses legacy routing; the table and this register must
//     agree, so both say 64-bit + legacy). The high half is the tick period,
//     100,000,000 fs: the counter runs at 10 MHz (vhpet.c's HPET_FREQ) from
//     the host's monotonic clock while ENABLE_CNF is set.
//   - 8 timers, each with a 64-bit comparator (Tn_SIZE_CAP) usable in 32-bit
//     mode (Tn_32MODE_CNF), one-shot or periodic (Tn_VAL_SET_CNF as vhpet:
//     in periodic mode a comparator write sets the period, and also the
//     next match when VAL_SET is set), edge or level interrupts.
//   - routing: Tn_INT_ROUTE_CAP is vhpet_init()'s choice for the IOAPIC's
//     pin count, the 4 highest pins (20-23 on KVM's 24-pin IOAPIC); a route
//     outside it reads back 0 (not routed). FSB (MSI) delivery when
//     Tn_FSB_EN_CNF is set: the FSB route register's high half is the MSI
//     address, its low half the data (ctx.irq.signalMsi).
//   - legacy replacement (LEG_RT_CNF): timer 0 drives ISA IRQ 0 (GSI 0, the
//     PIT's line) and timer 1 ISA IRQ 8 (the RTC's), edge-triggered.
//   - the interrupt status register: a level-triggered timer sets its bit
//     and holds its pin high until the guest writes 1 to the bit.
//   - accesses other than naturally aligned 4 or 8 bytes read 0 and are
//     ignored on write, as vhpet.
// A one-shot timer fires again when the counter wraps to the comparator
// (2^32 ticks in 32-bit mode; never, in practice, in 64-bit mode).

import { ADDRESS_HPET, BHYVE_HPET_CAPABILITIES } from '../../firmware/acpi/tables.js';
import type { Device, DeviceContext, DeviceTimer } from '../device.js';
import { IOAPIC_PINCOUNT } from './pctestdev.js';

export const HPET_BASE = ADDRESS_HPET;
export const HPET_SIZE = 0x400;
export const HPET_FREQ = 10_000_000;
export const HPET_PERIOD_FS = 1_000_000_000_000_000 / HPET_FREQ;
export const HPET_NUM_TIMERS = 8;
const NS_PER_TICK = 1_000_000_000n / BigInt(HPET_FREQ);

// Register offsets.
export const HPET_CAPABILITIES = 0x000;
export const HPET_CONFIG = 0x010;
export const HPET_ISR = 0x020;
export const HPET_MAIN_COUNTER = 0x0f0;
export const hpetTimerCapCnf = (n: number): number => 0x100 + 0x20 * n;
export const hpetTimerComparator = (n: number): number => 0x108 + 0x20 * n;
export const hpetTimerFsb = (n: number): number => 0x110 + 0x20 * n;

// General configuration.
export const HPET_CNF_ENABLE = 0x1n;
export const HPET_CNF_LEG_RT = 0x2n;

// Timer n configuration and capabilities.
export const HPET_TCNF_INT_TYPE = 0x2n; // 1 = level
export const HPET_TCNF_INT_ENB = 0x4n;
export const HPET_TCNF_TYPE = 0x8n; // 1 = periodic
export const HPET_TCAP_PER_INT = 0x10n;
export const HPET_TCAP_SIZE = 0x20n; // 64-bit comparator
export const HPET_TCNF_VAL_SET = 0x40n;
export const HPET_TCNF_32MODE = 0x100n;
export const HPET_TCNF_INT_ROUTE = 0x3e00n;
export const HPET_TCNF_FSB_EN = 0x4000n;
export const HPET_TCAP_FSB_INT_DEL = 0x8000n;
const HPET_TCAP_INT_ROUTE = 0xffffffffn << 32n;
const HPET_TCAP_RO_MASK = HPET_TCAP_INT_ROUTE | HPET_TCAP_FSB_INT_DEL | HPET_TCAP_SIZE | HPET_TCAP_PER_INT;
/** Bits a guest may set in a timer's config (the rest of the low word is reserved). */
const HPET_TCNF_WRITABLE = HPET_TCNF_INT_TYPE | HPET_TCNF_INT_ENB | HPET_TCNF_TYPE | HPET_TCNF_VAL_SET | HPET_TCNF_32MODE
  | HPET_TCNF_INT_ROUTE | HPET_TCNF_FSB_EN;

const M64 = (1n << 64n) - 1n;
const M32 = 0xffffffffn;
/** Deadlines further out than this (ns) are not armed (a 64-bit wrap). */
const MAX_ARM_NS = 1n << 62n;

/** vhpet_init(): the IOAPIC pins HPET timers may use, as a bit mask. */
export function hpetAllowedIrqs(pincount: number): number {
  if (pincount >= 32) return 0xff000000;
  if (pincount >= 20) return (0xf << (pincount - 4)) >>> 0;
  return 0;
}

export const HPET_CAPS = BigInt(BHYVE_HPET_CAPABILITIES) | (BigInt(HPET_PERIOD_FS) << 32n);

interface HpetTimer {
  capConfig: bigint;
  /** FSB route: high 32 bits address, low 32 bits data. */
  msireg: bigint;
  compval: bigint;
  comprate: bigint;
  /** Created on first use (ctx.timer slots are a shared, limited resource). */
  timer?: DeviceTimer;
  /** Host time (ns) at which the counter reaches compval, when armed. */
  deadline?: bigint;
}

export interface HpetOptions {
  /** IOAPIC pins (default: KVM's 24). */
  pincount?: number;
  /** Monotonic clock in ns (default: the device timers' clock). */
  now?: () => bigint;
}

export class Hpet implements Device {
  readonly name = 'hpet';
  config = 0n;
  isr = 0n;
  private countbase = 0n;
  private countbaseNs = 0n;
  readonly timers: HpetTimer[] = [];
  private readonly now: () => bigint;

  constructor(private readonly ctx: DeviceContext, opts: HpetOptions = {}) {
    const allowed = BigInt(hpetAllowedIrqs(opts.pincount ?? IOAPIC_PINCOUNT));
    for (let n = 0; n < HPET_NUM_TIMERS; n++) {
      const t: HpetTimer = {
        capConfig: (allowed << 32n) | HPET_TCAP_PER_INT | HPET_TCAP_FSB_INT_DEL | HPET_TCAP_SIZE,
        msireg: 0n,
        compval: M64,
        comprate: 0n,
      };
      this.timers.push(t);
    }
    this.now = opts.now ?? (() => process.hrtime.bigint());
    ctx.io.registerMmio('hpet', HPET_BASE, HPET_SIZE, {
      read: (addr, data) => this.mmioRead(addr - HPET_BASE, data),
      write: (addr, data) => this.mmioWrite(addr - HPET_BASE, data),
    });
  }

  reset(): void {
    if (this.enabled()) this.stopCounting(this.counter(), this.now());
    for (let n = 0; n < HPET_NUM_TIMERS; n++) this.clearIsr(n);
    this.config = 0n;
    this.countbase = 0n;
    for (const t of this.timers) {
      t.capConfig &= HPET_TCAP_RO_MASK;
      t.msireg = 0n;
      t.compval = M64;
      t.comprate = 0n;
      t.deadline = undefined;
      t.timer?.cancel();
    }
  }

  private deviceTimer(n: number): DeviceTimer {
    const t = this.timers[n];
    t.timer ??= this.ctx.timer(() => this.fired(n));
    return t.timer;
  }

  // ---- state helpers ----

  enabled(): boolean {
    return (this.config & HPET_CNF_ENABLE) !== 0n;
  }

  /** The main counter now. */
  counter(nowNs?: bigint): bigint {
    if (!this.enabled()) return this.countbase;
    const now = nowNs ?? this.now();
    return (this.countbase + (now - this.countbaseNs) / NS_PER_TICK) & M64;
  }

  private mask(n: number): bigint {
    return (this.timers[n].capConfig & HPET_TCNF_32MODE) !== 0n ? M32 : M64;
  }

  private msiEnabled(n: number): boolean {
    const c = this.timers[n].capConfig;
    return (c & HPET_TCAP_FSB_INT_DEL) !== 0n && (c & HPET_TCNF_FSB_EN) !== 0n;
  }

  private legacy(n: number): boolean {
    return (this.config & HPET_CNF_LEG_RT) !== 0n && n < 2;
  }

  /** The IOAPIC pin (GSI) a timer drives, 0 when none (MSI or unrouted). */
  private pin(n: number): number {
    if (this.legacy(n)) return n === 0 ? 0 : 8;
    if (this.msiEnabled(n)) return 0;
    return Number((this.timers[n].capConfig & HPET_TCNF_INT_ROUTE) >> 9n);
  }

  private periodic(n: number): boolean {
    return (this.timers[n].capConfig & HPET_TCNF_TYPE) !== 0n;
  }

  private level(n: number): boolean {
    return !this.legacy(n) && (this.timers[n].capConfig & HPET_TCNF_INT_TYPE) !== 0n;
  }

  // ---- interrupts ----

  private interrupt(n: number): void {
    const t = this.timers[n];
    if ((t.capConfig & HPET_TCNF_INT_ENB) === 0n) return;
    const bit = 1n << BigInt(n);
    if ((this.isr & bit) !== 0n) return; // a level interrupt still asserted
    if (!this.legacy(n) && this.msiEnabled(n)) {
      this.ctx.irq.signalMsi(Number((t.msireg >> 32n) & M32), Number(t.msireg & M32));
      return;
    }
    const pin = this.pin(n);
    if (pin === 0 && !this.legacy(n)) return; // not routed
    if (this.level(n)) {
      this.isr |= bit;
      this.ctx.irq.setLevel(pin, true);
    } else {
      this.ctx.irq.pulse(pin);
    }
  }

  private clearIsr(n: number, pin = this.pin(n)): void {
    const bit = 1n << BigInt(n);
    if ((this.isr & bit) === 0n) return;
    this.ctx.irq.setLevel(pin, false);
    this.isr &= ~bit;
  }

  // ---- timers ----

  /** Arms timer n for the moment the counter (at `nowNs`) reaches its comparator. */
  private startTimer(n: number, counter: bigint, nowNs: bigint, fired = false): void {
    const t = this.timers[n];
    const m = this.mask(n);
    const c = counter & m;
    if (t.comprate !== 0n && this.periodic(n)) {
      const ahead = (t.compval - c) & m;
      // Past (or just matched, when the timer fired): the next multiple of
      // the period after the counter (vhpet_adjust_compval).
      if (fired || ahead === 0n || ahead > m / 2n) {
        t.compval = (t.compval + (((c - t.compval) & m) / t.comprate + 1n) * t.comprate) & m;
      }
    }
    let delta = (t.compval - c) & m;
    if (fired && delta === 0n) delta = m + 1n; // one-shot: the next match is a full wrap away
    const ns = delta * NS_PER_TICK;
    if (ns > MAX_ARM_NS) {
      t.deadline = undefined;
      t.timer?.cancel();
      return;
    }
    t.deadline = nowNs + ns;
    this.deviceTimer(n).armAt(t.deadline);
  }

  private stopTimer(n: number, nowNs: bigint): void {
    const t = this.timers[n];
    t.timer?.cancel();
    // A deadline that passed but has not run yet still interrupts (vhpet).
    if (t.deadline !== undefined && t.deadline <= nowNs) this.interrupt(n);
    t.deadline = undefined;
  }

  private fired(n: number): void {
    const t = this.timers[n];
    if (!this.enabled() || t.deadline === undefined) return;
    const now = this.now();
    if (now < t.deadline) { this.deviceTimer(n).armAt(t.deadline); return; }
    this.startTimer(n, this.counter(now), now, true);
    this.interrupt(n);
  }

  private startCounting(): void {
    this.countbaseNs = this.now();
    for (let n = 0; n < HPET_NUM_TIMERS; n++) this.startTimer(n, this.countbase, this.countbaseNs);
  }

  private stopCounting(counter: bigint, nowNs: bigint): void {
    this.countbase = counter;
    for (let n = 0; n < HPET_NUM_TIMERS; n++) this.stopTimer(n, nowNs);
  }

  private restartTimer(n: number): void {
    if (!this.enabled()) return;
    const now = this.now();
    this.startTimer(n, this.counter(now), now);
  }

  // ---- registers ----

  private updateTimerConfig(n: number, data: bigint, mask: bigint): void {
    const t = this.timers[n];
    const oldPin = this.pin(n);
    const old = t.capConfig;
    let val = (old & ~mask) | (data & mask);
    val = (val & HPET_TCNF_WRITABLE) | (old & HPET_TCAP_RO_MASK);
    if (val === old) return;
    t.capConfig = val;
    const allowed = Number((val >> 32n) & M32);
    const route = Number((val & HPET_TCNF_INT_ROUTE) >> 9n);
    if (route !== 0 && ((allowed >>> route) & 1) === 0) t.capConfig &= ~HPET_TCNF_INT_ROUTE;
    if (!this.periodic(n)) t.comprate = 0n;
    if ((t.capConfig & HPET_TCNF_32MODE) !== 0n) { t.compval &= M32; t.comprate &= M32; }
    // A level interrupt must not stay asserted once it is disabled, turned
    // into edge or MSI, or moved to another pin.
    const bit = 1n << BigInt(n);
    if ((this.isr & bit) !== 0n) {
      const keep = (t.capConfig & HPET_TCNF_INT_ENB) !== 0n && !this.msiEnabled(n) && this.level(n) && this.pin(n) === oldPin;
      if (!keep) this.clearIsr(n, oldPin);
    }
    if (((old ^ t.capConfig) & (HPET_TCNF_32MODE | HPET_TCNF_TYPE)) !== 0n) this.restartTimer(n);
  }

  private writeComparator(n: number, data: bigint, mask: bigint): void {
    const t = this.timers[n];
    const m = this.mask(n);
    const oldVal = t.compval;
    const oldRate = t.comprate;
    if (this.periodic(n)) {
      t.comprate = ((t.comprate & ~mask) | (data & mask)) & m;
      if ((t.capConfig & HPET_TCNF_VAL_SET) !== 0n) t.compval = t.comprate;
    } else {
      t.compval = ((t.compval & ~mask) | (data & mask)) & m;
    }
    t.capConfig &= ~HPET_TCNF_VAL_SET;
    if (t.compval !== oldVal || t.comprate !== oldRate) this.restartTimer(n);
  }

  private readReg(off: number): bigint {
    const r = off & ~7;
    switch (r) {
      case HPET_CAPABILITIES: return HPET_CAPS;
      case HPET_CONFIG: return this.config;
      case HPET_ISR: return this.isr;
      case HPET_MAIN_COUNTER: return this.counter();
      default: break;
    }
    if (r >= 0x100 && r < 0x100 + 0x20 * HPET_NUM_TIMERS) {
      const n = (r - 0x100) >> 5;
      const t = this.timers[n];
      switch (r - hpetTimerCapCnf(n)) {
        case 0: return t.capConfig;
        case 8: return t.compval;
        case 0x10: return t.msireg;
        default: return 0n;
      }
    }
    return 0n;
  }

  private writeReg(off: number, data: bigint, mask: bigint): void {
    const r = off & ~7;
    if (r === HPET_CONFIG) {
      const now = this.now();
      const counter = this.counter(now);
      const old = this.config;
      this.config = ((this.config & ~mask) | (data & mask)) & (HPET_CNF_ENABLE | HPET_CNF_LEG_RT);
      if (((old ^ this.config) & HPET_CNF_LEG_RT) !== 0n) {
        // Timers 0 and 1 change lines: drop what they hold on the old ones.
        for (const n of [0, 1]) {
          const bit = 1n << BigInt(n);
          if ((this.isr & bit) !== 0n) {
            const oldLegacy = (old & HPET_CNF_LEG_RT) !== 0n;
            const oldPin = oldLegacy ? (n === 0 ? 0 : 8) : Number((this.timers[n].capConfig & HPET_TCNF_INT_ROUTE) >> 9n);
            this.ctx.irq.setLevel(oldPin, false);
            this.isr &= ~bit;
          }
        }
      }
      if (((old ^ this.config) & HPET_CNF_ENABLE) !== 0n) {
        if (this.enabled()) this.startCounting();
        else this.stopCounting(counter, now);
      }
      return;
    }
    if (r === HPET_ISR) {
      const clear = this.isr & data & mask;
      for (let n = 0; n < HPET_NUM_TIMERS; n++) if ((clear & (1n << BigInt(n))) !== 0n) this.clearIsr(n);
      return;
    }
    if (r === HPET_MAIN_COUNTER) {
      this.countbase = (this.counter() & ~mask) | (data & mask);
      if (this.enabled()) this.startCounting();
      return;
    }
    if (r >= 0x100 && r < 0x100 + 0x20 * HPET_NUM_TIMERS) {
      const n = (r - 0x100) >> 5;
      switch (r - hpetTimerCapCnf(n)) {
        case 0: this.updateTimerConfig(n, data, mask); break;
        case 8: this.writeComparator(n, data, mask); break;
        case 0x10: this.timers[n].msireg = (this.timers[n].msireg & ~mask) | (data & mask); break;
        default: break;
      }
    }
  }

  mmioRead(off: number, data: Uint8Array): void {
    const size = data.length;
    if ((size !== 4 && size !== 8) || off % size !== 0 || off < 0 || off + size > HPET_SIZE) { data.fill(0); return; }
    let v = this.readReg(off);
    if (size === 4 && (off & 4) !== 0) v >>= 32n;
    for (let i = 0; i < size; i++) data[i] = Number((v >> BigInt(8 * i)) & 0xffn);
  }

  mmioWrite(off: number, data: Uint8Array): void {
    const size = data.length;
    if ((size !== 4 && size !== 8) || off % size !== 0 || off < 0 || off + size > HPET_SIZE) return;
    let v = 0n;
    for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt(data[i]);
    let mask = size === 8 ? M64 : M32;
    if (size === 4 && (off & 4) !== 0) { v <<= 32n; mask <<= 32n; }
    this.writeReg(off, v, mask);
  }
}
