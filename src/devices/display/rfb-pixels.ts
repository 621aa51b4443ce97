// Screen contents for the RFB server: the guest framebuffer as 32-bit
// pixels B,G,R,X in memory (bhyve's fbuf and its UEFI GOP format, which is
// also the RFB server's native pixel format), the dirty-tile scan shared by
// every client, and conversion to a client's pixel format.

/** A frame: `pixels` holds width*height 32-bit B,G,R,X pixels, row after row. */
export interface Screen {
  width: number;
  height: number;
  pixels: Uint8Array;
}

/** The tile edge of the dirty scan (bhyve's rfb.c uses 32x32 cells too). */
export const TILE = 32;

export interface PixelFormat {
  bpp: 8 | 16 | 32;
  depth: number;
  bigEndian: boolean;
  trueColor: boolean;
  redMax: number;
  greenMax: number;
  blueMax: number;
  redShift: number;
  greenShift: number;
  blueShift: number;
}

/** The server's pixel format (ServerInit): 32 bpp, depth 24, little endian. */
export const NATIVE_FORMAT: PixelFormat = {
  bpp: 32, depth: 24, bigEndian: false, trueColor: true,
  redMax: 255, greenMax: 255, blueMax: 255, redShift: 16, greenShift: 8, blueShift: 0,
};

export function encodePixelFormat(f: PixelFormat): Buffer {
  const b = Buffer.alloc(16);
  b[0] = f.bpp; b[1] = f.depth; b[2] = f.bigEndian ? 1 : 0; b[3] = f.trueColor ? 1 : 0;
  b.writeUInt16BE(f.redMax, 4); b.writeUInt16BE(f.greenMax, 6); b.writeUInt16BE(f.blueMax, 8);
  b[10] = f.redShift; b[11] = f.greenShift; b[12] = f.blueShift;
  return b;
}

/** Parses a PIXEL_FORMAT; undefined for one this server cannot produce. */
export function decodePixelFormat(b: Buffer): PixelFormat | undefined {
  const bpp = b[0];
  if (bpp !== 8 && bpp !== 16 && bpp !== 32) return undefined;
  const f: PixelFormat = {
    bpp, depth: b[1], bigEndian: b[2] !== 0, trueColor: b[3] !== 0,
    redMax: b.readUInt16BE(4), greenMax: b.readUInt16BE(6), blueMax: b.readUInt16BE(8),
    redShift: b[10], greenShift: b[11], blueShift: b[12],
  };
  // Colour maps (trueColor 0) would need SetColourMapEntries; no client
  // of this century asks for one.
  if (!f.trueColor) return undefined;
  for (const s of [f.redShift, f.greenShift, f.blueShift]) if (s >= bpp) return undefined;
  return f;
}

export function isNative(f: PixelFormat): boolean {
  return f.bpp === 32 && !f.bigEndian && f.redMax === 255 && f.greenMax === 255 && f.blueMax === 255
    && f.redShift === 16 && f.greenShift === 8 && f.blueShift === 0;
}

/** The rectangle's pixels in format `f`, rows packed. */
export function rectPixels(s: Screen, x: number, y: number, w: number, h: number, f: PixelFormat): Buffer {
  const stride = s.width * 4;
  if (isNative(f)) {
    const out = Buffer.allocUnsafe(w * h * 4);
    for (let r = 0; r < h; r++) {
      const src = (y + r) * stride + x * 4;
      out.set(s.pixels.subarray(src, src + w * 4), r * w * 4);
    }
    return out;
  }
  const bytes = f.bpp / 8;
  const out = Buffer.alloc(w * h * bytes);
  let o = 0;
  for (let r = 0; r < h; r++) {
    let p = (y + r) * stride + x * 4;
    for (let c = 0; c < w; c++, p += 4) {
      const v = ((Math.round(s.pixels[p + 2] * f.redMax / 255) << f.redShift)
        | (Math.round(s.pixels[p + 1] * f.greenMax / 255) << f.greenShift)
        | (Math.round(s.pixels[p] * f.blueMax / 255) << f.blueShift)) >>> 0;
      if (bytes === 1) out[o] = v;
      else if (bytes === 2) { if (f.bigEndian) out.writeUInt16BE(v & 0xffff, o); else out.writeUInt16LE(v & 0xffff, o); }
      else if (f.bigEndian) out.writeUInt32BE(v, o); else out.writeUInt32LE(v, o);
      o += bytes;
    }
  }
  return out;
}

