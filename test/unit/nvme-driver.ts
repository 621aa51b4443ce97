// An NVMe driver for unit tests and the fuzz harness: a platform with an
// nvme function, guest RAM as a plain buffer holding the queues and PRP
// buffers, built as a guest driver builds them, and the controller driven
// through its PCI config space and BAR 0. No /dev/kvm.

import type { HelperThreadData, KvmDoorbells } from '../../src/devices/device.js';
import { eventfdWrite } from '../../src/sys/eventfd.js';
import { NvmeController } from '../../src/devices/nvme/nvme.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { MsiLog } from './ahci-driver.js';
import { FakeCoalescedRing } from './fake-coalesced-ring.js';
import { buildRigPlatform, PciRig, RIG_LAYOUT } from './pci-rig.js';

export const RAM = 0x100000;
export const RAM_SIZE = 8 << 20;
export const SLOT = 5;

export interface Cqe { cdw0: number; sqhd: number; sqid: number; cid: number; status: number; phase: number; sc: number; sct: number; dnr: boolean; }

export class Rig extends PciRig {
  readonly irq = new MsiLog();
  readonly bytes: Uint8Array;
  readonly dv: DataView;
  readonly mem: GuestMemory;
  /** KVM ioeventfds the device registered: address -> eventfd (wr() there
   * signals the eventfd instead of an MMIO write, as KVM does). */
  readonly ioeventfds = new Map<number, number>();
  readonly dev: NvmeController;
  readonly bar0: number;
  private heap = RAM + 0x10000;
  readonly sq: Record<number, { base: number; size: number; tail: number }> = {};
  readonly cq: Record<number, { base: number; size: number; head: number; phase: number }> = {};
  private cid = 1;
  /** `coalescedRing`: KVM's coalesced MMIO as far as the device sees it
   * (the zones it registered, and a ring page that wr() appends to for an
   * address in a zone, as KVM does, instead of an exit). */
  /** `helper`: guest RAM is `ram` (RAM + RAM_SIZE bytes from guest
   * physical 0, the mapping of helper.memoryPath that an I/O thread maps
   * again) and KVM takes ioeventfds (I/O thread tests). */
  constructor(settings: Record<string, string>, opts: { coalescedRing?: boolean; helper?: HelperThreadData; ram?: Uint8Array } = {}) {
    super(SLOT);
    this.bytes = opts.ram ? opts.ram.subarray(RAM, RAM + RAM_SIZE) : new Uint8Array(RAM_SIZE);
    this.dv = new DataView(this.bytes.buffer, this.bytes.byteOffset, RAM_SIZE);
    this.mem = new GuestMemory([{ gpa: RAM, bytes: this.bytes }]);
    if (opts.coalescedRing) this.coalesced = new FakeCoalescedRing(this.io);
    // No I/O threads unless a test asks (without a VM memory file the pool
    // has none: its requests would wait for the next exit or poll()).
    const p = buildRigPlatform(this.io, this.irq, this.mem,
      { name: 'vm0', [`pci.0.${SLOT}.0.device`]: 'nvme', [`pci.0.${SLOT}.0.iopool`]: '0', ...settings },
      opts.coalescedRing || opts.helper ? this.fakeKvm(opts.helper) : undefined);
    this.dev = p.devices.find((d): d is NvmeController => d instanceof NvmeController)!;
    const lo = this.cfgRd(0x10);
    this.bar0 = this.cfgRd(0x14) * 2 ** 32 + ((lo & ~0xf) >>> 0);
  }

  protected get mmioBase(): number { return this.bar0; }

  wr(off: number, v: number, size = 4): void {
    const fd = this.ioeventfds.get(this.bar0 + off);
    if (fd !== undefined) { eventfdWrite(fd); return; }
    super.wr(off, v, size);
  }

  /** The zones the device registered (empty without a ring). */
  get zones(): ReadonlyMap<number, number> {
    return this.coalesced?.zones ?? new Map();
  }

  /** Writes that went to the ring instead of exiting. */
  get buffered(): number {
    return this.coalesced?.buffered ?? 0;
  }

  private fakeKvm(helper?: HelperThreadData): KvmDoorbells {
    return {
      ioeventfd: (fd, addr, deassign) => {
        if (!helper) return false;
        if (deassign) this.ioeventfds.delete(addr); else this.ioeventfds.set(addr, fd);
        return true;
      },
      helper: helper ?? { memoryPath: '', layout: RIG_LAYOUT, doorbell: undefined as never },
      coalesce: (addr, len, on) => this.coalesced?.coalesce(addr, len, on) ?? false,
      flushCoalesced: () => this.io.flushCoalesced(),
      replayingCoalesced: () => this.io.replaying,
    };
  }

  alloc(len: number, align = 4096): number {
    this.heap = Math.ceil(this.heap / align) * align;
    const a = this.heap;
    this.heap += len;
    return a;
  }
  off(gpa: number): number { return gpa - RAM; }

