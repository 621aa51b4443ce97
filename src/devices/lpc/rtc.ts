// The MC146818 CMOS RTC at 0x70 (index) / 0x71 (data): the register model
// of vmm.ko's vrtc.c (bhyve keeps the RTC in the kernel) with the setup of
// bhyve's amd64/rtc.c rtc_init().
//
// Registers 0-9 (seconds .. year) and 0x32 (century) follow a clock that
// starts at the host's time: local time by default, UTC when
// `rtc.use_localtime` is false (`bhyve -u`). They read in BCD unless register
// B's DM bit (binary) is set, and in 24-hour form unless its 24/12 bit is
// clear (then bit 7 of the hour is PM). The guest may set the time the usual
// way: set B.SET (halt updates), write the fields, clear B.SET. Invalid
// fields stop the clock (vrtc's "broken time"); bhyve additionally stops the
// VM there, which we do not. Register A: UIP (update in progress) reads 1
// during the last 244 us before each second boundary of the running clock,
// as QEMU's mc146818rtc and the real part (which holds it for 8 cycles of
// its 32.768 kHz base before the update), so guests that wait for a UIP
// edge see one; vrtc never sets it. Register A resets to 0x26 (divider
// running, rate 1024 Hz), as QEMU and what a PC BIOS leaves; vrtc starts
// at 0x20. The clock runs only while the divider bits are 010. Register D
// reads VRT (valid RAM and time) set.
//
// Interrupts on IRQ 8, as vrtc: periodic (register B PIE; register A's
// rate select, 2 Hz .. 8192 Hz, with the divider running), alarm (AIE; the
// alarm registers 1/3/5 compared with seconds/minutes/hours, 0xC0-0xFF
// matching anything) and update-ended (UIE; once a second while the clock
// runs). Register C holds the flags PF/AF/UF; IRQF is set, and IRQ 8 pulsed
// (8259 and IOAPIC, as vrtc_set_reg_c), when a flag meets its enable bit;
// reading C returns and clears them. As vrtc, one device timer (ctx.timer)
// drives them all: at the periodic rate when PIE is on, else on every
// second boundary of the clock while AIE or UIE is on; a flag is only raised
// while its interrupt is enabled. The host timer's resolution is about 1 ms,
// so rates above ~1 kHz deliver fewer interrupts than asked.
// No NMI masking: bit 7 of the index byte is dropped, as vrtc does. The
// index port reads 0xff, as vrtc.
//
// Memory size registers, as rtc_init() writes them for UEFI and SeaBIOS:
//   0x34/0x35  RAM between 16 MiB and 4 GiB in 64 KiB units (lowmem - 16 MiB)
//   0x5b-0x5d  RAM above 4 GiB in 64 KiB units (highmem)
// and, beyond bhyve (its rtc_init leaves them 0), the classic AT cells
//   0x30/0x31  RAM above 1 MiB in KiB, capped at 0xffff (as QEMU fills them),
// which SeaBIOS reads when 0x34/0x35 are zero.

import type { AccessSize, Device, DeviceContext, DeviceTimer } from '../device.js';
import type { MemoryLayout } from '../../sys/memory-map.js';
import { utcOffsetSeconds } from '../../sys/localtime.js';

export const IO_RTC = 0x70;
export const RTC_IRQ = 8;
export const RTC_NVRAM_SIZE = 128;

export const RTC_SEC = 0x00;
export const RTC_SEC_ALARM = 0x01;
export const RTC_MIN = 0x02;
export const RTC_MIN_ALARM = 0x03;
export const RTC_HRS = 0x04;
export const RTC_HRS_ALARM = 0x05;
export const RTC_WDAY = 0x06;
export const RTC_DAY = 0x07;
export const RTC_MONTH = 0x08;
export const RTC_YEAR = 0x09;
export const RTC_STATUSA = 0x0a;
export const RTC_STATUSB = 0x0b;
export const RTC_INTR = 0x0c;
export const RTC_STATUSD = 0x0d;
export const RTC_NVRAM_START = 0x0e;
export const RTC_CENTURY = 0x32;

export const RTC_EXTMEM_LSB = 0x30;
export const RTC_EXTMEM_MSB = 0x31;
export const RTC_LMEM_LSB = 0x34;
export const RTC_LMEM_MSB = 0x35;
export const RTC_HMEM_LSB = 0x5b;
export const RTC_HMEM_SB = 0x5c;
export const RTC_HMEM_MSB = 0x5d;

