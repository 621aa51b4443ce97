import { describe, expect, it } from 'vitest';
import { fake, FakeIrq } from '../support/fake-device.js';
import {
  BHYVE_ACPI_DISABLE, BHYVE_ACPI_ENABLE, IO_GPE0_EN, IO_GPE0_STS, IO_PMTMR, PM1A_CNT_ADDR, PM1A_EVT_ADDR,
  PM1_PWRBTN_EN, PM1_PWRBTN_STS, PM1_SCI_EN, PMTMR_FREQ, PowerManagement, SCI_INT, SMI_CMD,
} from '../../src/devices/lpc/pm.js';



const SLP_EN = 1 << 13;
const slpTyp = (t: number): number => t << 10;

describe('ACPI PM1 control: sleep states', () => {
  it('powers off on SLP_TYP=5 with SLP_EN', () => {
    const f = fake();
    new PowerManagement(f.ctx);
    f.outp(PM1A_CNT_ADDR, slpTyp(5) | SLP_EN, 2);
    expect(f.exits).toHaveLength(1);
    expect(f.exits[0].kind).toBe('poweroff');
  });

  it('does not power off for other sleep types or without SLP_EN', () => {
    const f = fake();
    new PowerManagement(f.ctx);
    for (const t of [0, 1, 3, 4, 7]) f.outp(PM1A_CNT_ADDR, slpTyp(t) | SLP_EN, 2);
    f.outp(PM1A_CNT_ADDR, slpTyp(5), 2); // SLP_TYP only
    expect(f.exits).toEqual([]);
    // SLP_TYP is kept, SLP_EN reads 0; then SLP_EN alone triggers S5.
    expect(f.inp(PM1A_CNT_ADDR, 2)).toBe(slpTyp(5));
    f.outp(PM1A_CNT_ADDR, slpTyp(5) | SLP_EN, 2);
    expect(f.exits.map((e) => e.kind)).toEqual(['poweroff']);
  });

  it('keeps SCI_EN under SMI_CMD control only', () => {
    const f = fake();
    const pm = new PowerManagement(f.ctx);
    f.outp(PM1A_CNT_ADDR, PM1_SCI_EN, 2);
    expect(f.inp(PM1A_CNT_ADDR, 2) & PM1_SCI_EN).toBe(0);
    f.outp(SMI_CMD, BHYVE_ACPI_ENABLE);
    expect(f.inp(PM1A_CNT_ADDR, 2) & PM1_SCI_EN).toBe(PM1_SCI_EN);
    expect(pm.acpiEnabled).toBe(true);
    f.outp(PM1A_CNT_ADDR, 0, 2);
    expect(f.inp(PM1A_CNT_ADDR, 2) & PM1_SCI_EN).toBe(PM1_SCI_EN);
    f.outp(SMI_CMD, BHYVE_ACPI_DISABLE);
    expect(pm.acpiEnabled).toBe(false);
  });
});

describe('ACPI power button and SCI', () => {
  it('sets PWRBTN_STS and raises IRQ 9 only when PWRBTN_EN is set', () => {
    const f = fake();
    const pm = new PowerManagement(f.ctx);
    expect(pm.pressPowerButton()).toBe(false); // ACPI not enabled yet
    expect(f.inp(PM1A_EVT_ADDR, 2) & PM1_PWRBTN_STS).toBe(PM1_PWRBTN_STS);
    expect(f.irq.level.get(SCI_INT)).toBeUndefined();
    // OSPM enables ACPI and the power button event: the pending status fires.
    f.outp(SMI_CMD, BHYVE_ACPI_ENABLE);
    f.outp(PM1A_EVT_ADDR + 2, PM1_PWRBTN_EN, 2);
    expect(f.irq.level.get(SCI_INT)).toBe(true);
    // Write-1-to-clear drops the status and the SCI.
    f.outp(PM1A_EVT_ADDR, PM1_PWRBTN_STS, 2);
    expect(f.inp(PM1A_EVT_ADDR, 2)).toBe(0);
    expect(f.irq.level.get(SCI_INT)).toBe(false);
    expect(pm.pressPowerButton()).toBe(true);
    expect(f.irq.level.get(SCI_INT)).toBe(true);
    expect(f.irq.log.filter(([g]) => g === SCI_INT)).toEqual([[9, true], [9, false], [9, true]]);
  });

  it('lets only RTC_EN, PWRBTN_EN and GBL_EN stick in PM1_EN', () => {
    const f = fake();
    new PowerManagement(f.ctx);
    f.outp(PM1A_EVT_ADDR + 2, 0xffff, 2);
    expect(f.inp(PM1A_EVT_ADDR + 2, 2)).toBe(0x0520);
    expect(f.irq.level.get(SCI_INT)).toBeUndefined();
  });

  it('raises the SCI for an enabled GPE and clears it on write-1', () => {
    const f = fake();
    const pm = new PowerManagement(f.ctx);
    pm.raiseGpe(0);
    expect(f.inp(IO_GPE0_STS)).toBe(1);
    expect(f.irq.level.get(SCI_INT)).toBeUndefined();
    f.outp(IO_GPE0_EN, 0xff);
    expect(f.inp(IO_GPE0_EN)).toBe(1);
    expect(f.irq.level.get(SCI_INT)).toBe(true);
    f.outp(IO_GPE0_STS, 1);
    expect(f.irq.level.get(SCI_INT)).toBe(false);
  });
});

