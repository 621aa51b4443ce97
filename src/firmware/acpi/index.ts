// ACPI for a guest: the platform description (from the machine as built), the
// table set, and its two deliveries:
//
//  - buildAcpiInMemory(): tables placed in low memory from bhyve's
//    BHYVE_ACPI_BASE (0xf2400), RSDP first, pointers and checksums final,
//    for guests booted without fw_cfg (bhyve's acpi_tables_in_memory);
//  - buildAcpiForFwCfg(): QEMU's fw_cfg files etc/acpi/tables,
//    etc/acpi/rsdp and etc/table-loader (the BIOS linker/loader script of
//    hw/acpi/bios-linker-loader.c), which SeaBIOS and OVMF execute to
//    allocate the blobs, patch the pointers and compute the checksums.

import { UserError } from '../../user-error.js';
import { ByteWriter, fixChecksum, putU32, putU64 } from '../bytes.js';
import type { BuiltMachine } from '../built-machine.js';
import type { NumaLayout } from '../numa.js';
import { buildSlit, buildSrat } from './numa-tables.js';
import { buildViot, type ViotTopology } from './viot.js';
import { buildDsdtAml, type DsdtOptions } from './dsdt.js';
import {
  type AcpiTable, BHYVE_HPET_CAPABILITIES, buildDsdtTable, buildFacs, buildFadt, buildHpet, buildMadt, buildMcfg,
  buildRsdp, buildSdt, PCI_ECFG_BASE, RSDP_SIG,
} from './tables.js';

export { buildDsdtAml } from './dsdt.js';
export type { DsdtOptions } from './dsdt.js';

/** bhyve's BHYVE_ACPI_BASE (acpi.h). */
export const BHYVE_ACPI_BASE = 0xf2400;
/** The tables must end below 1 MiB (the BIOS area). */
export const BHYVE_ACPI_LIMIT = 0x100000;

export interface AcpiPlatform extends DsdtOptions {
  ncpu: number;
  hpetCapabilities: number;
  /** Guest NUMA domains (-n): add the SRAT and SLIT. */
  numa?: NumaLayout;
  /** A virtio-iommu: add the VIOT. */
  viot?: ViotTopology;
}

/**
 * What the ACPI tables describe, from the machine as built: its vCPUs, bus
 * 0's windows, the INTx pins in use on bus 0, the LPC bridge and its UARTs
 * (bhyve's lpc_init enables all four), fw_cfg.
 */
export function acpiPlatform(m: BuiltMachine): AcpiPlatform {
  return {
    ncpu: m.ncpu,
    hpetCapabilities: BHYVE_HPET_CAPABILITIES,
    bus0: m.pciBuses.find((b) => b.bus === 0),
    ecfgBase: PCI_ECFG_BASE,
    lpc: m.lpc,
    uarts: m.lpc ? m.uarts : [],
    fwcfg: m.fwcfg,
    atkbdc: true,
    intx: m.intx.filter((r) => r.bus === 0),
    pirqLinks: m.lpc !== undefined,
    numa: m.numa,
    s3: m.s3 === true,
    viot: m.iommu ? { iommu: m.iommu.bdf, endpoints: m.iommu.endpoints } : undefined,
  };
}

export interface AcpiTableSet {
  rsdp: AcpiTable;
  /** Every table but the RSDP, keyed by signature. */
  tables: Map<string, AcpiTable>;
}

/** The tables bhyve builds, FADT first in the XSDT as UEFI asks. */
export function buildAcpiTables(p: AcpiPlatform): AcpiTableSet {
  const sdtTargets = ['FACP', 'APIC', 'HPET', 'MCFG', ...(p.numa ? ['SRAT', 'SLIT'] : []), ...(p.viot ? ['VIOT'] : [])];
  const list: AcpiTable[] = [
    ...(p.numa ? [buildSrat(p.numa, p.ncpu), buildSlit(p.numa)] : []),
    ...(p.viot ? [buildViot(p.viot)] : []),
    buildFacs(),
    buildDsdtTable(buildDsdtAml(p)),
    buildFadt(),
    buildMadt(p.ncpu),
    buildHpet(p.hpetCapabilities),
    buildMcfg(p.ecfgBase),
    buildSdt('RSDT', sdtTargets),
    buildSdt('XSDT', sdtTargets),
  ];
  return { rsdp: buildRsdp(), tables: new Map(list.map((t) => [t.sig, t])) };
}

function applyChecksums(t: AcpiTable, bytes: Uint8Array, base: number): void {
  for (const [at, start, len] of t.checksums) fixChecksum(bytes, base + at, base + start, len);
}

