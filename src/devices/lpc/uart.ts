// A 16550A UART, modelled on bhyve's uart_emul.c: the same registers, the
// same reset values, the same interrupt-reason priorities and side effects.
// The model is pure: no fds, no threads. Host input arrives through a
// ByteStream (the device thread calls poll() after the main thread kicks it;
// guest port reads also look at the stream), output goes to the same stream.
//
// Differences from bhyve, on purpose:
//  - Interrupt line. bhyve's LPC glue pulses the ISA IRQ each time the UART
//    is accessed while an interrupt reason is pending, and does nothing on
//    deassert. KVM's PIC/IOAPIC ISA inputs latch an edge on a 0->1 transition
//    of the line, so we drive the line as the real chip does: high while any
//    enabled reason is pending, low when none is (setLevel on each change).
//    Guest drivers (Linux 8250, FreeBSD uart(4)) loop on IIR until NOPEND, so
//    an edge is never lost; a new reason after NOPEND gives a new edge.
//  - A FIFO reset (FCR) does not flush host input still waiting in the
//    backend, and host input is not read-and-discarded while in loopback mode
//    (bhyve does both); so scripted input written before the guest driver
//    initialises the port is not lost.
//  - 2- and 4-byte accesses are split into byte accesses (bhyve handles 1 and
//    2 bytes and fails the access otherwise).

import type {
  AccessSize,
  ByteStream,
  Device,
  DeviceContext,
  InterruptSink,
  PortIoHandler,
} from '../device.js';

// Register offsets (dev/ic/ns16550.h).
export const REG_DATA = 0; // RBR (read) / THR (write)
export const REG_IER = 1;
export const REG_IIR = 2; // IIR (read) / FCR (write)
export const REG_FCR = 2;
export const REG_LCR = 3;
export const REG_MCR = 4;
export const REG_LSR = 5;
export const REG_MSR = 6;
export const REG_SCR = 7;
export const REG_DLL = 0; // with LCR.DLAB
export const REG_DLH = 1; // with LCR.DLAB

export const IER_ERXRDY = 0x01;
export const IER_ETXRDY = 0x02;
export const IER_ERLS = 0x04;
export const IER_EMSC = 0x08;

export const IIR_MLSC = 0x00;
export const IIR_NOPEND = 0x01;
export const IIR_TXRDY = 0x02;
export const IIR_RXRDY = 0x04;
export const IIR_RLS = 0x06;
export const IIR_RXTOUT = 0x0c;
export const IIR_FIFO_MASK = 0xc0;

export const FCR_ENABLE = 0x01;
export const FCR_RCV_RST = 0x02;
export const FCR_XMT_RST = 0x04;
export const FCR_DMA = 0x08;
export const FCR_RX_MASK = 0xc0;

export const LCR_DLAB = 0x80;

export const MCR_DTR = 0x01;
export const MCR_RTS = 0x02;
export const MCR_OUT1 = 0x04;
export const MCR_OUT2 = 0x08;
export const MCR_LOOPBACK = 0x10;

export const LSR_RXRDY = 0x01;
export const LSR_OE = 0x02;
export const LSR_THRE = 0x20;
export const LSR_TEMT = 0x40;

export const MSR_DCTS = 0x01;
export const MSR_DDSR = 0x02;
export const MSR_TERI = 0x04;
export const MSR_DDCD = 0x08;
export const MSR_CTS = 0x10;
export const MSR_DSR = 0x20;
export const MSR_RI = 0x40;
export const MSR_DCD = 0x80;
export const MSR_DELTA_MASK = 0x0f;

export const UART_IO_BAR_SIZE = 8;
export const FIFOSZ = 16;
const DEFAULT_RCLK = 1843200;
const DEFAULT_BAUD = 9600;

/** The receive FIFO: 1 byte deep in 16450 mode, 16 with FCR.ENABLE. */
class RxFifo {
  private readonly buf = new Uint8Array(FIFOSZ);
  private rindex = 0;
  private windex = 0;
  num = 0;
  size = 1;

  reset(size: number): void {
    this.buf.fill(0);
    this.rindex = 0;
    this.windex = 0;
    this.num = 0;
    this.size = size;
  }

  hasRoom(): boolean {
    return this.num < this.size;
  }

  put(ch: number): boolean {
    if (this.num >= this.size) return false;
    this.buf[this.windex] = ch & 0xff;
    this.windex = (this.windex + 1) % this.size;
    this.num++;
    return true;
  }

  get(): number {
    if (this.num === 0) return -1;
    const c = this.buf[this.rindex];
    this.rindex = (this.rindex + 1) % this.size;
    this.num--;
    return c;
  }
}

/** MSR as the modem lines make it (without delta bits). */
function modemStatus(mcr: number): number {
  if (mcr & MCR_LOOPBACK) {
    // In loopback mode the MCR outputs are reflected into the MSR inputs.
    let msr = 0;
    if (mcr & MCR_RTS) msr |= MSR_CTS;
    if (mcr & MCR_DTR) msr |= MSR_DSR;
    if (mcr & MCR_OUT1) msr |= MSR_RI;
    if (mcr & MCR_OUT2) msr |= MSR_DCD;
    return msr;
  }
  // Always assert DCD and DSR so a tty open doesn't block even without CLOCAL.
  return MSR_DCD | MSR_DSR;
}

