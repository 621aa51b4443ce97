// An xHCI driver for unit tests and the fuzz harness: a platform with an
// xhci function (slot.1.device=tablet), guest RAM as a plain buffer holding
// the DCBAA, contexts, the command ring, the event ring and its segment
// table and transfer rings, built as a guest driver builds them; the
// controller is driven through its PCI config space and BAR 0. No /dev/kvm.

import { XhciController } from '../../src/devices/usb/xhci.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { MsiLog } from './ahci-driver.js';
import { buildRigPlatform, PciRig } from './pci-rig.js';

export const RAM = 0x100000;
export const RAM_SIZE = 4 << 20;
export const SLOT = 6;
export const OP = 0x20;
export const DBOFF = 0x4a0;
export const RTSOFF = 0xcc0;
export const IR0 = RTSOFF + 0x20;
export const RING = 64; // TRBs per ring, the last one a link back

export interface Event { addr: number; lo: number; hi: number; dw2: number; dw3: number; type: number; cc: number; slot: number; ep: number; len: number; }
export interface Setup { type: number; req: number; value: number; index: number; length: number; }

export class XhciRig extends PciRig {
  readonly irq = new MsiLog();
  readonly bytes = new Uint8Array(RAM_SIZE);
  readonly dv = new DataView(this.bytes.buffer);
  readonly mem = new GuestMemory([{ gpa: RAM, bytes: this.bytes }]);
  readonly dev: XhciController;
  readonly bar0: number;
  private heap = RAM + 0x10000;
  dcbaa = 0;
  cmd = { base: 0, idx: 0, cycle: 1 };
  evt = { base: 0, idx: 0, cycle: 1, size: RING, erst: 0 };
  readonly rings = new Map<string, { base: number; idx: number; cycle: number }>();

  constructor(settings: Record<string, string> = { [`pci.0.${SLOT}.0.slot.1.device`]: 'tablet' }) {
    super(SLOT);
    const p = buildRigPlatform(this.io, this.irq, this.mem, { name: 'vm0', [`pci.0.${SLOT}.0.device`]: 'xhci', ...settings });
    this.dev = p.devices.find((d): d is XhciController => d instanceof XhciController)!;
    this.bar0 = (this.cfgRd(0x10) & ~0xf) >>> 0;
  }

  protected get mmioBase(): number { return this.bar0; }

  alloc(len: number, align = 64): number {
    this.heap = Math.ceil(this.heap / align) * align;
    // Long fuzz runs wrap around (over whatever lived there: hostile anyway).
    if (this.heap + len > RAM + RAM_SIZE) this.heap = RAM + 0x10000;
    const a = this.heap;
    this.heap += len;
    this.bytes.fill(0, a - RAM, a - RAM + len);
    return a;
  }
  r32(gpa: number): number { return this.dv.getUint32(gpa - RAM, true); }
  w32(gpa: number, v: number): void { this.dv.setUint32(gpa - RAM, v >>> 0, true); }
  w64(gpa: number, v: number): void { this.w32(gpa, v % 2 ** 32); this.w32(gpa + 4, Math.floor(v / 2 ** 32)); }

  /** Memory decoding and bus mastering on, MSI to 0xfee00000 / data 0x41 when asked. */
  enablePci(msi = true): void {
    this.cfgWr(0x04, 0x06, 2);
    if (msi) {
      const cap = this.findCap(0x05);
      this.cfgWr(cap + 4, 0xfee00000);
      this.cfgWr(cap + 8, 0);
      this.cfgWr(cap + 12, 0x41, 2);
      this.cfgWr(cap + 2, 1, 2);
    }
  }
  findCap(id: number): number {
    let p = this.cfgRd(0x34, 1);
    while (p) {
      if (this.cfgRd(p, 1) === id) return p;
      p = this.cfgRd(p + 1, 1);
    }
    throw new Error(`no capability ${id}`);
  }

