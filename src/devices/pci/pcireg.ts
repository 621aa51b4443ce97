// The `pcireg.*` overrides of a PCI function's identification registers,
// as bhyve's pci_config_read_reg(): pcireg.vendor, pcireg.device,
// pcireg.revid, pcireg.subvendor, pcireg.subdevice. Values are hexadecimal
// (bhyve parses them with strtol(value, NULL, 16), so "8086" and "0x8086"
// are the same), or "host" to copy the value of the matching host device
// (bhyve only knows such a device for the LPC bridge and passthru).

import type { ConfigTree } from '../../config/tree.js';

export type PciRegName = 'vendor' | 'device' | 'revid' | 'subvendor' | 'subdevice';

/** Host identification values, for `host` overrides. */
export type HostPciIds = Partial<Record<PciRegName, number>>;

/** Parses a hex config value the way bhyve's strtol(.., 16) use accepts it,
 * but refuses garbage instead of silently reading 0. */
export function parsePciHex(value: string, what: string, size: 1 | 2 | 4): number {
  const m = /^\s*(?:0x)?([0-9a-f]+)\s*$/i.exec(value);
  if (!m) throw new Error(`invalid value '${value}' for ${what} (use a hexadecimal number or 'host')`);
  const n = parseInt(m[1], 16);
  const max = size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
  if (n > max) throw new Error(`value '${value}' for ${what} does not fit in ${size * 8} bits`);
  return n;
}

/**
 * The value of one identification register: the `pcireg.<reg>` override
 * under `node` when set, else `dflt`. `host` gives the host's value; with no
 * host device known it is an error (bhyve would silently use 0).
 */
export function readPciReg(
  config: ConfigTree, node: string, reg: PciRegName, size: 1 | 2, dflt: number, host?: HostPciIds,
): number {
  const path = `${node}.pcireg.${reg}`;
  const value = config.get(path);
  if (value === undefined) return dflt;
  if (value.trim().toLowerCase() === 'host') {
    const h = host?.[reg];
    if (h === undefined) throw new Error(`${path}=host: no matching host PCI device found to copy the value from`);
    return h;
  }
  return parsePciHex(value, path, size);
}
