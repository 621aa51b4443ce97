// A PCI function with resources, as bhyve's pci_emul.c gives every
// emulated device: base address registers, MSI and MSI-X capabilities and a
// legacy INTx line.
//
// BARs (pci_cfgrw's BAR path): the guest sizes a BAR by writing all-ones and
// reading back the size mask; writing a new base moves the BAR. Only 4-byte
// aligned writes reach a BAR register. A BAR is registered with the io
// registrar while its space is decoded (command register PORTEN for I/O
// BARs, MEMEN for memory BARs): a move unregisters the old range and
// registers the new one; toggling the enable bit registers/unregisters. A
// range that cannot be registered (it collides with another device, or lies
// beyond 2^53) is left undecoded instead of crashing: the guest put it there.
//
// MSI (pci_emul_add_msicap): 64-bit address, `msgnum` messages, no per-vector
// masking. MSI-X (pci_emul_add_msixcap): the table at offset 0 of a 32-bit
// memory BAR and the PBA at the next 4 KiB boundary; every vector starts
// masked; a message for a masked vector (or with the function mask set) sets
// its PBA bit and is delivered when it is unmasked (bhyve drops it; the PCI
// spec asks for the pending bit). Delivery is ctx.irq.signalMsi(addr, data).
//
// INTx (pci_lintr_*): a device asks for a line at init (requestIntx); the
// platform routes it later (src/devices/pci/intx.ts) and fills the interrupt
// pin/line registers. An assert while INTx is not permitted (MSI or MSI-X
// enabled, or INTxDIS set) stays pending until it is.

import type { DeviceContext, MmioHandler, PortIoHandler, RegisterPages } from '../device.js';
import { barSize, type BarKind, type PciResourceAllocator } from './bar-alloc.js';
import {
  PCI_BAR_COUNT, PCI_CONFIG_SIZE, PCIM_CMD_INTxDIS, PCIM_CMD_MEMEN, PCIM_CMD_PORTEN, PCIR_BAR0, PCIR_COMMAND,
  PCIY_MSI, PCIY_MSIX, type PciCapability,
} from './config-space.js';
import { PciFunctionBase } from './pci-function.js';

export const PCIM_BAR_IO_SPACE = 0x1;
export const PCIM_BAR_MEM_32 = 0x0;
export const PCIM_BAR_MEM_64 = 0x4;
export const PCIM_BAR_MEM_PREFETCH = 0x8;

export const PCIM_MSICTRL_MSI_ENABLE = 0x0001;
export const PCIM_MSICTRL_MMC_MASK = 0x000e;
export const PCIM_MSICTRL_MME_MASK = 0x0070;
export const PCIM_MSICTRL_64BIT = 0x0080;
export const PCIM_MSIXCTRL_MSIX_ENABLE = 0x8000;
export const PCIM_MSIXCTRL_FUNCTION_MASK = 0x4000;
export const PCIM_MSIXCTRL_TABLE_SIZE = 0x07ff;
export const PCIM_MSIX_BIR_MASK = 0x7;
export const PCIM_MSIX_VCTRL_MASK = 0x1;
export const MSIX_TABLE_ENTRY_SIZE = 16;
export const MAX_MSIX_TABLE_ENTRIES = 2048;
/** Length of the 64-bit MSI capability without per-vector masking. */
export const MSICAP_LENGTH = 14;
export const MSIXCAP_LENGTH = 12;

/** What a device does with accesses inside one of its BARs. `offset` is
 * relative to the BAR base; accesses are 1, 2 or 4 bytes (8-byte MMIO is
 * split into two 4-byte halves, low first). */
export interface BarHandler {
  read(offset: number, size: 1 | 2 | 4): number;
  write(offset: number, size: 1 | 2 | 4, value: number): void;
  /** A memory BAR backed by host memory (bhyve's pe_baraddr): called
   * instead of registering MMIO when the BAR starts decoding at `base`,
   * and `unmap` when it stops or moves. */
  map?(base: number): void;
  unmap?(): void;
  /** Pages the guest reads the BAR from (a read-only KVM slot, as big as
   * the BAR): mapped wherever the BAR decodes, beside the MMIO handler,
   * which still takes every write. The device keeps them equal to what
   * read() answers. */
  pages?: RegisterPages;
  /** Told where the BAR decodes from now on (undefined: nowhere), after
   * its range is registered or before it is removed. */
  decoded?(base: number | undefined): void;
}

