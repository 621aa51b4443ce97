// virtio-scsi played as Linux's virtio_scsi driver drives it: request
// headers, CDBs and data in guest RAM on the request queue, task
// management on the control queue, against a disk image in a temporary
// directory; hostile CDBs (ranges past the end, transfers longer than the
// buffers, reserved pages, other targets and LUNs) end in the SCSI or
// virtio-scsi error, never an exception.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import { BlockFile } from '../../src/devices/block/block-backend.js';
import { ScsiDisk } from '../../src/devices/scsi/scsi-disk.js';
import {
  VIRTIO_SCSI_S_BAD_TARGET, VIRTIO_SCSI_S_FAILURE, VTSCSI_REQ_HDR, VTSCSI_RESP_HDR, VirtioScsi, openScsi,
  vtscsiLegacyConfig,
} from '../../src/devices/virtio/virtio-scsi.js';
import { virtioScsiDevice } from '../../src/devices/virtio/virtio-scsi-record.js';
import { VIRTIO_ID_SCSI } from '../../src/devices/virtio/virtio-constants.js';
import { FakeDriver } from './virtio-driver.js';
import { activateQueues } from './virtio-queues.js';

let tmp = '';
let img = '';
const SIZE = 8 << 20;

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vscsi-'));
  img = path.join(tmp, 'disk.img');
  fs.writeFileSync(img, '');
  fs.truncateSync(img, SIZE);
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Res { used: number; response: number; status: number; senseLen: number; sense: Buffer; residual: number; data: Buffer }

class Rig {
  readonly dev: VirtioScsi;
  readonly ctl = new FakeDriver(64, 1 << 20);
  readonly evt = new FakeDriver(64, 1 << 20);
  readonly req = new FakeDriver(64, 8 << 20);
  readonly resets: string[];
  private readonly reqBuf: number;
  private readonly respBuf: number;
  private readonly dataBuf: number;

  constructor(dev?: VirtioScsi, ro = false) {
    this.dev = dev ?? new VirtioScsi(new ScsiDisk(new BlockFile({ path: img, readOnly: ro }), { serial: 'SCSISERIAL' }));
    this.resets = activateQueues(this.dev, [this.ctl, this.evt, this.req]).resets;
    this.reqBuf = this.req.alloc(4096);
    this.respBuf = this.req.alloc(4096);
    this.dataBuf = this.req.alloc(4 << 20, 4096);
  }

  /** One command: LUN field (default target 0 LUN 0), CDB, data-out or
   * a data-in buffer of `inLen` bytes (split over `segs` descriptors). */
  cmd(cdb: number[], o: { out?: Uint8Array; inLen?: number; lun?: number[]; segs?: number; respLen?: number } = {}): Res {
    const d = this.req;
    const hdr = new Uint8Array(VTSCSI_REQ_HDR);
    hdr.set(o.lun ?? [1, 0, 0x40, 0, 0, 0, 0, 0], 0);
    hdr.set(cdb, 19);
    d.fill(this.reqBuf, hdr);
    d.fill(this.respBuf, new Uint8Array(VTSCSI_RESP_HDR).fill(0xee));
    const bufs: Array<{ addr: number; len: number; write?: boolean }> = [{ addr: this.reqBuf, len: VTSCSI_REQ_HDR }];
    if (o.out) { d.fill(this.dataBuf, o.out); bufs.push({ addr: this.dataBuf, len: o.out.length }); }
    bufs.push({ addr: this.respBuf, len: o.respLen ?? VTSCSI_RESP_HDR, write: true });
    const inLen = o.inLen ?? 0;
    const segs = o.segs ?? 1;
    if (inLen) {
      d.fill(this.dataBuf, new Uint8Array(inLen));
      const seg = Math.ceil(inLen / segs);
      for (let off = 0; off < inLen; off += seg) bufs.push({ addr: this.dataBuf + off, len: Math.min(seg, inLen - off), write: true });
    }
    const before = d.usedIdx();
    d.offer(d.chain(bufs));
    this.dev.queueNotify(2);
    if (d.usedIdx() === before) throw new Error(`no completion (${this.resets.join('; ')})`);
    const used = d.usedElem(before).len;
    const r = Buffer.from(d.read(this.respBuf, VTSCSI_RESP_HDR));
    const senseLen = r.readUInt32LE(0);
    return {
      used, response: r[11], status: r[10], senseLen, sense: r.subarray(12, 12 + senseLen), residual: r.readUInt32LE(4),
      data: Buffer.from(d.read(this.dataBuf, Math.max(0, used - VTSCSI_RESP_HDR))),
    };
  }

