// The ACPI tables that describe guest NUMA domains (firmware/numa.ts):
// SRAT revision 3 (ACPI 6.x 5.2.16) with a Processor Local APIC Affinity
// structure for every vCPU (APIC ID = vCPU number, as the MADT lists them)
// and a Memory Affinity structure for every RAM range of a domain; SLIT
// revision 1 (5.2.17), distance 10 within a domain and 20 between two.

import { ByteWriter, putU32 } from '../bytes.js';
import type { NumaLayout } from '../numa.js';
import { ACPI_CHECKSUM_OFFSET, ACPI_CREATOR_ID, ACPI_CREATOR_REVISION, ACPI_OEM_ID, ACPI_OEM_REVISION, type AcpiTable } from './tables.js';

export const SRAT_TYPE_CPU_AFFINITY = 0;
export const SRAT_TYPE_MEMORY_AFFINITY = 1;
export const SRAT_CPU_ENABLED = 1;
export const SRAT_MEM_ENABLED = 1;
export const SLIT_LOCAL = 10;
export const SLIT_REMOTE = 20;

function table(sig: string, revision: number, oemTableId: string, body: (w: ByteWriter) => void): AcpiTable {
  const w = new ByteWriter();
  w.fixed(sig, 4).u32(0).u8(revision).u8(0).fixed(ACPI_OEM_ID, 6).fixed(oemTableId, 8)
    .u32(ACPI_OEM_REVISION).fixed(ACPI_CREATOR_ID, 4).u32(ACPI_CREATOR_REVISION);
  body(w);
  const bytes = w.toBytes();
  putU32(bytes, 4, bytes.length);
  return { sig, bytes, align: 16, pointers: [], checksums: [[ACPI_CHECKSUM_OFFSET, 0, bytes.length]] };
}

/** The SRAT of `numa` for `ncpu` vCPUs. */
export function buildSrat(numa: NumaLayout, ncpu: number): AcpiTable {
  const domainOf = new Map<number, number>();
  for (const d of numa.domains) for (const c of d.cpus) domainOf.set(c, d.id);
  return table('SRAT', 3, 'BVSRAT  ', (w) => {
    w.u32(1 /* reserved, 1 for compatibility */).zeros(8);
    for (let cpu = 0; cpu < ncpu; cpu++) {
      const dom = domainOf.get(cpu);
      if (dom === undefined) continue;
      w.u8(SRAT_TYPE_CPU_AFFINITY).u8(16).u8(dom & 0xff).u8(cpu).u32(SRAT_CPU_ENABLED)
        .u8(0 /* SAPIC EID */).u8((dom >>> 8) & 0xff).u8((dom >>> 16) & 0xff).u8((dom >>> 24) & 0xff).u32(0 /* clock domain */);
    }
    for (const m of numa.memory) {
      w.u8(SRAT_TYPE_MEMORY_AFFINITY).u8(40).u32(m.domain).u16(0).u64(m.base).u64(m.length).u32(0)
        .u32(SRAT_MEM_ENABLED).zeros(8);
    }
  });
}

/** The SLIT for the domains of `numa`. */
export function buildSlit(numa: NumaLayout): AcpiTable {
  const n = numa.domains.length;
  return table('SLIT', 1, 'BVSLIT  ', (w) => {
    w.u64(n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) w.u8(i === j ? SLIT_LOCAL : SLIT_REMOTE);
  });
}
