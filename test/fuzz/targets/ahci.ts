// Fuzz target for the AHCI HBA (src/devices/ahci/): a disk port and an
// ATAPI port on real image files, driven through the ABAR as a driver does
// (test/unit/ahci-driver.ts) but with hostile traffic: ATA and ATAPI
// commands with random fields, PRDT entries pointing anywhere (outside
// guest RAM included) with any length, random slots with and without NCQ,
// and random writes to the port and HBA registers (COMRESET, ST/FRE
// toggles, GHC resets). Oracles: nothing escapes the device (harness), and
// the register page (regpage: what the guest reads without an exit)
// always holds what a read through the exit path answers. Half the
// instances buffer PxSACT writes in a coalesced MMIO ring (sactcoalesce),
// half hand NCQ transfers to the I/O pool (iopool, without threads: they
// run at the next poll or exit); the page is compared after the ring is
// replayed and finished transfers completed, as the next exit would.
import * as fs from 'node:fs';
import { AhciRig, h2d, type Prd } from '../../unit/ahci-driver.js';
import type { FuzzInstance, FuzzTarget } from '../harness.js';
import type { Rng } from '../rng.js';
import { scratchPath } from '../scratch.js';

// Port register offsets (AHCI 1.3.1, 3.3).
const P = { IS: 0x10, IE: 0x14, CMD: 0x18, SCTL: 0x2c, SERR: 0x30, SACT: 0x34, CI: 0x38 };
const ATA_CMDS = [0xec, 0x25, 0x35, 0xc8, 0xca, 0x60, 0x61, 0x64, 0x06, 0xea, 0xef, 0x2f, 0xa0, 0xa1, 0xb0, 0xe5, 0xe0, 0xc6];
const ATAPI_CMDS = [0x00, 0x03, 0x12, 0x1b, 0x1e, 0x25, 0x28, 0x43, 0x46, 0x4a, 0x5a, 0xa8, 0xbd];
let seq = 0;

function sparseImage(size: number): string {
  const p = scratchPath(`ahci${seq++}.img`);
  fs.writeFileSync(p, '');
  fs.truncateSync(p, size);
  return p;
}

class AhciFuzz implements FuzzInstance {
  private readonly rig: AhciRig;
  private readonly ports: Array<{ clb: number }>;
  private readonly bufs: number[];
  private readonly images: string[];
  lastOp?: string;
  private commands = 0;
  private readonly pool: boolean;

  constructor(private readonly r: Rng) {
    this.images = [sparseImage(4 << 20), sparseImage(64 * 2048)];
    this.pool = r.chance(0.5);
    this.rig = new AhciRig({
      'pci.0.4.0.port.0.type': 'hd', 'pci.0.4.0.port.0.path': this.images[0],
      'pci.0.4.0.port.1.type': 'cd', 'pci.0.4.0.port.1.path': this.images[1],
      ...(this.pool ? { 'pci.0.4.0.iopool': '1', 'pci.0.4.0.iopool_min': String(r.pick([512, 4096, 65536])) } : {}),
    }, { registerPages: true, coalescedRing: r.chance(0.5) });
    this.ports = [this.rig.startPort(0), this.rig.startPort(1)];
    this.bufs = Array.from({ length: 4 }, () => this.rig.alloc(8192));
  }

  step(): void {
    const r = this.r;
    const port = r.below(2);
    const k = r.below(10);
    if (k < 5) {
      const cmd = r.chance(0.9) ? r.pick(ATA_CMDS) : r.below(256);
      // Writes stay small: the image is sparse on a shared file system.
      const f = h2d(cmd, r.below(10000), r.below(64), r.below(0x10000));
      const acmd = Array.from(r.bytes(16));
      acmd[0] = r.chance(0.9) ? r.pick(ATAPI_CMDS) : acmd[0];
      const prdt: Prd[] = Array.from({ length: r.below(4) }, () => ({
        addr: r.chance(0.7) ? r.pick(this.bufs) : r.below(2 ** 20) * 4096,
        len: 1 + r.below(8192),
      }));
      const slot = r.below(32);
      this.lastOp = `port ${port} slot ${slot} cmd 0x${cmd.toString(16)}`;
      this.rig.command(this.ports[port].clb, slot, f, prdt, { acmd, atapi: port === 1, write: r.chance(0.3) });
      if (r.chance(0.5)) this.rig.pwr(port, P.SACT, 1 << slot);
      this.rig.pwr(port, P.CI, 2 ** slot);
      this.commands++;
    } else if (k < 8) {
      const reg = r.pick([P.IS, P.IE, P.CMD, P.SCTL, P.SERR, P.SACT, P.CI]);
      const v = reg === P.CMD ? (r.u32() & 0x11) | 0x10 : r.u32();
      this.lastOp = `port ${port} reg 0x${reg.toString(16)} = 0x${v.toString(16)}`;
      this.rig.pwr(port, reg, v);
    } else {
      const reg = r.pick([0x04, 0x08]); // GHC, IS
      const v = r.u32() & 0x7fffffff & ~1; // not GHC.HR: the rig's ports stay set up
      this.lastOp = `hba reg 0x${reg.toString(16)} = 0x${v.toString(16)}`;
      this.rig.wr(reg, v);
      this.rig.rd(r.below(0x400) & ~3);
    }
    if (this.pool && r.chance(0.3)) this.rig.hba.poll();
    // What the next exit does first: replay buffered writes, complete finished transfers.
    this.rig.io.flushCoalesced();
    this.rig.hba.poll();
    // The polled registers of the port just driven, and a few at random.
    const offs = [0x08, 0x100 + 0x80 * port + P.CI, 0x100 + 0x80 * port + P.SACT, 0x100 + 0x80 * port + P.IS, 0x100 + 0x80 * port + 0x20];
    for (let i = 0; i < 3; i++) offs.push(r.below(0x400) & ~3);
    for (const off of offs) {
      const page = this.rig.pageRd(off);
      const exit = this.rig.rd(off);
      if (page !== exit) throw new Error(`register page at ABAR+0x${off.toString(16)} holds 0x${page.toString(16)}, a read answers 0x${exit.toString(16)}`);
    }
  }

  close(): void {
    this.rig.close();
    if (this.rig.hba.pool && this.rig.hba.pool.pending !== 0) throw new Error(`${this.rig.hba.pool.pending} transfers still in flight after close`);
    for (const p of this.images) fs.rmSync(p, { force: true });
  }

  stats(): Record<string, number> { return { commands: this.commands }; }
}

export const AHCI_TARGET: FuzzTarget = {
  name: 'ahci',
  surface: 'AHCI HBA: ABAR port and HBA registers, command lists, FIS, PRDTs (anywhere, any length), ATA and ATAPI commands, NCQ',
  create: (rng) => new AhciFuzz(rng),
  // The rig allocates each command table from an 8 MiB heap.
  instanceOps: 2000,
};
