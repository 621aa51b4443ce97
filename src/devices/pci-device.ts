// One record per PCI emulation, as bhyve's struct pci_devemu is: exported
// from the device's own file and listed once in devices/registry.ts (bhyve's
// PCI_EMUL_SET). Everything else about a device is read from its record:
// `-s help`, the `-s slot,NAME,conf` parser, start-time checks, the
// bhyve_config(5) keys it documents (config/bhyve-options.ts configKeys())
// and its construction on the bus (devices/platform.ts).
//
// The record is what the main thread's option parsing and checks read; the
// emulation itself (bhyve's pe_init and everything it runs) is the record's
// model, in a module of its own that the record names through a loader
// (`model: () => import('./nvme.js').then((m) => m.nvmeModel)`): the
// record's file must not import it. The bundles (scripts/bundle.mjs) turn
// each such import() into a module that runs only when first loaded, so a
// run loads the models of the devices its configuration names, on vCPU 0's
// thread, before the platform is built (registry.ts loadPciModels), and
// none on the main thread.
//
// A record without `model` is a device bhyve has and this project has not
// built yet: it parses and validates like bhyve, `-s help` marks it, and
// bhyve refuses to start with it ("not supported yet").

import type { ConfigTree } from '../config/tree.js';
import type { DmaSpaces } from './iommu/dma-space.js';
import type { Device, DeviceContext } from './device.js';
import type { LpcBridge, findHostIsaBridge } from './pci/lpc-bridge.js';
import type { PamShadow } from './pci/pam.js';
import type { PciBus } from './pci/pci-bus.js';
import type { PciFunction } from './pci/pci-function.js';
import type { PirqRouter } from './pci/pirq.js';

/** Parses the conf of `-s slot,NAME,conf` into the slot's node
 * (bhyve's pe_legacy_config; without one, the generic name=value list). */
export type LegacyParser = (tree: ConfigTree, node: string, conf: string | undefined) => void;

/** A bhyve_config(5) variable a device reads, relative to its pci.B.S.F
 * node ("path", "port.N.path"). */
export interface DeviceKey {
  key: string;
  default?: string;
  /** One line, for configKeys() and bhyve_config(5). */
  description: string;
}

/** Where a function sits. */
export interface PciSlot {
  bus: number;
  slot: number;
  func: number;
  /** "pci.B.S.F" */
  node: string;
  /** "B:S:F", as bhyve's messages print it */
  where: string;
}

/** The chipset pieces some devices hook into while the platform is built. */
export interface Chipset {
  bus: PciBus;
  pirq: PirqRouter;
  /** lpc.fwcfg=qemu: QEMU's i440FX personality. */
  qemu: boolean;
  /** Shadowing of the legacy BIOS window (qemu with a memory map). */
  pam?: PamShadow;
  /** virtio_msix (-W sets it false). */
  msix: boolean;
  /** Host ISA bridge lookup for lpc.pcireg.*=host (tests inject one). */
  hostIsaBridge?: typeof findHostIsaBridge;
  /** The LPC bridge, once created (only one is allowed). */
  lpc?: LpcBridge;
  /** Each function's DMA space (iommu/dma-space.ts): identity, or
   * translated by the virtio-iommu for functions with `iommu=true`.
   * Absent in unit tests that build a chipset by hand (identity). */
  dma?: DmaSpaces;
}

export interface PciDeviceRecord {
  /** bhyve's pe_emu: the name in `-s` and in pci.B.S.F.device. */
  name: string;
  /** bhyve's pe_alias: `-s NAME` stores this name instead (a legacy name);
   * a config naming NAME itself is refused. */
  alias?: string;
  description: string;
  legacyConfig?: LegacyParser;
  /** The keys of its node it reads, with defaults and one-line docs. */
  keys: readonly DeviceKey[];
  /** Takes `bootindex` (bhyve's pci_emul_add_boot_device). */
  bootable?: boolean;
  /** Start-time checks of its node, before the VM exists; throws UserError. */
  validate?(config: ConfigTree, slot: PciSlot): void;
  /** Loads the emulation (see above); absent: not built yet. */
  model?: () => Promise<PciDeviceModel>;
}

/** A device's emulation, loaded on demand from its record. */
export interface PciDeviceModel {
  /** Builds the function (bhyve's pe_init), on the device thread. */
  create(ctx: DeviceContext, slot: PciSlot, chipset: Chipset): PciFunction & Device;
}
