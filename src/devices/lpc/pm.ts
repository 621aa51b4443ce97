// ACPI fixed hardware and the reset register, as bhyve's amd64/pm.c plus
// the PM timer that vmm.ko emulates in the kernel (vpmtmr.c). Ports, as
// bhyve's acpi.h and its FADT describe them:
//
//   0x400  PM1a_STS  16-bit, write-1-to-clear (WAK, RTC, SLPBTN, PWRBTN, BM)
//   0x402  PM1a_EN   16-bit, only PWRBTN_EN, GBL_EN and RTC_EN stick
//   0x404  PM1a_CNT  16-bit; SCI_EN (bit 0) is read-only to the OS; writing
//                    SLP_EN (bit 13) with SLP_TYP (bits 12-10) = 5 is S5,
//                    soft power off (bhyve's _S5_ package says 5); with
//                    acpi_s3 (off by default, as bhyve has no S3), SLP_TYP
//                    1 is S3: the boot vCPU stops with RAM kept until the
//                    RTC alarm (with RTC_EN) or the power button wakes it,
//                    then WAK_STS is set and it resumes in real mode at the
//                    FACS waking vector (as SeaBIOS would enter it; the VMM
//                    does it itself, with or without firmware). Other vCPUs
//                    are left as they are: an OS takes them offline before
//                    S3 and starts them again with INIT/SIPI.
//   0x408  PM_TMR    32-bit, read-only, 3.579545 MHz from a monotonic clock
//   0x40c  GPE0_STS  8-bit, write-1-to-clear (bit 0: VM generation counter)
//   0x40d  GPE0_EN   8-bit
//   0xb2   SMI_CMD   8-bit, write-only: 0xa0 ACPI_ENABLE sets SCI_EN,
//                    0xa1 ACPI_DISABLE clears it
//   0xcf9  reset control, 8-bit: a write with bit 2 (RST_CPU) set resets
//                    the machine (hard and soft alike); reads return the
//                    last value written
//
// The SCI is ISA IRQ 9, level-triggered: high while any enabled status bit
// (PM1 or GPE0) is set. bhyve computes the SCI without looking at SCI_EN;
// so do we.
//
// Power button: bhyve starts catching SIGTERM only when the guest writes
// ACPI_ENABLE (before that SIGTERM kills bhyve). pressPowerButton() sets
// PWRBTN_STS and updates the SCI whenever it is called, and returns whether
// ACPI is enabled, so the vmm core can fall back to ending the run itself.
//
// Accesses of a size bhyve refuses (its handlers fail them) are ignored here
// and read as all-ones.
//
// A PIIX4-style PM base (the QEMU personality's PIIX4 ACPI function,
// piix4-pm.ts): relocate(base) makes the same registers (PM1a event, PM1a
// control, PM timer, GPE0, at the same offsets from base as from 0x400)
// decode at a base the firmware programs, or stops decoding them there
// (undefined). bhyve's block at 0x400 stays decoded whatever the base: it is
// what this platform's FADT describes (the constants below), and SeaBIOS
// itself switches its PM timer to the FADT's PM_TMR_BLK once it has loaded
// the tables, so the firmware's base and the tables' base both work. A base
// that would overlap another device's ports is not decoded (relocate
// returns false).

import type { AccessSize, Device, DeviceContext } from '../device.js';
import { findWakingVector } from '../../firmware/acpi/waking-vector.js';

export const SCI_INT = 9;
export const SMI_CMD = 0xb2;
export const BHYVE_ACPI_ENABLE = 0xa0;
export const BHYVE_ACPI_DISABLE = 0xa1;
export const PM1A_EVT_ADDR = 0x400;
export const PM1A_CNT_ADDR = 0x404;
export const IO_PMTMR = 0x408;
export const IO_GPE0_BLK = 0x40c;
export const IO_GPE0_LEN = 2;
export const IO_GPE0_STS = IO_GPE0_BLK;
export const IO_GPE0_EN = IO_GPE0_BLK + IO_GPE0_LEN / 2;
export const RESET_CONTROL_PORT = 0xcf9;
export const GPE_VMGENC = 0;
/** Length of the PM1/timer/GPE0 block from PM1A_EVT_ADDR. */
export const PM_BLOCK_LEN = IO_GPE0_BLK + IO_GPE0_LEN - PM1A_EVT_ADDR;

