// bhyve's pci_passthru.c on a PassthruBackend: a device of another
// process (vfio-user) or of the host (VFIO) shown to the guest as a PCI
// function whose configuration space is virtualised:
//
//   - identity, class, header and capability list are read from the
//     device once and shadowed; the status register is read live;
//   - BARs are emulated (sized from the device's regions, placed by our
//     allocator and by the guest) and decoded as pci_emul does; accesses
//     are forwarded to the device's region, or reach its mmap-able pages
//     through KVM memory slots (bar-plan.ts);
//   - the command register is shadowed and written through (memory/I/O
//     decode, bus mastering, INTx disable are the device's business too);
//   - MSI and MSI-X capabilities are emulated (passthru-interrupts.ts);
//     the MSI-X table and PBA are trapped wherever the BAR is mapped;
//   - the power-management control register is shadowed (the guest cannot
//     put the device in D3 behind our back), and an FLR the guest starts
//     through the PCI Express capability becomes a device reset;
//   - the rest of the device-specific space is the device's, read and
//     written through;
//   - with rom=FILE (bhyve's passthru_init_rom), the expansion ROM BAR
//     shows the file's contents, read-only, where the guest places and
//     enables it; without, the function has no expansion ROM.
//
// The device is reset when the VM starts and when it stops.

import fs from 'node:fs';
import type { DeviceContext, Device, MmioHandler } from '../device.js';
import { barSize, type BarKind } from '../pci/bar-alloc.js';
import {
  PCIM_CMD_BUSMASTEREN, PCIM_CMD_INTxDIS, PCIM_CMD_MEMEN, PCIM_CMD_PORTEN, PCIM_STATUS_CAPPRESENT, PCIR_BAR0, PCIR_CAP_PTR,
  PCIR_BIOS, PCIR_COMMAND, PCIR_INTLINE, PCIR_INTPIN, PCIR_STATUS, PCIY_EXPRESS, PCIY_MSI, PCIY_MSIX, PCI_BAR_COUNT,
} from '../pci/config-space.js';
import { PciEmulFunction, type BarHandler } from '../pci/pci-emul.js';
import { closeFd, eventfd, EFD_CLOEXEC, EFD_NONBLOCK } from '../../sys/eventfd.js';
import { mmap, PROT_READ, PROT_WRITE, type Mapping } from '../../sys/libc.js';
import { PCI_IRQ, PCI_REGION } from '../../sys/vfio-abi.js';
import type { PassthruBackend } from './passthru-backend.js';
import { planBar, PAGE_SIZE, type BarPiece } from './bar-plan.js';
import { MsiEmulation, MsixEmulation, MSIX_ENTRY } from './passthru-interrupts.js';

export const PCIY_PMG = 0x01;
const CONFIG_SIZE = 256;
const MAX_CAPS = 48;

export interface Capability { id: number; offset: number; length: number }

/** The device's capability list, checked: in the device-specific space,
 * dword aligned, no loops (a hostile device's list ends where it goes wrong). */
export function walkCapabilities(cfg: Uint8Array): Capability[] {
  const out: Capability[] = [];
  if (!((cfg[PCIR_STATUS] | (cfg[PCIR_STATUS + 1] << 8)) & PCIM_STATUS_CAPPRESENT)) return out;
  const seen = new Set<number>();
  let p = cfg[PCIR_CAP_PTR] & 0xfc;
  while (p >= 0x40 && p < CONFIG_SIZE - 1 && !seen.has(p) && out.length < MAX_CAPS) {
    seen.add(p);
    out.push({ id: cfg[p], offset: p, length: 0 });
    p = cfg[p + 1] & 0xfc;
  }
  // Lengths the emulation needs; others end where the next one starts.
  const starts = out.map((c) => c.offset).sort((a, b) => a - b);
  for (const c of out) {
    const next = starts.find((s) => s > c.offset) ?? CONFIG_SIZE;
    const ctrl = cfg[c.offset + 2] | (cfg[c.offset + 3] << 8);
    const known = c.id === PCIY_MSI ? 10 + (ctrl & 0x80 ? 4 : 0) + (ctrl & 0x100 ? 10 : 0)
      : c.id === PCIY_MSIX ? 12 : c.id === PCIY_PMG ? 8 : undefined;
    c.length = Math.min(known ?? next - c.offset, CONFIG_SIZE - c.offset);
  }
  return out;
}

