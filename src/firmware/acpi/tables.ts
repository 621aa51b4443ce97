// ACPI tables as bhyve's acpi.c builds them (FADT revision 5.1, MADT, HPET,
// MCFG, FACS, RSDT/XSDT, RSDP revision 2), each a byte array whose pointers
// to other tables are left for a layout to fill: buildAcpiInMemory() places
// them at fixed guest addresses with their checksums, buildAcpiForFwCfg()
// packs them for QEMU's linker/loader (etc/table-loader), which patches the
// pointers and checksums inside the guest.

import { UserError } from '../../user-error.js';
import { ByteWriter, putU32 } from '../bytes.js';

export const ACPI_OEM_ID = 'BHYVE ';
export const ACPI_OEM_REVISION = 1;
/** What bhyve's basl writes as creator: "BASL", revision 0x20220504. */
export const ACPI_CREATOR_ID = 'BASL';
export const ACPI_CREATOR_REVISION = 0x20220504;
export const ACPI_HEADER_SIZE = 36;
export const ACPI_CHECKSUM_OFFSET = 9;

export const ADDRESS_LAPIC = 0xfee00000;
export const ADDRESS_IOAPIC = 0xfec00000;
export const ADDRESS_HPET = 0xfed00000;
/** bhyve's PCI_EMUL_ECFG_BASE (pci_emul.c): 3.5 GiB, 1 MiB per bus. */
export const PCI_ECFG_BASE = 0xe0000000;
export const PCI_ECFG_BUSES = 256;

/** bhyve's ACPI fixed hardware (acpi.h / pm.c): the tables describe the
 * device model, so they take its constants. */
export {
  BHYVE_ACPI_DISABLE, BHYVE_ACPI_ENABLE, IO_GPE0_BLK, IO_GPE0_LEN, IO_PMTMR, PM1A_CNT_ADDR, PM1A_EVT_ADDR,
  RESET_CONTROL_PORT as RESET_PORT, SCI_INT, SMI_CMD,
} from '../../devices/lpc/pm.js';
import {
  BHYVE_ACPI_DISABLE, BHYVE_ACPI_ENABLE, IO_GPE0_BLK, IO_GPE0_LEN, IO_PMTMR, PM1A_CNT_ADDR, PM1A_EVT_ADDR,
  RESET_CONTROL_PORT as RESET_PORT, SCI_INT, SMI_CMD,
} from '../../devices/lpc/pm.js';
export const RESET_VALUE = 0x06;

/** vhpet.c's capabilities: vendor 0x8086, legacy route, 64-bit counter, 8 timers, rev 1. */
export const BHYVE_HPET_CAPABILITIES = 0x8086a701;

export interface TablePointer {
  /** Offset of the pointer field inside this table. */
  offset: number;
  size: 4 | 8;
  /** Signature of the table pointed to. */
  target: string;
}

export interface AcpiTable {
  /** Signature; also the table's name for pointers ("RSD PTR " for the RSDP). */
  sig: string;
  bytes: Uint8Array;
  align: number;
  pointers: TablePointer[];
  /** [checksum byte offset, start, length] ranges to fix after pointers are set. */
  checksums: Array<[number, number, number]>;
}

function header(w: ByteWriter, sig: string, revision: number, oemTableId: string): void {
  w.fixed(sig, 4).u32(0).u8(revision).u8(0).fixed(ACPI_OEM_ID, 6).fixed(oemTableId, 8)
    .u32(ACPI_OEM_REVISION).fixed(ACPI_CREATOR_ID, 4).u32(ACPI_CREATOR_REVISION);
}

function finish(w: ByteWriter, sig: string, pointers: TablePointer[] = [], align = 16): AcpiTable {
  const bytes = w.toBytes();
  putU32(bytes, 4, bytes.length);
  return { sig, bytes, align, pointers, checksums: [[ACPI_CHECKSUM_OFFSET, 0, bytes.length]] };
}

export const ACPI_ADR_SPACE_SYSTEM_MEMORY = 0;
export const ACPI_ADR_SPACE_SYSTEM_IO = 1;
export const GAS_ACCESS_UNDEFINED = 0;
export const GAS_ACCESS_BYTE = 1;
export const GAS_ACCESS_WORD = 2;
export const GAS_ACCESS_DWORD = 3;

