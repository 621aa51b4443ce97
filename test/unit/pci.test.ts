import { describe, expect, it } from 'vitest';
import type { AccessSize } from '../../src/devices/device.js';
import { buildPlatform } from '../../src/devices/platform.js';
import {
  PciConfigSpace, PCIE_CONFIG_SIZE, PCIR_COMMAND, PCIR_STATUS, PCIY_EXPRESS,
} from '../../src/devices/pci/config-space.js';
import { PciBus } from '../../src/devices/pci/pci-bus.js';
import { PirqRouter } from '../../src/devices/pci/pirq.js';
import { FakeIrq, fake as fakeDevice } from '../support/fake-device.js';
import '../support/device-models.js'; // the device models buildPlatform needs

/** The shared device-test context, with this file's outp(port, size, value) order. */
function fake(settings: Record<string, string> = {}) {
  const f = fakeDevice(settings);
  return { ...f, outp: (port: number, size: AccessSize, value: number): void => f.outp(port, value, size) };
}

const STD = { 'pci.0.0.0.device': 'hostbridge', 'pci.0.31.0.device': 'lpc' };
const LAYOUT = { lowmem: 256 * 1024 * 1024, highmem: 0 };

/** A guest's pci_cfgread through mechanism #1. */
function cfg(f: ReturnType<typeof fake>) {
  const select = (b: number, s: number, fn: number, off: number): void =>
    f.outp(0xcf8, 4, (0x80000000 | (b << 16) | (s << 11) | (fn << 8) | (off & 0xfc)) >>> 0);
  return {
    read(b: number, s: number, fn: number, off: number, size: AccessSize = 4): number {
      select(b, s, fn, off);
      return f.inp(0xcfc + (off & 3), size);
    },
    write(b: number, s: number, fn: number, off: number, size: AccessSize, v: number): void {
      select(b, s, fn, off);
      f.outp(0xcfc + (off & 3), size, v);
    },
  };
}

