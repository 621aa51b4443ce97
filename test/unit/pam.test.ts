// PAM shadowing of 0xC0000-0xFFFFF over a fake MemoryMapControl that acts
// like KVM memory slots: overlapping slots are refused, read-only slots and
// unmapped addresses exit to the MMIO handler the model registered.
import { describe, expect, it } from 'vitest';
import type { MemoryBacking, MemoryMapControl } from '../../src/devices/device.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';
import { biosAlias, pamMappings, PamShadow, PAM_SEGMENTS } from '../../src/devices/pci/pam.js';

interface Slot { gpa: number; size: number; backing: MemoryBacking; readonly: boolean }

class FakeMemoryMap implements MemoryMapControl {
  readonly slots = new Map<number, Slot>();
  readonly ram = new Uint8Array(0x100000);
  mapCalls = 0;
  constructor(readonly rom: Uint8Array) {}
  map(gpa: number, size: number, backing: MemoryBacking, readonly: boolean): void {
    if (gpa % 4096 || size % 4096 || size <= 0) throw new RangeError('not page aligned');
    this.slots.delete(gpa);
    for (const s of this.slots.values()) {
      if (gpa < s.gpa + s.size && s.gpa < gpa + size) throw new Error(`slot 0x${gpa.toString(16)} overlaps 0x${s.gpa.toString(16)}`);
    }
    const limit = backing.kind === 'ram' ? this.ram.length : this.rom.length;
    if (backing.offset + size > limit) throw new RangeError('exceeds backing');
    this.slots.set(gpa, { gpa, size, backing, readonly: readonly || backing.kind === 'bootrom' });
    this.mapCalls++;
  }
  unmap(gpa: number): void { this.slots.delete(gpa); }
  view(backing: MemoryBacking, size: number): Uint8Array {
    const b = backing.kind === 'ram' ? this.ram : this.rom;
    return b.subarray(backing.offset, backing.offset + size);
  }
  private slotAt(addr: number): Slot | undefined {
    for (const s of this.slots.values()) if (addr >= s.gpa && addr < s.gpa + s.size) return s;
    return undefined;
  }
  /** A guest byte read: a slot serves it, else an MMIO exit. */
  read(bus: LocalIoBus, addr: number): number {
    const s = this.slotAt(addr);
    if (s) return this.view(s.backing, s.size)[addr - s.gpa];
    const d = new Uint8Array(1);
    if (!bus.mmioRead(addr, d)) throw new Error(`no MMIO handler at 0x${addr.toString(16)}`);
    return d[0];
  }
  /** A guest byte write: a writable slot takes it, else an MMIO exit. */
  write(bus: LocalIoBus, addr: number, v: number): void {
    const s = this.slotAt(addr);
    if (s && !s.readonly) { this.view(s.backing, s.size)[addr - s.gpa] = v; return; }
    if (!bus.mmioWrite(addr, Uint8Array.of(v))) throw new Error(`no MMIO handler at 0x${addr.toString(16)}`);
  }
}

/** A ROM whose every byte says where it is: (offset >> 12) ^ offset. */
function patternRom(size: number): Uint8Array {
  const r = new Uint8Array(size);
  for (let i = 0; i < size; i++) r[i] = ((i >> 12) ^ i ^ 0x5a) & 0xff;
  return r;
}

function rig(romSize = 128 * 1024) {
  const rom = patternRom(romSize);
  const mm = new FakeMemoryMap(rom);
  const bus = new LocalIoBus();
  const pam = new PamShadow(mm, romSize);
  pam.register({ io: bus });
  return { rom, mm, bus, pam, rd: (a: number) => mm.read(bus, a), wr: (a: number, v: number) => mm.write(bus, a, v) };
}

describe('PAM segments', () => {
  it('are twelve 16 KiB segments from 0xC0000 (PAM1-PAM6, low nibble first) and 0xF0000 (PAM0 high nibble)', () => {
    expect(PAM_SEGMENTS).toHaveLength(13);
    expect(PAM_SEGMENTS[0]).toEqual({ base: 0xc0000, size: 0x4000, reg: 1, shift: 0 });
    expect(PAM_SEGMENTS[1]).toEqual({ base: 0xc4000, size: 0x4000, reg: 1, shift: 4 });
    expect(PAM_SEGMENTS[11]).toEqual({ base: 0xec000, size: 0x4000, reg: 6, shift: 4 });
    expect(PAM_SEGMENTS[12]).toEqual({ base: 0xf0000, size: 0x10000, reg: 0, shift: 4 });
  });

  it('alias the last 128 KiB of the ROM below 1 MiB, or all of a smaller ROM', () => {
    expect(biosAlias(128 * 1024)).toEqual({ gpa: 0xe0000, size: 0x20000, offset: 0 });
    expect(biosAlias(256 * 1024)).toEqual({ gpa: 0xe0000, size: 0x20000, offset: 0x20000 });
    expect(biosAlias(64 * 1024)).toEqual({ gpa: 0xf0000, size: 0x10000, offset: 0 });
    expect(biosAlias(0)).toBeUndefined();
  });

  it('merge neighbours that map alike into one slot', () => {
    expect(pamMappings([0, 0, 0, 0, 0, 0, 0], 128 * 1024)).toEqual([
      { gpa: 0xe0000, size: 0x20000, backing: { kind: 'bootrom', offset: 0 }, readonly: true },
    ]);
    expect(pamMappings([0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33], 128 * 1024)).toEqual([
      { gpa: 0xc0000, size: 0x40000, backing: { kind: 'ram', offset: 0xc0000 }, readonly: false },
    ]);
    // What SeaBIOS leaves: option ROM area read-only, the rest read-only too.
    expect(pamMappings([0x10, 0x11, 0x11, 0x31, 0x33, 0x33, 0x33], 128 * 1024)).toEqual([
      { gpa: 0xc0000, size: 0x14000, backing: { kind: 'ram', offset: 0xc0000 }, readonly: true },
      { gpa: 0xd4000, size: 0x1c000, backing: { kind: 'ram', offset: 0xd4000 }, readonly: false },
      { gpa: 0xf0000, size: 0x10000, backing: { kind: 'ram', offset: 0xf0000 }, readonly: true },
    ]);
  });
});

