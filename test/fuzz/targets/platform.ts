// Fuzz targets for the platform devices, built by buildPlatform exactly as
// bhyve builds them from a config tree. Each target focuses on one device's
// ports, MMIO window and PCI config registers (most operations go there)
// but keeps poking the rest of the machine, so interactions (a PMBA move
// under the PM block, PAM remapping under the MMIO window, INTx routing
// changes) are exercised too. Operations: port and MMIO reads and writes
// of every size at edge-case values, config-space accesses through
// 0xcf8/0xcfc and ECAM, time passing (on time and late) with the devices'
// timers firing, host input arriving (UART bytes), and device polls.

import * as fs from 'node:fs';
import { buildPlatform, type Platform } from '../../../src/devices/platform.js';
import type { AccessSize } from '../../../src/devices/device.js';
import { FuzzMachine, FUZZ_LAYOUT, RAM_SIZE } from '../machine.js';
import type { FuzzInstance, FuzzTarget } from '../harness.js';
import type { Rng } from '../rng.js';
import { scratchPath } from '../scratch.js';
import { VGA_RAM_OFFSET, VGA_STATE_OFFSET } from '../../../src/devices/display/framebuffer-file.js';
import { VGA_RAM_SIZE, VGA_STATE_SIZE } from '../../../src/devices/display/vga.js';
import { renderVga } from '../../../src/devices/display/vga-render.js';

/** A 128 KiB boot ROM file (PAM's BIOS alias needs its size). */
function bootromFile(): string {
  const p = scratchPath('rom.fd');
  if (!fs.existsSync(p)) fs.writeFileSync(p, Buffer.alloc(0x20000, 0x90));
  return p;
}

let varsSeq = 0;
/** A fresh 128 KiB VARS file (the CFI flash writes through to it). */
function varsFile(): string {
  const p = scratchPath(`vars${varsSeq++}.fd`);
  fs.writeFileSync(p, Buffer.alloc(0x20000, 0xff));
  return p;
}

export interface CfgFocus { bus: number; slot: number; func: number; lo: number; hi: number }

export interface PlatformSpec {
  name: string;
  surface: string;
  config: Record<string, string>;
  /** Port / MMIO ranges (by registered name) most operations go to. */
  focus: RegExp;
  /** Config registers most config operations go to. */
  cfg?: CfgFocus[];
  /** Relative weights: focused range access, any range, config, time, host input, structured op. */
  weights?: [number, number, number, number, number, number];
  /** A device-specific structured operation (e.g. an fw_cfg DMA transfer). */
  structured?: (p: PlatformFuzz) => void;
  /** Per-target invariants. */
  check?: (p: PlatformFuzz) => void;
}

export class PlatformFuzz implements FuzzInstance {
  readonly m: FuzzMachine;
  readonly platform: Platform;
  readonly rng: Rng;
  private varsPath: string | undefined;

  constructor(readonly spec: PlatformSpec, rng: Rng) {
    this.rng = rng;
    const config = { ...spec.config };
    if (config['lpc.bootrom'] === 'ROM') config['lpc.bootrom'] = bootromFile();
    if (config['lpc.bootvars'] === 'VARS') this.varsPath = config['lpc.bootvars'] = varsFile();
    this.m = new FuzzMachine(rng, { config });
    this.platform = buildPlatform(this.m.ctx, FUZZ_LAYOUT, { hostname: 'fuzz' });
  }

  /** A random registered range, focused or any. */
  private range(focused: boolean, space: 'ports' | 'mmio'): { base: number; length: number } | undefined {
    const list = (space === 'ports' ? this.m.io.ports : this.m.io.mmio).list();
    const pool = focused ? list.filter((r) => this.spec.focus.test(r.name)) : list;
    return pool.length ? this.rng.pick(pool) : undefined;
  }

  /** An access at or around a registered range (sometimes just past it). */
  access(focused: boolean): void {
    const r = this.rng;
    const m = this.m;
    const ports = this.m.io.ports.list().some((x) => !focused || this.spec.focus.test(x.name));
    const mmio = this.m.io.mmio.list().some((x) => !focused || this.spec.focus.test(x.name));
    const space = ports && mmio ? (r.chance(0.5) ? 'ports' : 'mmio') : ports ? 'ports' : 'mmio';
    const rg = this.range(focused, space);
    if (!rg) return;
    const span = Math.min(rg.length, 0x1000);
    const off = r.chance(0.9) ? r.below(span) : r.chance(0.5) ? rg.length - r.below(8) - 1 : r.below(rg.length);
    const write = r.chance(0.55);
    if (space === 'ports') {
      const port = (rg.base + off) & 0xffff;
      const size = r.size();
      if (write) m.outp(port, size, r.value(8 * size)); else m.inp(port, size);
    } else {
      const addr = rg.base + off;
      const size = m.mmioSize();
      if (write) m.mmioWrite(addr, size, r.value(), r.value()); else m.mmioRead(addr, size);
    }
  }

