// Fuzz target for virtio-scsi's logical unit (src/devices/scsi/scsi-disk.ts
// behind src/devices/virtio/virtio-scsi.ts): commands on the request queue
// with CDBs of every operation code (the implemented ones four times in
// five), fields at edge values (LBAs near and past the end, lengths of 0
// and 2^32-1, reserved bits, VPD and mode pages), data-out and data-in
// buffers of any size (both at once, none, one byte), LUN fields naming
// other targets and units, UNMAP parameter lists that lie; and control
// requests of any type. Oracle: nothing escapes (harness), the image never
// grows, a read-only image never changes, and well-formed chains never put
// the device in needs-reset.
import * as fs from 'node:fs';
import { BlockFile } from '../../../src/devices/block/block-backend.js';
import { ScsiDisk } from '../../../src/devices/scsi/scsi-disk.js';
import { VTSCSI_REQ_HDR, VTSCSI_RESP_HDR, VirtioScsi } from '../../../src/devices/virtio/virtio-scsi.js';
import { FakeDriver } from '../../unit/virtio-driver.js';
import { activateQueues } from '../../unit/virtio-queues.js';
import { InvariantError, type FuzzInstance, type FuzzTarget } from '../harness.js';
import type { Rng } from '../rng.js';
import { scratchPath } from '../scratch.js';

let seq = 0;
const SIZE = 1 << 20;
const OPS = [0x00, 0x03, 0x08, 0x0a, 0x12, 0x1a, 0x1b, 0x1e, 0x25, 0x28, 0x2a, 0x2f, 0x35, 0x42, 0x5a, 0x88, 0x8a, 0x8f, 0x91, 0x9e, 0xa0, 0xa8, 0xaa];

class ScsiFuzz implements FuzzInstance {
  private readonly image: string;
  private readonly dev: VirtioScsi;
  private readonly ctl = new FakeDriver(64, 1 << 16);
  private readonly evt = new FakeDriver(64, 1 << 16);
  private readonly req = new FakeDriver(64, 2 << 20);
  private readonly resets: string[];
  private readonly reqBuf: number;
  private readonly respBuf: number;
  private readonly dataBuf: number;
  private readonly ro: boolean;
  lastOp?: string;
  private commands = 0;
  private checks = 0;

  constructor(private readonly r: Rng) {
    this.image = scratchPath(`scsi${seq++}.img`);
    fs.writeFileSync(this.image, '');
    fs.truncateSync(this.image, SIZE);
    this.ro = r.chance(0.2);
    this.dev = new VirtioScsi(new ScsiDisk(new BlockFile({ path: this.image, readOnly: this.ro, nodelete: r.chance(0.2) }),
      { serial: 'FUZZ', blockSize: r.chance(0.8) ? 512 : 4096 }));
    this.resets = activateQueues(this.dev, [this.ctl, this.evt, this.req]).resets;
    this.reqBuf = this.req.alloc(4096);
    this.respBuf = this.req.alloc(4096);
    this.dataBuf = this.req.alloc(1 << 20, 4096);
  }

  private cdb(): Uint8Array {
    const r = this.r;
    const c = r.chance(0.9) ? new Uint8Array(32) : r.bytes(32);
    c[0] = r.chance(0.8) ? r.pick(OPS) : r.below(256);
    const blocks = SIZE / this.dev.disk.blockSize;
    const sane = r.chance(0.5);
    const lba = sane ? r.below(blocks - 64) : r.pick([0, 1, blocks - 1, blocks, blocks + 1, r.below(blocks), 0xffffffff, r.u32()]);
    const len = sane ? 1 + r.below(64) : r.pick([0, 1, 2, 8, 255, 0xffff, r.below(64), r.u32()]);
    const dv = new DataView(c.buffer);
    switch (c[0]) {
      case 0x08: case 0x0a: c[1] = (lba >> 16) & 0x1f; c[2] = lba >> 8; c[3] = lba; c[4] = len; break;
      case 0x28: case 0x2a: case 0x2f: case 0x35: dv.setUint32(2, lba >>> 0); dv.setUint16(7, len & 0xffff); break;
      case 0xa8: case 0xaa: dv.setUint32(2, lba >>> 0); dv.setUint32(6, len >>> 0); break;
      case 0x88: case 0x8a: case 0x8f: case 0x91: dv.setUint32(2, r.chance(0.9) ? 0 : r.u32()); dv.setUint32(6, lba >>> 0); dv.setUint32(10, len >>> 0); break;
      case 0x12: c[1] = r.pick([0, 1, 2, 3]); c[2] = r.pick([0, 0x80, 0x83, 0xb0, 0xb1, 0xb2, r.below(256)]); dv.setUint16(3, len & 0xffff); break;
      case 0x1a: case 0x5a: c[1] = r.pick([0, 8]); c[2] = r.below(256); c[3] = r.pick([0, 0xff, r.below(256)]); c[4] = len; dv.setUint16(7, len & 0xffff); break;
      case 0x9e: c[1] = r.chance(0.9) ? 0x10 : r.below(32); dv.setUint32(10, len >>> 0); break;
      case 0xa0: dv.setUint32(6, len >>> 0); break;
      case 0x42: dv.setUint16(7, len & 0xffff); break;
      default: if (r.chance(0.5)) c[1] = r.below(256);
    }
    if (r.chance(0.05)) c[1] |= 0x08; // FUA / DBD
    return c;
  }

