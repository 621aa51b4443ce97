import { describe, expect, it } from 'vitest';
import type { ByteStream, InterruptSink, PortIoHandler, DeviceContext } from '../../src/devices/device.js';
import {
  Uart16550, createLpcUart, LPC_UART_RESOURCES,
  REG_DATA, REG_IER, REG_IIR, REG_FCR, REG_LCR, REG_MCR, REG_LSR, REG_MSR, REG_SCR, REG_DLL, REG_DLH,
  IER_ERXRDY, IER_ETXRDY, IER_ERLS, IER_EMSC,
  IIR_NOPEND, IIR_TXRDY, IIR_RXTOUT, IIR_RLS, IIR_MLSC, IIR_FIFO_MASK,
  FCR_ENABLE, FCR_RCV_RST, LCR_DLAB, MCR_LOOPBACK, MCR_RTS, MCR_DTR, MCR_OUT1, MCR_OUT2,
  LSR_RXRDY, LSR_OE, LSR_THRE, LSR_TEMT,
  MSR_CTS, MSR_DSR, MSR_RI, MSR_DCD, MSR_DCTS, MSR_DDSR, MSR_DDCD, MSR_TERI,
} from '../../src/devices/lpc/uart.js';
import { ByteRing } from '../../src/vmm/byte-ring.js';

class FakeIrq implements InterruptSink {
  level = new Map<number, boolean>();
  edges: number[] = [];
  log: Array<[number, boolean]> = [];
  setLevel(gsi: number, high: boolean): void {
    if (high && !this.level.get(gsi)) this.edges.push(gsi);
    this.level.set(gsi, high);
    this.log.push([gsi, high]);
  }
  pulse(gsi: number): void { this.setLevel(gsi, true); this.setLevel(gsi, false); }
  signalMsi(): void { throw new Error('no MSI for an ISA UART'); }
  high(gsi: number): boolean { return this.level.get(gsi) ?? false; }
}

class FakeStream implements ByteStream {
  input: number[] = [];
  output: number[] = [];
  readByte(): number { return this.input.length ? this.input.shift()! : -1; }
  hasInput(): boolean { return this.input.length > 0; }
  write(bytes: Uint8Array): void { this.output.push(...bytes); }
  feed(s: string): void { for (const c of Buffer.from(s, 'latin1')) this.input.push(c); }
  text(): string { return Buffer.from(this.output).toString('latin1'); }
}

const BASE = 0x3f8;
const IRQ = 4;

function setup(stream: ByteStream | undefined = new FakeStream()) {
  const irq = new FakeIrq();
  const uart = new Uart16550(irq, IRQ, stream, BASE);
  const inb = (off: number): number => uart.read(BASE + off, 1);
  const outb = (off: number, v: number): void => uart.write(BASE + off, 1, v);
  return { irq, uart, inb, outb, stream: stream as FakeStream };
}

/** What a guest driver does first: 115200 8N1, FIFO on. */
function initPort(outb: (o: number, v: number) => void): void {
  outb(REG_IER, 0);
  outb(REG_LCR, LCR_DLAB);
  outb(REG_DLL, 1);
  outb(REG_DLH, 0);
  outb(REG_LCR, 0x03);
  outb(REG_FCR, FCR_ENABLE | FCR_RCV_RST | 0x04 | 0xc0);
  outb(REG_MCR, MCR_DTR | MCR_RTS | MCR_OUT2);
}

