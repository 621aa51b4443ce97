import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { desEcb, vncAuthResponse, vncKey } from '../../src/devices/display/rfb-auth.js';
import { DirtyScanner, type Screen } from '../../src/devices/display/rfb-pixels.js';
import { RfbServer } from '../../src/devices/display/rfb-server.js';
import {
  ENCODING_DESKTOP_SIZE, ENCODING_RAW, ENCODING_ZLIB, MAX_CUT_TEXT, RfbSession, type RfbSessionOptions,
} from '../../src/devices/display/rfb-session.js';

/** A 256x192 screen whose pixel (x, y) is B=x, G=y, R=0x80. */
function screen(w = 256, h = 192): Screen {
  const pixels = new Uint8Array(w * h * 4);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) pixels.set([x & 0xff, y & 0xff, 0x80, 0], (y * w + x) * 4);
  return { width: w, height: h, pixels };
}

class Harness {
  out = Buffer.alloc(0);
  closedWith: string | undefined | null = null;
  keys: Array<[boolean, number, number]> = [];
  pointers: Array<[number, number, number]> = [];
  scr = screen();
  session: RfbSession;
  constructor(extra: Partial<RfbSessionOptions> = {}) {
    this.session = new RfbSession({
      name: 'test-vm',
      screen: () => this.scr,
      input: { key: (d, k, c) => this.keys.push([d, k, c]), pointer: (b, x, y) => this.pointers.push([b, x, y]) },
      write: (b) => { this.out = Buffer.concat([this.out, b]); },
      close: (r) => { this.closedWith = r; },
      ...extra,
    });
  }
  take(n: number): Buffer {
    expect(this.out.length).toBeGreaterThanOrEqual(n);
    const b = this.out.subarray(0, n);
    this.out = this.out.subarray(n);
    return b;
  }
  feed(...bytes: Array<number[] | Buffer | string>): void {
    for (const b of bytes) this.session.feed(typeof b === 'string' ? Buffer.from(b, 'latin1') : Buffer.from(b));
  }
  /** Handshake with security None at `version`, through ServerInit. */
  connect(version = 'RFB 003.008\n'): void {
    expect(this.take(12).toString()).toBe('RFB 003.008\n');
    this.feed(version);
    if (version === 'RFB 003.003\n') {
      expect(this.take(4).readUInt32BE()).toBe(1);
    } else {
      expect([...this.take(2)]).toEqual([1, 1]);
      this.feed([1]);
      if (version === 'RFB 003.008\n') expect(this.take(4).readUInt32BE()).toBe(0);
    }
    expect(this.out.length).toBe(0);
    this.feed([1]);
    this.serverInit();
  }
  serverInit(): void {
    const init = this.take(24);
    expect(init.readUInt16BE(0)).toBe(256);
    expect(init.readUInt16BE(2)).toBe(192);
    expect([...init.subarray(4, 8)]).toEqual([32, 24, 0, 1]);
    const len = init.readUInt32BE(20);
    expect(this.take(len).toString()).toBe('test-vm');
    expect(this.session.ready).toBe(true);
  }
  encodings(...e: number[]): void {
    const b = Buffer.alloc(4 + 4 * e.length);
    b[0] = 2;
    b.writeUInt16BE(e.length, 2);
    e.forEach((v, i) => b.writeInt32BE(v, 4 + 4 * i));
    this.feed(b);
  }
  request(incremental: boolean, w = 256, h = 192): void {
    const b = Buffer.alloc(10);
    b[0] = 3; b[1] = incremental ? 1 : 0;
    b.writeUInt16BE(w, 6); b.writeUInt16BE(h, 8);
    this.feed(b);
  }
  /** Parses one FramebufferUpdate, returns its rectangles. */
  update(inflate?: { data: Buffer }): Array<{ x: number; y: number; w: number; h: number; enc: number; pixels?: Buffer }> {
    const head = this.take(4);
    expect(head[0]).toBe(0);
    const n = head.readUInt16BE(2);
    const rects = [];
    for (let i = 0; i < n; i++) {
      const r = this.take(12);
      const rect = { x: r.readUInt16BE(0), y: r.readUInt16BE(2), w: r.readUInt16BE(4), h: r.readUInt16BE(6), enc: r.readInt32BE(8), pixels: undefined as Buffer | undefined };
      if (rect.enc === ENCODING_RAW) rect.pixels = Buffer.from(this.take(rect.w * rect.h * 4));
      else if (rect.enc === ENCODING_ZLIB) {
        const len = this.take(4).readUInt32BE();
        const z = Buffer.from(this.take(len));
        // One zlib stream per connection: inflate everything so far, keep the tail.
        const before = inflate!.data.length === 0 ? 0 : zlib.inflateSync(inflate!.data, { finishFlush: zlib.constants.Z_SYNC_FLUSH }).length;
        inflate!.data = Buffer.concat([inflate!.data, z]);
        const all = zlib.inflateSync(inflate!.data, { finishFlush: zlib.constants.Z_SYNC_FLUSH });
        rect.pixels = all.subarray(before);
        expect(rect.pixels.length).toBe(rect.w * rect.h * 4);
      }
      rects.push(rect);
    }
    return rects;
  }
}