  enable(asqs = 16, acqs = 16): void {
    const asq = this.alloc(asqs * 64);
    const acq = this.alloc(acqs * 16);
    this.wr(0x24, (asqs - 1) | ((acqs - 1) << 16));
    this.wr(0x28, asq); this.wr(0x2c, 0);
    this.wr(0x30, acq); this.wr(0x34, 0);
    this.wr(0x14, 1 | (6 << 16) | (4 << 20));
    this.sq[0] = { base: asq, size: asqs, tail: 0 };
    this.cq[0] = { base: acq, size: acqs, head: 0, phase: 1 };
  }

  /** Puts a command on SQ `q` (not rung). */
  put(q: number, opc: number, f: { nsid?: number; prp1?: number; prp2?: number; cdw?: Record<number, number> } = {}): number {
    const s = this.sq[q];
    const at = this.off(s.base + s.tail * 64);
    this.bytes.fill(0, at, at + 64);
    const cid = this.cid++ & 0xffff;
    this.dv.setUint8(at, opc);
    this.dv.setUint16(at + 2, cid, true);
    this.dv.setUint32(at + 4, f.nsid ?? 0, true);
    this.dv.setBigUint64(at + 24, BigInt(f.prp1 ?? 0), true);
    this.dv.setBigUint64(at + 32, BigInt(f.prp2 ?? 0), true);
    for (const [k, v] of Object.entries(f.cdw ?? {})) this.dv.setUint32(at + 4 * Number(k), v >>> 0, true);
    s.tail = (s.tail + 1) % s.size;
    return cid;
  }
  ring(q: number): void { this.wr(0x1000 + 8 * q, this.sq[q].tail); }

  /** Takes the next completion of CQ `q` if its phase says it is new. */
  take(q: number): Cqe | undefined {
    const c = this.cq[q];
    const at = this.off(c.base + c.head * 16);
    const status = this.dv.getUint16(at + 14, true);
    if ((status & 1) !== c.phase) return undefined;
    c.head = (c.head + 1) % c.size;
    if (c.head === 0) c.phase ^= 1;
    this.wr(0x1000 + 8 * q + 4, c.head);
    return {
      cdw0: this.dv.getUint32(at, true), sqhd: this.dv.getUint16(at + 8, true), sqid: this.dv.getUint16(at + 10, true),
      cid: this.dv.getUint16(at + 12, true), status, phase: status & 1, sc: (status >> 1) & 0xff, sct: (status >> 9) & 7, dnr: (status & 0x8000) !== 0,
    };
  }

  admin(opc: number, f: Parameters<Rig['put']>[2] = {}): Cqe {
    const cid = this.put(0, opc, f);
    this.ring(0);
    const c = this.take(0);
    if (!c) throw new Error(`admin opcode ${opc}: no completion`);
    if (c.cid !== cid) throw new Error(`opcode ${opc}: completion for cid ${c.cid}, expected ${cid}`);
    return c;
  }

  io1(q: number, opc: number, f: Parameters<Rig['put']>[2] = {}): Cqe {
    f.nsid ??= 1;
    const cid = this.put(q, opc, f);
    this.ring(q);
    const c = this.take(q);
    if (!c) throw new Error(`I/O opcode ${opc}: no completion`);
    if (c.cid !== cid) throw new Error(`opcode ${opc}: completion for cid ${c.cid}, expected ${cid}`);
    return c;
  }

  /** Programs MSI-X table entry i with message data `data[i]` (address
   * 0xfee00000) and turns MSI-X on in the capability. */
  msix(data: number[]): void {
    let mx = 0;
    for (let c = this.cfgRd(0x34, 1); c; c = this.cfgRd(c + 1, 1)) if (this.cfgRd(c, 1) === 0x11) mx = c;
    const tbl = this.cfgRd(mx + 4);
    const bar = (this.cfgRd(0x10 + 4 * (tbl & 7)) & ~0xf) >>> 0;
    data.forEach((v, i) => {
      for (const [o, w] of [[0, 0xfee00000], [4, 0], [8, v], [12, 0]] as const) {
        const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, w, true); this.io.mmioWrite(bar + (tbl & ~7) + 16 * i + o, b);
      }
    });
    this.cfgWr(mx + 2, 0x8000, 2);
  }

  /** Number of queues, then one I/O CQ (vector `vec`) and SQ with id 1. */
  ioQueues(size = 64, vec = 1): void {
    const nq = this.admin(0x09, { cdw: { 10: 0x07, 11: 0x00030003 } });
    if (nq.sc !== 0) throw new Error(`Set Features (number of queues): status ${nq.sc}`);
    const cq = this.alloc(size * 16);
    const ccq = this.admin(0x05, { prp1: cq, cdw: { 10: 1 | ((size - 1) << 16), 11: 1 | 2 | (vec << 16) } });
    if (ccq.sc !== 0) throw new Error(`Create I/O CQ: status ${ccq.sc}`);
    this.cq[1] = { base: cq, size, head: 0, phase: 1 };
    const sq = this.alloc(size * 64);
    const csq = this.admin(0x01, { prp1: sq, cdw: { 10: 1 | ((size - 1) << 16), 11: 1 | (1 << 16) } });
    if (csq.sc !== 0) throw new Error(`Create I/O SQ: status ${csq.sc}`);
    this.sq[1] = { base: sq, size, tail: 0 };
  }
}