interface BarState {
  kind: BarKind;
  size: number;
  lobits: number;
  handler: BarHandler;
  /** Where it is registered now, or undefined. */
  registeredAt?: number;
  /** I/O BARs: the upper 16 bits of the register as last written (masked).
   * The BAR decodes 16-bit port addresses, but its register keeps these
   * bits, as QEMU's do: SeaBIOS sizes an I/O BAR from all 32 bits. */
  ioUpper?: number;
}

type LintrState = 'idle' | 'asserted' | 'pending';

/** An INTx line once routed: the platform fills it in. */
export interface IntxLine {
  assert(): void;
  deassert(): void;
  /** The I/O APIC input it drives (for a KVM irqfd in its place). */
  readonly gsi?: number;
}

function ones(size: number): number {
  return size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
}

/** Splits an access of any length into 1/2/4-byte device accesses. */
function mmioAccess(handler: BarHandler, offset: number, data: Uint8Array, write: boolean): void {
  const n = data.length;
  const one = (o: number, size: 1 | 2 | 4) => {
    if (write) {
      let v = 0;
      for (let i = 0; i < size; i++) v |= data[o + i] << (8 * i);
      handler.write(offset + o, size, v >>> 0);
    } else {
      const v = handler.read(offset + o, size);
      for (let i = 0; i < size; i++) data[o + i] = (v >>> (8 * i)) & 0xff;
    }
  };
  if (n === 1 || n === 2 || n === 4) one(0, n);
  else if (n === 8) { one(0, 4); one(4, 4); }
  else for (let i = 0; i < n; i++) one(i, 1);
}

export abstract class PciEmulFunction extends PciFunctionBase {
  private readonly barState: Array<BarState | undefined> = new Array(PCI_BAR_COUNT + 1).fill(undefined);

  // MSI
  private msiCap: PciCapability | undefined;
  private msiEnabled = false;
  private msiAddr = 0;
  private msiData = 0;
  private msiMaxMsgs = 0;

  // MSI-X
  private msixCap: PciCapability | undefined;
  private msixEnabled = false;
  private msixFunctionMask = false;
  private msixTable = new Uint8Array(0);
  private msixPba = new Uint8Array(0);
  private msixCount = 0;
  private msixPbaOffset = 0;

  // INTx
  /** True when the device asked for a legacy interrupt line. */
  wantsIntx = false;
  /** Set by the platform when the line is routed. */
  intx: IntxLine | undefined;
  private lintr: LintrState = 'idle';

  /** Why the last BAR registration failed, for diagnostics. */
  barConflict: string | undefined;

  /** Interrupts this function sent, for bhyvectl --get-stats. */
  readonly interruptCounts = { msix: 0, msixHeld: 0, msi: 0, intx: 0 };

  constructor(emulation: string, protected readonly ctx: DeviceContext, configSize: number = PCI_CONFIG_SIZE) {
    super(emulation, configSize);
  }

  // ---- BARs ----

  /**
   * Declares BAR `idx` (pci_emul_alloc_bar): the size is rounded to a power
   * of two and the PCI minimum. A 64-bit BAR also takes idx+1. The address
   * is assigned later (assignBars) unless the guest programs it itself.
   */
  allocBar(idx: number, kind: BarKind, size: number, handler: BarHandler): void {
    if (!Number.isInteger(idx) || idx < 0 || idx >= PCI_BAR_COUNT || (kind === 'mem64' && idx + 1 >= PCI_BAR_COUNT)) {
      throw new RangeError(`${this.name}: invalid BAR index ${idx}`);
    }
    if (this.barState[idx] !== undefined || this.bars[idx].type !== 'none') throw new Error(`${this.name}: BAR ${idx} already allocated`);
    const size2 = barSize(kind, size);
    const lobits = kind === 'io' ? PCIM_BAR_IO_SPACE : kind === 'mem64' ? PCIM_BAR_MEM_64 : PCIM_BAR_MEM_32;
    this.barState[idx] = { kind, size: size2, lobits, handler };
    this.bars[idx] = { type: kind, size: size2, addr: 0 };
    this.cfg.set32(PCIR_BAR0 + 4 * idx, lobits);
    if (kind === 'mem64') {
      this.bars[idx + 1] = { type: 'mem64-hi', size: 0, addr: 0 };
      this.cfg.set32(PCIR_BAR0 + 4 * (idx + 1), 0);
    }
  }

