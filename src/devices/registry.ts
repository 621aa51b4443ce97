// The device registry: every PCI emulation (-s) and LPC device (-l) bhyve(8)
// knows, with its legacy option parser and whether this project implements it
// yet. Metadata only; the device models live in src/devices/{pci,lpc,virtio}.
// Engineers flip `implemented` as their device lands.

import { ConfigError, ConfigTree } from '../config/tree.js';
import {
  blockifLegacyConfig, createNode, netbeLegacyConfig, parseLegacyConfig, setValue,
} from '../config/legacy.js';

/** Parses the conf string of `-s slot,emulation,conf` into the slot's node. */
export type LegacyParser = (tree: ConfigTree, node: string, conf: string | undefined) => void;

export interface PciEmulationInfo {
  description: string;
  /** The name stored in pci.B.S.F.device when it differs (pe_alias). */
  alias?: string;
  /** Device-specific conf parser; absent means the generic name=value list. */
  legacyParse?: LegacyParser;
  implemented: boolean;
}

export interface LpcDeviceInfo {
  description: string;
  implemented: boolean;
  /** Listed by `-l help` (bhyve lists bootrom, com1-com4, tpm, pc-testdev). */
  listed: boolean;
}

const AHCI_MAX_PORTS = 32;
const VTCON_MAXPORTS = 16;

function ahciPort(tree: ConfigTree, node: string, port: number, type: string, opts: string | undefined): void {
  const portNode = `${node}.port.${port}`;
  createNode(tree, portNode);
  setValue(tree, `${portNode}.type`, type);
  blockifLegacyConfig(tree, portNode, opts);
}

/** pci_ahci_legacy_config(): `hd:path[,opts],cd:path[,opts],...` -> port.N.* */
const ahciLegacy: LegacyParser = (tree, node, opts) => {
  if (opts === undefined) return;
  createNode(tree, `${node}.port`);
  let str: string | undefined = opts;
  for (let p = 0; p < AHCI_MAX_PORTS && str !== undefined; p++) {
    let type: string | undefined;
    if (str.startsWith('hd:')) { type = 'hd'; str = str.slice(3); }
    else if (str.startsWith('cd:')) { type = 'cd'; str = str.slice(3); }
    const hd = str.indexOf(',hd:');
    const cd = str.indexOf(',cd:');
    let cut = hd;
    if (hd < 0 || (cd >= 0 && cd < hd)) cut = cd;
    let next: string | undefined;
    if (cut >= 0) { next = str.slice(cut + 1); str = str.slice(0, cut); }
    if (str !== '') {
      if (type === undefined) throw new ConfigError(`Missing or invalid type for port ${p}: "${str}" (use hd:path or cd:path)`);
      ahciPort(tree, node, p, type, str);
    }
    str = next;
  }
};

/** pci_vtcon_legacy_config(): `port1=/sock[,port2=/sock...]` -> port.N.{name,path} */
const vtconLegacy: LegacyParser = (tree, node, opts) => {
  if (opts === undefined) return;
  createNode(tree, `${node}.port`);
  let port = 0;
  for (const opt of opts.split(',')) {
    if (opt === 'transport=legacy' || opt === 'transport=modern') {
      setValue(tree, `${node}.transport`, opt.slice(opt.indexOf('=') + 1));
      continue;
    }
    const eq = opt.indexOf('=');
    if (eq < 0) throw new ConfigError(`vtcon: port ${opt} requires a path`);
    if (port >= VTCON_MAXPORTS) throw new ConfigError('vtcon: too many ports');
    setValue(tree, `${node}.port.${port}.name`, opt.slice(0, eq));
    setValue(tree, `${node}.port.${port}.path`, opt.slice(eq + 1));
    port++;
  }
};

/** pci_nvme_legacy_config(): `ram=MiB[,opts]` or a blockif string. */
const nvmeLegacy: LegacyParser = (tree, node, opts) => {
  if (opts === undefined) return;
  if (opts.startsWith('ram=')) {
    const comma = opts.indexOf(',');
    if (comma < 0) { setValue(tree, `${node}.ram`, opts.slice(4)); return; }
    setValue(tree, `${node}.ram`, opts.slice(4, comma));
    parseLegacyConfig(tree, node, opts.slice(comma + 1));
  } else {
    blockifLegacyConfig(tree, node, opts);
  }
};

