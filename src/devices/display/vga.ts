// bhyve's legacy VGA (amd64/vga.c) behind fbuf's vga= option:
//   vga=io   (the default) the register ports 0x3c0-0x3df, nothing rendered
//   vga=on   also the memory window 0xA0000-0xBFFFF (256 KiB in four
//            planes: latches, read modes 0/1, write modes 0-3 with rotate,
//            set/reset, logical operation and bit mask, odd/even) and the
//            screen drawn from it (vga-render.ts): text modes with the font
//            in plane 2, the cursor and the attribute and DAC colours, and
//            16-colour planar graphics, as vga_render() does
//   vga=off  none of it
// Port semantics of vga.c's handlers:
//   0x3c0/0x3c1  attribute controller (index/data flip-flop, reset by a
//                read of 0x3da)
//   0x3c2        write: miscellaneous output; read: input status 0
//   0x3c4/0x3c5  sequencer index/data
//   0x3c6-0x3c9  DAC: pixel mask, read index (0x3c7 reads the DAC state),
//                write index, data (R, G, B in turn, 6 bits each)
//   0x3ca, 0x3cc feature control and miscellaneous output, read back
//   0x3ce/0x3cf  graphics controller index/data (a write of the mode
//                register switches the display to VGA, as in vga.c)
//   0x3d4/0x3d5  CRT controller index/data (registers 0-7 write protected
//                while CRTC 0x11 bit 7 is set)
//   0x3da        read: input status 1 (display enable and vertical
//                retrace toggle on each read); write: feature control
// Unlike vga.c, an unknown register index, port or memory map never stops
// the VM (vga.c asserts): writes land in the register file or are dropped,
// reads of unknown ports return 0xff, and an access outside the window the
// graphics controller selects reads 0xff and writes nothing, as on a VGA.
// 16-bit port accesses are two 8-bit ones (vga_port_handler).
//
// The registers live in a state page and the planes in a 256 KiB block of
// the framebuffer file (framebuffer-file.ts), so the VNC server on the
// main thread and bhyvectl --screenshot draw the screen from them (bhyve's
// rfb thread calls vga_render the same way).
//
// Beyond bhyve: bhyve has no VGA BIOS of its own and starts with every
// register 0 (the sequencer in reset: a black screen until a VGA BIOS
// programs it). With vga=on we start as a VGA BIOS leaves the card after
// setting text mode 3 (80x25, 9x16 cells, the standard register values,
// the EGA colours in the DAC and the 8x16 font of vga-font.ts in plane 2),
// so a guest writing characters to 0xB8000 is seen at once.

import type { AccessSize, DeviceContext, MmioHandler } from '../device.js';

export const VGA_IOPORT_START = 0x3c0;
export const VGA_IOPORT_END = 0x3df;
export const VGA_MEM_BASE = 0xa0000;
export const VGA_MEM_SIZE = 0x20000;
export const VGA_PLANE = 64 * 1024;
export const VGA_RAM_SIZE = 4 * VGA_PLANE;
export const VGA_STATE_SIZE = 4096;

/** Offsets in the state page. */
export const ST_SEQ = 0x00; // 8 sequencer registers
export const ST_GC = 0x10; // 16 graphics controller registers
export const ST_CRTC = 0x20; // 32 CRT controller registers
export const ST_ATC = 0x40; // 32 attribute controller registers
export const ST_MISC = 0x60;
export const ST_FLAGS = 0x61; // FLAG_*
export const ST_GENERATION = 0x64; // u32, bumped by every change the screen may show
export const ST_PALETTE = 0x100; // 256 x (R, G, B), 6 bits each
export const FLAG_VGAMODE = 1; // the screen shows the VGA, not the framebuffer (bhyve's gc_image->vgamode)
export const FLAG_RENDER = 2; // vga=on: the VGA is drawn

