// ACPI S3 (acpi_s3, off by default as bhyve has none): \_S3 in the DSDT,
// SLP_TYP 1 puts the boot vCPU to sleep, the RTC alarm (with RTC_EN) or the
// power button wakes it at the FACS waking vector found in guest memory.
import { describe, expect, it } from 'vitest';
import { PM1A_CNT_ADDR, PM1A_EVT_ADDR, PM1_PWRBTN_STS, PM1_RTC_EN, PM1_RTC_STS, PM1_WAK_STS, PowerManagement } from '../../src/devices/lpc/pm.js';
import { acpiPlatform, buildAcpiInMemory, buildDsdtAml } from '../../src/firmware/acpi/index.js';
import { findFacs, findWakingVector } from '../../src/firmware/acpi/waking-vector.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { realModeEntry } from '../../src/vmm/vcpu-state.js';
import { builtMachine } from '../support/built-machine.js';
import { fake } from '../support/fake-device.js';

const SLP_EN = 1 << 13;
const slpTyp = (t: number): number => t << 10;

function machineWithTables(settings: Record<string, string>) {
  const f = fake(settings);
  const bytes = new Uint8Array(0x100000);
  const mem = new GuestMemory([{ gpa: 0, bytes }]);
  const acpi = buildAcpiInMemory(acpiPlatform(builtMachine(settings)));
  mem.write(acpi.base, acpi.image);
  const calls: string[] = [];
  const ctx = {
    ...f.ctx, mem,
    machine: { ...f.ctx.machine, sleep: () => { calls.push('sleep'); }, wake: (v: number) => { calls.push(`wake 0x${v.toString(16)}`); } },
  };
  const pm = new PowerManagement(ctx);
  return { f, mem, pm, calls };
}

describe('ACPI S3', () => {
  it('the DSDT has \\_S3 (SLP_TYP 1) only with acpi_s3', () => {
    const has = (s3: boolean) => Buffer.from(buildDsdtAml({ ...acpiPlatform(builtMachine({})), s3 })).includes(Buffer.from('_S3_'));
    expect(has(false)).toBe(false);
    expect(has(true)).toBe(true);
    expect(acpiPlatform(builtMachine({ acpi_s3: 'true' })).s3).toBe(false); // no sleep hook on a fake machine
  });

  it('sleeps on SLP_TYP 1 with SLP_EN and wakes on the RTC alarm with RTC_EN, at the waking vector', () => {
    const { f, mem, pm, calls } = machineWithTables({ acpi_s3: 'true' });
    const facs = findFacs(mem)!;
    expect(facs).toBeGreaterThan(0xe0000);
    expect(findWakingVector(mem)).toBeUndefined(); // the OS has not set one yet
    mem.writeU32(facs + 12, 0x3040);
    expect(findWakingVector(mem)).toBe(0x3040);
    f.outp(PM1A_EVT_ADDR + 2, PM1_RTC_EN, 2);
    f.outp(PM1A_CNT_ADDR, slpTyp(1) | SLP_EN, 2);
    expect(calls).toEqual(['sleep']);
    expect(pm.sleeping).toBe(true);
    f.outp(PM1A_CNT_ADDR, slpTyp(1) | SLP_EN, 2); // already asleep
    expect(calls).toEqual(['sleep']);
    pm.wakeEvent(PM1_RTC_STS);
    expect(calls).toEqual(['sleep', 'wake 0x3040']);
    expect(f.inp(PM1A_EVT_ADDR, 2) & (PM1_WAK_STS | PM1_RTC_STS)).toBe(PM1_WAK_STS | PM1_RTC_STS);
    expect(f.exits).toEqual([]);
  });

  it('an RTC alarm without RTC_EN does not wake; the power button does; no waking vector resets', () => {
    const { f, pm, calls } = machineWithTables({ acpi_s3: 'true' });
    f.outp(PM1A_CNT_ADDR, slpTyp(1) | SLP_EN, 2);
    pm.wakeEvent(PM1_RTC_STS);
    expect(calls).toEqual(['sleep']);
    expect(pm.pressPowerButton()).toBe(true);
    expect(f.inp(PM1A_EVT_ADDR, 2) & (PM1_WAK_STS | PM1_PWRBTN_STS)).toBe(PM1_WAK_STS | PM1_PWRBTN_STS);
    expect(f.exits.map((e) => e.kind)).toEqual(['reset']); // the FACS waking vector is 0
  });

  it('does nothing on SLP_TYP 1 when acpi_s3 is off (the default, as bhyve)', () => {
    const { f, pm, calls } = machineWithTables({});
    f.outp(PM1A_CNT_ADDR, slpTyp(1) | SLP_EN, 2);
    expect(calls).toEqual([]);
    expect(pm.sleeping).toBe(false);
    expect(f.exits).toEqual([]);
  });

  it('finds no waking vector in garbage: no RSDP, a bad checksum, pointers out of memory', () => {
    const mem = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(0x100000) }]);
    expect(findWakingVector(mem)).toBeUndefined();
    mem.write(0xf0000, Buffer.from('RSD PTR '));
    expect(findWakingVector(mem)).toBeUndefined(); // checksum of zeros after a signature fails
    const rsdp = new Uint8Array(20);
    rsdp.set(Buffer.from('RSD PTR '));
    new DataView(rsdp.buffer).setUint32(16, 0x7fff0000, true); // RSDT beyond memory
    rsdp[8] = (256 - rsdp.reduce((a, b) => (a + b) & 0xff, 0)) & 0xff;
    mem.write(0xf0010, rsdp);
    expect(findWakingVector(mem)).toBeUndefined();
  });

  it('enters real mode at the vector as SeaBIOS does: CS = vector >> 4, IP = vector & 0xf', () => {
    const u = realModeEntry(0x3047);
    expect(u.segments?.cs).toMatchObject({ selector: 0x304, base: '0x3040', limit: 0xffff });
    expect(u.regs?.rip).toBe('0x7');
    expect(u.control?.cr0).toBe('0x10');
    expect(u.idt).toEqual({ base: '0x0', limit: 0x3ff });
  });
});
