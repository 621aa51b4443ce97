import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { byteSum, getU16, getU32, getU64 } from '../../src/firmware/bytes.js';
import * as aml from '../../src/firmware/acpi/aml.js';
import {
  acpiPlatform, BHYVE_ACPI_BASE, buildAcpiForFwCfg, buildAcpiInMemory, buildAcpiTables, decodeLoader,
  LOADER_ZONE_FSEG, type AcpiPlatform,
} from '../../src/firmware/acpi/index.js';
import { builtMachine } from '../support/built-machine.js';

const GiB = 1024 * 1024 * 1024;

/** The ACPI view of a platform built from these settings; `intx` adds
 * virtio-rnd functions at 0:3.0, 0:4.0 and 0:4.1 (INTA of slot 3, INTA and
 * INTB of slot 4). */
function platform(settings: Record<string, string> = {}, mem = 512 * 1024 * 1024, intx = false): AcpiPlatform {
  const all: Record<string, string> = {
    'pci.0.0.0.device': 'hostbridge', 'pci.0.31.0.device': 'lpc', 'lpc.com1.path': 'stdio', 'lpc.com2.path': '/dev/null',
    'lpc.fwcfg': 'qemu',
    ...(intx ? { 'pci.0.3.0.device': 'virtio-rnd', 'pci.0.4.0.device': 'virtio-rnd', 'pci.0.4.1.device': 'virtio-rnd' } : {}),
    ...settings,
  };
  return acpiPlatform(builtMachine(all, { mem, ncpu: Number(all.cpus ?? 4) }));
}

function sig(b: Uint8Array, off = 0, n = 4): string {
  return String.fromCharCode(...b.subarray(off, off + n));
}

describe('AML encoding', () => {
  it('encodes PkgLength in 1 to 4 bytes', () => {
    expect([...aml.pkgLength(0x3e)]).toEqual([0x3f]);
    expect([...aml.pkgLength(0x3f)]).toEqual([0x41, 0x04]); // 0x3f + 2 = 0x41
    expect([...aml.pkgLength(0xffd)]).toEqual([0x4f, 0xff]);
    expect([...aml.pkgLength(0xffe)]).toEqual([0x81, 0x00, 0x01]); // 0xffe + 3 = 0x1001
  });
  it('encodes integers in their shortest form', () => {
    expect([...aml.int(0)]).toEqual([0x00]);
    expect([...aml.int(1)]).toEqual([0x01]);
    expect([...aml.int(5)]).toEqual([0x0a, 5]);
    expect([...aml.int(0x1234)]).toEqual([0x0b, 0x34, 0x12]);
    expect([...aml.int(0xfec00000)]).toEqual([0x0c, 0x00, 0x00, 0xc0, 0xfe]);
    expect([...aml.int(0x100000000)]).toEqual([0x0e, 0, 0, 0, 0, 1, 0, 0, 0]);
  });
  it('compresses EISA IDs', () => {
    expect(aml.eisaIdValue('PNP0A03')).toBe(0x030ad041);
    expect(aml.eisaIdValue('PNP0501')).toBe(0x0105d041);
  });
  it('encodes names', () => {
    expect(sig(aml.nameString('_S5'))).toBe('_S5_');
    expect([...aml.nameString('\\_SB.PC00')]).toEqual([0x5c, 0x2e, ...'_SB_PC00'].map((c) => (typeof c === 'string' ? c.charCodeAt(0) : c)));
  });
});