export interface PlacedTable {
  sig: string;
  address: number;
  length: number;
}

export interface AcpiInMemory {
  /** Guest physical address of `image` (and of the RSDP). */
  base: number;
  image: Uint8Array;
  placed: PlacedTable[];
}

/**
 * Lays the tables out from `base` (RSDP, RSDT, XSDT, FADT, MADT, HPET, MCFG,
 * FACS, DSDT: bhyve's order), 16-byte aligned (FACS 64), patches every
 * pointer with its absolute address and computes every checksum. The image
 * is written to guest memory at `base` by the caller (e.g.
 * `mem.write(r.base, r.image)`).
 */
export function buildAcpiInMemory(p: AcpiPlatform, base = BHYVE_ACPI_BASE, limit = BHYVE_ACPI_LIMIT): AcpiInMemory {
  const set = buildAcpiTables(p);
  const order = [set.rsdp, ...['RSDT', 'XSDT', 'FACP', 'APIC', 'HPET', 'MCFG', 'SRAT', 'SLIT', 'VIOT', 'FACS', 'DSDT']
    .filter((s) => set.tables.has(s)).map((s) => set.tables.get(s)!)];
  const addr = new Map<string, number>();
  const offs: number[] = [];
  let off = 0;
  for (const t of order) {
    const a = Math.max(t.align, 16);
    off = Math.ceil((base + off) / a) * a - base;
    offs.push(off);
    addr.set(t.sig, base + off);
    off += t.bytes.length;
  }
  if (base + off > limit) throw new UserError(`ACPI tables (${off} bytes) do not fit between 0x${base.toString(16)} and 0x${limit.toString(16)}`);
  const image = new Uint8Array(off);
  order.forEach((t, i) => {
    image.set(t.bytes, offs[i]);
    for (const ptr of t.pointers) {
      const target = addr.get(ptr.target);
      if (target === undefined) throw new Error(`ACPI ${t.sig} points at missing ${ptr.target}`);
      if (ptr.size === 4) putU32(image, offs[i] + ptr.offset, target);
      else putU64(image, offs[i] + ptr.offset, target);
    }
  });
  order.forEach((t, i) => applyChecksums(t, image, offs[i]));
  return { base, image, placed: order.map((t, i) => ({ sig: t.sig, address: base + offs[i], length: t.bytes.length })) };
}

// ---- QEMU linker/loader ----

export const LOADER_FILE_NAME_SIZE = 56;
export const LOADER_ENTRY_SIZE = 128;
export const LOADER_ALLOCATE = 1;
export const LOADER_ADD_POINTER = 2;
export const LOADER_ADD_CHECKSUM = 3;
export const LOADER_ZONE_HIGH = 1;
export const LOADER_ZONE_FSEG = 2;

export const ACPI_TABLES_FILE = 'etc/acpi/tables';
export const ACPI_RSDP_FILE = 'etc/acpi/rsdp';
export const TABLE_LOADER_FILE = 'etc/table-loader';

export type LoaderCommand =
  | { cmd: 'allocate'; file: string; align: number; zone: number }
  | { cmd: 'add-pointer'; dest: string; src: string; offset: number; size: number }
  | { cmd: 'add-checksum'; file: string; offset: number; start: number; length: number };

export function encodeLoader(cmds: readonly LoaderCommand[]): Uint8Array {
  const w = new ByteWriter();
  for (const c of cmds) {
    const start = w.length;
    switch (c.cmd) {
      case 'allocate':
        w.u32(LOADER_ALLOCATE).fixed(c.file, LOADER_FILE_NAME_SIZE, 0).u32(c.align).u8(c.zone);
        break;
      case 'add-pointer':
        w.u32(LOADER_ADD_POINTER).fixed(c.dest, LOADER_FILE_NAME_SIZE, 0).fixed(c.src, LOADER_FILE_NAME_SIZE, 0)
          .u32(c.offset).u8(c.size);
        break;
      case 'add-checksum':
        w.u32(LOADER_ADD_CHECKSUM).fixed(c.file, LOADER_FILE_NAME_SIZE, 0).u32(c.offset).u32(c.start).u32(c.length);
        break;
    }
    w.zeros(LOADER_ENTRY_SIZE - (w.length - start));
  }
  return w.toBytes();
}

