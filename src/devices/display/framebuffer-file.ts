// The framebuffer's host memory: a file in the VM's directory that the
// main thread (VNC server), the device thread (which maps it into the
// guest at BAR 1) and bhyvectl (--screenshot, --get-stats) each map. It is
// bhyve's VM_FRAMEBUFFER devmem segment, plus one page after the pixels
// holding the device's register block (BAR 0, pci_fbuf.c's memregs), so
// every reader sees the mode the guest set without a message between
// threads or processes.
//
//   [0, FB_SIZE)                 pixels, 32 bits each (B, G, R, X), stride width*4
//   FB_SIZE + 0   u32 fbsize     \
//   FB_SIZE + 4   u16 width       |  pci_fbuf.c's memregs (DMEMSZ = 128 bytes),
//   FB_SIZE + 6   u16 height      |  what the guest reads and writes at BAR 0
//   FB_SIZE + 8   u16 depth       |
//   FB_SIZE + 10  u16 refreshrate/
//   FB_SIZE + 128 u32 BAR 1 address while mapped, else 0 (for --get-stats)
//   FB_SIZE + 132 u32 KVM memory slot of that mapping + 1 (0: none), whose
//                     dirty log tells the VNC server which pages changed
//   FB_SIZE + 136 u32 mapping generation, bumped on every map (a new log)
//   FB_SIZE + 4096               the VGA's registers (vga.ts' state page)
//   FB_SIZE + 8192               the VGA's memory, four planes of 64 KiB
// With vga=on and the VGA shown (bhyve's vgamode), readers draw the screen
// from the VGA (vga-render.ts) into a buffer of their own; the guest's
// framebuffer is left as it is.

import fs from 'node:fs';
import path from 'node:path';
import { mmap, PROT_READ, PROT_WRITE, type Mapping } from '../../sys/libc.js';
import { COLS_MAX, ROWS_MAX } from './fbuf-options.js';
import type { Screen } from './rfb-pixels.js';
import { FLAG_RENDER, FLAG_VGAMODE, ST_FLAGS, ST_GENERATION, VGA_RAM_SIZE, VGA_STATE_SIZE } from './vga.js';
import { renderVga, type VgaSize } from './vga-render.js';

const MB = 1024 * 1024;
/** pci_fbuf.c's FB_SIZE: room for 3840x2160 at 32 bits. */
export const FB_SIZE = 32 * MB;
/** pci_fbuf.c's DMEMSZ, the register BAR. */
export const DMEMSZ = 128;
export const REGS_OFFSET = FB_SIZE;
export const VGA_STATE_OFFSET = FB_SIZE + 4096;
export const VGA_RAM_OFFSET = FB_SIZE + 8192;
export const FILE_SIZE = VGA_RAM_OFFSET + VGA_RAM_SIZE;

export const REG_FBSIZE = 0;
export const REG_WIDTH = 4;
export const REG_HEIGHT = 6;
export const REG_DEPTH = 8;
export const REG_REFRESH = 10;
export const HOST_BAR1_ADDR = 128;
export const HOST_SLOT = 132;
export const HOST_MAP_GENERATION = 136;

export function framebufferPath(vmDir: string): string {
  return path.join(vmDir, 'framebuffer');
}

/** Creates (or empties) the file: zero pixels, as pci_fbuf_init's memset. */
export function createFramebufferFile(file: string): void {
  const fd = fs.openSync(file, 'w', 0o600);
  try {
    fs.ftruncateSync(fd, FILE_SIZE);
  } finally {
    fs.closeSync(fd);
  }
}

/** A mapping of the file with typed access to the registers. */
export class FramebufferView {
  readonly pixels: Uint8Array;
  readonly regs: DataView;
  readonly vgaState: Uint8Array;
  readonly vgaRam: Uint8Array;
  private lastGood = { width: 0, height: 0 };
  private vgaPixels = new Uint8Array(0);
  private vgaDrawn: { generation: number; size: VgaSize } | undefined;

