// The NVMe controller (bhyve's pci_nvme.c) driven as a guest driver drives
// it: PCI identity, BAR 0 registers, CC/CSTS bring-up, admin and I/O
// submission / completion queues in a guest-memory buffer, PRP entries and
// lists, MSI-X per queue, features, log pages, async events, and hostile
// inputs (doorbells past the queue or for missing queues, commands on a
// disabled controller, queues and PRPs outside RAM, a full CQ).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { crc16, defaultEui64 } from '../../src/devices/nvme/nvme-data.js';
import { nvmeDevice } from '../../src/devices/nvme/nvme-record.js';
import { type Cqe, Rig, RAM, RAM_SIZE, SLOT } from './nvme-driver.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nvme-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
function image(size = 4 << 20): string {
  const p = path.join(tmp, `d${n++}.img`);
  fs.writeFileSync(p, '');
  fs.truncateSync(p, size);
  return p;
}

const rigs: Rig[] = [];
afterEach(() => { for (const r of rigs.splice(0)) r.dev.close(); });
function rig(settings: Record<string, string>): Rig {
  const r = new Rig(settings);
  rigs.push(r);
  return r;
}
const disk = (p: string, extra: Record<string, string> = {}) => {
  const s: Record<string, string> = { [`pci.0.${SLOT}.0.path`]: p };
  for (const [k, v] of Object.entries(extra)) s[`pci.0.${SLOT}.0.${k}`] = v;
  return s;
};
function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = (seed * 2654435761) >>> 0;
  for (let i = 0; i < len; i++) { x = (x * 1103515245 + 12345) >>> 0; b[i] = x >>> 24; }
  return b;
}

describe('nvme: PCI function and registers', () => {
  it('is bhyve\'s FB5D:0A0A, class 01/08/02, 64-bit BAR 0 of 16 KiB, MSI-X (maxq+1) in BAR 4, PCIe capability', () => {
    const r = rig(disk(image()));
    expect(r.cfgRd(0x00)).toBe(0x0a0afb5d);
    expect(r.cfgRd(0x08) >>> 8).toBe(0x010802);
    expect(r.cfgRd(0x10) & 0x6).toBe(0x4);
    const caps = new Map<number, number>();
    for (let c = r.cfgRd(0x34, 1); c; c = r.cfgRd(c + 1, 1)) caps.set(r.cfgRd(c, 1), c);
    expect(caps.has(0x10)).toBe(true);
    expect((r.cfgRd(caps.get(0x10)! + 2, 2) >> 4) & 0xf).toBe(9);
    const mx = caps.get(0x11)!;
    expect((r.cfgRd(mx + 2, 2) & 0x7ff) + 1).toBe(17);
    expect(r.cfgRd(mx + 4) & 7).toBe(4);
    r.cfgWr(0x10, 0xffffffff);
    expect((~(r.cfgRd(0x10) & ~0xf) + 1) >>> 0).toBe(16384);
  });

  it('CAP (MQES 2047, CQR, TO 60, NVM command set), VS 1.4; CC.EN brings CSTS.RDY; CC.EN=0 resets; shutdown completes', () => {
    const r = rig(disk(image()));
    expect(r.rd(0x00)).toBe(2047 | (1 << 16) | (60 << 24));
    expect(r.rd(0x04)).toBe(1 << 5);
    expect(r.rd(0x08)).toBe(0x10400);
    expect(r.rd(0x1c)).toBe(0);
    r.enable();
    expect(r.rd(0x1c) & 1).toBe(1);
    expect(r.rd(0x14) & 1).toBe(1);
    r.wr(0x14, 1 | (6 << 16) | (4 << 20) | (1 << 14));
    expect((r.rd(0x1c) >> 2) & 3).toBe(2);
    r.wr(0x14, 0);
    expect(r.rd(0x1c) & 1).toBe(0);
    // after the reset the admin queue is gone: a doorbell does nothing
    r.put(0, 0x06);
    r.ring(0);
    expect(r.take(0)).toBeUndefined();
  });
});

