// bhyve's LPC PCI-ISA bridge (amd64/pci_lpc.c): the function behind which
// bhyve places the legacy ISA devices (COM1-4, boot ROM, pc-testdev, ...).
// Identification: vendor 0x8086, device 0x7000 (Intel PIIX3 ISA bridge),
// class bridge/ISA (06/01), revision 0, subsystem 0/0, each overridable by
// `lpc.pcireg.{vendor,device,revid,subvendor,subdevice}` (hexadecimal, or
// `host` to copy the host's ISA bridge; we look it up in Linux sysfs where
// bhyve uses /dev/pci).
//
// Config bytes 0x60-0x63 (PIRQA-D) and 0x68-0x6b (PIRQE-H) are the PCI
// interrupt router's registers (pci_lpc_cfgwrite + pci_irq.c): a write goes
// to the router and the byte then reads back the router's value. bhyve only
// routes 1-byte writes (wider ones land in config space unrouted); we split
// wider writes into bytes so they are routed too.
//
// Only one LPC bridge, and only on bus 0 (bhyve's messages). The LPC
// devices come up with the bridge, as bhyve's lpc_init() brings them up:
// COM1-COM4 (all four; those without lpc.comN.path have no host backend),
// each keeping its ISA IRQ away from PCI routing, and pc-testdev when
// lpc.pc-testdev is true.

import { readdirSync, readFileSync } from 'node:fs';
import { ConfigError, type ConfigTree } from '../../config/tree.js';
import type { Device } from '../device.js';
import { PcTestDev } from '../lpc/pctestdev.js';
import { createLpcUart, LPC_UART_RESOURCES, type LpcUartDevice, type LpcUartName } from '../lpc/uart.js';
import type { PciDeviceModel } from '../pci-device.js';
import { PCIC_BRIDGE, PCIS_BRIDGE_ISA } from './config-space.js';
import { PciFunctionBase } from './pci-function.js';
import { readPciReg, type HostPciIds } from './pcireg.js';
import type { PirqRouter } from './pirq.js';

export const LPC_VENDOR = 0x8086;
export const LPC_DEVICE = 0x7000;
export const LPC_REVID = 0x00;
export const LPC_SUBVEND = 0x0000;
export const LPC_SUBDEV = 0x0000;

/** The PIRQ pin (1..8) behind a config offset, or 0. */
export function pirqPinAt(off: number): number {
  if (off >= 0x60 && off <= 0x63) return off - 0x60 + 1;
  if (off >= 0x68 && off <= 0x6b) return off - 0x68 + 5;
  return 0;
}

/** Finds the host's PCI-ISA bridge on domain 0 bus 0 in sysfs. */
export function findHostIsaBridge(sysfs = '/sys/bus/pci/devices'): HostPciIds | undefined {
  let entries: string[];
  try {
    entries = readdirSync(sysfs).filter((e) => e.startsWith('0000:00:')).sort();
  } catch {
    return undefined;
  }
  const num = (dir: string, file: string): number | undefined => {
    try {
      return parseInt(readFileSync(`${sysfs}/${dir}/${file}`, 'utf8').trim(), 16);
    } catch {
      return undefined;
    }
  };
  for (const e of entries) {
    const cls = num(e, 'class');
    if (cls === undefined || (cls >>> 8) !== ((PCIC_BRIDGE << 8) | PCIS_BRIDGE_ISA)) continue;
    return {
      vendor: num(e, 'vendor'),
      device: num(e, 'device'),
      revid: num(e, 'revision'),
      subvendor: num(e, 'subsystem_vendor'),
      subdevice: num(e, 'subsystem_device'),
    };
  }
  return undefined;
}

export class LpcBridge extends PciFunctionBase {
  /** COM1-COM4, created with the bridge. */
  uarts: LpcUartDevice[] = [];
  pctestdev?: PcTestDev;

  /** The ISA devices behind the bridge, for the device thread. */
  get isaDevices(): Device[] {
    return this.pctestdev ? [...this.uarts, this.pctestdev] : [...this.uarts];
  }

  constructor(config: ConfigTree, private readonly pirq: PirqRouter, hostLookup: () => HostPciIds | undefined = findHostIsaBridge) {
    super('lpc');
    // Only look at the host when a value asks for it.
    let host: HostPciIds | undefined;
    const wantsHost = ['vendor', 'device', 'revid', 'subvendor', 'subdevice']
      .some((r) => config.get(`lpc.pcireg.${r}`)?.trim().toLowerCase() === 'host');
    if (wantsHost) host = hostLookup();
    this.cfg.setIdentity({
      vendor: readPciReg(config, 'lpc', 'vendor', 2, LPC_VENDOR, host),
      device: readPciReg(config, 'lpc', 'device', 2, LPC_DEVICE, host),
      revision: readPciReg(config, 'lpc', 'revid', 1, LPC_REVID, host),
      subVendor: readPciReg(config, 'lpc', 'subvendor', 2, LPC_SUBVEND, host),
      subDevice: readPciReg(config, 'lpc', 'subdevice', 2, LPC_SUBDEV, host),
      classCode: PCIC_BRIDGE,
      subclass: PCIS_BRIDGE_ISA,
    });
    // The router owns these bytes; keep the guest's default path off them.
    this.cfg.setReadOnly(0x60, 4);
    this.cfg.setReadOnly(0x68, 4);
    this.pirqRouted();
  }

  /** Copies the router's registers into config space (bhyve's
   * lpc_pirq_routed, called after INTx routing). */
  pirqRouted(): void {
    for (let pin = 1; pin <= 4; pin++) this.cfg.set8(0x60 + pin - 1, this.pirq.read(pin));
    for (let pin = 5; pin <= 8; pin++) this.cfg.set8(0x68 + pin - 5, this.pirq.read(pin));
  }

  cfgWrite(off: number, size: number, value: number): boolean {
    if (pirqPinAt(off) === 0) return false;
    for (let i = 0; i < size; i++) {
      const pin = pirqPinAt(off + i);
      if (pin === 0) continue;
      this.pirq.write(pin, (value >>> (8 * i)) & 0xff);
      this.cfg.set8(off + i, this.pirq.read(pin));
    }
    return true;
  }
}

const UART_NAMES: readonly LpcUartName[] = ['com1', 'com2', 'com3', 'com4'];

/** The emulation of its record (lpc-bridge-record.ts). */
export const lpcModel: PciDeviceModel = {
  create: (ctx, s, chipset) => {
    if (chipset.lpc) throw new ConfigError('Only one LPC bridge is allowed.');
    if (s.bus !== 0) throw new ConfigError('LPC bridge can be present only on bus 0.');
    const uarts = UART_NAMES.map((name) => {
      chipset.pirq.reserveIrq(LPC_UART_RESOURCES[name].irq);
      return createLpcUart(ctx, name);
    });
    const pctestdev = ctx.config.getBool('lpc.pc-testdev', false) ? new PcTestDev(ctx) : undefined;
    const lpc = new LpcBridge(ctx.config, chipset.pirq, chipset.hostIsaBridge);
    lpc.uarts = uarts;
    lpc.pctestdev = pctestdev;
    chipset.lpc = lpc;
    return lpc;
  },
};
