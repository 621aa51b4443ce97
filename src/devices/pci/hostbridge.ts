// bhyve's PCI host bridge (pci_hostbridge.c): a bridge/host function with a
// PCI Express capability of type root port, vendor and device 0x1275
// (NetApp) unless configured otherwise:
//   - `vendor` / `devid` (older bhyve, and what `-s N,amd_hostbridge`
//     stores: 0x1022 / 0x7432), numbers as strtol(.., 0): 0x.. hex,
//     0.. octal, else decimal;
//   - else `pcireg.vendor` / `pcireg.device` (hexadecimal).
// `amd_hostbridge` as a stored device name is accepted too and defaults to
// the AMD ids (bhyve itself only stores the alias target "hostbridge").

import type { ConfigTree } from '../../config/tree.js';
import type { PciDeviceModel } from '../pci-device.js';
import {
  PCIC_BRIDGE, PCIM_HDRTYPE_NORMAL, PCIS_BRIDGE_HOST, PCIY_EXPRESS,
} from './config-space.js';
import { PciFunctionBase } from './pci-function.js';
import { readPciReg } from './pcireg.js';
import { I440fxHostBridge } from './i440fx.js';

export const HOSTBRIDGE_VENDOR = 0x1275; // NetApp
export const HOSTBRIDGE_DEVICE = 0x1275;
export const AMD_HOSTBRIDGE_VENDOR = 0x1022;
export const AMD_HOSTBRIDGE_DEVICE = 0x7432; // made up, as bhyve's

export const PCIEM_TYPE_ENDPOINT = 0x00;
export const PCIEM_TYPE_ROOT_INT_EP = 0x90;
export const PCIEM_TYPE_ROOT_PORT = 0x40;
const PCIECAP_VERSION = 0x2;
/** sizeof(struct pciecap) in bhyve's pci_emul.h. */
export const PCIECAP_LENGTH = 60;

/** strtol(value, NULL, 0) for a config number; refuses garbage. */
export function parseCNumber(value: string, what: string, max: number): number {
  const v = value.trim();
  let n: number;
  if (/^0x[0-9a-f]+$/i.test(v)) n = parseInt(v.slice(2), 16);
  else if (/^0[0-7]*$/.test(v)) n = parseInt(v, 8);
  else if (/^[1-9][0-9]*$/.test(v)) n = parseInt(v, 10);
  else throw new Error(`invalid number '${value}' for ${what}`);
  if (n > max) throw new Error(`value '${value}' for ${what} is larger than 0x${max.toString(16)}`);
  return n;
}

/**
 * Builds the PCI Express capability bhyve's pci_emul_add_pciecap() adds:
 * version 2 of the given port type; link capabilities and status say gen1
 * x1 except for root-complex integrated endpoints. An endpoint on bus 0
 * becomes a root-complex integrated endpoint, as in bhyve.
 */
export function pcieCapability(type: number, bus: number): Uint8Array {
  if (type === PCIEM_TYPE_ENDPOINT && bus === 0) type = PCIEM_TYPE_ROOT_INT_EP;
  const cap = new Uint8Array(PCIECAP_LENGTH);
  const dv = new DataView(cap.buffer);
  cap[0] = PCIY_EXPRESS;
  dv.setUint16(2, PCIECAP_VERSION | type, true);
  if (type !== PCIEM_TYPE_ROOT_INT_EP) {
    dv.setUint32(0x0c, 0x411, true); // link capabilities: gen1, x1
    dv.setUint16(0x12, 0x11, true); // link status: gen1, x1
  }
  return cap;
}

export class HostBridge extends PciFunctionBase {
  constructor(config: ConfigTree, node: string, bus: number, emulation: 'hostbridge' | 'amd_hostbridge' = 'hostbridge') {
    super(emulation);
    const amd = emulation === 'amd_hostbridge';
    let vendor = amd ? AMD_HOSTBRIDGE_VENDOR : HOSTBRIDGE_VENDOR;
    let device = amd ? AMD_HOSTBRIDGE_DEVICE : HOSTBRIDGE_DEVICE;
    const v = config.get(`${node}.vendor`);
    vendor = v !== undefined ? parseCNumber(v, `${node}.vendor`, 0xffff) : readPciReg(config, node, 'vendor', 2, vendor);
    const d = config.get(`${node}.devid`);
    device = d !== undefined ? parseCNumber(d, `${node}.devid`, 0xffff) : readPciReg(config, node, 'device', 2, device);

    this.cfg.setIdentity({
      vendor, device, classCode: PCIC_BRIDGE, subclass: PCIS_BRIDGE_HOST, headerType: PCIM_HDRTYPE_NORMAL,
    });
    this.cfg.addCapability(PCIY_EXPRESS, pcieCapability(PCIEM_TYPE_ROOT_PORT, bus));
  }
}

/** The emulation of its record (hostbridge-record.ts). */
export const hostbridgeModel: PciDeviceModel = {
  create: (ctx, s, chipset) => (chipset.qemu ? new I440fxHostBridge(chipset.pam) : new HostBridge(ctx.config, s.node, s.bus)),
};

/** The emulation of its record (hostbridge-record.ts). */
export const amdHostbridgeModel: PciDeviceModel = {
  create: (ctx, s, chipset) => (chipset.qemu ? new I440fxHostBridge(chipset.pam) : new HostBridge(ctx.config, s.node, s.bus, 'amd_hostbridge')),
};
