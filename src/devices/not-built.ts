// The PCI emulations bhyve has that this project has not built yet, as
// records without create(): `-s` parses their configuration strings as
// bhyve does, their start-time checks run, `-s help` marks them, and bhyve
// refuses to start with one ("not supported yet"). A device that gets built
// moves its record to its own file (with create()) and its import in
// registry.ts.

import { ConfigError, type ConfigTree } from '../config/tree.js';
import {
  blockifLegacyConfig, createNode, netbeLegacyConfig, parseLegacyConfig, setValue,
} from '../config/legacy.js';
import type { DeviceKey, LegacyParser, PciDeviceRecord, PciSlot } from './pci-device.js';

const AHCI_MAX_PORTS = 32;

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

/** pci_uart_legacy_config(): the whole string is the backend path. */
const uartLegacy: LegacyParser = (tree, node, opts) => {
  if (opts !== undefined) setValue(tree, `${node}.path`, opts);
};

const BLOCK_KEYS: readonly DeviceKey[] = [
  { key: 'path', description: 'backing file or block device' },
  { key: 'nocache', default: 'false', description: 'open the backing file with O_DIRECT' },
  { key: 'direct', default: 'false', description: 'open the backing file with O_SYNC' },
  { key: 'sync', default: 'false', description: 'alias of direct' },
  { key: 'ro', default: 'false', description: 'read-only device' },
  { key: 'nodelete', default: 'false', description: 'do not pass discard requests to the backing file' },
  { key: 'sectorsize', description: 'logical[/physical] sector size' },
  { key: 'ser', description: 'serial number' },
  { key: 'bootindex', description: 'boot order index for the firmware' },
];

const AHCI_KEYS: readonly DeviceKey[] = [
  { key: 'port.N.type', description: 'ahci port type (hd or cd)' },
  { key: 'port.N.path', description: 'ahci port backing file' },
  { key: 'port.N.nmrr', description: 'ahci port nominal media rotation rate (1: SSD)' },
  { key: 'port.N.ser', description: 'ahci port serial number' },
  { key: 'port.N.rev', description: 'ahci port firmware revision' },
  { key: 'port.N.model', description: 'ahci port model' },
  { key: 'bootindex', description: 'boot order index for the firmware' },
];

const NET_KEYS: readonly DeviceKey[] = [
  { key: 'backend', description: 'network backend (tapN, vmnetN, netgraph, netmap:ifname, valeX:port, slirp)' },
  { key: 'type', description: 'network backend type (tap, netgraph, netmap)' },
  { key: 'mac', description: 'network device MAC address' },
  { key: 'mtu', default: '1500', description: 'network device MTU' },
  { key: 'peerhook', description: 'netgraph peer hook' },
  { key: 'socket', description: 'netgraph socket name' },
  { key: 'hook', default: 'vmlink', description: 'netgraph hook' },
];

function requirePath(config: ConfigTree, node: string, s: PciSlot, what: string, device: string): void {
  if (config.get(`${node}.path`) === undefined) {
    throw new ConfigError(`pci slot ${s.where}: ${what} requires a path (e.g. -s ${s.slot},${device},/path/to/disk.img)`);
  }
}

/** Every ahci port with a type needs a path. */
function validateAhciPorts(config: ConfigTree, s: PciSlot, device: string): void {
  for (const [p, pn] of config.getNode(`${s.node}.port`) ?? []) {
    if (pn instanceof Map && config.get(`${s.node}.port.${p}.type`) !== undefined) requirePath(config, `${s.node}.port.${p}`, s, `ahci port ${p}`, device);
  }
}

