// The device table: every PCI emulation (-s) and LPC device (-l) bhyve(8)
// knows. Each PCI emulation is one record exported from its own file
// (devices/pci-device.ts describes a record; bhyve's PCI_EMUL_SET); adding
// a device is that file plus one line in PCI_DEVICES below. Everything that
// needs to know the devices reads this table: `-s help`, the `-s` parser
// (config/bhyve-args.ts), start-time checks (validatePciDevices,
// validateForStart), configKeys() (config/bhyve-options.ts) and platform
// construction (devices/platform.ts). The table holds records only: each
// device's model (its emulation) loads on demand, loadPciModels() below,
// so this module and the records' files import no model (pci-device.ts).

import { ConfigError, ConfigTree } from '../config/tree.js';
import { pciNodes } from '../config/pci-nodes.js';
import { calcTopology } from '../config/topology.js';
import { parseMemorySize } from '../config/size.js';
import { numaDomains } from '../firmware/numa.js';
import type { DeviceKey, PciDeviceModel, PciDeviceRecord } from './pci-device.js';
import { amdHostbridgeDevice, hostbridgeDevice } from './pci/hostbridge-record.js';
import { lpcDevice } from './pci/lpc-bridge-record.js';
import { virtioBlkDevice } from './virtio/virtio-blk-record.js';
import { virtioNetDevice } from './virtio/virtio-net-record.js';
import { virtioRndDevice } from './virtio/virtio-rnd-record.js';
import { virtioConsoleDevice } from './virtio/virtio-console-record.js';
import { ahciCdDevice, ahciDevice, ahciHdDevice } from './ahci/ahci-record.js';
import { nvmeDevice } from './nvme/nvme-record.js';
import { e1000Device } from './net/e1000-record.js';
import { fbufDevice } from './display/fbuf-record.js';
import { uartDevice } from './pci-uart-record.js';
import { virtioInputDevice } from './virtio/virtio-input-record.js';
import { loadKeyboardLayout } from './display/kbd-layout.js';
import { hdaDevice } from './hda/hda-record.js';
import { passthruDevice } from './passthru/passthru-record.js';
import { virtioScsiDevice } from './virtio/virtio-scsi-record.js';
import { virtio9pDevice } from './virtio/virtio-9p-record.js';
import { xhciDevice } from './usb/xhci-record.js';
import { virtioIommuDevice } from './iommu/virtio-iommu-record.js';

export type { PciDeviceRecord } from './pci-device.js';

/** In the order `-s help` lists them. */
const PCI_DEVICES: PciDeviceRecord[] = [
  hostbridgeDevice,
  amdHostbridgeDevice,
  lpcDevice,
  virtioBlkDevice,
  ahciDevice,
  ahciHdDevice,
  ahciCdDevice,
  nvmeDevice,
  virtioScsiDevice,
  virtioNetDevice,
  e1000Device,
  passthruDevice,
  fbufDevice,
  xhciDevice,
  virtioRndDevice,
  virtioConsoleDevice,
  virtio9pDevice,
  virtioInputDevice,
  virtioIommuDevice,
  hdaDevice,
  uartDevice,
];

/** Adds a record at run time (tests; a device outside the tree). */
export function registerPciDevice(record: PciDeviceRecord): void {
  if (findPciDevice(record.name)) throw new Error(`PCI emulation ${record.name} is already registered`);
  PCI_DEVICES.push(record);
}

export function pciDevices(): readonly PciDeviceRecord[] {
  return PCI_DEVICES;
}

/** bhyve's pci_emul_finddev. */
export function findPciDevice(name: string): PciDeviceRecord | undefined {
  return PCI_DEVICES.find((d) => d.name === name);
}

/** Whether bhyve can start with this emulation: it has a model, or it is
 * a legacy name for one that does. */
export function isBuilt(record: PciDeviceRecord): boolean {
  if (record.model) return true;
  return record.alias !== undefined && findPciDevice(record.alias)?.model !== undefined;
}

const models = new Map<PciDeviceRecord, PciDeviceModel>();

/** Loads the model of every function the config names (each once), for
 * buildPlatform, which builds them synchronously. Unknown names and
 * records without a model are left for buildPlatform to refuse. */