describe('nvme: admin commands', () => {
  it('Identify controller, namespace, active namespace list and descriptors, as bhyve fills them', () => {
    const r = rig(disk(image(6 << 20)));
    r.enable();
    const buf = r.alloc(8192);
    expect(r.admin(0x06, { prp1: buf, cdw: { 10: 1 } }).sc).toBe(0);
    const c = r.bytes.subarray(r.off(buf), r.off(buf) + 4096);
    const cv = new DataView(c.buffer, c.byteOffset);
    expect(cv.getUint16(0, true)).toBe(0xfb5d);
    expect(Buffer.from(c.subarray(4, 24)).toString().trim()).toBe(`NVME-${SLOT}-0`);
    expect(Buffer.from(c.subarray(24, 64)).toString().trim()).toBe('bhyve-NVMe');
    expect(Buffer.from(c.subarray(64, 72)).toString().trim()).toBe('1.0');
    expect(c[77]).toBe(9);
    expect(cv.getUint32(80, true)).toBe(0x10400);
    expect(c[512]).toBe(0x66);
    expect(c[513]).toBe(0x44);
    expect(cv.getUint32(516, true)).toBe(1);
    expect(cv.getUint16(520, true) & 4).toBe(4); // DSM (auto: the file can punch holes)
    expect(r.admin(0x06, { nsid: 1, prp1: buf, cdw: { 10: 0 } }).sc).toBe(0);
    const ns = new DataView(r.bytes.buffer, r.off(buf));
    expect(Number(ns.getBigUint64(0, true))).toBe((6 << 20) / 512);
    expect((ns.getUint32(128, true) >> 16) & 0xff).toBe(9);
    const eui = ns.getBigUint64(120, false);
    expect(eui).toBe(defaultEui64('vm0', 0, SLOT, 0, 1));
    expect(eui >> 40n).toBe(0x589cfcn);
    expect(r.admin(0x06, { nsid: 0xffffffff, prp1: buf, cdw: { 10: 0 } }).sc).toBe(0x0b);
    expect(r.admin(0x06, { prp1: buf, cdw: { 10: 2 } }).sc).toBe(0);
    expect(new DataView(r.bytes.buffer, r.off(buf)).getUint32(0, true)).toBe(1);
    expect(r.admin(0x06, { nsid: 1, prp1: buf, cdw: { 10: 3 } }).sc).toBe(0);
    expect([r.bytes[r.off(buf)], r.bytes[r.off(buf) + 1]]).toEqual([1, 8]);
    expect(r.admin(0x06, { prp1: buf, cdw: { 10: 0x55 } }).sc).toBe(2);
    // a data buffer crossing a page boundary lands through PRP2
    const cross = r.alloc(8192) + 4000;
    expect(r.admin(0x06, { prp1: cross, prp2: (cross & ~0xfff) + 4096, cdw: { 10: 1 } }).sc).toBe(0);
    expect(new DataView(r.bytes.buffer, r.off(cross)).getUint16(0, true)).toBe(0xfb5d);
    expect(crc16(0, Buffer.from('123456789'))).toBe(0xbb3d); // CRC-16/ARC check value
  });

  it('features: number of queues once, vector configuration, async events, unsupported ids; log pages', () => {
    const r = rig(disk(image()));
    r.enable();
    const nq = r.admin(0x09, { cdw: { 10: 0x07, 11: 0x00ff00ff } });
    expect(nq.sc).toBe(0);
    expect(nq.cdw0).toBe(0x000f000f); // clamped to maxq 16
    expect(r.admin(0x09, { cdw: { 10: 0x07, 11: 0 } }).sc).toBe(0x0c);
    expect(r.admin(0x0a, { cdw: { 10: 0x07 } }).cdw0).toBe(0x000f000f);
    expect(r.admin(0x0a, { cdw: { 10: 0x0b } }).cdw0).toBe(0x11f);
    expect(r.admin(0x09, { cdw: { 10: 0x08, 11: 0x0a05 } }).sc).toBe(0); // interrupt coalescing
    expect(r.admin(0x0a, { cdw: { 10: 0x08 } }).cdw0).toBe(0x0a05);
    expect(r.admin(0x09, { cdw: { 10: 0x09, 11: 0 } }).sc).toBe(2); // admin vector without CD
    expect(r.admin(0x09, { cdw: { 10: 0x09, 11: 1 << 16 } }).sc).toBe(0);
    expect(r.admin(0x09, { cdw: { 10: 0x06, 11: 1 } }).sc).toBe(2); // volatile write cache: none
    expect(r.admin(0x09, { nsid: 1, cdw: { 10: 0x07, 11: 0 } }).sct).toBe(1); // not namespace specific
    expect(r.admin(0x09, { cdw: { 10: 0x40 } }).sc).toBe(2);
    const log = r.alloc(4096);
    expect(r.admin(0x02, { prp1: log, cdw: { 10: 0x02 | (127 << 16) } }).sc).toBe(0);
    const h = new DataView(r.bytes.buffer, r.off(log));
    expect(h.getUint16(1, true)).toBe(296);
    expect(r.bytes[r.off(log) + 3]).toBe(100);
    expect(r.admin(0x02, { prp1: log, cdw: { 10: 0x03 | (127 << 16) } }).sc).toBe(0);
    expect(r.bytes[r.off(log)]).toBe(1);
    expect(r.admin(0x02, { prp1: log, cdw: { 10: 0x01 | (15 << 16) } }).sc).toBe(0);
    const bad = r.admin(0x02, { prp1: log, cdw: { 10: 0x7f } });
    expect([bad.sct, bad.sc]).toEqual([1, 9]);
    expect(r.admin(0x10).sc).toBe(6); // firmware activate: invalid slot
    expect(r.admin(0x84).sc).toBe(2); // sanitize: refused
    expect(r.admin(0xc0).sc).toBe(1); // unknown opcode
    expect(r.admin(0x08, { cdw: { 10: 1 } }).cdw0).toBe(1); // abort: not aborted
  });

  it('async event requests complete when a SMART event is posted (temperature threshold crossed)', () => {
    const r = rig(disk(image()));
    r.enable();
    for (let i = 0; i < 5; i++) r.put(0, 0x0c);
    r.put(0, 0x0c); // the sixth exceeds AERL
    r.ring(0);
    const over = r.take(0)!;
    expect([over.sct, over.sc]).toEqual([1, 5]);
    expect(r.take(0)).toBeUndefined();
    // Over-temperature threshold below our 296 K: critical warning, SMART event.
    const set = r.admin(0x09, { cdw: { 10: 0x04, 11: 250 } });
    expect(set.sc).toBe(0);
    const ev = r.take(0)!;
    expect(ev).toBeDefined();
    expect(ev.cdw0 & 7).toBe(1); // SMART / health
    expect((ev.cdw0 >> 16) & 0xff).toBe(0x02); // log page to read
  });

  it('queue creation and deletion validate ids, sizes, vectors and the CQ in use', () => {
    const r = rig(disk(image()));
    r.enable();
    const cq = r.alloc(4096);
    const e = (c: { sct: number; sc: number }) => [c.sct, c.sc];
    expect(e(r.admin(0x05, { prp1: cq, cdw: { 10: 0 | (15 << 16), 11: 3 } }))).toEqual([1, 1]); // qid 0
    expect(e(r.admin(0x05, { prp1: cq, cdw: { 10: 1 | (0 << 16), 11: 3 } }))).toEqual([1, 2]); // size 1
    expect(e(r.admin(0x05, { prp1: cq, cdw: { 10: 1 | (15 << 16), 11: 3 | (40 << 16) } }))).toEqual([1, 8]); // vector
    expect(e(r.admin(0x05, { prp1: cq, cdw: { 10: 1 | (15 << 16), 11: 2 } }))).toEqual([0, 2]); // not contiguous
    expect(e(r.admin(0x05, { prp1: 0x10000, cdw: { 10: 1 | (15 << 16), 11: 3 } }))).toEqual([0, 2]); // outside RAM
    expect(e(r.admin(0x05, { prp1: cq, cdw: { 10: 1 | (15 << 16), 11: 3 } }))).toEqual([0, 0]);
    expect(e(r.admin(0x05, { prp1: cq, cdw: { 10: 1 | (15 << 16), 11: 3 } }))).toEqual([1, 1]); // exists
    const sq = r.alloc(4096);
    expect(e(r.admin(0x01, { prp1: sq, cdw: { 10: 1 | (15 << 16), 11: 1 | (2 << 16) } }))).toEqual([1, 0]); // CQ 2 missing
    expect(e(r.admin(0x01, { prp1: sq, cdw: { 10: 1 | (15 << 16), 11: 1 | (1 << 16) } }))).toEqual([0, 0]);
    expect(e(r.admin(0x04, { cdw: { 10: 1 } }))).toEqual([1, 0x0c]); // CQ in use
    expect(e(r.admin(0x00, { cdw: { 10: 1 } }))).toEqual([0, 0]);
    expect(e(r.admin(0x00, { cdw: { 10: 1 } }))).toEqual([1, 1]);
    expect(e(r.admin(0x04, { cdw: { 10: 1 } }))).toEqual([0, 0]);
  });
});

