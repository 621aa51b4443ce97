// The machine a fuzz target runs its device models in: the DeviceContext a
// device gets in the VMM, without KVM. Guest RAM is a plain buffer split in
// two regions that touch (the VMM maps RAM in chunks: buffers may straddle
// one), device timers run on a manual clock, interrupts are counted, and
// the memory-map control hands out views of fake boot ROM and VARS backings
// (a view past the end of its backing is a host bug and throws).

import { ConfigTree } from '../../src/config/tree.js';
import type {
  AccessSize, ByteStream, DeviceContext, DeviceTimer, InterruptSink, MemoryBacking, MemoryMapControl,
} from '../../src/devices/device.js';
import type { ExitRequest } from '../../src/vmm/exit-status.js';
import { FILE_SIZE as FRAMEBUFFER_FILE_SIZE } from '../../src/devices/display/framebuffer-file.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';
import type { MemoryLayout } from '../../src/sys/memory-map.js';
import { Rng } from './rng.js';
import '../support/device-models.js'; // the device models buildPlatform needs

/** Guest RAM: [0, RAM_SIZE) in two regions split at RAM_SPLIT. */
export const RAM_SIZE = 4 << 20;
export const RAM_SPLIT = 2 << 20;
export const FUZZ_LAYOUT: MemoryLayout = { lowmem: RAM_SIZE, highmem: 0 };

export class CountingIrq implements InterruptSink {
  levels = new Map<number, boolean>();
  pulses = 0;
  msis = 0;
  /** Times a line went from low to high. */
  raises = 0;
  setLevel(gsi: number, high: boolean): void {
    if (!Number.isInteger(gsi) || gsi < 0 || gsi > 255) throw new Error(`interrupt line ${gsi} does not exist`);
    if (high && !this.levels.get(gsi)) this.raises++;
    this.levels.set(gsi, high);
  }
  pulse(gsi: number): void {
    if (!Number.isInteger(gsi) || gsi < 0 || gsi > 255) throw new Error(`interrupt line ${gsi} does not exist`);
    this.pulses++;
  }
  signalMsi(address: number, data: number): void {
    // Addresses above 2^53 lose low bits in a number, and an upper dword of
    // 0xffffffff can round to 2^64 (FUZZING.md, known imprecision);
    // anything else is a host bug.
    if (!Number.isInteger(address) || address < 0 || address > 2 ** 64 || !Number.isInteger(data) || data < 0 || data > 0xffffffff) {
      throw new Error(`bad MSI ${address}/${data}`);
    }
    this.msis++;
  }
}

/** Device timers on a manual clock; advance() runs what fell due. */
export class ManualClock {
  ns = 1_000_000_000n;
  private readonly timers: Array<{ cb: () => void; at: bigint | undefined }> = [];

  create(cb: () => void): DeviceTimer {
    const t = { cb, at: undefined as bigint | undefined };
    this.timers.push(t);
    return {
      armAt: (d) => {
        if (typeof d !== 'bigint') throw new TypeError(`timer armed with ${typeof d}`);
        t.at = d;
      },
      cancel: () => { t.at = undefined; },
      now: () => this.ns,
    };
  }

  /** Advances time, running expired callbacks in deadline order. With
   * `late`, callbacks run at the end of the interval (a loaded host runs
   * timers late; devices must then drop missed periods rather than catch
   * up one by one). More than `maxFires` callbacks in one advance is a
   * hang: a timer re-arming itself at or before now spins the device
   * thread forever. */
  advance(ns: bigint, late = false, maxFires = 100_000): number {
    const end = this.ns + ns;
    let fired = 0;
    for (;;) {
      let due: { cb: () => void; at: bigint | undefined } | undefined;
      for (const t of this.timers) if (t.at !== undefined && t.at <= end && (!due || t.at < due.at!)) due = t;
      if (!due) break;
      if (++fired > maxFires) throw new HangError(`device timers fired more than ${maxFires} times within ${ns} ns${late ? ' (late host)' : ''}`);
      const at = late ? end : due.at!;
      if (at > this.ns) this.ns = at;
      due.at = undefined;
      due.cb();
    }
    this.ns = end;
    return fired;
  }
}

