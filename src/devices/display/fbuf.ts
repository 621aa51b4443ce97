// bhyve's framebuffer device (pci_fbuf.c), on the device thread:
//   PCI 0xfb5d:0x40fb, class display / VGA, an MSI capability of 4 messages;
//   BAR 0 (32-bit memory, 128 bytes): the mode registers the UEFI GOP
//     driver of bhyve's firmware writes (fbsize, width, height, depth,
//     refresh rate), read back as written; width and height both 0 switch
//     to VGA mode, both non-zero back (pci_fbuf_write);
//   BAR 1 (32-bit memory, 32 MiB): the framebuffer itself, guest-visible
//     memory mapped wherever the BAR is decoded (pci_fbuf_baraddr), no
//     exits on access;
//   vga=io (default): the VGA register ports (vga.ts); vga=off: none;
//   vga=on: the VGA's registers, its memory window 0xA0000-0xBFFFF (left
//     out of guest RAM by the vmm: vgaWindowFor) and its screen drawn from
//     them while the guest shows the VGA (vga.ts, vga-render.ts). bhyve
//     itself stops at "VGA rendering not enabled" for vga=on.
// The pixels and the register block live in the framebuffer file
// (framebuffer-file.ts) that the VNC server on the main thread reads.

import type { Device, DeviceContext, MemoryMapControl } from '../device.js';
import type { PciDeviceModel } from '../pci-device.js';
import { ConfigError } from '../../config/tree.js';
import { PciEmulFunction } from '../pci/pci-emul.js';
import { DMEMSZ, FB_SIZE, HOST_BAR1_ADDR, HOST_MAP_GENERATION, HOST_SLOT, REG_DEPTH, REG_FBSIZE, REG_HEIGHT, REG_WIDTH, REGS_OFFSET, VGA_RAM_OFFSET, VGA_STATE_OFFSET } from './framebuffer-file.js';
import { parseFbufOptions } from './fbuf-options.js';
import { FLAG_RENDER, FLAG_VGAMODE, ST_FLAGS, Vga, VGA_MEM_BASE, VGA_MEM_SIZE, VGA_RAM_SIZE, VGA_STATE_SIZE } from './vga.js';
import { vgaInReset, vgaSize } from './vga-render.js';
import { loadVgaFont } from './vga-font.js';
import { ByteRing } from '../../vmm/byte-ring.js';
import { INPUT_KEY, INPUT_RECORD } from './display-input.js';

/** Where VNC input goes: the i8042's keyboard and PS/2 mouse (atkbdc.ts). */
export interface KeyboardSink {
  keyEvent(qnum: number, down: boolean): void;
  pointerEvent(buttons: number, x: number, y: number): void;
}

/** An absolute pointer (the xhci USB tablet): takes VNC pointer events in
 * place of the PS/2 mouse, with the screen size to scale them by. */
export interface PointerSink {
  pointerEvent(buttons: number, x: number, y: number, width: number, height: number): void;
}

export const FBUF_VENDOR = 0xfb5d;
export const FBUF_DEVICE = 0x40fb;
const PCIC_DISPLAY = 0x03;
const PCIS_DISPLAY_VGA = 0x00;
const PCI_FBUF_MSI_MSGS = 4;

export class Fbuf extends PciEmulFunction implements Device {
  /** The register block (BAR 0), shared with the VNC server. */
  readonly regs: DataView;
  readonly vga: Vga | undefined;
  private readonly memoryMap: MemoryMapControl;
  private mappedAt: number | undefined;
  /** Guest register writes and mode switches, for --get-stats. */
  readonly counters = { regWrites: 0, modeChanges: 0, mapFailures: 0 };
  private vgaModeNoVga = false;
  /** VGA memory writes reach us through KVM's coalesced MMIO ring. */
  vgaCoalesced = false;
  private readonly input: ByteRing | undefined;
  private keyboard: KeyboardSink | undefined;
  private pointer: PointerSink | undefined;
  private pointerScreen = { width: 0, height: 0 };
  keysDelivered = 0;
  pointerDelivered = 0;