  private constructor(private readonly map: Mapping) {
    this.pixels = map.bytes.subarray(0, FB_SIZE);
    this.regs = new DataView(map.bytes.buffer, map.bytes.byteOffset + REGS_OFFSET, 4096);
    this.vgaState = map.bytes.subarray(VGA_STATE_OFFSET, VGA_STATE_OFFSET + VGA_STATE_SIZE);
    this.vgaRam = map.bytes.subarray(VGA_RAM_OFFSET, VGA_RAM_OFFSET + VGA_RAM_SIZE);
  }

  /** The VGA generation the last screen() drew, undefined when it showed the framebuffer. */
  get drawnVgaGeneration(): number | undefined { return this.vgaDrawn?.generation; }

  /** vga=on and the guest's screen is the VGA (bhyve's vgamode). */
  get showsVga(): boolean {
    const f = this.vgaState[ST_FLAGS];
    return (f & FLAG_RENDER) !== 0 && (f & FLAG_VGAMODE) !== 0;
  }

  /** The VGA's screen, drawn again only when the VGA changed since the last call. */
  private vgaScreen(): Screen {
    const generation = new DataView(this.vgaState.buffer, this.vgaState.byteOffset).getUint32(ST_GENERATION, true);
    if (!this.vgaDrawn || this.vgaDrawn.generation !== generation) {
      const want = 2304 * 1024 * 4; // the largest VGA screen (256 9-dot characters by 1024 lines)
      if (this.vgaPixels.length < want) this.vgaPixels = new Uint8Array(want);
      const out = new Uint32Array(this.vgaPixels.buffer, 0, want / 4);
      this.vgaDrawn = { generation, size: renderVga(this.vgaState, this.vgaRam, out, this.vgaDrawn?.size) };
    }
    const { width, height } = this.vgaDrawn.size;
    return { width, height, pixels: this.vgaPixels.subarray(0, width * height * 4) };
  }

  static open(file: string, writable: boolean): FramebufferView {
    const fd = fs.openSync(file, writable ? 'r+' : 'r');
    try {
      const size = fs.fstatSync(fd).size;
      if (size !== FILE_SIZE) throw new Error(`${file} is not a framebuffer file (${size} bytes)`);
      return new FramebufferView(mmap(FILE_SIZE, PROT_READ | (writable ? PROT_WRITE : 0), fd, 0, file));
    } finally {
      fs.closeSync(fd);
    }
  }

  get width(): number { return this.regs.getUint16(REG_WIDTH, true); }
  get height(): number { return this.regs.getUint16(REG_HEIGHT, true); }
  get depth(): number { return this.regs.getUint16(REG_DEPTH, true); }
  get bar1(): number { return this.regs.getUint32(HOST_BAR1_ADDR, true); }
  /** The KVM slot the framebuffer is mapped with (dirty-logged), if any. */
  get slot(): number | undefined { const v = this.regs.getUint32(HOST_SLOT, true); return v === 0 ? undefined : v - 1; }
  /** Changes whenever the framebuffer is mapped anew (its dirty log restarts). */
  get mapGeneration(): number { return this.regs.getUint32(HOST_MAP_GENERATION, true); }

  /**
   * The screen the guest set up. Like bhyve's console, 32 bits per pixel
   * whatever `depth` says; a mode the memory cannot hold, or width/height 0
   * (bhyve's switch to VGA mode, which vga=io does not render), keeps the
   * last good size.
   */
  screen(): Screen {
    if (this.showsVga) return this.vgaScreen();
    this.vgaDrawn = undefined;
    const w = this.width;
    const h = this.height;
    if (w > 0 && h > 0 && w <= COLS_MAX && h <= ROWS_MAX && w * h * 4 <= FB_SIZE) this.lastGood = { width: w, height: h };
    const { width, height } = this.lastGood;
    return { width, height, pixels: this.pixels.subarray(0, width * height * 4) };
  }

  close(): void {
    this.map.unmap();
  }
}
