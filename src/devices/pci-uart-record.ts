// The PCI UART's record (pci-device.ts; bhyve's pci_de_com) and the
// backends the main thread opens for it; the emulation is pci-uart.ts,
// loaded when a run configures one.

import type { ConfigTree } from '../config/tree.js';
import { pciNodes } from '../config/pci-nodes.js';
import { setValue } from '../config/legacy.js';
import type { LegacyParser, PciDeviceRecord } from './pci-device.js';

/** pci_uart_legacy_config(): the whole string is the backend path. */
const uartLegacy: LegacyParser = (tree, node, opts) => {
  if (opts !== undefined) setValue(tree, `${node}.path`, opts);
};

/** The PCI UARTs with a backend, for the main thread to open before the
 * device thread starts; each backend's stream key is the slot node. */
export function pciUartBackends(config: ConfigTree): Array<{ node: string; where: string; path: string }> {
  const out: Array<{ node: string; where: string; path: string }> = [];
  for (const { node, where } of pciNodes(config)) {
    if (config.get(`${node}.device`) !== 'uart') continue;
    const path = config.get(`${node}.path`);
    if (path !== undefined) out.push({ node, where, path });
  }
  return out;
}

/** bhyve's pci_de_com. */
export const uartDevice: PciDeviceRecord = {
  name: 'uart', description: 'PCI 16550 UART', legacyConfig: uartLegacy,
  keys: [{ key: 'path', description: 'UART backend: stdio, a terminal device or tcp=ADDR:PORT' }],
  model: () => import('./pci-uart.js').then((m) => m.uartModel),
};