  constructor(ctx: DeviceContext, node: string) {
    super('fbuf', ctx);
    const o = parseFbufOptions(ctx.config, node);
    if (!ctx.memoryMap) throw new Error('fbuf: no framebuffer memory (the VM was started without one)');
    this.memoryMap = ctx.memoryMap;
    const page = this.memoryMap.view({ kind: 'framebuffer', offset: REGS_OFFSET }, 4096);
    this.regs = new DataView(page.buffer, page.byteOffset, page.byteLength);
    this.cfg.setIdentity({ vendor: FBUF_VENDOR, device: FBUF_DEVICE, classCode: PCIC_DISPLAY, subclass: PCIS_DISPLAY_VGA });
    this.allocBar(0, 'mem32', DMEMSZ, {
      read: (off, size) => this.regRead(off, size),
      write: (off, size, value) => this.regWrite(off, size, value),
    });
    this.allocBar(1, 'mem32', FB_SIZE, {
      read: () => 0xffffffff, // never called: the BAR is memory
      write: () => undefined,
      map: (base) => this.mapFramebuffer(base),
      unmap: () => this.unmapFramebuffer(),
    });
    this.addMsiCap(PCI_FBUF_MSI_MSGS);
    // pci_fbuf_init: the defaults, then the configured size; pixels zeroed.
    for (let i = 0; i < DMEMSZ; i += 4) this.regs.setUint32(i, 0, true);
    this.regs.setUint32(REG_FBSIZE, FB_SIZE, true);
    this.regs.setUint16(REG_WIDTH, o.width, true);
    this.regs.setUint16(REG_HEIGHT, o.height, true);
    this.regs.setUint16(REG_DEPTH, 32, true);
    this.regs.setUint32(HOST_BAR1_ADDR, 0, true);
    this.regs.setUint32(HOST_SLOT, 0, true);
    if (o.vga === 'on') {
      const mm = this.memoryMap;
      this.vga = new Vga(ctx, mm.view({ kind: 'framebuffer', offset: VGA_STATE_OFFSET }, VGA_STATE_SIZE),
        mm.view({ kind: 'framebuffer', offset: VGA_RAM_OFFSET }, VGA_RAM_SIZE), loadVgaFont());
      ctx.io.registerMmio('vga-memory', VGA_MEM_BASE, VGA_MEM_SIZE, this.vga.memory);
      // As QEMU's VGA: writes queue in KVM's coalesced MMIO ring (no exit
      // per byte); reads and port accesses exit, and the ring is replayed
      // before them (sys/coalesced-mmio.ts), so the VGA sees every access in order.
      this.vgaCoalesced = ctx.kvm?.coalesce?.(VGA_MEM_BASE, VGA_MEM_SIZE, true) ?? false;
    } else if (o.vga === 'io') {
      this.vga = new Vga(ctx);
    }
    const t = ctx.hostPorts?.display(node);
    if (t?.kind === 'fbuf-input') this.input = ByteRing.from(t.input);
  }

  /** The guest shows the VGA, not the framebuffer (bhyve's gc_image->vgamode). */
  get vgaMode(): boolean { return this.vga ? this.vga.vgaMode : this.vgaModeNoVga; }
  set vgaMode(on: boolean) { if (this.vga) this.vga.vgaMode = on; else this.vgaModeNoVga = on; }

  /** Sends VNC key events to this keyboard (the platform's i8042). */
  attachKeyboard(k: KeyboardSink): void {
    this.keyboard = k;
  }

  /** Sends VNC pointer events to this absolute pointer instead of the PS/2 mouse. */
  attachPointer(p: PointerSink): void {
    this.pointer = p;
  }

  /** The screen VNC clients see, which pointer positions are relative to
   * (bhyve scales tablet positions by its console image): the VGA's while
   * vga=on shows it, else the mode set in BAR 0 (the last usable one). */
  private screenSize(): { width: number; height: number } {
    const st = this.vga?.state;
    if (st && (st[ST_FLAGS] & FLAG_RENDER) !== 0 && (st[ST_FLAGS] & FLAG_VGAMODE) !== 0) {
      return vgaInReset(st) ? { width: 640, height: 400 } : vgaSize(st);
    }
    const width = this.regs.getUint16(REG_WIDTH, true);
    const height = this.regs.getUint16(REG_HEIGHT, true);
    if (width > 0 && height > 0) this.pointerScreen = { width, height };
    return this.pointerScreen;
  }

