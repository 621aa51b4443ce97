// The one walk of the pci.B.S.F tree. bhyve's init_pci looks up
// "pci.%d.%d.%d" for every bus 0-255, slot 0-31 and function 0-7, so only
// nodes named that way (decimal, no leading zeros) are PCI functions; any
// other name under pci is not looked at.

import type { ConfigTree } from './tree.js';

export const PCI_BUSMAX = 255;
export const PCI_SLOTMAX = 31;
export const PCI_FUNCMAX = 7;

export interface PciNode {
  bus: number;
  slot: number;
  func: number;
  /** "pci.B.S.F" */
  node: string;
  /** "B:S:F", as bhyve's messages print it */
  where: string;
}

function canonical(name: string, max: number): number | undefined {
  if (!/^(0|[1-9][0-9]*)$/.test(name)) return undefined;
  const n = Number(name);
  return n <= max ? n : undefined;
}

/** Every configured PCI function node, in bus/slot/function order. */
export function pciNodes(config: ConfigTree): PciNode[] {
  const out: PciNode[] = [];
  const children = (m: Map<string, unknown> | undefined, max: number): Array<[number, Map<string, unknown>]> => {
    const r: Array<[number, Map<string, unknown>]> = [];
    for (const [k, v] of m ?? []) {
      const n = canonical(k, max);
      if (n !== undefined && v instanceof Map) r.push([n, v as Map<string, unknown>]);
    }
    return r.sort((a, b) => a[0] - b[0]);
  };
  for (const [bus, busNode] of children(config.getNode('pci'), PCI_BUSMAX)) {
    for (const [slot, slotNode] of children(busNode, PCI_SLOTMAX)) {
      for (const [func] of children(slotNode, PCI_FUNCMAX)) {
        out.push({ bus, slot, func, node: `pci.${bus}.${slot}.${func}`, where: `${bus}:${slot}:${func}` });
      }
    }
  }
  return out;
}