export const RTCSA_TUP = 0x80;
export const RTCSB_HALT = 0x80;
export const RTCSB_PINTR = 0x40;
export const RTCSB_AINTR = 0x20;
export const RTCSB_UINTR = 0x10;
export const RTCSB_SQWE = 0x08;
export const RTCSB_BIN = 0x04;
export const RTCSB_24HR = 0x02;
export const RTCSD_PWR = 0x80;
/** Register C: interrupt request (any enabled flag), periodic, alarm, update-ended. */
export const RTCIR_INT = 0x80;
export const RTCIR_PERIOD = 0x40;
export const RTCIR_ALARM = 0x20;
export const RTCIR_UPDATE = 0x10;

/** vrtc_freq()'s periodic interrupt periods by register A rate select, in ns. */
export const RTC_PERIODIC_NS: readonly bigint[] = [
  0n, 1_000_000_000n / 256n, 1_000_000_000n / 128n, 1_000_000_000n / 8192n, 1_000_000_000n / 4096n,
  1_000_000_000n / 2048n, 1_000_000_000n / 1024n, 1_000_000_000n / 512n, 1_000_000_000n / 256n,
  1_000_000_000n / 128n, 1_000_000_000n / 64n, 1_000_000_000n / 32n, 1_000_000_000n / 16n,
  1_000_000_000n / 8n, 1_000_000_000n / 4n, 1_000_000_000n / 2n,
];
const NS_PER_SEC = 1_000_000_000n;
/** How long UIP reads 1 before each update: 8 periods of the 32.768 kHz base (QEMU's UIP_HOLD_LENGTH). */
export const RTC_UIP_HOLD_NS = (8n * NS_PER_SEC) / 32768n;
/** Register A after reset: divider running (010), rate select 6 (1024 Hz), as QEMU. */
export const RTC_STATUSA_RESET = 0x26;
/** At most this many elapsed seconds are scanned for an alarm match. */
const ALARM_SCAN_MAX = 86_400;

const M_1MB = 1024 * 1024;
const M_16MB = 16 * M_1MB;
const M_64KB = 64 * 1024;
const POSIX_BASE_YEAR = 1970;
const BROKEN = -1;

export interface RtcOptions {
  /** Wall clock in ms since the epoch (default Date.now). */
  now?: () => number;
  /** Monotonic clock in ns (default process.hrtime.bigint). */
  uptime?: () => bigint;
  /** Overrides `rtc.use_localtime` (default: config, else true). */
  useLocaltime?: boolean;
}

function bcd(v: number): number {
  return ((Math.floor(v / 10) % 10) << 4) | (v % 10);
}

function daysInMonth(year: number, mon: number): number {
  return new Date(Date.UTC(year, mon, 0)).getUTCDate();
}

export class Rtc implements Device {
  readonly name = 'rtc';
  readonly regs = new Uint8Array(RTC_NVRAM_SIZE);
  /** Selected register (vrtc resets it to register D). */
  addr = RTC_STATUSD;
  private baseRtcTime = BROKEN;
  private baseUptime = 0n;
  private readonly nowMs: () => number;
  private readonly uptime: () => bigint;
  private readonly localtime: boolean;
  /** Called when the alarm matches (with AIE on): the ACPI wake from S3. */
  onAlarm: (() => void) | undefined;
  /** The interrupt callout (created when an interrupt is first enabled). */
  private timer: DeviceTimer | undefined;
  private deadline: bigint | undefined;
  private period = 0n;
  /** The last RTC second checked for update-ended and alarm events. */
  private eventTime = BROKEN;

  constructor(private readonly ctx: DeviceContext, layout: MemoryLayout, opts: RtcOptions = {}) {
    this.nowMs = opts.now ?? (() => Date.now());
    this.uptime = opts.uptime ?? (() => process.hrtime.bigint());
    this.localtime = opts.useLocaltime ?? ctx.config.getBool('rtc.use_localtime', true);

    // vrtc_init: dividers running (rate select 6 as QEMU), 24-hour BCD, no
    // interrupts, RAM valid.
    this.regs[RTC_STATUSA] = RTC_STATUSA_RESET;
    this.regs[RTC_STATUSB] = RTCSB_24HR;
    this.regs[RTC_INTR] = 0;
    this.regs[RTC_STATUSD] = RTCSD_PWR;
    this.timeUpdate(0);
    this.secsToRtc(0, false);

    this.setMemorySize(layout);
    this.setTime(this.hostTime());

    ctx.io.registerPorts('rtc', IO_RTC, 2, {
      read: (port, size) => this.portRead(port, size),
      write: (port, size, value) => this.portWrite(port, size, value),
    });
  }

