// Regression tests for what the fuzzer (test/fuzz, FUZZING.md) found in the
// device models; each names the target and seed that found it.
import { describe, expect, it } from 'vitest';
import { FW_CFG_DMA_CTL_ERROR, FW_CFG_DMA_CTL_READ, FW_CFG_DMA_CTL_SELECT, FwCfg } from '../../src/firmware/fwcfg.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { applyVcpuState, type VcpuStateUpdate } from '../../src/vmm/vcpu-state.js';
import type { Regs, Sregs, Vcpu } from '../../src/sys/kvm.js';
import { REGS_ORDER } from '../../src/sys/kvm-abi.js';

/** Guest memory that records the largest buffer a device wrote through it. */
class WatchedMemory extends GuestMemory {
  largestWrite = 0;
  write(gpa: number, data: Uint8Array): void {
    this.largestWrite = Math.max(this.largestWrite, data.length);
    super.write(gpa, data);
  }
}

function dmaAccess(ram: Uint8Array, at: number, control: number, length: number, address: number): DataView {
  const dv = new DataView(ram.buffer, at, 16);
  dv.setUint32(0, control >>> 0);
  dv.setUint32(4, length >>> 0);
  dv.setBigUint64(8, BigInt(address));
  return dv;
}

describe('fw_cfg DMA (fuzz target fwcfg)', () => {
  it('a 4 GiB read past an item neither allocates 4 GiB nor stalls: it fails with the error bit', () => {
    const ram = new Uint8Array(1 << 20);
    const mem = new WatchedMemory([{ gpa: 0, bytes: ram }]);
    const fw = new FwCfg(mem);
    // A missing item (0x1234), READ of 0xffffffff bytes into RAM.
    const dv = dmaAccess(ram, 0, (0x1234 << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ, 0xffffffff, 0x1000);
    fw.runDma(0);
    expect(dv.getUint32(0) & FW_CFG_DMA_CTL_ERROR).toBe(FW_CFG_DMA_CTL_ERROR);
    expect(mem.largestWrite).toBeLessThanOrEqual(ram.length);
  });

  it('a read past an item still zeroes the guest buffer in place', () => {
    const ram = new Uint8Array(1 << 20).fill(0xaa);
    const mem = new WatchedMemory([{ gpa: 0, bytes: ram }]);
    const fw = new FwCfg(mem);
    const dv = dmaAccess(ram, 0, (0x1234 << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ, 64, 0x2000);
    fw.runDma(0);
    expect(dv.getUint32(0)).toBe(0);
    expect([...ram.subarray(0x2000, 0x2040)].every((b) => b === 0)).toBe(true);
    expect(ram[0x2040]).toBe(0xaa);
  });
});

describe('set-state updates from the control socket (fuzz target control-socket)', () => {
  /** Registers kept as KVM returns them; only what applyVcpuState calls. */
  function fakeVcpu() {
    const seg = { base: 0n, limit: 0, selector: 0, type: 0, present: 0, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0 };
    const regs = Object.fromEntries(REGS_ORDER.map((n) => [n, 0n])) as Regs;
    let sregs = {
      cs: { ...seg }, ds: { ...seg }, es: { ...seg }, fs: { ...seg }, gs: { ...seg }, ss: { ...seg }, tr: { ...seg }, ldt: { ...seg },
      gdt: { base: 0n, limit: 0 }, idt: { base: 0n, limit: 0 }, cr0: 0n, cr2: 0n, cr3: 0n, cr4: 0n, cr8: 0n, efer: 0n, apic_base: 0n,
    } as Sregs;
    let dregs = [0n, 0n, 0n, 0n, 0n, 0n];
    return {
      regs,
      getRegs: () => ({ ...regs }), setRegs: (r: Regs) => { Object.assign(regs, r); },
      getSregs: () => structuredClone(sregs), setSregs: (s: Sregs) => { sregs = s; },
      getDebugRegs: () => [...dregs], setDebugRegs: (d: bigint[]) => { dregs = d; },
    } as unknown as Vcpu & { regs: Regs };
  }

  it('a register value that is not a string is a user error naming the register, not a TypeError', () => {
    const v = fakeVcpu();
    expect(() => applyVcpuState(v, { regs: { rax: 5 } } as unknown as VcpuStateUpdate)).toThrow(RangeError);
    expect(() => applyVcpuState(v, { regs: { rax: 5 } } as unknown as VcpuStateUpdate)).toThrow(/for rax/);
    expect(() => applyVcpuState(v, { control: { cr3: null } } as unknown as VcpuStateUpdate)).toThrow(RangeError);
    expect(() => applyVcpuState(v, { gdt: { base: null } } as unknown as VcpuStateUpdate)).toThrow(RangeError);
  });

  it('a group that is not an object is a user error', () => {
    const v = fakeVcpu();
    for (const u of [null, 'x', { segments: { tr: 7 } }, { segments: 1 }, { gdt: null }, { debug: [1] }]) {
      expect(() => applyVcpuState(v, u as unknown as VcpuStateUpdate), JSON.stringify(u)).toThrow(RangeError);
    }
  });

  it('valid updates still apply', () => {
    const v = fakeVcpu();
    applyVcpuState(v, { regs: { rax: '0x10', rip: '4096' } });
    expect(v.regs.rax).toBe(0x10n);
    expect(v.regs.rip).toBe(4096n);
  });
});

describe('fw_cfg DMA across RAM chunks', () => {
  it('a transfer into a buffer that straddles two RAM regions lands whole', () => {
    // Guest RAM in two chunks that touch at 0x10000, as the VMM maps it (1 GiB chunks).
    const ram = new Uint8Array(0x20000);
    const mem = new GuestMemory([{ gpa: 0, bytes: ram.subarray(0, 0x10000) }, { gpa: 0x10000, bytes: ram.subarray(0x10000) }]);
    const fw = new FwCfg(mem);
    fw.addFile('opt/x', Uint8Array.from({ length: 64 }, (_, i) => i + 1));
    const sel = fw.fileSelector('opt/x')!;
    const dv = dmaAccess(ram, 0, (sel << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ, 64, 0x10000 - 20);
    fw.runDma(0);
    expect(dv.getUint32(0)).toBe(0);
    expect([...ram.subarray(0x10000 - 20, 0x10000 + 44)]).toEqual(Array.from({ length: 64 }, (_, i) => i + 1));
  });
});