// The ROM BAR's size and the ROM space: rom-file.ts (checked before the VM exists).
import { ROM_MIN, romBarSize, ROM_SPACE } from './rom-file.js';
export { romBarSize, ROM_SPACE };
const ROM_ENABLE = 1;

export interface PassthruOptions {
  /** Contents of the rom= file. */
  rom?: Uint8Array;
}

export interface PassthruStats {
  barTraps: number;
  mappedBarBytes: number;
  configForwarded: number;
  resets: number;
  flr: number;
}

interface BarInfo {
  idx: number;
  kind: BarKind;
  size: number;
  regionSize: number;
  plan: BarPiece[];
  /** The device region mapped into this process, when the plan maps any of it. */
  host?: Mapping;
  /** Where its pieces are registered or mapped now. */
  at?: number;
  mappedAt: number[];
  trappedAt: number[];
}

export class PassthruFunction extends PciEmulFunction implements Device {
  private readonly devcfg: Uint8Array;
  readonly caps: Capability[];
  private readonly ptBars: Array<BarInfo | undefined> = [];
  private readonly devMsixCap?: Capability;
  private readonly devMsiCap?: Capability;
  private readonly devPmCap?: Capability;
  private readonly devExpCap?: Capability;
  private readonly msixEmu?: MsixEmulation;
  private readonly msiEmu?: MsiEmulation;
  /** Where the MSI-X table and PBA live: BAR index and offset. */
  private readonly tableLoc?: { bar: number; offset: number; size: number };
  private readonly pbaLoc?: { bar: number; offset: number; size: number };
  private intxWire?: { trigger: number; resample: number; close(): void };
  readonly passthruStats: PassthruStats = { barTraps: 0, mappedBarBytes: 0, configForwarded: 0, resets: 0, flr: 0 };

  /** The expansion ROM (rom=): contents padded to the BAR size, where it decodes now. */
  private readonly rom?: { bytes: Uint8Array; size: number; at?: number };

