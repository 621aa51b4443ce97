// e1000's record (pci-device.ts; bhyve's pci_de_e82545): keys, the legacy
// backend string, the MAC and slirp keys' checks; the emulation is
// e1000.ts, loaded when a run configures one.

import type { ConfigTree } from '../../config/tree.js';
import { ConfigError } from '../../config/tree.js';
import { netbeLegacyConfig } from '../../config/legacy.js';
import type { PciDeviceRecord } from '../pci-device.js';
import type { E1000Options } from './e1000.js';
import { netGenMac, parseMac } from './net-utils.js';
import { validateSlirpKeys } from './slirp-options.js';

/** The MAC of the e1000 slot `node`: mac= or bhyve's net_genmac. */
export function e1000OptionsFromConfig(config: ConfigTree, node: string, slot: number, func: number): E1000Options {
  const mac = config.get(`${node}.mac`);
  return { mac: mac !== undefined ? parseMac(mac) : netGenMac(slot, func, config.get('name') ?? '') };
}

/** bhyve's pci_de_e82545. */
export const e1000Device: PciDeviceRecord = {
  name: 'e1000', description: 'Intel 82545 network device', legacyConfig: netbeLegacyConfig,
  keys: [
    { key: 'backend', description: 'network backend (tapN, vmnetN, /dev/tapN or slirp)' },
    { key: 'mac', description: 'MAC address (default: derived from the VM name and slot)' },
    { key: 'hostfwd', description: 'slirp backend: host port forwarding rules, separated by ;' },
    { key: 'open', default: 'false', description: 'slirp backend: allow the guest outbound connections' },
  ],
  validate: (config, s) => {
    try {
      e1000OptionsFromConfig(config, s.node, s.slot, s.func);
    } catch (e) {
      if (e instanceof ConfigError) throw new ConfigError(`e1000 at pci slot ${s.where}: ${e.message}`);
      throw e;
    }
    validateSlirpKeys(config, s.node, s.where, 'e1000');
  },
  model: () => import('./e1000.js').then((m) => m.e1000Model),
};