describe('Uart16550 registers', () => {
  it('has bhyve reset values', () => {
    const { inb, outb, uart } = setup();
    expect(inb(REG_IER)).toBe(0);
    expect(inb(REG_IIR)).toBe(IIR_NOPEND);
    expect(inb(REG_LCR)).toBe(0);
    expect(inb(REG_MCR)).toBe(0);
    expect(inb(REG_LSR)).toBe(LSR_THRE | LSR_TEMT);
    expect(inb(REG_MSR)).toBe(MSR_DCD | MSR_DSR);
    expect(uart.divisor).toBe(12); // 1843200 / 9600 / 16
    outb(REG_LCR, LCR_DLAB);
    expect(inb(REG_DLL)).toBe(12);
    expect(inb(REG_DLH)).toBe(0);
  });

  it('programs the divisor latch through DLAB without touching THR/IER', () => {
    const { inb, outb, uart, stream } = setup();
    outb(REG_IER, IER_ERXRDY);
    outb(REG_LCR, LCR_DLAB | 0x03);
    outb(REG_DLL, 0x34);
    outb(REG_DLH, 0x12);
    expect(uart.divisor).toBe(0x1234);
    expect(inb(REG_DLL)).toBe(0x34);
    expect(inb(REG_DLH)).toBe(0x12);
    expect(stream.output).toEqual([]);
    outb(REG_LCR, 0x03);
    expect(inb(REG_IER)).toBe(IER_ERXRDY);
    expect(inb(REG_LCR)).toBe(0x03);
  });

  it('masks IER and MCR reserved bits; SCR is plain storage', () => {
    const { inb, outb } = setup();
    outb(REG_IER, 0xff);
    expect(inb(REG_IER)).toBe(0x0f);
    outb(REG_MCR, 0xff);
    expect(inb(REG_MCR)).toBe(0x1f);
    outb(REG_SCR, 0xa5);
    expect(inb(REG_SCR)).toBe(0xa5);
  });

  it('transmits THR bytes to the stream', () => {
    const { outb, stream } = setup();
    initPort(outb);
    for (const c of Buffer.from('hello\r\n')) outb(REG_DATA, c);
    expect(stream.text()).toBe('hello\r\n');
  });

  it('drops output and sees no input without a backend', () => {
    const { outb, inb, uart } = setup(undefined);
    initPort(outb);
    outb(REG_DATA, 0x41);
    uart.poll();
    expect(inb(REG_LSR) & LSR_RXRDY).toBe(0);
  });

  it('receives input: LSR.DR, RBR, FIFO enabled bits in IIR', () => {
    const { inb, outb, uart, stream } = setup();
    initPort(outb);
    expect(inb(REG_IIR) & IIR_FIFO_MASK).toBe(IIR_FIFO_MASK);
    stream.feed('ok');
    uart.poll();
    expect(inb(REG_LSR) & LSR_RXRDY).toBe(LSR_RXRDY);
    expect(inb(REG_DATA)).toBe(0x6f);
    expect(inb(REG_LSR) & LSR_RXRDY).toBe(LSR_RXRDY);
    expect(inb(REG_DATA)).toBe(0x6b);
    expect(inb(REG_LSR) & LSR_RXRDY).toBe(0);
  });

  it('sees input on an LSR read even before poll() (guest polling)', () => {
    const { inb, outb, stream } = setup();
    initPort(outb);
    stream.feed('x');
    expect(inb(REG_LSR) & LSR_RXRDY).toBe(LSR_RXRDY);
    expect(inb(REG_DATA)).toBe(0x78);
  });

  it('holds one byte in 16450 mode and 16 with the FIFO, leaving the rest in the backend', () => {
    const { inb, outb, uart, stream } = setup();
    stream.feed('abc');
    uart.poll();
    expect(stream.input.length).toBe(2); // 1-byte holding register
    expect(inb(REG_DATA)).toBe(0x61);
    expect(inb(REG_DATA)).toBe(0x62);
    expect(inb(REG_DATA)).toBe(0x63);
    outb(REG_FCR, FCR_ENABLE);
    stream.feed('0123456789abcdefXYZ');
    uart.poll();
    expect(stream.input.length).toBe(3);
    let got = '';
    while (inb(REG_LSR) & LSR_RXRDY) got += String.fromCharCode(inb(REG_DATA));
    expect(got).toBe('0123456789abcdefXYZ');
  });

  it('FCR receive reset empties the FIFO; leaving FIFO mode clears FCR', () => {
    const { inb, outb, uart, stream } = setup();
    outb(REG_FCR, FCR_ENABLE);
    outb(REG_MCR, MCR_LOOPBACK);
    outb(REG_DATA, 1);
    outb(REG_DATA, 2);
    outb(REG_FCR, FCR_ENABLE | FCR_RCV_RST);
    expect(inb(REG_LSR) & LSR_RXRDY).toBe(0);
    outb(REG_FCR, 0);
    expect(inb(REG_IIR) & IIR_FIFO_MASK).toBe(0);
    expect(stream.output).toEqual([]);
    void uart;
  });

  it('splits 2-byte accesses into byte accesses', () => {
    const { uart, inb } = setup();
    uart.write(BASE + REG_LCR, 2, 0x0b03); // LCR=3, MCR=0x0b
    expect(inb(REG_LCR)).toBe(0x03);
    expect(inb(REG_MCR)).toBe(0x0b);
    expect(uart.read(BASE + REG_LCR, 2)).toBe(0x0b03);
  });
});