export class Uart16550 implements PortIoHandler {
  private data = 0;
  private ier = 0;
  private lcr = 0;
  private mcr = 0;
  private lsr = 0;
  private msr = 0;
  private fcr = 0;
  private scr = 0;
  private dll = 0;
  private dlh = 0;
  private threIntPending = false;
  private readonly rxfifo = new RxFifo();
  private irqHigh = false;
  private readonly one = new Uint8Array(1);

  /**
   * @param irq     where the interrupt line is driven
   * @param irqLine the ISA IRQ / GSI number
   * @param stream  the host backend; without one, output is dropped and no input arrives
   * @param base    the first I/O port (offsets are computed as port - base)
   */
  constructor(
    private readonly irq: InterruptSink,
    readonly irqLine: number,
    private readonly stream?: ByteStream,
    readonly base = 0,
  ) {
    this.reset();
  }

  /** Power-on state (bhyve's uart_init + uart_reset). */
  reset(): void {
    this.data = 0;
    this.ier = 0;
    this.lcr = 0;
    this.mcr = 0;
    this.lsr = 0;
    this.fcr = 0;
    this.scr = 0;
    this.threIntPending = false;
    const divisor = Math.floor(DEFAULT_RCLK / DEFAULT_BAUD / 16);
    this.dll = divisor & 0xff;
    this.dlh = (divisor >> 8) & 0xff;
    this.msr = modemStatus(this.mcr);
    this.rxfifo.reset(1); // no FIFO until enabled by software
    this.updateIrq();
  }

  /** Pulls waiting host input into the RX FIFO and re-evaluates the interrupt. */
  poll(): void {
    this.drain();
    this.updateIrq();
  }

  /** True while the interrupt output is asserted. */
  get interruptPending(): boolean {
    return this.irqHigh;
  }

  /** The current divisor latch value (DLM:DLL). */
  get divisor(): number {
    return (this.dlh << 8) | this.dll;
  }

  // ---- PortIoHandler ----

  read(port: number, size: AccessSize): number {
    const off = port - this.base;
    let v = 0;
    for (let i = 0; i < size; i++) v |= this.readReg(off + i) << (8 * i);
    return v >>> 0;
  }

  write(port: number, size: AccessSize, value: number): void {
    const off = port - this.base;
    for (let i = 0; i < size; i++) this.writeReg(off + i, (value >>> (8 * i)) & 0xff);
  }

  // ---- register model ----

  /** One byte read at register offset `offset` (0..7). */
  readReg(offset: number): number {
    // Host input that arrived since the last poll is visible right away
    // (e.g. to a guest polling LSR with interrupts off).
    this.drain();
    let reg: number;
    if ((this.lcr & LCR_DLAB) !== 0 && (offset === REG_DLL || offset === REG_DLH)) {
      reg = offset === REG_DLL ? this.dll : this.dlh;
    } else {
      switch (offset) {
        case REG_DATA: {
          const c = this.rxfifo.get();
          // An empty FIFO reads as 0xff in bhyve (rxfifo_getchar returns -1).
          reg = c & 0xff;
          if (c >= 0) this.drain();
          break;
        }
        case REG_IER:
          reg = this.ier;
          break;
        case REG_IIR: {
          const iir = (this.fcr & FCR_ENABLE) !== 0 ? IIR_FIFO_MASK : 0;
          const reason = this.intrReason();
          // Reading IIR while it reports THRE clears that interrupt.
          if (reason === IIR_TXRDY) this.threIntPending = false;
          reg = iir | reason;
          break;
        }
        case REG_LCR:
          reg = this.lcr;
          break;
        case REG_MCR:
          reg = this.mcr;
          break;
        case REG_LSR:
          // The transmitter is always ready for more data.
          this.lsr |= LSR_TEMT | LSR_THRE;
          if (this.rxfifo.num > 0) this.lsr |= LSR_RXRDY;
          else this.lsr &= ~LSR_RXRDY;
          reg = this.lsr;
          this.lsr &= ~LSR_OE; // OE is cleared when LSR is read
          break;
        case REG_MSR:
          reg = this.msr;
          this.msr &= ~MSR_DELTA_MASK; // delta bits are cleared on read
          break;
        case REG_SCR:
          reg = this.scr;
          break;
        default:
          reg = 0xff;
          break;
      }
    }
    this.updateIrq();
    return reg & 0xff;
  }

