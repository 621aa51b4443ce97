// Fuzz target for the virtio-9p file server (src/devices/virtio/p9/):
// 9P2000.L messages through the device's queue (test/unit/p9-client.ts),
// mostly well-formed with fids the session holds and names from a
// dictionary of ordinary and hostile ones (.., ., slashes, absolute paths,
// NUL bytes, links planted to the outside), some with fields at edge
// values, some cut short, with lying sizes or random bytes. Beside the
// share sits an "outside" directory; the invariant: nothing there changes
// (and nothing appears next to the share), whatever the guest sends.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Virtio9p } from '../../../src/devices/virtio/virtio-9p.js';
import { P9Share } from '../../../src/devices/virtio/p9/p9-share.js';
import { T } from '../../../src/devices/virtio/p9/p9-wire.js';
import { P9Client, encode, type Field } from '../../unit/p9-client.js';
import { InvariantError, type FuzzInstance, type FuzzTarget } from '../harness.js';
import type { Rng } from '../rng.js';
import { scratchPath } from '../scratch.js';

let seq = 0;

const NAMES = ['a', 'b', 'sub', 'file', 'link', 'out', '..', '.', '', '/', '/etc/passwd', '../outside', 'sub/..', 'x\0y',
  'out/secret', '..\0', 'a'.repeat(300), 'fifo'];
const TYPES = [T.WALK, T.LOPEN, T.LCREATE, T.READ, T.WRITE, T.CLUNK, T.GETATTR, T.SETATTR, T.READDIR, T.MKDIR, T.SYMLINK,
  T.MKNOD, T.READLINK, T.LINK, T.RENAME, T.RENAMEAT, T.UNLINKAT, T.REMOVE, T.STATFS, T.FSYNC, T.LOCK, T.GETLOCK,
  T.XATTRWALK, T.XATTRCREATE, T.FLUSH, T.ATTACH, T.VERSION, T.AUTH];

function listing(dir: string): string {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir).sort()) {
    const st = fs.lstatSync(path.join(dir, e));
    out.push(`${e}:${st.mode}:${st.size}:${st.mtimeMs}:${st.nlink}`);
  }
  return out.join(',');
}

class P9Fuzz implements FuzzInstance {
  private readonly base: string;
  private readonly shareDir: string;
  private readonly outside: string;
  private readonly before: string;
  private readonly beforeBase: string;
  private readonly client: P9Client;
  private readonly dev: Virtio9p;
  lastOp?: string;
  private requests = 0;
  private errors = 0;

  constructor(private readonly r: Rng) {
    this.base = scratchPath(`p9-${seq++}`);
    this.shareDir = path.join(this.base, 'share');
    this.outside = path.join(this.base, 'outside');
    fs.mkdirSync(this.shareDir, { recursive: true });
    fs.mkdirSync(this.outside);
    fs.writeFileSync(path.join(this.outside, 'secret'), 'secret');
    fs.writeFileSync(path.join(this.shareDir, 'file'), 'content');
    fs.mkdirSync(path.join(this.shareDir, 'sub'));
    fs.symlinkSync(this.outside, path.join(this.shareDir, 'out'));
    fs.symlinkSync(path.join(this.outside, 'secret'), path.join(this.shareDir, 'link'));
    this.before = listing(this.outside);
    this.beforeBase = fs.readdirSync(this.base).sort().join(',');
    this.dev = new Virtio9p(new P9Share(this.shareDir, r.chance(0.2)), 'fuzz');
    this.client = new P9Client(this.dev, 2 << 20);
    this.client.start(r.chance(0.5) ? 65536 : 8192);
  }

  /** Fids the session is likely to hold (walks make them), or any. */
  private readonly held = new Set<number>([0]);
  private v32(): number { return this.r.value(32) >>> 0; }
  private fid(): number {
    if (this.r.chance(0.7)) return this.r.pick([...this.held]);
    return this.r.chance(0.8) ? this.r.below(8) : this.v32();
  }
  private name(): Field { return ['str', this.r.chance(0.9) ? this.r.pick(NAMES) : this.r.bytes(this.r.below(12))]; }
  private num(): number { return this.r.chance(0.7) ? this.r.below(0o200000) : this.v32(); }

