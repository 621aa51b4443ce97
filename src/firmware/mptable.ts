// The Intel MultiProcessor Specification 1.4 table bhyve's mptbl.c writes
// at 0xf0000: the floating pointer ("_MP_"), then the configuration table
// ("PCMP", OEM "BHyVe   ", product "Hypervisor  ") with one processor
// entry per vCPU (APIC ID = vCPU number, CPU 0 the BSP), the PCI (0) and
// ISA (1) buses, the I/O APIC (ID 0 at 0xfec00000), I/O interrupt entries
// for ISA pins 0-15 (pin 0 ExtINT, IRQ0 on pin 2, the SCI level and active
// low, the rest identity mapped) plus one per routed PCI INTx pin, and
// LINT0 ExtINT / LINT1 NMI on every local APIC. Skipped with
// x86.mptable=false (-Y).

import { UserError } from '../user-error.js';
import { ConfigTree } from '../config/tree.js';
import { ByteWriter, fixChecksum, putU16 } from './bytes.js';
import type { IntxRoute } from './built-machine.js';

export const MPTABLE_BASE = 0xf0000;
export const MPTABLE_MAX_LENGTH = 65536 + 16;
const LAPIC_PADDR = 0xfee00000;
const LAPIC_VERSION = 16;
const IOAPIC_PADDR = 0xfec00000;
const IOAPIC_VERSION = 0x11;
const MP_SPECREV = 4;
const SCI_INT = 9;
/** bhyve's fixed CPU signature (family 6, model 26, stepping 5) and feature flags. */
const MPEP_SIG = (6 << 8) | (26 << 4) | 5;
const MPEP_FEATURES = 0xbfebfbff;

export const MPCT_ENTRY_PROCESSOR = 0;
export const MPCT_ENTRY_BUS = 1;
export const MPCT_ENTRY_IOAPIC = 2;
export const MPCT_ENTRY_INT = 3;
export const MPCT_ENTRY_LOCAL_INT = 4;
export const INTENTRY_TYPE_INT = 0;
export const INTENTRY_TYPE_NMI = 1;
export const INTENTRY_TYPE_EXTINT = 3;
const INTENTRY_FLAGS_POLARITY_ACTIVELO = 0x3;
const INTENTRY_FLAGS_TRIGGER_LEVEL = 0xc;

export interface MpTableOptions {
  ncpu: number;
  intx?: readonly IntxRoute[];
  /** Buses that hold functions: the MP table can describe bus 0 only. */
  pciBuses?: readonly number[];
}

/** bhyve's mptable_build refuses a PCI hierarchy other than bus 0. */
export class MpTableError extends UserError { override readonly name: string = 'MpTableError'; }

/** True unless x86.mptable is false. */
export function mptableEnabled(config: ConfigTree): boolean {
  return config.getBool('x86.mptable', true);
}

/** Floating pointer (16 bytes) followed by the configuration table, for `base`. */
export function buildMpTable(o: MpTableOptions, base = MPTABLE_BASE): Uint8Array {
  if (o.ncpu < 1 || o.ncpu > 255) throw new UserError(`MP table: ${o.ncpu} vCPUs do not fit APIC IDs`);
  if ((o.pciBuses ?? []).some((b) => b !== 0)) {
    throw new MpTableError('MPtable is incompatible with multiple PCI hierarchies; MPtable generation can be disabled by passing the -Y option to bhyve(8)');
  }
  const fp = new ByteWriter();
  fp.fixed('_MP_', 4).u32(base + 16).u8(1).u8(MP_SPECREV).u8(0).zeros(5);
  const fpb = fp.toBytes();
  fixChecksum(fpb, 10, 0, 16);

  const w = new ByteWriter();
  w.fixed('PCMP', 4).u16(0 /* base table length */).u8(MP_SPECREV).u8(0 /* checksum */)
    .fixed('BHyVe   ', 8).fixed('Hypervisor  ', 12).u32(0 /* OEM table */).u16(0 /* OEM size */)
    .u16(0 /* entry count */).u32(LAPIC_PADDR).u16(0 /* extended length */).u8(0).u8(0);
  let entries = 0;
  for (let i = 0; i < o.ncpu; i++, entries++) {
    w.u8(MPCT_ENTRY_PROCESSOR).u8(i).u8(LAPIC_VERSION).u8(1 | (i === 0 ? 2 : 0)).u32(MPEP_SIG).u32(MPEP_FEATURES).zeros(8);
  }
  w.u8(MPCT_ENTRY_BUS).u8(0).fixed('PCI   ', 6); entries++;
  w.u8(MPCT_ENTRY_BUS).u8(1).fixed('ISA   ', 6); entries++;
  w.u8(MPCT_ENTRY_IOAPIC).u8(0).u8(IOAPIC_VERSION).u8(1 /* enabled */).u32(IOAPIC_PADDR); entries++;
  for (let pin = 0; pin < 16; pin++, entries++) {
    let type = INTENTRY_TYPE_INT;
    let flags = 0;
    let srcIrq = pin;
    if (pin === 0) { type = INTENTRY_TYPE_EXTINT; srcIrq = 0; }
    else if (pin === 2) srcIrq = 0;
    else if (pin === SCI_INT) flags = INTENTRY_FLAGS_POLARITY_ACTIVELO | INTENTRY_FLAGS_TRIGGER_LEVEL;
    w.u8(MPCT_ENTRY_INT).u8(type).u16(flags).u8(1 /* ISA */).u8(srcIrq).u8(0 /* I/O APIC ID */).u8(pin);
  }
  for (const r of o.intx ?? []) {
    // Flags 0: PCI's conforming polarity and trigger (level, active low).
    w.u8(MPCT_ENTRY_INT).u8(INTENTRY_TYPE_INT).u16(0).u8(r.bus).u8((r.slot << 2) | (r.pin - 1)).u8(0).u8(r.ioapicIrq);
    entries++;
  }
  w.u8(MPCT_ENTRY_LOCAL_INT).u8(INTENTRY_TYPE_EXTINT).u16(0).u8(0).u8(0).u8(0xff).u8(0); entries++;
  w.u8(MPCT_ENTRY_LOCAL_INT).u8(INTENTRY_TYPE_NMI).u16(0).u8(0).u8(0).u8(0xff).u8(1); entries++;
  const ct = w.toBytes();
  putU16(ct, 4, ct.length);
  putU16(ct, 34, entries);
  fixChecksum(ct, 7, 0, ct.length);

  const out = new Uint8Array(16 + ct.length);
  out.set(fpb, 0);
  out.set(ct, 16);
  if (out.length > MPTABLE_MAX_LENGTH) throw new UserError('MP table too large');
  return out;
}
