// The PCI emulations bhyve has that this project has not built yet, as
// records without create(): `-s` parses their configuration strings as
// bhyve does, their start-time checks run, `-s help` marks them, and bhyve
// refuses to start with one ("not supported yet"). A device that gets built
// moves its record to its own file (with create()) and its import in
// registry.ts.

import { ConfigError, type ConfigTree } from '../config/tree.js';
import { netbeLegacyConfig, parseLegacyConfig, setValue } from '../config/legacy.js';
import type { DeviceKey, LegacyParser, PciDeviceRecord } from './pci-device.js';

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

const NET_KEYS: readonly DeviceKey[] = [
  { key: 'backend', description: 'network backend (tapN, vmnetN, netgraph, netmap:ifname, valeX:port, slirp)' },
  { key: 'type', description: 'network backend type (tap, netgraph, netmap)' },
  { key: 'mac', description: 'network device MAC address' },
  { key: 'mtu', default: '1500', description: 'network device MTU' },
  { key: 'peerhook', description: 'netgraph peer hook' },
  { key: 'socket', description: 'netgraph socket name' },
  { key: 'hook', default: 'vmlink', description: 'netgraph hook' },
];

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