describe('nvme: I/O', () => {
  it('write and read through PRP1, PRP2 and a chained PRP list; flush; SMART counts them', () => {
    const img = image();
    const r = rig(disk(img));
    r.enable();
    r.ioQueues();
    // 64 KiB = 16 pages, first page offset 0x200: PRP1 + a list of 16 entries
    const data = pattern(65536, 3);
    const buf = r.alloc(20 * 4096) + 0x200;
    r.bytes.set(data, r.off(buf));
    const list = r.alloc(4096);
    for (let i = 0; i < 16; i++) r.dv.setBigUint64(r.off(list) + 8 * i, BigInt((buf & ~0xfff) + 4096 * (i + 1)), true);
    const w = r.io1(1, 0x01, { prp1: buf, prp2: list, cdw: { 10: 40, 11: 0, 12: 127 } });
    expect([w.sct, w.sc, w.sqid]).toEqual([0, 0, 1]);
    expect(Buffer.compare(fs.readFileSync(img).subarray(40 * 512, 40 * 512 + 65536), data)).toBe(0);
    r.bytes.fill(0, r.off(buf), r.off(buf) + 65536);
    expect(r.io1(1, 0x02, { prp1: buf, prp2: list, cdw: { 10: 40, 12: 127 } }).sc).toBe(0);
    expect(Buffer.compare(r.bytes.subarray(r.off(buf), r.off(buf) + 65536), data)).toBe(0);
    // a list that chains: the first list page has room for two entries
    // (one data page, then the pointer to the next list)
    const big = 600 * 1024;
    const l1 = r.alloc(8192) + 4096 - 16;
    const l2 = r.alloc(4096);
    const dbuf = r.alloc(big + 8192);
    const pages = Array.from({ length: big / 4096 }, (_, i) => dbuf + 4096 * i);
    r.dv.setBigUint64(r.off(l1), BigInt(pages[1]), true);
    r.dv.setBigUint64(r.off(l1) + 8, BigInt(l2), true);
    for (let i = 2; i < pages.length; i++) r.dv.setBigUint64(r.off(l2) + 8 * (i - 2), BigInt(pages[i]), true);
    const bigData = pattern(big, 9);
    r.bytes.set(bigData, r.off(dbuf));
    expect(r.io1(1, 0x01, { prp1: pages[0], prp2: l1, cdw: { 10: 2048, 12: big / 512 - 1 } }).sc).toBe(0);
    expect(Buffer.compare(fs.readFileSync(img).subarray(2048 * 512, 2048 * 512 + big), bigData)).toBe(0);
    expect(r.io1(1, 0x00).sc).toBe(0);
    expect(r.dev.counts.flushes).toBe(1);
    expect(r.dev.stats()).toMatchObject({ writes: 2, reads: 1, flushes: 1, errors: 0 }); // bhyvectl --get-stats
    const log = r.alloc(4096);
    r.admin(0x02, { prp1: log, cdw: { 10: 0x02 | (127 << 16) } });
    const h = new DataView(r.bytes.buffer, r.off(log));
    expect(Number(h.getBigUint64(64, true))).toBe(1); // host read commands
    expect(Number(h.getBigUint64(80, true))).toBe(2); // host write commands
    expect(Number(h.getBigUint64(48, true))).toBe(2); // data units written: (999 + 128 + 1200) / 1000
  });

  it('dataset management deallocates, write zeroes zeroes; range, MDTS, namespace and opcode errors', () => {
    const img = image();
    const fd = fs.openSync(img, 'r+');
    fs.writeSync(fd, Buffer.alloc(128 * 512, 0xab), 0, 128 * 512, 0);
    fs.closeSync(fd);
    const r = rig(disk(img));
    r.enable();
    r.ioQueues();
    const ranges = r.alloc(4096);
    const rv = new DataView(r.bytes.buffer, r.off(ranges));
    rv.setUint32(4, 8, true); rv.setBigUint64(8, 16n, true); // 8 blocks at LBA 16
    rv.setUint32(20, 0, true); rv.setBigUint64(24, 100n, true); // empty range
    expect(r.io1(1, 0x09, { prp1: ranges, cdw: { 10: 1, 11: 4 } }).sc).toBe(0);
    let f = fs.readFileSync(img);
    expect(f.subarray(16 * 512, 24 * 512).every((x) => x === 0)).toBe(true);
    expect(f[24 * 512]).toBe(0xab);
    expect(r.io1(1, 0x08, { cdw: { 10: 100, 12: 3 } }).sc).toBe(0);
    f = fs.readFileSync(img);
    expect(f.subarray(100 * 512, 104 * 512).every((x) => x === 0)).toBe(true);
    expect(f[104 * 512]).toBe(0xab);
    rv.setBigUint64(8, 8192n, true);
    expect(r.io1(1, 0x09, { prp1: ranges, cdw: { 10: 0, 11: 4 } }).sc).toBe(0x80);
    const b = r.alloc(4096);
    expect(r.io1(1, 0x02, { prp1: b, cdw: { 10: 8191, 12: 1 } }).sc).toBe(0x80); // past the end
    expect(r.io1(1, 0x02, { prp1: b, cdw: { 10: 0, 11: 0x10000, 12: 0 } }).sc).toBe(0x80); // huge LBA
    expect(r.io1(1, 0x02, { prp1: b, cdw: { 10: 0, 12: 4096 } }).sc).toBe(2); // over MDTS (2 MiB)
    const ns = r.io1(1, 0x02, { nsid: 2, prp1: b });
    expect([ns.sc, ns.dnr]).toEqual([0x0b, true]);
    expect(r.io1(1, 0x7f).sc).toBe(1);
    // dsm=disable: no DSM in ONCS, the command is an invalid opcode
    r.dev.close(); rigs.length = 0;
    const r2 = rig(disk(img, { dsm: 'disable' }));
    r2.enable();
    r2.ioQueues();
    expect(r2.io1(1, 0x09, { prp1: r2.alloc(4096), cdw: { 10: 0, 11: 4 } }).sc).toBe(1);
  });

  it('ram=MiB: a 4 KiB-sector namespace in memory, no DSM by default', () => {
    const r = rig({ [`pci.0.${SLOT}.0.ram`]: '4', [`pci.0.${SLOT}.0.ser`]: 'RAMDISK1' });
    r.enable();
    const id = r.alloc(4096);
    r.admin(0x06, { prp1: id, cdw: { 10: 1 } });
    expect(Buffer.from(r.bytes.subarray(r.off(id) + 4, r.off(id) + 24)).toString().trim()).toBe('RAMDISK1');
    expect(new DataView(r.bytes.buffer, r.off(id)).getUint16(520, true) & 4).toBe(0);
    r.admin(0x06, { nsid: 1, prp1: id, cdw: { 10: 0 } });
    const ns = new DataView(r.bytes.buffer, r.off(id));
    expect(Number(ns.getBigUint64(0, true))).toBe(1024);
    expect((ns.getUint32(128, true) >> 16) & 0xff).toBe(12);
    r.ioQueues();
    const b = r.alloc(8192);
    r.bytes.set(pattern(8192, 5), r.off(b));
    expect(r.io1(1, 0x01, { prp1: b, prp2: b + 4096, cdw: { 10: 3, 12: 1 } }).sc).toBe(0);
    r.bytes.fill(0, r.off(b), r.off(b) + 8192);
    expect(r.io1(1, 0x02, { prp1: b, prp2: b + 4096, cdw: { 10: 3, 12: 1 } }).sc).toBe(0);
    expect(Buffer.compare(r.bytes.subarray(r.off(b), r.off(b) + 8192), pattern(8192, 5))).toBe(0);
  });

  it('MSI-X: the admin CQ on vector 0, an I/O CQ on its own vector; none when the CQ has interrupts off', () => {
    const r = rig(disk(image()));
    r.msix([0x30, 0x31, 0x32]);
    r.enable();
    r.admin(0x06, { prp1: r.alloc(4096), cdw: { 10: 1 } });
    expect(r.irq.msis).toEqual([[0xfee00000, 0x30]]);
    r.ioQueues(64, 2);
    r.irq.msis.length = 0;
    r.io1(1, 0x00);
    expect(r.irq.msis).toEqual([[0xfee00000, 0x32]]);
    // CQ 2 without IEN
    const cq = r.alloc(4096);
    expect(r.admin(0x05, { prp1: cq, cdw: { 10: 2 | (15 << 16), 11: 1 | (1 << 16) } }).sc).toBe(0);
    r.cq[2] = { base: cq, size: 16, head: 0, phase: 1 };
    const sq = r.alloc(4096);
    expect(r.admin(0x01, { prp1: sq, cdw: { 10: 2 | (15 << 16), 11: 1 | (2 << 16) } }).sc).toBe(0);
    r.sq[2] = { base: sq, size: 16, tail: 0 };
    r.irq.msis.length = 0;
    expect(r.io1(2, 0x00).sc).toBe(0);
    expect(r.irq.msis).toEqual([]);
  });
});