export async function loadPciModels(config: ConfigTree): Promise<void> {
  const wanted = new Set<PciDeviceRecord>();
  for (const s of pciNodes(config)) {
    const record = findPciDevice(config.get(`${s.node}.device`) ?? '');
    if (record?.model) wanted.add(record);
  }
  await Promise.all([...wanted].map(loadPciModel));
}

/** Loads one record's model (tests: every record's, loadAllPciModels). */
export async function loadPciModel(record: PciDeviceRecord): Promise<PciDeviceModel | undefined> {
  if (!record.model) return undefined;
  let model = models.get(record);
  if (!model) models.set(record, model = await record.model());
  return model;
}

export async function loadAllPciModels(): Promise<void> {
  await Promise.all(PCI_DEVICES.map(loadPciModel));
}

/** The record's model once loadPciModels() (or loadPciModel) loaded it. */
export function loadedPciModel(record: PciDeviceRecord): PciDeviceModel | undefined {
  return models.get(record);
}

/** The names of the records whose model this thread has loaded. */
export function loadedPciModelNames(): string[] {
  return [...models.keys()].map((r) => r.name);
}

const NOT_BUILT = ' (not supported yet)';

/** `-s help`: bhyve's names, one a line, marked when not built. */
export function pciHelpText(): string {
  return PCI_DEVICES.map((d) => `${d.name}${isBuilt(d) ? '' : NOT_BUILT}\n`).join('');
}

/** The keys under pci.B.S.F that every function has. */
const COMMON_PCI_KEYS: readonly DeviceKey[] = [
  { key: 'device', description: 'device model (emulation name) in this slot' },
];

/** Every key a PCI device reads, once, with the devices that read it
 * (for configKeys(): the first record's default and description win). */
export function pciDeviceKeys(): Array<DeviceKey & { devices: string[] }> {
  const byKey = new Map<string, DeviceKey & { devices: string[] }>();
  for (const k of COMMON_PCI_KEYS) byKey.set(k.key, { ...k, devices: [] });
  for (const d of PCI_DEVICES) {
    if (d.alias) continue;
    for (const k of d.keys) {
      const seen = byKey.get(k.key);
      if (seen) seen.devices.push(d.name);
      else byKey.set(k.key, { ...k, devices: [d.name] });
    }
  }
  return [...byKey.values()];
}

/**
 * The checks each configured function's record makes before the VM exists
 * (bhyve's option parsing and init checks), and bhyve's own: a device name
 * it knows, not a legacy alias.
 */
export function validatePciDevices(config: ConfigTree): void {
  for (const s of pciNodes(config)) {
    const emul = config.get(`${s.node}.device`);
    if (emul === undefined) throw new ConfigError(`pci slot ${s.where}: missing "device" value (set ${s.node}.device)`);
    const record = findPciDevice(emul);
    if (!record) throw new ConfigError(`pci slot ${s.where}: unknown device "${emul}" (see bhyve -s help)`);
    record.validate?.(config, s);
  }
}

export interface LpcDeviceInfo {
  description: string;
  implemented: boolean;
  /** Listed by `-l help` (bhyve lists bootrom, com1-com4, tpm, pc-testdev). */
  listed: boolean;
}

export const LPC_DEVICES: Readonly<Record<string, LpcDeviceInfo>> = {
  bootrom: { description: 'boot ROM (firmware) image, optional UEFI variable store', implemented: true, listed: true },
  com1: { description: '16550 UART at 0x3f8, IRQ 4', implemented: true, listed: true },
  com2: { description: '16550 UART at 0x2f8, IRQ 3', implemented: true, listed: true },
  com3: { description: '16550 UART at 0x3e8, IRQ 4', implemented: true, listed: true },
  com4: { description: '16550 UART at 0x2e8, IRQ 3', implemented: true, listed: true },
  tpm: { description: 'TPM 2.0 (passthru or swtpm)', implemented: false, listed: true },
  'pc-testdev': { description: 'kvm-unit-tests test device (isa-debug-exit at 0xf4)', implemented: true, listed: true },
  fwcfg: { description: 'firmware configuration interface: bhyve (fwctl) or qemu (fw_cfg)', implemented: true, listed: false },
};