  /** The declared BARs, for the allocator. */
  declaredBars(): Array<{ idx: number; kind: BarKind; size: number }> {
    const out: Array<{ idx: number; kind: BarKind; size: number }> = [];
    this.barState.forEach((b, idx) => { if (b) out.push({ idx, kind: b.kind, size: b.size }); });
    return out;
  }

  /** Places BAR `idx` from the allocator (pci_emul_assign_bar). */
  assignBar(idx: number, alloc: PciResourceAllocator): void {
    const b = this.barState[idx];
    if (!b) return;
    const { addr, high } = alloc.alloc(b.kind, b.size, this.name);
    if (high) b.lobits |= PCIM_BAR_MEM_PREFETCH;
    this.setBarAddress(idx, addr);
  }

  /** Guest address of a BAR (0 when unassigned or absent). */
  barAddress(idx: number): number {
    return this.bars[idx]?.addr ?? 0;
  }

  /** Programs a BAR's address as the device side (moves its registration). */
  setBarAddress(idx: number, addr: number): void {
    const b = this.barState[idx];
    if (!b) return;
    this.unregisterBar(idx);
    this.bars[idx].addr = addr;
    this.writeBarRegisters(idx);
    if (this.decodes(b.kind)) this.registerBar(idx);
  }

  private writeBarRegisters(idx: number): void {
    const b = this.barState[idx]!;
    const addr = this.bars[idx].addr;
    const lo = b.kind === 'io' ? (((b.ioUpper ?? 0) << 16) | (addr & 0xfffc)) : (addr % 0x100000000) & ~0xf;
    this.cfg.set32(PCIR_BAR0 + 4 * idx, (lo | b.lobits) >>> 0);
    if (b.kind === 'mem64') this.cfg.set32(PCIR_BAR0 + 4 * (idx + 1), Math.floor(addr / 0x100000000));
  }

  private decodes(kind: BarKind): boolean {
    const cmd = this.cfg.get16(PCIR_COMMAND);
    return (cmd & (kind === 'io' ? PCIM_CMD_PORTEN : PCIM_CMD_MEMEN)) !== 0;
  }

  private registerBar(idx: number): void {
    const b = this.barState[idx];
    if (!b || b.registeredAt !== undefined) return;
    const base = this.bars[idx].addr;
    const name = `${this.name} BAR${idx}`;
    try {
      if (b.kind === 'io') {
        if (base + b.size > 0x10000) throw new RangeError(`I/O range past 0xffff`);
        const h: PortIoHandler = {
          read: (port, size) => b.handler.read(port - base, size),
          write: (port, size, value) => b.handler.write(port - base, size, value),
        };
        this.ctx.io.registerPorts(name, base, b.size, h);
      } else {
        if (!Number.isSafeInteger(base + b.size)) throw new RangeError('address beyond 2^53');
        if (b.handler.map) {
          b.handler.map(base);
          b.registeredAt = base;
          this.barConflict = undefined;
          return;
        }
        const h: MmioHandler = {
          read: (addr, data) => mmioAccess(b.handler, addr - base, data, false),
          write: (addr, data) => mmioAccess(b.handler, addr - base, data, true),
        };
        this.ctx.io.registerMmio(name, base, b.size, h);
        // Reads from the pages cost no exit; when KVM refuses the slot they
        // keep reaching the handler.
        b.handler.pages?.map(base);
      }
      b.registeredAt = base;
      this.barConflict = undefined;
      b.handler.decoded?.(base);
    } catch (e) {
      this.barConflict = `${name} at 0x${base.toString(16)} not decoded: ${(e as Error).message}`;
    }
  }

