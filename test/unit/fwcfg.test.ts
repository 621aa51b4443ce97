import { describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import type { DeviceContext } from '../../src/devices/device.js';
import {
  buildE820, bswap32, createFwCfg, E820_RAM, encodeBootOrder, encodeE820, FW_CFG_BOOT_MENU,
  FW_CFG_DMA_CTL_ERROR, FW_CFG_DMA_CTL_READ, FW_CFG_DMA_CTL_SELECT, FW_CFG_DMA_CTL_SKIP, FW_CFG_DMA_CTL_WRITE,
  FW_CFG_FILE_DIR, FW_CFG_ID, FW_CFG_MAX_CPUS, FW_CFG_NB_CPUS, FW_CFG_RAM_SIZE, FW_CFG_SIGNATURE, FwCfg,
  FwCfgError, standardFiles,
} from '../../src/firmware/fwcfg.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';
import { computeLayout } from '../../src/sys/memory-map.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

function setup(files: Array<{ name: string; data: Uint8Array }> = [], ncpu = 2) {
  const ram = new Uint8Array(2 * MiB);
  const mem = new GuestMemory([{ gpa: 0, bytes: ram }]);
  const io = new LocalIoBus();
  const config = new ConfigTree();
  const ctx: DeviceContext = {
    io, mem, config, irq: { setLevel() {}, pulse() {}, signalMsi() {} },
    machine: { requestExit() {}, vcpuCount: ncpu }, stream: () => undefined,
  };
  const fw = createFwCfg(ctx, files, { layout: computeLayout(5 * GiB) });
  const select = (s: number) => { expect(io.portWrite(0x510, 2, s)).toBe(true); };
  const readBytes = (n: number) => Uint8Array.from({ length: n }, () => io.portRead(0x511, 1)!);
  const dmaAt = (addr: number) => {
    io.portWrite(0x514, 4, bswap32(Math.floor(addr / 2 ** 32)));
    io.portWrite(0x518, 4, bswap32(addr >>> 0));
  };
  return { fw, io, mem, ram, select, readBytes, dmaAt };
}

function text(b: Uint8Array): string { return String.fromCharCode(...b); }

function parseDir(d: Uint8Array): Array<{ size: number; select: number; name: string }> {
  const dv = new DataView(d.buffer, d.byteOffset, d.byteLength);
  const n = dv.getUint32(0, false);
  return Array.from({ length: n }, (_, i) => {
    const off = 4 + 64 * i;
    const nameBytes = d.subarray(off + 8, off + 64);
    return { size: dv.getUint32(off, false), select: dv.getUint16(off + 4, false), name: text(nameBytes.subarray(0, nameBytes.indexOf(0))) };
  });
}

function writeDesc(mem: GuestMemory, at: number, control: number, length: number, address: number): void {
  const b = new Uint8Array(16);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, control, false);
  dv.setUint32(4, length, false);
  dv.setBigUint64(8, BigInt(address), false);
  mem.write(at, b);
}
const controlAt = (mem: GuestMemory, at: number) => new DataView(mem.read(at, 4).buffer).getUint32(0, false);