  /** A ring of RING TRBs whose last TRB links back with toggle cycle. */
  newRing(): { base: number; idx: number; cycle: number } {
    const base = this.alloc(RING * 16, 64);
    this.w64(base + (RING - 1) * 16, base);
    this.w32(base + (RING - 1) * 16 + 12, (6 << 10) | 2);
    return { base, idx: 0, cycle: 1 };
  }

  /** HCRST, DCBAA, command ring, one event ring segment, interrupter on, RS. */
  start(o: { run?: boolean; inte?: boolean; evtSize?: number } = {}): void {
    this.wr(OP, 2);
    this.dcbaa = this.alloc(8 * 65, 64);
    this.wr(OP + 0x30, this.dcbaa); this.wr(OP + 0x34, 0);
    this.wr(OP + 0x38, 64);
    const c = this.newRing();
    this.cmd = c;
    this.wr(OP + 0x18, c.base | 1); this.wr(OP + 0x1c, 0);
    const size = o.evtSize ?? RING;
    const seg = this.alloc(size * 16, 64);
    const erst = this.alloc(16, 64);
    this.w64(erst, seg); this.w32(erst + 8, size);
    this.evt = { base: seg, idx: 0, cycle: 1, size, erst };
    this.wr(IR0 + 0x08, 1);
    this.wr(IR0 + 0x18, seg); this.wr(IR0 + 0x1c, 0);
    this.wr(IR0 + 0x10, erst); this.wr(IR0 + 0x14, 0);
    this.wr(IR0 + 0x00, 2); // IE
    if (o.run ?? true) this.wr(OP, 1 | ((o.inte ?? true) ? 4 : 0));
  }

  /** Events the controller posted since the last call (the driver's view),
   * then ERDP moved past them with EHB cleared. */
  events(): Event[] {
    const out: Event[] = [];
    for (;;) {
      const at = this.evt.base + this.evt.idx * 16;
      const dw3 = this.r32(at + 12);
      if ((dw3 & 1) !== this.evt.cycle) break;
      const lo = this.r32(at), hi = this.r32(at + 4), dw2 = this.r32(at + 8);
      out.push({ addr: at, lo, hi, dw2, dw3, type: (dw3 >>> 10) & 0x3f, cc: dw2 >>> 24, slot: dw3 >>> 24, ep: (dw3 >>> 16) & 0x1f, len: dw2 & 0xffffff });
      if (++this.evt.idx === this.evt.size) { this.evt.idx = 0; this.evt.cycle ^= 1; }
      if (out.length > 10000) throw new Error('event ring never ends');
    }
    this.wr(IR0 + 0x18, (this.evt.base + this.evt.idx * 16) | 8);
    this.wr(IR0 + 0x1c, 0);
    return out;
  }

  /** Puts a TRB on a ring (skipping over its link TRB). */
  put(ring: { base: number; idx: number; cycle: number }, lo: number, hi: number, dw2: number, dw3: number): number {
    const at = ring.base + ring.idx * 16;
    this.w32(at, lo); this.w32(at + 4, hi); this.w32(at + 8, dw2);
    this.w32(at + 12, (dw3 & ~1) | ring.cycle);
    if (++ring.idx === RING - 1) {
      const link = ring.base + (RING - 1) * 16;
      this.w32(link + 12, (this.r32(link + 12) & ~1) | ring.cycle);
      ring.idx = 0;
      ring.cycle ^= 1;
    }
    return at;
  }

  /** Runs one command; returns its completion event. */
  command(type: number, o: { lo?: number; hi?: number; dw2?: number; slot?: number; flags?: number } = {}): Event {
    const at = this.put(this.cmd, o.lo ?? 0, o.hi ?? 0, o.dw2 ?? 0, (type << 10) | ((o.slot ?? 0) << 24) | (o.flags ?? 0));
    this.wr(DBOFF, 0);
    const ev = this.events().filter((e) => e.type === 33);
    const mine = ev.find((e) => e.lo === at);
    if (!mine) throw new Error(`no completion for command ${type} (events: ${JSON.stringify(ev)})`);
    return mine;
  }