  private unregisterBar(idx: number): void {
    const b = this.barState[idx];
    if (!b || b.registeredAt === undefined) return;
    b.handler.decoded?.(undefined);
    if (b.kind === 'io') this.ctx.io.unregisterPorts(b.registeredAt);
    else if (b.handler.unmap) b.handler.unmap();
    else {
      b.handler.pages?.unmap();
      this.ctx.io.unregisterMmio(b.registeredAt);
    }
    b.registeredAt = undefined;
  }

  /** Where BAR idx is decoded now, or undefined. */
  barRegisteredAt(idx: number): number | undefined {
    return this.barState[idx]?.registeredAt;
  }

  /** A guest write to a BAR register (pci_cfgrw). */
  private barWrite(off: number, size: number, value: number): void {
    if (size !== 4 || (off & 3) !== 0) return;
    const idx = (off - PCIR_BAR0) >> 2;
    const t = this.bars[idx].type;
    if (t === 'none') { this.cfg.set32(off, 0); return; }
    if (t === 'mem64-hi') {
      const lo = this.barState[idx - 1]!;
      const mask = BigInt.asUintN(64, ~(BigInt(lo.size) - 1n));
      const hi = Number(((BigInt(value >>> 0) << 32n) & mask) >> 32n);
      const cur = this.bars[idx - 1].addr;
      const next = hi * 0x100000000 + (cur % 0x100000000);
      this.cfg.set32(off, hi);
      if (next !== cur) this.moveBar(idx - 1, next);
      return;
    }
    const b = this.barState[idx]!;
    const cur = this.bars[idx].addr;
    let next: number;
    if (b.kind === 'io') {
      next = (value & ~(b.size - 1)) & 0xffff;
      b.ioUpper = (value >>> 16) & 0xffff;
    } else {
      const lo = (value & ~(b.size - 1)) >>> 0;
      next = b.kind === 'mem64' ? Math.floor(cur / 0x100000000) * 0x100000000 + lo : lo;
    }
    if (next !== cur) this.moveBar(idx, next);
    else this.writeBarRegisters(idx);
  }

  private moveBar(idx: number, addr: number): void {
    const b = this.barState[idx]!;
    this.unregisterBar(idx);
    this.bars[idx].addr = addr;
    this.writeBarRegisters(idx);
    if (this.decodes(b.kind)) this.registerBar(idx);
  }

  // ---- config space hooks ----

  cfgWrite(off: number, size: number, value: number): boolean {
    if (off >= PCIR_BAR0 && off < PCIR_BAR0 + 4 * PCI_BAR_COUNT) {
      this.barWrite(off, size, value);
      return true;
    }
    const msi = this.msiCap;
    if (msi && off < msi.offset + msi.length && off + size > msi.offset) {
      this.cfg.guestWrite(off, size, value);
      this.msiUpdated();
      return true;
    }
    const msix = this.msixCap;
    if (msix && off < msix.offset + msix.length && off + size > msix.offset) {
      this.cfg.guestWrite(off, size, value);
      this.msixUpdated();
      return true;
    }
    return this.deviceCfgWrite(off, size, value);
  }

  /** Device-specific config writes (after BARs and MSI/MSI-X). */
  protected deviceCfgWrite(_off: number, _size: number, _value: number): boolean {
    return false;
  }

  commandChanged(oldCommand: number, newCommand: number): void {
    const changed = oldCommand ^ newCommand;
    for (let i = 0; i < PCI_BAR_COUNT; i++) {
      const b = this.barState[i];
      if (!b) continue;
      const bit = b.kind === 'io' ? PCIM_CMD_PORTEN : PCIM_CMD_MEMEN;
      if ((changed & bit) === 0) continue;
      if (newCommand & bit) this.registerBar(i);
      else this.unregisterBar(i);
    }
    this.lintrUpdate();
  }

  /** Registers the BARs whose space decoding is on (after the platform set
   * the command register directly). */
  syncDecoding(): void {
    this.commandChanged(0, this.cfg.get16(PCIR_COMMAND));
  }

  // ---- MSI ----