describe('PCI configuration mechanism #1', () => {
  it('finds the host bridge at 0:0:0 and the LPC bridge at 0:31:0', () => {
    const f = fake(STD);
    buildPlatform(f.ctx, LAYOUT);
    const c = cfg(f);
    expect(c.read(0, 0, 0, 0)).toBe(0x12751275);
    expect(c.read(0, 0, 0, 0x08)).toBe(0x06000000); // bridge/host, rev 0
    expect(c.read(0, 31, 0, 0)).toBe(0x70008086);
    expect(c.read(0, 31, 0, 0x08)).toBe(0x06010000); // bridge/ISA
    expect(c.read(0, 31, 0, 0x0e, 1)).toBe(0x00); // header type 0, single function
    expect(c.read(0, 31, 0, 0x2c)).toBe(0); // subsystem ids
    expect(c.read(0, 0, 0, 0x3c, 1)).toBe(0xff); // INTLINE: no legacy interrupt
    expect(c.read(0, 0, 0, 0x3d, 1)).toBe(0x00);
  });

  it('absent slots and functions read all-ones', () => {
    const f = fake(STD);
    buildPlatform(f.ctx, LAYOUT);
    const c = cfg(f);
    expect(c.read(0, 5, 0, 0)).toBe(0xffffffff);
    expect(c.read(0, 0, 1, 0)).toBe(0xffffffff);
    expect(c.read(1, 0, 0, 0)).toBe(0xffffffff);
    expect(c.read(0, 5, 0, 0, 2)).toBe(0xffff);
    expect(c.read(0, 5, 0, 2, 1)).toBe(0xff);
  });

  it('byte and word reads at every offset of CONFIG_DATA', () => {
    const f = fake(STD);
    buildPlatform(f.ctx, LAYOUT);
    const c = cfg(f);
    expect(c.read(0, 31, 0, 0, 1)).toBe(0x86);
    expect(c.read(0, 31, 0, 1, 1)).toBe(0x80);
    expect(c.read(0, 31, 0, 2, 1)).toBe(0x00);
    expect(c.read(0, 31, 0, 3, 1)).toBe(0x70);
    expect(c.read(0, 31, 0, 0, 2)).toBe(0x8086);
    expect(c.read(0, 31, 0, 2, 2)).toBe(0x7000);
    expect(c.read(0, 31, 0, 0x0b, 1)).toBe(0x06);
    expect(c.read(0, 31, 0, 0x0a, 1)).toBe(0x01);
    expect(c.read(0, 31, 0, 0x0a, 2)).toBe(0x0601);
    // Unaligned: a word at offset 1 or 3 reads all-ones (bhyve's pci_cfgrw).
    expect(c.read(0, 31, 0, 1, 2)).toBe(0xffff);
  });

  it('CONFIG_ADDRESS reads back; narrow accesses and the disabled state read all-ones', () => {
    const f = fake(STD);
    buildPlatform(f.ctx, LAYOUT);
    f.outp(0xcf8, 4, 0x8000f808 | 0x3); // low two bits dropped
    expect(f.inp(0xcf8, 4)).toBe(0x8000f808);
    expect(f.inp(0xcf8, 2)).toBe(0xffff);
    expect(f.inp(0xcf8, 1)).toBe(0xff);
    f.outp(0xcf8, 2, 0); // ignored
    expect(f.inp(0xcf8, 4)).toBe(0x8000f808);
    f.outp(0xcf8, 4, 0x00000000); // enable bit clear
    expect(f.inp(0xcfc, 4)).toBe(0xffffffff);
    f.outp(0xcfc, 4, 0x12345678);
    expect(cfg(f).read(0, 0, 0, 0)).toBe(0x12751275);
  });

  it('ignores writes to read-only fields and keeps writable ones', () => {
    const f = fake(STD);
    buildPlatform(f.ctx, LAYOUT);
    const c = cfg(f);
    c.write(0, 0, 0, 0, 4, 0xdeadbeef);
    expect(c.read(0, 0, 0, 0)).toBe(0x12751275);
    c.write(0, 31, 0, 0x08, 4, 0xffffffff);
    expect(c.read(0, 31, 0, 0x08)).toBe(0x06010000);
    c.write(0, 31, 0, 0x0b, 1, 0x02);
    expect(c.read(0, 31, 0, 0x0b, 1)).toBe(0x06);
    // Command: writable bits stick; status stays read-only.
    c.write(0, 31, 0, PCIR_COMMAND, 4, 0xffffffff);
    expect(c.read(0, 31, 0, PCIR_COMMAND, 2)).toBe(0x077f);
    expect(c.read(0, 31, 0, PCIR_STATUS, 2)).toBe(0x0000);
    c.write(0, 31, 0, PCIR_COMMAND, 2, 0x0000);
    expect(c.read(0, 31, 0, PCIR_COMMAND, 2)).toBe(0);
    // Interrupt line, latency timer: writable; BARs of a BAR-less function read 0.
    c.write(0, 0, 0, 0x3c, 1, 0x0a);
    expect(c.read(0, 0, 0, 0x3c, 1)).toBe(0x0a);
    c.write(0, 0, 0, 0x10, 4, 0xffffffff);
    expect(c.read(0, 0, 0, 0x10)).toBe(0);
  });

  it('sets bus-master enable at init unless booting from a ROM (pci.enable_bars)', () => {
    const f = fake(STD);
    buildPlatform(f.ctx, LAYOUT);
    expect(cfg(f).read(0, 0, 0, PCIR_COMMAND, 2)).toBe(0x0004);
    const g = fake({ ...STD, 'lpc.bootrom': '/nonexistent.rom' });
    buildPlatform(g.ctx, LAYOUT);
    expect(cfg(g).read(0, 0, 0, PCIR_COMMAND, 2)).toBe(0x0000);
  });

  it('sets the multi-function bit when a slot has more than one function', () => {
    const f = fake({ 'pci.0.0.0.device': 'hostbridge', 'pci.0.3.0.device': 'hostbridge', 'pci.0.3.1.device': 'hostbridge' });
    buildPlatform(f.ctx, LAYOUT);
    const c = cfg(f);
    expect(c.read(0, 0, 0, 0x0e, 1)).toBe(0x00);
    expect(c.read(0, 3, 0, 0x0e, 1)).toBe(0x80);
    expect(c.read(0, 3, 1, 0x0e, 1)).toBe(0x80);
    expect(c.read(0, 3, 0, 0x0c) >>> 16).toBe(0x80);
    expect(c.read(0, 3, 0, 0x0e, 2)).toBe(0x0080);
    expect(c.read(0, 3, 1, 0)).toBe(0x12751275);
  });

  it('gives the host bridge a PCI Express root port capability, as bhyve', () => {
    const f = fake(STD);
    buildPlatform(f.ctx, LAYOUT);
    const c = cfg(f);
    expect(c.read(0, 0, 0, PCIR_STATUS, 2) & 0x10).toBe(0x10);
    expect(c.read(0, 0, 0, 0x34, 1)).toBe(0x40);
    expect(c.read(0, 0, 0, 0x40, 1)).toBe(PCIY_EXPRESS);
    expect(c.read(0, 0, 0, 0x41, 1)).toBe(0); // last capability
    expect(c.read(0, 0, 0, 0x42, 2)).toBe(0x0042); // version 2, root port
    expect(c.read(0, 0, 0, 0x4c)).toBe(0x411); // link capabilities gen1 x1
    expect(c.read(0, 0, 0, 0x52, 2)).toBe(0x11); // link status
    c.write(0, 0, 0, 0x40, 2, 0xffff); // id and next are read-only
    expect(c.read(0, 0, 0, 0x40, 2)).toBe(PCIY_EXPRESS);
    // The LPC bridge has no capabilities.
    expect(c.read(0, 31, 0, PCIR_STATUS, 2) & 0x10).toBe(0);
  });

  it('routes PIRQ registers 0x60-0x63 and 0x68-0x6b of the LPC bridge', () => {
    const f = fake(STD);
    const p = buildPlatform(f.ctx, LAYOUT);
    const c = cfg(f);
    expect(c.read(0, 31, 0, 0x60)).toBe(0x80808080);
    expect(c.read(0, 31, 0, 0x68)).toBe(0x80808080);
    c.write(0, 31, 0, 0x60, 1, 0x0b);
    expect(c.read(0, 31, 0, 0x60, 1)).toBe(0x0b);
    expect(p.pirq.read(1)).toBe(0x0b);
    c.write(0, 31, 0, 0x61, 1, 0x7a); // only bit 7 and bits 3-0 are kept
    expect(c.read(0, 31, 0, 0x61, 1)).toBe(0x0a);
    c.write(0, 31, 0, 0x68, 4, 0x8005090a);
    expect(c.read(0, 31, 0, 0x68)).toBe(0x8005090a);
    expect(p.pirq.read(5)).toBe(0x0a);
    expect(p.pirq.read(8)).toBe(0x80);
    // Other device-specific bytes are plain storage.
    c.write(0, 31, 0, 0x64, 4, 0x11223344);
    expect(c.read(0, 31, 0, 0x64)).toBe(0x11223344);
  });
});

