// Fuzz target for the VNC server's protocol parser (src/devices/display/
// rfb-session.ts), the part a remote client reaches: handshakes of any
// version string and security choice (with and without a password), then
// client messages well-formed or not (SetPixelFormat with any format,
// SetEncodings with any count, update requests of any rectangle, key and
// pointer events, ClientCutText of any declared length, QEMU messages,
// unknown types), split at random points; the screen changes size and is
// sent as updates while a request is pending. Oracle: nothing escapes the
// session (harness); a session the client broke ends with a reason, and a
// new one starts.
import { RfbSession } from '../../../src/devices/display/rfb-session.js';
import type { Screen } from '../../../src/devices/display/rfb-pixels.js';
import type { FuzzInstance, FuzzTarget } from '../harness.js';
import type { Rng } from '../rng.js';

const VERSIONS = ['RFB 003.003\n', 'RFB 003.007\n', 'RFB 003.008\n', 'RFB 003.889\n', 'RFB 004.001\n', 'RFB 003.00\n', 'XYZ 003.008\n'];

class RfbFuzz implements FuzzInstance {
  private session!: RfbSession;
  private screen: Screen = { width: 64, height: 48, pixels: new Uint8Array(64 * 48 * 4) };
  private sessions = 0;
  private passwordSet = false;
  private closedByClient = 0;
  private updates = 0;
  private events = 0;
  lastOp?: string;

  constructor(private readonly r: Rng) { this.open(); }

  private open(): void {
    this.sessions++;
    this.session = new RfbSession({
      name: 'fuzz',
      password: (this.passwordSet = this.r.chance(0.2)) ? 'secret' : undefined,
      screen: () => this.screen,
      input: { key: () => { this.events++; }, pointer: () => { this.events++; } },
      write: () => {},
      close: (reason) => { if (reason) this.closedByClient++; },
    });
    // Most sessions get past the handshake, so the messages are reached.
    if (this.r.chance(0.8)) {
      this.session.feed(Buffer.from('RFB 003.008\n', 'latin1'));
      if (!this.session.closed) this.session.feed(Buffer.from([this.passwordSet ? 2 : 1]));
      if (!this.session.closed && !this.passwordSet) this.session.feed(Buffer.from([1])); // ClientInit, shared
    }
  }

  /** A client message: valid in shape most of the time, any bytes else. */
  private message(): Buffer {
    const r = this.r;
    switch (r.chance(0.05) ? 8 : r.below(8)) {
      case 0: { // SetPixelFormat
        const b = Buffer.from(r.bytes(20)); b[0] = 0;
        if (r.chance(0.7)) { b[4] = r.pick([8, 16, 32]); b[5] = r.pick([8, 16, 24, 32]); b[7] = 1; }
        return b;
      }
      case 1: { // SetEncodings
        const n = r.chance(0.98) ? r.below(16) : r.below(0x10000);
        const b = Buffer.alloc(4 + 4 * Math.min(n, 64)); b[0] = 2; b.writeUInt16BE(n, 2);
        for (let i = 0; i < Math.min(n, 64); i++) b.writeInt32BE(r.pick([0, 6, -223, -258, 1, 5, 16]) | 0, 4 + 4 * i);
        return b;
      }
      case 2: { // FramebufferUpdateRequest
        const b = Buffer.alloc(10); b[0] = 3; b[1] = r.below(2);
        for (let i = 0; i < 4; i++) b.writeUInt16BE(r.chance(0.7) ? r.below(80) : r.below(0x10000), 2 + 2 * i);
        return b;
      }
      case 3: { const b = Buffer.from(r.bytes(8)); b[0] = 4; return b; } // KeyEvent
      case 4: { const b = Buffer.from(r.bytes(6)); b[0] = 5; return b; } // PointerEvent
      case 5: { // ClientCutText, declared length any (the text may never come)
        const len = r.chance(0.97) ? r.below(64) : r.u32();
        const b = Buffer.alloc(8 + Math.min(len, 64)); b[0] = 6; b.writeUInt32BE(len >>> 0, 4);
        return b;
      }
      case 6: { // QEMU client message (extended key event and others)
        const b = Buffer.from(r.bytes(12)); b[0] = 255; b[1] = r.chance(0.8) ? 0 : b[1];
        return b;
      }
      default: return Buffer.from(r.bytes(r.below(24)));
    }
  }

  /** Handshake bytes for the session's current state, or junk. */
  private handshake(): Buffer {
    const r = this.r;
    if (r.chance(0.2)) return Buffer.from(r.bytes(r.below(20)));
    if (r.chance(0.5)) return Buffer.from(r.pick(VERSIONS), 'latin1');
    return Buffer.from([r.pick([0, 1, 2, 16, r.below(256)])]);
  }

  step(): void {
    const r = this.r;
    if (this.session.closed) this.open();
    const k = r.below(10);
    if (k < 7) {
      const data = this.session.ready ? this.message() : r.chance(0.5) ? this.handshake() : Buffer.from(r.bytes(16));
      this.lastOp = `feed ${data.subarray(0, 16).toString('hex')}${data.length > 16 ? '...' : ''}`;
      // Split across reads at a random point.
      const at = r.below(data.length + 1);
      this.session.feed(data.subarray(0, at));
      if (!this.session.closed) this.session.feed(data.subarray(at));
    } else if (k < 9) {
      this.lastOp = 'update';
      if (this.session.ready && this.session.needsUpdate(this.screen)) { this.session.update(this.screen); this.updates++; }
    } else {
      const w = r.range(1, 96), h = r.range(1, 64);
      this.lastOp = `resize ${w}x${h}`;
      this.screen = { width: w, height: h, pixels: Buffer.from(r.bytes(w * h * 4)) };
    }
  }

  stats(): Record<string, number> {
    return { sessions: this.sessions, 'ended by the client\'s fault': this.closedByClient, updates: this.updates, 'input events': this.events };
  }
}

export const RFB_TARGET: FuzzTarget = {
  name: 'rfb',
  surface: 'VNC (RFB) server protocol: handshakes, VNC authentication, client messages of any shape, updates while the screen changes size',
  create: (rng) => new RfbFuzz(rng),
};