const CRTC_VRE = 0x11;
const CRTC_VRE_PROTECT = 0x80;
const GC_MODE = 5;
const GC_MISC = 6;

/** Text mode 3 as a VGA BIOS sets it (IBM VGA register values). */
const MODE3 = {
  misc: 0x67,
  seq: [0x03, 0x00, 0x03, 0x00, 0x02],
  crtc: [0x5f, 0x4f, 0x50, 0x82, 0x55, 0x81, 0xbf, 0x1f, 0x00, 0x4f, 0x0d, 0x0e, 0x00, 0x00, 0x00, 0x00,
    0x9c, 0x8e, 0x8f, 0x28, 0x1f, 0x96, 0xb9, 0xa3, 0xff],
  gc: [0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x0e, 0x00, 0xff],
  atc: [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f,
    0x0c, 0x00, 0x0f, 0x08, 0x00],
};

/** The EGA's 64 colours (bits r g b R G B: 2/3 and 1/3 intensity), 6 bits per gun. */
export function egaColor(i: number): [number, number, number] {
  const gun = (hi: number, lo: number): number => ((i >> hi) & 1) * 0x2a + ((i >> lo) & 1) * 0x15;
  return [gun(2, 5), gun(1, 4), gun(0, 3)];
}

export class Vga {
  readonly state: Uint8Array;
  readonly stateView: DataView;
  readonly seq: Uint8Array;
  readonly gc: Uint8Array;
  readonly crtc: Uint8Array;
  readonly atc: Uint8Array;
  readonly palette: Uint8Array;
  seqIndex = 0;
  gcIndex = 0;
  crtcIndex = 0;
  attrIndex = 0;
  featureControl = 0;
  private attrFlipFlop = false;
  dacMask = 0xff;
  private dacReadIndex = 0;
  private dacWriteIndex = 0;
  private dacReading = false;
  private retrace = false;
  private readonly latch = new Uint8Array(4);
  readonly counters = { portWrites: 0, memoryReads: 0, memoryWrites: 0 };

  /**
   * `state` (VGA_STATE_SIZE bytes) and, for vga=on, `ram` (VGA_RAM_SIZE
   * bytes) are views of the framebuffer file; without them (unit tests of
   * vga=io) private buffers are used. `font` (plane 2 image) with `ram`
   * starts the card in text mode 3.
   */
  constructor(ctx: Pick<DeviceContext, 'io'>, state?: Uint8Array, readonly ram?: Uint8Array, font?: Uint8Array) {
    this.state = state ?? new Uint8Array(VGA_STATE_SIZE);
    this.stateView = new DataView(this.state.buffer, this.state.byteOffset, this.state.byteLength);
    this.seq = this.state.subarray(ST_SEQ, ST_SEQ + 8);
    this.gc = this.state.subarray(ST_GC, ST_GC + 16);
    this.crtc = this.state.subarray(ST_CRTC, ST_CRTC + 32);
    this.atc = this.state.subarray(ST_ATC, ST_ATC + 32);
    this.palette = this.state.subarray(ST_PALETTE, ST_PALETTE + 768);
    this.state.fill(0);
    if (ram) {
      ram.fill(0);
      this.state[ST_FLAGS] = FLAG_RENDER | FLAG_VGAMODE;
      this.setMode3(font);
    }
    ctx.io.registerPorts('vga', VGA_IOPORT_START, VGA_IOPORT_END - VGA_IOPORT_START + 1, {
      read: (port, size) => this.access(port, size, undefined),
      write: (port, size, value) => { this.access(port, size, value); },
    });
  }

  private setMode3(font?: Uint8Array): void {
    this.state[ST_MISC] = MODE3.misc;
    this.seq.set(MODE3.seq);
    this.crtc.set(MODE3.crtc);
    this.gc.set(MODE3.gc);
    this.atc.set(MODE3.atc);
    for (let i = 0; i < 64; i++) this.palette.set(egaColor(i), 3 * i);
    if (font && this.ram) this.ram.set(font.subarray(0, VGA_PLANE), 2 * VGA_PLANE);
  }

