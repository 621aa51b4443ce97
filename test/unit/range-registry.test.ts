import { describe, expect, it } from 'vitest';
import { RangeOverlapError, RangeRegistry } from '../../src/vmm/range-registry.js';

describe('RangeRegistry', () => {
  it('finds the range containing an address, at both edges', () => {
    const r = new RangeRegistry<string>('I/O port');
    r.register('com1', 0x3f8, 8, 'a');
    r.register('pm', 0x400, 8, 'b');
    r.register('testdev', 0xf4, 4, 'c');
    expect(r.find(0x3f8)?.handler).toBe('a');
    expect(r.find(0x3ff)?.handler).toBe('a');
    expect(r.find(0x400)?.handler).toBe('b');
    expect(r.find(0xf7)?.handler).toBe('c');
    expect(r.find(0x3f7)).toBeUndefined();
    expect(r.find(0xf8)).toBeUndefined();
    expect(r.list().map((x) => x.name)).toEqual(['testdev', 'com1', 'pm']);
  });

  it('rejects overlaps, naming both ranges', () => {
    const r = new RangeRegistry<string>('I/O port');
    r.register('com1', 0x3f8, 8, 'a');
    expect(() => r.register('other', 0x3fc, 8, 'b')).toThrow(RangeOverlapError);
    expect(() => r.register('other', 0x3f0, 9, 'b')).toThrow(/0x3f0-0x3f8 of other overlaps 0x3f8-0x3ff of com1/);
    r.register('adjacent', 0x3f0, 8, 'b');
    expect(r.find(0x3f7)?.name).toBe('adjacent');
  });

  it('rejects empty or negative ranges and supports removal', () => {
    const r = new RangeRegistry<number>('MMIO');
    expect(() => r.register('x', 0, 0, 1)).toThrow(RangeError);
    expect(() => r.register('x', -1, 4, 1)).toThrow(RangeError);
    r.register('x', 0xfee00000, 0x1000, 1);
    expect(r.unregister(0xfee00000)).toBe(true);
    expect(r.find(0xfee00000)).toBeUndefined();
  });
});