  control(body: number[], replyLen: number): Buffer {
    const d = this.ctl;
    const a = d.alloc(body.length); const w = d.alloc(replyLen);
    d.fill(a, Uint8Array.from(body));
    d.offer(d.chain([{ addr: a, len: body.length }, { addr: w, len: replyLen, write: true }]));
    const before = d.usedIdx();
    this.dev.queueNotify(0);
    expect(d.usedIdx()).toBe(before + 1);
    return Buffer.from(d.read(w, d.usedElem(before).len));
  }
}

const cdb10 = (op: number, lba: number, n: number, flags = 0) => [op, flags, lba >>> 24, (lba >> 16) & 0xff, (lba >> 8) & 0xff, lba & 0xff, 0, n >> 8, n & 0xff, 0];
function cdb16(op: number, lba: bigint, n: number): number[] {
  const c = Buffer.alloc(16);
  c[0] = op; c.writeBigUInt64BE(lba, 2); c.writeUInt32BE(n, 10);
  return [...c];
}
/** sense key, ASC of a CHECK CONDITION */
const senseOf = (r: Res) => [r.sense[2] & 0xf, r.sense[12]];

describe('virtio-scsi device', () => {
  it("has bhyve's queues and configuration", () => {
    const rig = new Rig();
    const dev = rig.dev;
    expect(dev.deviceType).toBe(VIRTIO_ID_SCSI);
    expect(dev.queueMaxSizes).toEqual([64, 64, 64]);
    expect(dev.deviceFeatures & 0xffffffffn).toBe(0n);
    const c = new Uint8Array(36);
    dev.readConfig(0, c);
    const v = Buffer.from(c);
    expect([v.readUInt32LE(0), v.readUInt32LE(4), v.readUInt32LE(12), v.readUInt32LE(16), v.readUInt32LE(20), v.readUInt32LE(24)])
      .toEqual([1, 64, 1, 16, 96, 32]);
    expect([v.readUInt16LE(28), v.readUInt16LE(30), v.readUInt32LE(32)]).toEqual([0, 0, 16383]);
  });

  it('parses virtio-scsi,PATH[,iid=N] and opens the disk from dev with the blockif options', () => {
    const t = new ConfigTree();
    vtscsiLegacyConfig(t, 'pci.0.4.0', `${img},iid=3,ro,ser=ABC`);
    expect(t.get('pci.0.4.0.dev')).toBe(img);
    expect(t.get('pci.0.4.0.iid')).toBe('3');
    expect(t.get('pci.0.4.0.ro')).toBe('true');
    t.set('pci.0.4.0.device', 'virtio-scsi');
    const s = { bus: 0, slot: 4, func: 0, node: 'pci.0.4.0', where: '0:4:0' };
    expect(() => virtioScsiDevice.validate!(t, s)).not.toThrow();
    const dev = openScsi(t, 'pci.0.4.0');
    expect(dev.disk.file.readOnly).toBe(true);
    expect(dev.disk.opts.serial).toBe('ABC');
    dev.close();
    const bad = new ConfigTree();
    bad.set('pci.0.4.0.device', 'virtio-scsi');
    expect(() => virtioScsiDevice.validate!(bad, s)).toThrow(/requires a disk image/);
    bad.set('pci.0.4.0.dev', img);
    bad.set('pci.0.4.0.iid', 'x');
    expect(() => virtioScsiDevice.validate!(bad, s)).toThrow(/invalid iid/);
  });
});