export const PM1_TMR_STS = 0x0001;
export const PM1_BM_STS = 0x0010;
export const PM1_GBL_STS = 0x0020;
export const PM1_PWRBTN_STS = 0x0100;
export const PM1_SLPBTN_STS = 0x0200;
export const PM1_RTC_STS = 0x0400;
export const PM1_WAK_STS = 0x8000;

export const PM1_TMR_EN = 0x0001;
export const PM1_GBL_EN = 0x0020;
export const PM1_PWRBTN_EN = 0x0100;
export const PM1_SLPBTN_EN = 0x0200;
export const PM1_RTC_EN = 0x0400;

export const PM1_SCI_EN = 0x0001;
export const PM1_SLP_TYP = 0x1c00;
export const PM1_SLP_EN = 0x2000;
export const PM1_ALWAYS_ZERO = 0xc003;
/** SLP_TYP value of bhyve's \_S5 package. */
export const SLP_TYP_S5 = 5;
/** SLP_TYP value of the \_S3 package (acpi_s3; QEMU's value). */
export const SLP_TYP_S3 = 1;

export const PMTMR_FREQ = 3579545;
export const RST_CPU = 0x04;

const GPE0_VALID = 1 << GPE_VMGENC;

function ones(size: number): number {
  return size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
}

export interface PmOptions {
  /** Monotonic clock in nanoseconds (default process.hrtime.bigint). */
  clock?: () => bigint;
}

export class PowerManagement implements Device {
  readonly name = 'acpi-pm';
  pm1Status = 0;
  pm1Enable = 0;
  pm1Control = 0;
  gpe0Active = 0;
  gpe0Enabled = 0;
  resetControl = 0;
  private sciActive = false;
  /** S3 is offered (acpi_s3) and the machine can sleep. */
  readonly s3: boolean;
  /** In S3: the boot vCPU is stopped, RAM kept, until a wake event. */
  sleeping = false;
  private readonly clock: () => bigint;
  private readonly timerBase: bigint;
  private movedBase: number | undefined;

  constructor(private readonly ctx: DeviceContext, opts: PmOptions = {}) {
    this.clock = opts.clock ?? (() => process.hrtime.bigint());
    this.timerBase = this.clock();
    this.s3 = ctx.config.getBool('acpi_s3', false) && ctx.machine.sleep !== undefined && ctx.machine.wake !== undefined;
    ctx.io.registerPorts('pm1', PM1A_EVT_ADDR, PM_BLOCK_LEN, {
      read: (port, size) => this.blockRead(port, size),
      write: (port, size, value) => this.blockWrite(port, size, value),
    });
    ctx.io.registerPorts('smi_cmd', SMI_CMD, 1, {
      read: (_p, size) => ones(size), // write-only (bhyve registers IOPORT_F_OUT)
      write: (_p, size, value) => { if (size === 1) this.smiCommand(value & 0xff); },
    });
    ctx.io.registerPorts('reset_reg', RESET_CONTROL_PORT, 1, {
      read: (_p, size) => (size === 1 ? this.resetControl : ones(size)),
      write: (_p, size, value) => { if (size === 1) this.resetWrite(value & 0xff); },
    });
  }

  /** Where the block is decoded besides bhyve's 0x400 (a PIIX4-style PM
   * base), or undefined. */
  get relocatedBase(): number | undefined {
    return this.movedBase;
  }