describe('PCI configuration from bhyve_config', () => {
  it('honours vendor/devid (amd_hostbridge) and pcireg.* overrides', () => {
    const f = fake({
      'pci.0.0.0.device': 'hostbridge', 'pci.0.0.0.vendor': '0x1022', 'pci.0.0.0.devid': '0x7432',
      'pci.0.1.0.device': 'amd_hostbridge',
      'pci.0.2.0.device': 'hostbridge', 'pci.0.2.0.pcireg.vendor': '8086', 'pci.0.2.0.pcireg.device': '0x1237',
      'pci.0.31.0.device': 'lpc', 'lpc.pcireg.device': '7110', 'lpc.pcireg.revid': '2',
      'lpc.pcireg.subvendor': '1af4', 'lpc.pcireg.subdevice': '1100',
    });
    buildPlatform(f.ctx, LAYOUT);
    const c = cfg(f);
    expect(c.read(0, 0, 0, 0)).toBe(0x74321022);
    expect(c.read(0, 1, 0, 0)).toBe(0x74321022);
    expect(c.read(0, 2, 0, 0)).toBe(0x12378086);
    expect(c.read(0, 31, 0, 0)).toBe(0x71108086);
    expect(c.read(0, 31, 0, 0x08, 1)).toBe(2);
    expect(c.read(0, 31, 0, 0x2c)).toBe(0x11001af4);
  });

  it('copies host ids for pcireg=host and refuses it when no host bridge is known', () => {
    const f = fake({ ...STD, 'lpc.pcireg.vendor': 'host', 'lpc.pcireg.device': 'host' });
    buildPlatform(f.ctx, LAYOUT, { hostIsaBridge: () => ({ vendor: 0x8086, device: 0x7a06, revid: 0x11 }) });
    expect(cfg(f).read(0, 31, 0, 0)).toBe(0x7a068086);
    const g = fake({ ...STD, 'lpc.pcireg.device': 'host' });
    expect(() => buildPlatform(g.ctx, LAYOUT, { hostIsaBridge: () => undefined })).toThrow(/lpc\.pcireg\.device=host/);
    const h = fake({ ...STD, 'lpc.pcireg.device': 'zz' });
    expect(() => buildPlatform(h.ctx, LAYOUT)).toThrow(/invalid value 'zz'/);
  });

  it('refuses unsupported emulations, a second LPC bridge and LPC off bus 0', () => {
    expect(() => buildPlatform(fake({ 'pci.0.3.0.device': 'nosuch' }).ctx, LAYOUT)).toThrow(/unknown device "nosuch"/);
    expect(() => buildPlatform(fake({ ...STD, 'pci.0.30.0.device': 'lpc' }).ctx, LAYOUT)).toThrow(/Only one LPC bridge/);
    expect(() => buildPlatform(fake({ 'pci.1.31.0.device': 'lpc' }).ctx, LAYOUT)).toThrow(/only on bus 0/);
    expect(() => buildPlatform(fake({ 'pci.0.4.0.path': 'x' }).ctx, LAYOUT)).toThrow(/missing "device"/);
  });

  it('ignores non-device values under pci (pci.enable_bars)', () => {
    const f = fake({ 'pci.enable_bars': 'false', 'pci.0.0.0.device': 'hostbridge' });
    const p = buildPlatform(f.ctx, LAYOUT);
    expect(p.pci.functions()).toHaveLength(1);
    expect(cfg(f).read(0, 0, 0, PCIR_COMMAND, 2)).toBe(0);
  });
});

