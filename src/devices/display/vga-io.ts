// The legacy VGA register ports 0x3c0-0x3df that fbuf's vga=io (the
// default) decodes, as bhyve's vga_init(io_only) does: guests and
// firmware that probe or program VGA registers find a VGA, nothing is
// rendered from them. Semantics of bhyve's vga.c port handlers:
//   0x3c0/0x3c1  attribute controller (index/data flip-flop, reset by a
//                read of 0x3da)
//   0x3c2        write: miscellaneous output; read: input status 0
//   0x3c4/0x3c5  sequencer index/data
//   0x3c6-0x3c9  DAC: pixel mask, read index (0x3c7 reads the DAC state),
//                write index, data (R, G, B in turn, 6 bits each)
//   0x3ca, 0x3cc feature control and miscellaneous output, read back
//   0x3ce/0x3cf  graphics controller index/data
//   0x3d4/0x3d5  CRT controller index/data (registers 0-7 write protected
//                while CRTC 0x11 bit 7 is set)
//   0x3da        read: input status 1 (display enable and vertical
//                retrace toggle on each read); write: feature control
// Unlike vga.c, an unknown register index or port never stops the VM:
// writes land in the register file or are dropped, reads of unknown ports
// return 0xff. 16-bit accesses are two 8-bit ones (vga_port_handler).

import type { AccessSize, DeviceContext } from '../device.js';

export const VGA_IOPORT_START = 0x3c0;
export const VGA_IOPORT_END = 0x3df;

const CRTC_VRE = 0x11;
const CRTC_VRE_PROTECT = 0x80;

export class VgaIo {
  misc = 0;
  featureControl = 0;
  readonly seq = new Uint8Array(8);
  seqIndex = 0;
  readonly gc = new Uint8Array(16);
  gcIndex = 0;
  readonly crtc = new Uint8Array(32);
  crtcIndex = 0;
  readonly attr = new Uint8Array(32);
  attrIndex = 0;
  private attrFlipFlop = false;
  readonly palette = new Uint8Array(256 * 3);
  dacMask = 0xff;
  private dacReadIndex = 0;
  private dacWriteIndex = 0;
  private dacReading = false;
  private retrace = false;

  constructor(ctx: Pick<DeviceContext, 'io'>) {
    ctx.io.registerPorts('vga', VGA_IOPORT_START, VGA_IOPORT_END - VGA_IOPORT_START + 1, {
      read: (port, size) => this.access(port, size, undefined),
      write: (port, size, value) => { this.access(port, size, value); },
    });
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
      case 0x3c1: return this.attr[this.attrIndex & 0x1f];
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
      case 0x3cc: return this.misc;
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
    switch (port) {
      case 0x3c0:
        if (!this.attrFlipFlop) this.attrIndex = v & 0x3f;
        else this.attr[this.attrIndex & 0x1f] = v;
        this.attrFlipFlop = !this.attrFlipFlop;
        break;
      case 0x3c2: this.misc = v; break;
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
      case 0x3cf: this.gc[this.gcIndex & 0xf] = v; break;
      case 0x3d4: this.crtcIndex = v; break;
      case 0x3d5: {
        const i = this.crtcIndex & 0x1f;
        if (i <= 7 && (this.crtc[CRTC_VRE] & CRTC_VRE_PROTECT)) break;
        this.crtc[i] = v;
        break;
      }
      case 0x3da: this.featureControl = v; break;
      default: break;
    }
  }
}
