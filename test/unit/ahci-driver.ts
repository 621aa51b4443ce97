// An AHCI driver for unit tests: a platform with an ahci function at 0:4:0,
// guest RAM as a plain buffer holding the command list, received-FIS area,
// command tables and PRDT buffers, built exactly as a guest driver builds
// them, and the HBA driven through its PCI config space and ABAR. No /dev/kvm.

import type { InterruptSink, KvmDoorbells, RegisterPages } from '../../src/devices/device.js';
import type { Platform } from '../../src/devices/platform.js';
import { AhciController } from '../../src/devices/ahci/ahci.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { FakeCoalescedRing } from './fake-coalesced-ring.js';
import { buildRigPlatform, PciRig, RIG_LAYOUT } from './pci-rig.js';

export const RAM_BASE = 0x100000;
export const RAM_SIZE = 8 << 20;
export const SLOT = 4;

export class MsiLog implements InterruptSink {
  levels = new Map<number, boolean>();
  msis: Array<[number, number]> = [];
  setLevel(gsi: number, high: boolean): void { this.levels.set(gsi, high); }
  pulse(): void {}
  signalMsi(address: number, data: number): void { this.msis.push([address, data]); }
}

export interface Prd { addr: number; len: number; }

export class AhciRig extends PciRig {
  readonly irq = new MsiLog();
  readonly bytes = new Uint8Array(RAM_SIZE);
  readonly mem = new GuestMemory([{ gpa: RAM_BASE, bytes: this.bytes }]);
  readonly platform: Platform;
  readonly hba: AhciController;
  readonly abar: number;
  private heap = RAM_BASE + 0x10000;

  /** With `registerPages`: the register pages the HBA asked for, and
   * where the platform mapped them (undefined while not mapped). */
  pages: { bytes: Uint8Array; mappedAt: number | undefined } | undefined;
  constructor(settings: Record<string, string>, opts: { registerPages?: boolean; coalescedRing?: boolean } = {}) {
    super(SLOT, true);
    if (opts.coalescedRing) this.coalesced = new FakeCoalescedRing(this.io);
    // No I/O threads unless a test asks (without a VM memory file the pool
    // has none: its requests would wait for the next exit or poll()).
    this.platform = buildRigPlatform(this.io, this.irq, this.mem,
      { [`pci.0.${SLOT}.0.device`]: 'ahci', [`pci.0.${SLOT}.0.iopool`]: '0', ...settings },
      opts.registerPages || opts.coalescedRing ? this.fakeKvm(opts.registerPages ?? false) : undefined);
    this.hba = this.platform.devices.find((d): d is AhciController => d instanceof AhciController)!;
    this.abar = (this.cfgRd(0x24) & ~0xf) >>> 0;
  }

  protected get mmioBase(): number { return this.abar; }

  /** With `coalescedRing`: KVM's coalesced MMIO ring (wr() appends to it
   * for an address in a zone the HBA registered, instead of exiting). */
  get ring(): FakeCoalescedRing | undefined { return this.coalesced; }

  close(): void { this.hba.close(); }

  /** KVM as far as register pages go (plain memory that records where it
   * is mapped) and the coalesced MMIO ring (when the rig has one). */
  private fakeKvm(pages: boolean): KvmDoorbells {
    return {
      ioeventfd: () => false,
      helper: { memoryPath: '', layout: RIG_LAYOUT, doorbell: undefined as never },
      coalesce: (addr, len, on) => this.ring?.coalesce(addr, len, on) ?? false,
      flushCoalesced: () => this.io.flushCoalesced(),
      replayingCoalesced: () => this.io.replaying,
      registerPages: !pages ? undefined : (size: number): RegisterPages => {
        const p = { bytes: new Uint8Array(size), mappedAt: undefined as number | undefined };
        this.pages = p;
        return { bytes: p.bytes, map: (gpa) => { p.mappedAt = gpa; return true; }, unmap: () => { p.mappedAt = undefined; } };
      },
    };
  }

  /** A 32-bit register as the guest reads it from the register page. */
  pageRd(off: number): number {
    if (!this.pages || this.pages.mappedAt !== this.abar) throw new Error('register page not mapped at ABAR');
    return new DataView(this.pages.bytes.buffer).getUint32(off, true);
  }

  prd(port: number, reg: number): number { return this.rd(0x100 + 0x80 * port + reg); }
  pwr(port: number, reg: number, v: number): void { this.wr(0x100 + 0x80 * port + reg, v); }