  /** Adds a 64-bit MSI capability with `msgnum` (power of two, 1-32) messages. */
  addMsiCap(msgnum: number): number {
    if (!(msgnum >= 1 && msgnum <= 32 && (msgnum & (msgnum - 1)) === 0)) throw new RangeError(`invalid MSI message count ${msgnum}`);
    const mmc = Math.log2(msgnum);
    const cap = new Uint8Array(MSICAP_LENGTH);
    const ctrl = PCIM_MSICTRL_64BIT | (mmc << 1);
    cap[2] = ctrl & 0xff;
    cap[3] = ctrl >> 8;
    const w = new Uint8Array(MSICAP_LENGTH);
    w[2] = PCIM_MSICTRL_MSI_ENABLE | PCIM_MSICTRL_MME_MASK;
    w.fill(0xff, 4, 14);
    w[4] = 0xfc;
    const off = this.cfg.addCapability(PCIY_MSI, cap, w);
    this.msiCap = this.cfg.capabilities().find((c) => c.offset === off);
    return off;
  }

  private msiUpdated(): void {
    const c = this.msiCap!;
    const ctrl = this.cfg.get16(c.offset + 2);
    this.msiEnabled = (ctrl & PCIM_MSICTRL_MSI_ENABLE) !== 0;
    const lo = this.cfg.get32(c.offset + 4);
    const hi = this.cfg.get32(c.offset + 8);
    this.msiAddr = hi * 0x100000000 + lo;
    this.msiData = this.cfg.get16(c.offset + 12);
    const mmc = 1 << ((ctrl & PCIM_MSICTRL_MMC_MASK) >> 1);
    const mme = 1 << ((ctrl & PCIM_MSICTRL_MME_MASK) >> 4);
    this.msiMaxMsgs = this.msiEnabled ? Math.min(mme, mmc) : 0;
    this.lintrUpdate();
    this.interruptSetupChanged();
  }

  msiEnabledNow(): boolean { return this.msiEnabled; }

  /** The command register's Interrupt Disable bit: the driver turned INTx off. */
  intxDisabledNow(): boolean { return (this.cfg.get16(PCIR_COMMAND) & PCIM_CMD_INTxDIS) !== 0; }

  /** Messages the guest enabled (pci_msi_maxmsgnum): 0 while MSI is off. */
  get msiMessageCount(): number { return this.msiMaxMsgs; }

  /** Sends MSI message `index` when MSI is enabled; false otherwise. */
  generateMsi(index: number): boolean {
    if (!this.msiEnabled || index >= this.msiMaxMsgs) return false;
    // Multiple messages modify the low bits of the data.
    this.interruptCounts.msi++;
    this.ctx.irq.signalMsi(this.msiAddr, (this.msiData | index) & 0xffff);
    return true;
  }

  // ---- MSI-X ----

  /** Adds an MSI-X capability with `msgnum` vectors; table and PBA live in
   * 32-bit memory BAR `barIdx` (allocated here). */
  addMsixCap(msgnum: number, barIdx: number): number {
    if (!(Number.isInteger(msgnum) && msgnum >= 1 && msgnum <= MAX_MSIX_TABLE_ENTRIES)) throw new RangeError(`invalid MSI-X vector count ${msgnum}`);
    const tabSize = Math.ceil((msgnum * MSIX_TABLE_ENTRY_SIZE) / 4096) * 4096;
    const pbaSize = Math.ceil(msgnum / 64) * 8;
    this.msixCount = msgnum;
    this.msixTable = new Uint8Array(msgnum * MSIX_TABLE_ENTRY_SIZE);
    for (let i = 0; i < msgnum; i++) this.msixTable[i * MSIX_TABLE_ENTRY_SIZE + 12] = PCIM_MSIX_VCTRL_MASK;
    this.msixPba = new Uint8Array(pbaSize);
    this.msixPbaOffset = tabSize;
    this.allocBar(barIdx, 'mem32', tabSize + pbaSize, {
      read: (o, s) => this.msixBarRead(o, s),
      write: (o, s, v) => this.msixBarWrite(o, s, v),
    });
    const cap = new Uint8Array(MSIXCAP_LENGTH);
    const dv = new DataView(cap.buffer);
    dv.setUint16(2, msgnum - 1, true);
    dv.setUint32(4, barIdx & PCIM_MSIX_BIR_MASK, true);
    dv.setUint32(8, (tabSize | (barIdx & PCIM_MSIX_BIR_MASK)) >>> 0, true);
    const w = new Uint8Array(MSIXCAP_LENGTH);
    w[3] = (PCIM_MSIXCTRL_MSIX_ENABLE | PCIM_MSIXCTRL_FUNCTION_MASK) >> 8;
    const off = this.cfg.addCapability(PCIY_MSIX, cap, w);
    this.msixCap = this.cfg.capabilities().find((c) => c.offset === off);
    return off;
  }