/**
 * Features behind flags and config variables that are not devices. Flip
 * `implemented` when the feature lands; validateForStart() refuses the rest.
 */
export const FEATURES: Record<string, { description: string; implemented: boolean }> = {
  gdb: { description: '-G GDB debug server (gdb.port)', implemented: true },
  restore: { description: '-r snapshot restore', implemented: false },
  numa: { description: '-n guest NUMA domains (domains.*)', implemented: true },
  'fwcfg-qemu': { description: 'QEMU fw_cfg interface (lpc.fwcfg=qemu)', implemented: true },
  'fwcfg-files': { description: '-f fw_cfg user files', implemented: true },
  'vcpu-pinning': { description: '-p vCPU pinning (vcpu.N.cpuset)', implemented: true },
  'wired-memory': { description: '-S wired guest memory (memory.wired)', implemented: true },
  'guest-in-core': { description: '-C guest memory in core files (memory.guest_in_core)', implemented: true },
  x2apic: { description: '-x x2APIC mode (x86.x2apic)', implemented: true },
};

/** Side information parsed from the command line that bhyve keeps outside the tree. */
export interface StartExtras {
  restoreFile?: string;
  fwcfgFiles?: readonly unknown[];
  /** Where start-time warnings go (bhyve prints them with warnx). */
  warn?: (message: string) => void;
}

function refuse(what: string): never {
  throw new ConfigError(`not supported yet: ${what}`);
}

function requireFeature(name: string): void {
  const f = FEATURES[name];
  if (!f.implemented) refuse(f.description);
}

/** `-l help`: bhyve's list, marked when not built. */
export function lpcHelpText(): string {
  return Object.entries(LPC_DEVICES).filter(([, d]) => d.listed).map(([n, d]) => `${n}${d.implemented ? '' : NOT_BUILT}\n`).join('');
}

/**
 * Refuses, with a ConfigError "not supported yet: <what>", any configured
 * device, LPC device or feature this project has not built yet. Call it after
 * parsing and before creating the VM: nothing configured is silently ignored.
 */
export function validateForStart(config: ConfigTree, extras: StartExtras = {}): void {
  validatePciDevices(config);
  for (const s of pciNodes(config)) {
    const emul = config.get(`${s.node}.device`)!;
    const record = findPciDevice(emul)!;
    if (!isBuilt(record)) refuse(`PCI emulation '${emul}' (pci slot ${s.where})`);
  }
  if (config.getNode('tpm')) refuse('LPC device tpm');
  const fwcfg = config.get('lpc.fwcfg') ?? 'bhyve';
  if (fwcfg === 'qemu') requireFeature('fwcfg-qemu');
  else if (fwcfg !== 'bhyve') throw new ConfigError(`invalid lpc.fwcfg '${fwcfg}' (use bhyve or qemu)`);
  const gdbPort = config.get('gdb.port');
  if (gdbPort !== undefined && gdbPort !== '0') {
    requireFeature('gdb');
    // bhyve's getaddrinfo() of the port fails the same way (exit status 1 there).
    if (!/^[0-9]{1,5}$/.test(gdbPort) || Number(gdbPort) > 65535) throw new ConfigError(`gdb address resolution: invalid port '${gdbPort}'`);
  }
  if (extras.restoreFile !== undefined) requireFeature('restore');
  if (config.getNode('domains')) {
    requireFeature('numa');
    if (!config.getBool('acpi_tables', true)) throw new ConfigError('NUMA emulation requires ACPI (acpi_tables is false)');
    numaDomains(config, calcTopology(config).cpus, parseMemorySize(config.get('memory.size') ?? '256M'), extras.warn);
  }
  const layout = config.get('keyboard.layout');
  if (layout !== undefined) loadKeyboardLayout(layout);
  if (extras.fwcfgFiles && extras.fwcfgFiles.length > 0) requireFeature('fwcfg-files');
  if (config.getNode('vcpu')) requireFeature('vcpu-pinning');
  if (config.getBool('memory.wired', false)) requireFeature('wired-memory');
  if (config.getBool('memory.guest_in_core', false)) requireFeature('guest-in-core');
  if (config.getBool('x86.x2apic', false)) requireFeature('x2apic');
}
