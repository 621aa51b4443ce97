// The xHCI controller's record (pci-device.ts; bhyve's pci_de_xhci): the
// legacy device list, the slots' checks; the emulation is xhci.ts, loaded
// when a run configures one.

import { ConfigError, type ConfigTree } from '../../config/tree.js';
import { setValue } from '../../config/legacy.js';
import { pciNodes } from '../../config/pci-nodes.js';
import type { LegacyParser, PciDeviceRecord } from '../pci-device.js';

export const XHCI_MAX_DEVS = 8; // 4 USB 3 + 4 USB 2 ports
export const XHCI_MAX_SLOTS = 64;

export interface XhciSlotConfig { slot: number; device: string; }

/** The USB device models by name, with the USB version of each (the
 * models themselves are xhci.ts' USB_DEVICES, built on the device thread). */
export const USB_DEVICE_VERSIONS: Readonly<Record<string, 2 | 3>> = {
  tablet: 3,
};

/** pci_xhci_parse_devices(): pci.B.S.F.slot.N.device for N in 1..64, at
 * most four USB 3 and four USB 2 devices. */
export function parseXhciSlots(config: ConfigTree, node: string): XhciSlotConfig[] {
  const slots = config.getNode(`${node}.slot`);
  if (slots === undefined) {
    if (config.get(`${node}.slot`) !== undefined) throw new ConfigError(`xhci: config variable '${node}.slot' must be a node (slot.N.device)`);
    return [];
  }
  const out: XhciSlotConfig[] = [];
  let usb2 = 0;
  let usb3 = 0;
  for (const [name, v] of slots) {
    if (typeof v === 'string') throw new ConfigError(`xhci: config variable '${name}' under slot node (use slot.N.device)`);
    const n = /^\d+$/.test(name) ? Number(name) : NaN;
    if (!(n >= 1 && n <= XHCI_MAX_SLOTS)) throw new ConfigError(`xhci: invalid slot '${name}' (1-${XHCI_MAX_SLOTS})`);
    const device = config.get(`${node}.slot.${name}.device`);
    if (device === undefined) throw new ConfigError(`xhci: missing "device" value for slot '${name}'`);
    const usbVersion = USB_DEVICE_VERSIONS[device];
    if (usbVersion === undefined) throw new ConfigError(`xhci: unknown USB device model "${device}" (supported: tablet)`);
    if (usbVersion === 2 ? ++usb2 > XHCI_MAX_DEVS / 2 : ++usb3 > XHCI_MAX_DEVS / 2) {
      throw new ConfigError(`xhci: max number of USB ${usbVersion} devices reached, max ${XHCI_MAX_DEVS / 2}`);
    }
    out.push({ slot: n, device });
  }
  return out;
}

/** pci_xhci_legacy_config(): `tablet[,...]` -> slot.N.device, slots from 1. */
const xhciLegacy: LegacyParser = (tree, node, opts) => {
  if (opts === undefined) return;
  let slot = 1;
  for (const item of opts.split(',')) {
    if (item === '') continue;
    const eq = item.indexOf('=');
    const name = eq < 0 ? item : item.slice(0, eq);
    if (!(name in USB_DEVICE_VERSIONS)) throw new ConfigError(`xhci: unknown USB device "${name}" (supported: tablet)`);
    setValue(tree, `${node}.slot.${slot}.device`, name);
    slot++;
  }
};

export const xhciDevice: PciDeviceRecord = {
  name: 'xhci', description: 'USB 3 (xHCI) controller', legacyConfig: xhciLegacy,
  keys: [{ key: 'slot.N.device', description: 'xhci USB device in slot N (tablet)' }],
  validate: (config, s) => {
    // pci_xhci_init: "controller already defined" for any but the first.
    const first = pciNodes(config).find((n) => config.get(`${n.node}.device`) === 'xhci');
    if (first && first.node !== s.node) throw new ConfigError(`pci_xhci controller already defined at ${first.where} (only one is allowed)`);
    parseXhciSlots(config, s.node);
  },
  model: () => import('./xhci.js').then((m) => m.xhciModel),
};