/** Generic Address Structure (12 bytes). */
function gas(w: ByteWriter, space: number, bitWidth: number, bitOffset: number, access: number, address: number): void {
  w.u8(space).u8(bitWidth).u8(bitOffset).u8(access).u64(address);
}

// FADT flags (ACPI 6.x table 5.10) and IA-PC boot architecture flags.
export const FADT_WBINVD = 1 << 0;
export const FADT_C1_SUPPORTED = 1 << 2;
export const FADT_SLEEP_BUTTON = 1 << 5;
export const FADT_32BIT_TIMER = 1 << 8;
export const FADT_RESET_REGISTER = 1 << 10;
export const FADT_HEADLESS = 1 << 12;
export const FADT_APIC_PHYSICAL = 1 << 19;
export const FADT_BOOT_NO_VGA = 1 << 2;
export const FADT_BOOT_NO_ASPM = 1 << 4;

/** Field offsets of the FADT (ACPI 6.x table 5.9), for tests and readers. */
export const FADT = {
  FIRMWARE_CTRL: 36, DSDT: 40, SCI_INT: 46, SMI_CMD: 48, ACPI_ENABLE: 52, ACPI_DISABLE: 53,
  PM1A_EVT_BLK: 56, PM1A_CNT_BLK: 64, PM_TMR_BLK: 76, GPE0_BLK: 80, PM1_EVT_LEN: 88, PM1_CNT_LEN: 89,
  PM_TMR_LEN: 91, GPE0_BLK_LEN: 92, CENTURY: 108, IAPC_BOOT_ARCH: 109, FLAGS: 112, RESET_REG: 116,
  RESET_VALUE: 128, MINOR_VERSION: 131, X_FIRMWARE_CTRL: 132, X_DSDT: 140, X_PM1A_EVT_BLK: 148,
  X_PM1A_CNT_BLK: 172, X_PM_TMR_BLK: 208, X_GPE0_BLK: 220, HYPERVISOR_ID: 268, LENGTH: 276,
} as const;

/** The FADT with bhyve's build_fadt() contents. bhyve writes revision 5.1
 * (268 bytes); we write revision 6.0 (276 bytes: the same fields plus a zero
 * hypervisor vendor identity) because acpica's disassembler reads that field
 * for any revision >= 5 and would otherwise report a truncated table. */
