// Fuzz target for the xHCI controller and its USB tablet
// (src/devices/usb/): the controller driven through BAR 0 as a driver does
// (test/unit/xhci-driver.ts) with hostile traffic: command TRBs of any type
// with input contexts whose flags, states, endpoint types and ring
// pointers are random (in RAM, outside it, zero), transfer TRBs of any
// type, chain and IDT bits, lengths and buffers on endpoint 0 and the
// interrupt endpoint, random SETUP packets, link TRBs anywhere, doorbells
// with any target and value, register writes (USBCMD with HCRST and RS,
// CRCR, DCBAAP, ERST size and base, ERDP, IMAN, PORTSC), VNC pointer events
// at any position. Oracle: nothing escapes the device (harness), and a
// controller in HSE or HCE is brought back by HCRST.
import { DBOFF, IR0, OP, RAM, RAM_SIZE, RING, XhciRig } from '../../unit/xhci-driver.js';
import type { FuzzInstance, FuzzTarget } from '../harness.js';
import type { Rng } from '../rng.js';

class XhciFuzz implements FuzzInstance {
  private rig: XhciRig;
  lastOp?: string;
  private readonly counts = { commands: 0, transfers: 0, resets: 0, pointer: 0 };
  /** Device counters of the controllers this instance already replaced. */
  private readonly earlier: Record<string, number> = {};

  constructor(private readonly r: Rng) {
    this.rig = this.fresh();
  }

  private fresh(): XhciRig {
    const rig = new XhciRig();
    rig.enablePci(this.r.chance(0.7));
    rig.start({ evtSize: this.r.chance(0.2) ? 16 : RING });
    rig.events();
    try { rig.address(); rig.configureTablet(1); } catch { /* a hostile start is fine too */ }
    return rig;
  }

  /** An address: mostly a fresh buffer in RAM, sometimes anywhere. */
  private addr(len: number): number {
    const r = this.r;
    if (r.chance(0.8)) return this.rig.alloc(len, 64);
    return r.pick([0, RAM + RAM_SIZE - 16, RAM - 16, r.u32() & ~0xf, 0x7ffff000, r.below(2 ** 20) * 4096]);
  }

  private inputCtx(): number {
    const r = this.r;
    const rig = this.rig;
    const a = this.addr(33 * 32);
    if (a < RAM || a + 33 * 32 > RAM + RAM_SIZE) return a;
    rig.w32(a, r.chance(0.8) ? 0 : r.u32());
    rig.w32(a + 4, r.chance(0.6) ? r.pick([3, 1 | (1 << 3), 2, 1 | (1 << r.below(32))]) : r.u32());
    for (let i = 1; i < 33; i++) {
      if (!r.chance(0.3) && i !== 2 && i !== 4) continue;
      const at = a + i * 32;
      rig.w32(at, r.chance(0.7) ? r.below(0x100) << 16 : r.u32());
      rig.w32(at + 4, r.chance(0.7) ? (3 << 1) | (r.pick([4, 7, r.below(8)]) << 3) | (r.pick([8, 64, 512]) << 16) : r.u32());
      const ring = r.chance(0.7) ? rig.newRing().base | r.below(2) : this.addr(64) | r.below(2);
      rig.w32(at + 8, ring >>> 0);
      rig.w32(at + 12, r.chance(0.9) ? 0 : r.u32());
    }
    return a;
  }