describe('SCSI block commands', () => {
  it('INQUIRY: standard data and the VPD pages Linux reads', () => {
    const rig = new Rig();
    const std = rig.cmd([0x12, 0, 0, 0, 96, 0], { inLen: 96 });
    expect(std.status).toBe(0);
    expect(std.used).toBe(VTSCSI_RESP_HDR + 36);
    expect(std.residual).toBe(60);
    expect(std.data[0]).toBe(0);
    expect(std.data.subarray(8, 36).toString()).toBe('BHYVE   BHYVE SCSI DISK 0001');
    const pages = rig.cmd([0x12, 1, 0x00, 0, 255, 0], { inLen: 255 });
    expect([...pages.data.subarray(4, 4 + pages.data[3])]).toEqual([0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
    const sn = rig.cmd([0x12, 1, 0x80, 0, 255, 0], { inLen: 255 });
    expect(sn.data.subarray(4, 4 + sn.data[3]).toString()).toBe('SCSISERIAL');
    const id = rig.cmd([0x12, 1, 0x83, 0, 255, 0], { inLen: 255 });
    expect(id.data.subarray(8, 8 + id.data[7]).toString()).toBe('BHYVE   SCSISERIAL');
    const bl = rig.cmd([0x12, 1, 0xb0, 0, 255, 0], { inLen: 255 });
    expect(bl.data.readUInt32BE(8)).toBe(0xffff); // maximum transfer length
    expect(bl.data.readUInt32BE(20)).toBeGreaterThan(0); // maximum unmap LBA count
    const bc = rig.cmd([0x12, 1, 0xb1, 0, 255, 0], { inLen: 255 });
    expect(bc.data.readUInt16BE(4)).toBe(1); // non-rotating
    const lbp = rig.cmd([0x12, 1, 0xb2, 0, 255, 0], { inLen: 255 });
    expect(lbp.data[5] & 0x80).toBe(0x80); // LBPU
    const bad = rig.cmd([0x12, 1, 0x99, 0, 255, 0], { inLen: 255 });
    expect(bad.status).toBe(2);
    expect(senseOf(bad)).toEqual([5, 0x24]);
    // the allocation length cuts the answer
    expect(rig.cmd([0x12, 0, 0, 0, 5, 0], { inLen: 96 }).used).toBe(VTSCSI_RESP_HDR + 5);
  });

  it('READ CAPACITY (10) and (16), REPORT LUNS, MODE SENSE (6) and (10), TEST UNIT READY', () => {
    const rig = new Rig();
    const c10 = rig.cmd([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], { inLen: 8 });
    expect([c10.data.readUInt32BE(0), c10.data.readUInt32BE(4)]).toEqual([SIZE / 512 - 1, 512]);
    const c16 = rig.cmd([0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0], { inLen: 32 });
    expect(c16.data.readBigUInt64BE(0)).toBe(BigInt(SIZE / 512 - 1));
    expect(c16.data.readUInt32BE(8)).toBe(512);
    expect(c16.data[14] & 0x80).toBe(0x80); // LBPME
    const luns = rig.cmd([0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0], { inLen: 64 });
    expect(luns.data.readUInt32BE(0)).toBe(8);
    expect(luns.data.subarray(8, 16).every((x) => x === 0)).toBe(true);
    const ms6 = rig.cmd([0x1a, 0, 0x08, 0, 255, 0], { inLen: 255 });
    expect(ms6.status).toBe(0);
    expect(ms6.data[3]).toBe(8); // block descriptor
    expect(ms6.data.readUInt32BE(4)).toBe(SIZE / 512);
    expect(ms6.data[12]).toBe(0x08); // caching page
    expect(ms6.data[14] & 0x04).toBe(0x04); // WCE
    const ms10 = rig.cmd([0x5a, 0x08, 0x3f, 0, 0, 0, 0, 1, 0, 0], { inLen: 256 });
    expect(ms10.data.readUInt16BE(0) + 2).toBe(8 + 20 + 12);
    expect(ms10.data[8]).toBe(0x08);
    expect(ms10.data[28]).toBe(0x0a);
    expect(senseOf(rig.cmd([0x1a, 0, 0xc8, 0, 255, 0], { inLen: 255 }))).toEqual([5, 0x39]); // saved values
    expect(senseOf(rig.cmd([0x1a, 0, 0x1c, 0, 255, 0], { inLen: 255 }))).toEqual([5, 0x24]);
    expect(rig.cmd([0, 0, 0, 0, 0, 0]).status).toBe(0);
  });

  it('WRITE and READ (10/16) move data to and from the image; SYNCHRONIZE CACHE; UNMAP reads back zeros', () => {
    const rig = new Rig();
    const data = Buffer.alloc(64 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = (i * 13 + 7) & 0xff;
    const w = rig.cmd(cdb10(0x2a, 100, 128), { out: data });
    expect([w.response, w.status, w.residual, w.used]).toEqual([0, 0, 0, VTSCSI_RESP_HDR]);
    expect(fs.readFileSync(img).subarray(100 * 512, 100 * 512 + data.length).equals(data)).toBe(true);
    const r = rig.cmd(cdb10(0x28, 100, 128), { inLen: data.length, segs: 5 });
    expect(r.status).toBe(0);
    expect(r.data.equals(data)).toBe(true);
    const w16 = rig.cmd(cdb16(0x8a, 16000n, 8), { out: data.subarray(0, 4096) });
    expect(w16.status).toBe(0);
    const r16 = rig.cmd(cdb16(0x88, 16000n, 8), { inLen: 4096 });
    expect(r16.data.equals(data.subarray(0, 4096))).toBe(true);
    // FUA and SYNCHRONIZE CACHE flush
    expect(rig.cmd(cdb10(0x2a, 0, 1, 0x08), { out: data.subarray(0, 512) }).status).toBe(0);
    expect(rig.cmd(cdb10(0x35, 0, 0)).status).toBe(0);
    expect(rig.dev.disk.stats.flushes).toBe(2);
    // UNMAP 8 blocks at 100
    const list = Buffer.alloc(24);
    list.writeUInt16BE(22, 0); list.writeUInt16BE(16, 2); list.writeBigUInt64BE(100n, 8); list.writeUInt32BE(8, 16);
    const u = rig.cmd([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], { out: list });
    expect(u.status).toBe(0);
    const z = rig.cmd(cdb10(0x28, 100, 9), { inLen: 9 * 512 });
    expect(z.data.subarray(0, 4096).every((x) => x === 0)).toBe(true);
    expect(z.data.subarray(4096).equals(data.subarray(4096, 4608))).toBe(true);
    // a data buffer larger than the transfer: residual
    const big = rig.cmd(cdb10(0x28, 0, 1), { inLen: 4096 });
    expect([big.status, big.residual, big.used]).toEqual([0, 3584, VTSCSI_RESP_HDR + 512]);
    expect(rig.resets).toEqual([]);
  });

  it('hostile CDBs: ranges past the end, short buffers, unknown opcodes, other LUNs and targets', () => {
    const rig = new Rig();
    const blocks = SIZE / 512;
    expect(senseOf(rig.cmd(cdb10(0x28, blocks - 1, 2), { inLen: 1024 }))).toEqual([5, 0x21]);
    expect(senseOf(rig.cmd(cdb10(0x28, 0xffffffff, 1), { inLen: 512 }))).toEqual([5, 0x21]);
    expect(senseOf(rig.cmd(cdb16(0x88, 0xffffffffffffffffn, 1), { inLen: 512 }))).toEqual([5, 0x21]);
    expect(senseOf(rig.cmd(cdb16(0x8a, BigInt(blocks), 0xffffffff), { out: Buffer.alloc(512) }))).toEqual([5, 0x21]);
    // a transfer longer than the buffers given
    expect(senseOf(rig.cmd(cdb10(0x28, 0, 100), { inLen: 4096 }))).toEqual([5, 0x24]);
    expect(senseOf(rig.cmd(cdb10(0x2a, 0, 8), { out: Buffer.alloc(512) }))).toEqual([5, 0x24]);
    expect(fs.readFileSync(img).subarray(0, 4096).every((x) => x === 0)).toBe(true);
    // UNMAP with a lying parameter list
    const list = Buffer.alloc(24);
    list.writeUInt16BE(22, 0); list.writeUInt16BE(0xfff0, 2);
    expect(senseOf(rig.cmd([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], { out: list }))).toEqual([5, 0x1a]);
    list.writeUInt16BE(16, 2); list.writeBigUInt64BE(BigInt(blocks), 8); list.writeUInt32BE(1, 16);
    expect(senseOf(rig.cmd([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], { out: list }))).toEqual([5, 0x21]);
    expect(senseOf(rig.cmd([0x42, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0], { out: list }))).toEqual([5, 0x1a]);
    // unknown opcode; REQUEST SENSE returns the last sense, then NO SENSE
    const unk = rig.cmd([0xee, 0, 0, 0, 0, 0]);
    expect(senseOf(unk)).toEqual([5, 0x20]);
    expect(unk.senseLen).toBe(18);
    const rs = rig.cmd([0x03, 0, 0, 0, 18, 0], { inLen: 18 });
    expect([rs.data[2] & 0xf, rs.data[12]]).toEqual([5, 0x20]);
    expect(rig.cmd([0x03, 0, 0, 0, 18, 0], { inLen: 18 }).data[2]).toBe(0);
    // LUN 1 does not exist: INQUIRY says so, other commands fail
    const lun1 = [1, 0, 0x40, 1, 0, 0, 0, 0];
    expect(rig.cmd([0x12, 0, 0, 0, 36, 0], { inLen: 36, lun: lun1 }).data[0]).toBe(0x7f);
    expect(senseOf(rig.cmd([0, 0, 0, 0, 0, 0], { lun: lun1 }))).toEqual([5, 0x25]);
    expect(senseOf(rig.cmd(cdb10(0x28, 0, 1), { inLen: 512, lun: lun1 }))).toEqual([5, 0x25]);
    // another target, a malformed LUN field
    expect(rig.cmd([0, 0, 0, 0, 0, 0], { lun: [1, 1, 0x40, 0, 0, 0, 0, 0] }).response).toBe(VIRTIO_SCSI_S_BAD_TARGET);
    expect(rig.cmd([0, 0, 0, 0, 0, 0], { lun: [0, 0, 0, 0, 0, 0, 0, 0] }).response).toBe(VIRTIO_SCSI_S_BAD_TARGET);
    // data-out and data-in together
    expect(rig.cmd(cdb10(0x28, 0, 1), { out: Buffer.alloc(512), inLen: 512 }).response).toBe(VIRTIO_SCSI_S_FAILURE);
    expect(rig.dev.disk.stats.reads).toBe(0);
    expect(rig.resets).toEqual([]);
  });

  it('a read-only image refuses writes and UNMAP with DATA PROTECT', () => {
    const rig = new Rig(undefined, true);
    expect(senseOf(rig.cmd(cdb10(0x2a, 0, 1), { out: Buffer.alloc(512, 1) }))).toEqual([7, 0x27]);
    const list = Buffer.alloc(24);
    list.writeUInt16BE(22, 0); list.writeUInt16BE(16, 2); list.writeUInt32BE(1, 16);
    expect(senseOf(rig.cmd([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], { out: list }))).toEqual([7, 0x27]);
    const ms = rig.cmd([0x1a, 0, 0x3f, 0, 255, 0], { inLen: 255 });
    expect(ms.data[2] & 0x80).toBe(0x80); // WP
    expect(fs.readFileSync(img).subarray(0, 512).every((x) => x === 0)).toBe(true);
  });

  it('control queue: task management completes, asynchronous notification reports no events', () => {
    const rig = new Rig();
    const tmf = [0, 0, 0, 0, /* subtype */ 5, 0, 0, 0, /* lun */ 1, 0, 0x40, 0, 0, 0, 0, 0, /* id */ 1, 0, 0, 0, 0, 0, 0, 0];
    expect([...rig.control(tmf, 1)]).toEqual([0]);
    const an = [1, 0, 0, 0, 1, 0, 0x40, 0, 0, 0, 0, 0, 0xff, 0, 0, 0];
    expect([...rig.control(an, 5)]).toEqual([0, 0, 0, 0, 0]);
    expect([...rig.control([9, 0, 0, 0], 1)]).toEqual([VIRTIO_SCSI_S_FAILURE]);
  });

  it('a chain too short for the headers puts the device in needs-reset, without throwing', () => {
    const rig = new Rig();
    const d = rig.req;
    const a = d.alloc(16); const w = d.alloc(16);
    d.offer(d.chain([{ addr: a, len: 16 }, { addr: w, len: 16, write: true }]));
    expect(() => rig.dev.queueNotify(2)).not.toThrow();
    expect(rig.resets).toHaveLength(1);
    expect(rig.dev.needsResetReason).toMatch(/cannot hold/);
  });
});