describe('ACPI tables', () => {
  it('every table and the RSDP sum to zero in the in-memory layout', () => {
    const r = buildAcpiInMemory(platform());
    expect(r.base).toBe(BHYVE_ACPI_BASE);
    expect(r.base + r.image.length).toBeLessThanOrEqual(0x100000);
    for (const t of r.placed) {
      const off = t.address - r.base;
      if (t.sig === 'RSD PTR ') {
        expect(byteSum(r.image, off, 20)).toBe(0);
        expect(byteSum(r.image, off, 36)).toBe(0);
      } else if (t.sig !== 'FACS') {
        expect(byteSum(r.image, off, t.length), t.sig).toBe(0);
        expect(getU32(r.image, off + 4), t.sig).toBe(t.length);
      }
    }
  });

  it('links RSDP -> XSDT/RSDT -> FADT -> FACS/DSDT by address', () => {
    const r = buildAcpiInMemory(platform());
    const at = (s: string) => r.placed.find((t) => t.sig === s)!.address;
    const img = r.image;
    const o = (a: number | bigint) => Number(a) - r.base;
    expect(sig(img, 0, 8)).toBe('RSD PTR ');
    expect(img[15]).toBe(2);
    expect(getU32(img, 16)).toBe(at('RSDT'));
    expect(getU32(img, 20)).toBe(36);
    expect(Number(getU64(img, 24))).toBe(at('XSDT'));
    const xsdt = o(at('XSDT'));
    expect(sig(img, xsdt)).toBe('XSDT');
    const entries = (getU32(img, xsdt + 4) - 36) / 8;
    const sigs = Array.from({ length: entries }, (_, i) => sig(img, o(getU64(img, xsdt + 36 + 8 * i))));
    expect(sigs).toEqual(['FACP', 'APIC', 'HPET', 'MCFG']);
    const fadt = o(at('FACP'));
    expect(getU32(img, fadt + 40)).toBe(at('DSDT'));
    expect(Number(getU64(img, fadt + 140))).toBe(at('DSDT'));
    expect(getU32(img, fadt + 36)).toBe(at('FACS'));
    expect(at('FACS') % 64).toBe(0);
  });

  // Offsets as ACPI 6.x table 5.9 gives them, written here (not taken from
  // the code under test): FIRMWARE_CTRL 36, DSDT 40, SCI_INT 46, SMI_CMD 48,
  // ACPI_ENABLE/DISABLE 52/53, PM1a_EVT_BLK 56, PM1a_CNT_BLK 64, PM_TMR_BLK
  // 76, PM1_EVT_LEN 88, PM1_CNT_LEN 89, PM_TMR_LEN 91, Flags 112, RESET_REG
  // 116, RESET_VALUE 128, FADT Minor Version 131, X_FIRMWARE_CTRL 132,
  // X_DSDT 140, X_PM1a_EVT_BLK 148, X_PM_TMR_BLK 208; 276 bytes in all.
  it('FADT fields are at the offsets the ACPI spec gives', () => {
    const f = buildAcpiTables(platform()).tables.get('FACP')!.bytes;
    expect(f.length).toBe(276);
    expect(f[8]).toBe(6); // revision
    expect(f[131]).toBe(0);
    expect(getU16(f, 46)).toBe(9);
    expect(getU32(f, 48)).toBe(0xb2);
    expect(f[52]).toBe(0xa0);
    expect(f[53]).toBe(0xa1);
    expect(getU32(f, 56)).toBe(0x400);
    expect(getU32(f, 64)).toBe(0x404);
    expect(getU32(f, 76)).toBe(0x408);
    expect(f[88]).toBe(4);
    expect(f[89]).toBe(2);
    expect(f[91]).toBe(4);
    const flags = getU32(f, 112);
    expect(flags & (1 << 8)).not.toBe(0); // TMR_VAL_EXT: 32-bit PM timer
    expect(flags & (1 << 10)).not.toBe(0); // RESET_REG_SUP
    // Reset register: SystemIO, 8 bits, byte access, 0xcf9, value 6.
    expect([...f.subarray(116, 116 + 4)]).toEqual([1, 8, 0, 1]);
    expect(Number(getU64(f, 116 + 4))).toBe(0xcf9);
    expect(f[128]).toBe(6);
    expect([...f.subarray(148, 148 + 4)]).toEqual([1, 32, 0, 2]);
    expect(Number(getU64(f, 208 + 4))).toBe(0x408);
  });

  it('MADT has a local APIC per vCPU, the I/O APIC and bhyve\'s overrides', () => {
    const m = buildAcpiTables(platform({ cpus: '3' })).tables.get('APIC')!.bytes;
    expect(getU32(m, 36)).toBe(0xfee00000);
    const subs: number[][] = [];
    for (let off = 44; off < m.length; off += m[off + 1]) subs.push([...m.subarray(off, off + m[off + 1])]);
    expect(subs.filter((s) => s[0] === 0).map((s) => s[3])).toEqual([0, 1, 2]);
    const io = subs.find((s) => s[0] === 1)!;
    expect(getU32(Uint8Array.from(io), 4)).toBe(0xfec00000);
    const iso = subs.filter((s) => s[0] === 2);
    expect(iso.map((s) => [s[3], getU32(Uint8Array.from(s), 4), getU16(Uint8Array.from(s), 8)])).toEqual([[0, 2, 0x5], [9, 9, 0xf]]);
    expect(subs.some((s) => s[0] === 4 && s[5] === 1)).toBe(true);
  });

  it('MCFG points at bhyve\'s ECAM base for buses 0-255; HPET at 0xfed00000', () => {
    const t = buildAcpiTables(platform()).tables;
    const mcfg = t.get('MCFG')!.bytes;
    expect(mcfg.length).toBe(60);
    expect(Number(getU64(mcfg, 44))).toBe(0xe0000000);
    expect([mcfg[54], mcfg[55]]).toEqual([0, 255]);
    const hpet = t.get('HPET')!.bytes;
    expect(hpet.length).toBe(56);
    expect(getU32(hpet, 36)).toBe(0x8086a701);
    expect(Number(getU64(hpet, 44))).toBe(0xfed00000);
  });

  it('the fw_cfg form has zero checksums, offsets as pointers and a loader script that fixes both', () => {
    const a = buildAcpiForFwCfg(platform());
    const cmds = decodeLoader(a.loader);
    expect(a.loader.length % 128).toBe(0);
    expect(cmds[0]).toEqual({ cmd: 'allocate', file: 'etc/acpi/rsdp', align: 16, zone: LOADER_ZONE_FSEG });
    expect(cmds[1]).toMatchObject({ cmd: 'allocate', file: 'etc/acpi/tables' });
    // Run the loader as SeaBIOS would: place the blobs, patch, checksum.
    const files: Record<string, { data: Uint8Array; addr: number }> = {
      'etc/acpi/rsdp': { data: Uint8Array.from(a.rsdp), addr: 0xf5000 },
      'etc/acpi/tables': { data: Uint8Array.from(a.tables), addr: 0x1ffe0000 },
    };
    let sawChecksum = false;
    for (const c of cmds) {
      if (c.cmd === 'add-pointer') {
        expect(sawChecksum).toBe(false);
        const d = files[c.dest].data;
        const v = c.size === 4 ? getU32(d, c.offset) : Number(getU64(d, c.offset));
        const nv = v + files[c.src].addr;
        new DataView(d.buffer).setUint32(c.offset, nv, true);
        if (c.size === 8) new DataView(d.buffer).setUint32(c.offset + 4, 0, true);
      } else if (c.cmd === 'add-checksum') {
        sawChecksum = true;
        const d = files[c.file].data;
        expect(d[c.offset]).toBe(0);
        d[c.offset] = (0x100 - byteSum(d, c.start, c.length)) & 0xff;
      }
    }
    const rsdp = files['etc/acpi/rsdp'].data;
    expect(byteSum(rsdp, 0, 20)).toBe(0);
    expect(byteSum(rsdp, 0, 36)).toBe(0);
    const tbl = files['etc/acpi/tables'].data;
    const xsdtAddr = Number(getU64(rsdp, 24));
    const xsdt = xsdtAddr - 0x1ffe0000;
    expect(sig(tbl, xsdt)).toBe('XSDT');
    expect(byteSum(tbl, xsdt, getU32(tbl, xsdt + 4))).toBe(0);
    const fadt = Number(getU64(tbl, xsdt + 36)) - 0x1ffe0000;
    expect(sig(tbl, fadt)).toBe('FACP');
    expect(byteSum(tbl, fadt, getU32(tbl, fadt + 4))).toBe(0);
    expect(sig(tbl, getU32(tbl, fadt + 40) - 0x1ffe0000)).toBe('DSDT');
  });

  it('platform as built: LPC slot, its four UARTs, fw_cfg, vCPUs, bus 0 windows from the BARs with bhyve\'s slop', () => {
    const p = platform({}, 5 * GiB, true);
    expect(p.ncpu).toBe(4);
    expect(p.lpc).toEqual({ slot: 31, func: 0 });
    // bhyve's lpc_init enables COM1-COM4 whether or not a backend is set.
    expect(p.uarts.map((u) => [u.name, u.port, u.irq])).toEqual([['COM1', 0x3f8, 4], ['COM2', 0x2f8, 3], ['COM3', 0x3e8, 4], ['COM4', 0x2e8, 3]]);
    expect(p.fwcfg).toBe(true);
    // Three virtio functions: 3 x 32-byte legacy I/O BARs from 0x2000, then
    // 32 ports of slop rounded to 32; memory BARs below 4 GiB plus 1 MiB;
    // the 64-bit window at the first 32 GiB boundary above RAM plus 512 MiB.
    expect(p.bus0).toEqual({
      bus: 0,
      io: { base: 0x2000, limit: 0x2000 + 3 * 0x20 + 0x20 },
      mem32: { base: 0xc0000000, limit: expect.any(Number) },
      mem64: { base: 32 * GiB, limit: 32 * GiB + 512 * 1024 * 1024 },
    });
    expect(p.bus0!.mem32.limit % (1024 * 1024)).toBe(0);
    expect(p.bus0!.mem32.limit).toBeGreaterThan(0xc0100000);
    expect(p.intx.map((r) => [r.slot, r.pin])).toEqual([[3, 1], [4, 1], [4, 2]]);
    const bare = acpiPlatform(builtMachine({ 'pci.0.0.0.device': 'hostbridge' }, { mem: GiB }));
    expect(bare.lpc).toBeUndefined();
    expect(bare.uarts).toEqual([]);
    expect(bare.ncpu).toBe(1);
    // Functions on bus 0 but no BARs: the windows are bhyve's slop alone.
    expect(bare.bus0).toEqual({
      bus: 0, io: { base: 0x2000, limit: 0x2020 }, mem32: { base: 0xc0000000, limit: 0xc0100000 },
      mem64: { base: 32 * GiB, limit: 32 * GiB + 512 * 1024 * 1024 },
    });
  });
});