  /** A config-space access, focused on the target's registers. */
  config(): void {
    const r = this.rng;
    const m = this.m;
    const f = this.spec.cfg?.length && r.chance(0.8) ? r.pick(this.spec.cfg) : undefined;
    const bus = f ? f.bus : r.chance(0.9) ? 0 : r.below(256);
    const slot = f ? f.slot : r.below(32);
    const func = f ? f.func : r.below(8);
    const off = f ? r.range(f.lo, f.hi) : r.chance(0.8) ? r.below(0x100) : r.below(0x1000);
    const size: AccessSize = r.size();
    const write = r.chance(0.6);
    const v = r.chance(0.15) ? 0xffffffff : r.value(8 * size);
    if (off < 0x100 && r.chance(0.6)) {
      if (write) m.cfgWrite(bus, slot, func, off, size, v); else m.cfgRead(bus, slot, func, off, size);
    } else {
      const a = 0xe0000000 + (bus << 20) + (slot << 15) + (func << 12) + off;
      if (write) m.mmioWrite(a, m.mmioSize(), v, r.value()); else m.mmioRead(a, m.mmioSize());
    }
  }

  /** Time passes: short steps on time, long ones late. */
  time(): void {
    const r = this.rng;
    const late = r.chance(0.3);
    const ns = late ? BigInt(r.range(1, 2_000_000_000)) : BigInt(r.pick([r.range(0, 1000), r.range(0, 100_000), r.range(0, 1_000_000)]));
    this.m.clock.advance(ns, late);
  }

  /** Host input arrives and the devices poll. */
  host(): void {
    const r = this.rng;
    for (const st of this.m.streams.values()) if (r.chance(0.5)) st.push(r.bytes(r.range(1, r.chance(0.9) ? 16 : 4096)));
    for (const d of this.platform.devices) d.poll?.();
  }

  step(): void {
    const w = this.spec.weights ?? [50, 10, 15, 8, 5, 12];
    switch (this.rng.weighted(this.spec.structured ? w : [w[0], w[1], w[2], w[3], w[4], 0])) {
      case 0: this.access(true); break;
      case 1: this.access(false); break;
      case 2: this.config(); break;
      case 3: this.time(); break;
      case 4: this.host(); break;
      default: this.spec.structured!(this);
    }
  }

  check(): void {
    this.spec.check?.(this);
  }

  stats(): Record<string, number> {
    const irq = this.m.irq;
    return {
      'msi messages': irq.msis, 'irq pulses': irq.pulses, 'irq lines raised': irq.raises,
      'exits requested': this.m.exits.length, 'host bytes written': [...this.m.streams.values()].reduce((n, s) => n + s.written, 0),
      'fw_cfg DMA transfers': this.platform.fwcfg?.dmaCount ?? 0, 'memory maps in force': this.m.memoryMap.maps.size,
    };
  }

  close(): void {
    for (const d of this.platform.devices) d.close?.();
    if (this.varsPath) fs.rmSync(this.varsPath, { force: true });
  }
}

const BASE = { 'pci.0.0.0.device': 'hostbridge', 'pci.0.31.0.device': 'lpc', 'lpc.com1.path': 'stdio', 'lpc.com2.path': 'stdio' };
const QEMU = {
  'pci.0.0.0.device': 'hostbridge', 'pci.0.1.0.device': 'lpc', 'lpc.fwcfg': 'qemu', 'lpc.bootrom': 'ROM',
  'lpc.com1.path': 'stdio', 'lpc.pc-testdev': 'true', 'pci.0.3.0.device': 'virtio-rnd', 'lpc.debugcon.path': '/dev/null',
};

/** fw_cfg DMA: a FWCfgDmaAccess in guest RAM, big-endian, then the
 * doorbell (0x514 high half, 0x518 low half starts it). */