  /** Input context with the given add flags; returns its address. */
  inputCtx(add: number, drop = 0): number {
    const a = this.alloc(33 * 32, 64);
    this.w32(a, drop);
    this.w32(a + 4, add);
    return a;
  }

  /** Enable Slot + Address Device with a fresh EP0 ring; returns the slot id. */
  address(port = 1, speed = 3, bsr = false): number {
    const en = this.command(9);
    if (en.cc !== 1) throw new Error(`enable slot: cc ${en.cc}`);
    const slot = en.slot;
    const out = this.alloc(32 * 32, 64);
    this.w64(this.dcbaa + 8 * slot, out);
    const ic = this.inputCtx(3);
    this.w32(ic + 32, (1 << 27) | (speed << 20));
    this.w32(ic + 32 + 4, port << 16);
    const ring = this.newRing();
    this.rings.set(`${slot}.1`, ring);
    this.w32(ic + 64 + 4, (3 << 1) | (4 << 3) | (64 << 16));
    this.w64(ic + 64 + 8, ring.base | 1);
    const ad = this.command(11, { lo: ic, slot, flags: bsr ? 1 << 9 : 0 });
    if (ad.cc !== 1) throw new Error(`address device: cc ${ad.cc}`);
    return slot;
  }
  outCtx(slot: number): number {
    return this.r32(this.dcbaa + 8 * slot);
  }

  /** A control transfer on EP0: setup, optional data stage of `len`, status. */
  control(slot: number, s: Setup, o: { buf?: number; noStatusIoc?: boolean } = {}): { events: Event[]; buf: number; data: Uint8Array } {
    const ring = this.rings.get(`${slot}.1`)!;
    const lo = s.type | (s.req << 8) | (s.value << 16);
    const hi = s.index | (s.length << 16);
    const isIn = (s.type & 0x80) !== 0;
    const trt = s.length === 0 ? 0 : isIn ? 3 : 2;
    this.put(ring, lo >>> 0, hi >>> 0, 8, (2 << 10) | (1 << 6) | (trt << 16));
    const buf = o.buf ?? this.alloc(Math.max(s.length, 8), 64);
    if (s.length > 0) this.put(ring, buf, 0, s.length, (3 << 10) | (isIn ? (1 << 16) | (1 << 2) : 0));
    this.put(ring, 0, 0, 0, (4 << 10) | (o.noStatusIoc ? 0 : 1 << 5) | (isIn && s.length > 0 ? 0 : 1 << 16));
    this.wr(DBOFF + 4 * slot, 1);
    const events = this.events();
    return { events, buf, data: this.bytes.slice(buf - RAM, buf - RAM + s.length) };
  }

  /** Configure Endpoint for the tablet's interrupt IN endpoint 1 (epid 3). */
  configureTablet(slot: number): number {
    const ic = this.inputCtx(1 | (1 << 3));
    this.w32(ic + 32, 3 << 27);
    const ring = this.newRing();
    this.rings.set(`${slot}.3`, ring);
    const ep = ic + (3 + 1) * 32;
    this.w32(ep, 3 << 16);
    this.w32(ep + 4, (3 << 1) | (7 << 3) | (8 << 16));
    this.w64(ep + 8, ring.base | 1);
    this.w32(ep + 16, 8 | (8 << 16));
    return this.command(12, { lo: ic, slot }).cc;
  }

  /** Queues an interrupt IN TRB of `len` bytes (IOC, ISP) and rings the endpoint. */
  queueIn(slot: number, len = 8, ring = true): number {
    const r = this.rings.get(`${slot}.3`)!;
    const buf = this.alloc(Math.max(len, 8), 64);
    this.put(r, buf, 0, len, (1 << 10) | (1 << 5) | (1 << 2));
    if (ring) this.wr(DBOFF + 4 * slot, 3);
    return buf;
  }

  get usbsts(): number { return this.rd(OP + 4); }
}