function expectPixels(s: Screen, r: { x: number; y: number; w: number; h: number; pixels?: Buffer }): void {
  for (let y = 0; y < r.h; y++) {
    const src = ((r.y + y) * s.width + r.x) * 4;
    expect(Buffer.compare(r.pixels!.subarray(y * r.w * 4, (y + 1) * r.w * 4), Buffer.from(s.pixels.subarray(src, src + r.w * 4)))).toBe(0);
  }
}

describe('VNC authentication', () => {
  it('is DES with the bit-reversed password as key (FIPS 81 vector, d3des convention)', () => {
    // FIPS 81: key 0123456789abcdef, "Now is t" -> 3fa40e8a984d4815.
    expect(desEcb(Buffer.from('0123456789abcdef', 'hex'), Buffer.from('Now is t')).toString('hex')).toBe('3fa40e8a984d4815');
    expect(vncKey('\x01\x80').subarray(0, 2)).toEqual(Buffer.from([0x80, 0x01]));
    expect(vncKey('abcdefghij')).toEqual(vncKey('abcdefgh')); // truncated to 8
    // The same response a real client computes (libvncserver's rfbEncryptBytes for "password").
    const challenge = Buffer.alloc(16, 0);
    expect(vncAuthResponse('password', challenge).subarray(0, 8).toString('hex'))
      .toBe(desEcb(vncKey('password'), Buffer.alloc(8)).toString('hex'));
  });
});

describe('dirty scan', () => {
  it('compares only the bands whose pages the dirty log marks', () => {
    const s = screen(1024, 96); // 4 KiB per row: page n is row n
    const sc = new DirtyScanner();
    expect(sc.scan(s).every((t) => t === 1)).toBe(true); // first scan: everything
    s.pixels[(40 * 1024 + 100) * 4] ^= 0xff; // row 40: band 1, tile 3
    const log = new Uint8Array(96 / 8);
    expect(sc.scan(s, log).some((t) => t !== 0)).toBe(false); // the log says nothing changed: trusted
    expect(sc.counts.skipped).toBe(3);
    log[40 >> 3] |= 1 << (40 & 7);
    const tiles = sc.scan(s, log);
    expect([...tiles.keys()].filter((i) => tiles[i])).toEqual([32 + 3]);
    expect(sc.scan(s).some((t) => t !== 0)).toBe(false); // no log: compared, unchanged
  });
});