  /** The host time the RTC starts from (bhyve's rtc_time()): seconds since
   * the epoch, shifted to local time unless the RTC keeps UTC. */
  hostTime(): number {
    const ms = this.nowMs();
    let t = Math.floor(ms / 1000);
    if (this.localtime) t += utcOffsetSeconds(t) ?? -new Date(ms).getTimezoneOffset() * 60;
    return t;
  }

  /** The RTC's time in seconds since the epoch, or -1 when the guest has
   * halted it or programmed invalid fields (bhyvectl --get-rtc-time). */
  getTime(): number {
    return this.curtime();
  }

  /** Sets the RTC's time (vrtc_set_time); false while the guest halts it. */
  setTime(secs: number): boolean {
    return this.timeUpdate(Math.floor(secs));
  }

  /** bhyvectl --get-rtc-nvram: any offset; time fields are refreshed. */
  nvramRead(offset: number): number {
    if (!Number.isInteger(offset) || offset < 0 || offset >= RTC_NVRAM_SIZE) throw new RangeError(`RTC offset ${offset} out of range`);
    if (offset < 10 || offset === RTC_CENTURY) this.secsToRtc(this.curtime(), false);
    return this.regs[offset];
  }

  /** bhyvectl --set-rtc-nvram: NVRAM cells only (not time, control or century). */
  nvramWrite(offset: number, value: number): void {
    if (!Number.isInteger(offset) || offset < RTC_NVRAM_START || offset === RTC_CENTURY || offset >= RTC_NVRAM_SIZE) {
      throw new RangeError(`RTC NVRAM offset ${offset} is not writable (use 0x0e-0x7f except 0x32)`);
    }
    this.regs[offset] = value & 0xff;
  }

  private setMemorySize(layout: MemoryLayout): void {
    const ext = Math.min(Math.max(Math.floor(layout.lowmem / 1024) - 1024, 0), 0xffff);
    this.regs[RTC_EXTMEM_LSB] = ext & 0xff;
    this.regs[RTC_EXTMEM_MSB] = (ext >> 8) & 0xff;
    const lomem = Math.max(Math.floor((layout.lowmem - M_16MB) / M_64KB), 0);
    this.regs[RTC_LMEM_LSB] = lomem & 0xff;
    this.regs[RTC_LMEM_MSB] = (lomem >>> 8) & 0xff;
    const himem = Math.floor(layout.highmem / M_64KB);
    this.regs[RTC_HMEM_LSB] = himem & 0xff;
    this.regs[RTC_HMEM_SB] = (himem >>> 8) & 0xff;
    this.regs[RTC_HMEM_MSB] = (himem >>> 16) & 0xff;
  }

  // ---- ports ----

  private portRead(port: number, size: AccessSize): number {
    if (size !== 1) return size === 2 ? 0xffff : 0xffffffff;
    if (port === IO_RTC) return 0xff;
    return this.dataRead();
  }

  private portWrite(port: number, size: AccessSize, value: number): void {
    if (size !== 1) return;
    if (port === IO_RTC) this.addr = value & 0x7f;
    else this.dataWrite(value & 0xff);
  }

  private dataRead(): number {
    const off = this.addr;
    const cur = this.curtime();
    this.timeUpdate(cur, true);
    if (off < 10 || off === RTC_CENTURY) this.secsToRtc(cur, false);
    if (off === RTC_INTR) {
      this.timeEvents(cur);
      const v = this.regs[RTC_INTR];
      this.setRegC(0);
      return v;
    }
    if (off === RTC_STATUSA && this.updateInProgress()) return this.regs[off] | RTCSA_TUP;
    return this.regs[off];
  }

