// One RFB client connection: the protocol state machine of RFC 6143 (RFB
// 3.3, 3.7 and 3.8) with no socket in it. Bytes from the client go to
// feed(); bytes for it leave through `write`; a protocol error ends this
// session only (`close`). The server (rfb-server.ts) owns the sockets and
// the dirty scan and calls update() when this client may get a frame.
//
// As bhyve's rfb.c: security None or VNC authentication (password=),
// encodings Raw and Zlib (one zlib stream per client, flushed to a
// byte boundary after each rectangle, as the protocol requires), the DesktopSize
// (-223) and QEMU ExtendedKeyEvent (-258) pseudo-encodings. Beyond rfb.c:
// SetPixelFormat is honoured for any true-colour format, several clients
// at once, messages are parsed from a buffer (a slow or hostile client
// cannot block the others or the guest), malformed input closes the
// session with a reason, and no update is sent without a request.

import zlib from 'node:zlib';
import { newChallenge, vncAuthCheck, VNC_CHALLENGE_LENGTH } from './rfb-auth.js';
import {
  decodePixelFormat, encodePixelFormat, NATIVE_FORMAT, rectPixels, TILE, type PixelFormat, type Screen,
} from './rfb-pixels.js';

export const RFB_VERSION_3_3 = 'RFB 003.003\n';
export const RFB_VERSION_3_7 = 'RFB 003.007\n';
export const RFB_VERSION_3_8 = 'RFB 003.008\n';

export const SECURITY_NONE = 1;
export const SECURITY_VNC_AUTH = 2;

export const ENCODING_RAW = 0;
export const ENCODING_ZLIB = 6;
export const ENCODING_DESKTOP_SIZE = -223;
export const ENCODING_EXT_KEY_EVENT = -258;

const MSG_SET_PIXEL_FORMAT = 0;
const MSG_SET_ENCODINGS = 2;
const MSG_UPDATE_REQUEST = 3;
const MSG_KEY_EVENT = 4;
const MSG_POINTER_EVENT = 5;
const MSG_CUT_TEXT = 6;
const MSG_QEMU = 255;
const QEMU_EXT_KEY_EVENT = 0;

/** Clipboard text longer than this ends the session (rfb.c reads any length). */
export const MAX_CUT_TEXT = 1 << 20;
/** Send the whole screen as one rectangle when this share of tiles changed (rfb.c's 25%). */
const SEND_ALL_PERCENT = 25;

/** Where a client's keyboard and pointer go. */
export interface RfbInput {
  /** X11 keysym, and the XT scancode when the client sent QEMU's extended event (else 0). */
  key(down: boolean, keysym: number, scancode: number): void;
  /** Buttons as RFB's mask (bit 0 left, 1 middle, 2 right, 3/4 wheel). */
  pointer(buttons: number, x: number, y: number): void;
}

export interface RfbSessionOptions {
  /** VNC authentication with this password when set. */
  password?: string;
  /** Desktop name in ServerInit. */
  name: string;
  screen(): Screen;
  input: RfbInput;
  write(bytes: Buffer): void;
  /** Ends the connection; `reason` says why when it is the client's fault. */
  close(reason?: string): void;
}

type State = 'version' | 'security-type' | 'auth-response' | 'client-init' | 'normal' | 'closed';

export class RfbSession {
  private state: State = 'version';
  private buf: Buffer = Buffer.alloc(0);
  private minor = 3;
  private challenge: Buffer | undefined;
  private format: PixelFormat = NATIVE_FORMAT;
  private encodings = new Set<number>();
  /** The zlib stream header went out (the first Zlib rectangle carries it). */
  private zlibStarted = false;
  /** The last bytes of that stream's uncompressed data (the client's window). */
  private zwindow: Buffer = Buffer.alloc(0);
  private extKeySent = false;
  /** The size this client was last told about. */
  private width = 0;
  private height = 0;
  /** A FramebufferUpdateRequest is outstanding. */
  pendingRequest = false;
  /** Tiles changed since this client's last update (null: send everything). */
  private dirty: Uint8Array | null = null;
  private dirtyCols = 0;
  /** Counters for --get-stats and the bench. */
  readonly stats = { updates: 0, rects: 0, bytes: 0, rawBytes: 0 };