function fwcfgDma(p: PlatformFuzz): void {
  const r = p.rng;
  const m = p.m;
  const at = r.chance(0.9) ? (r.below(RAM_SIZE - 16) & ~0xf) : m.address();
  if (at >= 0 && at + 16 <= RAM_SIZE) {
    const dv = new DataView(m.ram.buffer, at, 16);
    const sel = r.chance(0.7) ? r.pick([0, 1, 2, 3, 5, 0x0e, 0x0f, 0x19, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25]) : r.value(16);
    const ctl = r.chance(0.8) ? ((sel << 16) | r.pick([0x02, 0x04, 0x08 | 0x02, 0x08 | 0x04, 0x10, 0x08 | 0x10])) : r.u32();
    dv.setUint32(0, ctl >>> 0);
    dv.setUint32(4, r.chance(0.8) ? r.range(0, 4096) : r.value());
    const dst = r.chance(0.8) ? r.below(RAM_SIZE) : m.address();
    dv.setUint32(8, Math.floor(dst / 2 ** 32) >>> 0);
    dv.setUint32(12, dst >>> 0);
  }
  if (r.chance(0.9)) {
    m.outp(0x514, 4, swap32(Math.floor(at / 2 ** 32) >>> 0));
    m.outp(0x518, 4, swap32(at >>> 0));
  } else {
    m.outp(0x514 + r.below(8), r.size(), r.value());
  }
}

/** A CFI command sequence at a random flash offset. */
function cfiCommand(p: PlatformFuzz): void {
  const r = p.rng;
  const vars = p.m.io.mmio.list().find((x) => x.name === 'bootvars');
  if (!vars) return;
  const off = r.below(vars.length);
  const cmd = r.pick([0x10, 0x40, 0x20, 0xd0, 0x50, 0x70, 0xff, 0x90, 0x98, r.value(8)]);
  p.m.mmioWrite(vars.base + off, r.chance(0.8) ? 1 : p.m.mmioSize(), cmd);
  if (r.chance(0.5)) p.m.mmioWrite(vars.base + r.below(vars.length), r.pick([1, 1, 2, 4, 8]), r.chance(0.5) ? 0xd0 : r.value(), r.value());
  if (r.chance(0.5)) p.m.mmioRead(vars.base + r.below(vars.length), p.m.mmioSize());
}

/** HPET programming as a driver does it: enable, route, arm a comparator. */
function hpetProgram(p: PlatformFuzz): void {
  const r = p.rng;
  const m = p.m;
  const B = 0xfed00000;
  const w64 = (off: number, lo: number, hi = 0) => { if (r.chance(0.7)) m.mmioWrite(B + off, 8, lo, hi); else { m.mmioWrite(B + off, 4, lo); m.mmioWrite(B + off + 4, 4, hi); } };
  const t = r.below(r.chance(0.9) ? 3 : 8);
  switch (r.below(5)) {
    case 0: w64(0x10, r.pick([1, 3, 0, 2])); break; // ENABLE_CNF, LEG_RT_CNF
    case 1: {
      // Tn_CONFIG: level, enable, periodic, val_set, 32-bit, route, FSB.
      const cfg = (r.chance(0.5) ? 2 : 0) | (r.chance(0.8) ? 4 : 0) | (r.chance(0.5) ? 8 : 0) | (r.chance(0.5) ? 0x40 : 0)
        | (r.chance(0.2) ? 0x100 : 0) | (r.below(32) << 9) | (r.chance(0.2) ? 0x4000 : 0);
      w64(0x100 + 0x20 * t, cfg);
      break;
    }
    case 2: {
      const now = m.mmioRead(B + 0xf0, 4);
      w64(0x108 + 0x20 * t, (now + r.pick([0, 1, 10, 1000, 100000, r.u32()])) >>> 0, r.chance(0.9) ? 0 : r.u32());
      break;
    }
    case 3: w64(0x110 + 0x20 * t, r.chance(0.8) ? 0x40 + r.below(16) : r.u32(), r.chance(0.8) ? 0xfee00000 : r.u32()); break;
    default: w64(0x20, r.value()); break; // ISR: write-1-to-clear
  }
}

/** RTC programming: register A rate, register B modes, alarms, reads of C. */
function rtcProgram(p: PlatformFuzz): void {
  const r = p.rng;
  const m = p.m;
  const reg = r.pick([0x0a, 0x0b, 0x0c, 0x0d, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x32, r.below(0x80), r.below(0x100)]);
  m.outp(0x70, 1, reg | (r.chance(0.2) ? 0x80 : 0));
  if (r.chance(0.6)) {
    const v = reg === 0x0a ? (r.pick([0x20, 0x26, 0x2f, 0x23, 0x70, 0x60]) & 0xf0) | r.below(16)
      : reg === 0x0b ? r.pick([0x02, 0x06, 0x42, 0x22, 0x12, 0x82, 0x46, r.value(8)]) : r.value(8);
    m.outp(0x71, 1, v);
  } else {
    m.inp(0x71, 1);
  }
}

