// Programmable Attribute Map (PAM) of the Intel 440FX (82441FX PMC), the
// chipset shadowing of the legacy BIOS window 0xC0000-0xFFFFF, as QEMU's
// hw/pci-host/pam.c models it and as SeaBIOS and OVMF program it.
//
// Seven registers at config offsets 0x59-0x5f (PAM0-PAM6). Each nibble
// controls one segment with a read-enable (bit 0) and write-enable (bit 1):
//   PAM0 bits 5:4        0xF0000-0xFFFFF (64 KiB, the system BIOS)
//   PAM1 bits 1:0 / 5:4  0xC0000 / 0xC4000 (16 KiB each)
//   ...
//   PAM6 bits 1:0 / 5:4  0xE8000 / 0xEC000
// (the low nibble of PAM0 is reserved). Per segment:
//   RE=0 WE=0  reads and writes go to PCI: the boot ROM's real-mode alias
//              for 0xE0000-0xFFFFF (the ROM's last 128 KiB), all-ones
//              below it; writes are dropped.
//   RE=1 WE=0  read-only RAM: writes are dropped.
//   RE=0 WE=1  reads from PCI (as above), writes to RAM.
//   RE=1 WE=1  RAM, read-write.
//
// The window is left out of the RAM slots by the vmm (lpc.fwcfg=qemu), so
// this model maps it through MemoryMapControl: RAM read-write or read-only
// slots and read-only ROM alias slots, merged where neighbouring segments
// agree. One MMIO handler over the whole window serves what the slots do
// not: reads of unmapped ranges (all-ones) and writes that KVM exits on
// (read-only slots or no slot), which go to RAM where WE is set and are
// dropped elsewhere.

import type { DeviceContext, MemoryBacking, MemoryMapControl, MmioHandler } from '../device.js';

export const PAM_WINDOW_BASE = 0xc0000;
export const PAM_WINDOW_END = 0x100000;
export const PAM_WINDOW_SIZE = PAM_WINDOW_END - PAM_WINDOW_BASE;
/** Config offset of PAM0 in the i440FX host bridge. */
export const I440FX_PAM0 = 0x59;
export const PAM_REGS = 7;
/** The part of the window where the boot ROM's tail appears (128 KiB). */
export const BIOS_ALIAS_BASE = 0xe0000;
export const BIOS_ALIAS_SIZE = PAM_WINDOW_END - BIOS_ALIAS_BASE;

export const PAM_RE = 1;
export const PAM_WE = 2;

export interface PamSegment {
  base: number;
  size: number;
  /** PAM register index (0-6) and nibble shift (0 or 4). */
  reg: number;
  shift: number;
}

/** The 13 segments in address order: twelve of 16 KiB, then 0xF0000. */
export const PAM_SEGMENTS: readonly PamSegment[] = [
  ...Array.from({ length: 12 }, (_, i) => ({
    base: PAM_WINDOW_BASE + i * 0x4000, size: 0x4000, reg: 1 + (i >> 1), shift: (i & 1) * 4,
  })),
  { base: 0xf0000, size: 0x10000, reg: 0, shift: 4 },
];

/** One guest mapping of the window. */
export interface PamMapping {
  gpa: number;
  size: number;
  backing: MemoryBacking;
  readonly: boolean;
}

/**
 * Where the boot ROM shows below 1 MiB: its last min(size, 128 KiB) bytes
 * end at 1 MiB. `romSize` 0 means no ROM.
 */
export function biosAlias(romSize: number): { gpa: number; size: number; offset: number } | undefined {
  const size = Math.min(romSize, BIOS_ALIAS_SIZE) & ~0xfff;
  if (size <= 0) return undefined;
  return { gpa: PAM_WINDOW_END - size, size, offset: romSize - size };
}

/** The attribute (RE|WE) of a segment for the given PAM register bytes. */
export function segmentMode(pam: ArrayLike<number>, seg: PamSegment): number {
  return (pam[seg.reg] >> seg.shift) & 3;
}

/**
 * The mappings for a set of PAM register values (7 bytes, PAM0 first):
 * RAM (read-only when WE is clear) where RE is set; the ROM alias (read
 * only) where RE is clear and the alias covers the segment; nothing
 * elsewhere. Neighbouring segments that map the same way are merged.
 */
export function pamMappings(pam: ArrayLike<number>, romSize: number): PamMapping[] {
  const alias = biosAlias(romSize);
  const pieces: PamMapping[] = [];
  for (const seg of PAM_SEGMENTS) {
    const mode = segmentMode(pam, seg);
    if (mode & PAM_RE) {
      pieces.push({ gpa: seg.base, size: seg.size, backing: { kind: 'ram', offset: seg.base }, readonly: !(mode & PAM_WE) });
      continue;
    }
    if (!alias) continue;
    // The ROM alias, clipped to the segment.
    const lo = Math.max(seg.base, alias.gpa);
    const hi = Math.min(seg.base + seg.size, alias.gpa + alias.size);
    if (lo < hi) pieces.push({ gpa: lo, size: hi - lo, backing: { kind: 'bootrom', offset: alias.offset + (lo - alias.gpa) }, readonly: true });
  }
  const out: PamMapping[] = [];
  for (const p of pieces) {
    const last = out[out.length - 1];
    if (last && last.gpa + last.size === p.gpa && last.backing.kind === p.backing.kind
      && last.readonly === p.readonly && last.backing.offset + last.size === p.backing.offset) {
      last.size += p.size;
    } else {
      out.push({ ...p, backing: { ...p.backing } });
    }
  }
  return out;
}