  private transfer(slot: number, epid: number): void {
    const r = this.r;
    const rig = this.rig;
    const ring = rig.rings.get(`${slot}.${epid}`);
    if (!ring) return;
    const n = r.range(1, 6);
    for (let i = 0; i < n; i++) {
      const type = r.chance(0.8) ? r.pick(epid === 1 ? [2, 3, 4, 7, 8] : [1, 7, 8]) : r.below(64);
      let lo = r.u32();
      let hi = r.chance(0.8) ? 0 : r.u32();
      if (type === 2 && r.chance(0.8)) {
        lo = (r.pick([0x80, 0x81, 0x00, 0x21, 0xa1, r.below(256)]) | (r.pick([6, 9, 8, 0x0a, 0x0b, 1, r.below(256)]) << 8) | (r.below(0x10000) << 16)) >>> 0;
        hi = (r.below(4) | (r.pick([0, 8, 18, 64, 255, 0xffff]) << 16)) >>> 0;
      } else if (type !== 2 && r.chance(0.7)) {
        lo = this.addr(256);
        hi = 0;
      }
      const len = r.chance(0.7) ? r.pick([0, 6, 8, 18, 64, 255]) : r.below(0x20000);
      const flags = (r.chance(0.3) ? 1 << 4 : 0) | (r.chance(0.6) ? 1 << 5 : 0) | (r.chance(type === 2 ? 0.9 : 0.1) ? 1 << 6 : 0)
        | (r.chance(0.5) ? 1 << 2 : 0) | (r.chance(0.5) ? 1 << 16 : 0) | (r.chance(0.5) ? 3 << 16 : 0);
      rig.put(ring, lo, hi, type === 2 && r.chance(0.8) ? 8 : len, (type << 10) | flags);
    }
    if (r.chance(0.05)) {
      // A link TRB in the middle of the ring: to itself, to the ring, anywhere.
      const at = ring.base + ring.idx * 16;
      rig.w32(at, r.pick([at, ring.base, this.addr(64)]) >>> 0);
      rig.w32(at + 4, 0);
      rig.w32(at + 12, (6 << 10) | (r.chance(0.5) ? 2 : 0) | ring.cycle);
    }
    rig.wr(DBOFF + 4 * slot, epid);
    this.counts.transfers++;
  }