export function buildFadt(): AcpiTable {
  const w = new ByteWriter();
  header(w, 'FACP', 6, 'BVFACP  ');
  w.u32(0) // FIRMWARE_CTRL (pointer to FACS)
    .u32(0) // DSDT
    .u8(0) // reserved (INT_MODEL)
    .u8(0) // Preferred_PM_Profile: unspecified
    .u16(SCI_INT).u32(SMI_CMD).u8(BHYVE_ACPI_ENABLE).u8(BHYVE_ACPI_DISABLE)
    .u8(0) // S4BIOS_REQ
    .u8(0) // PSTATE_CNT
    .u32(PM1A_EVT_ADDR).u32(0).u32(PM1A_CNT_ADDR).u32(0)
    .u32(0) // PM2_CNT_BLK
    .u32(IO_PMTMR).u32(IO_GPE0_BLK).u32(0)
    .u8(4).u8(2).u8(0).u8(4) // PM1_EVT_LEN, PM1_CNT_LEN, PM2_CNT_LEN, PM_TMR_LEN
    .u8(IO_GPE0_LEN).u8(0).u8(0) // GPE0_BLK_LEN, GPE1_BLK_LEN, GPE1_BASE
    .u8(0) // CST_CNT
    .u16(0).u16(0) // P_LVL2_LAT, P_LVL3_LAT
    .u16(0).u16(0) // FLUSH_SIZE, FLUSH_STRIDE
    .u8(0).u8(0) // DUTY_OFFSET, DUTY_WIDTH
    .u8(0).u8(0).u8(0x32) // DAY_ALRM, MON_ALRM, CENTURY
    .u16(FADT_BOOT_NO_VGA | FADT_BOOT_NO_ASPM)
    .u8(0)
    .u32(FADT_WBINVD | FADT_C1_SUPPORTED | FADT_SLEEP_BUTTON | FADT_32BIT_TIMER | FADT_RESET_REGISTER |
      FADT_HEADLESS | FADT_APIC_PHYSICAL);
  gas(w, ACPI_ADR_SPACE_SYSTEM_IO, 8, 0, GAS_ACCESS_BYTE, RESET_PORT);
  w.u8(RESET_VALUE)
    .u16(0) // ARM_BOOT_ARCH
    .u8(0) // FADT minor version: 6.0
    .u64(0) // X_FIRMWARE_CTRL
    .u64(0); // X_DSDT
  gas(w, ACPI_ADR_SPACE_SYSTEM_IO, 32, 0, GAS_ACCESS_WORD, PM1A_EVT_ADDR);
  gas(w, 0, 0, 0, 0, 0); // X_PM1b_EVT_BLK
  gas(w, ACPI_ADR_SPACE_SYSTEM_IO, 16, 0, GAS_ACCESS_WORD, PM1A_CNT_ADDR);
  gas(w, 0, 0, 0, 0, 0); // X_PM1b_CNT_BLK
  gas(w, 0, 0, 0, 0, 0); // X_PM2_CNT_BLK
  gas(w, ACPI_ADR_SPACE_SYSTEM_IO, 32, 0, GAS_ACCESS_DWORD, IO_PMTMR);
  gas(w, ACPI_ADR_SPACE_SYSTEM_IO, IO_GPE0_LEN * 8, 0, GAS_ACCESS_BYTE, IO_GPE0_BLK);
  gas(w, 0, 0, 0, 0, 0); // X_GPE1_BLK
  gas(w, 0, 0, 0, 0, 0); // SLEEP_CONTROL_REG (none: not hardware-reduced)
  gas(w, 0, 0, 0, 0, 0); // SLEEP_STATUS_REG
  w.u64(0); // hypervisor vendor identity
  return finish(w, 'FACP', [
    { offset: FADT.FIRMWARE_CTRL, size: 4, target: 'FACS' },
    { offset: FADT.DSDT, size: 4, target: 'DSDT' },
    { offset: FADT.X_FIRMWARE_CTRL, size: 8, target: 'FACS' },
    { offset: FADT.X_DSDT, size: 8, target: 'DSDT' },
  ]);
}

/** FACS version 2, 64 bytes, 64-byte aligned; it has no checksum. */
export function buildFacs(): AcpiTable {
  const w = new ByteWriter();
  w.fixed('FACS', 4).u32(64).u32(0 /* hardware signature */).u32(0 /* waking vector */)
    .u32(0 /* global lock */).u32(0 /* flags */).u64(0 /* X waking vector */).u8(2 /* version */)
    .zeros(3).u32(0 /* OSPM flags */).zeros(24);
  return { sig: 'FACS', bytes: w.toBytes(), align: 64, pointers: [], checksums: [] };
}

export const MADT_TYPE_LOCAL_APIC = 0;
export const MADT_TYPE_IO_APIC = 1;
export const MADT_TYPE_INTERRUPT_OVERRIDE = 2;
export const MADT_TYPE_LOCAL_APIC_NMI = 4;
export const MADT_POLARITY_ACTIVE_HIGH = 1;
export const MADT_POLARITY_ACTIVE_LOW = 3;
export const MADT_TRIGGER_EDGE = 1 << 2;
export const MADT_TRIGGER_LEVEL = 3 << 2;

/** MADT revision 1 as bhyve's build_madt(): one enabled local APIC per vCPU
 * (processor and APIC IDs 0..n-1), the I/O APIC (ID 0, GSI base 0), IRQ0 ->
 * GSI 2 and the SCI (level, active-low), LINT1 as NMI on every CPU. */