/** A host backend stream (tty, socket) with bytes the fuzzer queues. */
export class FakeStream implements ByteStream {
  private readonly queue: number[] = [];
  written = 0;
  push(bytes: Uint8Array): void { if (this.queue.length < 65536) for (const b of bytes) this.queue.push(b); }
  readByte(): number { return this.queue.length ? this.queue.shift()! : -1; }
  hasInput(): boolean { return this.queue.length > 0; }
  write(bytes: Uint8Array): void {
    if (!(bytes instanceof Uint8Array)) throw new TypeError('stream write of a non-buffer');
    this.written += bytes.length;
  }
}

// The device models read CLOCK_MONOTONIC through process.hrtime.bigint()
// and the wall clock through Date.now() (as in the VMM). While a fuzzed
// machine exists both read its manual clock, so timers, counters and CMOS
// time are deterministic for a seed.
const realHrtime = process.hrtime.bigint;
const realDateNow = Date.now;
const FUZZ_EPOCH_MS = 1_767_225_600_000; // 2026-01-01T00:00:00Z
let activeClock: ManualClock | undefined;
let clocksPatched = false;

function useClock(c: ManualClock): void {
  if (!clocksPatched) {
    clocksPatched = true;
    process.hrtime.bigint = () => (activeClock ? activeClock.ns : realHrtime());
    Date.now = () => (activeClock ? FUZZ_EPOCH_MS + Number(activeClock.ns / 1_000_000n) : realDateNow());
  }
  activeClock = c;
}

/** Gives the real clocks back (after a run). */
export function releaseClocks(): void {
  activeClock = undefined;
}

/** A device kept the host busy without bound (an op that never ends, a
 * timer storm). */
export class HangError extends Error {
  constructor(message: string) { super(message); this.name = 'HangError'; }
}

/** Backings a MemoryMapControl can show: RAM, a boot ROM, a VARS file, fbuf's file. */
class FakeMemoryMap implements MemoryMapControl {
  readonly maps = new Map<number, { size: number; backing: MemoryBacking; readonly: boolean }>();
  /** fbuf's framebuffer file (pixels, registers, VGA), made when a device asks. */
  framebuffer: Uint8Array | undefined;
  constructor(private readonly ram: Uint8Array, readonly bootrom: Uint8Array, readonly bootvars: Uint8Array) {}
  map(gpa: number, size: number, backing: MemoryBacking, readonly: boolean): void {
    if (gpa % 4096 !== 0 || size % 4096 !== 0 || size <= 0) throw new Error(`unaligned map 0x${gpa.toString(16)}+0x${size.toString(16)}`);
    this.view(backing, size);
    this.maps.set(gpa, { size, backing, readonly });
  }
  unmap(gpa: number): void {
    if (!this.maps.delete(gpa)) throw new Error(`unmap of 0x${gpa.toString(16)}: nothing mapped there`);
  }
  view(backing: MemoryBacking, size: number): Uint8Array {
    const buf = backing.kind === 'ram' ? this.ram : backing.kind === 'bootrom' ? this.bootrom
      : backing.kind === 'framebuffer' ? (this.framebuffer ??= new Uint8Array(FRAMEBUFFER_FILE_SIZE)) : this.bootvars;
    if (!Number.isSafeInteger(backing.offset) || backing.offset < 0 || backing.offset + size > buf.length) {
      throw new RangeError(`view of ${backing.kind} 0x${backing.offset.toString(16)}+0x${size.toString(16)} is past its end (0x${buf.length.toString(16)})`);
    }
    return buf.subarray(backing.offset, backing.offset + size);
  }
}

export interface MachineOptions {
  config?: Record<string, string>;
  bootromSize?: number;
  bootvarsSize?: number;
  vcpus?: number;
}

/** One fuzzed machine: RAM, buses, interrupts, clock and the context. */
export class FuzzMachine {
  readonly ram = new Uint8Array(RAM_SIZE);
  readonly mem = new GuestMemory([
    { gpa: 0, bytes: this.ram.subarray(0, RAM_SPLIT) },
    { gpa: RAM_SPLIT, bytes: this.ram.subarray(RAM_SPLIT) },
  ]);
  readonly io = new LocalIoBus();
  readonly irq = new CountingIrq();
  readonly clock = new ManualClock();
  readonly config = new ConfigTree();
  readonly exits: ExitRequest[] = [];
  readonly memoryMap: FakeMemoryMap;
  readonly streams = new Map<string, FakeStream>();
  readonly ctx: DeviceContext;

