// QEMU's PIIX4 PM function of lpc.fwcfg=qemu: identity, PMBA/PMREGMISC
// moving the one PowerManagement's block, and where buildPlatform puts it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import type { DeviceContext } from '../../src/devices/device.js';
import { PowerManagement } from '../../src/devices/lpc/pm.js';
import { PciBus } from '../../src/devices/pci/pci-bus.js';
import { Piix4Pm } from '../../src/devices/pci/piix4-pm.js';
import { buildPlatform } from '../../src/devices/platform.js';
import { computeLayout } from '../../src/sys/memory-map.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';
import { fake } from '../support/fake-device.js';
import '../support/device-models.js'; // the device models buildPlatform needs

const SLP_S5 = (5 << 10) | (1 << 13);

function rig() {
  const f = fake();
  const pm = new PowerManagement(f.ctx);
  const fn = new Piix4Pm();
  const bus = new PciBus();
  bus.attach(0, 1, 3, fn);
  fn.bindPm(pm);
  return {
    ...f, pm, fn,
    rd: (off: number, size = 4) => bus.configRead(0, 1, 3, off, size),
    wr: (off: number, v: number, size = 4) => bus.configWrite(0, 1, 3, off, size, v),
  };
}

describe('Piix4Pm', () => {
  it("identifies as QEMU's PIIX4_PM: 8086:7113 rev 3, class 06/80, subsystem 1af4:1100, SCI on line 9, no pin", () => {
    const r = rig();
    expect(r.rd(0x00)).toBe(0x71138086);
    expect(r.rd(0x08)).toBe(0x06800003);
    expect(r.rd(0x2c)).toBe(0x11001af4);
    expect(r.rd(0x3c, 1)).toBe(9);
    expect(r.rd(0x3d, 1)).toBe(0);
  });

  it('comes out of reset with PMBA 0x401 and PMIOSE set: the block at bhyve 0x400 only', () => {
    const r = rig();
    expect(r.rd(0x40)).toBe(0x401);
    expect(r.rd(0x80, 1)).toBe(1);
    expect(r.fn.pmBase).toBe(0x400);
    expect(r.pm.relocatedBase).toBeUndefined();
    expect(r.io.ports.find(0x404)?.name).toBe('pm1');
  });

  it("moves the same registers to the base SeaBIOS programs (0x601, PMIOSE) and keeps bhyve's 0x400", () => {
    const r = rig();
    r.wr(0x40, 0x601);
    r.wr(0x80, 0x01, 1);
    expect(r.rd(0x40)).toBe(0x601);
    expect(r.pm.relocatedBase).toBe(0x600);
    // The same PM1 control register at both places, and power-off from 0x604.
    r.outp(0x606 - 2, 3 << 10, 2);
    expect(r.inp(0x404, 2)).toBe(3 << 10);
    expect(r.inp(0x604, 2)).toBe(3 << 10);
    // PM timer runs at base + 8.
    expect(r.inp(0x608, 4)).not.toBe(0xffffffff);
    r.outp(0x604, SLP_S5, 2);
    expect(r.exits.map((e) => e.kind)).toEqual(['poweroff']);
    r.outp(0x404, SLP_S5, 2);
    expect(r.exits.map((e) => e.kind)).toEqual(['poweroff', 'poweroff']);
  });

  it('masks PMBA to 64-byte alignment with bit 0 read as 1, and follows PMIOSE', () => {
    const r = rig();
    r.wr(0x40, 0xffff_b07e);
    expect(r.rd(0x40)).toBe(0xb041);
    expect(r.pm.relocatedBase).toBe(0xb040);
    r.wr(0x80, 0, 1);
    expect(r.fn.pmBase).toBeUndefined();
    expect(r.pm.relocatedBase).toBeUndefined();
    expect(r.io.ports.find(0xb044)).toBeUndefined();
    expect(r.io.ports.find(0x404)?.name).toBe('pm1');
    r.wr(0x80, 0xff, 1);
    expect(r.rd(0x80, 1)).toBe(1);
    expect(r.pm.relocatedBase).toBe(0xb040);
    // A byte write to PMBA's high byte moves it too.
    r.wr(0x41, 0x07, 1);
    expect(r.pm.relocatedBase).toBe(0x740);
    expect(r.io.ports.find(0xb044)).toBeUndefined();
  });

  it('marks SMM init done (DEVACTB APMC_EN), as QEMU without SMM, so SeaBIOS does not wait for an SMI', () => {
    const r = rig();
    expect(r.rd(0x58) >>> 0).toBe(0x02000000);
    r.wr(0x58, 0);
    expect(r.rd(0x58) >>> 0).toBe(0x02000000);
  });

  it('keeps the SMBus registers as plain storage', () => {
    const r = rig();
    r.wr(0x90, 0x701);
    r.wr(0xd2, 0x09, 1);
    expect(r.rd(0x90)).toBe(0x701);
    expect(r.rd(0xd2, 1)).toBe(0x09);
    expect(r.io.ports.find(0x700)).toBeUndefined();
  });

  it('goes back to 0x400 only on reset', () => {
    const r = rig();
    r.wr(0x40, 0x601);
    r.fn.reset();
    expect(r.rd(0x40)).toBe(0x401);
    expect(r.pm.relocatedBase).toBeUndefined();
    expect(r.io.ports.find(0x604)).toBeUndefined();
  });
});