  get vgaMode(): boolean { return (this.state[ST_FLAGS] & FLAG_VGAMODE) !== 0; }
  set vgaMode(on: boolean) {
    this.state[ST_FLAGS] = on ? this.state[ST_FLAGS] | FLAG_VGAMODE : this.state[ST_FLAGS] & ~FLAG_VGAMODE;
    this.changed();
  }

  private changed(): void {
    this.stateView.setUint32(ST_GENERATION, (this.stateView.getUint32(ST_GENERATION, true) + 1) >>> 0, true);
  }

  private access(port: number, size: AccessSize, value: number | undefined): number {
    let r = 0;
    for (let i = 0; i < size; i++) {
      if (value === undefined) r |= this.in(port + i) << (8 * i);
      else this.out(port + i, (value >>> (8 * i)) & 0xff);
    }
    return r >>> 0;
  }

  in(port: number): number {
    switch (port) {
      case 0x3c0: return this.attrIndex;
      case 0x3c1: return this.atc[this.attrIndex & 0x1f];
      case 0x3c2: return 0; // input status 0
      case 0x3c4: return this.seqIndex;
      case 0x3c5: return this.seq[this.seqIndex & 7];
      case 0x3c6: return this.dacMask;
      case 0x3c7: return this.dacReading ? 3 : 0;
      case 0x3c8: return this.dacWriteIndex / 3 | 0;
      case 0x3c9: {
        const v = this.palette[this.dacReadIndex];
        this.dacReadIndex = (this.dacReadIndex + 1) % this.palette.length;
        return v;
      }
      case 0x3ca: return this.featureControl;
      case 0x3cc: return this.state[ST_MISC];
      case 0x3ce: return this.gcIndex;
      case 0x3cf: return this.gc[this.gcIndex & 0xf];
      case 0x3d4: return this.crtcIndex;
      case 0x3d5: return this.crtc[this.crtcIndex & 0x1f];
      case 0x3da:
        this.attrFlipFlop = false;
        this.retrace = !this.retrace;
        return this.retrace ? 0x09 : 0x00;
      default: return 0xff;
    }
  }

  out(port: number, v: number): void {
    this.counters.portWrites++;
    switch (port) {
      case 0x3c0:
        if (!this.attrFlipFlop) this.attrIndex = v & 0x3f;
        else this.atc[this.attrIndex & 0x1f] = v;
        this.attrFlipFlop = !this.attrFlipFlop;
        break;
      case 0x3c2: this.state[ST_MISC] = v; break;
      case 0x3c4: this.seqIndex = v; break;
      case 0x3c5: this.seq[this.seqIndex & 7] = v; break;
      case 0x3c6: this.dacMask = v; break;
      case 0x3c7: this.dacReadIndex = v * 3; this.dacReading = true; break;
      case 0x3c8: this.dacWriteIndex = v * 3; this.dacReading = false; break;
      case 0x3c9:
        this.palette[this.dacWriteIndex] = v & 0x3f;
        this.dacWriteIndex = (this.dacWriteIndex + 1) % this.palette.length;
        break;
      case 0x3ce: this.gcIndex = v; break;
      case 0x3cf:
        this.gc[this.gcIndex & 0xf] = v;
        if ((this.gcIndex & 0xf) === GC_MODE) this.state[ST_FLAGS] |= FLAG_VGAMODE; // vga.c: gc_image->vgamode = 1
        break;
      case 0x3d4: this.crtcIndex = v; break;
      case 0x3d5: {
        const i = this.crtcIndex & 0x1f;
        if (i <= 7 && (this.crtc[CRTC_VRE] & CRTC_VRE_PROTECT)) break;
        this.crtc[i] = v;
        break;
      }
      case 0x3da: this.featureControl = v; break;
      default: return;
    }
    this.changed();
  }