  get msixVectorCount(): number { return this.msixCount; }

  private msixUpdated(): void {
    const ctrl = this.cfg.get16(this.msixCap!.offset + 2);
    this.msixEnabled = (ctrl & PCIM_MSIXCTRL_MSIX_ENABLE) !== 0;
    this.msixFunctionMask = (ctrl & PCIM_MSIXCTRL_FUNCTION_MASK) !== 0;
    this.lintrUpdate();
    this.interruptSetupChanged();
    this.msixDeliverPending();
  }

  /** The guest changed its MSI or MSI-X set-up (enables, function mask, a
   * table entry): for a subclass that keeps copies of it in KVM (irqfd
   * routes). */
  protected interruptSetupChanged(): void {}

  /** Before the guest reads the PBA: a subclass adds the signals it holds
   * for masked vectors (generateMsix). */
  protected msixPbaReading(): void {}

  /** MSI-X table entry `v`; masked counts the function mask too. */
  msixEntry(v: number): { address: number; data: number; masked: boolean } {
    const t = this.msixTable;
    const e = v * MSIX_TABLE_ENTRY_SIZE;
    const rd = (o: number) => (t[e + o] | (t[e + o + 1] << 8) | (t[e + o + 2] << 16) | (t[e + o + 3] << 24)) >>> 0;
    return { address: rd(4) * 0x100000000 + rd(0), data: rd(8), masked: this.msixFunctionMask || this.vectorMasked(v) };
  }

  /** MSI-X is in use (pci_msix_enabled: enabled and MSI not enabled). */
  msixEnabledNow(): boolean {
    return this.msixEnabled && !this.msiEnabled;
  }

  private vectorMasked(v: number): boolean {
    return (this.msixTable[v * MSIX_TABLE_ENTRY_SIZE + 12] & PCIM_MSIX_VCTRL_MASK) !== 0;
  }

  private msixSend(v: number): void {
    const t = this.msixTable;
    const e = v * MSIX_TABLE_ENTRY_SIZE;
    const rd = (o: number) => (t[e + o] | (t[e + o + 1] << 8) | (t[e + o + 2] << 16) | (t[e + o + 3] << 24)) >>> 0;
    this.interruptCounts.msix++;
    this.ctx.irq.signalMsi(rd(4) * 0x100000000 + rd(0), rd(8));
  }

  /** Raises MSI-X vector `v`: delivered, or pending when masked. False when
   * MSI-X is not in use or the vector does not exist. */
  generateMsix(v: number): boolean {
    if (!this.msixEnabledNow() || !Number.isInteger(v) || v < 0 || v >= this.msixCount) return false;
    if (this.msixFunctionMask || this.vectorMasked(v)) {
      this.interruptCounts.msixHeld++;
      this.msixPba[v >> 3] |= 1 << (v & 7);
      return true;
    }
    this.msixSend(v);
    return true;
  }

  /** True when vector v's pending bit is set. */
  msixPending(v: number): boolean {
    return v >= 0 && v < this.msixCount && (this.msixPba[v >> 3] & (1 << (v & 7))) !== 0;
  }

  private msixDeliverPending(): void {
    if (!this.msixEnabledNow() || this.msixFunctionMask) return;
    for (let v = 0; v < this.msixCount; v++) {
      if (this.msixPending(v) && !this.vectorMasked(v)) {
        this.msixPba[v >> 3] &= ~(1 << (v & 7));
        this.msixSend(v);
      }
    }
  }