describe('fw_cfg through the I/O ports', () => {
  it('reads the signature, the ID with the DMA bit and the numbered items', () => {
    const t = setup();
    t.select(FW_CFG_SIGNATURE);
    expect(text(t.readBytes(4))).toBe('QEMU');
    expect(t.io.portRead(0x511, 1)).toBe(0); // past the end
    t.select(FW_CFG_ID);
    expect([...t.readBytes(4)]).toEqual([0x03, 0, 0, 0]);
    t.select(FW_CFG_NB_CPUS);
    expect([...t.readBytes(2)]).toEqual([2, 0]);
    t.select(FW_CFG_MAX_CPUS);
    expect([...t.readBytes(2)]).toEqual([2, 0]);
    t.select(FW_CFG_BOOT_MENU);
    expect([...t.readBytes(2)]).toEqual([0, 0]);
    t.select(FW_CFG_RAM_SIZE);
    expect(new DataView(t.readBytes(8).buffer).getBigUint64(0, true)).toBe(BigInt(5 * GiB));
    expect(t.io.portRead(0x510, 2)).toBe(FW_CFG_RAM_SIZE);
    t.select(0x1234); // nothing there
    expect(t.io.portRead(0x511, 1)).toBe(0);
  });

  it('re-selecting rewinds; data port writes are ignored', () => {
    const t = setup();
    t.select(FW_CFG_SIGNATURE);
    t.readBytes(2);
    t.io.portWrite(0x511, 1, 0x55);
    t.select(FW_CFG_SIGNATURE);
    expect(text(t.readBytes(4))).toBe('QEMU');
  });

  it('lists files sorted by name with selectors from 0x20 in that order, as QEMU does', () => {
    const t = setup([
      { name: 'opt/zz', data: Uint8Array.of(1, 2, 3) },
      { name: 'etc/e820', data: new Uint8Array(40) },
      { name: 'bootorder', data: Uint8Array.of(0x2f, 0) },
    ]);
    t.select(FW_CFG_FILE_DIR);
    const count = new DataView(t.readBytes(4).buffer).getUint32(0, false);
    expect(count).toBe(3);
    t.select(FW_CFG_FILE_DIR);
    const dir = parseDir(t.readBytes(4 + 64 * count));
    expect(dir).toEqual([
      { size: 2, select: 0x20, name: 'bootorder' },
      { size: 40, select: 0x21, name: 'etc/e820' },
      { size: 3, select: 0x22, name: 'opt/zz' },
    ]);
    t.select(0x22);
    expect([...t.readBytes(3)]).toEqual([1, 2, 3]);
    expect(() => t.fw.addFile('opt/zz', new Uint8Array(1))).toThrow(FwCfgError);
    expect(() => t.fw.addFile('x'.repeat(56), new Uint8Array(1))).toThrow(FwCfgError);
  });

  it('the DMA register reads back "QEMU CFG"', () => {
    const t = setup();
    const lo = t.io.portRead(0x514, 4)!;
    const hi = t.io.portRead(0x518, 4)!;
    const b = new Uint8Array(8);
    new DataView(b.buffer).setUint32(0, lo, true);
    new DataView(b.buffer).setUint32(4, hi, true);
    expect(text(b)).toBe('QEMU CFG');
  });
});

