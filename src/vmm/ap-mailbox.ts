// Device models live on one thread (the boot vCPU's). Another vCPU that
// exits on a device access posts it here and kicks the device thread, which
// performs it on its LocalIoBus and answers. One mailbox per vCPU.

import type { AccessSize } from '../devices/device.js';
import type { IoBus } from './io-bus.js';

const STATE = 0;
const OP = 1;
const SIZE = 2;
const ADDR_LO = 3;
const ADDR_HI = 4;
const VALUE = 5;
const HANDLED = 6;
const DATA_BYTE_OFFSET = 32;
const BYTES = 48;

const IDLE = 0;
const REQUEST = 1;
const DONE = 2;

const OP_PORT_READ = 1;
const OP_PORT_WRITE = 2;
const OP_MMIO_READ = 3;
const OP_MMIO_WRITE = 4;

export class Mailbox {
  readonly words: Int32Array;
  readonly data: Uint8Array;

  constructor(readonly sab: SharedArrayBuffer) {
    this.words = new Int32Array(sab, 0, 8);
    this.data = new Uint8Array(sab, DATA_BYTE_OFFSET, 8);
  }

  static create(): Mailbox { return new Mailbox(new SharedArrayBuffer(BYTES)); }

  /** Device-thread side: performs a pending request, if any. */
  serve(bus: IoBus): void {
    const w = this.words;
    if (Atomics.load(w, STATE) !== REQUEST) return;
    const size = w[SIZE] as AccessSize;
    const addr = (w[ADDR_LO] >>> 0) + (w[ADDR_HI] >>> 0) * 0x100000000;
    let handled = true;
    switch (w[OP]) {
      case OP_PORT_READ: {
        const v = bus.portRead(addr, size);
        handled = v !== undefined;
        w[VALUE] = v ?? 0;
        break;
      }
      case OP_PORT_WRITE: handled = bus.portWrite(addr, size, w[VALUE] >>> 0); break;
      case OP_MMIO_READ: handled = bus.mmioRead(addr, this.data.subarray(0, size)); break;
      case OP_MMIO_WRITE: handled = bus.mmioWrite(addr, this.data.subarray(0, size)); break;
      default: handled = false;
    }
    w[HANDLED] = handled ? 1 : 0;
    Atomics.store(w, STATE, DONE);
    Atomics.notify(w, STATE);
  }
}

/** The IoBus of a vCPU that does not own the devices. */
export class ForwardingIoBus implements IoBus {
  constructor(
    private readonly box: Mailbox,
    private readonly kickDeviceThread: () => void,
    private readonly stopped: () => boolean,
  ) {}

  private call(op: number, addr: number, size: number, value: number): boolean {
    const w = this.box.words;
    w[OP] = op;
    w[SIZE] = size;
    w[ADDR_LO] = addr >>> 0;
    w[ADDR_HI] = Math.floor(addr / 0x100000000);
    w[VALUE] = value | 0;
    Atomics.store(w, STATE, REQUEST);
    this.kickDeviceThread();
    while (Atomics.load(w, STATE) === REQUEST) {
      if (Atomics.wait(w, STATE, REQUEST, 50) === 'timed-out') {
        if (this.stopped()) { Atomics.store(w, STATE, IDLE); return false; }
        this.kickDeviceThread();
      }
    }
    Atomics.store(w, STATE, IDLE);
    return w[HANDLED] === 1;
  }

  portRead(port: number, size: AccessSize): number | undefined {
    return this.call(OP_PORT_READ, port, size, 0) ? this.box.words[VALUE] >>> 0 : undefined;
  }

  portWrite(port: number, size: AccessSize, value: number): boolean {
    return this.call(OP_PORT_WRITE, port, size, value);
  }

  mmioRead(addr: number, data: Uint8Array): boolean {
    const ok = this.call(OP_MMIO_READ, addr, data.length, 0);
    if (ok) data.set(this.box.data.subarray(0, data.length));
    return ok;
  }

  mmioWrite(addr: number, data: Uint8Array): boolean {
    this.box.data.set(data);
    return this.call(OP_MMIO_WRITE, addr, data.length, 0);
  }
}