  constructor(ctx: DeviceContext, readonly backend: PassthruBackend, opts: PassthruOptions = {}) {
    super('passthru', ctx);
    if (opts.rom) {
      if (opts.rom.length === 0) throw new RangeError('the ROM file is empty');
      const size = romBarSize(opts.rom.length);
      if (size > ROM_SPACE) throw new RangeError(`the ROM file of ${opts.rom.length} bytes needs a ${size}-byte BAR, over the ${ROM_SPACE}-byte ROM space`);
      const bytes = new Uint8Array(size);
      bytes.set(opts.rom);
      this.rom = { bytes, size };
      this.bars[6] = { type: 'rom', size, addr: 0 };
    }
    backend.reset();
    const cfgRegion = backend.region(PCI_REGION.CONFIG);
    if (cfgRegion.size < 64) throw new Error(`${backend.name}: configuration space region of ${cfgRegion.size} bytes`);
    this.devcfg = new Uint8Array(CONFIG_SIZE);
    this.devcfg.set(backend.read(PCI_REGION.CONFIG, 0, Math.min(CONFIG_SIZE, cfgRegion.size)));
    this.caps = walkCapabilities(this.devcfg);
    this.devMsixCap = this.caps.find((c) => c.id === PCIY_MSIX);
    this.devMsiCap = this.caps.find((c) => c.id === PCIY_MSI);
    this.devPmCap = this.caps.find((c) => c.id === PCIY_PMG);
    this.devExpCap = this.caps.find((c) => c.id === PCIY_EXPRESS);

    // The shadow: header (identity, class, subsystem, capability pointer)
    // and the capabilities we emulate.
    const c = this.cfg.bytes;
    c.set(this.devcfg.subarray(0, 0x40));
    c.fill(0, PCIR_COMMAND, PCIR_COMMAND + 2);
    c.fill(0, PCIR_BAR0, PCIR_BAR0 + 4 * PCI_BAR_COUNT);
    c.fill(0, 0x30, 0x34); // no expansion ROM
    c[PCIR_INTLINE] = 0xff;
    c[PCIR_INTPIN] = 0;
    for (const cap of [this.devMsiCap, this.devMsixCap, this.devPmCap]) if (cap) c.set(this.devcfg.subarray(cap.offset, cap.offset + cap.length), cap.offset);

    const env = { backend, kvm: ctx.kvm, signalMsi: (a: number, d: number) => { this.interruptCounts.msix++; ctx.irq.signalMsi(a, d); } };
    if (this.devMsixCap && backend.irqCount(PCI_IRQ.MSIX) > 0) {
      const o = this.devMsixCap.offset;
      const count = Math.min((this.devcfg[o + 2] | (this.devcfg[o + 3] << 8)) & 0x7ff, backend.irqCount(PCI_IRQ.MSIX) - 1) + 1;
      const t = this.dword(o + 4);
      const p = this.dword(o + 8);
      this.tableLoc = { bar: t & 7, offset: t & ~7, size: count * MSIX_ENTRY };
      this.pbaLoc = { bar: p & 7, offset: p & ~7, size: Math.ceil(count / 64) * 8 };
      this.msixEmu = new MsixEmulation(env, count);
      // The guest sees table size = what both agree on, control off.
      this.cfg.set16(o + 2, count - 1);
    } else if (this.devMsixCap) {
      this.hideCapability(this.devMsixCap);
    }
    if (this.devMsiCap && backend.irqCount(PCI_IRQ.MSI) > 0) {
      const o = this.devMsiCap.offset;
      const ctrl = this.cfg.get16(o + 2);
      const mmc = Math.min(1 << ((ctrl >> 1) & 7), backend.irqCount(PCI_IRQ.MSI));
      this.msiEmu = new MsiEmulation(env, mmc);
      // Enable off, no per-vector masking, the message count we can give.
      this.cfg.set16(o + 2, (ctrl & 0x80) | ((31 - Math.clz32(mmc)) << 1));
    } else if (this.devMsiCap) {
      this.hideCapability(this.devMsiCap);
    }

    this.declareBars();
    if (backend.irqCount(PCI_IRQ.INTX) > 0 && this.devcfg[PCIR_INTPIN] !== 0) this.requestIntx();
  }

  private dword(off: number): number {
    return (this.devcfg[off] | (this.devcfg[off + 1] << 8) | (this.devcfg[off + 2] << 16) | (this.devcfg[off + 3] << 24)) >>> 0;
  }

  /** A capability we cannot emulate (the device gives no interrupts of
   * its kind) is unlinked from the guest's list. */
  private hideCapability(cap: Capability): void {
    const c = this.cfg.bytes;
    const next = this.devcfg[cap.offset + 1];
    if (c[PCIR_CAP_PTR] === cap.offset) { c[PCIR_CAP_PTR] = next; return; }
    const prev = this.caps.find((x) => this.devcfg[x.offset + 1] === cap.offset);
    if (prev) this.linkOverride.set(prev.offset + 1, next);
  }

  /** Next-pointer bytes of passed-through capabilities we relinked. */
  private readonly linkOverride = new Map<number, number>();

  // ---- BARs ----