  alloc(len: number, align = 128): number {
    this.heap = Math.ceil(this.heap / align) * align;
    const a = this.heap;
    this.heap += len;
    if (this.heap > RAM_BASE + RAM_SIZE) throw new Error('test heap exhausted');
    return a;
  }

  off(gpa: number): number { return gpa - RAM_BASE; }
  fill(gpa: number, data: Uint8Array): void { this.bytes.set(data, this.off(gpa)); }
  read(gpa: number, len: number): Uint8Array { return this.bytes.slice(this.off(gpa), this.off(gpa) + len); }
  u32(gpa: number): number { return new DataView(this.bytes.buffer).getUint32(this.off(gpa), true); }

  /** Port bring-up as a driver does: CLB/FB, FRE, ST, clear SERR/IS, enable all interrupts. */
  startPort(port: number): { clb: number; fb: number } {
    const clb = this.alloc(1024, 1024);
    const fb = this.alloc(256, 256);
    this.pwr(port, 0x00, clb); this.pwr(port, 0x04, 0);
    this.pwr(port, 0x08, fb); this.pwr(port, 0x0c, 0);
    this.pwr(port, 0x18, 0x10); // FRE
    this.pwr(port, 0x30, 0xffffffff);
    this.pwr(port, 0x10, 0xffffffff);
    this.pwr(port, 0x14, 0xfdc000ff);
    this.pwr(port, 0x18, 0x11); // FRE | ST
    return { clb, fb };
  }

  /** Writes command header `slot` and its command table (CFIS, ACMD, PRDT). */
  command(clb: number, slot: number, cfis: number[], prdt: Prd[], o: { write?: boolean; acmd?: number[]; atapi?: boolean; ctba?: number; prdtl?: number } = {}): number {
    const ctba = o.ctba ?? this.alloc(0x80 + 16 * Math.max(1, prdt.length), 128);
    if (o.ctba === undefined) {
      const t = new Uint8Array(0x80 + 16 * prdt.length);
      t.set(cfis.slice(0, 64));
      if (o.acmd) t.set(o.acmd, 0x40);
      const dv = new DataView(t.buffer);
      prdt.forEach((p, i) => {
        dv.setUint32(0x80 + 16 * i, p.addr % 2 ** 32, true);
        dv.setUint32(0x84 + 16 * i, Math.floor(p.addr / 2 ** 32), true);
        dv.setUint32(0x8c + 16 * i, (p.len - 1) & 0x3fffff, true);
      });
      this.fill(ctba, t);
    }
    const h = new Uint8Array(32);
    const hv = new DataView(h.buffer);
    const cfl = 5;
    hv.setUint16(0, cfl | (o.atapi ? 0x20 : 0) | (o.write ? 0x40 : 0), true);
    hv.setUint16(2, o.prdtl ?? prdt.length, true);
    hv.setUint32(4, 0, true);
    hv.setUint32(8, ctba % 2 ** 32, true);
    hv.setUint32(12, Math.floor(ctba / 2 ** 32), true);
    this.fill(clb + 32 * slot, h);
    return ctba;
  }

  prdbc(clb: number, slot: number): number { return this.u32(clb + 32 * slot + 4); }
}

/** A register H2D FIS for command `cmd` with a 48-bit LBA and count. */
export function h2d(cmd: number, lba = 0, count = 0, features = 0): number[] {
  const f = new Array(20).fill(0);
  f[0] = 0x27; f[1] = 0x80; f[2] = cmd; f[3] = features & 0xff;
  f[4] = lba & 0xff; f[5] = (lba >>> 8) & 0xff; f[6] = (lba >>> 16) & 0xff; f[7] = 0x40;
  f[8] = Math.floor(lba / 2 ** 24) & 0xff; f[9] = Math.floor(lba / 2 ** 32) & 0xff; f[10] = Math.floor(lba / 2 ** 40) & 0xff;
  f[11] = (features >> 8) & 0xff;
  f[12] = count & 0xff; f[13] = (count >> 8) & 0xff;
  return f;
}

/** An NCQ (FPDMA QUEUED) FIS: count in FEATURES, tag in COUNT bits 7:3. */
export function ncq(cmd: number, lba: number, count: number, tag: number): number[] {
  const f = h2d(cmd, lba, tag << 3, count);
  return f;
}