  private dataWrite(val: number): void {
    const off = this.addr;
    const cur = this.curtime();
    this.timeUpdate(cur, true);
    if (off < 10 || off === RTC_CENTURY) this.secsToRtc(cur, false);
    switch (off) {
      case RTC_STATUSA: this.setRegA(val); break;
      case RTC_STATUSB: this.setRegB(val); break;
      case RTC_INTR:
      case RTC_STATUSD:
        break; // read-only
      case RTC_SEC:
        this.regs[off] = val & 0x7f; // bit 7 of seconds is read-only
        break;
      default:
        this.regs[off] = val;
        break;
    }
    // Some guests (OpenBSD) write the century outside B.SET: re-read the time.
    if (off === RTC_CENTURY && !this.halted()) this.timeUpdate(this.rtcToSecs());
  }

  // ---- time keeping (vrtc.c) ----

  private halted(): boolean {
    return (this.regs[RTC_STATUSB] & RTCSB_HALT) !== 0;
  }

  private dividerEnabled(regA: number): boolean {
    return (regA & 0x70) === 0x20;
  }

  private updateEnabled(): boolean {
    return this.dividerEnabled(this.regs[RTC_STATUSA]) && !this.halted() && this.baseRtcTime !== BROKEN;
  }

  /** True during the UIP hold before the running clock's next second. */
  private updateInProgress(): boolean {
    if (!this.updateEnabled()) return false;
    const now = this.uptime();
    if (now < this.baseUptime) return false;
    return (now - this.baseUptime) % NS_PER_SEC >= NS_PER_SEC - RTC_UIP_HOLD_NS;
  }

  private curtime(): number {
    let t = this.baseRtcTime;
    if (this.updateEnabled()) t += Number((this.uptime() - this.baseUptime) / 1_000_000_000n);
    return t;
  }

  /** Moves the base time to `newtime`; false when updates are halted.
   * `ticked`: newtime is curtime() (the clock advanced by itself), so the
   * fraction of a second already elapsed is kept (vrtc drops it). */
  private timeUpdate(newtime: number, ticked = false): boolean {
    const old = this.baseRtcTime;
    if (newtime === old) return true;
    if (newtime === BROKEN) {
      this.baseRtcTime = BROKEN;
      return true;
    }
    if (this.halted()) return false;
    const now = this.uptime();
    if (ticked && old !== BROKEN && newtime > old) {
      this.baseUptime += BigInt(newtime - old) * 1_000_000_000n;
      if (this.baseUptime > now) this.baseUptime = now;
    } else {
      this.baseUptime = now;
      // A time set by the guest (or the host) is not an update event.
      this.eventTime = newtime;
    }
    this.baseRtcTime = newtime;
    if (!ticked) this.reschedule();
    return true;
  }

  private field(v: number): number {
    return (this.regs[RTC_STATUSB] & RTCSB_BIN) !== 0 ? v : bcd(v);
  }

  private secsToRtc(t: number, force: boolean): void {
    if (t < 0) return;
    if (this.halted() && !force) return;
    const d = new Date(t * 1000);
    const r = this.regs;
    const hour24 = d.getUTCHours();
    r[RTC_SEC] = this.field(d.getUTCSeconds());
    r[RTC_MIN] = this.field(d.getUTCMinutes());
    if ((r[RTC_STATUSB] & RTCSB_24HR) !== 0) {
      r[RTC_HRS] = this.field(hour24);
    } else {
      const h12 = hour24 === 0 || hour24 === 12 ? 12 : hour24 % 12;
      r[RTC_HRS] = this.field(h12) | (hour24 >= 12 ? 0x80 : 0);
    }
    r[RTC_WDAY] = this.field(d.getUTCDay() + 1);
    r[RTC_DAY] = this.field(d.getUTCDate());
    r[RTC_MONTH] = this.field(d.getUTCMonth() + 1);
    const year = d.getUTCFullYear();
    r[RTC_YEAR] = this.field(year % 100);
    r[RTC_CENTURY] = this.field(Math.floor(year / 100));
  }

  /** Decodes a field; undefined when BCD digits are invalid. */
  private get(v: number): number | undefined {
    if ((this.regs[RTC_STATUSB] & RTCSB_BIN) !== 0) return v;
    const lo = v & 0xf;
    const hi = (v >> 4) & 0xf;
    if (lo > 9 || hi > 9) return undefined;
    return hi * 10 + lo;
  }