  constructor(private readonly o: RfbSessionOptions) {
    this.send(Buffer.from(RFB_VERSION_3_8, 'latin1'));
  }

  get closed(): boolean { return this.state === 'closed'; }
  get ready(): boolean { return this.state === 'normal'; }
  get version(): string { return `3.${this.minor}`; }
  get encodingList(): number[] { return [...this.encodings]; }

  feed(data: Buffer): void {
    if (this.state === 'closed') return;
    this.buf = this.buf.length === 0 ? data : Buffer.concat([this.buf, data]);
    while ((this.state as State) !== 'closed') {
      const used = this.step();
      if (used === 0) break;
      this.buf = this.buf.subarray(used);
    }
  }

  /** Ends the session (from the server: socket closed, server stopping). */
  end(reason?: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.o.close(reason);
  }

  private fail(reason: string): number {
    this.end(reason);
    return 0;
  }

  private send(b: Buffer): void {
    this.stats.bytes += b.length;
    this.o.write(b);
  }

  private u32(v: number): Buffer {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v >>> 0);
    return b;
  }

  /** Handles one complete message from the front of buf; returns the bytes
   * it used, 0 when more are needed (or the session ended). */
  private step(): number {
    const b = this.buf;
    switch (this.state) {
      case 'version': {
        if (b.length < 12) return 0;
        const m = /^RFB (\d{3})\.(\d{3})\n$/.exec(b.subarray(0, 12).toString('latin1'));
        if (!m) return this.fail('malformed ProtocolVersion');
        const major = Number(m[1]);
        const minor = Number(m[2]);
        if (major < 3) return this.fail(`unsupported protocol version ${major}.${minor}`);
        // 3.3, 3.7, 3.8; 3.4-3.6 and 3.889 (Apple) speak 3.3 / 3.8; later majors 3.8.
        this.minor = major > 3 || minor >= 8 ? 8 : minor === 7 ? 7 : 3;
        const type = this.o.password !== undefined ? SECURITY_VNC_AUTH : SECURITY_NONE;
        if (this.minor === 3) {
          this.send(this.u32(type));
          this.afterSecurityType(type);
        } else {
          this.send(Buffer.from([1, type]));
          this.state = 'security-type';
        }
        return 12;
      }
      case 'security-type': {
        if (b.length < 1) return 0;
        const want = this.o.password !== undefined ? SECURITY_VNC_AUTH : SECURITY_NONE;
        if (b[0] !== want) {
          this.securityResult(false, 'authentication type mismatch');
          return 1;
        }
        this.afterSecurityType(want);
        return 1;
      }
      case 'auth-response': {
        if (b.length < VNC_CHALLENGE_LENGTH) return 0;
        const ok = vncAuthCheck(this.o.password ?? '', this.challenge!, b.subarray(0, VNC_CHALLENGE_LENGTH));
        this.challenge = undefined;
        this.securityResult(ok, 'invalid password');
        return VNC_CHALLENGE_LENGTH;
      }
      case 'client-init': {
        if (b.length < 1) return 0;
        // The shared flag: every client shares the screen here.
        const s = this.o.screen();
        this.width = s.width;
        this.height = s.height;
        const name = Buffer.from(this.o.name, 'utf8');
        const init = Buffer.alloc(4);
        init.writeUInt16BE(s.width, 0);
        init.writeUInt16BE(s.height, 2);
        this.send(Buffer.concat([init, encodePixelFormat(NATIVE_FORMAT), this.u32(name.length), name]));
        this.state = 'normal';
        return 1;
      }
      case 'normal':
        return this.message(b);
      default:
        return 0;
    }
  }

  private afterSecurityType(type: number): void {
    if (type === SECURITY_VNC_AUTH) {
      this.challenge = newChallenge();
      this.send(this.challenge);
      this.state = 'auth-response';
    } else if (this.minor === 8) {
      this.securityResult(true, '');
    } else {
      this.state = 'client-init'; // 3.3 and 3.7 send no SecurityResult for None
    }
  }

  private securityResult(ok: boolean, reason: string): void {
    this.send(this.u32(ok ? 0 : 1));
    if (ok) { this.state = 'client-init'; return; }
    if (this.minor === 8) {
      const r = Buffer.from(reason, 'utf8');
      this.send(Buffer.concat([this.u32(r.length), r]));
    }
    this.end(`authentication failed: ${reason}`);
  }

  private message(b: Buffer): number {
    if (b.length < 1) return 0;
    switch (b[0]) {
      case MSG_SET_PIXEL_FORMAT: {
        if (b.length < 20) return 0;
        const f = decodePixelFormat(b.subarray(4, 20));
        if (!f) return this.fail('unsupported pixel format (only true colour at 8, 16 or 32 bpp)');
        this.format = f;
        this.dirty = null; // what the client has is in the old format
        return 20;
      }
      case MSG_SET_ENCODINGS: {
        if (b.length < 4) return 0;
        const n = b.readUInt16BE(2);
        if (b.length < 4 + 4 * n) return 0;
        this.encodings = new Set();
        for (let i = 0; i < n; i++) this.encodings.add(b.readInt32BE(4 + 4 * i));
        return 4 + 4 * n;
      }
      case MSG_UPDATE_REQUEST: {
        if (b.length < 10) return 0;
        if (b[1] === 0) this.dirty = null; // non-incremental: the whole screen
        this.pendingRequest = true;
        return 10;
      }
      case MSG_KEY_EVENT: {
        if (b.length < 8) return 0;
        this.o.input.key(b[1] !== 0, b.readUInt32BE(4), 0);
        return 8;
      }
      case MSG_POINTER_EVENT: {
        if (b.length < 6) return 0;
        this.o.input.pointer(b[1], b.readUInt16BE(2), b.readUInt16BE(4));
        return 6;
      }
      case MSG_CUT_TEXT: {
        if (b.length < 8) return 0;
        const len = b.readUInt32BE(4);
        if (len > MAX_CUT_TEXT) return this.fail(`ClientCutText of ${len} bytes is too long`);
        if (b.length < 8 + len) return 0;
        return 8 + len; // no clipboard to give it to
      }
      case MSG_QEMU: {
        if (b.length < 2) return 0;
        if (b[1] !== QEMU_EXT_KEY_EVENT) return this.fail(`unknown QEMU client message subtype ${b[1]}`);
        if (b.length < 12) return 0;
        this.o.input.key(b.readUInt16BE(2) !== 0, b.readUInt32BE(4), b.readUInt32BE(8));
        return 12;
      }
      default:
        return this.fail(`unknown client message type ${b[0]}`);
    }
  }

  /** Adds the tiles of a server scan (cols wide) to what this client still needs. */
  markDirty(tiles: Uint8Array, cols: number): void {
    if (this.dirty === null) return;
    if (this.dirty.length !== tiles.length || this.dirtyCols !== cols) { this.dirty = null; return; }
    for (let i = 0; i < tiles.length; i++) this.dirty[i] |= tiles[i];
  }

  /** True when an update for this client has something to carry. */
  needsUpdate(s: Screen): boolean {
    if (!this.ready || !this.pendingRequest) return false;
    if (this.dirty === null || s.width !== this.width || s.height !== this.height) return true;
    if (this.encodings.has(ENCODING_EXT_KEY_EVENT) && !this.extKeySent) return true;
    return this.dirty.some((t) => t !== 0);
  }

  /** Answers the outstanding update request from screen `s`. */
  update(s: Screen): void {
    if (!this.needsUpdate(s)) return;
    this.pendingRequest = false;
    const cols = Math.ceil(s.width / TILE);
    const rows = Math.ceil(s.height / TILE);
    const parts: Buffer[] = [];
    let nrects = 0;
    if (this.encodings.has(ENCODING_EXT_KEY_EVENT) && !this.extKeySent) {
      parts.push(this.rectHeader(0, 0, this.width, this.height, ENCODING_EXT_KEY_EVENT));
      nrects++;
      this.extKeySent = true;
    }
    let w = this.width;
    let h = this.height;
    if (s.width !== w || s.height !== h) {
      if (this.encodings.has(ENCODING_DESKTOP_SIZE)) {
        this.width = w = s.width;
        this.height = h = s.height;
        parts.push(this.rectHeader(0, 0, w, h, ENCODING_DESKTOP_SIZE));
        nrects++;
      }
      this.dirty = null;
    }
    // A client that cannot resize sees the top-left of a bigger screen.
    w = Math.min(w, s.width);
    h = Math.min(h, s.height);
    const dirty = this.dirty;
    this.dirty = new Uint8Array(cols * rows);
    this.dirtyCols = cols;
    const rects: Array<[number, number, number, number]> = [];
    const changed = dirty === null ? cols * rows : dirty.reduce((n, t) => n + t, 0);
    if (dirty === null || changed * 100 >= SEND_ALL_PERCENT * cols * rows) {
      if (w > 0 && h > 0) rects.push([0, 0, w, h]);
    } else {
      // Runs of dirty tiles along each tile row, one rectangle per run.
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          if (!dirty[r * cols + c]) continue;
          let e = c;
          while (e + 1 < cols && dirty[r * cols + e + 1]) e++;
          const x = c * TILE;
          const y = r * TILE;
          const rw = Math.min((e + 1) * TILE, w) - x;
          const rh = Math.min(y + TILE, h) - y;
          if (rw > 0 && rh > 0) rects.push([x, y, rw, rh]);
          c = e;
        }
      }
    }
    for (const [x, y, rw, rh] of rects) {
      parts.push(this.rect(s, x, y, rw, rh));
      nrects++;
    }
    const head = Buffer.alloc(4);
    head.writeUInt16BE(Math.min(nrects, 0xffff), 2);
    this.stats.updates++;
    this.stats.rects += rects.length;
    this.send(Buffer.concat([head, ...parts]));
  }

  private rectHeader(x: number, y: number, w: number, h: number, encoding: number): Buffer {
    const b = Buffer.alloc(12);
    b.writeUInt16BE(x, 0); b.writeUInt16BE(y, 2); b.writeUInt16BE(w, 4); b.writeUInt16BE(h, 6);
    b.writeInt32BE(encoding, 8);
    return b;
  }

  private rect(s: Screen, x: number, y: number, w: number, h: number): Buffer {
    const pixels = rectPixels(s, x, y, w, h, this.format);
    this.stats.rawBytes += pixels.length;
    if (this.encodings.has(ENCODING_ZLIB)) {
      const z = this.zlibRect(pixels);
      return Buffer.concat([this.rectHeader(x, y, w, h, ENCODING_ZLIB), this.u32(z.length), z]);
    }
    return Buffer.concat([this.rectHeader(x, y, w, h, ENCODING_RAW), pixels]);
  }

  /**
   * The next piece of this client's zlib stream: the 2-byte zlib header the
   * first time, then deflate blocks ending in a sync flush (an empty stored
   * block) and never a final block, so the pieces concatenate into the one
   * stream the client inflates for the whole connection. Node's synchronous
   * zlib cannot continue a stream, so each piece is a raw deflate primed
   * with the last 32 KiB the client has inflated as its dictionary: its
   * back-references reach into what the client's window holds, as a
   * continued stream's would.
   */
  private zlibRect(pixels: Buffer): Buffer {
    const body = zlib.deflateRawSync(pixels, {
      level: zlib.constants.Z_BEST_SPEED, finishFlush: zlib.constants.Z_SYNC_FLUSH,
      ...(this.zwindow.length > 0 ? { dictionary: this.zwindow } : {}),
    });
    const tail = pixels.length >= ZLIB_WINDOW ? pixels.subarray(pixels.length - ZLIB_WINDOW)
      : Buffer.concat([this.zwindow, pixels]).subarray(-ZLIB_WINDOW);
    this.zwindow = Buffer.from(tail);
    if (this.zlibStarted) return body;
    this.zlibStarted = true;
    return Buffer.concat([ZLIB_HEADER, body]);
  }
}

/** CMF 0x78 (deflate, 32 KiB window), FLG 0x01 (fastest, check bits). */
const ZLIB_HEADER = Buffer.from([0x78, 0x01]);
const ZLIB_WINDOW = 32 * 1024;
