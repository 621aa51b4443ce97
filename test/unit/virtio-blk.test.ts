import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import {
  BlockDeviceError, VTBLK_CONFIG_SIZE, VirtioBlock, blockIdent, blockOptionsFromConfig, parseSectorSize,
  type BlockOptions,
} from '../../src/devices/virtio/virtio-blk.js';
import {
  VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_F_VERSION_1, VIRTIO_ID_BLOCK,
  VIRTIO_RING_F_EVENT_IDX, VIRTQ_DESC_F_NEXT, VIRTQ_USED_F_NO_NOTIFY, featureBit, hasFeature,
} from '../../src/devices/virtio/virtio-constants.js';
import { offeredFeatures } from '../../src/devices/virtio/virtio-device.js';
import { FakeDriver, activate, type Buf } from './virtio-driver.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vtblk-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const DISK = 4 << 20; // 4 MiB = 8192 sectors
let image = '';
let n = 0;
const open: VirtioBlock[] = [];

function makeImage(size = DISK): string {
  const p = path.join(tmp, `disk${n++}.img`);
  fs.writeFileSync(p, Buffer.alloc(0));
  fs.truncateSync(p, size);
  return p;
}

function device(opts: Partial<BlockOptions> = {}): VirtioBlock {
  const dev = VirtioBlock.open({ path: image, ...opts });
  open.push(dev);
  return dev;
}

beforeEach(() => {
  while (open.length) open.pop()!.close();
  image = makeImage();
});
afterAll(() => { while (open.length) open.pop()!.close(); });

interface Req {
  head: number;
  status: number;
  data: number;
}

/** Builds a virtio-blk request as a driver does: header, data split into
 * `segment`-byte descriptors, status byte; optionally through an indirect
 * table. */
function request(d: FakeDriver, type: number, sector: number, o: {
  out?: Uint8Array; inLen?: number; segment?: number; indirect?: boolean; headerLen?: number;
} = {}): Req {
  const hdr = d.alloc(16);
  const hv = new DataView(new ArrayBuffer(16));
  hv.setUint32(0, type, true);
  hv.setBigUint64(8, BigInt(sector), true);
  d.fill(hdr, new Uint8Array(hv.buffer));
  const bufs: Buf[] = [{ addr: hdr, len: o.headerLen ?? 16 }];
  const dataLen = o.out?.length ?? o.inLen ?? 0;
  const data = dataLen ? d.alloc(dataLen, 512) : 0;
  if (o.out) d.fill(data, o.out);
  const seg = o.segment ?? dataLen;
  for (let off = 0; off < dataLen; off += seg) {
    bufs.push({ addr: data + off, len: Math.min(seg, dataLen - off), write: o.inLen !== undefined });
  }
  const status = d.alloc(1);
  d.fill(status, Uint8Array.of(0xff));
  bufs.push({ addr: status, len: 1, write: true });
  const head = o.indirect ? d.indirectChain(bufs) : d.chain(bufs);
  d.offer(head);
  return { head, status, data };
}

function dwz(sector: number, num: number, flags = 0): Uint8Array {
  const v = new DataView(new ArrayBuffer(16));
  v.setBigUint64(0, BigInt(sector), true);
  v.setUint32(8, num, true);
  v.setUint32(12, flags, true);
  return new Uint8Array(v.buffer);
}