  /** Decodes the PM1/timer/GPE0 block at base as well as at 0x400 (base
   * 0x400 or undefined: only there). Unregisters the block from the previous
   * base first. Returns false when the block could not be placed at base
   * (out of the port space, or overlapping another device), in which case
   * it is decoded at 0x400 only. */
  relocate(base: number | undefined): boolean {
    if (base === this.movedBase || (base === PM1A_EVT_ADDR && this.movedBase === undefined)) return true;
    if (this.movedBase !== undefined) {
      this.ctx.io.unregisterPorts(this.movedBase);
      this.movedBase = undefined;
    }
    if (base === undefined || base === PM1A_EVT_ADDR) return true;
    if (!Number.isInteger(base) || base <= 0 || base + PM_BLOCK_LEN > 0x10000) return false;
    const delta = PM1A_EVT_ADDR - base;
    try {
      this.ctx.io.registerPorts('pm1@pmba', base, PM_BLOCK_LEN, {
        read: (port, size) => this.blockRead(port + delta, size),
        write: (port, size, value) => this.blockWrite(port + delta, size, value),
      });
    } catch {
      return false;
    }
    this.movedBase = base;
    return true;
  }

  /** The PM timer's 32-bit count now. */
  timerValue(): number {
    const ns = this.clock() - this.timerBase;
    return Number(((ns * BigInt(PMTMR_FREQ)) / 1_000_000_000n) & 0xffffffffn);
  }

  /** True when the guest has enabled ACPI (SCI_EN). */
  get acpiEnabled(): boolean {
    return (this.pm1Control & PM1_SCI_EN) !== 0;
  }

  /** A press of the power button (SIGTERM): sets PWRBTN_STS and updates the
   * SCI. Returns whether ACPI is enabled (bhyve only catches SIGTERM then). */
  pressPowerButton(): boolean {
    if (this.sleeping) { this.wakeEvent(PM1_PWRBTN_STS); return true; } // wakes from S3
    if ((this.pm1Status & PM1_PWRBTN_STS) === 0) {
      this.pm1Status |= PM1_PWRBTN_STS;
      this.sciUpdate();
    }
    return this.acpiEnabled;
  }

  /** Raises a general-purpose event (bhyve's acpi_raise_gpe). */
  raiseGpe(bit: number): void {
    const mask = 1 << bit;
    if ((mask & ~GPE0_VALID) !== 0) throw new RangeError(`GPE bit ${bit} is not allocated`);
    this.gpe0Active |= mask;
    this.sciUpdate();
  }

  reset(): void {
    this.pm1Status = 0;
    this.pm1Enable = 0;
    this.pm1Control = 0;
    this.gpe0Active = 0;
    this.gpe0Enabled = 0;
    this.resetControl = 0;
    this.sciUpdate();
  }

  private sciUpdate(): void {
    const pending = this.pm1Status & this.pm1Enable
      & (PM1_TMR_STS | PM1_GBL_STS | PM1_PWRBTN_STS | PM1_SLPBTN_STS | PM1_RTC_STS);
    const need = pending !== 0 || (this.gpe0Enabled & this.gpe0Active) !== 0;
    if (need === this.sciActive) return;
    this.sciActive = need;
    this.ctx.irq.setLevel(SCI_INT, need);
  }

  private blockRead(port: number, size: AccessSize): number {
    switch (port) {
      case PM1A_EVT_ADDR: return size === 2 ? this.pm1Status : ones(size);
      case PM1A_EVT_ADDR + 2: return size === 2 ? this.pm1Enable : ones(size);
      case PM1A_CNT_ADDR: return size === 2 ? this.pm1Control : ones(size);
      case IO_PMTMR: return size === 4 ? this.timerValue() : ones(size);
      case IO_GPE0_STS: return size === 1 ? this.gpe0Active : ones(size);
      case IO_GPE0_EN: return size === 1 ? this.gpe0Enabled : ones(size);
      default: return ones(size);
    }
  }