describe('nvme: hostile driver', () => {
  it('doorbells past the queue size, for missing queues, past the last queue or on a disabled controller are ignored', () => {
    const r = rig(disk(image()));
    expect(() => r.wr(0x1000, 1)).not.toThrow(); // no controller enabled yet
    r.enable(4, 4);
    r.wr(0x1000, 4); // tail == size
    r.wr(0x1000, 0xffff);
    r.wr(0x1000 + 8 * 3, 1); // SQ 3 does not exist
    r.wr(0x1000 + 8 * 17, 1); // past maxq
    r.wr(0x1000 + 8 * 16 + 4, 1);
    r.wr(0x1002, 1, 2); // not a dword
    expect(r.take(0)).toBeUndefined();
    expect(r.dev.counts.adminCommands).toBe(0);
  });

  it('an admin queue outside RAM sets CSTS.CFS instead of RDY; PRPs outside RAM end in DATA TRANSFER ERROR', () => {
    const r = rig(disk(image()));
    r.wr(0x24, 15 | (15 << 16));
    r.wr(0x28, 0xfffff000); r.wr(0x30, RAM);
    r.wr(0x14, 1);
    expect(r.rd(0x1c) & 3).toBe(2);
    r.wr(0x14, 0);
    expect(r.rd(0x1c) & 3).toBe(0);
    r.enable();
    r.ioQueues();
    for (const prp1 of [0, 0xfee00000, RAM + RAM_SIZE - 100, 2 ** 50]) {
      expect(r.io1(1, 0x02, { prp1, cdw: { 10: 0, 12: 0 } }).sc).toBe(4);
    }
    const list = r.alloc(4096);
    r.dv.setBigUint64(r.off(list), 0xdead0000n, true);
    expect(r.io1(1, 0x02, { prp1: r.alloc(4096), prp2: list, cdw: { 10: 0, 12: 23 } }).sc).toBe(4); // 12 KiB: PRP2 is a list
    expect(r.admin(0x06, { prp1: 0x1000, cdw: { 10: 1 } }).sc).toBe(4);
  });

  it('a full completion queue holds the submission queue until the driver frees entries', () => {
    const r = rig(disk(image()));
    r.enable();
    expect(r.admin(0x09, { cdw: { 10: 7, 11: 0x00010001 } }).sc).toBe(0);
    const cq = r.alloc(4096);
    r.admin(0x05, { prp1: cq, cdw: { 10: 1 | (3 << 16), 11: 1 } }); // 4 entries: 3 usable
    r.cq[1] = { base: cq, size: 4, head: 0, phase: 1 };
    const sq = r.alloc(4096);
    r.admin(0x01, { prp1: sq, cdw: { 10: 1 | (15 << 16), 11: 1 | (1 << 16) } });
    r.sq[1] = { base: sq, size: 16, tail: 0 };
    for (let i = 0; i < 6; i++) r.put(1, 0x00, { nsid: 1 });
    r.ring(1);
    expect(r.dev.counts.ioCommands).toBe(3);
    const got: Cqe[] = [];
    for (let i = 0; i < 20 && got.length < 6; i++) {
      const c = r.take(1); // taking rings the CQ head doorbell, which lets the rest run
      if (c) got.push(c);
    }
    expect(got.length).toBe(6);
    expect(r.dev.counts.ioCommands).toBe(6);
    expect(got.every((c) => c.sc === 0)).toBe(true);
  });

  it('seeded random register, doorbell and command traffic never throws', () => {
    const r = rig(disk(image()));
    r.enable();
    r.ioQueues();
    let x = 99;
    const rnd = () => { x = (x * 1103515245 + 12345) >>> 0; return x; };
    const bufs = [r.alloc(8192), r.alloc(8192)];
    for (let i = 0; i < 3000; i++) {
      const k = rnd() % 10;
      if (k < 6) {
        const q = rnd() & 1;
        const cdw: Record<number, number> = {};
        for (let d = 10; d < 16; d++) cdw[d] = rnd() % 3 ? rnd() & 0xffff : rnd();
        // keep writes small: the image is sparse on a tight file system
        if (q === 1) cdw[12] &= 0x7;
        r.put(q, rnd() & 0xff, { nsid: rnd() % 4 ? 1 : rnd(), prp1: rnd() % 3 ? bufs[rnd() & 1] : rnd() * 4096, prp2: rnd() % 2 ? bufs[rnd() & 1] : rnd(), cdw });
        expect(() => r.ring(q)).not.toThrow();
        while (r.take(q));
      } else if (k < 8) {
        expect(() => r.wr(0x1000 + (rnd() % 40) * 4, rnd() & 0xffff)).not.toThrow();
      } else {
        const reg = [0x0c, 0x10, 0x20, 0x24, 0x28, 0x30][rnd() % 6];
        expect(() => r.wr(reg, rnd())).not.toThrow();
        expect(() => r.rd((rnd() % 0x1000) & ~3)).not.toThrow();
      }
    }
  });
});