/** passthru_legacy_config(): `pptN` | `pciB:S:F` | `B/S/F`, then name=value. */
const passthruLegacy: LegacyParser = (tree, node, opts) => {
  if (opts === undefined) return;
  const comma = opts.indexOf(',');
  const first = comma < 0 ? opts : opts.slice(0, comma);
  const m = /^pci0:(\d+):(\d+):(\d+)/.exec(first) ?? /^pci(\d+):(\d+):(\d+)/.exec(first) ?? /^(\d+)\/(\d+)\/(\d+)/.exec(first);
  if (first.startsWith('ppt')) {
    setValue(tree, `${node}.pptdev`, first);
  } else if (m) {
    setValue(tree, `${node}.bus`, String(Number(m[1])));
    setValue(tree, `${node}.slot`, String(Number(m[2])));
    setValue(tree, `${node}.func`, String(Number(m[3])));
  } else {
    throw new ConfigError(`passthru: invalid options "${opts}" (use pptN, pciB:S:F or B/S/F)`);
  }
  if (comma >= 0) parseLegacyConfig(tree, node, opts.slice(comma + 1));
};

/** First item (when not name=value) goes to `key`; the rest is generic. */
function firstItemAs(key: string): LegacyParser {
  return (tree, node, opts) => {
    if (opts === undefined) return;
    const comma = opts.indexOf(',');
    const first = comma < 0 ? opts : opts.slice(0, comma);
    if (first.includes('=')) { parseLegacyConfig(tree, node, opts); return; }
    setValue(tree, `${node}.${key}`, first);
    if (comma >= 0) parseLegacyConfig(tree, node, opts.slice(comma + 1));
  };
}

/** pci_vt9p_legacy_config(): `sharename=/path[,ro]`. */
const vt9pLegacy: LegacyParser = (tree, node, opts) => {
  if (opts === undefined) return;
  const comma = opts.indexOf(',');
  const first = comma < 0 ? opts : opts.slice(0, comma);
  const eq = first.indexOf('=');
  if (eq < 0) throw new ConfigError(`virtio-9p: invalid share "${first}" (use sharename=/path)`);
  setValue(tree, `${node}.sharename`, first.slice(0, eq));
  setValue(tree, `${node}.path`, first.slice(eq + 1));
  if (comma >= 0) parseLegacyConfig(tree, node, opts.slice(comma + 1));
};

/** pci_xhci_legacy_config(): `tablet[,...]` -> slot.N.device, slots from 1. */
const xhciLegacy: LegacyParser = (tree, node, opts) => {
  if (opts === undefined) return;
  let slot = 1;
  for (const item of opts.split(',')) {
    if (item === '') continue;
    const eq = item.indexOf('=');
    const name = eq < 0 ? item : item.slice(0, eq);
    if (name !== 'tablet') throw new ConfigError(`xhci: unknown USB device "${name}" (supported: tablet)`);
    setValue(tree, `${node}.slot.${slot}.device`, name);
    slot++;
  }
};

/** pci_amd_hostbridge_legacy_config(): AMD vendor id, made-up device id. */
const amdHostbridgeLegacy: LegacyParser = (tree, node) => {
  setValue(tree, `${node}.vendor`, '0x1022');
  setValue(tree, `${node}.devid`, '0x7432');
};

/** pci_uart_legacy_config(): the whole string is the backend path. */
const uartLegacy: LegacyParser = (tree, node, opts) => {
  if (opts !== undefined) setValue(tree, `${node}.path`, opts);
};