  private declareBars(): void {
    for (let i = 0; i < PCI_BAR_COUNT; i++) {
      const r = this.backend.region(i);
      if (r.size === 0) continue;
      const raw = this.dword(PCIR_BAR0 + 4 * i);
      const kind: BarKind = raw & 1 ? 'io' : (raw & 6) === 4 && i < PCI_BAR_COUNT - 1 ? 'mem64' : 'mem32';
      const size = barSize(kind, r.size);
      const trapped = [this.tableLoc, this.pbaLoc].filter((t) => t && t.bar === i).map((t) => ({ offset: t!.offset, size: t!.size }));
      const canMap = kind !== 'io' && r.mmap !== undefined && this.ctx.kvm?.mapHostMemory !== undefined;
      const plan = kind === 'io' ? [{ offset: 0, size, how: 'trap' as const }]
        : planBar({ barSize: size, regionSize: r.size, mmapAreas: r.mmap?.areas ?? [], trapped, canMap });
      const bar: BarInfo = { idx: i, kind, size, regionSize: r.size, plan, mappedAt: [], trappedAt: [] };
      if (plan.some((p) => p.how === 'map') && r.mmap) {
        try {
          const length = Math.ceil(r.size / PAGE_SIZE) * PAGE_SIZE;
          if (this.backend.mmapRegion) {
            bar.host = this.backend.mmapRegion(i, length);
          } else {
            // A server's file shorter than the region would fault (SIGBUS) when the guest touched it.
            const st = fs.fstatSync(r.mmap.fd);
            if (st.isFile() && st.size < r.mmap.offset + r.size) throw new RangeError('region beyond its file');
            bar.host = mmap(length, PROT_READ | PROT_WRITE, r.mmap.fd, r.mmap.offset, `${this.backend.name} BAR ${i}`);
          }
        } catch {
          bar.plan = [{ offset: 0, size, how: 'trap' }];
        }
      }
      this.ptBars[i] = bar;
      const handler: BarHandler = {
        read: (off, sz) => this.ptBarRead(bar, off, sz),
        write: (off, sz, v) => this.ptBarWrite(bar, off, sz, v),
        decoded: (base) => { if (base !== undefined) this.syncCommand(); },
      };
      // Memory BARs decode through our own map/unmap: mapped pages and trapped pieces.
      if (kind !== 'io') {
        handler.map = (base) => this.mapBar(bar, base, handler);
        handler.unmap = () => this.unmapBar(bar);
      }
      this.allocBar(i, kind, size, handler);
      if (kind === 'mem64') i++;
    }
  }

  /** The BAR's layout now (for tests and stats). */
  barPlan(idx: number): BarPiece[] | undefined {
    return this.ptBars[idx]?.plan;
  }

  private mapBar(bar: BarInfo, base: number, handler: BarHandler): void {
    this.syncCommand();
    bar.at = base;
    const kvm = this.ctx.kvm;
    for (const p of bar.plan) {
      if (p.how === 'map' && bar.host && kvm?.mapHostMemory?.(base + p.offset, p.size, bar.host.address + BigInt(p.offset))) {
        bar.mappedAt.push(base + p.offset);
        this.passthruStats.mappedBarBytes += p.size;
        continue;
      }
      const h: MmioHandler = {
        read: (addr, data) => mmioSplit(handler, addr - base, data, false),
        write: (addr, data) => mmioSplit(handler, addr - base, data, true),
      };
      this.ctx.io.registerMmio(`${this.name} BAR${bar.idx}+0x${p.offset.toString(16)}`, base + p.offset, p.size, h);
      bar.trappedAt.push(base + p.offset);
    }
  }

  private unmapBar(bar: BarInfo): void {
    for (const a of bar.mappedAt) this.ctx.kvm?.unmapHostMemory?.(a);
    for (const a of bar.trappedAt) this.ctx.io.unregisterMmio(a);
    bar.mappedAt = [];
    bar.trappedAt = [];
    bar.at = undefined;
  }

  private inRange(t: { bar: number; offset: number; size: number } | undefined, bar: number, off: number): boolean {
    return t !== undefined && t.bar === bar && off >= t.offset && off < t.offset + t.size;
  }

  private ptBarRead(bar: BarInfo, off: number, size: number): number {
    this.passthruStats.barTraps++;
    if (this.msixEmu && this.inRange(this.tableLoc, bar.idx, off)) return this.msixEmu.tableRead(off - this.tableLoc!.offset, size);
    if (this.msixEmu && this.inRange(this.pbaLoc, bar.idx, off)) return this.msixEmu.pbaRead(off - this.pbaLoc!.offset, size);
    if (off + size > bar.regionSize) return size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
    const d = this.backend.read(bar.idx, off, size);
    let v = 0;
    for (let i = 0; i < size; i++) v |= d[i] << (8 * i);
    return v >>> 0;
  }