describe('Uart16550 interrupts', () => {
  it('raises THRE when ETXRDY is enabled; an IIR read clears it and lowers the line', () => {
    const { inb, outb, irq } = setup();
    initPort(outb);
    expect(irq.high(IRQ)).toBe(false);
    outb(REG_IER, IER_ETXRDY);
    expect(irq.high(IRQ)).toBe(true);
    expect(irq.edges).toEqual([IRQ]);
    expect(inb(REG_IIR)).toBe(IIR_FIFO_MASK | IIR_TXRDY);
    expect(irq.high(IRQ)).toBe(false);
    expect(inb(REG_IIR)).toBe(IIR_FIFO_MASK | IIR_NOPEND);
    // Writing THR makes THRE pending again: a new edge.
    outb(REG_DATA, 0x41);
    expect(irq.high(IRQ)).toBe(true);
    expect(irq.edges).toEqual([IRQ, IRQ]);
    // Disabling the interrupt lowers the line.
    outb(REG_IER, 0);
    expect(irq.high(IRQ)).toBe(false);
  });

  it('rx data interrupt follows the FIFO level', () => {
    const { inb, outb, uart, irq, stream } = setup();
    initPort(outb);
    outb(REG_IER, IER_ERXRDY);
    expect(irq.high(IRQ)).toBe(false);
    stream.feed('hi');
    uart.poll();
    expect(irq.high(IRQ)).toBe(true);
    expect(inb(REG_IIR) & 0x0f).toBe(IIR_RXTOUT);
    inb(REG_DATA);
    expect(irq.high(IRQ)).toBe(true);
    inb(REG_DATA);
    expect(irq.high(IRQ)).toBe(false);
    expect(inb(REG_IIR) & 0x0f).toBe(IIR_NOPEND);
  });

  it('prioritises line status > rx data > THR empty > modem status', () => {
    const { inb, outb, irq } = setup();
    outb(REG_FCR, FCR_ENABLE);
    outb(REG_IER, IER_ERXRDY | IER_ETXRDY | IER_ERLS | IER_EMSC);
    outb(REG_MCR, MCR_LOOPBACK | MCR_RTS); // CTS changes: DCTS
    for (let i = 0; i < 17; i++) outb(REG_DATA, 0x30 + i); // overrun: OE
    expect(irq.high(IRQ)).toBe(true);
    expect(inb(REG_IIR) & 0x0f).toBe(IIR_RLS);
    expect(inb(REG_LSR) & LSR_OE).toBe(LSR_OE); // reading LSR clears OE
    expect(inb(REG_IIR) & 0x0f).toBe(IIR_RXTOUT);
    for (let i = 0; i < 16; i++) inb(REG_DATA);
    expect(inb(REG_IIR) & 0x0f).toBe(IIR_TXRDY); // and this read clears THRE
    expect(inb(REG_IIR) & 0x0f).toBe(IIR_MLSC);
    expect(irq.high(IRQ)).toBe(true);
    expect(inb(REG_MSR) & MSR_DCTS).toBe(MSR_DCTS); // reading MSR clears deltas
    expect(inb(REG_IIR) & 0x0f).toBe(IIR_NOPEND);
    expect(irq.high(IRQ)).toBe(false);
  });

  it('keeps the line low when reasons are pending but not enabled', () => {
    const { outb, uart, irq, stream } = setup();
    initPort(outb);
    stream.feed('z');
    uart.poll();
    outb(REG_DATA, 0x41);
    expect(irq.log.filter(([, h]) => h)).toEqual([]);
  });

  it('reset() drops the line and restores power-on state', () => {
    const { inb, outb, uart, irq } = setup();
    outb(REG_IER, IER_ETXRDY);
    expect(irq.high(IRQ)).toBe(true);
    uart.reset();
    expect(irq.high(IRQ)).toBe(false);
    expect(inb(REG_IER)).toBe(0);
  });
});

