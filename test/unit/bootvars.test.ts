import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import type { DeviceContext, MemoryBacking, MemoryMapControl } from '../../src/devices/device.js';
import { BootVars, CFI_BLOCK_SIZE, createBootVars } from '../../src/devices/lpc/bootvars.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';

/** A memory map over a real file (read/written with fs), recording map/unmap. */
class FakeMap implements MemoryMapControl {
  mapped = new Map<number, { size: number; backing: MemoryBacking; readonly: boolean }>();
  log: string[] = [];
  constructor(private readonly bytes: Uint8Array) {}
  map(gpa: number, size: number, backing: MemoryBacking, readonly: boolean): void {
    this.mapped.set(gpa, { size, backing, readonly });
    this.log.push(`map ${gpa.toString(16)}`);
  }
  unmap(gpa: number): void {
    this.mapped.delete(gpa);
    this.log.push(`unmap ${gpa.toString(16)}`);
  }
  view(backing: MemoryBacking, size: number): Uint8Array {
    expect(backing.kind).toBe('bootvars');
    return this.bytes.subarray(backing.offset, backing.offset + size);
  }
}

const dirs: string[] = [];
afterEach(() => { for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true }); });

function tmpFile(name: string, bytes: Uint8Array): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'bootvars-unit-'));
  dirs.push(d);
  const p = path.join(d, name);
  fs.writeFileSync(p, bytes);
  return p;
}

const GPA = 0xfffe0000;
const SIZE = 0x2000;

function setup(initial = new Uint8Array(SIZE)) {
  const file = tmpFile('VARS.fd', initial);
  const bytes = new Uint8Array(initial);
  const io = new LocalIoBus();
  const map = new FakeMap(bytes);
  const ctx = { io } as unknown as DeviceContext;
  const dev = new BootVars(ctx, map, { path: file, gpa: GPA, size: SIZE });
  const rd = (off: number, n = 1): number[] => {
    const d = new Uint8Array(n);
    expect(io.mmioRead(GPA + off, d)).toBe(true);
    return [...d];
  };
  const wr = (off: number, ...v: number[]): void => { expect(io.mmioWrite(GPA + off, new Uint8Array(v))).toBe(true); };
  return { dev, map, bytes, rd, wr, file };
}

describe('bootvars CFI flash', () => {
  it('starts in read-array mode with the VARS slot mapped read-only', () => {
    const { map, dev, rd, bytes } = setup();
    expect(map.mapped.get(GPA)).toEqual({ size: SIZE, backing: { kind: 'bootvars', offset: 0 }, readonly: true });
    expect(dev.mode).toBe('array');
    bytes[5] = 0x5a;
    expect(rd(5)).toEqual([0x5a]); // a read that traps anyway reads the array
  });

  it('programs a byte: 0x10 then data; status 0x80; read-array shows it', () => {
    const { map, rd, wr, bytes } = setup();
    wr(0x10, 0x10);
    expect(map.mapped.has(GPA)).toBe(false); // reads must trap now
    expect(rd(0x10)).toEqual([0x80]); // program setup: reads give status
    wr(0x10, 0x42);
    expect(bytes[0x10]).toBe(0x42);
    wr(0, 0x70);
    expect(rd(0)).toEqual([0x80]);
    expect(rd(0x1000, 2)).toEqual([0x80, 0x80]);
    wr(0, 0xff);
    expect(map.mapped.has(GPA)).toBe(true);
    expect(rd(0x10)).toEqual([0x42]);
  });

  it('0x40 programs too, and a wide write stores all its bytes (bhyve memcpy)', () => {
    const { wr, bytes } = setup();
    wr(0x20, 0x40);
    wr(0x20, 1, 2, 3, 4);
    expect([...bytes.subarray(0x20, 0x24)]).toEqual([1, 2, 3, 4]);
  });

  it("EDK II's QemuFlashDetected probe sees FLASH: 0x50 keeps array data, 0x70 then reads 0x00", () => {
    const { rd, wr, bytes, map } = setup();
    bytes[0] = 0x12;
    wr(0, 0x50);
    expect(map.mapped.has(GPA)).toBe(true); // back in read-array: the original byte
    expect(rd(0)).toEqual([0x12]);
    wr(0, 0x70);
    expect(rd(0)).toEqual([0x00]);
    wr(0, 0xff);
    expect(rd(0)).toEqual([0x12]);
  });

  it('block erase 0x20 + 0xd0 sets a 4 KiB block to 0xff', () => {
    const { rd, wr, bytes } = setup(new Uint8Array(SIZE).fill(0x11));
    wr(CFI_BLOCK_SIZE + 0x123, 0x20);
    wr(CFI_BLOCK_SIZE + 0x123, 0xd0);
    expect(rd(0)).toEqual([0x80]);
    expect(bytes.subarray(CFI_BLOCK_SIZE, 2 * CFI_BLOCK_SIZE).every((b) => b === 0xff)).toBe(true);
    expect(bytes.subarray(0, CFI_BLOCK_SIZE).every((b) => b === 0x11)).toBe(true);
  });

  it('a bad erase confirm sets the sequence error bits and erases nothing', () => {
    const { rd, wr, bytes } = setup(new Uint8Array(SIZE).fill(0x11));
    wr(0, 0x20);
    wr(0, 0x33);
    expect(rd(0)).toEqual([0xb0]);
    expect(bytes.every((b) => b === 0x11)).toBe(true);
    wr(0, 0x50);
    wr(0, 0x70);
    expect(rd(0)).toEqual([0x00]);
  });

  it('unknown commands return to read-array; out-of-range accesses are ignored', () => {
    const { rd, wr, map } = setup();
    wr(0, 0x98);
    expect(map.mapped.has(GPA)).toBe(true);
    expect(rd(0)).toEqual([0]);
  });

  it('reset goes back to read-array with status ready', () => {
    const { dev, wr, rd, map } = setup();
    wr(0, 0x50);
    wr(0, 0x70);
    dev.reset();
    expect(map.mapped.has(GPA)).toBe(true);
    wr(0, 0x70);
    expect(rd(0)).toEqual([0x80]);
  });

  it('createBootVars places VARS right below the ROM, and needs a memory map', () => {
    const romFile = tmpFile('rom.fd', new Uint8Array(0x10000));
    const varsFile = tmpFile('vars.fd', new Uint8Array(0x3000));
    const config = new ConfigTree();
    config.set('lpc.bootrom', romFile);
    config.set('lpc.bootvars', varsFile);
    const io = new LocalIoBus();
    const map = new FakeMap(new Uint8Array(0x3000));
    const ctx = { io, config, memoryMap: map, mem: new GuestMemory([]) } as unknown as DeviceContext;
    const dev = createBootVars(ctx)!;
    expect(dev.opts.gpa).toBe(0x1_0000_0000 - 0x10000 - 0x3000);
    expect(dev.opts.size).toBe(0x3000);
    dev.close();
    expect(createBootVars({ ...ctx, memoryMap: undefined } as DeviceContext)).toBeUndefined();
    const noVars = new ConfigTree();
    noVars.set('lpc.bootrom', romFile);
    expect(createBootVars({ ...ctx, config: noVars } as DeviceContext)).toBeUndefined();
  });
});