export function buildMadt(ncpu: number): AcpiTable {
  if (ncpu < 1 || ncpu > 255) throw new UserError(`MADT: ${ncpu} vCPUs do not fit xAPIC IDs`);
  const w = new ByteWriter();
  header(w, 'APIC', 1, 'BVMADT  ');
  w.u32(ADDRESS_LAPIC).u32(1 /* PCAT_COMPAT */);
  for (let i = 0; i < ncpu; i++) w.u8(MADT_TYPE_LOCAL_APIC).u8(8).u8(i).u8(i).u32(1 /* enabled */);
  w.u8(MADT_TYPE_IO_APIC).u8(12).u8(0).u8(0).u32(ADDRESS_IOAPIC).u32(0);
  w.u8(MADT_TYPE_INTERRUPT_OVERRIDE).u8(10).u8(0).u8(0).u32(2).u16(MADT_POLARITY_ACTIVE_HIGH | MADT_TRIGGER_EDGE);
  w.u8(MADT_TYPE_INTERRUPT_OVERRIDE).u8(10).u8(0).u8(SCI_INT).u32(SCI_INT).u16(MADT_POLARITY_ACTIVE_LOW | MADT_TRIGGER_LEVEL);
  w.u8(MADT_TYPE_LOCAL_APIC_NMI).u8(6).u8(0xff).u16(MADT_POLARITY_ACTIVE_HIGH | MADT_TRIGGER_EDGE).u8(1);
  return finish(w, 'APIC');
}

/** HPET table revision 1: event timer block ID, base address, 4 KiB page protection. */
export function buildHpet(capabilities = BHYVE_HPET_CAPABILITIES): AcpiTable {
  const w = new ByteWriter();
  header(w, 'HPET', 1, 'BVHPET  ');
  w.u32(capabilities);
  gas(w, ACPI_ADR_SPACE_SYSTEM_MEMORY, 0, 0, GAS_ACCESS_UNDEFINED, ADDRESS_HPET);
  w.u8(0 /* HPET number */).u16(0 /* minimum tick */).u8(1 /* PAGE_PROTECT4 */);
  return finish(w, 'HPET');
}

/** MCFG revision 1: one allocation, segment 0, buses 0-255 at the ECAM base. */
export function buildMcfg(ecfgBase = PCI_ECFG_BASE, endBus = PCI_ECFG_BUSES - 1): AcpiTable {
  const w = new ByteWriter();
  header(w, 'MCFG', 1, 'BVMCFG  ');
  w.zeros(8).u64(ecfgBase).u16(0).u8(0).u8(endBus).u32(0);
  return finish(w, 'MCFG');
}

/** RSDT (32-bit entries) or XSDT (64-bit entries) pointing at `targets` in order. */
export function buildSdt(kind: 'RSDT' | 'XSDT', targets: readonly string[]): AcpiTable {
  const w = new ByteWriter();
  header(w, kind, 1, kind === 'RSDT' ? 'BVRSDT  ' : 'BVXSDT  ');
  const size: 4 | 8 = kind === 'RSDT' ? 4 : 8;
  const pointers: TablePointer[] = targets.map((t, i) => ({ offset: ACPI_HEADER_SIZE + size * i, size, target: t }));
  w.zeros(size * targets.length);
  return finish(w, kind, pointers);
}

export const RSDP_SIG = 'RSD PTR ';
export const RSDP_LENGTH = 36;

/** RSDP revision 2 (ACPI 2.0+), 36 bytes: checksum over the first 20 bytes at
 * offset 8, extended checksum over all 36 at offset 32. */
export function buildRsdp(): AcpiTable {
  const w = new ByteWriter();
  w.fixed(RSDP_SIG, 8).u8(0).fixed(ACPI_OEM_ID, 6).u8(2).u32(0 /* RSDT */).u32(RSDP_LENGTH)
    .u64(0 /* XSDT */).u8(0).zeros(3);
  return {
    sig: RSDP_SIG, bytes: w.toBytes(), align: 16,
    pointers: [{ offset: 16, size: 4, target: 'RSDT' }, { offset: 24, size: 8, target: 'XSDT' }],
    checksums: [[8, 0, 20], [32, 0, RSDP_LENGTH]],
  };
}

/** A DSDT from AML body bytes (revision 2: 64-bit integers). */
export function buildDsdtTable(body: Uint8Array): AcpiTable {
  const w = new ByteWriter();
  header(w, 'DSDT', 2, 'BVDSDT  ');
  w.bytes(body);
  return finish(w, 'DSDT');
}