describe('PamShadow', () => {
  it('at reset shows the ROM tail at 0xE0000-0xFFFFF and all-ones below; writes go nowhere', () => {
    const r = rig();
    expect(r.rd(0xffff0)).toBe(r.rom[0x1fff0]);
    expect(r.rd(0xe0000)).toBe(r.rom[0]);
    expect(r.rd(0xc0000)).toBe(0xff);
    expect(r.rd(0xdffff)).toBe(0xff);
    r.wr(0xf1234, 0x99);
    r.wr(0xc0000, 0x99);
    expect(r.rd(0xf1234)).toBe(r.rom[0x11234]);
    expect(r.mm.ram[0xf1234]).toBe(0);
    expect(r.mm.ram[0xc0000]).toBe(0);
  });

  it('shows the last 128 KiB of a 256 KiB ROM', () => {
    const r = rig(256 * 1024);
    expect(r.rd(0xe0000)).toBe(r.rom[0x20000]);
    expect(r.rd(0xfffff)).toBe(r.rom[0x3ffff]);
  });

  it('switches segments between ROM, read-write RAM and read-only RAM', () => {
    const r = rig();
    r.pam.setRegister(0, 0x30); // 0xF0000: RAM read-write
    r.wr(0xf1234, 0x42);
    expect(r.rd(0xf1234)).toBe(0x42);
    expect(r.mm.ram[0xf1234]).toBe(0x42);
    expect(r.rd(0xe0000)).toBe(r.rom[0]); // 0xE0000 still the ROM
    r.pam.setRegister(0, 0x10); // read-only RAM: reads RAM, writes dropped
    r.wr(0xf1234, 0x43);
    expect(r.rd(0xf1234)).toBe(0x42);
    r.pam.setRegister(0, 0x00); // back to the ROM
    expect(r.rd(0xf1234)).toBe(r.rom[0x11234]);
    // 16 KiB granularity below 0xF0000: only 0xC4000-0xC7FFF becomes RAM.
    r.pam.setRegister(1, 0x30);
    r.wr(0xc4000, 7);
    expect(r.rd(0xc4000)).toBe(7);
    r.wr(0xc0000, 7);
    expect(r.rd(0xc0000)).toBe(0xff);
    expect(r.rd(0xc8000)).toBe(0xff);
  });

  it('in write-enable-only mode reads the ROM and writes RAM (shadowing a ROM onto itself)', () => {
    const r = rig();
    r.pam.setRegister(0, 0x20);
    for (let a = 0xf0000; a < 0xf0010; a++) r.wr(a, r.rd(a)); // copy ROM -> RAM through the same addresses
    r.wr(0xf0020, 0x77);
    expect(r.rd(0xf0020)).toBe(r.rom[0x10020]); // reads still the ROM
    expect(r.mm.ram[0xf0020]).toBe(0x77);
    r.pam.setRegister(0, 0x10);
    expect(r.rd(0xf0020)).toBe(0x77);
    for (let a = 0xf0000; a < 0xf0010; a++) expect(r.rd(a)).toBe(r.rom[a - 0xe0000]);
    // Below the alias, write-only segments read all-ones and write RAM.
    r.pam.setRegister(2, 0x02);
    r.wr(0xc8001, 0x55);
    expect(r.rd(0xc8001)).toBe(0xff);
    expect(r.mm.ram[0xc8001]).toBe(0x55);
  });

  it('remaps only when a register really changes, and never overlaps slots', () => {
    const r = rig();
    const before = r.mm.mapCalls;
    r.pam.setRegisters([0, 0, 0, 0, 0, 0, 0]);
    r.pam.setRegister(3, 0);
    expect(r.mm.mapCalls).toBe(before);
    // Every combination of one segment's mode against the others' (the fake throws on overlap).
    for (let seg = 0; seg < 13; seg++) {
      for (let mode = 0; mode < 4; mode++) {
        const regs = [0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33];
        const s = PAM_SEGMENTS[seg];
        regs[s.reg] = (regs[s.reg] & ~(3 << s.shift)) | (mode << s.shift);
        r.pam.setRegisters(regs);
        r.pam.reset();
      }
    }
    expect([...r.mm.slots.values()]).toEqual([{ gpa: 0xe0000, size: 0x20000, backing: { kind: 'bootrom', offset: 0 }, readonly: true }]);
  });

  it('without a ROM reads all-ones everywhere at reset', () => {
    const mm = new FakeMemoryMap(new Uint8Array(0));
    const bus = new LocalIoBus();
    const pam = new PamShadow(mm, 0);
    pam.register({ io: bus });
    expect(mm.slots.size).toBe(0);
    expect(mm.read(bus, 0xffff0)).toBe(0xff);
    pam.setRegister(0, 0x30);
    mm.write(bus, 0xf0000, 1);
    expect(mm.read(bus, 0xf0000)).toBe(1);
  });
});