  private ptBarWrite(bar: BarInfo, off: number, size: number, value: number): void {
    this.passthruStats.barTraps++;
    if (this.msixEmu && this.inRange(this.tableLoc, bar.idx, off)) { this.msixEmu.tableWrite(off - this.tableLoc!.offset, size, value); return; }
    if (this.msixEmu && this.inRange(this.pbaLoc, bar.idx, off)) return; // the PBA is read-only
    if (off + size > bar.regionSize) return;
    this.backend.write(bar.idx, off, le(value, size));
  }

  // ---- configuration space ----

  /** Whether config byte `b` is ours (shadowed) rather than the device's. */
  private shadowed(b: number): boolean {
    if (b < 0x40) return b !== PCIR_STATUS && b !== PCIR_STATUS + 1;
    for (const cap of [this.devMsiCap, this.devMsixCap]) if (cap && b >= cap.offset && b < cap.offset + cap.length) return true;
    return this.linkOverride.has(b);
  }

  cfgRead(off: number, size: number): number | undefined {
    if (off >= CONFIG_SIZE) return 0;
    let all = true;
    for (let i = 0; i < size; i++) if (!this.shadowed(off + i)) all = false;
    if (all) {
      if (this.linkOverride.has(off) && size === 1) return this.linkOverride.get(off);
      return undefined; // the shadow (BARs and command through pci-emul)
    }
    this.passthruStats.configForwarded++;
    const dev = this.backend.read(PCI_REGION.CONFIG, off, size);
    let v = 0;
    for (let i = 0; i < size; i++) {
      const b = off + i;
      let byte = dev[i];
      if (this.shadowed(b)) byte = this.linkOverride.get(b) ?? this.cfg.bytes[b];
      else if (b === PCIR_STATUS) byte = (byte & ~PCIM_STATUS_CAPPRESENT) | (this.cfg.bytes[PCIR_STATUS] & PCIM_STATUS_CAPPRESENT);
      v |= byte << (8 * i);
    }
    return v >>> 0;
  }

  cfgWrite(off: number, size: number, value: number): boolean {
    if (off >= CONFIG_SIZE) return true;
    if (off >= PCIR_BAR0 && off < PCIR_BAR0 + 4 * PCI_BAR_COUNT) return super.cfgWrite(off, size, value);
    if (off >= PCIR_BIOS && off < PCIR_BIOS + 4) { this.romWrite(off, size, value); return true; }
    const msi = this.devMsiCap;
    if (msi && off >= msi.offset && off < msi.offset + msi.length) { this.msiWrite(off, size, value); return true; }
    const msix = this.devMsixCap;
    if (msix && off >= msix.offset && off < msix.offset + msix.length) { this.msixWrite(off, size, value); return true; }
    if (off < 0x40) {
      // The status register is the device's (write-1-to-clear bits).
      if (off <= PCIR_STATUS && off + size > PCIR_STATUS) {
        const shift = 8 * (PCIR_STATUS - off);
        this.backend.write(PCI_REGION.CONFIG, PCIR_STATUS, le((value >>> shift) & 0xffff, 2));
      }
      return false; // command, interrupt line, ... : the shadow (commandChanged forwards the command)
    }
    const pm = this.devPmCap;
    if (pm && off >= pm.offset + 4 && off < pm.offset + 6) return true; // PMCSR: the device stays in D0
    const exp = this.devExpCap;
    if (exp && off <= exp.offset + 9 && off + size > exp.offset + 9 && (value >>> (8 * (exp.offset + 9 - off))) & 0x80) {
      // Initiate Function Level Reset: our reset, which re-arms the emulation too.
      this.passthruStats.flr++;
      this.resetDevice();
      value &= ~(0x80 << (8 * (exp.offset + 9 - off)));
    }
    this.passthruStats.configForwarded++;
    this.backend.write(PCI_REGION.CONFIG, off, le(value, size));
    return true;
  }

  commandChanged(oldCommand: number, newCommand: number): void {
    super.commandChanged(oldCommand, newCommand);
    this.syncCommand(true);
    this.wireIntx();
    this.decodeRom();
  }

  /** The command bits last written to the device. */
  private deviceCommand = -1;