/**
 * Finds the tiles that changed since the last scan by comparing the frame
 * with a private copy of it: band by band (32 rows, one row of tiles),
 * then row by row within a band that changed, then tile by tile within a
 * row that did. An unchanged screen costs one memcmp per band (24 for
 * 1024x768) and sends nothing. With KVM's dirty log of the framebuffer
 * (a bit per 4 KiB page the guest wrote since the last scan), bands whose
 * pages nobody wrote are not even compared: an idle screen costs one ioctl.
 */
export class DirtyScanner {
  private shadow = Buffer.alloc(0);
  private width = 0;
  private height = 0;
  /** Bands compared with the copy, and bands the dirty log let pass. */
  readonly counts = { compared: 0, skipped: 0 };

  get cols(): number { return Math.ceil(this.width / TILE); }
  get rows(): number { return Math.ceil(this.height / TILE); }

  /** Tiles that differ from the previous scan, as a bitmap (cols x rows);
   * every tile after a size change. */
  scan(s: Screen, dirtyPages?: Uint8Array): Uint8Array {
    const size = s.width * s.height * 4;
    if (s.width !== this.width || s.height !== this.height) {
      this.width = s.width;
      this.height = s.height;
      this.shadow = Buffer.alloc(size); // never from the pool: word aligned
      this.shadow.set(s.pixels.subarray(0, size));
      return new Uint8Array(this.cols * this.rows).fill(1);
    }
    const cols = this.cols;
    const dirty = new Uint8Array(cols * this.rows);
    const stride = s.width * 4;
    const px = Buffer.from(s.pixels.buffer, s.pixels.byteOffset, size);
    const cur32 = words(s.pixels, size);
    const old32 = words(this.shadow, size);
    for (let band = 0; band < this.rows; band++) {
      // A band of TILE rows that did not change costs one comparison.
      const y0 = band * TILE;
      const y1 = Math.min(s.height, y0 + TILE);
      if (dirtyPages && !anyPage(dirtyPages, y0 * stride, y1 * stride)) { this.counts.skipped++; continue; }
      this.counts.compared++;
      if (px.subarray(y0 * stride, y1 * stride).equals(this.shadow.subarray(y0 * stride, y1 * stride))) continue;
      const base = band * cols;
      for (let y = y0; y < y1; y++) {
        const off = y * stride;
        const row = px.subarray(off, off + stride);
        const old = this.shadow.subarray(off, off + stride);
        if (row.equals(old)) continue;
        // Which tiles of this row differ: word by word, stopping at the
        // first difference (a native compare per tile costs more in calls).
        const w0 = off >> 2;
        for (let t = 0; t < cols; t++) {
          if (dirty[base + t] !== 0) continue;
          const end = w0 + Math.min(s.width, (t + 1) * TILE);
          for (let w = w0 + t * TILE; w < end; w++) {
            if (cur32[w] !== old32[w]) { dirty[base + t] = 1; break; }
          }
        }
        old.set(row);
      }
    }
    return dirty;
  }
}

const PAGE_SHIFT = 12;

/** True when a page of bytes [start, end) has its bit set in `bitmap`. */
function anyPage(bitmap: Uint8Array, start: number, end: number): boolean {
  for (let p = start >> PAGE_SHIFT; p <= (end - 1) >> PAGE_SHIFT; p++) {
    if (bitmap[p >> 3] & (1 << (p & 7))) return true;
  }
  return false;
}

/** 32-bit words over the first `size` bytes (copied when not aligned). */
function words(b: Uint8Array, size: number): Uint32Array {
  if (b.byteOffset % 4 === 0) return new Uint32Array(b.buffer, b.byteOffset, size >> 2);
  return new Uint32Array(b.slice(0, size).buffer);
}