export function decodeLoader(bytes: Uint8Array): LoaderCommand[] {
  const out: LoaderCommand[] = [];
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const str = (off: number): string => {
    let s = '';
    for (let i = off; i < off + LOADER_FILE_NAME_SIZE && bytes[i] !== 0; i++) s += String.fromCharCode(bytes[i]);
    return s;
  };
  for (let e = 0; e + LOADER_ENTRY_SIZE <= bytes.length; e += LOADER_ENTRY_SIZE) {
    const cmd = dv.getUint32(e, true);
    const b = e + 4;
    if (cmd === LOADER_ALLOCATE) out.push({ cmd: 'allocate', file: str(b), align: dv.getUint32(b + 56, true), zone: bytes[b + 60] });
    else if (cmd === LOADER_ADD_POINTER) out.push({ cmd: 'add-pointer', dest: str(b), src: str(b + 56), offset: dv.getUint32(b + 112, true), size: bytes[b + 116] });
    else if (cmd === LOADER_ADD_CHECKSUM) out.push({ cmd: 'add-checksum', file: str(b), offset: dv.getUint32(b + 56, true), start: dv.getUint32(b + 60, true), length: dv.getUint32(b + 64, true) });
  }
  return out;
}

export interface AcpiForFwCfg {
  /** etc/acpi/tables: FACS, DSDT, FADT, MADT, HPET, MCFG, RSDT, XSDT. */
  tables: Uint8Array;
  /** etc/acpi/rsdp */
  rsdp: Uint8Array;
  /** etc/table-loader */
  loader: Uint8Array;
  /** Offset of each table inside `tables`. */
  offsets: Map<string, number>;
}

/**
 * Packs the tables for QEMU's fw_cfg. Pointer fields hold the target's
 * offset inside etc/acpi/tables (ADD_POINTER adds the blob's address);
 * checksum bytes are 0, as QEMU leaves them (OVMF's loader stores the
 * checksum of the range including that byte, so it must start at 0).
 * The RSDP goes to the F-segment, the tables to high memory.
 */
export function buildAcpiForFwCfg(p: AcpiPlatform): AcpiForFwCfg {
  const set = buildAcpiTables(p);
  const order = ['FACS', 'DSDT', 'FACP', 'APIC', 'HPET', 'MCFG', 'SRAT', 'SLIT', 'VIOT', 'RSDT', 'XSDT']
    .filter((s) => set.tables.has(s)).map((s) => set.tables.get(s)!);
  const offsets = new Map<string, number>();
  let off = 0;
  for (const t of order) {
    off = Math.ceil(off / t.align) * t.align;
    offsets.set(t.sig, off);
    off += t.bytes.length;
  }
  const tables = new Uint8Array(off);
  const cmds: LoaderCommand[] = [
    { cmd: 'allocate', file: ACPI_RSDP_FILE, align: 16, zone: LOADER_ZONE_FSEG },
    { cmd: 'allocate', file: ACPI_TABLES_FILE, align: 64, zone: LOADER_ZONE_HIGH },
  ];
  const checks: LoaderCommand[] = [];
  const place = (t: AcpiTable, blob: Uint8Array, file: string, base: number): void => {
    blob.set(t.bytes, base);
    for (const ptr of t.pointers) {
      const target = offsets.get(ptr.target);
      if (target === undefined) throw new Error(`ACPI ${t.sig} points at missing ${ptr.target}`);
      if (ptr.size === 4) putU32(blob, base + ptr.offset, target);
      else putU64(blob, base + ptr.offset, target);
      cmds.push({ cmd: 'add-pointer', dest: file, src: ACPI_TABLES_FILE, offset: base + ptr.offset, size: ptr.size });
    }
    for (const [at, start, len] of t.checksums) {
      blob[base + at] = 0;
      checks.push({ cmd: 'add-checksum', file, offset: base + at, start: base + start, length: len });
    }
  };
  for (const t of order) place(t, tables, ACPI_TABLES_FILE, offsets.get(t.sig)!);
  const rsdp = new Uint8Array(set.rsdp.bytes.length);
  place(set.rsdp, rsdp, ACPI_RSDP_FILE, 0);
  // Checksums last: they must see the patched pointers.
  return { tables, rsdp, loader: encodeLoader([...cmds, ...checks]), offsets };
}

/** The three fw_cfg files for a platform. */
export function acpiFwCfgFiles(p: AcpiPlatform): Array<{ name: string; data: Uint8Array }> {
  const a = buildAcpiForFwCfg(p);
  return [
    { name: ACPI_TABLES_FILE, data: a.tables },
    { name: ACPI_RSDP_FILE, data: a.rsdp },
    { name: TABLE_LOADER_FILE, data: a.loader },
  ];
}

export { RSDP_SIG };