  private rtcToSecs(): number {
    const r = this.regs;
    const sec = this.get(r[RTC_SEC]);
    const min = this.get(r[RTC_MIN]);
    if (sec === undefined || sec > 59 || min === undefined || min > 59) return BROKEN;
    let raw = r[RTC_HRS];
    const h24 = (r[RTC_STATUSB] & RTCSB_24HR) !== 0;
    let pm = false;
    if (!h24 && (raw & 0x80) !== 0) { raw &= 0x7f; pm = true; }
    let hour = this.get(raw);
    if (hour === undefined) return BROKEN;
    if (!h24) {
      if (hour < 1 || hour > 12) return BROKEN;
      if (hour === 12) hour = 0;
      if (pm) hour += 12;
    }
    if (hour > 23) return BROKEN;
    const day = this.get(r[RTC_DAY]);
    const mon = this.get(r[RTC_MONTH]);
    const yy = this.get(r[RTC_YEAR]);
    const cent = this.get(r[RTC_CENTURY]);
    if (day === undefined || mon === undefined || yy === undefined || cent === undefined) return BROKEN;
    if (mon < 1 || mon > 12 || yy > 99) return BROKEN;
    const year = cent * 100 + yy;
    if (year < POSIX_BASE_YEAR || day < 1 || day > daysInMonth(year, mon)) return BROKEN;
    return Date.UTC(year, mon - 1, day, hour, min, sec) / 1000;
  }

  private setRegA(val: number): void {
    val &= ~RTCSA_TUP;
    const old = this.regs[RTC_STATUSA];
    if (!this.dividerEnabled(old) && this.dividerEnabled(val)) {
      // Out of reset: the time was frozen meanwhile.
      this.regs[RTC_STATUSA] = val;
      this.baseUptime = this.uptime();
      this.eventTime = this.baseRtcTime;
      this.reschedule(true);
      return;
    }
    if (this.dividerEnabled(old) && !this.dividerEnabled(val)) {
      // Into reset: freeze the time where it is.
      this.timeUpdate(this.curtime(), true);
    }
    this.regs[RTC_STATUSA] = val;
    if ((old ^ val) & 0x7f) this.reschedule((old & 0xf) !== (val & 0xf));
  }

  private setRegB(val: number): void {
    this.setRegBTime(val);
    // Enabling an interrupt whose flag is already up raises IRQF (vrtc).
    this.setRegC(this.regs[RTC_INTR]);
    this.reschedule();
  }

  private setRegBTime(val: number): void {
    const old = this.regs[RTC_STATUSB];
    this.regs[RTC_STATUSB] = val;
    if (((old ^ val) & RTCSB_HALT) === 0) return;
    if ((val & RTCSB_HALT) === 0) {
      // Guest finished setting the time: take the fields as the new time
      // (invalid fields stop the clock).
      this.timeUpdate(this.rtcToSecs());
    } else {
      // Guest takes ownership of the fields: refresh them one last time.
      this.regs[RTC_STATUSB] = old;
      const cur = this.curtime();
      this.regs[RTC_STATUSB] = val;
      this.secsToRtc(cur, true);
      this.baseRtcTime = BROKEN;
      this.regs[RTC_STATUSB] &= ~RTCSB_UINTR;
    }
  }

  // ---- interrupts (vrtc_set_reg_c, vrtc_freq, vrtc_callout_handler) ----

  /** Register C and the callout, for tests and bhyvectl. */
  interruptState(): RtcInterruptState {
    return { regC: this.regs[RTC_INTR], period: this.period, deadline: this.deadline };
  }

  private setRegC(val: number): void {
    const enabled = val & this.regs[RTC_STATUSB] & (RTCIR_PERIOD | RTCIR_ALARM | RTCIR_UPDATE);
    const oldIrqf = this.regs[RTC_INTR] & RTCIR_INT;
    const v = enabled ? val | RTCIR_INT : val & ~RTCIR_INT;
    this.regs[RTC_INTR] = v & 0xff;
    if (!oldIrqf && (v & RTCIR_INT)) this.ctx.irq.pulse(RTC_IRQ);
  }

  private pie(): boolean {
    return (this.regs[RTC_STATUSB] & RTCSB_PINTR) !== 0;
  }

  private aie(): boolean {
    return (this.regs[RTC_STATUSB] & RTCSB_AINTR) !== 0;
  }