describe('nvme: CQ head doorbells through the coalesced MMIO ring (cqcoalesce)', () => {
  function ringRig(settings: Record<string, string>): Rig {
    const r = new Rig(settings, { coalescedRing: true });
    rigs.push(r);
    return r;
  }

  it('registers a zone per CQ doorbell where BAR 0 decodes; head updates wait in the ring until the next exit', () => {
    const r = ringRig(disk(image()));
    const zoneAddrs = () => [...r.zones.keys()].sort((a, b) => a - b);
    expect(zoneAddrs()).toEqual(Array.from({ length: 17 }, (_, q) => r.bar0 + 0x1000 + 8 * q + 4));
    expect(r.dev.stats()['cq doorbell zones']).toBe(17);
    r.enable();
    r.ioQueues(8);
    const buf = r.alloc(4096);
    for (let i = 0; i < 40; i++) expect(r.io1(1, 0x02, { prp1: buf, cdw: { 12: 7 } }).sc).toBe(0);
    // Every CQ head write went to the ring; the next doorbell exit replayed it first.
    expect(r.dev.counts.cqDoorbells).toBeGreaterThanOrEqual(40);
    expect(r.dev.counts.cqDoorbellsCoalesced).toBe(r.dev.counts.cqDoorbells);
    // The last head write still waits in the ring; any exit (here a register read) replays it.
    expect(r.buffered).toBe(r.dev.counts.cqDoorbells + 1);
    r.rd(0x1c);
    expect(r.dev.counts.cqDoorbells).toBe(r.buffered);
    // 40 commands on an 8-entry queue wrapped it five times: the heads arrived.
    expect(r.dev.counts.ioCommands).toBe(40);
    // The BAR moves: the zones follow it.
    const cmd = r.cfgRd(0x04, 2);
    r.cfgWr(0x04, cmd & ~0x2, 2);
    expect(r.zones.size).toBe(0);
    r.cfgWr(0x04, cmd, 2);
    expect(r.zones.size).toBe(17);
  });

  it('a full CQ turns its doorbell back into an exit, so freeing entries resumes the SQ at once', () => {
    const r = ringRig(disk(image()));
    r.enable();
    expect(r.admin(0x09, { cdw: { 10: 7, 11: 0x00010001 } }).sc).toBe(0);
    const cq = r.alloc(4096);
    r.admin(0x05, { prp1: cq, cdw: { 10: 1 | (3 << 16), 11: 1 } }); // 4 entries: 3 usable
    r.cq[1] = { base: cq, size: 4, head: 0, phase: 1 };
    const sq = r.alloc(4096);
    r.admin(0x01, { prp1: sq, cdw: { 10: 1 | (15 << 16), 11: 1 | (1 << 16) } });
    r.sq[1] = { base: sq, size: 16, tail: 0 };
    for (let i = 0; i < 9; i++) r.put(1, 0x00, { nsid: 1 });
    r.ring(1);
    expect(r.dev.counts.ioCommands).toBe(3);
    expect(r.zones.has(r.bar0 + 0x1000 + 12)).toBe(false); // CQ 1's doorbell exits now
    expect(r.zones.size).toBe(16);
    // The guest only takes completions (head writes) and polls memory: no
    // other exit, yet every command completes.
    const got: Cqe[] = [];
    for (let i = 0; i < 40 && got.length < 9; i++) {
      const c = r.take(1);
      if (c) got.push(c);
    }
    expect(got.length).toBe(9);
    expect(got.every((c) => c.sc === 0)).toBe(true);
    // Deleting the CQ (after its SQ) gives the zone back.
    expect(r.admin(0x00, { cdw: { 10: 1 } }).sc).toBe(0);
    expect(r.admin(0x04, { cdw: { 10: 1 } }).sc).toBe(0);
    expect(r.zones.size).toBe(17);
  });

  it('cqcoalesce=false registers no zone', () => {
    const r = ringRig(disk(image(), { cqcoalesce: 'false' }));
    expect(r.zones.size).toBe(0);
    r.enable();
    r.ioQueues(8);
    expect(r.io1(1, 0x00).sc).toBe(0);
    expect(r.buffered).toBe(0);
    expect(r.dev.counts.cqDoorbellsCoalesced).toBe(0);
  });

  it('seeded random traffic with buffered head writes never throws or loses a completion', () => {
    const r = ringRig(disk(image()));
    r.enable();
    r.ioQueues(16);
    let x = 4242;
    const rnd = () => { x = (x * 1103515245 + 12345) >>> 0; return x; };
    const buf = r.alloc(8192);
    let issued = 0;
    let taken = 0;
    for (let i = 0; i < 2000; i++) {
      const k = rnd() % 10;
      if (k < 5 && issued - taken < 15) {
        r.put(1, 0x02, { nsid: 1, prp1: buf, cdw: { 12: rnd() & 7 } });
        issued++;
        if (rnd() & 1) r.ring(1);
      } else if (k < 8) {
        if (r.take(1)) taken++;
      } else {
        r.wr(0x1000 + 8 * (2 + (rnd() % 15)) + (rnd() & 1) * 4, rnd() & 0xf); // queues that do not exist
      }
    }
    r.ring(1);
    for (let i = 0; i < 100 && taken < issued; i++) if (r.take(1)) taken++;
    expect(taken).toBe(issued);
  });
});