  private fields(type: number): Field[] {
    const r = this.r;
    const u64 = (): Field => ['u64', r.chance(0.8) ? r.below(1 << 20) : BigInt(r.u32()) << 32n | BigInt(r.u32())];
    switch (type) {
      case T.WALK: {
        const n = r.chance(0.95) ? r.below(4) : r.below(20);
        return [['u32', this.fid()], ['u32', this.fid()], ['u16', n], ...Array.from({ length: n }, () => this.name())];
      }
      case T.LOPEN: return [['u32', this.fid()], ['u32', r.pick([0, 1, 2, 0o200000, 0o1002, 0o4000]) | (r.chance(0.1) ? this.v32() : 0)]];
      case T.LCREATE: return [['u32', this.fid()], this.name(), ['u32', r.pick([0, 1, 2, 0o102])], ['u32', this.num()], ['u32', 0]];
      case T.READ: case T.READDIR: return [['u32', this.fid()], u64(), ['u32', r.chance(0.7) ? r.below(70000) : this.v32()]];
      case T.SETATTR: return [['u32', this.fid()], ['u32', r.below(0x200)], ['u32', this.num()], ['u32', this.v32()], ['u32', this.v32()],
        ['u64', r.below(1 << 16)], u64(), ['u64', this.v32()], u64(), ['u64', this.v32()]];
      case T.MKDIR: return [['u32', this.fid()], this.name(), ['u32', this.num()], ['u32', 0]];
      case T.SYMLINK: return [['u32', this.fid()], this.name(), this.name(), ['u32', 0]];
      case T.MKNOD: return [['u32', this.fid()], this.name(), ['u32', r.pick([0o010644, 0o140644, 0o060600, 0o020600, 0o100644]) ], ['u32', 8], ['u32', 0], ['u32', 0]];
      case T.LINK: return [['u32', this.fid()], ['u32', this.fid()], this.name()];
      case T.RENAME: return [['u32', this.fid()], ['u32', this.fid()], this.name()];
      case T.RENAMEAT: return [['u32', this.fid()], this.name(), ['u32', this.fid()], this.name()];
      case T.UNLINKAT: return [['u32', this.fid()], this.name(), ['u32', r.pick([0, 0x200, this.v32()])]];
      case T.LOCK: return [['u32', this.fid()], ['u8', r.below(4)], ['u32', 0], u64(), u64(), ['u32', 1], ['str', 'c']];
      case T.GETLOCK: return [['u32', this.fid()], ['u8', r.below(4)], u64(), u64(), ['u32', 1], ['str', 'c']];
      case T.XATTRWALK: return [['u32', this.fid()], ['u32', this.fid()], this.name()];
      case T.XATTRCREATE: return [['u32', this.fid()], this.name(), u64(), ['u32', 0]];
      case T.FLUSH: return [['u16', r.below(0x10000)]];
      case T.ATTACH: return [['u32', this.fid()], ['u32', r.chance(0.8) ? 0xffffffff : this.fid()], ['str', 'u'], ['str', ''], ['u32', this.v32()]];
      case T.VERSION: return [['u32', r.pick([4096, 8192, 65536, this.v32()])], ['str', r.pick(['9P2000.L', '9P2000.u', '9P2000', 'x'])]];
      case T.AUTH: return [['u32', this.fid()], ['str', 'u'], ['str', ''], ['u32', 0]];
      default: return [['u32', this.fid()]];
    }
  }

  step(): void {
    const r = this.r;
    const type = r.chance(0.97) ? (r.chance(0.3) ? r.pick([T.WALK, T.LOPEN, T.LCREATE, T.READ, T.WRITE]) : r.pick(TYPES)) : r.below(256);
    // Versions end the session: rarer, and followed by an attach.
    if (type === T.VERSION && r.chance(0.8)) return;
    this.lastOp = `T${type}`;
    let msg: Uint8Array;
    if (type === T.WRITE) {
      const data = r.bytes(r.chance(0.9) ? r.below(5000) : r.below(70000));
      const head = encode(T.WRITE, r.below(0x10000), [['u32', this.fid()], ['u64', r.below(1 << 20)], ['u32', r.chance(0.9) ? data.length : this.v32()]]);
      const m = Buffer.concat([head, data]);
      m.writeUInt32LE(m.length, 0);
      msg = m;
    } else {
      msg = encode(type, r.below(0x10000), this.fields(type));
    }
    const k = r.below(20);
    if (k === 0) msg = msg.subarray(0, r.below(msg.length + 1));
    else if (k === 1) { msg = Buffer.from(msg); Buffer.from(msg.buffer, msg.byteOffset).writeUInt32LE(this.v32(), 0); }
    else if (k === 2) { msg = Buffer.from(msg); for (let i = 0; i < 3; i++) msg[r.below(msg.length)] = r.below(256); }
    const room = r.chance(0.9) ? 70000 : r.below(200);
    const reply = this.client.sendRaw(msg, room, r.chance(0.8) ? 1 : 1 + r.below(4));
    this.requests++;
    if (reply.errno !== undefined) this.errors++;
    if (reply.type === T.WALK + 1 && msg.length >= 15) this.held.add(Buffer.from(msg).readUInt32LE(11));
    if (reply.type === T.CLUNK + 1 || reply.type === T.REMOVE + 1) this.held.delete(Buffer.from(msg).readUInt32LE(7));
    if (type === T.VERSION) { this.held.clear(); this.held.add(0); this.client.start(65536); }
  }

  check(): void {
    if (listing(this.outside) !== this.before) throw new InvariantError('the directory beside the share changed');
    if (fs.readdirSync(this.base).sort().join(',') !== this.beforeBase) throw new InvariantError('a file appeared beside the share');
    if (this.dev.needsResetReason !== undefined) throw new InvariantError(`needs-reset on well-formed chains: ${this.dev.needsResetReason}`);
  }

  close(): void {
    this.dev.close();
    fs.rmSync(this.base, { recursive: true, force: true });
  }

  stats(): Record<string, number> {
    const s = this.dev.server.stats;
    return { requests: this.requests, 'Rlerror replies': this.errors, 'bytes read': s.bytesRead, 'bytes written': s.bytesWritten };
  }
}

export const VIRTIO_9P_TARGET: FuzzTarget = {
  name: 'virtio-9p',
  surface: 'virtio-9p file server: 9P2000.L messages of every type with held and random fids, hostile names (.., /, NUL, links out), edge counts, cut and corrupted messages, small reply buffers',
  create: (rng) => new P9Fuzz(rng),
  instanceOps: 3000,
};
