// Entry points for the vmm core: what firmware tables a guest gets, from
// the config tree and the memory layout.
//
//   buildFirmwareInMemory(config, layout) -> regions to write into guest RAM
//     before the first vCPU runs (bhyve's mptable_build, smbios_build and
//     acpi_build with acpi_tables_in_memory).
//   buildFwCfgFiles(config, layout, userFiles) -> the named fw_cfg files for
//     lpc.fwcfg=qemu (etc/e820, bootorder, etc/acpi/*, etc/table-loader,
//     etc/smbios/*, then the -f user files), to pass to createFwCfg().

import { ConfigTree } from '../config/tree.js';
import type { MemoryLayout } from '../vmm/memory-map.js';
import { acpiFwCfgFiles, acpiPlatformFromConfig, buildAcpiInMemory, type IntxRoute } from './acpi/index.js';
import { type E820Entry, encodeBootOrder, type FwCfgFile, standardFiles } from './fwcfg.js';
import { buildMpTable, MPTABLE_BASE, mptableEnabled } from './mptable.js';
import { buildSmbiosInMemory, SMBIOS_BASE, smbiosFwCfgFiles, smbiosOptionsFromConfig, type SmbiosVersion, uuidBytesBe } from './smbios.js';

export interface FirmwareRegion {
  name: string;
  gpa: number;
  bytes: Uint8Array;
}

export interface FirmwareOptions {
  /** vCPU count when it differs from the config (defaults to the topology). */
  ncpu?: number;
  /** Routed PCI INTx pins, once the PCI layer routes some. */
  intx?: readonly IntxRoute[];
  /** Host name for the default SMBIOS UUID (defaults to os.hostname()). */
  hostname?: string;
  smbiosVersion?: SmbiosVersion;
  /** Extra E820 reservations carved out of RAM (etc/e820 only). */
  e820Reserved?: readonly E820Entry[];
  /** Boot devices in boot order as the platform resolved them (bootorder);
   * defaults to the bootindex options of the config tree. */
  bootOrder?: ReadonlyArray<{ bus: number; slot: number; func: number }>;
}

/** Regions bhyve writes below 1 MiB: MP table at 0xf0000 (unless -Y),
 * SMBIOS at 0xf1000, ACPI at 0xf2400 (when acpi_tables and
 * acpi_tables_in_memory). Throws when one would run into the next. */
export function buildFirmwareInMemory(config: ConfigTree, layout: MemoryLayout, opts: FirmwareOptions = {}): FirmwareRegion[] {
  const regions: FirmwareRegion[] = [];
  const platform = acpiPlatformFromConfig(config, layout, { ncpu: opts.ncpu, intx: opts.intx });
  if (mptableEnabled(config)) {
    regions.push({ name: 'mptable', gpa: MPTABLE_BASE, bytes: buildMpTable({ ncpu: platform.ncpu, intx: platform.intx }) });
  }
  const smbios = buildSmbiosInMemory(smbiosOptionsFromConfig(config, layout, opts.hostname), opts.smbiosVersion ?? '2');
  regions.push({ name: 'smbios', gpa: SMBIOS_BASE, bytes: smbios.image });
  if (config.getBool('acpi_tables', true) && config.getBool('acpi_tables_in_memory', true)) {
    const acpi = buildAcpiInMemory(platform);
    regions.push({ name: 'acpi', gpa: acpi.base, bytes: acpi.image });
  }
  for (let i = 1; i < regions.length; i++) {
    const prev = regions[i - 1];
    if (prev.gpa + prev.bytes.length > regions[i].gpa) {
      throw new RangeError(`${prev.name} (${prev.bytes.length} bytes at 0x${prev.gpa.toString(16)}) overlaps ${regions[i].name} at 0x${regions[i].gpa.toString(16)}; use fewer vCPUs or -Y`);
    }
  }
  return regions;
}

/** The fw_cfg files for lpc.fwcfg=qemu, user files (-f) last. */
export function buildFwCfgFiles(config: ConfigTree, layout: MemoryLayout, userFiles: readonly FwCfgFile[] = [], opts: FirmwareOptions = {}): FwCfgFile[] {
  let files: FwCfgFile[] = [...standardFiles(config, layout, opts.e820Reserved)];
  if (opts.bootOrder) {
    files = files.filter((f) => f.name !== 'bootorder');
    const bootorder = encodeBootOrder(opts.bootOrder.filter((b) => b.bus === 0).map((b) => ({
      bootindex: 0, bus: b.bus, slot: b.slot, func: b.func, device: '', path: `/pci@i0cf8/pci@${b.slot.toString(16)},${b.func.toString(16)}`,
    })));
    if (bootorder) files.push({ name: 'bootorder', data: bootorder });
  }
  if (config.getBool('acpi_tables', true)) {
    files.push(...acpiFwCfgFiles(acpiPlatformFromConfig(config, layout, { ncpu: opts.ncpu, intx: opts.intx })));
  }
  files.push(...smbiosFwCfgFiles(smbiosOptionsFromConfig(config, layout, opts.hostname), opts.smbiosVersion ?? '2'));
  files.push(...userFiles);
  return files;
}

/** FW_CFG_UUID contents (RFC 4122 byte order) from `uuid`, or undefined. */
export function fwCfgUuid(config: ConfigTree): Uint8Array | undefined {
  const u = config.get('uuid');
  return u === undefined ? undefined : uuidBytesBe(u);
}

export { createFwCfg, FwCfg } from './fwcfg.js';
export type { FwCfgFile } from './fwcfg.js';