function sameMapping(a: PamMapping, b: PamMapping): boolean {
  return a.gpa === b.gpa && a.size === b.size && a.readonly === b.readonly
    && a.backing.kind === b.backing.kind && a.backing.offset === b.backing.offset;
}

/**
 * The shadowing state of the window: applies PAM register values to a
 * MemoryMapControl and serves the window's MMIO exits.
 */
export class PamShadow {
  private readonly pam = new Uint8Array(PAM_REGS);
  private current: PamMapping[] = [];
  private ram: Uint8Array | undefined;
  private rom: Uint8Array | undefined;
  private readonly alias: ReturnType<typeof biosAlias>;

  constructor(private readonly map: MemoryMapControl, private readonly romSize: number) {
    this.alias = biosAlias(romSize);
    this.apply();
  }

  /** Registers the MMIO handler over the window. */
  register(ctx: Pick<DeviceContext, 'io'>): void {
    ctx.io.registerMmio('pam', PAM_WINDOW_BASE, PAM_WINDOW_SIZE, this.mmio);
  }

  /** The PAM register bytes (PAM0 first). */
  registers(): Uint8Array {
    return this.pam.slice();
  }

  /** Sets PAM register `index` (0-6); remaps when anything changed. */
  setRegister(index: number, value: number): void {
    if (index < 0 || index >= PAM_REGS) return;
    const v = index === 0 ? value & 0x30 : value & 0x33;
    if (this.pam[index] === v) return;
    this.pam[index] = v;
    this.apply();
  }

  /** Sets all seven registers at once (one remap). */
  setRegisters(values: ArrayLike<number>): void {
    let changed = false;
    for (let i = 0; i < PAM_REGS; i++) {
      const v = i === 0 ? values[i] & 0x30 : values[i] & 0x33;
      if (this.pam[i] !== v) { this.pam[i] = v; changed = true; }
    }
    if (changed) this.apply();
  }

  /** Back to the reset state: everything to PCI (ROM alias / nothing). */
  reset(): void {
    this.pam.fill(0);
    this.apply();
  }

  /** The mappings in force. */
  mappings(): readonly PamMapping[] {
    return this.current;
  }

  private apply(): void {
    const next = pamMappings(this.pam, this.romSize);
    const keep = (m: PamMapping, list: PamMapping[]): boolean => list.some((n) => sameMapping(m, n));
    for (const m of this.current) if (!keep(m, next)) this.map.unmap(m.gpa);
    for (const m of next) if (!keep(m, this.current)) this.map.map(m.gpa, m.size, m.backing, m.readonly);
    this.current = next;
  }

  private segmentAt(addr: number): PamSegment | undefined {
    if (addr >= 0xf0000) return PAM_SEGMENTS[12];
    return PAM_SEGMENTS[(addr - PAM_WINDOW_BASE) >> 14];
  }

  private ramView(): Uint8Array {
    this.ram ??= this.map.view({ kind: 'ram', offset: PAM_WINDOW_BASE }, PAM_WINDOW_SIZE);
    return this.ram;
  }

  private romView(): Uint8Array | undefined {
    if (!this.alias) return undefined;
    this.rom ??= this.map.view({ kind: 'bootrom', offset: this.alias.offset }, this.alias.size);
    return this.rom;
  }

  /** What a read of one byte sees (for accesses KVM did not serve from a slot). */
  readByte(addr: number): number {
    const seg = this.segmentAt(addr);
    if (!seg) return 0xff;
    if (segmentMode(this.pam, seg) & PAM_RE) return this.ramView()[addr - PAM_WINDOW_BASE];
    if (this.alias && addr >= this.alias.gpa) return this.romView()![addr - this.alias.gpa];
    return 0xff;
  }

  /** A write of one byte: to RAM where WE is set, dropped elsewhere. */
  writeByte(addr: number, value: number): void {
    const seg = this.segmentAt(addr);
    if (!seg || !(segmentMode(this.pam, seg) & PAM_WE)) return;
    this.ramView()[addr - PAM_WINDOW_BASE] = value;
  }

  readonly mmio: MmioHandler = {
    read: (addr, data) => {
      for (let i = 0; i < data.length; i++) data[i] = addr + i < PAM_WINDOW_END ? this.readByte(addr + i) : 0xff;
    },
    write: (addr, data) => {
      for (let i = 0; i < data.length; i++) if (addr + i < PAM_WINDOW_END) this.writeByte(addr + i, data[i]);
    },
  };
}
