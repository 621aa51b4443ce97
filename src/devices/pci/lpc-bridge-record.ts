// The LPC bridge's record (pci-device.ts; bhyve's pci_de_lpc), for the
// option parsing and start-time checks; the emulation is lpc-bridge.ts,
// loaded when a run configures one.

import type { PciDeviceRecord } from '../pci-device.js';

/** bhyve's pci_de_lpc (pci_lpc_init + lpc_init). */
export const lpcDevice: PciDeviceRecord = {
  name: 'lpc',
  description: 'LPC PCI-ISA bridge (COM1-COM4, boot ROM, TPM, fw_cfg, pc-testdev)',
  keys: [],
  model: () => import('./lpc-bridge.js').then((m) => m.lpcModel),
};
