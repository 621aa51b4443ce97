// The BIOS-era state bhyveload leaves for a directly loaded kernel: the
// memory half (IVT, BDA, handlers: src/loader/bios-state.ts) and the device
// half bhyve applies through KVM (src/vmm/bios-devices.ts), on buffers.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

import { BDA_BASE, biosStubs, BIOS_STUBS, writeBiosState } from '../../src/loader/bios-state.js';
import { GuestAllocator } from '../../src/loader/guest-layout.js';
import { loadFromSource } from '../../src/loader/index.js';
import { HostDirSource } from '../../src/loader/source.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { IRQCHIP, IRQCHIP_STATE, PIC_STATE, PIT_CHANNEL_STATE, SIZEOF } from '../../src/sys/kvm-abi.js';
import { computeLayout } from '../../src/sys/memory-map.js';
import { applyBiosDevices, APIC_LVT0, APIC_LVT1, APIC_SVR } from '../../src/vmm/bios-devices.js';

const M = 1024 * 1024;
function guest() {
  const layout = computeLayout(16 * M);
  return { layout, memory: new GuestMemory([{ gpa: 0, bytes: new Uint8Array(layout.lowmem) }]) };
}
const vec = (m: GuestMemory, v: number) => [m.readU16(v * 4 + 2), m.readU16(v * 4)];

describe('BIOS state in memory (bhyveload)', () => {
  it('points every vector at a handler: iret, EOI for the 8259 vectors, the tick counter at 8', () => {
    const { memory, layout } = guest();
    const placed = writeBiosState(memory, layout, []);
    expect(placed.map((p) => [p.addr, p.what])).toEqual([[0, 'BIOS interrupt vectors and data area'], [BIOS_STUBS, 'BIOS interrupt handlers']]);
    const s = biosStubs();
    expect(memory.readU8(s.iret)).toBe(0xcf);
    expect(vec(memory, 0x00)).toEqual([0, s.iret]);
    expect(vec(memory, 0x1c)).toEqual([0, s.iret]);
    expect(vec(memory, 0x08)).toEqual([0, s.timer]);
    for (const v of [0x09, 0x0f]) expect(vec(memory, v)).toEqual([0, s.eoiMaster]);
    for (const v of [0x70, 0x73, 0x77]) expect(vec(memory, v)).toEqual([0, s.eoiSlave]);
    expect(vec(memory, 0x78)).toEqual([0, s.iret]);
    // EOI handlers: out 0x20 (and 0xa0 first for the slave), iret.
    expect([...memory.read(s.eoiMaster, 7)]).toEqual([0x50, 0xb0, 0x20, 0xe6, 0x20, 0x58, 0xcf]);
    expect([...memory.read(s.eoiSlave, 9)]).toEqual([0x50, 0xb0, 0x20, 0xe6, 0xa0, 0xe6, 0x20, 0x58, 0xcf]);
    // The timer handler counts in the BDA, calls int 0x1c, sends the EOI.
    const t = [...memory.read(s.timer, s.bytes.length - (s.timer - BIOS_STUBS))];
    expect(t.slice(6, 11)).toEqual([0x83, 0x06, 0x6c, 0x04, 0x01]);
    expect(t.slice(-9)).toEqual([0xcd, 0x1c, 0xb0, 0x20, 0xe6, 0x20, 0x58, 0x1f, 0xcf]);
    // The BDA: COM1, the equipment word, 640 KiB of base memory, no ticks yet.
    expect(memory.readU16(BDA_BASE)).toBe(0x3f8);
    expect(memory.readU16(BDA_BASE + 0x10)).toBe(0x0220);
    expect(memory.readU16(BDA_BASE + 0x13)).toBe(640);
    expect(memory.readU32(BDA_BASE + 0x6c)).toBe(0);
  });

  it('refuses clearly when the kernel asked for that memory itself', () => {
    const { memory, layout } = guest();
    const a = new GuestAllocator(memory, layout);
    a.reserve(0x400, 0x10, 'kernel segment 0');
    expect(() => writeBiosState(memory, layout, a.placements)).toThrow(/overlaps kernel segment 0 .*no room for the BIOS state/);
  });

  it('is part of what bhyveload loads: the boot state says bios', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'bios-state-'));
    const b = new Uint8Array(0x1000);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, 0x1badb002, true); dv.setUint32(4, 0x10000, true); dv.setUint32(8, (-(0x1badb002 + 0x10000)) >>> 0, true);
    dv.setUint32(12, 0x200000, true); dv.setUint32(16, 0x200000, true); dv.setUint32(28, 0x200020, true);
    fs.writeFileSync(path.join(root, 'kern'), b);
    const { memory, layout } = guest();
    const r = loadFromSource({ kernel: '/kern', modules: [] }, new HostDirSource(root), memory, layout);
    expect(r.state.bios).toBe(true);
    expect(r.placements.some((p) => p.what === 'BIOS interrupt handlers')).toBe(true);
    expect(memory.readU16(BDA_BASE + 0x13)).toBe(640);
    fs.rmSync(root, { recursive: true, force: true });
  });
});

