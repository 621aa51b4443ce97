import { describe, expect, it } from 'vitest';
import { fake, FakeIrq } from '../support/fake-device.js';
import { buildPlatform, createPlatformDevices } from '../../src/devices/platform.js';
import { computeLayout } from '../../src/sys/memory-map.js';
import '../support/device-models.js'; // the device models buildPlatform needs



const LAYOUT = computeLayout(256 * 1024 * 1024);

describe('createPlatformDevices', () => {
  it('always builds the PCI config ports, i8042, ACPI PM, reset register and RTC', () => {
    const f = fake();
    const devices = createPlatformDevices(f.ctx, LAYOUT);
    expect(devices.map((d) => d.name)).toEqual(['pci', 'atkbdc', 'acpi-pm', 'rtc', 'post', 'hpet']);
    expect(f.inp(0x84)).toBe(0xff);
    for (const port of [0xcf8, 0xcfc, 0xcff, 0x60, 0x64, 0x70, 0x71, 0x400, 0x404, 0x408, 0xb2, 0xcf9]) {
      expect(f.io.ports.find(port), `port 0x${port.toString(16)}`).toBeDefined();
    }
    // No LPC bridge: no UARTs and no pc-testdev; the in-kernel irqchip/PIT ports stay free.
    for (const port of [0x3f8, 0x2f8, 0xf4, 0xe0, 0x20, 0xa0, 0x4d0, 0x40, 0x43, 0x61, 0xcfa]) {
      expect(f.io.ports.find(port), `port 0x${port.toString(16)}`).toBeUndefined();
    }
    // bus 0 still answers config cycles (all-ones).
    f.outp(0xcf8, 0x80000000, 4);
    expect(f.inp(0xcfc, 4)).toBe(0xffffffff);
  });

  it('builds the LPC devices with the lpc bridge: COM1-COM4 and pc-testdev', () => {
    const f = fake({
      'pci.0.0.0.device': 'hostbridge', 'pci.0.31.0.device': 'lpc',
      'lpc.com1.path': 'stdio', 'lpc.pc-testdev': 'true',
    });
    const p = buildPlatform(f.ctx, LAYOUT);
    expect(p.devices.map((d) => d.name)).toEqual([
      'pci', 'hostbridge@pci.0.0.0', 'lpc@pci.0.31.0', 'com1', 'com2', 'com3', 'com4', 'pc-testdev', 'atkbdc', 'acpi-pm', 'rtc', 'post', 'hpet',
    ]);
    expect(p.uarts.map((u) => u.base)).toEqual([0x3f8, 0x2f8, 0x3e8, 0x2e8]);
    // COM1's scratch register answers like a 16550.
    f.outp(0x3ff, 0xa5);
    expect(f.inp(0x3ff)).toBe(0xa5);
    // pc-testdev exit through the assembled platform.
    f.outp(0xf4, 0x10);
    expect(f.exits).toEqual([{ kind: 'testdev', value: 0x10 }]);
  });

  it('leaves pc-testdev out unless lpc.pc-testdev is true', () => {
    const f = fake({ 'pci.0.31.0.device': 'lpc' });
    const p = buildPlatform(f.ctx, LAYOUT);
    expect(p.pctestdev).toBeUndefined();
    expect(f.io.ports.find(0xf4)).toBeUndefined();
  });

  it('ignores pc-testdev and COM settings when there is no lpc bridge, as bhyve', () => {
    const f = fake({ 'lpc.com1.path': 'stdio', 'lpc.pc-testdev': 'true' });
    const p = buildPlatform(f.ctx, LAYOUT);
    expect(p.uarts).toEqual([]);
    expect(f.io.ports.find(0xf4)).toBeUndefined();
  });

  it('exposes the power button of the assembled platform (SIGTERM path)', () => {
    const f = fake({ 'pci.0.31.0.device': 'lpc' });
    const p = buildPlatform(f.ctx, LAYOUT);
    f.outp(0xb2, 0xa0); // ACPI_ENABLE
    f.outp(0x402, 0x0100, 2); // PWRBTN_EN
    expect(p.pm.pressPowerButton()).toBe(true);
    expect(f.irq.level.get(9)).toBe(true);
  });

  it('passes the memory layout to the RTC', () => {
    const f = fake();
    buildPlatform(f.ctx, computeLayout(8 * 1024 * 1024 * 1024));
    f.outp(0x70, 0x5d);
    expect(f.inp(0x71)).toBe(0x01);
  });

  it('resets through the keyboard controller and 0xcf9 of the assembled platform', () => {
    const f = fake();
    buildPlatform(f.ctx, LAYOUT);
    f.outp(0x64, 0xfe);
    f.outp(0xcf9, 0x06);
    expect(f.exits.map((e) => e.kind)).toEqual(['reset', 'reset']);
  });
});
