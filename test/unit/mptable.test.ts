import { describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import { byteSum, getU16, getU32 } from '../../src/firmware/bytes.js';
import { buildFirmwareInMemory, buildFwCfgFiles } from '../../src/firmware/index.js';
import { buildMpTable, MPTABLE_BASE, mptableEnabled } from '../../src/firmware/mptable.js';
import { computeLayout } from '../../src/sys/memory-map.js';
import { builtMachine } from '../support/built-machine.js';

describe('MP table', () => {
  it('floating pointer and configuration table with bhyve\'s entries', () => {
    const t = buildMpTable({ ncpu: 3, intx: [{ bus: 0, slot: 4, pin: 1, pirqPin: 1, ioapicIrq: 16 }] });
    expect(String.fromCharCode(...t.subarray(0, 4))).toBe('_MP_');
    expect(getU32(t, 4)).toBe(MPTABLE_BASE + 16);
    expect(t[8]).toBe(1);
    expect(t[9]).toBe(4);
    expect(byteSum(t, 0, 16)).toBe(0);
    const ct = t.subarray(16);
    expect(String.fromCharCode(...ct.subarray(0, 4))).toBe('PCMP');
    expect(getU16(ct, 4)).toBe(ct.length);
    expect(byteSum(ct)).toBe(0);
    expect(String.fromCharCode(...ct.subarray(8, 16))).toBe('BHyVe   ');
    expect(getU32(ct, 36)).toBe(0xfee00000);
    // Walk the entries.
    const n = getU16(ct, 34);
    let off = 44;
    const types: number[] = [];
    const procs: number[][] = [];
    const ints: number[][] = [];
    for (let i = 0; i < n; i++) {
      const type = ct[off];
      types.push(type);
      if (type === 0) { procs.push([ct[off + 1], ct[off + 3]]); off += 20; } else {
        if (type === 3) ints.push([ct[off + 1], getU16(ct, off + 2), ct[off + 4], ct[off + 5], ct[off + 7]]);
        off += 8;
      }
    }
    expect(off).toBe(ct.length);
    expect(procs).toEqual([[0, 3], [1, 1], [2, 1]]);
    expect(types.filter((x) => x === 1).length).toBe(2);
    expect(types.filter((x) => x === 2).length).toBe(1);
    expect(ints.length).toBe(17);
    expect(ints[0]).toEqual([3, 0, 1, 0, 0]); // ExtINT on pin 0
    expect(ints[2]).toEqual([0, 0, 1, 0, 2]); // IRQ0 -> pin 2
    expect(ints[9]).toEqual([0, 0xf, 1, 9, 9]); // SCI level, active low
    expect(ints[16]).toEqual([0, 0, 0, (4 << 2) | 0, 16]); // PCI 0:4 INTA -> 16
    expect(types.slice(-2)).toEqual([4, 4]);
  });

  it('one I/O interrupt entry per INTx pin the platform routed; a second PCI hierarchy is refused, as bhyve does', () => {
    const m = builtMachine({
      'pci.0.31.0.device': 'lpc', 'pci.0.3.0.device': 'virtio-rnd', 'pci.0.3.1.device': 'virtio-rnd', 'pci.0.5.0.device': 'virtio-rnd',
    });
    expect(m.intx.map((r) => [r.slot, r.pin])).toEqual([[3, 1], [3, 2], [5, 1]]);
    const ct = buildMpTable({ ncpu: 1, intx: m.intx, pciBuses: m.pciBuses.map((b) => b.bus) }).subarray(16);
    const pciInts: number[][] = [];
    for (let i = 0, off = 44; i < getU16(ct, 34); i++) {
      if (ct[off] === 3 && ct[off + 4] === 0) pciInts.push([getU16(ct, off + 2), ct[off + 5], ct[off + 6], ct[off + 7]]);
      off += ct[off] === 0 ? 20 : 8;
    }
    // Conforming flags (PCI: level, active low), bus 0, slot << 2 | INTx, I/O APIC 0, the routed input.
    expect(pciInts).toEqual(m.intx.map((r) => [0, (r.slot << 2) | (r.pin - 1), 0, r.ioapicIrq]));
    expect(() => buildMpTable({ ncpu: 1, pciBuses: [0, 1] })).toThrow(/incompatible with multiple PCI hierarchies.*-Y/);
  });

  it('x86.mptable=false (-Y) leaves it out of guest memory', () => {
    const c = new ConfigTree();
    c.set('cpus', '2');
    expect(mptableEnabled(c)).toBe(true);
    const names = (cfg: ConfigTree) => buildFirmwareInMemory(cfg, computeLayout(256 << 20), builtMachine({}, { ncpu: 2 }), { hostname: 'h' }).map((r) => [r.name, r.gpa]);
    expect(names(c)).toEqual([['mptable', 0xf0000], ['smbios', 0xf1000], ['acpi', 0xf2400]]);
    c.set('x86.mptable', 'false');
    c.set('acpi_tables_in_memory', 'false');
    expect(names(c)).toEqual([['smbios', 0xf1000]]);
  });

  it('fw_cfg files: e820, ACPI, SMBIOS, then user files', () => {
    const c = new ConfigTree();
    c.set('pci.0.31.0.device', 'lpc');
    c.set('lpc.fwcfg', 'qemu');
    const files = buildFwCfgFiles(c, computeLayout(256 << 20), builtMachine({ 'pci.0.31.0.device': 'lpc', 'lpc.fwcfg': 'qemu' }), [{ name: 'opt/x', data: Uint8Array.of(1) }], { hostname: 'h' });
    expect(files.map((f) => f.name)).toEqual([
      'etc/e820', 'etc/acpi/tables', 'etc/acpi/rsdp', 'etc/table-loader', 'etc/smbios/smbios-tables', 'etc/smbios/smbios-anchor', 'opt/x',
    ]);
  });
});