  /** Input events from the VNC server (main thread), INPUT_RECORD bytes each. */
  poll(): void {
    if (!this.input) return;
    while (this.input.available() >= INPUT_RECORD) {
      const r = this.input.read(INPUT_RECORD);
      if (r[0] !== INPUT_KEY && this.pointer) {
        const { width, height } = this.screenSize();
        this.pointer.pointerEvent(r[1], r[2] | (r[3] << 8), r[4] | (r[5] << 8), width, height);
        this.pointerDelivered++;
        continue;
      }
      if (!this.keyboard) continue;
      if (r[0] === INPUT_KEY) { this.keyboard.keyEvent(r[2], r[1] === 1); this.keysDelivered++; }
      else { this.keyboard.pointerEvent(r[1], r[2] | (r[3] << 8), r[4] | (r[5] << 8)); this.pointerDelivered++; }
    }
  }

  private regRead(off: number, size: 1 | 2 | 4): number {
    if (off + size > DMEMSZ) return 0; // "fbuf: read too large"
    return size === 1 ? this.regs.getUint8(off) : size === 2 ? this.regs.getUint16(off, true) : this.regs.getUint32(off, true);
  }

  private regWrite(off: number, size: 1 | 2 | 4, value: number): void {
    if (off + size > DMEMSZ) return; // "fbuf: write too large"
    const w0 = this.regs.getUint16(REG_WIDTH, true);
    const h0 = this.regs.getUint16(REG_HEIGHT, true);
    if (size === 1) this.regs.setUint8(off, value);
    else if (size === 2) this.regs.setUint16(off, value, true);
    else this.regs.setUint32(off, value, true);
    this.counters.regWrites++;
    const w = this.regs.getUint16(REG_WIDTH, true);
    const h = this.regs.getUint16(REG_HEIGHT, true);
    if (w !== w0 || h !== h0) this.counters.modeChanges++;
    if (!this.vgaMode && w === 0 && h === 0) this.vgaMode = true;
    else if (this.vgaMode && w !== 0 && h !== 0) this.vgaMode = false;
  }

  private mapFramebuffer(base: number): void {
    try {
      this.memoryMap.map(base, FB_SIZE, { kind: 'framebuffer', offset: 0 }, false, true);
      this.mappedAt = base;
      this.regs.setUint32(HOST_BAR1_ADDR, base, true);
      const slot = this.memoryMap.slotAt?.(base);
      this.regs.setUint32(HOST_MAP_GENERATION, (this.regs.getUint32(HOST_MAP_GENERATION, true) + 1) >>> 0, true);
      this.regs.setUint32(HOST_SLOT, slot === undefined ? 0 : slot + 1, true);
    } catch {
      // The guest put the BAR over something else: it decodes nothing
      // there, as a BAR the io registrar refuses (pci-emul.ts).
      this.counters.mapFailures++;
    }
  }

  private unmapFramebuffer(): void {
    if (this.mappedAt === undefined) return;
    this.regs.setUint32(HOST_SLOT, 0, true);
    this.memoryMap.unmap(this.mappedAt);
    this.mappedAt = undefined;
    this.regs.setUint32(HOST_BAR1_ADDR, 0, true);
  }

  stats(): Record<string, number> {
    return {
      width: this.regs.getUint16(REG_WIDTH, true),
      height: this.regs.getUint16(REG_HEIGHT, true),
      depth: this.regs.getUint16(REG_DEPTH, true),
      'framebuffer address': this.mappedAt ?? 0,
      'register writes': this.counters.regWrites,
      'mode changes': this.counters.modeChanges,
      'framebuffer map failures': this.counters.mapFailures,
      'keys delivered': this.keysDelivered,
      'pointer events delivered': this.pointerDelivered,
      'VGA shown': this.vgaMode ? 1 : 0,
      ...(this.vga?.ram ? {
        'VGA port writes': this.vga.counters.portWrites,
        'VGA memory reads': this.vga.counters.memoryReads,
        'VGA memory writes': this.vga.counters.memoryWrites,
        'VGA memory writes coalesced by KVM': this.vgaCoalesced ? 1 : 0,
      } : {}),
    };
  }
}

/** The emulation of its record (fbuf-record.ts). */
export const fbufModel: PciDeviceModel = {
  create: (ctx, s, chipset) => {
    if (chipset.bus.functions().some((f) => f instanceof Fbuf)) throw new ConfigError('Only one frame buffer device is allowed.');
    return new Fbuf(ctx, s.node);
  },
};
