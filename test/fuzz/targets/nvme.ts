// Fuzz target for the NVMe controller (src/devices/nvme/): an image
// namespace driven through BAR 0 as a driver does (test/unit/nvme-driver.ts)
// with hostile traffic: admin and I/O commands with random opcodes, CDWs,
// namespace IDs and PRPs (in RAM, outside it, lists anywhere), doorbells
// of any queue with any value, and random register writes (CC resets and
// shutdowns, AQA/ASQ/ACQ). CQ head doorbells go through a coalesced MMIO
// ring as with KVM (cqcoalesce): replayed by the next exit, full CQs
// turning their doorbell back into an exit. Half the instances hand reads
// and writes to the I/O pool (iopool, without threads: they run at the
// next exit or poll(), which the fuzzer also calls) with reserved
// completion entries. Half send Doorbell Buffer Config (admin 7Ch) first:
// their I/O tails go to the shadow page (now and then a hostile value,
// or shadow and EventIdx entries scribbled over), and 7Ch itself comes
// again with random addresses. Oracle: nothing escapes the device (harness).
import * as fs from 'node:fs';
import { Rig } from '../../unit/nvme-driver.js';
import type { FuzzInstance, FuzzTarget } from '../harness.js';
import type { Rng } from '../rng.js';
import { scratchPath } from '../scratch.js';

let seq = 0;

class NvmeFuzz implements FuzzInstance {
  private readonly rig: Rig;
  private readonly image: string;
  private readonly bufs: number[];
  lastOp?: string;
  private commands = 0;
  private readonly pool: boolean;
  /** The shadow doorbell page (Doorbell Buffer Config sent), if any. */
  private readonly dbs: number | undefined;

  constructor(private readonly r: Rng) {
    this.pool = r.chance(0.5);
    this.image = scratchPath(`nvme${seq++}.img`);
    fs.writeFileSync(this.image, '');
    fs.truncateSync(this.image, 4 << 20);
    this.rig = new Rig({
      'pci.0.5.0.path': this.image,
      ...(this.pool ? { 'pci.0.5.0.iopool': '1', 'pci.0.5.0.iopool_min': String(r.pick([512, 4096])) } : {}),
    }, { coalescedRing: true });
    this.rig.enable();
    this.rig.ioQueues();
    this.bufs = [this.rig.alloc(8192), this.rig.alloc(8192)];
    if (r.chance(0.5)) {
      this.dbs = this.rig.alloc(4096);
      const eis = this.rig.alloc(4096);
      if (this.rig.admin(0x7c, { prp1: this.dbs, prp2: eis }).sc !== 0) throw new Error('nvme: Doorbell Buffer Config refused');
    }
  }

  step(): void {
    const r = this.r;
    const k = r.below(10);
    if (k < 6) {
      const q = r.below(2);
      const cdw: Record<number, number> = {};
      for (let d = 10; d < 16; d++) cdw[d] = r.chance(0.7) ? r.below(0x10000) : r.u32();
      if (q === 1) cdw[12] &= 0x7; // small transfers: the image is sparse on a shared file system
      const opc = r.chance(0.8) ? r.pick(q === 0 ? [0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x09, 0x0a, 0x0c, 0x7c] : [0x00, 0x01, 0x02, 0x08, 0x09]) : r.below(256);
      this.lastOp = `${q === 0 ? 'admin' : 'I/O'} opcode 0x${opc.toString(16)}`;
      this.rig.put(q, opc, {
        nsid: r.chance(0.75) ? 1 : r.u32(),
        prp1: r.chance(0.7) ? r.pick(this.bufs) : r.below(2 ** 20) * 4096,
        prp2: r.chance(0.5) ? r.pick(this.bufs) : r.u32(),
        cdw,
      });
      if (q === 1 && this.dbs !== undefined) {
        // The shadow tail (sometimes a hostile one), sometimes a scribble
        // over any shadow or EventIdx word.
        const at = this.rig.off(this.dbs) + 8;
        this.rig.dv.setUint32(at, r.chance(0.9) ? this.rig.sq[1].tail : r.u32(), true);
        if (r.chance(0.05)) this.rig.dv.setUint32(this.rig.off(this.dbs) + 4 * r.below(2048), r.u32(), true);
      }
      this.rig.ring(q);
      if (this.pool && r.chance(0.5)) this.rig.dev.poll();
      while (this.rig.take(q));
      this.commands++;
    } else if (k < 8) {
      const off = 0x1000 + r.below(40) * 4;
      const v = r.below(0x10000);
      this.lastOp = `doorbell 0x${off.toString(16)} = ${v}`;
      this.rig.wr(off, v);
    } else {
      const reg = r.pick([0x0c, 0x10, 0x20, 0x24, 0x28, 0x30]);
      const v = r.u32();
      this.lastOp = `reg 0x${reg.toString(16)} = 0x${v.toString(16)}`;
      this.rig.wr(reg, v);
      this.rig.rd(r.below(0x1000) & ~3);
    }
  }

  close(): void {
    this.rig.dev.poll();
    if (this.rig.dev.pool && this.rig.dev.pool.pending !== 0) throw new Error(`nvme: ${this.rig.dev.pool.pending} pool requests left after poll()`);
    this.rig.dev.close();
    fs.rmSync(this.image, { force: true });
  }

  stats(): Record<string, number> { return { commands: this.commands }; }
}

export const NVME_TARGET: FuzzTarget = {
  name: 'nvme',
  surface: 'NVMe controller: BAR 0 registers and doorbells, admin and I/O queues, commands with any opcode, namespace, CDWs and PRPs',
  create: (rng) => new NvmeFuzz(rng),
  instanceOps: 5000,
};