describe('PM timer and reset register', () => {
  it('counts at 3.579545 MHz from the monotonic clock', () => {
    const f = fake();
    let now = 5_000_000_000n;
    new PowerManagement(f.ctx, { clock: () => now });
    expect(f.inp(IO_PMTMR, 4)).toBe(0);
    now += 1_000_000_000n;
    expect(f.inp(IO_PMTMR, 4)).toBe(PMTMR_FREQ);
    now += 1_200_000_000_000n; // wraps at 2^32
    expect(f.inp(IO_PMTMR, 4)).toBe(Number((1201n * BigInt(PMTMR_FREQ)) % 2n ** 32n));
  });

  it('advances with the real host clock', async () => {
    const f = fake();
    new PowerManagement(f.ctx);
    const a = f.inp(IO_PMTMR, 4);
    await new Promise((r) => setTimeout(r, 20));
    const b = f.inp(IO_PMTMR, 4);
    expect(b - a).toBeGreaterThan(PMTMR_FREQ * 0.01);
  });

  it('resets on a write of RST_CPU to 0xcf9 and reads back the last value', () => {
    const f = fake();
    new PowerManagement(f.ctx);
    f.outp(0xcf9, 0x02);
    expect(f.exits).toEqual([]);
    expect(f.inp(0xcf9)).toBe(0x02);
    f.outp(0xcf9, 0x06);
    expect(f.exits).toHaveLength(1);
    expect(f.exits[0].kind).toBe('reset');
    expect(f.inp(0xcf9)).toBe(0x06);
    f.outp(0xcf9, 0x04, 2); // word access: refused
    expect(f.exits).toHaveLength(1);
  });
});

describe('PowerManagement.relocate (a PIIX4-style PM base)', () => {
  it('decodes the same registers at the new base as well as at 0x400, and moves again', () => {
    const f = fake();
    const pm = new PowerManagement(f.ctx);
    expect(pm.relocate(0x600)).toBe(true);
    expect(pm.relocatedBase).toBe(0x600);
    f.outp(0x602, PM1_PWRBTN_EN, 2);
    expect(f.inp(PM1A_EVT_ADDR + 2, 2)).toBe(PM1_PWRBTN_EN);
    pm.pressPowerButton();
    expect(f.inp(0x600, 2) & PM1_PWRBTN_STS).toBe(PM1_PWRBTN_STS);
    f.outp(0x600, PM1_PWRBTN_STS, 2);
    expect(f.inp(PM1A_EVT_ADDR, 2)).toBe(0);
    pm.raiseGpe(0);
    expect(f.inp(0x60c, 1)).toBe(1);
    expect(f.inp(0x608, 4)).not.toBe(0xffffffff);
    f.outp(0x604, slpTyp(5) | SLP_EN, 2);
    expect(f.exits.map((e) => e.kind)).toEqual(['poweroff']);
    expect(pm.relocate(0xb000)).toBe(true);
    expect(f.io.ports.find(0x604)).toBeUndefined();
    expect(f.inp(0xb00c, 1)).toBe(1);
    expect(f.io.ports.find(PM1A_CNT_ADDR)?.name).toBe('pm1');
  });

  it('stops decoding the moved block on undefined or 0x400, and keeps bhyve ports', () => {
    const f = fake();
    const pm = new PowerManagement(f.ctx);
    pm.relocate(0x600);
    expect(pm.relocate(undefined)).toBe(true);
    expect(f.io.ports.find(0x600)).toBeUndefined();
    pm.relocate(0x600);
    expect(pm.relocate(PM1A_EVT_ADDR)).toBe(true);
    expect(pm.relocatedBase).toBeUndefined();
    expect(f.io.ports.find(0x600)).toBeUndefined();
    expect(f.inp(IO_PMTMR, 4)).not.toBe(0xffffffff);
  });

  it('refuses a base that overlaps other ports or leaves the port space', () => {
    const f = fake();
    const pm = new PowerManagement(f.ctx);
    f.io.registerPorts('other', 0x700, 4, { read: () => 0, write: () => {} });
    expect(pm.relocate(0x6f8)).toBe(false);
    expect(pm.relocate(0x3f8)).toBe(false); // over bhyve's own block
    expect(pm.relocate(0xfffc)).toBe(false);
    expect(pm.relocatedBase).toBeUndefined();
    expect(f.io.ports.find(0x6f8)).toBeUndefined();
    // A refused base after a good one leaves the block at 0x400 only.
    pm.relocate(0x600);
    expect(pm.relocate(0x6f8)).toBe(false);
    expect(f.io.ports.find(0x600)).toBeUndefined();
  });
});
