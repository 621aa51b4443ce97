// The i440FX host bridge of lpc.fwcfg=qemu: identity, PAM registers through
// config cycles (byte writes as SeaBIOS's make_bios_writable, dword writes
// as its make_bios_readonly), and buildPlatform's QEMU personality.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import type { AccessSize, DeviceContext, MemoryBacking, MemoryMapControl } from '../../src/devices/device.js';
import { I440fxHostBridge } from '../../src/devices/pci/i440fx.js';
import { PamShadow } from '../../src/devices/pci/pam.js';
import { PciBus } from '../../src/devices/pci/pci-bus.js';
import { buildPlatform } from '../../src/devices/platform.js';
import { computeLayout } from '../../src/sys/memory-map.js';
import { FW_CFG_PORT_DATA, FW_CFG_PORT_SEL } from '../../src/firmware/fwcfg.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';
import '../support/device-models.js'; // the device models buildPlatform needs

class RecordingMap implements MemoryMapControl {
  readonly slots = new Map<number, { size: number; backing: MemoryBacking; readonly: boolean }>();
  map(gpa: number, size: number, backing: MemoryBacking, readonly: boolean): void { this.slots.set(gpa, { size, backing, readonly }); }
  unmap(gpa: number): void { this.slots.delete(gpa); }
  view(_b: MemoryBacking, size: number): Uint8Array { return new Uint8Array(size); }
}

function cfgRig() {
  const map = new RecordingMap();
  const pam = new PamShadow(map, 128 * 1024);
  const hb = new I440fxHostBridge(pam);
  const bus = new PciBus();
  bus.attach(0, 0, 0, hb);
  return {
    map, pam, hb,
    rd: (off: number, size = 4) => bus.configRead(0, 0, 0, off, size),
    wr: (off: number, v: number, size = 1) => bus.configWrite(0, 0, 0, off, size, v),
  };
}

describe('I440fxHostBridge', () => {
  it("identifies as QEMU's i440FX: 8086:1237 rev 2, class 06/00, subsystem 1af4:1100, no capabilities", () => {
    const r = cfgRig();
    expect(r.rd(0x00)).toBe(0x12378086);
    expect(r.rd(0x08)).toBe(0x06000002);
    expect(r.rd(0x2c)).toBe(0x11001af4);
    expect(r.rd(0x0e, 1)).toBe(0);
    expect(r.rd(0x06, 2) & 0x10).toBe(0);
    expect(r.rd(0x72, 1)).toBe(0x02);
  });

  it('makes the BIOS window writable and read-only again as SeaBIOS does', () => {
    const r = cfgRig();
    for (let i = 0; i < 6; i++) r.wr(0x5a + i, 0x33);
    r.wr(0x59, 0x30);
    expect(r.rd(0x59, 1)).toBe(0x30);
    expect([...r.map.slots]).toEqual([[0xc0000, { size: 0x40000, backing: { kind: 'ram', offset: 0xc0000 }, readonly: false }]]);
    // make_bios_readonly: read-modify-write of the dwords at 0x58 and 0x5c.
    const lo = r.rd(0x58);
    r.wr(0x58, (lo & 0x000000ff) | 0x11111000, 4);
    r.wr(0x5c, 0x11111111, 4);
    expect([...r.pam.registers()]).toEqual([0x10, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11]);
    expect([...r.map.slots]).toEqual([[0xc0000, { size: 0x40000, backing: { kind: 'ram', offset: 0xc0000 }, readonly: true }]]);
  });

  it('keeps the reserved PAM bits at 0 and resets to the ROM alias', () => {
    const r = cfgRig();
    r.wr(0x59, 0xff);
    r.wr(0x5a, 0xff);
    expect(r.rd(0x59, 1)).toBe(0x30);
    expect(r.rd(0x5a, 1)).toBe(0x33);
    r.hb.reset();
    expect(r.rd(0x58)).toBe(0);
    expect([...r.map.slots]).toEqual([[0xe0000, { size: 0x20000, backing: { kind: 'bootrom', offset: 0 }, readonly: true }]]);
  });
});

function platformCtx(settings: Record<string, string>, memoryMap?: MemoryMapControl) {
  const config = new ConfigTree();
  for (const [k, v] of Object.entries(settings)) config.set(k, v);
  const io = new LocalIoBus();
  const ctx: DeviceContext = {
    io, config, mem: new GuestMemory([]), memoryMap,
    irq: { setLevel: () => {}, pulse: () => {}, signalMsi: () => {} },
    machine: { requestExit: () => {}, vcpuCount: 2 },
    stream: () => undefined,
  };
  const cfg = (slot: number, off: number): number => {
    io.portWrite(0xcf8, 4, (0x80000000 | (slot << 11) | off) >>> 0);
    return io.portRead(0xcfc, 4)!;
  };
  return { ctx, io, cfg };
}

