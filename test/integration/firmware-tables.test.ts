// The in-memory firmware tables describe the machine as built: a VM with
// INTx devices is held while its tables are read out of guest memory (the
// VM object's memory file, 0xf0000-0xfffff), the DSDT is disassembled with
// iasl and its _PRT (PPRT for the PIC model, APRT for the I/O APIC, chosen
// by \PICM as bhyve's pci_bus_write_dsdt writes it) has an entry for each
// device's pin, and the MP table has the matching I/O interrupt entries.
// Before the tables were built after the platform, the DSDT had no _PRT
// and the MP table no PCI entries.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bhyveArgs, kvmUnavailable, rom, vmName } from '../support/bhyve.js';
import { MODE, romWith, runHeld } from '../support/guest-rom.js';
import { IASL_MISSING } from '../support/probes.js';

const skip = kvmUnavailable()
  ?? (fs.existsSync(rom('virtio-blk')) ? undefined : 'test guests are not built: run scripts/build-guests.sh')
  ?? IASL_MISSING;
if (skip) console.warn(`skipping firmware table tests: ${skip}`);

let tmp = '';
beforeAll(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fwtables-')); });
afterAll(() => { if (tmp) fs.rmSync(tmp, { recursive: true, force: true }); });

const LOW = 0xf0000;
const u16 = (b: Buffer, gpa: number): number => b.readUInt16LE(gpa - LOW);
const u32 = (b: Buffer, gpa: number): number => b.readUInt32LE(gpa - LOW);
const sig = (b: Buffer, gpa: number, n = 4): string => b.toString('latin1', gpa - LOW, gpa - LOW + n);

/** The DSDT, found as a guest would: RSDP at bhyve's 0xf2400, RSDT, FADT. */
function dsdtOf(low: Buffer): Buffer {
  const rsdp = 0xf2400;
  expect(sig(low, rsdp, 8)).toBe('RSD PTR ');
  const rsdt = u32(low, rsdp + 16);
  expect(sig(low, rsdt)).toBe('RSDT');
  const entries = (u32(low, rsdt + 4) - 36) / 4;
  const fadt = Array.from({ length: entries }, (_, i) => u32(low, rsdt + 36 + 4 * i)).find((a) => sig(low, a) === 'FACP');
  expect(fadt).toBeDefined();
  const dsdt = u32(low, fadt! + 40);
  expect(sig(low, dsdt)).toBe('DSDT');
  return low.subarray(dsdt - LOW, dsdt - LOW + u32(low, dsdt + 4));
}

/** MP table I/O interrupt entries from PCI bus 0: [source bus IRQ, flags, I/O APIC input]. */
function mpPciInts(low: Buffer): number[][] {
  expect(sig(low, LOW)).toBe('_MP_');
  const ct = u32(low, LOW + 4);
  expect(sig(low, ct)).toBe('PCMP');
  const out: number[][] = [];
  for (let i = 0, off = ct + 44; i < u16(low, ct + 34); i++) {
    const type = low[off - LOW];
    if (type === 3 && low[off - LOW + 4] === 0) out.push([low[off - LOW + 5], u16(low, off + 2), low[off - LOW + 7]]);
    off += type === 0 ? 20 : 8;
  }
  return out;
}

/** The entries of Name (NAME, Package ...) in iasl's disassembly, each as its four elements. */
function prtPackage(dsl: string, name: string): string[][] {
  const start = dsl.indexOf(`Name (${name}, Package`);
  expect(start, dsl).toBeGreaterThanOrEqual(0);
  const rest = dsl.slice(start);
  const body = rest.slice(0, rest.search(/\n\s*\}\)/));
  return [...body.matchAll(/Package \(0x04\)\s*\{([^}]*)\}/g)].map((m) => m[1].split(',').map((x) => x.trim()).filter(Boolean));
}

describe.skipIf(skip !== undefined)('in-memory firmware tables of a VM with INTx devices', () => {
  it('the DSDT has a PIC and an APIC _PRT entry for each device\'s pin, and the MP table the matching I/O interrupt entries', async () => {
    const img = path.join(tmp, 'disk.img');
    fs.writeFileSync(img, '');
    fs.truncateSync(img, 8 << 20);
    const name = vmName('fwtables');
    let low: Buffer | undefined;
    // virtio-blk at 0:3.0 takes INTA of slot 3; virtio-rnd at 0:4.0 and
    // 0:4.1 take INTA and INTB of slot 4 (bhyve's least-used pin).
    const r = await runHeld(bhyveArgs(romWith(tmp, 'virtio-blk', MODE.INTX | MODE.HOLD), name, {
      extra: ['-s', `3,virtio-blk,${img}`, '-s', '4:0,virtio-rnd', '-s', '4:1,virtio-rnd'],
    }), name, {
      whileHeld: (dir) => {
        const fd = fs.openSync(path.join(dir, 'memory'), 'r');
        try {
          low = Buffer.alloc(0x10000);
          fs.readSync(fd, low, 0, low.length, LOW);
        } finally {
          fs.closeSync(fd);
        }
      },
    });
    expect(r.status, r.out).toBe(33);
    expect(low, r.out).toBeDefined();

    const dir = fs.mkdtempSync(path.join(tmp, 'dsdt-'));
    fs.writeFileSync(path.join(dir, 'DSDT.dat'), dsdtOf(low!));
    const d = spawnSync('iasl', ['-d', 'DSDT.dat'], { cwd: dir, encoding: 'utf8' });
    expect(d.status, `${d.stdout}${d.stderr}`).toBe(0);
    const dsl = fs.readFileSync(path.join(dir, 'DSDT.dsl'), 'utf8');
    expect(dsl).toMatch(/Method \(_PRT, 0[^)]*\)[^{]*\{\s*If \(\\PICM\)\s*\{\s*Return \(APRT\)[^}]*\}\s*Else\s*\{\s*Return \(PPRT\)/);

    // With a boot ROM bhyve routes slot S pin P to I/O APIC input
    // 16 + (4 + S + P) % 8 and PIRQ pin (4 + S + P) % 8 (LNKA = 0).
    const want = [
      { addr: '0x0003FFFF', pin: 'Zero', link: 'LNKA', ioapic: 16, mpIrq: (3 << 2) | 0 },
      { addr: '0x0004FFFF', pin: 'Zero', link: 'LNKB', ioapic: 17, mpIrq: (4 << 2) | 0 },
      { addr: '0x0004FFFF', pin: 'One', link: 'LNKC', ioapic: 18, mpIrq: (4 << 2) | 1 },
    ];
    expect(prtPackage(dsl, 'APRT')).toEqual(want.map((w) => [w.addr, w.pin, 'Zero', `0x${w.ioapic.toString(16).toUpperCase()}`]));
    expect(prtPackage(dsl, 'PPRT')).toEqual(want.map((w) => [w.addr, w.pin, `\\_SB.PC00.ISA.${w.link}`, 'Zero']));
    // Flags 0: conforming (PCI: level, active low), as bhyve's mpt_generate_pci_int.
    expect(mpPciInts(low!)).toEqual(want.map((w) => [w.mpIrq, 0, w.ioapic]));
    // The guest found its INTA in the MP table, on the input the DSDT names.
    expect(r.out).toContain('virtio-blk: INTA -> I/O APIC pin 16 (level, active low), vector');
    expect(r.out).toContain('from the MP table\r\n');
  });
});