export const ahciDevice: PciDeviceRecord = {
  name: 'ahci', description: 'AHCI SATA controller with several ports', legacyConfig: ahciLegacy, keys: AHCI_KEYS,
  validate: (c, s) => validateAhciPorts(c, s, 'ahci'),
};
export const ahciHdDevice: PciDeviceRecord = {
  name: 'ahci-hd', alias: 'ahci', description: 'AHCI controller with one SATA hard disk', keys: AHCI_KEYS,
  legacyConfig: (t, n, o) => { createNode(t, `${n}.port`); ahciPort(t, n, 0, 'hd', o); },
};
export const ahciCdDevice: PciDeviceRecord = {
  name: 'ahci-cd', alias: 'ahci', description: 'AHCI controller with one ATAPI CD-ROM', keys: AHCI_KEYS,
  legacyConfig: (t, n, o) => { createNode(t, `${n}.port`); ahciPort(t, n, 0, 'cd', o); },
};
export const nvmeDevice: PciDeviceRecord = {
  name: 'nvme', description: 'NVMe controller', legacyConfig: nvmeLegacy,
  keys: [
    ...BLOCK_KEYS,
    { key: 'maxq', default: '16', description: 'nvme maximum number of queues' },
    { key: 'qsz', default: '2058', description: 'nvme queue size' },
    { key: 'ioslots', default: '8', description: 'nvme I/O slots' },
    { key: 'sectsz', description: 'nvme sector size (512, 4096 or 8192)' },
    { key: 'eui64', description: 'nvme namespace EUI-64' },
    { key: 'dsm', default: 'auto', description: 'nvme dataset management support (auto, enable, disable)' },
    { key: 'ram', description: 'nvme RAM-backed namespace size in MiB' },
  ],
  validate: (c, s) => { if (c.get(`${s.node}.ram`) === undefined) requirePath(c, s.node, s, 'nvme', 'nvme'); },
};
export const virtioScsiDevice: PciDeviceRecord = {
  name: 'virtio-scsi', description: 'virtio SCSI controller', legacyConfig: firstItemAs('dev'),
  keys: [{ key: 'dev', description: 'virtio-scsi CAM target device' }, { key: 'iid', description: 'virtio-scsi initiator ID' }],
};
export const e1000Device: PciDeviceRecord = {
  name: 'e1000', description: 'Intel 82545 network device', legacyConfig: netbeLegacyConfig, keys: NET_KEYS,
};
export const passthruDevice: PciDeviceRecord = {
  name: 'passthru', description: 'host PCI device passthrough', legacyConfig: passthruLegacy,
  keys: [
    { key: 'bus', description: 'passthru host PCI bus' },
    { key: 'slot', description: 'passthru host PCI slot' },
    { key: 'func', description: 'passthru host PCI function' },
    { key: 'pptdev', description: 'passthru host ppt device name' },
    { key: 'rom', description: 'passthru option ROM file' },
  ],
};
export const xhciDevice: PciDeviceRecord = {
  name: 'xhci', description: 'USB 3 (xHCI) controller', legacyConfig: xhciLegacy,
  keys: [{ key: 'slot.N.device', description: 'xhci USB device in slot N (tablet)' }],
};
export const virtio9pDevice: PciDeviceRecord = {
  name: 'virtio-9p', description: 'virtio 9p (VirtFS) file sharing', legacyConfig: vt9pLegacy,
  keys: [
    { key: 'sharename', description: 'virtio-9p share name' },
    { key: 'path', description: 'shared host directory' },
    { key: 'ro', default: 'false', description: 'read-only share' },
  ],
};
export const virtioInputDevice: PciDeviceRecord = {
  name: 'virtio-input', description: 'virtio input device', legacyConfig: firstItemAs('path'),
  keys: [{ key: 'path', description: 'host evdev device' }],
};
export const hdaDevice: PciDeviceRecord = {
  name: 'hda', description: 'High Definition Audio controller',
  keys: [{ key: 'play', description: 'hda playback device' }, { key: 'rec', description: 'hda recording device' }],
};
export const uartDevice: PciDeviceRecord = {
  name: 'uart', description: 'PCI 16550 UART', legacyConfig: uartLegacy,
  keys: [{ key: 'path', description: 'UART backend' }],
};