const LAYOUT = computeLayout(256 * 1024 * 1024);

describe('buildPlatform with lpc.fwcfg=qemu', () => {
  it('builds the i440FX, shadows the BIOS window and serves fw_cfg at 0x510/0x511 and 0x514', () => {
    const map = new RecordingMap();
    // PAM shadows a boot ROM; without one the window stays RAM (issue 14 item 1).
    const noRom = platformCtx({ 'pci.0.0.0.device': 'hostbridge', 'pci.0.1.0.device': 'lpc', 'lpc.fwcfg': 'qemu', name: 'vm' }, new RecordingMap());
    expect(buildPlatform(noRom.ctx, LAYOUT, { hostname: 'host' }).pam).toBeUndefined();
    expect(noRom.io.mmio.find(0xc0000)).toBeUndefined();
    const f = platformCtx({
      'pci.0.0.0.device': 'hostbridge', 'pci.0.1.0.device': 'lpc', 'lpc.fwcfg': 'qemu', 'lpc.bootrom': '/dev/null', name: 'vm',
    }, map);
    const p = buildPlatform(f.ctx, LAYOUT, { hostname: 'host' });
    expect(f.cfg(0, 0)).toBe(0x12378086);
    expect(p.pam).toBeDefined();
    expect(p.fwcfg).toBeDefined();
    expect(f.io.mmio.find(0xc0000)?.name).toBe('pam');
    expect(f.io.ports.find(0x514)?.name).toBe('fwcfg-dma');
    f.io.portWrite(FW_CFG_PORT_SEL, 2, 0);
    const sig = [0, 1, 2, 3].map(() => f.io.portRead(FW_CFG_PORT_DATA, 1)!);
    expect(String.fromCharCode(...sig)).toBe('QEMU');
    expect(p.fwcfg!.fileNames()).toEqual(expect.arrayContaining(['etc/e820', 'etc/acpi/tables', 'etc/table-loader']));
    // CMOS: boot order hard disk first, CPU count - 1.
    expect(p.rtc.nvramRead(0x3d)).toBe(0x12);
    expect(p.rtc.nvramRead(0x5f)).toBe(1);
  });

  it('writes bootorder from the platform boot order and adds -f user files', () => {
    const f = platformCtx({
      'pci.0.0.0.device': 'hostbridge', 'lpc.fwcfg': 'qemu', name: 'vm',
      'pci.0.12.0.device': 'virtio-net', 'pci.0.12.0.bootindex': '2',
      'pci.0.4.0.device': 'virtio-net', 'pci.0.4.0.bootindex': '1',
    });
    const p = buildPlatform(f.ctx, LAYOUT, { hostname: 'host', fwcfgFiles: [{ name: 'opt/x', data: Uint8Array.of(1, 2) }] });
    expect(new TextDecoder().decode(p.fwcfg!.file('bootorder'))).toBe('/pci@i0cf8/pci@4\n/pci@i0cf8/pci@c\0');
    expect([...p.fwcfg!.file('opt/x')!]).toEqual([1, 2]);
  });

  it('puts the debug console on byte accesses of 0x402 and leaves PM1a_EN its 16-bit accesses', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'debugcon-'));
    const log = path.join(dir, 'log');
    try {
      const f = platformCtx({ 'lpc.fwcfg': 'qemu', 'lpc.debugcon.path': log, name: 'vm' });
      const p = buildPlatform(f.ctx, LAYOUT, { hostname: 'host' });
      expect(f.io.portRead(0x402, 1)).toBe(0xe9);
      f.io.portWrite(0x402, 1, 0x6f); // o
      f.io.portWrite(0x402, 2, 0x0100); // PWRBTN_EN, not the console
      expect(f.io.portRead(0x402, 2)).toBe(0x0100);
      for (const b of [0x6b, 0x0a, 0x00, 0xff]) f.io.portWrite(0x402, 1, b);
      for (const d of p.devices) d.close?.();
      expect([...fs.readFileSync(log)]).toEqual([0x6f, 0x6b, 0x0a, 0x00, 0xff]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps bhyve\'s host bridge and leaves the window alone without fwcfg=qemu', () => {
    const map = new RecordingMap();
    const f = platformCtx({ 'pci.0.0.0.device': 'hostbridge', name: 'vm' }, map);
    const p = buildPlatform(f.ctx, LAYOUT);
    expect(f.cfg(0, 0)).toBe(0x12751275);
    expect(p.pam).toBeUndefined();
    expect(p.fwcfg).toBeUndefined();
    expect(map.slots.size).toBe(0);
    expect(f.io.ports.find(0x510)).toBeUndefined();
    expect(f.io.portRead(0x402, 2 as AccessSize)).toBe(0); // PM1a_EN, no debug console
  });
});