  constructor(readonly rng: Rng, opts: MachineOptions = {}) {
    useClock(this.clock);
    for (const [k, v] of Object.entries(opts.config ?? {})) this.config.set(k, v);
    this.memoryMap = new FakeMemoryMap(this.ram, rng.bytes(opts.bootromSize ?? 0x20000), new Uint8Array(opts.bootvarsSize ?? 0x20000).fill(0xff));
    const exits = this.exits;
    this.ctx = {
      io: this.io, irq: this.irq, mem: this.mem, config: this.config,
      machine: { requestExit: (r) => { if (exits.length < 1000) exits.push(r); }, vcpuCount: opts.vcpus ?? 2 },
      stream: (key) => {
        let st = this.streams.get(key);
        if (!st) { st = new FakeStream(); this.streams.set(key, st); }
        return st;
      },
      memoryMap: this.memoryMap,
      timer: (cb) => this.clock.create(cb),
    };
  }

  // ---- guest accesses (an undecoded access is ignored, as on real hardware) ----

  inp(port: number, size: AccessSize): number {
    const v = this.io.portRead(port & 0xffff, size);
    if (v !== undefined && (!Number.isInteger(v) || v < -0x80000000 || v > 0xffffffff)) throw new Error(`port 0x${port.toString(16)} read returned ${v}`);
    return v ?? 0xffffffff;
  }

  outp(port: number, size: AccessSize, value: number): void {
    const mask = size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
    this.io.portWrite(port & 0xffff, size, (value & mask) >>> 0);
  }

  mmioRead(addr: number, size: number): number {
    const d = new Uint8Array(size);
    if (!this.io.mmioRead(addr, d)) return 0xffffffff;
    let v = 0;
    for (let i = 0; i < Math.min(4, size); i++) v |= d[i] << (8 * i);
    return v >>> 0;
  }

  mmioWrite(addr: number, size: number, value: number, high = 0): void {
    const d = new Uint8Array(size);
    for (let i = 0; i < size; i++) d[i] = i < 4 ? (value >>> (8 * i)) & 0xff : (high >>> (8 * (i - 4))) & 0xff;
    this.io.mmioWrite(addr, d);
  }

  /** An MMIO access of a size KVM reports (1, 2, 4 or 8 bytes). */
  mmioSize(): number { return this.rng.pick([1, 2, 4, 4, 8]); }

  /** Config space through mechanism #1 (0xcf8/0xcfc). */
  cfgRead(bus: number, slot: number, func: number, off: number, size: AccessSize): number {
    this.outp(0xcf8, 4, (0x80000000 | (bus << 16) | (slot << 11) | (func << 8) | (off & 0xfc)) >>> 0);
    return this.inp(0xcfc + (off & 3), size);
  }

  cfgWrite(bus: number, slot: number, func: number, off: number, size: AccessSize, value: number): void {
    this.outp(0xcf8, 4, (0x80000000 | (bus << 16) | (slot << 11) | (func << 8) | (off & 0xfc)) >>> 0);
    this.outp(0xcfc + (off & 3), size, value);
  }

  /** A guest physical address biased towards the edges of RAM and beyond. */
  address(): number {
    const r = this.rng;
    switch (r.below(10)) {
      case 0: return r.below(RAM_SIZE);
      case 1: return RAM_SPLIT - r.below(64);
      case 2: return RAM_SIZE - r.below(64);
      case 3: return RAM_SIZE + r.below(0x10000);
      case 4: return r.pick([0, 0xfffff000, 0xffffffff, 0x100000000, 2 ** 52, 2 ** 53 - 1, 0xfec00000, 0xfed00000]);
      case 5: return r.u32();
      default: return r.below(RAM_SIZE) & ~0xf;
    }
  }

  /** Scribbles over guest RAM as a hostile guest (or a racing vCPU) may. */
  scribble(): void {
    const r = this.rng;
    const at = r.below(RAM_SIZE);
    const n = Math.min(r.pick([1, 2, 4, 8, 16, 64]), RAM_SIZE - at);
    this.ram.set(r.bytes(n), at);
  }
}