function haveIasl(): boolean {
  return spawnSync('iasl', ['-v'], { encoding: 'utf8' }).status === 0;
}
const IASL = haveIasl();
const tmpDirs: string[] = [];
afterAll(() => { for (const d of tmpDirs) rmSync(d, { recursive: true, force: true }); });

function disassemble(name: string, bytes: Uint8Array): string {
  const dir = mkdtempSync(join(tmpdir(), 'bhyve-acpi-'));
  tmpDirs.push(dir);
  const file = join(dir, `${name}.dat`);
  writeFileSync(file, bytes);
  const r = spawnSync('iasl', ['-d', file], { cwd: dir, encoding: 'utf8' });
  const out = `${r.stdout}\n${r.stderr}`;
  expect(r.status, out).toBe(0);
  expect(out).not.toMatch(/\b[1-9][0-9]* (Errors|Error)\b/);
  expect(out).not.toMatch(/Invalid|Could not|ACPI Error/);
  const dsl = readdirSync(dir).find((f) => f.endsWith('.dsl'));
  expect(dsl, out).toBeDefined();
  return readFileSync(join(dir, dsl!), 'utf8');
}

describe.skipIf(!IASL)('iasl (acpica-tools; skipped when iasl is not installed)', () => {
  const p = platform({}, 5 * GiB, true);
  const set = buildAcpiTables(p);
  const mem = buildAcpiInMemory(p);

  for (const s of ['FACP', 'APIC', 'HPET', 'MCFG', 'FACS', 'RSDT', 'XSDT']) {
    it(`disassembles ${s} cleanly`, () => {
      const t = mem.placed.find((x) => x.sig === s)!;
      const bytes = mem.image.subarray(t.address - mem.base, t.address - mem.base + t.length);
      const dsl = disassemble(s === 'FACP' ? 'FACP' : s, bytes);
      expect(dsl).not.toMatch(/\*\*\*\* ACPI table terminates|Unknown|\*\*\*\* Invalid/i);
    });
  }

  // iasl -d cannot read a standalone RSDP before acpica 2021 (it takes
  // bytes 4-7 of any file for a table length: "No valid ACPI signature"),
  // and Debian 12 ships 20200925. Its data-table compiler does know the
  // RSDP: iasl builds one from the field values (computing both checksums
  // as the ACPI spec says), and ours must be byte for byte the same.
  it('is the RSDP iasl builds from the same fields (checksums, lengths, layout)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bhyve-rsdp-'));
    tmpDirs.push(dir);
    const rsdt = mem.placed.find((x) => x.sig === 'RSDT')!.address;
    const xsdt = mem.placed.find((x) => x.sig === 'XSDT')!.address;
    const hex = (n: number, digits: number) => n.toString(16).toUpperCase().padStart(digits, '0');
    writeFileSync(join(dir, 'rsdp.asl'), [
      '[0008]                          Signature : "RSD PTR "',
      '[0001]                           Checksum : 00',
      '[0006]                             Oem ID : "BHYVE "',
      '[0001]                           Revision : 02',
      `[0004]                       RSDT Address : ${hex(rsdt, 8)}`,
      '[0004]                             Length : 00000024',
      `[0008]                       XSDT Address : ${hex(xsdt, 16)}`,
      '[0001]                  Extended Checksum : 00',
      '[0003]                           Reserved : 000000',
      '',
    ].join('\n'));
    const r = spawnSync('iasl', ['rsdp.asl'], { cwd: dir, encoding: 'utf8' });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    const want = readFileSync(join(dir, 'rsdp.aml'));
    expect(want.length).toBe(36);
    expect(Buffer.from(mem.image.subarray(0, 36)).toString('hex')).toBe(want.toString('hex'));
  });

  it('DSDT disassembles with the devices we put in', () => {
    const d = mem.placed.find((x) => x.sig === 'DSDT')!;
    const dsl = disassemble('DSDT', mem.image.subarray(d.address - mem.base, d.address - mem.base + d.length));
    for (const frag of [
      'Name (_S5, Package', 'Method (_PIC, 1', 'Device (PC00)', 'EisaId ("PNP0A08")', 'EisaId ("PNP0A03")',
      'WordBusNumber (ResourceProducer', 'DWordMemory (ResourceProducer', 'QWordMemory (ResourceProducer',
      'Device (ISA)', 'Device (COM1)', 'Device (COM2)', 'EisaId ("PNP0501")', 'Device (RTC)', 'EisaId ("PNP0B00")',
      'Device (TIMR)', 'Device (PIC)', 'Device (HPET)', 'EisaId ("PNP0103")', 'Device (FWCF)', '"QEMU0002"',
      'Device (LNKA)', 'Device (LNKH)', 'EisaId ("PNP0C0F")', 'Method (_PRT, 0', 'Name (APRT, Package',
      'Name (PPRT, Package', 'Method (_SRS, 1', 'Memory32Fixed (ReadWrite', 'IRQ (Level, ActiveLow, Shared',
      'OperationRegion (LPCR, PCI_Config',
    ]) {
      expect(dsl, frag).toContain(frag);
    }
    expect(dsl).toContain('Device (COM4)');
    // The 64-bit window starts at the first 32 GiB boundary above RAM.
    expect(dsl).toMatch(/0x0000000800000000/);
  });

  it('a DSDT without an LPC bridge has the PCI root and HPET only; PPRT is empty (no PIRQ links), APRT routes to the I/O APIC', () => {
    const bare = acpiPlatform(builtMachine({ 'pci.0.0.0.device': 'hostbridge', 'pci.0.3.0.device': 'virtio-rnd' }, { mem: GiB }));
    const m = buildAcpiInMemory(bare);
    const d = m.placed.find((x) => x.sig === 'DSDT')!;
    const dsl = disassemble('DSDT', m.image.subarray(d.address - m.base, d.address - m.base + d.length));
    expect(dsl).toContain('Device (PC00)');
    expect(dsl).toContain('Device (HPET)');
    expect(dsl).toContain('Method (_PRT, 0');
    expect(dsl).not.toContain('Device (ISA)');
    expect(dsl).not.toContain('LNK');
    // bhyve's pci_bus_write_dsdt: PPRT (entries only with lpc_pirq_name), APRT, _PRT by PICM.
    expect(dsl).toMatch(/Name \(PPRT, Package \(0x00\)/);
    expect(dsl).toMatch(/Name \(APRT, Package \(0x01\)\s*\{\s*Package \(0x04\)\s*\{\s*0x0003FFFF,\s*Zero,\s*Zero,\s*0x10\s*\}/);
    expect(dsl).toMatch(/If \(\\PICM\)\s*\{\s*Return \(APRT\)/);
  });

  it('the DSDT recompiles (iasl parses our AML back into valid ASL)', () => {
    const d = set.tables.get('DSDT')!;
    const dir = mkdtempSync(join(tmpdir(), 'bhyve-dsdt-'));
    tmpDirs.push(dir);
    writeFileSync(join(dir, 'DSDT.dat'), d.bytes);
    execFileSync('iasl', ['-d', 'DSDT.dat'], { cwd: dir, stdio: 'pipe' });
    const r = spawnSync('iasl', ['-p', join(dir, 'out'), join(dir, 'DSDT.dsl')], { cwd: dir, encoding: 'utf8' });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
  });
});
