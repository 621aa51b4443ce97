// A 9P2000.L client for unit tests and the fuzz target: T-messages built in
// a FakeDriver's guest RAM, sent through a virtio-9p device's queue, and
// R-messages read back from the device-writable buffer, as Linux's
// virtio transport for 9p does (one chain per request: the message, then
// room for the reply).

import { VirtioDeviceBase } from '../../src/devices/virtio/virtio-device.js';
import { T } from '../../src/devices/virtio/p9/p9-wire.js';
import { FakeDriver, activate } from './virtio-driver.js';

export type Field = ['u8' | 'u16' | 'u32', number] | ['u64', bigint | number] | ['str', string | Uint8Array];

export function encode(type: number, tag: number, fields: Field[]): Uint8Array {
  const parts: Buffer[] = [];
  for (const [k, v] of fields) {
    if (k === 'u8') parts.push(Buffer.from([v as number]));
    else if (k === 'u16') { const b = Buffer.alloc(2); b.writeUInt16LE(v as number); parts.push(b); }
    else if (k === 'u32') { const b = Buffer.alloc(4); b.writeUInt32LE((v as number) >>> 0); parts.push(b); }
    else if (k === 'u64') { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); parts.push(b); }
    else {
      const s = typeof v === 'string' ? Buffer.from(v) : Buffer.from(v as Uint8Array);
      const b = Buffer.alloc(2); b.writeUInt16LE(s.length); parts.push(b, s);
    }
  }
  const body = Buffer.concat(parts);
  const m = Buffer.alloc(7 + body.length);
  m.writeUInt32LE(m.length, 0);
  m[4] = type;
  m.writeUInt16LE(tag, 5);
  body.copy(m, 7);
  return m;
}

export interface Reply {
  type: number;
  tag: number;
  /** Bytes the device reported as used. */
  used: number;
  /** The whole reply (header included). */
  raw: Buffer;
  /** Rlerror's errno, else undefined. */
  errno?: number;
}

export class P9Client {
  readonly driver: FakeDriver;
  readonly resets: string[];
  private tagSeq = 1;

  /** One request and one reply area in guest RAM, reused. */
  private readonly reqArea: number;
  private readonly replyArea: number;
  private readonly areaSize: number;

  constructor(readonly dev: VirtioDeviceBase, ramSize = 8 << 20) {
    this.driver = new FakeDriver(256, ramSize);
    this.resets = activate(dev, this.driver).resets;
    this.areaSize = Math.floor((ramSize - (64 << 10)) / 2 / 4096) * 4096;
    this.reqArea = this.driver.alloc(this.areaSize, 4096);
    this.replyArea = this.driver.alloc(this.areaSize, 4096);
  }

  /** Sends raw request bytes with `room` bytes of reply buffer (split over
   * `replySegs` descriptors); returns the reply. */
  sendRaw(req: Uint8Array, room = 16384, replySegs = 1): Reply {
    const d = this.driver;
    const bufs: Array<{ addr: number; len: number; write?: boolean }> = [];
    if (req.length > this.areaSize || room > this.areaSize) throw new Error('message larger than the test RAM');
    if (req.length > 0) {
      d.fill(this.reqArea, req);
      bufs.push({ addr: this.reqArea, len: req.length });
    }
    const reply = this.replyArea;
    d.fill(reply, new Uint8Array(Math.min(room, 64)));
    const seg = Math.ceil(room / replySegs);
    for (let off = 0; off < room; off += seg) bufs.push({ addr: reply + off, len: Math.min(seg, room - off), write: true });
    const used0 = d.usedIdx();
    d.offer(d.chain(bufs));
    this.dev.queueNotify(0);
    if (d.usedIdx() === used0) throw new Error(`no used entry (device reset: ${this.resets.join('; ')})`);
    const used = d.usedElem(used0).len;
    const raw = Buffer.from(d.read(reply, Math.max(used, 0)));
    const r: Reply = { type: raw.length >= 5 ? raw[4] : -1, tag: raw.length >= 7 ? raw.readUInt16LE(5) : -1, used, raw };
    if (r.type === 7) r.errno = raw.readUInt32LE(7);
    return r;
  }

  rpc(type: number, fields: Field[], room?: number): Reply {
    const tag = this.tagSeq++ & 0x7fff;
    const r = this.sendRaw(encode(type, tag, fields), room);
    if (r.tag !== tag) throw new Error(`reply tag ${r.tag}, sent ${tag}`);
    if (r.errno === undefined && r.type !== type + 1) throw new Error(`reply type ${r.type} to ${type}`);
    return r;
  }

  /** Tversion + Tattach of fid 0; returns the root qid's path. */
  start(msize = 65536): bigint {
    const v = this.rpc(T.VERSION, [['u32', msize], ['str', '9P2000.L']]);
    if (v.errno !== undefined) throw new Error(`Tversion: errno ${v.errno}`);
    const a = this.rpc(T.ATTACH, [['u32', 0], ['u32', 0xffffffff], ['str', 'root'], ['str', ''], ['u32', 0]]);
    if (a.errno !== undefined) throw new Error(`Tattach: errno ${a.errno}`);
    return a.raw.readBigUInt64LE(7 + 5);
  }

  walk(fid: number, newfid: number, names: Array<string | Uint8Array>): Reply {
    return this.rpc(T.WALK, [['u32', fid], ['u32', newfid], ['u16', names.length], ...names.map((n): Field => ['str', n])]);
  }

  /** Number of qids in an Rwalk. */
  static nwqid(r: Reply): number { return r.raw.readUInt16LE(7); }

  lopen(fid: number, flags: number): Reply { return this.rpc(T.LOPEN, [['u32', fid], ['u32', flags]]); }
  lcreate(fid: number, name: string | Uint8Array, flags: number, mode = 0o644): Reply {
    return this.rpc(T.LCREATE, [['u32', fid], ['str', name], ['u32', flags], ['u32', mode], ['u32', 0]]);
  }
  write(fid: number, offset: number, data: Uint8Array): Reply { return this.writeRaw(fid, offset, data); }
  writeRaw(fid: number, offset: number, data: Uint8Array, count = data.length): Reply {
    const head = encode(T.WRITE, this.tagSeq++ & 0x7fff, [['u32', fid], ['u64', offset], ['u32', count]]);
    const m = Buffer.concat([head, Buffer.from(data)]);
    m.writeUInt32LE(m.length, 0);
    return this.sendRaw(m);
  }
  read(fid: number, offset: number, count: number, room = count + 11): Reply {
    return this.rpc(T.READ, [['u32', fid], ['u64', offset], ['u32', count]], room);
  }
  clunk(fid: number): Reply { return this.rpc(T.CLUNK, [['u32', fid]]); }
  mkdir(dfid: number, name: string | Uint8Array, mode = 0o755): Reply {
    return this.rpc(T.MKDIR, [['u32', dfid], ['str', name], ['u32', mode], ['u32', 0]]);
  }
  getattr(fid: number): Reply { return this.rpc(T.GETATTR, [['u32', fid], ['u64', 0x7ffn]]); }

  /** Names in an Rreaddir. */
  static dirNames(r: Reply): string[] {
    const count = r.raw.readUInt32LE(7);
    const names: string[] = [];
    for (let at = 11; at < 11 + count;) {
      const n = r.raw.readUInt16LE(at + 22);
      names.push(r.raw.subarray(at + 24, at + 24 + n).toString('latin1'));
      at += 24 + n;
    }
    return names;
  }
}