  private msixBarRead(off: number, size: number): number {
    let src: Uint8Array;
    let o: number;
    if (off < this.msixTable.length) { src = this.msixTable; o = off; }
    else if (off >= this.msixPbaOffset && off < this.msixPbaOffset + this.msixPba.length) {
      this.msixPbaReading();
      src = this.msixPba;
      o = off - this.msixPbaOffset;
    }
    else return 0;
    let v = 0;
    for (let i = 0; i < size; i++) v |= (o + i < src.length ? src[o + i] : 0) << (8 * i);
    return (v & ones(size)) >>> 0;
  }

  private msixBarWrite(off: number, size: number, value: number): void {
    // The PBA is read-only; the table takes aligned dword (or smaller) writes.
    if (off >= this.msixTable.length) return;
    const first = Math.floor(off / MSIX_TABLE_ENTRY_SIZE);
    for (let i = 0; i < size && off + i < this.msixTable.length; i++) this.msixTable[off + i] = (value >>> (8 * i)) & 0xff;
    // Reserved vector-control bits stay zero.
    const e = first * MSIX_TABLE_ENTRY_SIZE;
    this.msixTable[e + 12] &= PCIM_MSIX_VCTRL_MASK;
    this.msixTable[e + 13] = 0;
    this.msixTable[e + 14] = 0;
    this.msixTable[e + 15] = 0;
    this.interruptSetupChanged();
    this.msixDeliverPending();
  }

  // ---- INTx ----

  /** Asks for a legacy interrupt pin (pci_lintr_request); routed by the
   * platform once every device exists. */
  requestIntx(): void {
    this.wantsIntx = true;
  }

  private lintrPermitted(): boolean {
    return !(this.msiEnabled || this.msixEnabled || this.intxDisabledNow());
  }

  intxAssert(): void {
    if (!this.intx) return;
    if (this.lintr === 'idle') {
      if (this.lintrPermitted()) {
        this.lintr = 'asserted';
        this.interruptCounts.intx++;
        this.intx.assert();
      } else {
        this.lintr = 'pending';
      }
    }
  }

  intxDeassert(): void {
    if (!this.intx) return;
    if (this.lintr === 'asserted') {
      this.lintr = 'idle';
      this.intx.deassert();
    } else if (this.lintr === 'pending') {
      this.lintr = 'idle';
    }
  }

  /** The INTx state as the bus sees it (for tests and diagnostics). */
  get intxState(): LintrState { return this.lintr; }

  private lintrUpdate(): void {
    if (!this.intx) return;
    if (this.lintr === 'asserted' && !this.lintrPermitted()) {
      this.intx.deassert();
      this.lintr = 'pending';
    } else if (this.lintr === 'pending' && this.lintrPermitted()) {
      this.lintr = 'asserted';
      this.interruptCounts.intx++;
      this.intx.assert();
    }
  }

  /** Back to power-on interrupt state (MSI/MSI-X off, line low). */
  protected resetInterrupts(): void {
    this.intxDeassert();
  }
}

/**
 * Assigns every declared BAR of `functions` bus by bus, largest first (stable
 * in bus/slot/function and BAR order), as init_pci's second pass does, and
 * records each bus's windows. Functions are PciBus.functions() order.
 */
export function assignPciBars(functions: readonly unknown[], alloc: PciResourceAllocator, buses: readonly number[] = []): void {
  const byBus = new Map<number, PciEmulFunction[]>(buses.map((b) => [b, []]));
  for (const fn of functions) {
    if (!(fn instanceof PciEmulFunction) || !fn.address) continue;
    const list = byBus.get(fn.address.bus) ?? [];
    list.push(fn);
    byBus.set(fn.address.bus, list);
  }
  // Every bus that holds a function gets windows (bhyve's businfo), BARs or not.
  for (const bus of [...byBus.keys()].sort((a, b) => a - b)) {
    const start = { io: alloc.ioBase, mem32: alloc.mem32Base, mem64: alloc.mem64Base };
    const bars: Array<{ fn: PciEmulFunction; idx: number; size: number }> = [];
    for (const fn of byBus.get(bus)!) for (const b of fn.declaredBars()) bars.push({ fn, idx: b.idx, size: b.size });
    // Array.prototype.sort is stable: equal sizes keep declaration order.
    bars.sort((a, b) => b.size - a.size);
    for (const b of bars) b.fn.assignBar(b.idx, alloc);
    alloc.closeBus(bus, start);
  }
}
