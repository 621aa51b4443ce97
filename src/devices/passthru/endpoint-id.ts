// The PCI requester id of a function (bus << 8 | slot << 3 | func): the
// endpoint its DMA space is kept under.
export function pciEndpoint(bus: number, slot: number, func: number): number {
  return ((bus & 0xff) << 8) | ((slot & 0x1f) << 3) | (func & 7);
}
