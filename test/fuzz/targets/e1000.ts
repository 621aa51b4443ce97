// Fuzz target for the e1000 (src/devices/net/e1000.ts), driven as a driver
// does (test/unit/e1000-driver.ts) with hostile traffic: transmit
// descriptors of every type with random commands, lengths, checksum and
// TSO contexts and buffer addresses (in RAM, outside it); receive rings
// with wild buffers, heads and tails; frames of any length from the
// backend; random register writes (ring bases and lengths, RCTL buffer
// sizes, CTRL resets, ITR, EECD bit-banging) and reads; the ITR clock
// moving on. Oracle: nothing escapes the device (harness).
import { E1000Rig } from '../../unit/e1000-driver.js';
import { R, TXD, TXC } from '../../../src/devices/net/e1000.js';
import type { FuzzInstance, FuzzTarget } from '../harness.js';
import type { Rng } from '../rng.js';

class E1000Fuzz implements FuzzInstance {
  private readonly rig = new E1000Rig();
  private readonly bufs: number[];
  lastOp?: string;
  private frames = 0;

  constructor(private readonly r: Rng) {
    this.rig.setupTx(16 << this.r.below(3));
    this.rig.setupRx(16, this.r.pick([256, 512, 1024, 2048, 4096]));
    this.rig.wr(R.RDT, 15);
    this.rig.wr(R.IMS, this.r.u32());
    this.bufs = [this.rig.alloc(16384), this.rig.alloc(16384), this.rig.alloc(2048)];
  }

  private addr(): bigint {
    const r = this.r;
    if (r.chance(0.8)) return BigInt(r.pick(this.bufs) + r.below(512));
    return r.chance(0.5) ? BigInt(r.u32()) : (BigInt(r.u32()) << 32n) | BigInt(r.u32());
  }

  step(): void {
    const r = this.r;
    const k = r.below(12);
    const rig = this.rig;
    if (k < 5) {
      // A frame of 1..4 descriptors, maybe after a context descriptor.
      if (r.chance(0.4)) {
        const ctx = BigInt(r.below(64)) | (BigInt(r.below(64)) << 8n) | (BigInt(r.below(0x10000)) << 16n)
          | (BigInt(r.below(80)) << 32n) | (BigInt(r.below(80)) << 40n) | (BigInt(r.chance(0.5) ? 0 : r.below(0x10000)) << 48n);
        const cmd = TXD.DEXT | (r.chance(0.5) ? TXC.TCP : 0) | (r.chance(0.5) ? TXC.IP : 0) | (r.chance(0.5) ? TXC.TSE : 0) | r.below(0x10000);
        rig.putTx(ctx, r.chance(0.9) ? cmd : r.u32(), (r.below(256) << 8) | (r.below(0x10000) << 16));
      }
      const n = 1 + r.below(4);
      const data = r.chance(0.5);
      for (let i = 0; i < n; i++) {
        const len = r.chance(0.8) ? r.below(2000) : r.below(0x100000);
        const eop = i === n - 1 ? TXD.EOP : 0;
        const flags = (r.chance(0.5) ? TXD.RS : 0) | (r.chance(0.5) ? TXD.IFCS : 0) | (r.chance(0.2) ? TXD.VLE : 0) | eop;
        if (data) rig.putTx(this.addr(), (len & 0xfffff) | TXD.DEXT | TXD.DTYP_D | flags | (r.chance(0.3) ? TXD.TSE : 0), r.below(4) << 8 | (r.below(0x10000) << 16));
        else rig.putTx(this.addr(), (len & 0xffff) | flags | (r.chance(0.3) ? TXD.IC : 0) | (r.below(256) << 16), r.below(256) << 8);
      }
      this.lastOp = `tx ${n} ${data ? 'data' : 'legacy'} descriptors`;
      rig.kick();
    } else if (k < 7) {
      const n = r.chance(0.9) ? r.below(1600) : r.below(70000);
      this.lastOp = `rx frame of ${n} bytes`;
      rig.port.rx.push(r.bytes(n));
      rig.dev.poll();
      this.frames++;
      if (r.chance(0.5)) rig.wr(R.RDT, r.chance(0.9) ? r.below(16) : r.u32());
    } else if (k < 8) {
      const i = r.below(16);
      this.lastOp = `rx descriptor ${i} buffer`;
      rig.dv.setBigUint64(rig.o(rig.rdbase + i * 16), this.addr(), true);
      rig.dv.setUint8(rig.o(rig.rdbase + i * 16 + 12), 0);
    } else if (k < 10) {
      const reg = r.pick([R.CTRL, R.RCTL, R.TCTL, R.TDBAL, R.TDBAH, R.TDLEN, R.TDH, R.TDT, R.RDBAL, R.RDLEN, R.RDH, R.RDT,
        R.ITR, R.ICS, R.IMS, R.IMC, R.EECD, R.MDIC, R.VET, R.RSRPD, 0x5400 + r.below(32) * 4, 0x5600 + r.below(128) * 4]);
      const v = r.chance(0.5) ? r.below(0x10000) : r.u32();
      this.lastOp = `reg 0x${reg.toString(16)} = 0x${v.toString(16)}`;
      rig.wr(reg, v);
    } else if (k < 11) {
      const off = r.below(0x20000);
      this.lastOp = `read 0x${off.toString(16)}`;
      rig.rd(off);
    } else {
      this.lastOp = 'time';
      rig.advance(BigInt(r.below(3_000_000)));
    }
  }

  close(): void {}

  stats(): Record<string, number> { return { 'rx frames offered': this.frames, 'tx frames': this.rig.dev.counts.txFrames }; }
}

export const E1000_TARGET: FuzzTarget = {
  name: 'e1000',
  surface: 'e1000 (82545EM): registers, EEPROM, transmit descriptors of every type with checksum/TSO contexts, receive rings, backend frames of any length',
  create: (rng) => new E1000Fuzz(rng),
  instanceOps: 5000,
};