function statusOf(d: FakeDriver, r: Req): number { return d.read(r.status, 1)[0]; }
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('virtio-blk device', () => {
  it('offers bhyve features and a spec config space', () => {
    const dev = device({ sectorSize: 4096, physicalSectorSize: 16384 });
    expect(dev.deviceType).toBe(VIRTIO_ID_BLOCK);
    expect(dev.configSize).toBe(VTBLK_CONFIG_SIZE);
    const f = dev.deviceFeatures;
    for (const bit of [VIRTIO_F_VERSION_1, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES]) {
      expect(hasFeature(f, bit)).toBe(true);
    }
    expect(hasFeature(f, VIRTIO_BLK_F_RO)).toBe(false);
    const cfg = new Uint8Array(64);
    dev.readConfig(0, cfg);
    const v = new DataView(cfg.buffer);
    expect(v.getBigUint64(0, true)).toBe(BigInt(DISK / 512));
    expect(v.getUint32(12, true)).toBe(126); // seg_max
    expect(v.getUint32(20, true)).toBe(4096); // blk_size
    expect(v.getUint8(24)).toBe(2); // physical_block_exp: 16K / 4K
    expect(v.getUint16(34, true)).toBe(1); // num_queues
    expect(v.getUint32(36, true)).toBe(32768); // max_discard_sectors
    expect(v.getUint32(40, true)).toBe(1);
    expect(v.getUint32(44, true)).toBe(8); // discard_sector_alignment in 512-byte sectors
    expect(v.getUint32(48, true)).toBe(32768);
    expect(v.getUint8(56)).toBe(1);
    expect([...cfg.subarray(60)]).toEqual([0, 0, 0, 0]); // past the end reads as zero
    const part = new Uint8Array(4);
    dev.readConfig(20, part);
    expect(new DataView(part.buffer).getUint32(0, true)).toBe(4096);
    // only offered bits are acked
    dev.ackFeatures(~0n & ((1n << 64n) - 1n));
    expect(dev.ackedFeatures).toBe(offeredFeatures(dev));
  });

  it('writes a pattern through OUT and reads it back through IN, multi-segment and indirect', () => {
    const dev = device();
    const d = new FakeDriver(64, 4 << 20);
    const { interrupts, resets } = activate(dev, d);
    const pattern = randomBytes(256 * 1024);
    const w1 = request(d, VIRTIO_BLK_T_OUT, 100, { out: pattern.subarray(0, 128 * 1024), segment: 4096 });
    const w2 = request(d, VIRTIO_BLK_T_OUT, 356, { out: pattern.subarray(128 * 1024), segment: 65536, indirect: true });
    dev.queueNotify(0);
    expect(resets).toEqual([]);
    expect(statusOf(d, w1)).toBe(VIRTIO_BLK_S_OK);
    expect(statusOf(d, w2)).toBe(VIRTIO_BLK_S_OK);
    expect(d.usedIdx()).toBe(2);
    expect(d.usedElem(0)).toEqual({ id: w1.head, len: 1 });
    expect(interrupts).toEqual([0]); // one interrupt for the batch

    // The file holds the pattern at sector 100.
    const onDisk = Buffer.alloc(pattern.length);
    const fd = fs.openSync(image, 'r');
    fs.readSync(fd, onDisk, 0, onDisk.length, 100 * 512);
    fs.closeSync(fd);
    expect(sha(onDisk)).toBe(sha(pattern));

    d.setUsedEvent(d.usedIdx()); // as a driver re-enabling callbacks does
    const r = request(d, VIRTIO_BLK_T_IN, 100, { inLen: pattern.length, segment: 8192, indirect: true });
    const r2 = request(d, VIRTIO_BLK_T_IN, 99, { inLen: 1024 });
    dev.queueNotify(0);
    expect(statusOf(d, r)).toBe(VIRTIO_BLK_S_OK);
    expect(d.usedElem(2)).toEqual({ id: r.head, len: pattern.length + 1 });
    expect(sha(d.read(r.data, pattern.length))).toBe(sha(pattern));
    expect([...d.read(r2.data, 512)].every((b) => b === 0)).toBe(true);
    expect(Buffer.from(d.read(r2.data + 512, 512)).equals(pattern.subarray(0, 512))).toBe(true);
    expect(interrupts).toEqual([0, 0]);
    expect(dev.stats.bytesRead).toBe(pattern.length + 1024);
  });

  it('FLUSH completes OK; without negotiated FLUSH writes are written through', () => {
    const dev = device();
    const d = new FakeDriver(16);
    activate(dev, d, featureBit(VIRTIO_F_VERSION_1)); // no FLUSH acked
    const w = request(d, VIRTIO_BLK_T_OUT, 0, { out: new Uint8Array(512).fill(7) });
    const f = request(d, VIRTIO_BLK_T_FLUSH, 0);
    dev.queueNotify(0);
    expect(statusOf(d, w)).toBe(VIRTIO_BLK_S_OK);
    expect(statusOf(d, f)).toBe(VIRTIO_BLK_S_OK);
    expect(d.usedElem(1).len).toBe(1);
    expect(dev.stats.flushes).toBe(1);
  });

  it('GET_ID returns ser= or bhyve\'s MD5-derived identifier', () => {
    const dev = device({ serial: 'SERIAL-0123456789-ABCDEF' });
    const d = new FakeDriver(16);
    activate(dev, d);
    const r = request(d, VIRTIO_BLK_T_GET_ID, 0, { inLen: 20 });
    dev.queueNotify(0);
    expect(statusOf(d, r)).toBe(VIRTIO_BLK_S_OK);
    expect(Buffer.from(d.read(r.data, 20)).toString('latin1')).toBe('SERIAL-0123456789-AB');
    expect(d.usedElem(0).len).toBe(21);

    const md5 = createHash('md5').update(image).digest();
    const hex = (i: number) => md5[i].toString(16).toUpperCase().padStart(2, '0');
    const expected = `BHYVE-${hex(0)}${hex(1)}-${hex(2)}${hex(3)}-${hex(4)}${hex(5)}`;
    expect(expected.length).toBe(20);
    expect(Buffer.from(blockIdent(image)).toString('latin1')).toBe(expected);
    const short = blockIdent('/x', 'abc');
    expect([...short.subarray(3)].every((b) => b === 0)).toBe(true);
  });

  it('DISCARD punches a hole that reads back as zeros; WRITE_ZEROES zeroes with and without UNMAP', () => {
    const dev = device();
    const d = new FakeDriver(32, 4 << 20);
    activate(dev, d);
    const ones = new Uint8Array(1 << 20).fill(0xa5);
    request(d, VIRTIO_BLK_T_OUT, 0, { out: ones });
    dev.queueNotify(0);
    fs.fsyncSync(fs.openSync(image, 'r'));
    const blocksBefore = fs.statSync(image).blocks;

    const dis = request(d, VIRTIO_BLK_T_DISCARD, 0, { out: dwz(256, 512) }); // 128K..384K
    const wz = request(d, VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: dwz(1024, 8) }); // 512K, 4K
    const wzu = request(d, VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: dwz(1536, 16, 1) }); // 768K, 8K, UNMAP
    dev.queueNotify(0);
    expect([statusOf(d, dis), statusOf(d, wz), statusOf(d, wzu)]).toEqual([0, 0, 0]);
    expect(fs.statSync(image).blocks).toBeLessThan(blocksBefore);

    const r = request(d, VIRTIO_BLK_T_IN, 0, { inLen: 1 << 20 });
    dev.queueNotify(0);
    const back = d.read(r.data, 1 << 20);
    const zeroAt = (from: number, len: number) => back.subarray(from, from + len).every((b) => b === 0);
    const a5At = (from: number, len: number) => back.subarray(from, from + len).every((b) => b === 0xa5);
    expect(a5At(0, 128 << 10)).toBe(true);
    expect(zeroAt(128 << 10, 256 << 10)).toBe(true);
    expect(a5At(384 << 10, 128 << 10)).toBe(true);
    expect(zeroAt(512 << 10, 4096)).toBe(true);
    expect(a5At((512 << 10) + 4096, 4096)).toBe(true);
    expect(zeroAt(768 << 10, 8192)).toBe(true);
    expect(a5At((768 << 10) + 8192, 1024)).toBe(true);
  });

  it('DISCARD and WRITE_ZEROES validation: flags, segments, range, nodelete', () => {
    const dev = device({ nodelete: true });
    expect(hasFeature(dev.deviceFeatures, VIRTIO_BLK_F_DISCARD)).toBe(false);
    const d = new FakeDriver(32);
    activate(dev, d);
    const two = new Uint8Array(32); two.set(dwz(0, 1)); two.set(dwz(8, 1), 16);
    const rs = [
      request(d, VIRTIO_BLK_T_DISCARD, 0, { out: dwz(0, 8) }), // nodelete -> UNSUPP
      request(d, VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: dwz(0, 8, 2) }), // unknown flag -> UNSUPP
      request(d, VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: two }), // 2 segments > max 1 -> UNSUPP
      request(d, VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: dwz(8190, 8) }), // past the end -> IOERR
      request(d, VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: dwz(0, 40000) }), // > max sectors -> IOERR
      request(d, VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: dwz(0, 8).subarray(0, 12) }), // truncated -> UNSUPP
      request(d, VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: dwz(0, 8, 1) }), // UNMAP without discard: zeroes
    ];
    dev.queueNotify(0);
    expect(rs.map((r) => statusOf(d, r))).toEqual([
      VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_IOERR,
      VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_S_OK,
    ]);
  });

  it('read-only: RO feature, writes fail with IOERR and leave the image untouched', () => {
    fs.writeFileSync(image, Buffer.alloc(DISK, 0x11));
    const dev = device({ readOnly: true });
    expect(hasFeature(dev.deviceFeatures, VIRTIO_BLK_F_RO)).toBe(true);
    expect(hasFeature(dev.deviceFeatures, VIRTIO_BLK_F_WRITE_ZEROES)).toBe(false);
    expect(hasFeature(dev.deviceFeatures, VIRTIO_BLK_F_DISCARD)).toBe(false);
    const d = new FakeDriver(16);
    activate(dev, d);
    const w = request(d, VIRTIO_BLK_T_OUT, 0, { out: new Uint8Array(512) });
    const z = request(d, VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: dwz(0, 8) });
    const x = request(d, VIRTIO_BLK_T_DISCARD, 0, { out: dwz(0, 8) });
    const r = request(d, VIRTIO_BLK_T_IN, 0, { inLen: 512 });
    const f = request(d, VIRTIO_BLK_T_FLUSH, 0);
    dev.queueNotify(0);
    expect([w, z, x, r, f].map((q) => statusOf(d, q))).toEqual([
      VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_OK,
    ]);
    expect(d.read(r.data, 512).every((b) => b === 0x11)).toBe(true);
    expect(fs.readFileSync(image).every((b) => b === 0x11)).toBe(true);
  });

  it('bad requests complete with IOERR or UNSUPP, never an exception', () => {
    const dev = device();
    const d = new FakeDriver(64, 2 << 20);
    const { resets } = activate(dev, d);
    const rs = [
      request(d, VIRTIO_BLK_T_IN, 8192, { inLen: 512 }), // first sector past the end
      request(d, VIRTIO_BLK_T_IN, 8191, { inLen: 1024 }), // runs past the end
      request(d, VIRTIO_BLK_T_OUT, 2 ** 60, { out: new Uint8Array(512) }), // huge sector
      request(d, VIRTIO_BLK_T_IN, 0, { inLen: 100 }), // not a multiple of 512
      request(d, VIRTIO_BLK_T_OUT, 0, { out: new Uint8Array(513) }),
      request(d, VIRTIO_BLK_T_IN, 0, { inLen: 512, headerLen: 12 }), // short header
      request(d, 99, 0), // unknown type
      request(d, VIRTIO_BLK_T_IN, 8191, { inLen: 512 }), // last sector: fine
    ];
    expect(() => dev.queueNotify(0)).not.toThrow();
    expect(resets).toEqual([]);
    expect(rs.map((r) => statusOf(d, r))).toEqual([
      VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_IOERR,
      VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_S_OK,
    ]);
    expect(d.usedElem(0).len).toBe(1);

    // A chain without any writable byte is handed back with length 0.
    const hdr = d.alloc(16);
    d.offer(d.chain([{ addr: hdr, len: 16 }]));
    dev.queueNotify(0);
    expect(d.usedElem(8).len).toBe(0);
    expect(dev.needsResetReason).toBeUndefined();
  });

  it('a hostile chain puts the device in needs-reset; notify never throws; reset recovers', () => {
    const dev = device();
    const d = new FakeDriver(16);
    const { resets, configInterrupts } = activate(dev, d);
    const hdr = d.alloc(16);
    d.setDesc(0, hdr, 16, VIRTQ_DESC_F_NEXT, 1);
    d.setDesc(1, hdr, 16, VIRTQ_DESC_F_NEXT, 0);
    d.offer(0);
    expect(() => dev.queueNotify(0)).not.toThrow();
    expect(resets.length).toBe(1);
    expect(resets[0]).toMatch(/loops/);
    expect(configInterrupts.length).toBe(1);
    expect(dev.needsResetReason).toMatch(/loops/);
    dev.queueNotify(0); // ignored while broken
    dev.queueNotify(7); // no such queue: ignored
    expect(resets.length).toBe(1);

    dev.reset();
    expect(dev.needsResetReason).toBeUndefined();
    expect(dev.activated).toBe(false);
    const d2 = new FakeDriver(16);
    activate(dev, d2);
    const r = request(d2, VIRTIO_BLK_T_IN, 0, { inLen: 512 });
    dev.queueNotify(0);
    expect(statusOf(d2, r)).toBe(VIRTIO_BLK_S_OK);
  });

  it('serveQuiet (the iothread\'s serve): notifies off while serving, back on after, and chains added meanwhile served', () => {
    for (const eventIdx of [false, true]) {
      const dev = device();
      const d = new FakeDriver(16);
      const all = offeredFeatures(dev);
      activate(dev, d, eventIdx ? all : all & ~featureBit(VIRTIO_RING_F_EVENT_IDX));
      const first = request(d, VIRTIO_BLK_T_IN, 0, { inLen: 512 });
      // What a driver sees while the device reads: asked not to notify
      // (NO_NOTIFY, or under EVENT_IDX avail_event still behind what it
      // added). The driver adds a second request during the first read.
      const seen: Array<{ flags: number; availEvent: number }> = [];
      let late: Req | undefined;
      const readv = dev.file.readv.bind(dev.file);
      dev.file.readv = (views, offset) => {
        seen.push({ flags: d.usedFlags(), availEvent: d.availEvent() });
        if (!late) late = request(d, VIRTIO_BLK_T_IN, 8, { inLen: 512 });
        return readv(views, offset);
      };
      dev.serveQuiet(0);
      expect(statusOf(d, first)).toBe(VIRTIO_BLK_S_OK);
      expect(statusOf(d, late!)).toBe(VIRTIO_BLK_S_OK);
      expect(d.usedIdx()).toBe(2);
      expect(seen.length).toBe(2);
      if (eventIdx) {
        // held at 0: the driver that added chain 1 (avail idx 0 -> 2) notifies at most once
        expect(seen[0].availEvent).toBe(0);
        expect(d.availEvent()).toBe(2);
      } else {
        expect(seen.map((x) => x.flags & VIRTQ_USED_F_NO_NOTIFY)).toEqual([VIRTQ_USED_F_NO_NOTIFY, VIRTQ_USED_F_NO_NOTIFY]);
        expect(d.usedFlags() & VIRTQ_USED_F_NO_NOTIFY).toBe(0);
      }
      dev.close();
    }
    // A hostile chain: needs-reset, no exception.
    const dev = device();
    const d = new FakeDriver(16);
    const { resets } = activate(dev, d);
    const hdr = d.alloc(16);
    d.setDesc(0, hdr, 16, VIRTQ_DESC_F_NEXT, 0);
    d.offer(0);
    expect(() => dev.serveQuiet(0)).not.toThrow();
    expect(resets.length).toBe(1);
    expect(dev.needsResetReason).toMatch(/loops/);
  });

  it('avail idx jumping past the queue size and out-of-RAM buffers: needs-reset', () => {
    for (const build of [
      (d: FakeDriver) => d.setAvailIdx(100),
      (d: FakeDriver) => { d.setDesc(0, 0x7fff_0000, 512, 0, 0); d.offer(0); },
    ]) {
      const dev = device();
      const d = new FakeDriver(16);
      const { resets } = activate(dev, d);
      build(d);
      expect(() => dev.queueNotify(0)).not.toThrow();
      expect(resets.length).toBe(1);
      dev.close();
    }
  });

  it('locks the image: a second read-write open fails with a clear error', () => {
    device();
    expect(() => VirtioBlock.open({ path: image })).toThrow(BlockDeviceError);
    expect(() => VirtioBlock.open({ path: image })).toThrow(`disk image ${image} is in use by another VM`);
    expect(() => VirtioBlock.open({ path: image, readOnly: true })).toThrow(/in use by another VM/);
    while (open.length) open.pop()!.close();
    // two read-only users may share it
    device({ readOnly: true });
    device({ readOnly: true });
    expect(() => VirtioBlock.open({ path: image })).toThrow(/in use by another VM/);
  });

  it('missing image and bad options are one-line BlockDeviceErrors', () => {
    expect(() => VirtioBlock.open({ path: path.join(tmp, 'nope.img') })).toThrow(/does not exist/);
    expect(() => VirtioBlock.open({ path: tmp })).toThrow(BlockDeviceError);
    expect(parseSectorSize('4096/16384')).toEqual({ logical: 4096, physical: 16384 });
    expect(parseSectorSize('512')).toEqual({ logical: 512, physical: 512 });
    for (const bad of ['0', '1000', '256', '4096/512', 'x', '512/']) {
      expect(() => parseSectorSize(bad)).toThrow(/invalid sector size/);
    }
    const tree = new ConfigTree();
    tree.set('pci.0.3.0.device', 'virtio-blk');
    tree.set('pci.0.3.0.path', image);
    tree.set('pci.0.3.0.ro', 'true');
    tree.set('pci.0.3.0.direct', 'true');
    tree.set('pci.0.3.0.sectorsize', '4096');
    tree.set('pci.0.3.0.ser', 'disk-1');
    tree.set('pci.0.3.0.nodelete', 'true');
    expect(blockOptionsFromConfig(tree, 'pci.0.3.0')).toEqual({
      path: image, readOnly: true, nocache: false, sync: true, nodelete: true,
      sectorSize: 4096, physicalSectorSize: 4096, serial: 'disk-1',
    });
    expect(() => blockOptionsFromConfig(new ConfigTree(), 'pci.0.4.0')).toThrow(/no disk image path/);
    // The iothread's spin window: 0..1000 us.
    tree.set('pci.0.3.0.iothread', 'true');
    tree.set('pci.0.3.0.iothread_poll_us', '0');
    expect(blockOptionsFromConfig(tree, 'pci.0.3.0')).toMatchObject({ iothread: true, iothreadPollUs: 0 });
    tree.set('pci.0.3.0.iothread_poll_us', '250');
    expect(blockOptionsFromConfig(tree, 'pci.0.3.0').iothreadPollUs).toBe(250);
    for (const bad of ['-1', '1001', 'x', '1e3', '']) {
      tree.set('pci.0.3.0.iothread_poll_us', bad);
      expect(() => blockOptionsFromConfig(tree, 'pci.0.3.0')).toThrow(/iothread_poll_us/);
    }
    tree.set('pci.0.3.0.iothread_poll_us', '0');
    // Its reader threads: 0..8.
    expect(blockOptionsFromConfig(tree, 'pci.0.3.0').iothreadReaders).toBeUndefined();
    tree.set('pci.0.3.0.iothread_readers', '3');
    expect(blockOptionsFromConfig(tree, 'pci.0.3.0').iothreadReaders).toBe(3);
    tree.set('pci.0.3.0.iothread_readers', '0');
    expect(blockOptionsFromConfig(tree, 'pci.0.3.0').iothreadReaders).toBe(0);
    for (const bad of ['-1', '9', 'x', '']) {
      tree.set('pci.0.3.0.iothread_readers', bad);
      expect(() => blockOptionsFromConfig(tree, 'pci.0.3.0')).toThrow(/iothread_readers/);
    }
  });

  it('nocache (O_DIRECT) and sync work, including guest buffers that are not aligned', () => {
    const dev = device({ nocache: true, sync: true });
    const d = new FakeDriver(32, 2 << 20);
    activate(dev, d);
    const pattern = randomBytes(64 * 1024);
    const w = request(d, VIRTIO_BLK_T_OUT, 8, { out: pattern, segment: 4096 });
    // an unaligned buffer: header and data in one odd-placed descriptor
    const odd = d.alloc(16 + 1024 + 7) + 7;
    const hv = new DataView(d.bytes.buffer, d.off(odd), 16);
    hv.setUint32(0, VIRTIO_BLK_T_IN, true);
    hv.setBigUint64(8, 8n, true);
    const dataOdd = d.alloc(1024 + 3) + 3;
    const st = d.alloc(1);
    d.offer(d.chain([{ addr: odd, len: 16 }, { addr: dataOdd, len: 1024, write: true }, { addr: st, len: 1, write: true }]));
    dev.queueNotify(0);
    expect(statusOf(d, w)).toBe(VIRTIO_BLK_S_OK);
    expect(d.read(st, 1)[0]).toBe(VIRTIO_BLK_S_OK);
    expect(Buffer.from(d.read(dataOdd, 1024)).equals(pattern.subarray(0, 1024))).toBe(true);
  });

  it('throughput of synchronous I/O through guest-memory views (informational)', () => {
    const dev = device();
    const d = new FakeDriver(128, 16 << 20);
    activate(dev, d);
    const size = 128 * 1024;
    const reqs = 32; // 4 MiB per pass, 96 descriptors
    const bufs: Req[] = [];
    for (let i = 0; i < reqs; i++) bufs.push(request(d, VIRTIO_BLK_T_OUT, (i * size) / 512, { out: randomBytes(size) }));
    let t = process.hrtime.bigint();
    dev.queueNotify(0);
    const writeNs = Number(process.hrtime.bigint() - t);
    for (let i = 0; i < reqs; i++) request(d, VIRTIO_BLK_T_IN, (i * size) / 512, { inLen: size });
    t = process.hrtime.bigint();
    dev.queueNotify(0);
    const readNs = Number(process.hrtime.bigint() - t);
    const mb = (reqs * size) / (1 << 20);
    console.log(`virtio-blk sync path: write ${(mb / (writeNs / 1e9)).toFixed(0)} MB/s, `
      + `read ${(mb / (readNs / 1e9)).toFixed(0)} MB/s (128 KiB requests, page cache)`);
    // 4 KiB random reads, 32 per notify, as a driver with a deep queue does.
    const d2 = new FakeDriver(128, 16 << 20);
    dev.reset();
    activate(dev, d2);
    const bufs4k = Array.from({ length: 32 }, () => d2.alloc(4096, 4096));
    const hdrs = Array.from({ length: 32 }, () => d2.alloc(16));
    const sts = Array.from({ length: 32 }, () => d2.alloc(1));
    const rounds = 200;
    let iopsNs = 0;
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < 32; i++) {
        const hv = new DataView(d2.bytes.buffer, d2.off(hdrs[i]), 16);
        hv.setUint32(0, VIRTIO_BLK_T_IN, true);
        hv.setBigUint64(8, BigInt(Math.floor(Math.random() * 1024) * 8), true);
        d2.offer(d2.chain([{ addr: hdrs[i], len: 16 }, { addr: bufs4k[i], len: 4096, write: true }, { addr: sts[i], len: 1, write: true }]));
      }
      t = process.hrtime.bigint();
      dev.queueNotify(0);
      iopsNs += Number(process.hrtime.bigint() - t);
    }
    console.log(`virtio-blk sync path: 4 KiB random read ${Math.round((rounds * 32) / (iopsNs / 1e9))} IOPS `
      + `(${(iopsNs / (rounds * 32) / 1000).toFixed(1)} us/request in the device, page cache)`);
    expect(dev.stats.ioErrors).toBe(0);
  });
});