function platformCtx(settings: Record<string, string>) {
  const config = new ConfigTree();
  for (const [k, v] of Object.entries(settings)) config.set(k, v);
  const io = new LocalIoBus();
  const ctx: DeviceContext = {
    io, config, mem: new GuestMemory([]),
    irq: { setLevel: () => {}, pulse: () => {}, signalMsi: () => {} },
    machine: { requestExit: () => {}, vcpuCount: 1 },
    stream: () => undefined,
  };
  const cfg = (slot: number, func: number, off: number, value?: number): number => {
    io.portWrite(0xcf8, 4, (0x80000000 | (slot << 11) | (func << 8) | off) >>> 0);
    if (value !== undefined) io.portWrite(0xcfc, 4, value);
    return io.portRead(0xcfc, 4)!;
  };
  return { ctx, io, cfg };
}

const LAYOUT = computeLayout(256 * 1024 * 1024);

describe('buildPlatform and the PIIX4 PM', () => {
  it('puts it at 0:1.3 beside the LPC bridge at slot 1, as QEMU, and moves the PM block of the platform', () => {
    const f = platformCtx({ 'pci.0.0.0.device': 'hostbridge', 'pci.0.1.0.device': 'lpc', 'lpc.fwcfg': 'qemu', name: 'vm' });
    const p = buildPlatform(f.ctx, LAYOUT, { hostname: 'host' });
    expect(p.piix4pm?.address).toEqual({ bus: 0, slot: 1, func: 3 });
    expect(f.cfg(1, 3, 0)).toBe(0x71138086);
    expect(f.cfg(1, 0, 0x0c) & 0x800000).toBe(0x800000); // LPC now multi-function
    f.cfg(1, 3, 0x40, 0x601);
    expect(p.pm.relocatedBase).toBe(0x600);
    expect(f.io.portRead(0x608, 4)).not.toBe(0xffffffff);
    expect(p.intx).toEqual([]); // no INTx pin, no PIRQ spent
  });

  it('follows the LPC bridge to another slot', () => {
    const f = platformCtx({ 'pci.0.0.0.device': 'hostbridge', 'pci.0.31.0.device': 'lpc', 'pci.0.1.0.device': 'virtio-rnd', 'lpc.fwcfg': 'qemu', name: 'vm' });
    const p = buildPlatform(f.ctx, LAYOUT, { hostname: 'host' });
    expect(p.piix4pm?.address).toEqual({ bus: 0, slot: 31, func: 3 });
  });

  it("leaves it out when the user's -s uses that function, without an LPC bridge, and on bhyve's own platform", () => {
    const taken = platformCtx({ 'pci.0.1.0.device': 'lpc', 'pci.0.1.3.device': 'virtio-rnd', 'lpc.fwcfg': 'qemu', name: 'vm' });
    const p1 = buildPlatform(taken.ctx, LAYOUT, { hostname: 'host' });
    expect(p1.piix4pm).toBeUndefined();
    expect(taken.cfg(1, 3, 0)).not.toBe(0x71138086);
    const nolpc = platformCtx({ 'pci.0.0.0.device': 'hostbridge', 'lpc.fwcfg': 'qemu', name: 'vm' });
    expect(buildPlatform(nolpc.ctx, LAYOUT, { hostname: 'host' }).piix4pm).toBeUndefined();
    const bhyve = platformCtx({ 'pci.0.0.0.device': 'hostbridge', 'pci.0.1.0.device': 'lpc', name: 'vm' });
    const p3 = buildPlatform(bhyve.ctx, LAYOUT);
    expect(p3.piix4pm).toBeUndefined();
    expect(bhyve.cfg(1, 3, 0)).toBe(0xffffffff);
  });

  it('keeps the debug console on 0x402 when the firmware moves the PM block', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'debugcon-'));
    const log = path.join(dir, 'log');
    try {
      const f = platformCtx({ 'pci.0.1.0.device': 'lpc', 'lpc.fwcfg': 'qemu', 'lpc.debugcon.path': log, name: 'vm' });
      const p = buildPlatform(f.ctx, LAYOUT, { hostname: 'host' });
      f.cfg(1, 3, 0x40, 0x601);
      expect(p.pm.relocatedBase).toBe(0x600);
      expect(f.io.portRead(0x402, 1)).toBe(0xe9);
      f.io.portWrite(0x402, 1, 0x53); // S
      f.io.portWrite(0x602, 2, 0x0100); // PM1a_EN at its new place
      f.io.portWrite(0x402, 2, 0x0100); // and at bhyve's: not the console
      expect(f.io.portRead(0x402, 2)).toBe(0x0100);
      f.io.portWrite(0x402, 1, 0x0a);
      for (const d of p.devices) d.close?.();
      expect(fs.readFileSync(log, 'latin1')).toBe('S\n');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