  /** Writes the shadow command register's decode, bus-master and INTx bits
   * through to the device: on every guest write, and when a BAR starts to
   * decode without one (the platform turns decoding and bus mastering on
   * for guests without firmware, pci_emul_init's way). A host device must
   * decode what the guest reaches through its mapped pages (vfio-pci
   * faults them while memory decoding is off) and may DMA only as a bus
   * master. */
  private syncCommand(always = false): void {
    const passed = PCIM_CMD_PORTEN | PCIM_CMD_MEMEN | PCIM_CMD_BUSMASTEREN | PCIM_CMD_INTxDIS;
    const want = this.cfg.get16(PCIR_COMMAND) & passed;
    if (!always && want === this.deviceCommand) return;
    this.deviceCommand = want;
    this.backend.write(PCI_REGION.CONFIG, PCIR_COMMAND, le(want, 2));
  }

  // ---- expansion ROM ----

  /** A guest write to the ROM BAR: address bits above the size, and enable. */
  private romWrite(off: number, size: number, value: number): void {
    const rom = this.rom;
    if (!rom) return; // no expansion ROM: the register reads 0
    const cur = this.cfg.get32(PCIR_BIOS);
    let v = cur;
    for (let i = 0; i < size && off + i < PCIR_BIOS + 4; i++) {
      const shift = 8 * (off + i - PCIR_BIOS);
      v = (v & ~(0xff << shift)) | (((value >>> (8 * i)) & 0xff) << shift);
    }
    const addr = (v & ~(rom.size - 1) & ~(ROM_MIN - 1)) >>> 0;
    this.cfg.set32(PCIR_BIOS, (addr | (v & ROM_ENABLE)) >>> 0);
    this.bars[6].addr = addr;
    this.decodeRom();
  }

  /** The ROM decodes where the guest put it while it and memory decoding are enabled. */
  private decodeRom(): void {
    const rom = this.rom;
    if (!rom) return;
    const v = this.cfg.get32(PCIR_BIOS);
    const addr = (v & ~(rom.size - 1) & ~(ROM_MIN - 1)) >>> 0;
    const want = (v & ROM_ENABLE) && (this.cfg.get16(PCIR_COMMAND) & PCIM_CMD_MEMEN) && addr !== 0 ? addr : undefined;
    if (rom.at === want) return;
    if (rom.at !== undefined) this.ctx.io.unregisterMmio(rom.at);
    rom.at = undefined;
    if (want === undefined) return;
    try {
      this.ctx.io.registerMmio(`${this.name} ROM`, want, rom.size, {
        read: (a, data) => { const o = a - want; data.set(rom.bytes.subarray(o, o + data.length)); },
        write: () => {}, // read-only
      });
      rom.at = want;
    } catch {
      // Overlapping another range: not decoded, as a BAR conflict.
    }
  }

  private msiWrite(off: number, size: number, value: number): void {
    const o = this.devMsiCap!.offset;
    const is64 = (this.cfg.get16(o + 2) & 0x80) !== 0;
    const dataOff = is64 ? 12 : 8;
    for (let i = 0; i < size; i++) {
      const b = off + i - o;
      const v = (value >>> (8 * i)) & 0xff;
      if (b === 2) this.cfg.bytes[o + 2] = (this.cfg.bytes[o + 2] & ~0x71) | (v & 0x71);
      else if (b >= 4 && b < 8) this.cfg.bytes[o + b] = b === 4 ? v & 0xfc : v;
      else if (is64 && b >= 8 && b < 12) this.cfg.bytes[o + b] = v;
      else if (b >= dataOff && b < dataOff + 2) this.cfg.bytes[o + b] = v;
    }
    const ctrl = this.cfg.get16(o + 2);
    const address = this.cfg.get32(o + 4) + (is64 ? this.cfg.get32(o + 8) * 0x100000000 : 0);
    const enabled = (ctrl & 1) !== 0;
    this.msiEmu?.program(enabled, 1 << ((ctrl >> 4) & 7), address, this.cfg.get16(o + dataOff));
    this.wireIntx();
  }