  /** The memory window's handler (vga=on), 1-8 bytes per access, byte by byte as vga_mem_handler. */
  readonly memory: MmioHandler = {
    read: (addr, data) => { for (let i = 0; i < data.length; i++) data[i] = this.memRead(addr + i); },
    write: (addr, data) => { for (let i = 0; i < data.length; i++) this.memWrite(addr + i, data[i]); this.changed(); },
  };

  /** Offset of `addr` in the window the graphics controller maps, or -1 outside it. */
  private windowOffset(addr: number): number {
    switch ((this.gc[GC_MISC] >> 2) & 3) {
      case 0: return addr >= 0xa0000 && addr < 0xc0000 ? (addr - 0xa0000) & 0xffff : -1;
      case 1: return addr >= 0xa0000 && addr < 0xb0000 ? addr - 0xa0000 : -1;
      case 2: return addr >= 0xb0000 && addr < 0xb8000 ? addr - 0xb0000 : -1;
      default: return addr >= 0xb8000 && addr < 0xc0000 ? addr - 0xb8000 : -1;
    }
  }

  memRead(addr: number): number {
    const ram = this.ram;
    let off = this.windowOffset(addr);
    if (!ram || off < 0) return 0xff;
    this.counters.memoryReads++;
    for (let p = 0; p < 4; p++) this.latch[p] = ram[p * VGA_PLANE + off];
    const mode = this.gc[GC_MODE];
    if (mode & 0x08) {
      // Read mode 1: a bit is set where every plane the colour don't care
      // register selects matches the colour compare register.
      const cmp = this.gc[2];
      const care = this.gc[7];
      let r = 0xff;
      for (let p = 0; p < 4; p++) {
        if (!((care >> p) & 1)) continue;
        r &= ~(this.latch[p] ^ ((cmp >> p) & 1 ? 0xff : 0));
      }
      return r & 0xff;
    }
    let plane = this.gc[4] & 3;
    if (mode & 0x10) { plane = (plane & 2) | (off & 1); off &= ~1; } // odd/even
    return ram[plane * VGA_PLANE + off];
  }

  memWrite(addr: number, val: number): void {
    const ram = this.ram;
    let off = this.windowOffset(addr);
    if (!ram || off < 0) return;
    this.counters.memoryWrites++;
    const gc = this.gc;
    const mode = gc[GC_MODE] & 3;
    const rot = gc[3] & 7;
    const op = (gc[3] >> 3) & 3;
    const setReset = gc[0];
    const enableSr = gc[1];
    const rotated = ((val >> rot) | (val << (8 - rot))) & 0xff;
    let mask = gc[8];
    if (mode === 3) mask &= rotated;
    const out = [0, 0, 0, 0];
    for (let p = 0; p < 4; p++) {
      const latch = this.latch[p];
      if (mode === 1) { out[p] = latch; continue; }
      let d: number;
      if (mode === 0) d = (enableSr >> p) & 1 ? ((setReset >> p) & 1 ? 0xff : 0) : rotated;
      else if (mode === 2) d = (val >> p) & 1 ? 0xff : 0;
      else d = (setReset >> p) & 1 ? 0xff : 0;
      if (op === 1) d &= latch;
      else if (op === 2) d |= latch;
      else if (op === 3) d ^= latch;
      out[p] = (d & mask) | (latch & ~mask & 0xff);
    }
    const planes = this.seq[2];
    if (gc[GC_MODE] & 0x10) {
      // Odd/even: even addresses reach planes 0 and 2, odd ones 1 and 3.
      const odd = off & 1;
      off &= ~1;
      for (let p = odd; p < 4; p += 2) if ((planes >> p) & 1) ram[p * VGA_PLANE + off] = out[p];
    } else {
      for (let p = 0; p < 4; p++) if ((planes >> p) & 1) ram[p * VGA_PLANE + off] = out[p];
    }
  }
}