  /** One byte write of `value` at register offset `offset` (0..7). */
  writeReg(offset: number, value: number): void {
    value &= 0xff;
    if ((this.lcr & LCR_DLAB) !== 0 && (offset === REG_DLL || offset === REG_DLH)) {
      if (offset === REG_DLL) this.dll = value;
      else this.dlh = value;
      this.updateIrq();
      return;
    }
    switch (offset) {
      case REG_DATA:
        this.data = value;
        if ((this.mcr & MCR_LOOPBACK) !== 0) {
          if (!this.rxfifo.put(value)) this.lsr |= LSR_OE;
        } else if (this.stream !== undefined) {
          this.one[0] = value;
          this.stream.write(this.one);
        } // else: dropped on the floor
        this.threIntPending = true;
        break;
      case REG_IER:
        // Re-enabling the THRE interrupt raises it, since THRE always reads as set.
        if ((this.ier & IER_ETXRDY) === 0 && (value & IER_ETXRDY) !== 0) this.threIntPending = true;
        this.ier = value & 0x0f;
        break;
      case REG_FCR:
        // Switching between FIFO and 16450 mode resets the FIFO.
        if (((this.fcr ^ value) & FCR_ENABLE) !== 0) {
          this.rxfifo.reset((value & FCR_ENABLE) !== 0 ? FIFOSZ : 1);
        }
        // FCR_ENABLE must be set for the other bits to take effect.
        if ((value & FCR_ENABLE) === 0) {
          this.fcr = 0;
        } else {
          if ((value & FCR_RCV_RST) !== 0) this.rxfifo.reset(FIFOSZ);
          // FCR_XMT_RST: the transmitter has no FIFO to reset here (output
          // is written out synchronously).
          this.fcr = value & (FCR_ENABLE | FCR_DMA | FCR_RX_MASK);
        }
        break;
      case REG_LCR:
        this.lcr = value;
        break;
      case REG_MCR: {
        this.mcr = value & 0x1f;
        const msr = modemStatus(this.mcr);
        // Set the delta bits for every modem line that changed.
        if ((msr ^ this.msr) & MSR_CTS) this.msr |= MSR_DCTS;
        if ((msr ^ this.msr) & MSR_DSR) this.msr |= MSR_DDSR;
        if ((msr ^ this.msr) & MSR_DCD) this.msr |= MSR_DDCD;
        // TERI: RI went from on to off (trailing edge).
        if ((this.msr & MSR_RI) !== 0 && (msr & MSR_RI) === 0) this.msr |= MSR_TERI;
        this.msr = (this.msr & MSR_DELTA_MASK) | msr;
        break;
      }
      case REG_LSR: // not meant to be written during normal operation
      case REG_MSR: // read-only
        break;
      case REG_SCR:
        this.scr = value;
        break;
      default:
        break;
    }
    this.drain();
    this.updateIrq();
  }

  /** The highest-priority pending, enabled interrupt reason (an IIR_* value). */
  intrReason(): number {
    if ((this.lsr & LSR_OE) !== 0 && (this.ier & IER_ERLS) !== 0) return IIR_RLS;
    if (this.rxfifo.num > 0 && (this.ier & IER_ERXRDY) !== 0) return IIR_RXTOUT;
    if (this.threIntPending && (this.ier & IER_ETXRDY) !== 0) return IIR_TXRDY;
    if ((this.msr & MSR_DELTA_MASK) !== 0 && (this.ier & IER_EMSC) !== 0) return IIR_MLSC;
    return IIR_NOPEND;
  }

  /** Moves host input into the RX FIFO while there is room (not in loopback). */
  private drain(): void {
    const s = this.stream;
    if (s === undefined || (this.mcr & MCR_LOOPBACK) !== 0) return;
    while (this.rxfifo.hasRoom() && s.hasInput()) {
      const c = s.readByte();
      if (c < 0) break;
      this.rxfifo.put(c);
    }
  }

  /** Drives the interrupt line to the level the state calls for (uart_toggle_intr). */
  private updateIrq(): void {
    const want = this.intrReason() !== IIR_NOPEND;
    if (want === this.irqHigh) return;
    this.irqHigh = want;
    this.irq.setLevel(this.irqLine, want);
  }
}

export type LpcUartName = 'com1' | 'com2' | 'com3' | 'com4';

/** The LPC UARTs: I/O base and ISA IRQ, as bhyve's uart_lres table. */
export const LPC_UART_RESOURCES: Readonly<Record<LpcUartName, { base: number; irq: number }>> = {
  com1: { base: 0x3f8, irq: 4 },
  com2: { base: 0x2f8, irq: 3 },
  com3: { base: 0x3e8, irq: 4 },
  com4: { base: 0x2e8, irq: 3 },
};

export interface LpcUartDevice extends Device {
  readonly uart: Uart16550;
  readonly base: number;
  readonly irqLine: number;
}

/** Creates an LPC UART (com1..com4), registers its 8 ports and attaches the
 * host stream prepared for 'lpc.<which>' (none: output dropped, no input). */
export function createLpcUart(ctx: DeviceContext, which: LpcUartName): LpcUartDevice {
  const res = LPC_UART_RESOURCES[which];
  if (res === undefined) throw new Error(`unknown LPC UART '${String(which)}' (use com1, com2, com3 or com4)`);
  const uart = new Uart16550(ctx.irq, res.irq, ctx.stream(`lpc.${which}`), res.base);
  ctx.io.registerPorts(which, res.base, UART_IO_BAR_SIZE, uart);
  return {
    name: which,
    uart,
    base: res.base,
    irqLine: res.irq,
    poll: () => uart.poll(),
    reset: () => uart.reset(),
  };
}