  private uie(): boolean {
    return (this.regs[RTC_STATUSB] & RTCSB_UINTR) !== 0;
  }

  /** vrtc_freq(): the callout period in ns, 0 for none. */
  private callPeriod(): bigint {
    if (this.pie() && this.dividerEnabled(this.regs[RTC_STATUSA])) return RTC_PERIODIC_NS[this.regs[RTC_STATUSA] & 0xf];
    if ((this.aie() || this.uie()) && this.updateEnabled()) return NS_PER_SEC;
    return 0n;
  }

  /** The next second boundary of the running clock after `now`. */
  private nextSecond(now: bigint): bigint {
    const n = now > this.baseUptime ? (now - this.baseUptime) / NS_PER_SEC + 1n : 1n;
    return this.baseUptime + n * NS_PER_SEC;
  }

  /** Starts, moves or stops the callout after a register change. */
  private reschedule(restart = false): void {
    const period = this.callPeriod();
    if (period === 0n) {
      this.period = 0n;
      this.deadline = undefined;
      this.timer?.cancel();
      return;
    }
    if (!restart && period === this.period && this.deadline !== undefined) return;
    this.period = period;
    const now = this.uptime();
    this.deadline = this.pie() ? now + period : this.nextSecond(now);
    this.timer ??= this.ctx.timer(() => this.callout());
    this.timer.armAt(this.deadline);
  }

  /** The callout: periodic flag, update/alarm check, next deadline. */
  callout(): void {
    const now = this.uptime();
    if (this.deadline === undefined || this.period === 0n) return;
    if (now < this.deadline) { this.timer?.armAt(this.deadline); return; }
    if (this.pie()) this.setRegC(this.regs[RTC_INTR] | RTCIR_PERIOD);
    if (this.aie() || this.uie()) this.timeEvents(this.curtime());
    this.period = this.callPeriod();
    if (this.period === 0n) { this.deadline = undefined; return; }
    if (this.pie()) {
      this.deadline += this.period;
      if (this.deadline <= now) this.deadline = now + this.period; // missed periods are lost, as vrtc
    } else {
      this.deadline = this.nextSecond(now);
    }
    this.timer?.armAt(this.deadline);
  }

  /** Raises UF and AF for the seconds the clock moved through since the last check. */
  private timeEvents(cur: number): void {
    if (cur === BROKEN || !this.updateEnabled()) return;
    if (this.eventTime === BROKEN || cur < this.eventTime) { this.eventTime = cur; return; }
    if (cur === this.eventTime) return;
    let flags = 0;
    if (this.uie()) flags |= RTCIR_UPDATE;
    if (this.aie()) {
      const from = Math.max(this.eventTime + 1, cur - ALARM_SCAN_MAX);
      for (let t = from; t <= cur; t++) {
        if (this.alarmMatches(t)) { flags |= RTCIR_ALARM; break; }
      }
    }
    this.eventTime = cur;
    this.secsToRtc(cur, false);
    if (flags) this.setRegC(this.regs[RTC_INTR] | flags);
    if (flags & RTCIR_ALARM) this.onAlarm?.();
  }

  private alarmMatches(t: number): boolean {
    const d = new Date(t * 1000);
    const r = this.regs;
    const hour24 = d.getUTCHours();
    let hrs: number;
    if ((r[RTC_STATUSB] & RTCSB_24HR) !== 0) hrs = this.field(hour24);
    else hrs = this.field(hour24 === 0 || hour24 === 12 ? 12 : hour24 % 12) | (hour24 >= 12 ? 0x80 : 0);
    const match = (alarm: number, v: number): boolean => alarm >= 0xc0 || alarm === v;
    return match(r[RTC_SEC_ALARM], this.field(d.getUTCSeconds()))
      && match(r[RTC_MIN_ALARM], this.field(d.getUTCMinutes()))
      && match(r[RTC_HRS_ALARM], hrs);
  }
}

export interface RtcInterruptState {
  regC: number;
  /** Nanoseconds between callouts, 0 when no interrupt is enabled. */
  period: bigint;
  deadline?: bigint;
}

export function createRtc(ctx: DeviceContext, layout: MemoryLayout, opts?: RtcOptions): Rtc {
  return new Rtc(ctx, layout, opts);
}
