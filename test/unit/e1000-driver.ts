// An e1000 driver for unit tests and the fuzz harness: the model with a
// fake backend (frames in, frames out), guest RAM as a plain buffer holding
// the descriptor rings and buffers, a timer the test fires by hand. No
// /dev/kvm, no tap.

import type { DeviceContext } from '../../src/devices/device.js';
import { E1000, R } from '../../src/devices/net/e1000.js';
import type { NetPort } from '../../src/devices/net/net-backend.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { ConfigTree } from '../../src/config/tree.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';
import { MsiLog } from './ahci-driver.js';

export const RAM = 0x100000;
export const RAM_SIZE = 4 << 20;
export const MAC = Uint8Array.from([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

/** A backend that keeps what the NIC sent and hands it queued frames. */
export class FakePort implements NetPort {
  readonly sent: Uint8Array[] = [];
  readonly rx: Uint8Array[] = [];
  peek(): Uint8Array | null { return this.rx[0] ?? null; }
  consume(): void { this.rx.shift(); }
  send(views: Uint8Array[]): boolean {
    const n = views.reduce((a, v) => a + v.length, 0);
    const f = new Uint8Array(n);
    let o = 0;
    for (const v of views) { f.set(v, o); o += v.length; }
    this.sent.push(f);
    return true;
  }
}

export class E1000Rig {
  readonly bytes = new Uint8Array(RAM_SIZE);
  readonly dv = new DataView(this.bytes.buffer);
  readonly mem: GuestMemory;
  readonly port = new FakePort();
  readonly irq = new MsiLog();
  readonly dev: E1000;
  /** The ITR timer's callback and deadline, fired by the test. */
  timerCb: (() => void) | undefined;
  timerAt: bigint | undefined;
  now = 0n;
  private heap = RAM + 0x10000;
  tdbase = 0;
  rdbase = 0;
  tdn = 0;
  rdn = 0;
  tail = 0;

  /** splitAt: guest RAM as two regions meeting at RAM + splitAt (as RAM
   * mapped in chunks is), one buffer underneath. */
  constructor(opts: { noPort?: boolean; splitAt?: number } = {}) {
    const at = opts.splitAt;
    this.mem = new GuestMemory(at === undefined ? [{ gpa: RAM, bytes: this.bytes }]
      : [{ gpa: RAM, bytes: this.bytes.subarray(0, at) }, { gpa: RAM + at, bytes: this.bytes.subarray(at) }]);
    const ctx: DeviceContext = {
      io: new LocalIoBus(), irq: this.irq, config: new ConfigTree(), mem: this.mem,
      machine: { requestExit: () => {}, vcpuCount: 1 }, stream: () => undefined,
      timer: (cb) => {
        this.timerCb = cb;
        return { armAt: (d) => { this.timerAt = d; }, cancel: () => { this.timerAt = undefined; }, now: () => this.now };
      },
    };
    this.dev = new E1000(ctx, { mac: MAC }, opts.noPort ? undefined : this.port);
  }

  rd(off: number): number { return this.dev.readRegister(off); }
  wr(off: number, v: number): void { this.dev.writeRegister(off, v >>> 0); }

  alloc(len: number, align = 16): number {
    this.heap = Math.ceil(this.heap / align) * align;
    const a = this.heap;
    this.heap += len;
    return a;
  }
  o(gpa: number): number { return gpa - RAM; }

  /** Advances the fake clock; fires the ITR timer when due. */
  advance(ns: bigint): void {
    this.now += ns;
    if (this.timerAt !== undefined && this.timerAt <= this.now) {
      this.timerAt = undefined;
      this.timerCb?.();
    }
  }

  setupTx(n = 16): void {
    this.tdn = n;
    this.tdbase = this.alloc(n * 16, 128);
    this.wr(R.TDBAL, this.tdbase);
    this.wr(R.TDBAH, 0);
    this.wr(R.TDLEN, n * 16);
    this.wr(R.TDH, 0);
    this.wr(R.TDT, 0);
    this.tail = 0;
    this.wr(R.TCTL, 0x2 | 0x8 | (0x10 << 4) | (0x40 << 12)); // EN, PSP, CT, COLD
  }

  /** Writes a raw 16-byte TX descriptor at the tail and advances it (no TDT write). */
  putTx(lo: bigint | number, w2: number, w3: number): number {
    const i = this.tail;
    const a = this.o(this.tdbase + i * 16);
    this.dv.setBigUint64(a, BigInt(lo), true);
    this.dv.setUint32(a + 8, w2 >>> 0, true);
    this.dv.setUint32(a + 12, w3 >>> 0, true);
    this.tail = (this.tail + 1) % this.tdn;
    return i;
  }

  /** A buffer holding `data`; returns its guest address. */
  buf(data: Uint8Array): number {
    const a = this.alloc(Math.max(data.length, 1), 16);
    this.bytes.set(data, this.o(a));
    return a;
  }

  /** Legacy descriptor: addr, length, cmd bits (EOP, IFCS, IC, RS...), cso, css. */
  legacy(addr: number, len: number, cmd: number, cso = 0, css = 0): number {
    return this.putTx(addr, (len & 0xffff) | (cso << 16) | cmd, css << 8);
  }

  kick(): void { this.wr(R.TDT, this.tail); }

  txStatus(i: number): number { return this.dv.getUint8(this.o(this.tdbase + i * 16 + 12)); }

  setupRx(n = 16, bufsz = 2048, rctlExtra = 0): void {
    this.rdn = n;
    this.rdbase = this.alloc(n * 16, 128);
    for (let i = 0; i < n; i++) {
      const b = this.alloc(bufsz, 16);
      this.dv.setBigUint64(this.o(this.rdbase + i * 16), BigInt(b), true);
    }
    this.wr(R.RDBAL, this.rdbase);
    this.wr(R.RDBAH, 0);
    this.wr(R.RDLEN, n * 16);
    this.wr(R.RDH, 0);
    this.wr(R.RDT, 0);
    const sz = bufsz === 2048 ? 0 : bufsz === 1024 ? 1 : bufsz === 512 ? 2 : bufsz === 256 ? 3
      : bufsz === 16384 ? 0x200 | 1 : bufsz === 8192 ? 0x200 | 2 : 0x200 | 3;
    this.wr(R.RCTL, 0x2 | ((sz & 3) << 16) | ((sz & 0x200) ? 0x02000000 : 0) | rctlExtra);
  }

  rxDesc(i: number): { addr: number; len: number; status: number; errors: number } {
    const a = this.o(this.rdbase + i * 16);
    return { addr: Number(this.dv.getBigUint64(a, true)), len: this.dv.getUint16(a + 8, true), status: this.dv.getUint8(a + 12), errors: this.dv.getUint8(a + 13) };
  }

  rxData(i: number, len: number): Uint8Array {
    const d = this.rxDesc(i);
    return this.bytes.slice(this.o(d.addr), this.o(d.addr) + len);
  }

  /** Reads EEPROM word `addr` by bit-banging EECD as Linux's e1000 does. */
  eepromRead(addr: number): number {
    const SK = 1, CS = 2, DI = 4, DO = 8, REQ = 0x40;
    let eecd = REQ;
    this.wr(R.EECD, eecd);
    eecd |= CS;
    this.wr(R.EECD, eecd);
    const shiftOut = (v: number, bits: number): void => {
      for (let b = bits - 1; b >= 0; b--) {
        eecd = (v >> b) & 1 ? eecd | DI : eecd & ~DI;
        this.wr(R.EECD, eecd);
        this.wr(R.EECD, eecd | SK);
        this.wr(R.EECD, eecd);
      }
    };
    shiftOut(0x6, 3); // READ
    shiftOut(addr, 6);
    let v = 0;
    eecd &= ~DI;
    for (let b = 0; b < 16; b++) {
      this.wr(R.EECD, eecd | SK);
      v = (v << 1) | ((this.rd(R.EECD) & DO) ? 1 : 0);
      this.wr(R.EECD, eecd);
    }
    this.wr(R.EECD, REQ);
    this.wr(R.EECD, 0);
    return v;
  }
}