/** bhyve's fwctl: the signature reset, a request (sizes around the header
 * and FGET_STRSZ, known and unknown operations, node names), the reply. */
function fwctlProgram(p: PlatformFuzz): void {
  const r = p.rng;
  const m = p.m;
  if (r.chance(0.3)) {
    m.outp(0x510, 2, r.chance(0.8) ? 0 : r.value(16));
    for (let i = r.below(6); i > 0; i--) m.inp(0x511, 1);
  }
  const names = [0x6e2e7768, 0x00757063, 0x6f6e2e77, 0, r.value(32)]; // "hw.n", "cpu\0", ...
  const size = r.pick([0, 4, 11, 12, 16, 20, 92, 93, 96, r.value(32)]);
  m.outp(0x510, 4, size);
  m.outp(0x510, 4, r.pick([1, 2, 3, 4, 5, 6, r.value(32)]));
  m.outp(0x510, 4, r.value(32));
  for (let i = r.below(30); i > 0; i--) m.outp(r.chance(0.9) ? 0x510 : 0x511, 4, r.pick(names));
  for (let i = r.below(12); i > 0; i--) m.inp(0x511, r.pick([1, 2, 4] as const));
}

function swap32(v: number): number {
  return (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24)) >>> 0;
}

export const PLATFORM_SPECS: readonly PlatformSpec[] = [
  {
    name: 'uart',
    surface: 'LPC 16550 UARTs COM1-COM4 (registers, FIFO, DLAB, loopback, interrupts) with host bytes arriving',
    config: BASE,
    focus: /^com[1-4]$/,
    weights: [60, 5, 3, 8, 15, 0],
  },
  {
    name: 'pci-uart',
    surface: "bhyve's PCI 16550 (uart, 131f:2000): its I/O BAR 0 registers, BAR moves and the command register, INTx, host bytes arriving",
    config: { ...BASE, 'pci.0.5.0.device': 'uart', 'pci.0.5.0.path': 'stdio' },
    focus: /^uart@pci/,
    cfg: [{ bus: 0, slot: 5, func: 0, lo: 0, hi: 0x3f }],
    weights: [55, 5, 12, 5, 15, 0],
  },
  {
    name: 'rtc',
    surface: 'MC146818 RTC/CMOS (0x70/0x71: index, time/date in BCD and binary, alarms, periodic interrupts, NVRAM)',
    config: BASE,
    focus: /^rtc$/,
    weights: [35, 5, 2, 20, 1, 35],
    structured: rtcProgram,
  },
  {
    name: 'hpet',
    surface: 'HPET MMIO (capabilities, config, counter, timers: comparators, periodic, 32-bit mode, FSB/MSI, routing)',
    config: BASE,
    focus: /^hpet$/,
    weights: [30, 5, 2, 20, 1, 40],
    structured: hpetProgram,
  },
  {
    name: 'fwcfg',
    surface: 'QEMU fw_cfg (selector, data port, DMA descriptors in guest RAM: read/skip/select/write, wild addresses and lengths)',
    config: QEMU,
    focus: /^fwcfg/,
    weights: [45, 5, 3, 2, 1, 45],
    structured: fwcfgDma,
  },
  {
    name: 'pci-config',
    surface: 'PCI config space of every function (mechanism #1 and ECAM): BAR sizing and moves, command register, MSI, MSI-X, capabilities, BAR windows',
    config: { ...BASE, 'pci.0.3.0.device': 'virtio-rnd', 'pci.0.4.0.device': 'virtio-rnd', 'pci.0.4.0.transport': 'modern', 'pci.0.5.0.device': 'virtio-rnd', 'pci.0.5.0.transport': 'legacy' },
    focus: /^pci-cfg|BAR/,
    cfg: [0, 3, 4, 5, 31].map((slot) => ({ bus: 0, slot, func: 0, lo: 0, hi: 0xff })),
    weights: [30, 5, 60, 2, 1, 0],
  },
  {
    name: 'i440fx-pam',
    surface: "QEMU's i440FX host bridge and PAM shadowing of 0xC0000-0xFFFFF (PAM registers, remaps, the window's MMIO)",
    config: QEMU,
    focus: /^pam$/,
    cfg: [{ bus: 0, slot: 0, func: 0, lo: 0x40, hi: 0x7f }, { bus: 0, slot: 0, func: 0, lo: 0, hi: 0xff }],
    weights: [40, 5, 50, 2, 1, 0],
  },
  {
    name: 'piix4-pm',
    surface: 'PIIX4 PM function (PMBA moves, PMIOSE, PMREGMISC) and the ACPI PM block it relocates (PM1 status/enable/control, SMI_CMD, reset register)',
    config: QEMU,
    focus: /^pm1|^smi_cmd|^reset_reg/,
    cfg: [{ bus: 0, slot: 1, func: 3, lo: 0, hi: 0xff }, { bus: 0, slot: 1, func: 3, lo: 0x40, hi: 0x43 }, { bus: 0, slot: 1, func: 3, lo: 0x80, hi: 0x80 }],
    weights: [40, 5, 45, 5, 1, 0],
  },
  {
    name: 'lpc-pirq',
    surface: 'LPC bridge PIRQ routing registers (0x60-0x63, 0x68-0x6b) with virtio INTx lines asserting through them',
    config: { ...BASE, 'pci.0.3.0.device': 'virtio-rnd' },
    focus: /BAR/,
    cfg: [{ bus: 0, slot: 31, func: 0, lo: 0x60, hi: 0x6b }, { bus: 0, slot: 31, func: 0, lo: 0, hi: 0xff }, { bus: 0, slot: 3, func: 0, lo: 0x3c, hi: 0x3d }],
    weights: [20, 5, 70, 2, 1, 0],
  },
  {
    name: 'acpi-kbd-misc',
    surface: 'ACPI PM registers, i8042 keyboard controller, POST port 0x84, pc-testdev, debug ports',
    config: QEMU,
    focus: /^pm1|^smi_cmd|^reset_reg|^atkbdc|^post|pc-testdev|isa-debug/,
    weights: [70, 10, 5, 5, 5, 0],
  },
  {
    name: 'fwctl',
    surface: "bhyve's fwctl at 0x510/0x511 (lpc.fwcfg=bhyve with a boot ROM): signature, requests of any size and operation, replies",
    config: { ...BASE, 'lpc.bootrom': 'ROM' },
    focus: /^fwctl$/,
    weights: [40, 5, 1, 1, 1, 50],
    structured: fwctlProgram,
  },
  {
    name: 'vga',
    surface: "fbuf's VGA with vga=on (vga.c): registers 0x3c0-0x3df, the planar memory window 0xA0000-0xBFFFF (read/write modes, latches, odd/even), the screen drawn from them",
    config: { ...BASE, 'pci.0.2.0.device': 'fbuf', 'pci.0.2.0.vga': 'on' },
    focus: /^vga/,
    weights: [80, 5, 3, 1, 1, 0],
    check: vgaDraws,
  },
  {
    name: 'cfi-flash',
    surface: 'UEFI VARS CFI flash below the boot ROM (program, block erase, status, read array; romd map/unmap)',
    config: { ...BASE, 'lpc.bootrom': 'ROM', 'lpc.bootvars': 'VARS' },
    focus: /^bootvars$/,
    weights: [45, 3, 1, 1, 1, 50],
    structured: cfiCommand,
  },
];

/** Draws the VGA's screen now and then (drawing is the main thread's half
 * of vga=on): it must stay within the largest VGA screen and not throw. */
const vgaOut = new Uint32Array(2304 * 1024);
function vgaDraws(p: PlatformFuzz): void {
  if (!p.rng.chance(0.005)) return;
  const fb = p.m.memoryMap.framebuffer;
  if (!fb) throw new Error('vga=on made no framebuffer');
  const size = renderVga(fb.subarray(VGA_STATE_OFFSET, VGA_STATE_OFFSET + VGA_STATE_SIZE), fb.subarray(VGA_RAM_OFFSET, VGA_RAM_OFFSET + VGA_RAM_SIZE), vgaOut);
  if (size.width < 1 || size.height < 1 || size.width * size.height > vgaOut.length) throw new Error(`VGA screen ${size.width}x${size.height}`);
}

export function platformTarget(spec: PlatformSpec): FuzzTarget {
  return { name: spec.name, surface: spec.surface, create: (rng) => new PlatformFuzz(spec, rng), instanceOps: 20_000 };
}