  step(): void {
    const r = this.r;
    if (r.chance(0.05)) { this.control(); return; }
    const d = this.req;
    const cdb = this.cdb();
    this.lastOp = `CDB ${Buffer.from(cdb.subarray(0, 16)).toString('hex')}`;
    const hdr = new Uint8Array(VTSCSI_REQ_HDR);
    hdr.set(r.chance(0.9) ? [1, 0, 0x40, 0] : [r.below(3), r.below(2), r.below(256), r.below(256)], 0);
    hdr.set(cdb, 19);
    d.fill(this.reqBuf, hdr);
    const bufs: Array<{ addr: number; len: number; write?: boolean }> = [{ addr: this.reqBuf, len: VTSCSI_REQ_HDR }];
    // Mostly the direction the opcode moves data in; sometimes the wrong one, both or none.
    const writes = [0x0a, 0x2a, 0xaa, 0x8a, 0x42].includes(cdb[0]);
    const dir = r.chance(0.7) ? (writes ? 0 : 5) : r.below(10);
    const dlen = () => r.pick([1, 512, 4096, 65536, 1 << 20, 1 + r.below(8192)]);
    if (dir < 3 || dir === 9) {
      const n = dlen();
      if (cdb[0] === 0x42 && r.chance(0.7)) {
        const list = new DataView(new ArrayBuffer(Math.min(n, 1024)));
        if (list.byteLength >= 24) {
          list.setUint16(0, r.below(64)); list.setUint16(2, r.pick([16, 32, r.below(1024)]));
          list.setUint32(8, 0); list.setUint32(12, r.below(4096)); list.setUint32(16, r.pick([1, 8, r.u32()]));
          d.fill(this.dataBuf, new Uint8Array(list.buffer));
        }
      }
      bufs.push({ addr: this.dataBuf, len: n });
    }
    bufs.push({ addr: this.respBuf, len: VTSCSI_RESP_HDR, write: true });
    if (dir >= 3) bufs.push({ addr: this.dataBuf, len: dlen(), write: true });
    const before = d.usedIdx();
    d.offer(d.chain(bufs));
    this.dev.queueNotify(2);
    if (d.usedIdx() !== before + 1) throw new InvariantError('a request got no completion');
    this.commands++;
    if (d.read(this.respBuf + 10, 1)[0] === 2) this.checks++;
  }

  /** A control request shaped for its type (TMF, AN query or subscribe,
   * or an unknown type), with any field values. */
  private control(): void {
    const r = this.r;
    const d = this.ctl;
    const type = r.chance(0.8) ? r.below(3) : r.u32();
    const [len, reply] = type === 0 ? [24, 1] : type === 1 || type === 2 ? [16, 5] : [4, 1];
    const body = r.bytes(len);
    new DataView(body.buffer).setUint32(0, type, true);
    const a = 0x10000 + 0x1000; const w = 0x10000 + 0x2000;
    d.fill(a, body);
    d.offer(d.chain([{ addr: a, len }, { addr: w, len: reply, write: true }]));
    this.lastOp = `control type ${type}`;
    this.dev.queueNotify(0);
  }

  check(): void {
    const st = fs.statSync(this.image);
    if (st.size !== SIZE) throw new InvariantError(`the image grew to ${st.size}`);
    if (this.ro && st.blocks !== 0) throw new InvariantError('a read-only image was written');
    if (this.resets.length) throw new InvariantError(`needs-reset on a well-formed chain: ${this.resets[0]}`);
  }

  close(): void {
    this.dev.close();
    fs.rmSync(this.image, { force: true });
  }

  stats(): Record<string, number> {
    const s = this.dev.disk.stats;
    return { commands: this.commands, 'check conditions': this.checks, reads: s.reads, writes: s.writes, unmaps: s.unmaps, flushes: s.flushes };
  }
}

export const VIRTIO_SCSI_TARGET: FuzzTarget = {
  name: 'virtio-scsi',
  surface: 'virtio-scsi logical unit: CDBs of every opcode with edge LBAs, lengths and pages, data buffers of any size and direction, other targets and LUNs, lying UNMAP lists, control requests',
  create: (rng) => new ScsiFuzz(rng),
  instanceOps: 3000,
};
