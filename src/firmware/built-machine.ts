// What the firmware tables describe: the machine as the device layer built
// it, not as the config tree asked for it. bhyve writes its MP table,
// SMBIOS and ACPI tables after init_pci has created every device, placed
// the BARs and routed INTx (bhyverun.c), and reads them from there
// (pci_walk_lintr, struct businfo, the LPC UART softcs); this is that
// information, gathered once by the platform (devices/platform.ts) and
// handed to both deliveries: the in-memory tables and the fw_cfg files.

/** [base, limit) */
import type { NumaLayout } from './numa.js';

export interface AddressRange {
  base: number;
  limit: number;
}

/** What one PCI bus decodes: bhyve's struct businfo windows (the BARs the
 * bus's functions got plus bhyve's slop), for the DSDT's _CRS. */
export interface PciBusResources {
  bus: number;
  io: AddressRange;
  mem32: AddressRange;
  mem64: AddressRange;
}

/** One INTx pin in use (bhyve's pci_walk_lintr callback arguments). */
export interface IntxRoute {
  bus: number;
  slot: number;
  /** 1..4 for INTA#..INTD# */
  pin: number;
  /** PIRQ router pin 1..8 (LNKA..LNKH) */
  pirqPin: number;
  /** I/O APIC input */
  ioapicIrq: number;
}

/** An ISA UART the LPC bridge decodes. */
export interface UartDesc {
  /** "COM1".."COM4" */
  name: string;
  port: number;
  irq: number;
  uid: number;
}

export interface BuiltMachine {
  ncpu: number;
  /** Buses that hold at least one function, in bus order. */
  pciBuses: readonly PciBusResources[];
  /** INTx pins in use, bus/slot/pin order. */
  intx: readonly IntxRoute[];
  /** The LPC bridge's slot/function on bus 0, when there is one. */
  lpc?: { slot: number; func: number };
  /** The UARTs behind the LPC bridge. */
  uarts: readonly UartDesc[];
  /** QEMU's fw_cfg device is present (lpc.fwcfg=qemu). */
  fwcfg: boolean;
  /** ACPI S3 is offered (acpi_s3). */
  s3?: boolean;
  /** Boot devices by bootindex, in boot order. */
  bootOrder: ReadonlyArray<{ bus: number; slot: number; func: number; name?: string }>;
  /** Guest NUMA domains (-n), when configured. */
  numa?: NumaLayout;
  /** The virtio-iommu's requester id and the endpoints behind it (the
   * ACPI VIOT table). */
  iommu?: { bdf: number; endpoints: readonly number[] };
}