describe('fw_cfg DMA', () => {
  it('select + read lands the data and clears control', () => {
    const t = setup([{ name: 'opt/hello', data: new TextEncoder().encode('hello, world') }]);
    writeDesc(t.mem, 0x1000, (FW_CFG_SIGNATURE << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ, 4, 0x2000);
    t.dmaAt(0x1000);
    expect(text(t.mem.read(0x2000, 4))).toBe('QEMU');
    expect(controlAt(t.mem, 0x1000)).toBe(0);

    // The file directory through DMA, then a file by its selector, with a skip.
    writeDesc(t.mem, 0x1000, (FW_CFG_FILE_DIR << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ, 4 + 64, 0x3000);
    t.dmaAt(0x1000);
    expect(controlAt(t.mem, 0x1000)).toBe(0);
    const dir = parseDir(t.mem.read(0x3000, 68));
    expect(dir[0]).toEqual({ size: 12, select: 0x20, name: 'opt/hello' });
    writeDesc(t.mem, 0x1000, (0x20 << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_SKIP, 7, 0);
    t.dmaAt(0x1000);
    writeDesc(t.mem, 0x1000, FW_CFG_DMA_CTL_READ, 5, 0x4000);
    t.dmaAt(0x1000);
    expect(text(t.mem.read(0x4000, 5))).toBe('world');
    expect(controlAt(t.mem, 0x1000)).toBe(0);
    // Reading past the end fills zeros and is no error.
    t.mem.write(0x5000, Uint8Array.of(9, 9, 9));
    writeDesc(t.mem, 0x1000, FW_CFG_DMA_CTL_READ, 3, 0x5000);
    t.dmaAt(0x1000);
    expect([...t.mem.read(0x5000, 3)]).toEqual([0, 0, 0]);
    expect(controlAt(t.mem, 0x1000)).toBe(0);
    expect(t.fw.dmaCount).toBe(5);
  });

  it('a wild destination sets the error bit and never throws', () => {
    const t = setup();
    writeDesc(t.mem, 0x1000, (FW_CFG_SIGNATURE << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ, 4, 0xfff00000);
    expect(() => t.dmaAt(0x1000)).not.toThrow();
    expect(controlAt(t.mem, 0x1000) & FW_CFG_DMA_CTL_ERROR).toBe(FW_CFG_DMA_CTL_ERROR);
    // Half in RAM, half outside.
    writeDesc(t.mem, 0x1000, (FW_CFG_SIGNATURE << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ, 4, 2 * MiB - 2);
    t.dmaAt(0x1000);
    expect(controlAt(t.mem, 0x1000) & FW_CFG_DMA_CTL_ERROR).toBe(FW_CFG_DMA_CTL_ERROR);
    // A descriptor outside RAM: nothing to report into, nothing thrown.
    expect(() => t.dmaAt(0x7_0000_0000)).not.toThrow();
    expect(() => t.dmaAt(2 * MiB - 8)).not.toThrow();
  });

  it('writes are refused with the error bit (every item is read-only)', () => {
    const t = setup();
    writeDesc(t.mem, 0x1000, (FW_CFG_SIGNATURE << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_WRITE, 4, 0x2000);
    t.dmaAt(0x1000);
    expect(controlAt(t.mem, 0x1000)).toBe(FW_CFG_DMA_CTL_ERROR);
    t.select(FW_CFG_SIGNATURE);
    expect(text(t.readBytes(4))).toBe('QEMU');
  });

  it('without the DMA bit the ID says traditional only', () => {
    const fw = new FwCfg(new GuestMemory([]), { dma: false });
    fw.select(FW_CFG_ID);
    expect(fw.readDataByte()).toBe(1);
  });
});

describe('standard fw_cfg files', () => {
  it('etc/e820 has bhyve\'s RAM ranges with the VGA/ROM holes punched', () => {
    expect(buildE820(computeLayout(512 * MiB))).toEqual([
      { base: 0, length: 0xa0000, type: E820_RAM },
      { base: 0x100000, length: 512 * MiB - 0x100000, type: E820_RAM },
    ]);
    const big = buildE820(computeLayout(6 * GiB));
    expect(big[2]).toEqual({ base: 4 * GiB, length: 3 * GiB, type: E820_RAM });
    expect(big[1]).toEqual({ base: 0x100000, length: 3 * GiB - 0x100000, type: E820_RAM });
    const enc = encodeE820(big);
    expect(enc.length).toBe(60);
    const dv = new DataView(enc.buffer);
    expect(dv.getBigUint64(40, true)).toBe(BigInt(4 * GiB));
    expect(dv.getBigUint64(48, true)).toBe(BigInt(3 * GiB));
    expect(dv.getUint32(56, true)).toBe(1);
    const withReserved = buildE820(computeLayout(512 * MiB), [{ base: 0x1000_0000, length: 0x1000, type: 2 }]);
    expect(withReserved.map((e) => [e.base, e.type])).toEqual([[0, 1], [0x100000, 1], [0x1000_0000, 2], [0x1000_1000, 1]]);
  });

  it('bootorder: the boot devices on bus 0 in boot order, as OpenFirmware paths', () => {
    const devs = [{ bus: 0, slot: 12, func: 1 }, { bus: 1, slot: 2, func: 0 }, { bus: 0, slot: 3, func: 0 }];
    expect(text(encodeBootOrder(devs)!)).toBe('/pci@i0cf8/pci@c,1\n/pci@i0cf8/pci@3\0');
    expect(encodeBootOrder([])).toBeUndefined();
    expect(encodeBootOrder([{ bus: 1, slot: 2, func: 0 }])).toBeUndefined();
    expect(text(encodeBootOrder([{ bus: 0, slot: 3, func: 0, name: 'virtio-scsi@pci.0.3.0' }])!))
      .toBe('/pci@i0cf8/pci@3/channel@0/disk@0,0\0');
  });

  it('standardFiles gives etc/e820', () => {
    expect(standardFiles(computeLayout(GiB)).map((f) => f.name)).toEqual(['etc/e820']);
  });
});