describe('BIOS state in the devices (bhyve, through KVM)', () => {
  it('initialises the 8259s at 0x08/0x70, PIT channel 0 at 18.2 Hz, LINT0 ExtINT', () => {
    const chips = new Map<number, Uint8Array>();
    for (const c of [IRQCHIP.PIC_MASTER, IRQCHIP.PIC_SLAVE]) {
      const s = new Uint8Array(SIZEOF.kvm_irqchip);
      new DataView(s.buffer).setUint32(0, c, true);
      s[IRQCHIP_STATE.chip + PIC_STATE.imr] = 0xff;
      s[IRQCHIP_STATE.chip + PIC_STATE.init_state] = 1; // mid-initialisation
      s[IRQCHIP_STATE.chip + PIC_STATE.elcr] = 0x0c;
      chips.set(c, s);
    }
    let pit = new Uint8Array(SIZEOF.kvm_pit_state2).fill(0);
    pit[24 + PIT_CHANNEL_STATE.mode] = 3; // channel 1 left alone
    let lapic = new Uint8Array(SIZEOF.kvm_lapic_state);
    new DataView(lapic.buffer).setUint32(APIC_LVT0, 0x10000, true);
    const set: number[] = [];
    applyBiosDevices({
      getIrqchip: (c) => chips.get(c)!.slice(),
      setIrqchip: (s) => { set.push(new DataView(s.buffer).getUint32(0, true)); chips.set(new DataView(s.buffer).getUint32(0, true), s); },
      getPit2: () => pit.slice(),
      setPit2: (s) => { pit = s; },
    }, { getLapic: () => lapic.slice(), setLapic: (s) => { lapic = s; } });
    expect(set).toEqual([IRQCHIP.PIC_MASTER, IRQCHIP.PIC_SLAVE]);
    const pic = (c: number, f: keyof typeof PIC_STATE) => chips.get(c)![IRQCHIP_STATE.chip + PIC_STATE[f]];
    expect([pic(IRQCHIP.PIC_MASTER, 'irq_base'), pic(IRQCHIP.PIC_MASTER, 'imr'), pic(IRQCHIP.PIC_MASTER, 'init_state')]).toEqual([0x08, 0xf8, 0]);
    expect([pic(IRQCHIP.PIC_SLAVE, 'irq_base'), pic(IRQCHIP.PIC_SLAVE, 'imr'), pic(IRQCHIP.PIC_SLAVE, 'init4')]).toEqual([0x70, 0xfe, 1]);
    expect(pic(IRQCHIP.PIC_SLAVE, 'elcr')).toBe(0x0c); // kept
    const pv = new DataView(pit.buffer);
    expect(pv.getUint32(PIT_CHANNEL_STATE.count, true)).toBe(0); // 65536: 18.2 Hz
    expect([pit[PIT_CHANNEL_STATE.mode], pit[PIT_CHANNEL_STATE.rw_mode], pit[PIT_CHANNEL_STATE.gate]]).toEqual([3, 3, 1]);
    expect(pit[24 + PIT_CHANNEL_STATE.mode]).toBe(3);
    const lv = new DataView(lapic.buffer);
    expect(lv.getUint32(APIC_LVT0, true)).toBe(0x8700);
    expect(lv.getUint32(APIC_LVT1, true)).toBe(0x8400);
    expect(lv.getUint32(APIC_SVR, true) & 0x100).toBe(0x100);
  });
});