  step(): void {
    const r = this.r;
    const rig = this.rig;
    if (rig.usbsts & (0x4 | 0x1000) && r.chance(0.5)) {
      this.lastOp = 'HCRST after a host error';
      for (const [k, v] of Object.entries(this.deviceStats())) this.earlier[k] = (this.earlier[k] ?? 0) + v;
      this.rig = this.fresh();
      this.counts.resets++;
      return;
    }
    const k = r.below(100);
    if (k < 35) {
      const type = r.chance(0.85) ? r.range(9, 23) : r.below(64);
      const slot = r.chance(0.8) ? 1 : r.below(256);
      const lo = [11, 12, 13].includes(type) ? this.inputCtx() : type === 16 ? (rig.newRing().base | 1) : r.u32();
      const flags = ((r.chance(0.3) ? 1 << 9 : 0) | (r.pick([1, 3, r.below(32)]) << 16)) >>> 0;
      this.lastOp = `command ${type} slot ${slot} 0x${lo.toString(16)} flags 0x${flags.toString(16)}`;
      rig.put(rig.cmd, lo >>> 0, 0, r.chance(0.9) ? 0 : r.u32(), (type << 10) | (slot << 24) | flags);
      if (type === 11 && lo >= RAM && lo + 33 * 32 <= RAM + RAM_SIZE) {
        const ring = rig.newRing();
        rig.rings.set(`${slot}.1`, ring);
        rig.w32(lo + 64 + 8, ring.base | 1);
        rig.w64(rig.dcbaa + 8 * (slot & 0x3f), rig.alloc(32 * 32, 64));
      }
      rig.wr(DBOFF, 0);
      this.counts.commands++;
    } else if (k < 50) {
      // A well-formed control transfer with a random request (the driver
      // recovers a halted endpoint 0 first, as drivers do).
      const out = rig.outCtx(1);
      if (out >= RAM && out < RAM + RAM_SIZE && (rig.r32(out + 32) & 7) === 2) {
        this.lastOp = 'Reset Endpoint + Set TR Dequeue on endpoint 0';
        const ring = rig.newRing();
        rig.rings.set('1.1', ring);
        rig.put(rig.cmd, 0, 0, 0, (14 << 10) | (1 << 16) | (1 << 24));
        rig.put(rig.cmd, ring.base | 1, 0, 0, (16 << 10) | (1 << 16) | (1 << 24));
        rig.wr(DBOFF, 0);
      } else if (rig.rings.has('1.1')) {
        const type = r.pick([0x80, 0x81, 0x00, 0x01, 0x21, 0xa1, 0x82, r.below(256)]);
        const req = r.pick([0, 1, 3, 6, 8, 9, 0x0a, 0x0b, 0x30, 0x31, r.below(256)]);
        const value = r.chance(0.7) ? (r.pick([1, 2, 3, 0x0f, 0x21, 0x22, r.below(256)]) << 8) | r.below(6) : r.below(0x10000);
        const length = r.pick([0, 1, 2, 6, 8, 18, 40, 64, 255, r.below(0x10000)]);
        this.lastOp = `control ${type.toString(16)}/${req.toString(16)} value ${value.toString(16)} length ${length}`;
        rig.control(1, { type, req, value, index: r.chance(0.8) ? 0 : r.below(0x10000), length }, { buf: rig.alloc(Math.max(8, Math.min(length, 0x1000)), 64) });
        this.counts.transfers++;
      }
    } else if (k < 65) {
      const epid = r.chance(0.6) ? 1 : 3;
      this.lastOp = `transfer on endpoint ${epid}`;
      this.transfer(1, epid);
    } else if (k < 75) {
      this.lastOp = 'pointer event';
      rig.dev.tablet!.pointerEvent(r.below(32), r.below(0x10000), r.below(0x10000), r.pick([0, 1, 640, 1024, r.below(0x10000)]), r.pick([0, 480, 768, r.below(0x10000)]));
      this.counts.pointer++;
    } else if (k < 85) {
      const target = r.chance(0.7) ? r.below(3) : r.below(80);
      const v = r.chance(0.7) ? r.below(40) : r.u32();
      this.lastOp = `doorbell ${target} = 0x${v.toString(16)}`;
      rig.wr(DBOFF + 4 * target, v);
    } else {
      const reg = r.pick([OP, OP + 4, OP + 0x14, OP + 0x18, OP + 0x1c, OP + 0x30, OP + 0x34, OP + 0x38, OP + 0x400, OP + 0x410,
        OP + 0x440, OP + 0x404, IR0, IR0 + 4, IR0 + 8, IR0 + 0x10, IR0 + 0x14, IR0 + 0x18, IR0 + 0x1c, r.below(0x1000) & ~3]);
      const v = reg === OP ? r.pick([0, 1, 2, 5, r.u32()]) : r.chance(0.5) ? r.u32() : r.below(0x10000) * 16;
      this.lastOp = `reg 0x${reg.toString(16)} = 0x${v.toString(16)}`;
      rig.wr(reg, v);
      rig.rd(r.below(0x1000) & ~3);
    }
    rig.events();
  }

  close(): void {}

  private deviceStats(): Record<string, number> {
    const s = this.rig.dev.stats();
    return {
      events: s.events, 'control transfers': s.controlTransfers, 'interrupt transfers': s.interruptTransfers,
      hostSystemErrors: s.hostSystemErrors, hostControllerErrors: s.hostControllerErrors, trbErrors: s.trbErrors, stalls: s.stalls,
    };
  }

  stats(): Record<string, number> {
    const out: Record<string, number> = { ...this.counts };
    for (const [k, v] of Object.entries(this.deviceStats())) out[k] = v + (this.earlier[k] ?? 0);
    return out;
  }
}

export const XHCI_TARGET: FuzzTarget = {
  name: 'xhci',
  surface: 'xHCI controller and USB tablet: BAR 0 registers, doorbells, command ring with any TRB and input context, transfer rings on endpoint 0 and the interrupt endpoint with any TRBs, setup packets and buffers, link TRBs anywhere, pointer events',
  create: (rng) => new XhciFuzz(rng),
  instanceOps: 3000,
};