describe('PciConfigSpace and PciBus', () => {
  it('reads the extended capability header of a 256-byte space as 0, the rest as ones', () => {
    const s = new PciConfigSpace();
    expect(s.guestRead(0x100, 4)).toBe(0);
    expect(s.guestRead(0x104, 4)).toBe(0xffffffff);
    const e = new PciConfigSpace(PCIE_CONFIG_SIZE);
    e.set32(0x100, 0x12345678);
    expect(e.guestRead(0x100, 4)).toBe(0x12345678);
    expect(() => new PciConfigSpace(512)).toThrow(RangeError);
  });

  it('chains capabilities and applies write-1-to-clear masks', () => {
    const s = new PciConfigSpace();
    const a = s.addCapability(0x05, new Uint8Array(14));
    const b = s.addCapability(0x11, new Uint8Array(12));
    expect(a).toBe(0x40);
    expect(b).toBe(0x50);
    expect(s.get8(0x41)).toBe(0x50);
    expect(s.get8(0x51)).toBe(0);
    expect(s.capabilityAt(0x4e)?.id).toBe(0x05);
    s.setReadOnly(0x80, 1);
    s.setW1C(0x80, 1, 0x0f);
    s.set8(0x80, 0xff);
    s.guestWrite(0x80, 1, 0x05);
    expect(s.get8(0x80)).toBe(0xfa);
  });

  it('refuses a second function at the same address', () => {
    const bus = new PciBus();
    const fn = { name: 'x', cfg: new PciConfigSpace(), bars: [] };
    bus.attach(0, 1, 0, fn);
    expect(() => bus.attach(0, 1, 0, { ...fn })).toThrow(/already occupied/);
    expect(() => bus.attach(0, 32, 0, { ...fn })).toThrow(RangeError);
  });

  it('moves an asserted PIRQ pin to its new IRQ when the register changes', () => {
    const irq = new FakeIrq();
    const r = new PirqRouter(irq);
    r.write(1, 0x0a);
    r.assert(1);
    expect(irq.level.get(10)).toBe(true);
    r.write(1, 0x0b);
    expect(irq.level.get(10)).toBe(false);
    expect(irq.level.get(11)).toBe(true);
    r.write(1, 0x80); // disabled
    expect(irq.level.get(11)).toBe(false);
    r.deassert(1);
    r.write(2, 0x0d); // IRQ 13 is not a valid route: nothing asserted
    r.assert(2);
    expect(irq.level.get(13)).toBeUndefined();
  });
});