describe('nvme: large reads and writes on the I/O pool (iopool)', () => {
  // Without a VM memory file the pool has no threads: a request waits
  // until the device's next exit or poll() does it on this thread, which
  // shows what the driver sees while an I/O thread works.
  const pooled = (img: string, extra: Record<string, string> = {}) => rig(disk(img, { iopool: '1', ...extra }));
  /** A contiguous buffer of `bytes` and its PRP list. */
  function prps(r: Rig, bytes: number): { buf: number; prp2: number } {
    const buf = r.alloc(bytes);
    if (bytes <= 8192) return { buf, prp2: bytes > 4096 ? buf + 4096 : 0 };
    const list = r.alloc(4096);
    for (let i = 1; i < bytes / 4096; i++) r.dv.setBigUint64(r.off(list) + 8 * (i - 1), BigInt(buf + 4096 * i), true);
    return { buf, prp2: list };
  }

  it('a read of at least iopool_min reserves its entry, which turns valid when the transfer is done; a small one behind it waits its turn', () => {
    const img = image();
    const data = pattern(4 << 20, 5);
    fs.writeFileSync(img, data);
    const r = pooled(img);
    expect(r.dev.pool).toBeDefined();
    r.enable();
    r.ioQueues();
    const big = prps(r, 131072);
    const small = prps(r, 4096);
    const c1 = r.put(1, 0x02, { nsid: 1, prp1: big.buf, prp2: big.prp2, cdw: { 10: 256, 12: 255 } });
    const c2 = r.put(1, 0x02, { nsid: 1, prp1: small.buf, cdw: { 10: 8, 12: 7 } });
    r.ring(1);
    expect(r.dev.pool!.pending).toBe(1);
    expect(r.dev.pool!.submitted).toBe(1);
    // The 4 KiB read ran in the exit, but its entry comes after the one
    // reserved for the 128 KiB read: the driver sees neither yet.
    expect(r.take(1)).toBeUndefined();
    r.dev.poll();
    expect(r.dev.pool!.pending).toBe(0);
    const e1 = r.take(1)!;
    const e2 = r.take(1)!;
    expect([e1.cid, e1.sc, e1.sqid, e1.sqhd]).toEqual([c1, 0, 1, 1]);
    expect([e2.cid, e2.sc, e2.sqhd]).toEqual([c2, 0, 2]);
    expect(Buffer.compare(r.bytes.subarray(r.off(big.buf), r.off(big.buf) + 131072), data.subarray(256 * 512, 256 * 512 + 131072))).toBe(0);
    expect(Buffer.compare(r.bytes.subarray(r.off(small.buf), r.off(small.buf) + 4096), data.subarray(8 * 512, 8 * 512 + 4096))).toBe(0);
    expect(r.dev.stats()).toMatchObject({ reads: 2, poolRequests: 1, errors: 0 });
  });

  it('writes through the pool reach the image; flush and admin commands wait for them; SMART counts them', () => {
    const img = image();
    const r = pooled(img);
    r.enable();
    r.ioQueues();
    const data = pattern(4 * 65536, 8);
    const cids: number[] = [];
    for (let i = 0; i < 4; i++) {
      const b = prps(r, 65536);
      r.bytes.set(data.subarray(i * 65536, (i + 1) * 65536), r.off(b.buf));
      cids.push(r.put(1, 0x01, { nsid: 1, prp1: b.buf, prp2: b.prp2, cdw: { 10: 1024 + i * 128, 12: 127 } }));
    }
    cids.push(r.put(1, 0x00, { nsid: 1 })); // flush: does the writes first
    r.ring(1);
    expect(r.dev.pool!.pending).toBe(0);
    for (const cid of cids) expect([r.take(1)?.cid, r.dev.counts.errors]).toEqual([cid, 0]);
    expect(Buffer.compare(fs.readFileSync(img).subarray(1024 * 512, 1024 * 512 + data.length), data)).toBe(0);
    // An admin command finds nothing in flight.
    const b = prps(r, 65536);
    r.put(1, 0x02, { nsid: 1, prp1: b.buf, prp2: b.prp2, cdw: { 10: 1024, 12: 127 } });
    r.ring(1);
    expect(r.dev.pool!.pending).toBe(1);
    const log = r.alloc(4096);
    r.admin(0x02, { prp1: log, cdw: { 10: 0x02 | (127 << 16) } });
    expect(r.dev.pool!.pending).toBe(0);
    expect(r.take(1)?.sc).toBe(0);
    const h = new DataView(r.bytes.buffer, r.off(log));
    expect(Number(h.getBigUint64(64, true))).toBe(1); // host read commands
    expect(Number(h.getBigUint64(80, true))).toBe(4); // host write commands
    expect(r.dev.stats()).toMatchObject({ writes: 4, reads: 1, poolRequests: 5, flushes: 1 });
  });

  it('a CQ with interrupts gets its vector when the pool completion is reaped, not before; a polled CQ none', () => {
    const r = pooled(image());
    r.msix([0x40, 0x41, 0x42]);
    r.enable();
    r.ioQueues(64, 2);
    r.irq.msis.length = 0;
    const b = prps(r, 131072);
    r.put(1, 0x02, { nsid: 1, prp1: b.buf, prp2: b.prp2, cdw: { 10: 0, 12: 255 } });
    r.ring(1);
    expect(r.irq.msis).toEqual([]);
    r.dev.poll();
    expect(r.irq.msis).toEqual([[0xfee00000, 0x42]]);
    expect(r.take(1)?.sc).toBe(0);
    // CQ 2 without IEN: the entry, no message
    const cq = r.alloc(4096);
    expect(r.admin(0x05, { prp1: cq, cdw: { 10: 2 | (15 << 16), 11: 1 | (1 << 16) } }).sc).toBe(0);
    r.cq[2] = { base: cq, size: 16, head: 0, phase: 1 };
    const sq = r.alloc(4096);
    expect(r.admin(0x01, { prp1: sq, cdw: { 10: 2 | (15 << 16), 11: 1 | (2 << 16) } }).sc).toBe(0);
    r.sq[2] = { base: sq, size: 16, tail: 0 };
    r.irq.msis.length = 0;
    r.put(2, 0x02, { nsid: 1, prp1: b.buf, prp2: b.prp2, cdw: { 10: 0, 12: 255 } });
    r.ring(2);
    r.dev.poll();
    expect(r.take(2)?.sc).toBe(0);
    expect(r.irq.msis).toEqual([]);
  });

  it('hostile: PRPs outside RAM fail at once with nothing on the pool; a transfer that fails on the pool posts DATA TRANSFER ERROR', () => {
    const r = pooled(image());
    r.enable();
    r.ioQueues();
    const list = r.alloc(4096);
    for (let i = 0; i < 31; i++) r.dv.setBigUint64(r.off(list) + 8 * i, BigInt(0x7000_0000 + 4096 * i), true);
    const e = r.io1(1, 0x02, { prp1: r.alloc(4096), prp2: list, cdw: { 10: 0, 12: 255 } });
    expect(e.sc).toBe(0x04);
    expect(r.dev.pool!.submitted).toBe(0);
    // The image is gone when the pool does the transfer.
    const b = prps(r, 131072);
    r.put(1, 0x01, { nsid: 1, prp1: b.buf, prp2: b.prp2, cdw: { 10: 0, 12: 255 } });
    r.ring(1);
    expect(r.dev.pool!.pending).toBe(1);
    r.dev.store.file!.close();
    r.dev.poll();
    const f = r.take(1)!;
    expect([f.sct, f.sc, f.phase]).toEqual([0, 0x04, 1]);
    expect(r.dev.counts.errors).toBe(2);
  });

  it('a controller reset finishes what is on the pool first', () => {
    const r = pooled(image());
    r.enable();
    r.ioQueues();
    const b = prps(r, 131072);
    r.put(1, 0x02, { nsid: 1, prp1: b.buf, prp2: b.prp2, cdw: { 10: 0, 12: 255 } });
    r.ring(1);
    expect(r.dev.pool!.pending).toBe(1);
    r.wr(0x14, 0);
    expect(r.dev.pool!.pending).toBe(0);
    expect(r.take(1)?.sc).toBe(0);
  });

  it('hostile: seeded random traffic with every read and write on the pool never throws and leaves nothing in flight', () => {
    const r = pooled(image(), { iopool_min: '512' });
    r.enable();
    r.ioQueues();
    let x = 7;
    const rnd = () => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; }; // xorshift32
    const bufs = [r.alloc(8192), r.alloc(8192), r.alloc(4096)];
    for (let i = 0; i < 128; i++) r.dv.setBigUint64(r.off(bufs[2]) + 8 * i, BigInt(r.alloc(4096)), true);
    for (let i = 0; i < 3000; i++) {
      const k = rnd() % 10;
      if (k < 7) {
        // I/O queue 1 only (the admin queue's random traffic, which deletes
        // queues, has its own test above).
        const q = 1;
        const cdw: Record<number, number> = {};
        for (let d = 10; d < 16; d++) cdw[d] = rnd() % 3 ? rnd() & 0xffff : rnd();
        const opc = rnd() % 4 ? 1 + (rnd() & 1) : rnd() & 0xff;
        cdw[12] &= rnd() % 2 ? 0xff : 0x7;
        if (rnd() % 4) { cdw[10] = rnd() % 7000; cdw[11] = 0; }
        r.put(q, opc, { nsid: rnd() % 8 ? 1 : rnd(), prp1: rnd() % 3 ? bufs[rnd() & 1] : rnd() * 4096, prp2: rnd() % 2 ? bufs[rnd() % 3] : rnd(), cdw });
        expect(() => r.ring(q)).not.toThrow();
        if (rnd() % 2) r.dev.poll();
        while (r.take(q));
      } else if (k < 9) {
        // doorbells of queues that do not exist (queue 1's own stay in step with the driver)
        expect(() => r.wr(0x1010 + (rnd() % 36) * 4, rnd() & 0xffff)).not.toThrow();
      } else {
        const reg = [0x0c, 0x10, 0x20, 0x24, 0x28, 0x30][rnd() % 6];
        expect(() => r.wr(reg, rnd())).not.toThrow();
      }
    }
    r.dev.poll();
    expect(r.dev.pool!.pending).toBe(0);
    expect(r.dev.pool!.submitted).toBeGreaterThan(50);
  });

  it('no I/O thread by default (iopool=0), one with iopool=1; bad values are refused; a RAM namespace has none', () => {
    expect(nvmeDevice.keys?.find((k) => k.key === 'iopool')?.default).toBe('0');
    expect(rig(disk(image())).dev.pool).toBeUndefined();
    expect(rig(disk(image(), { iopool: '1' })).dev.pool).toBeDefined();
    expect(rig(disk(image(), { iopool: '0' })).dev.pool).toBeUndefined();
    expect(() => new Rig(disk(image(), { iopool: 'many' }))).toThrow(/invalid iopool "many"/);
    expect(() => new Rig(disk(image(), { iopool: '9' }))).toThrow(/invalid iopool "9"/);
    expect(() => new Rig(disk(image(), { iopool_min: '-1' }))).toThrow(/invalid iopool_min "-1"/);
    expect(rig({ [`pci.0.${SLOT}.0.ram`]: '4', [`pci.0.${SLOT}.0.iopool`]: '1' }).dev.pool).toBeUndefined();
  });
});

