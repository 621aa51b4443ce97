// VIOT, the Virtual I/O Translation table (ACPI 6.5, 5.2.32; the table
// Linux's drivers/acpi/viot.c and QEMU's build_viot use): which PCI
// endpoints a virtio-iommu translates. One virtio-pci IOMMU node names the
// IOMMU's function; one PCI range node per run of consecutive requester
// ids behind it points at that node, with endpoint ids equal to the
// requester ids (endpoint_start = bdf_start), as the device expects.

import { ByteWriter, putU32 } from '../bytes.js';
import { ACPI_CHECKSUM_OFFSET, ACPI_CREATOR_ID, ACPI_CREATOR_REVISION, ACPI_OEM_ID, ACPI_OEM_REVISION, type AcpiTable } from './tables.js';

export const VIOT_NODE_PCI_RANGE = 1;
export const VIOT_NODE_MMIO = 2;
export const VIOT_NODE_VIRTIO_IOMMU_PCI = 3;
export const VIOT_NODE_VIRTIO_IOMMU_MMIO = 4;
/** Header (36) + node_count, node_offset, reserved[8]. */
export const VIOT_NODES_OFFSET = 48;
export const VIOT_PCI_RANGE_SIZE = 24;
export const VIOT_VIRTIO_PCI_SIZE = 16;

export interface ViotTopology {
  /** Requester id (bus << 8 | devfn) of the virtio-iommu, on segment 0. */
  iommu: number;
  /** Requester ids behind it. */
  endpoints: readonly number[];
}

/** Consecutive requester ids folded into [first, last] runs. */
export function endpointRuns(endpoints: readonly number[]): Array<[number, number]> {
  const sorted = [...new Set(endpoints)].sort((a, b) => a - b);
  const runs: Array<[number, number]> = [];
  for (const e of sorted) {
    const last = runs[runs.length - 1];
    if (last && last[1] + 1 === e) last[1] = e;
    else runs.push([e, e]);
  }
  return runs;
}

export function buildViot(t: ViotTopology): AcpiTable {
  const runs = endpointRuns(t.endpoints);
  const w = new ByteWriter();
  w.fixed('VIOT', 4).u32(0).u8(0).u8(0).fixed(ACPI_OEM_ID, 6).fixed('BVVIOT  ', 8)
    .u32(ACPI_OEM_REVISION).fixed(ACPI_CREATOR_ID, 4).u32(ACPI_CREATOR_REVISION);
  w.u16(runs.length + 1).u16(VIOT_NODES_OFFSET).zeros(8);
  // The IOMMU node first, at VIOT_NODES_OFFSET: the ranges' output node.
  w.u8(VIOT_NODE_VIRTIO_IOMMU_PCI).u8(0).u16(VIOT_VIRTIO_PCI_SIZE).u16(0 /* segment */).u16(t.iommu).zeros(8);
  for (const [first, last] of runs) {
    w.u8(VIOT_NODE_PCI_RANGE).u8(0).u16(VIOT_PCI_RANGE_SIZE)
      .u32(first /* endpoint_start */).u16(0).u16(0 /* segments */).u16(first).u16(last)
      .u16(VIOT_NODES_OFFSET /* output node */).zeros(6);
  }
  const bytes = w.toBytes();
  putU32(bytes, 4, bytes.length);
  return { sig: 'VIOT', bytes, align: 16, pointers: [], checksums: [[ACPI_CHECKSUM_OFFSET, 0, bytes.length]] };
}
