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

import type { DeviceContext, InterruptSink } from './device.js';
import type { PciDeviceModel } from './pci-device.js';
import { PciEmulFunction } from './pci/pci-emul.js';
import { UART_IO_BAR_SIZE, Uart16550 } from './lpc/uart.js';
// The backends the main thread opens (pci-uart-record.ts), importable from here.
export { pciUartBackends } from './pci-uart-record.js';

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

/** The emulation of its record (pci-uart-record.ts). */
export const uartModel: PciDeviceModel = {
  create: (ctx, s) => new PciUart(ctx, s.node),
};