export const PCI_EMULATIONS: Readonly<Record<string, PciEmulationInfo>> = {
  hostbridge: { description: 'PCI host bridge', implemented: true },
  amd_hostbridge: { description: 'PCI host bridge with AMD vendor ID', alias: 'hostbridge', legacyParse: amdHostbridgeLegacy, implemented: true },
  lpc: { description: 'LPC PCI-ISA bridge (COM1-COM4, boot ROM, TPM, fw_cfg, pc-testdev)', implemented: true },
  'virtio-blk': { description: 'virtio block device', legacyParse: blockifLegacyConfig, implemented: true },
  ahci: { description: 'AHCI SATA controller with several ports', legacyParse: ahciLegacy, implemented: false },
  'ahci-hd': {
    description: 'AHCI controller with one SATA hard disk', alias: 'ahci',
    legacyParse: (t, n, o) => { createNode(t, `${n}.port`); ahciPort(t, n, 0, 'hd', o); }, implemented: false,
  },
  'ahci-cd': {
    description: 'AHCI controller with one ATAPI CD-ROM', alias: 'ahci',
    legacyParse: (t, n, o) => { createNode(t, `${n}.port`); ahciPort(t, n, 0, 'cd', o); }, implemented: false,
  },
  nvme: { description: 'NVMe controller', legacyParse: nvmeLegacy, implemented: false },
  'virtio-scsi': { description: 'virtio SCSI controller', legacyParse: firstItemAs('dev'), implemented: false },
  'virtio-net': { description: 'virtio network device', legacyParse: netbeLegacyConfig, implemented: true },
  e1000: { description: 'Intel 82545 network device', legacyParse: netbeLegacyConfig, implemented: false },
  passthru: { description: 'host PCI device passthrough', legacyParse: passthruLegacy, implemented: false },
  fbuf: { description: 'raw framebuffer with VNC server', implemented: true },
  xhci: { description: 'USB 3 (xHCI) controller', legacyParse: xhciLegacy, implemented: false },
  'virtio-rnd': { description: 'virtio random number generator', implemented: true },
  'virtio-console': { description: 'virtio console with up to 16 ports', legacyParse: vtconLegacy, implemented: true },
  'virtio-9p': { description: 'virtio 9p (VirtFS) file sharing', legacyParse: vt9pLegacy, implemented: false },
  'virtio-input': { description: 'virtio input device', legacyParse: firstItemAs('path'), implemented: false },
  hda: { description: 'High Definition Audio controller', implemented: false },
  uart: { description: 'PCI 16550 UART', legacyParse: uartLegacy, implemented: false },
};

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
  gdb: { description: '-G GDB debug server (gdb.port)', implemented: false },
  restore: { description: '-r snapshot restore', implemented: false },
  numa: { description: '-n guest NUMA domains (domains.*)', implemented: false },
  keyboard: { description: '-K keyboard layout (keyboard.layout)', implemented: false },
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
}

function refuse(what: string): never {
  throw new ConfigError(`not supported yet: ${what}`);
}

function requireFeature(name: string): void {
  const f = FEATURES[name];
  if (!f.implemented) refuse(f.description);
}

/** Emulation names in the order `-s help` lists them. */
export function pciEmulationNames(): string[] {
  return Object.keys(PCI_EMULATIONS);
}

/** LPC device names in the order `-l help` lists them. */
export function lpcDeviceNames(): string[] {
  return Object.entries(LPC_DEVICES).filter(([, d]) => d.listed).map(([n]) => n);
}

/**
 * Refuses, with a ConfigError "not supported yet: <what>", any configured
 * device, LPC device or feature this project has not built yet. Call it after
 * parsing and before creating the VM: nothing configured is silently ignored.
 */
export function validateForStart(config: ConfigTree, extras: StartExtras = {}): void {
  const pci = config.getNode('pci');
  if (pci) {
    for (const [bus, busNode] of pci) {
      if (!(busNode instanceof Map)) continue;
      for (const [slot, slotNode] of busNode) {
        if (!(slotNode instanceof Map)) continue;
        for (const [func, funcNode] of slotNode) {
          if (!(funcNode instanceof Map)) continue;
          const where = `${bus}:${slot}:${func}`;
          const emul = config.get(`pci.${bus}.${slot}.${func}.device`);
          if (emul === undefined) throw new ConfigError(`pci slot ${where}: no device configured (set pci.${bus}.${slot}.${func}.device)`);
          const info = PCI_EMULATIONS[emul];
          if (!info) throw new ConfigError(`pci slot ${where}: unknown device "${emul}" (see bhyve -s help)`);
          if (!info.implemented) refuse(`PCI emulation '${emul}' (pci slot ${where})`);
        }
      }
    }
  }
  if (config.getNode('tpm')) refuse('LPC device tpm');
  const fwcfg = config.get('lpc.fwcfg') ?? 'bhyve';
  if (fwcfg === 'qemu') requireFeature('fwcfg-qemu');
  else if (fwcfg !== 'bhyve') throw new ConfigError(`invalid lpc.fwcfg '${fwcfg}' (use bhyve or qemu)`);
  const gdbPort = config.get('gdb.port');
  if (gdbPort !== undefined && gdbPort !== '0') requireFeature('gdb');
  if (extras.restoreFile !== undefined) requireFeature('restore');
  if (config.getNode('domains')) requireFeature('numa');
  if (config.get('keyboard.layout') !== undefined) requireFeature('keyboard');
  if (extras.fwcfgFiles && extras.fwcfgFiles.length > 0) requireFeature('fwcfg-files');
  if (config.getNode('vcpu')) requireFeature('vcpu-pinning');
  if (config.getBool('memory.wired', false)) requireFeature('wired-memory');
  if (config.getBool('memory.guest_in_core', false)) requireFeature('guest-in-core');
  if (config.getBool('x86.x2apic', false)) requireFeature('x2apic');
}