describe('RFB session state machine', () => {
  for (const v of ['RFB 003.003\n', 'RFB 003.007\n', 'RFB 003.008\n']) {
    it(`completes the ${v.trim()} handshake without a password`, () => {
      const h = new Harness();
      h.connect(v);
      expect(h.session.version).toBe(`3.${v[10]}`);
    });
  }

  it('speaks 3.3 to 3.5 clients and 3.8 to 3.889 and later', () => {
    const a = new Harness(); a.take(12); a.feed('RFB 003.005\n');
    expect(a.session.version).toBe('3.3');
    const b = new Harness(); b.take(12); b.feed('RFB 003.889\n');
    expect(b.session.version).toBe('3.8');
  });

  it('ends the session on a malformed version string', () => {
    const h = new Harness();
    h.feed('GET / HTTP/1.1\r\n');
    expect(h.closedWith).toMatch(/malformed ProtocolVersion/);
  });

  for (const v of ['RFB 003.003\n', 'RFB 003.008\n']) {
    it(`accepts the right password and refuses a wrong one (${v.trim()})`, () => {
      for (const [pw, ok] of [['s3cret', true], ['wrong', false]] as const) {
        const h = new Harness({ password: 's3cret' });
        h.take(12);
        h.feed(v);
        if (v === 'RFB 003.003\n') expect(h.take(4).readUInt32BE()).toBe(2);
        else { expect([...h.take(2)]).toEqual([1, 2]); h.feed([2]); }
        const challenge = Buffer.from(h.take(16));
        h.feed(vncAuthResponse(pw, challenge));
        expect(h.take(4).readUInt32BE()).toBe(ok ? 0 : 1);
        if (ok) {
          expect(h.closedWith).toBeNull();
          h.feed([0]);
          h.serverInit();
        } else {
          if (v === 'RFB 003.008\n') {
            const len = h.take(4).readUInt32BE();
            expect(h.take(len).toString()).toMatch(/invalid password/);
          }
          expect(h.closedWith).toMatch(/authentication failed/);
          expect(h.session.ready).toBe(false);
        }
      }
    });
  }

  it('refuses a client that picks None when a password is set', () => {
    const h = new Harness({ password: 'x' });
    h.take(12); h.feed('RFB 003.008\n'); h.take(2);
    h.feed([1]);
    expect(h.take(4).readUInt32BE()).toBe(1);
    expect(h.closedWith).toMatch(/type mismatch/);
  });

  it('sends the screen Raw, then only changed tiles, nothing when idle', () => {
    const h = new Harness();
    h.connect();
    h.encodings(ENCODING_RAW);
    const scan = new DirtyScanner();
    h.request(false);
    h.session.markDirty(scan.scan(h.scr), scan.cols);
    h.session.update(h.scr);
    const [full] = h.update();
    expect(full).toMatchObject({ x: 0, y: 0, w: 256, h: 192, enc: ENCODING_RAW });
    expectPixels(h.scr, full);
    // Idle: a request stays pending, nothing is sent.
    h.request(true);
    h.session.markDirty(scan.scan(h.scr), scan.cols);
    h.session.update(h.scr);
    expect(h.out.length).toBe(0);
    // One pixel in the second tile column, second tile row.
    h.scr.pixels[(40 * 256 + 40) * 4] = 0xee;
    h.scr.pixels[(180 * 256 + 255) * 4] = 0xee;
    h.scr.pixels[(180 * 256 + 200) * 4] = 0xee;
    h.session.markDirty(scan.scan(h.scr), scan.cols);
    h.session.update(h.scr);
    const rects = h.update();
    expect(rects).toHaveLength(2);
    expect(rects[0]).toMatchObject({ x: 32, y: 32, w: 32, h: 32, enc: ENCODING_RAW });
    expect(rects[1]).toMatchObject({ x: 192, y: 160, w: 64, h: 32, enc: ENCODING_RAW }); // two tiles, one run
    for (const r of rects) expectPixels(h.scr, r);
  });

  it('sends Zlib rectangles from one stream per client', () => {
    const h = new Harness();
    h.connect();
    h.encodings(ENCODING_ZLIB, ENCODING_RAW);
    const z = { data: Buffer.alloc(0) };
    const scan = new DirtyScanner();
    h.request(false);
    h.session.markDirty(scan.scan(h.scr), scan.cols);
    h.session.update(h.scr);
    const [full] = h.update(z);
    expect(full.enc).toBe(ENCODING_ZLIB);
    expectPixels(h.scr, full);
    h.scr.pixels[0] = 0x11;
    h.request(true);
    h.session.markDirty(scan.scan(h.scr), scan.cols);
    h.session.update(h.scr);
    const [tile] = h.update(z);
    expect(tile).toMatchObject({ x: 0, y: 0, w: 32, h: 32, enc: ENCODING_ZLIB });
    expectPixels(h.scr, tile);
  });

  it('announces a mode change with DesktopSize, or clips for clients without it', () => {
    for (const resize of [true, false]) {
      const h = new Harness();
      h.connect();
      h.encodings(...(resize ? [ENCODING_RAW, ENCODING_DESKTOP_SIZE] : [ENCODING_RAW]));
      h.scr = screen(288, 100);
      h.request(true);
      h.session.update(h.scr);
      const rects = h.update();
      if (resize) {
        expect(rects[0]).toMatchObject({ x: 0, y: 0, w: 288, h: 100, enc: ENCODING_DESKTOP_SIZE });
        expect(rects[1]).toMatchObject({ w: 288, h: 100, enc: ENCODING_RAW });
      } else {
        expect(rects).toHaveLength(1);
        expect(rects[0]).toMatchObject({ w: 256, h: 100, enc: ENCODING_RAW });
      }
      expectPixels(h.scr, rects[resize ? 1 : 0]);
    }
  });

  it('converts to a 16-bit pixel format the client sets', () => {
    const h = new Harness();
    h.connect();
    // RGB565 little endian.
    h.feed([0, 0, 0, 0, 16, 16, 0, 1, 0, 31, 0, 63, 0, 31, 11, 5, 0, 0, 0, 0]);
    h.request(false);
    h.session.update(h.scr);
    const head = h.take(16);
    expect(head.readInt32BE(12)).toBe(ENCODING_RAW);
    const px = h.take(256 * 192 * 2);
    // (x=31, y=2): R=0x80 -> 16, G=2 -> 0, B=31 -> 4
    expect(px.readUInt16LE((2 * 256 + 31) * 2)).toBe((16 << 11) | (0 << 5) | 4);
  });

  it('passes key and pointer events, including QEMU extended keys', () => {
    const h = new Harness();
    h.connect();
    h.feed([4, 1, 0, 0, 0, 0, 0, 0x61], [5, 1, 0, 10, 0, 20], [255, 0, 0, 1, 0, 0, 0xff, 0x0d, 0, 0, 0, 0x1c]);
    h.feed([4, 0], [0, 0, 0, 0, 0, 0x61]); // split across reads
    expect(h.keys).toEqual([[true, 0x61, 0], [true, 0xff0d, 0x1c], [false, 0x61, 0]]);
    expect(h.pointers).toEqual([[1, 10, 20]]);
  });

  it('skips clipboard text, ends the session on an oversized one', () => {
    const h = new Harness();
    h.connect();
    h.feed([6, 0, 0, 0, 0, 0, 0, 3], 'abc', [4, 1, 0, 0, 0, 0, 0, 0x62]);
    expect(h.keys).toHaveLength(1);
    const b = Buffer.alloc(8); b[0] = 6; b.writeUInt32BE(MAX_CUT_TEXT + 1, 4);
    h.feed(b);
    expect(h.closedWith).toMatch(/ClientCutText/);
  });

  it('ends the session on an unknown message type or QEMU subtype', () => {
    const a = new Harness(); a.connect(); a.feed([0x42]);
    expect(a.closedWith).toMatch(/unknown client message type 66/);
    const b = new Harness(); b.connect(); b.feed([255, 7, 0, 0]);
    expect(b.closedWith).toMatch(/QEMU client message subtype 7/);
    const c = new Harness(); c.connect(); c.feed([0, 0, 0, 0, 24, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    expect(c.closedWith).toMatch(/pixel format/);
  });
});

/** A socket client that performs the 3.8 None handshake. */
async function rawClient(connect: net.NetConnectOpts): Promise<{ sock: net.Socket; read(n: number): Promise<Buffer> }> {
  const sock = net.connect(connect);
  let buf = Buffer.alloc(0);
  let wake: (() => void) | undefined;
  sock.on('data', (d) => { buf = Buffer.concat([buf, d]); wake?.(); });
  sock.on('close', () => wake?.());
  const read = async (n: number): Promise<Buffer> => {
    while (buf.length < n) {
      if (sock.destroyed) throw new Error('closed');
      await new Promise<void>((r) => { wake = r; });
    }
    const b = buf.subarray(0, n); buf = buf.subarray(n); return b;
  };
  return { sock, read };
}

async function handshake(c: Awaited<ReturnType<typeof rawClient>>): Promise<Buffer> {
  expect((await c.read(12)).toString()).toBe('RFB 003.008\n');
  c.sock.write('RFB 003.008\n');
  expect([...(await c.read(2))]).toEqual([1, 1]);
  c.sock.write(Buffer.from([1]));
  expect((await c.read(4)).readUInt32BE()).toBe(0);
  c.sock.write(Buffer.from([1]));
  const init = await c.read(24);
  await c.read(init.readUInt32BE(20));
  return init;
}

describe('RFB server', () => {
  const input = { key: () => undefined, pointer: () => undefined };

  it('serves several clients on IPv4, and a bad client does not disturb the others', async () => {
    const scr = screen();
    const srv = await RfbServer.listen({ listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, name: 'vm', screen: () => scr, input });
    try {
      let first = false;
      void srv.firstClient.then(() => { first = true; });
      const a = await rawClient({ host: '127.0.0.1', port: srv.port! });
      const b = await rawClient({ host: '127.0.0.1', port: srv.port! });
      await new Promise((r) => setTimeout(r, 50));
      expect(first).toBe(false); // connected, not yet through the handshake
      await handshake(a);
      await new Promise((r) => setImmediate(r));
      expect(first).toBe(true);
      await handshake(b);
      b.sock.write(Buffer.from([0x99])); // garbage: b is dropped
      await new Promise((r) => b.sock.once('close', r));
      a.sock.write(Buffer.from([3, 0, 0, 0, 0, 0, 1, 0, 0, 192]));
      const head = await a.read(16);
      expect(head.readUInt16BE(2)).toBe(1);
      const px = await a.read(256 * 192 * 4);
      expect(Buffer.compare(px, Buffer.from(scr.pixels))).toBe(0);
      expect(srv.clientCount).toBe(1);
      a.sock.destroy();
    } finally {
      await srv.close();
    }
  });

  it('listens on IPv6 and on a unix socket', async () => {
    const scr = screen();
    const v6 = await RfbServer.listen({ listen: { kind: 'tcp', host: '::1', port: 0 }, name: 'vm', screen: () => scr, input })
      .catch((e: Error) => e);
    if (v6 instanceof RfbServer) {
      const c = await rawClient({ host: '::1', port: v6.port! });
      expect((await handshake(c)).readUInt16BE(0)).toBe(256);
      c.sock.destroy();
      await v6.close();
    } else {
      expect(v6.message).toMatch(/cannot listen on \[::1\]/); // no IPv6 on this host
    }
    const p = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'rfb-')), 'vnc.sock');
    fs.writeFileSync(p, ''); // not a socket: must not be removed
    await expect(RfbServer.listen({ listen: { kind: 'unix', path: p }, name: 'vm', screen: () => scr, input }))
      .rejects.toThrow(/cannot listen on .*vnc.sock: address already in use/);
    fs.rmSync(p);
    const ux = await RfbServer.listen({ listen: { kind: 'unix', path: p }, name: 'vm', screen: () => scr, input });
    const c = await rawClient({ path: p });
    expect((await handshake(c)).readUInt16BE(2)).toBe(192);
    c.sock.destroy();
    await ux.close();
    expect(fs.existsSync(p)).toBe(false);
  });
});
