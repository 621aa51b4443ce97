// Entry points for the vmm core: what firmware tables a guest gets, from
// the config tree, the memory layout and the machine as built (after the
// platform created its devices and routed INTx, as bhyverun.c builds them
// after init_pci):
//
//   buildFirmwareInMemory(config, layout, machine) -> regions to write into
//     guest RAM before the first vCPU runs (bhyve's mptable_build,
//     smbios_build and acpi_build with acpi_tables_in_memory).
//   buildFwCfgFiles(config, layout, machine, userFiles) -> the named fw_cfg
//     files for lpc.fwcfg=qemu (etc/e820, bootorder, etc/acpi/*,
//     etc/table-loader, etc/smbios/*, then the -f user files), to pass to
//     createFwCfg().

import { UserError } from '../user-error.js';
import { ConfigTree } from '../config/tree.js';
import type { MemoryLayout } from '../sys/memory-map.js';
import { acpiFwCfgFiles, acpiPlatform, buildAcpiInMemory } from './acpi/index.js';
import type { BuiltMachine } from './built-machine.js';
import { type E820Entry, encodeBootOrder, type FwCfgFile, standardFiles } from './fwcfg.js';
import { buildMpTable, MPTABLE_BASE, mptableEnabled } from './mptable.js';
import { SMBIOS_BASE, smbiosFwCfgFiles, smbiosImage, smbiosOptionsFromConfig, type SmbiosVersion, uuidBytesBe } from './smbios.js';

export { smbiosImage } from './smbios.js';

export type { BuiltMachine } from './built-machine.js';

export interface FirmwareRegion {
  name: string;
  gpa: number;
  bytes: Uint8Array;
}

export interface FirmwareOptions {
  /** Host name for the default SMBIOS UUID (defaults to os.hostname()). */
  hostname?: string;
  smbiosVersion?: SmbiosVersion;
  /** The in-memory SMBIOS image, when already built by smbiosImage() from
   * the same config, layout and host name (bhyve's main thread builds it
   * to check that it fits before it creates the VM; vCPU 0's thread then
   * writes it instead of building it again). */
  smbiosImage?: Uint8Array;
  /** Extra E820 reservations carved out of RAM (etc/e820 only). */
  e820Reserved?: readonly E820Entry[];
}

/** Regions bhyve writes below 1 MiB: MP table at 0xf0000 (unless -Y),
 * SMBIOS at 0xf1000, ACPI at 0xf2400 (when acpi_tables and
 * acpi_tables_in_memory). Throws when one would run into the next. */
export function buildFirmwareInMemory(config: ConfigTree, layout: MemoryLayout, machine: BuiltMachine, opts: FirmwareOptions = {}): FirmwareRegion[] {
  const regions: FirmwareRegion[] = [];
  if (mptableEnabled(config)) {
    regions.push({
      name: 'mptable', gpa: MPTABLE_BASE,
      bytes: buildMpTable({ ncpu: machine.ncpu, intx: machine.intx, pciBuses: machine.pciBuses.map((b) => b.bus) }),
    });
  }
  regions.push({ name: 'smbios', gpa: SMBIOS_BASE, bytes: opts.smbiosImage ?? smbiosImage(config, layout, opts.hostname, opts.smbiosVersion) });
  if (config.getBool('acpi_tables', true) && config.getBool('acpi_tables_in_memory', true)) {
    const acpi = buildAcpiInMemory(acpiPlatform(machine));
    regions.push({ name: 'acpi', gpa: acpi.base, bytes: acpi.image });
  }
  for (let i = 1; i < regions.length; i++) {
    const prev = regions[i - 1];
    if (prev.gpa + prev.bytes.length > regions[i].gpa) {
      throw new UserError(`${prev.name} (${prev.bytes.length} bytes at 0x${prev.gpa.toString(16)}) overlaps ${regions[i].name} at 0x${regions[i].gpa.toString(16)}; use fewer vCPUs or -Y`);
    }
  }
  return regions;
}

/** The fw_cfg files for lpc.fwcfg=qemu, user files (-f) last. */
export function buildFwCfgFiles(config: ConfigTree, layout: MemoryLayout, machine: BuiltMachine, userFiles: readonly FwCfgFile[] = [], opts: FirmwareOptions = {}): FwCfgFile[] {
  const files: FwCfgFile[] = [...standardFiles(layout, opts.e820Reserved)];
  const bootorder = encodeBootOrder(machine.bootOrder);
  if (bootorder) files.push({ name: 'bootorder', data: bootorder });
  if (config.getBool('acpi_tables', true)) files.push(...acpiFwCfgFiles(acpiPlatform(machine)));
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