  private blockWrite(port: number, size: AccessSize, value: number): void {
    switch (port) {
      case PM1A_EVT_ADDR:
        if (size !== 2) return;
        this.pm1Status &= ~(value & (PM1_WAK_STS | PM1_RTC_STS | PM1_SLPBTN_STS | PM1_PWRBTN_STS | PM1_BM_STS));
        this.sciUpdate();
        return;
      case PM1A_EVT_ADDR + 2:
        if (size !== 2) return;
        // ACPI-CA insists on setting GBL_EN, so it sticks though unused.
        this.pm1Enable = value & (PM1_RTC_EN | PM1_PWRBTN_EN | PM1_GBL_EN);
        this.sciUpdate();
        return;
      case PM1A_CNT_ADDR:
        if (size !== 2) return;
        this.pm1ControlWrite(value & 0xffff);
        return;
      case IO_GPE0_STS:
        if (size !== 1) return;
        this.gpe0Active &= ~(value & GPE0_VALID);
        this.sciUpdate();
        return;
      case IO_GPE0_EN:
        if (size !== 1) return;
        this.gpe0Enabled = value & GPE0_VALID;
        this.sciUpdate();
        return;
      default:
        return; // PM timer and the gaps are read-only
    }
  }

  private pm1ControlWrite(value: number): void {
    // SLP_EN and reserved bits are write-only/zero; SCI_EN belongs to SMI_CMD.
    this.pm1Control = (this.pm1Control & PM1_SCI_EN) | (value & ~(PM1_SLP_EN | PM1_ALWAYS_ZERO) & 0xffff);
    const slpTyp = (this.pm1Control & PM1_SLP_TYP) >> 10;
    if ((value & PM1_SLP_EN) !== 0 && slpTyp === SLP_TYP_S5) {
      this.ctx.machine.requestExit({ kind: 'poweroff', why: 'guest entered ACPI S5 (PM1_CNT SLP_TYP=5, SLP_EN)' });
    } else if ((value & PM1_SLP_EN) !== 0 && slpTyp === SLP_TYP_S3 && this.s3 && !this.sleeping) {
      this.sleeping = true;
      this.ctx.machine.sleep!();
    }
  }

  /**
   * A wake event: RTC_STS (the RTC alarm; wakes only with RTC_EN) or
   * PWRBTN_STS (the power button; always wakes). Out of S3 it sets the
   * status bit and WAK_STS and resumes the boot vCPU at the FACS waking
   * vector, as firmware does; without one (no tables, or the OS set none)
   * the machine resets, as firmware then boots afresh. Outside S3 an RTC
   * alarm does nothing here.
   */
  wakeEvent(sts: number): void {
    if (!this.sleeping) return;
    if (sts === PM1_RTC_STS && (this.pm1Enable & PM1_RTC_EN) === 0) return;
    this.sleeping = false;
    this.pm1Status |= sts | PM1_WAK_STS;
    this.sciUpdate();
    const vector = findWakingVector(this.ctx.mem);
    if (vector === undefined || vector >= 0x100000) {
      this.ctx.machine.requestExit({ kind: 'reset', why: 'woke from ACPI S3 without a FACS waking vector' });
      return;
    }
    this.ctx.machine.wake!(vector);
  }

  private smiCommand(cmd: number): void {
    if (cmd === BHYVE_ACPI_ENABLE) this.pm1Control |= PM1_SCI_EN;
    else if (cmd === BHYVE_ACPI_DISABLE) this.pm1Control &= ~PM1_SCI_EN;
  }

  private resetWrite(value: number): void {
    this.resetControl = value;
    if ((value & RST_CPU) !== 0) {
      this.ctx.machine.requestExit({ kind: 'reset', why: 'guest wrote RST_CPU to the reset control register (0xcf9)' });
    }
  }
}

export function createPowerManagement(ctx: DeviceContext, opts?: PmOptions): PowerManagement {
  return new PowerManagement(ctx, opts);
}