describe('Uart16550 loopback and modem lines', () => {
  it('loops tx back to rx and never reaches the backend', () => {
    const { inb, outb, stream } = setup();
    initPort(outb);
    outb(REG_MCR, MCR_LOOPBACK);
    outb(REG_DATA, 0x55);
    expect(stream.output).toEqual([]);
    expect(inb(REG_LSR) & LSR_RXRDY).toBe(LSR_RXRDY);
    expect(inb(REG_DATA)).toBe(0x55);
  });

  it('does not take host input while in loopback, and keeps it for later', () => {
    const { inb, outb, uart, stream } = setup();
    outb(REG_MCR, MCR_LOOPBACK);
    stream.feed('q');
    uart.poll();
    expect(inb(REG_LSR) & LSR_RXRDY).toBe(0);
    outb(REG_MCR, 0);
    expect(inb(REG_LSR) & LSR_RXRDY).toBe(LSR_RXRDY);
    expect(inb(REG_DATA)).toBe(0x71);
  });

  it('sets OE when the rx FIFO overflows (16450 mode: second byte)', () => {
    const { inb, outb } = setup();
    outb(REG_MCR, MCR_LOOPBACK);
    outb(REG_DATA, 1);
    expect(inb(REG_LSR) & LSR_OE).toBe(0);
    outb(REG_DATA, 2);
    const lsr = inb(REG_LSR);
    expect(lsr & (LSR_OE | LSR_RXRDY)).toBe(LSR_OE | LSR_RXRDY);
    expect(inb(REG_LSR) & LSR_OE).toBe(0);
    expect(inb(REG_DATA)).toBe(1);
  });

  it('sets OE on the 17th byte with the FIFO enabled', () => {
    const { inb, outb } = setup();
    outb(REG_FCR, FCR_ENABLE);
    outb(REG_MCR, MCR_LOOPBACK);
    for (let i = 0; i < 16; i++) outb(REG_DATA, i);
    expect(inb(REG_LSR) & LSR_OE).toBe(0);
    outb(REG_DATA, 16);
    expect(inb(REG_LSR) & LSR_OE).toBe(LSR_OE);
    const got: number[] = [];
    while (inb(REG_LSR) & LSR_RXRDY) got.push(inb(REG_DATA));
    expect(got).toEqual([...Array(16).keys()]);
  });

  it('reflects MCR outputs into MSR in loopback, with delta bits', () => {
    const { inb, outb } = setup();
    outb(REG_MCR, MCR_LOOPBACK);
    // DCD and DSR dropped (they are always on outside loopback)
    expect(inb(REG_MSR)).toBe(MSR_DDCD | MSR_DDSR);
    expect(inb(REG_MSR)).toBe(0);
    outb(REG_MCR, MCR_LOOPBACK | MCR_RTS | MCR_DTR | MCR_OUT1 | MCR_OUT2);
    expect(inb(REG_MSR)).toBe(MSR_CTS | MSR_DSR | MSR_RI | MSR_DCD | MSR_DCTS | MSR_DDSR | MSR_DDCD);
    outb(REG_MCR, MCR_LOOPBACK | MCR_RTS | MCR_DTR | MCR_OUT2); // RI falls: TERI
    expect(inb(REG_MSR)).toBe(MSR_CTS | MSR_DSR | MSR_DCD | MSR_TERI);
    outb(REG_MCR, 0);
    expect(inb(REG_MSR)).toBe(MSR_DCD | MSR_DSR | MSR_DCTS);
  });
});

describe('createLpcUart', () => {
  function fakeCtx(streams: Record<string, ByteStream>) {
    const regs: Array<{ name: string; base: number; length: number; handler: PortIoHandler }> = [];
    const irq = new FakeIrq();
    const ctx = {
      io: {
        registerPorts: (name: string, base: number, length: number, handler: PortIoHandler) => regs.push({ name, base, length, handler }),
        registerMmio: () => { throw new Error('no mmio'); },
      },
      irq,
      stream: (key: string) => streams[key],
    } as unknown as DeviceContext;
    return { ctx, regs, irq };
  }

  it('uses bhyve\'s COM resources', () => {
    expect(LPC_UART_RESOURCES).toEqual({
      com1: { base: 0x3f8, irq: 4 }, com2: { base: 0x2f8, irq: 3 },
      com3: { base: 0x3e8, irq: 4 }, com4: { base: 0x2e8, irq: 3 },
    });
  });

  it('registers 8 ports and talks to the lpc.comN stream through a ring', () => {
    const rx = ByteRing.create(64);
    const out: number[] = [];
    const stream: ByteStream = {
      readByte: () => rx.pop(),
      hasInput: () => rx.available() > 0,
      write: (b) => { out.push(...b); },
    };
    const { ctx, regs, irq } = fakeCtx({ 'lpc.com2': stream });
    const dev = createLpcUart(ctx, 'com2');
    expect(dev.name).toBe('com2');
    expect(regs).toHaveLength(1);
    expect(regs[0]).toMatchObject({ name: 'com2', base: 0x2f8, length: 8 });
    const h = regs[0].handler;
    h.write(0x2f8 + REG_IER, 1, IER_ERXRDY);
    rx.push(Buffer.from('A'));
    dev.poll!();
    expect(irq.high(3)).toBe(true);
    expect(h.read(0x2f8 + REG_DATA, 1)).toBe(0x41);
    expect(irq.high(3)).toBe(false);
    h.write(0x2f8 + REG_DATA, 1, 0x42);
    expect(out).toEqual([0x42]);
  });

  it('works without a backend', () => {
    const { ctx, regs } = fakeCtx({});
    createLpcUart(ctx, 'com1');
    regs[0].handler.write(0x3f8, 1, 0x41);
    expect(regs[0].handler.read(0x3f8 + REG_LSR, 1)).toBe(LSR_THRE | LSR_TEMT);
  });
});
