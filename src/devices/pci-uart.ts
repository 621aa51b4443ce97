// bhyve's PCI UART (pci_uart.c): a 16550 behind an 8-byte I/O BAR 0, with
// the IDs of a one-port SIIG CyberSerial (131f:2000, class 07 simple
// communications) and a legacy INTx line.
//
//   -s 5,uart[,path]      path: stdio, a terminal device or tcp=ADDR:PORT,
//                         the backends of -l comN (lpc/uart-backend.ts)
//
// The register model is the LPC UARTs' (lpc/uart.ts); only the interrupt
// differs: the 16550's interrupt output drives the function's INTx line
// (bhyve's pci_uart_intr_assert / _deassert call pci_lintr_assert /
// _deassert), which is level-triggered and shared, so the line stays high
// while a reason is pending. Without a path the device exists, output is
// dropped and no input arrives, as bhyve does.

import type { ConfigTree } from '../config/tree.js';
import { pciNodes } from '../config/pci-nodes.js';
import type { DeviceContext, InterruptSink } from './device.js';
import type { PciDeviceRecord } from './pci-device.js';
import { PciEmulFunction } from './pci/pci-emul.js';
import { UART_IO_BAR_SIZE, Uart16550 } from './lpc/uart.js';
import { setValue } from '../config/legacy.js';
import type { LegacyParser } from './pci-device.js';

/** "Siig CyberSerial 1-port", which most FreeBSD versions know (pci_uart.c). */
export const PCI_UART_VENDOR = 0x131f;
export const PCI_UART_DEVICE = 0x2000;
/** PCIC_SIMPLECOMM; bhyve leaves subclass (UART) and prog-if at 0. */
export const PCIC_SIMPLECOMM = 0x07;

export class PciUart extends PciEmulFunction {
  readonly uart: Uart16550;

  constructor(ctx: DeviceContext, streamKey: string) {
    super('uart', ctx);
    this.cfg.setIdentity({ vendor: PCI_UART_VENDOR, device: PCI_UART_DEVICE, classCode: PCIC_SIMPLECOMM, subclass: 0 });
    // The 16550's interrupt output is this function's INTx line.
    const line: InterruptSink = {
      setLevel: (_gsi, high) => { if (high) this.intxAssert(); else this.intxDeassert(); },
      pulse: () => { this.intxAssert(); this.intxDeassert(); },
      signalMsi: () => undefined,
    };
    this.uart = new Uart16550(line, 0, ctx.stream(streamKey));
    this.allocBar(0, 'io', UART_IO_BAR_SIZE, {
      read: (off, size) => this.uart.read(off, size),
      write: (off, size, v) => this.uart.write(off, size, v),
    });
    this.requestIntx();
  }

  poll(): void {
    this.uart.poll();
  }

  /** Machine reset: the UART at power-on, its line low. */
  reset(): void {
    this.uart.reset();
    this.resetInterrupts();
  }

  stats(): Record<string, number> {
    return { 'intx assertions': this.interruptCounts.intx };
  }
}

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
  create: (ctx, s) => new PciUart(ctx, s.node),
};