describe('nvme: configuration', () => {
  it('bad options and images are one-line errors naming the slot', () => {
    expect(() => new Rig(disk(path.join(tmp, 'none')))).toThrow(/nvme at pci slot 0:5:0: disk image .* does not exist/);
    expect(() => new Rig({ [`pci.0.${SLOT}.0.ram`]: 'lots' })).toThrow(/invalid ram "lots"/);
    expect(() => new Rig(disk(image(), { dsm: 'maybe' }))).toThrow(/invalid dsm "maybe"/);
    expect(() => new Rig(disk(image(), { qsz: '0' }))).toThrow(/invalid qsz "0"/);
    expect(() => new Rig(disk(image(), { eui64: 'zz' }))).toThrow(/invalid eui64/);
    const img = image();
    rig(disk(img));
    expect(() => new Rig(disk(img))).toThrow(/in use by another VM/);
    const r = rig(disk(image(), { sectsz: '4096', eui64: '0x1122334455667788', maxq: '4' }));
    r.enable();
    const id = r.alloc(4096);
    r.admin(0x06, { nsid: 1, prp1: id, cdw: { 10: 0 } });
    const ns = new DataView(r.bytes.buffer, r.off(id));
    expect(ns.getBigUint64(120, false)).toBe(0x1122334455667788n);
    expect((ns.getUint32(128, true) >> 16) & 0xff).toBe(12);
    expect(r.admin(0x09, { cdw: { 10: 7, 11: 0x00200020 } }).cdw0).toBe(0x00030003);
  });
});
