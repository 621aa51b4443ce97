// Regression tests for what the fuzzer (test/fuzz, FUZZING.md) found in the
// device models; each names the target and seed that found it.
import { describe, expect, it } from 'vitest';
import { FW_CFG_DMA_CTL_ERROR, FW_CFG_DMA_CTL_READ, FW_CFG_DMA_CTL_SELECT, FwCfg } from '../../src/firmware/fwcfg.js';
import { GuestMemory } from '../../src/vmm/guest-memory.js';

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