  private msixWrite(off: number, size: number, value: number): void {
    const o = this.devMsixCap!.offset;
    for (let i = 0; i < size; i++) {
      if (off + i === o + 3) this.cfg.bytes[o + 3] = (this.cfg.bytes[o + 3] & 0x07) | (((value >>> (8 * i)) & 0xff) & 0xc0);
    }
    const ctrl = this.cfg.get16(o + 2);
    this.msixEmu?.control((ctrl & 0x8000) !== 0, (ctrl & 0x4000) !== 0);
  }

  // ---- INTx ----

  /** Once the platform routed our pin: the device's INTx eventfd raises
   * the I/O APIC input inside KVM, the guest's EOI lowers it and unmasks
   * the device (resample eventfd = the device's unmask eventfd). */
  private wireIntx(): void {
    if (this.intxWire || !this.wantsIntx) return;
    const gsi = this.intx?.gsi;
    const kvm = this.ctx.kvm;
    if (gsi === undefined || !kvm?.intxIrqfd) return;
    const trigger = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    const resample = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    const wired = kvm.intxIrqfd(trigger, resample, gsi);
    if (!wired) { closeFd(trigger); closeFd(resample); return; }
    this.backend.setIrqEventfds(PCI_IRQ.INTX, [trigger]);
    this.backend.setIntxUnmaskFd(resample);
    this.intxWire = { trigger, resample, close: () => { wired.close(); closeFd(trigger); closeFd(resample); } };
  }

  // ---- Device ----

  /** Interrupts the device signalled where KVM does not deliver them. */
  poll(): void {
    this.msixEmu?.poll();
    this.msiEmu?.poll();
  }

  private resetDevice(): void {
    this.passthruStats.resets++;
    this.backend.reset();
    this.deviceCommand = -1; // the reset cleared the device's
  }

  reset(): void {
    this.resetDevice();
    if (this.rom) { this.cfg.set32(PCIR_BIOS, 0); this.bars[6].addr = 0; this.decodeRom(); }
    this.msixEmu?.reset();
    this.msiEmu?.close();
    if (this.devMsixCap) this.cfg.set16(this.devMsixCap.offset + 2, this.cfg.get16(this.devMsixCap.offset + 2) & 0x07ff);
    if (this.devMsiCap) this.cfg.set16(this.devMsiCap.offset + 2, this.cfg.get16(this.devMsiCap.offset + 2) & ~0x71);
  }

  close(): void {
    this.msixEmu?.close();
    this.msiEmu?.close();
    this.intxWire?.close();
    this.backend.reset();
    for (const b of this.ptBars) b?.host?.unmap();
    this.backend.close();
  }

  stats(): Record<string, number> {
    return {
      'bar traps': this.passthruStats.barTraps,
      'mapped bar bytes': this.passthruStats.mappedBarBytes,
      'config forwarded': this.passthruStats.configForwarded,
      'msix vectors in kernel': this.msixEmu?.inKernelVectors ?? 0,
      'msi-x messages sent by bhyve': this.msixEmu?.delivered ?? 0,
      resets: this.passthruStats.resets,
      flr: this.passthruStats.flr,
      ...this.backend.stats?.(),
    };
  }
}

function le(value: number, size: number): Uint8Array {
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = (value >>> (8 * i)) & 0xff;
  return b;
}

/** An MMIO access of any length as 1/2/4-byte BAR accesses. */
function mmioSplit(h: BarHandler, offset: number, data: Uint8Array, write: boolean): void {
  const one = (o: number, size: 1 | 2 | 4): void => {
    if (write) {
      let v = 0;
      for (let i = 0; i < size; i++) v |= data[o + i] << (8 * i);
      h.write(offset + o, size, v >>> 0);
    } else {
      const v = h.read(offset + o, size);
      for (let i = 0; i < size; i++) data[o + i] = (v >>> (8 * i)) & 0xff;
    }
  };
  const n = data.length;
  if (n === 1 || n === 2 || n === 4) one(0, n);
  else if (n === 8) { one(0, 4); one(4, 4); }
  else for (let i = 0; i < n; i++) one(i, 1);
}
