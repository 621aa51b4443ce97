// The AHCI controller (bhyve's pci_ahci.c) driven as a guest driver drives
// it: PCI identity and HBA registers, port bring-up, command list, FIS
// area and PRDTs in guest memory; ATA (IDENTIFY, DMA and NCQ reads and
// writes, FLUSH, TRIM, SET FEATURES, READ LOG, power stubs), ATAPI on a CD
// port, resets, MSI and INTx, and hostile inputs.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { AhciRig, RAM_BASE, RAM_SIZE, h2d, ncq } from './ahci-driver.js';
import { ahciDevice } from '../../src/devices/ahci/ahci-record.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ahci-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
function image(size = 4 << 20, fill?: (b: Buffer) => void): string {
  const p = path.join(tmp, `img${n++}`);
  if (!fill) { fs.writeFileSync(p, ''); fs.truncateSync(p, size); return p; }
  const b = Buffer.alloc(size);
  fill(b);
  fs.writeFileSync(p, b);
  return p;
}
const rigs: AhciRig[] = [];
afterEach(() => { for (const r of rigs.splice(0)) r.close(); });
function rig(settings: Record<string, string>): AhciRig {
  const r = new AhciRig(settings);
  rigs.push(r);
  return r;
}
const disk = (p: string, extra: Record<string, string> = {}) => {
  const s: Record<string, string> = { 'pci.0.4.0.port.0.type': 'hd', 'pci.0.4.0.port.0.path': p };
  for (const [k, v] of Object.entries(extra)) s[`pci.0.4.0.port.0.${k}`] = v;
  return s;
};

const P = { CLB: 0, IS: 0x10, IE: 0x14, CMD: 0x18, TFD: 0x20, SIG: 0x24, SSTS: 0x28, SCTL: 0x2c, SERR: 0x30, SACT: 0x34, CI: 0x38 };
const ATA = {
  IDENTIFY: 0xec, READ_DMA48: 0x25, WRITE_DMA48: 0x35, READ_DMA: 0xc8, WRITE_DMA: 0xca, READ_FPDMA: 0x60, WRITE_FPDMA: 0x61,
  SEND_FPDMA: 0x64, FLUSH48: 0xea, DSM: 0x06, SETFEATURES: 0xef, READ_LOG: 0x2f, SMART: 0xb0, CHECK_POWER: 0xe5,
  STANDBY_IMM: 0xe0, PACKET: 0xa0, ATAPI_IDENTIFY: 0xa1, SET_MULTI: 0xc6,
};

/** Swaps the bytes of each word back: ATA identify strings. */
function ataString(b: Uint8Array, word: number, len: number): string {
  let s = '';
  for (let i = 0; i < len; i++) s += String.fromCharCode(b[2 * word + (i ^ 1)]);
  return s.trimEnd();
}

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = seed * 2654435761 >>> 0;
  for (let i = 0; i < len; i++) { x = (x * 1103515245 + 12345) >>> 0; b[i] = x >>> 24; }
  return b;
}

describe('ahci: PCI function and HBA registers', () => {
  it('is an ICH8 AHCI (8086:2821, 01/06/01) with ABAR in BAR 5, MSI and INTx', () => {
    const r = rig({ ...disk(image()), 'pci.0.4.0.port.2.type': 'cd', 'pci.0.4.0.port.2.path': image(1 << 20) });
    expect(r.cfgRd(0x00)).toBe(0x28218086);
    expect(r.cfgRd(0x08) >>> 8).toBe(0x010601);
    expect(r.abar).toBeGreaterThan(0);
    expect(r.cfgRd(0x3d, 1)).toBe(1); // INTA
    let cap = r.cfgRd(0x34, 1);
    const ids: number[] = [];
    while (cap) { ids.push(r.cfgRd(cap, 1)); cap = r.cfgRd(cap + 1, 1); }
    expect(ids).toContain(0x05);
    const c = r.rd(0x00);
    expect(c & 0x1f).toBe(5); // 6 ports
    expect((c >>> 8) & 0x1f).toBe(31); // 32 slots
    expect(c & 0xc0000000).toBe(0xc0000000 | 0); // 64-bit, NCQ
    expect(r.rd(0x0c)).toBe(0b101); // PI
    expect(r.rd(0x10)).toBe(0x10300);
    expect(r.rd(0x04)).toBe(0x80000000); // AE
    expect(r.prd(0, P.SSTS)).toBe(0x133);
    expect(r.prd(0, P.SIG)).toBe(0x101);
    expect(r.prd(2, P.SIG)).toBe(0xeb140101);
    expect(r.prd(1, P.SSTS)).toBe(0);
    expect(r.prd(0, P.TFD) & 0xff).toBe(0x70); // DRDY|DMA|DSC
  });

  it('sizes the port array to the highest configured port (up to 32)', () => {
    const r = rig({ 'pci.0.4.0.port.31.type': 'hd', 'pci.0.4.0.port.31.path': image() });
    expect(r.rd(0x00) & 0x1f).toBe(31);
    expect(r.rd(0x0c)).toBe(0x80000000);
    expect(r.prd(31, P.SSTS)).toBe(0x133);
  });
});

describe('ahci: ATA disk', () => {
  it('IDENTIFY: bhyve strings, per-port ser/rev/model/nmrr, LBA48 size, checksum, PIO setup + D2H FIS', () => {
    const img = image(6 << 20);
    for (const extra of [{}, { ser: 'SER123', rev: 'R9', model: 'Test Disk', nmrr: '1' }]) {
      const r = rig(disk(img, extra));
      const { clb, fb } = r.startPort(0);
      const buf = r.alloc(512);
      r.command(clb, 3, h2d(ATA.IDENTIFY), [{ addr: buf, len: 512 }]);
      r.pwr(0, P.CI, 1 << 3);
      expect(r.prd(0, P.CI)).toBe(0);
      const id = r.read(buf, 512);
      const md5 = createHash('md5').update(img).digest();
      const h = (i: number) => md5[i].toString(16).toUpperCase().padStart(2, '0');
      const serial = `BHYVE-${h(0)}${h(1)}-${h(2)}${h(3)}-${h(4)}${h(5)}`;
      if ('ser' in extra) {
        expect(ataString(id, 10, 20)).toBe('SER123');
        expect(ataString(id, 23, 8)).toBe('R9');
        expect(ataString(id, 27, 40)).toBe('Test Disk');
        expect(id[217 * 2]).toBe(1);
      } else {
        expect(ataString(id, 10, 20)).toBe(serial);
        expect(ataString(id, 23, 8)).toBe('001');
        expect(ataString(id, 27, 40)).toBe('BHYVE SATA DISK');
      }
      const dv = new DataView(id.buffer);
      expect(dv.getUint32(100 * 2, true)).toBe((6 << 20) / 512);
      expect(dv.getUint16(83 * 2, true) & 0x0400).toBe(0x0400); // 48-bit
      expect(dv.getUint16(76 * 2, true) & 0x0100).toBe(0x0100); // NCQ
      expect(dv.getUint16(75 * 2, true)).toBe(31);
      expect(dv.getUint16(169 * 2, true)).toBe(1); // TRIM
      expect(id[510]).toBe(0xa5);
      expect(id.reduce((a, b) => (a + b) & 0xff, 0)).toBe(0);
      expect(r.prdbc(clb, 3)).toBe(512);
      expect(r.read(fb + 0x20, 1)[0]).toBe(0x5f); // PIO setup
      expect(r.read(fb + 0x40, 3)).toEqual(Uint8Array.of(0x34, 0x40, 0x50));
      expect(r.prd(0, P.IS) & 1).toBe(1); // DHRS
      r.close();
      rigs.length = 0;
    }
  });

  it('WRITE DMA EXT and READ DMA EXT through multi-entry PRDTs; 28-bit READ DMA; FLUSH', () => {
    const img = image();
    const r = rig(disk(img));
    const { clb } = r.startPort(0);
    const data = pattern(8192, 1);
    const a = r.alloc(3000); const b = r.alloc(5192);
    r.fill(a, data.subarray(0, 3000)); r.fill(b, data.subarray(3000));
    r.command(clb, 0, h2d(ATA.WRITE_DMA48, 100, 16), [{ addr: a, len: 3000 }, { addr: b, len: 5192 }], { write: true });
    r.pwr(0, P.CI, 1);
    expect(r.prd(0, P.CI)).toBe(0);
    expect(r.prd(0, P.TFD) & 1).toBe(0);
    expect(r.prdbc(clb, 0)).toBe(8192);
    expect(Uint8Array.from(fs.readFileSync(img).subarray(100 * 512, 100 * 512 + 8192))).toEqual(data);
    const c = r.alloc(8192);
    r.command(clb, 1, h2d(ATA.READ_DMA48, 100, 16), [{ addr: c, len: 8192 }]);
    r.pwr(0, P.CI, 2);
    expect(r.read(c, 8192)).toEqual(data);
    const d = r.alloc(512);
    r.command(clb, 2, h2d(ATA.READ_DMA, 101, 1), [{ addr: d, len: 512 }]);
    r.pwr(0, P.CI, 4);
    expect(r.read(d, 512)).toEqual(data.subarray(512, 1024));
    r.command(clb, 3, h2d(ATA.FLUSH48), []);
    r.pwr(0, P.CI, 8);
    expect(r.prd(0, P.CI)).toBe(0);
    expect(r.hba.ports[0]!.stats.flushes).toBe(1);
  });

  it('NCQ: 32 FPDMA QUEUED writes then reads in one CI write; SDB FIS clears SACT', () => {
    const img = image();
    const r = rig(disk(img));
    const { clb, fb } = r.startPort(0);
    const bufs: number[] = [];
    for (let t = 0; t < 32; t++) {
      const buf = r.alloc(4096);
      bufs.push(buf);
      r.fill(buf, pattern(4096, 100 + t));
      r.command(clb, t, ncq(ATA.WRITE_FPDMA, t * 8 + 7, 8, t), [{ addr: buf, len: 4096 }], { write: true });
    }
    r.pwr(0, P.SACT, 0xffffffff);
    r.pwr(0, P.CI, 0xffffffff);
    expect(r.prd(0, P.CI)).toBe(0);
    expect(r.prd(0, P.SACT)).toBe(0);
    expect(r.prd(0, P.IS) & 0x8).toBe(0x8); // SDBS
    expect(r.read(fb + 0x58, 1)[0]).toBe(0xa1);
    const file = fs.readFileSync(img);
    for (let t = 0; t < 32; t++) {
      expect(Buffer.compare(file.subarray((t * 8 + 7) * 512, (t * 8 + 15) * 512), pattern(4096, 100 + t))).toBe(0);
    }
    for (let t = 0; t < 32; t++) {
      r.bytes.fill(0, r.off(bufs[t]), r.off(bufs[t]) + 4096);
      r.command(clb, t, ncq(ATA.READ_FPDMA, t * 8 + 7, 8, t), [{ addr: bufs[t], len: 4096 }]);
    }
    r.pwr(0, P.SACT, 0xffffffff);
    r.pwr(0, P.CI, 0xffffffff);
    for (let t = 0; t < 32; t++) expect(Buffer.compare(r.read(bufs[t], 4096), pattern(4096, 100 + t))).toBe(0);
    expect(r.hba.ports[0]!.stats.reads).toBe(32);
  });

  it('DSM TRIM (and NCQ SEND FPDMA DSM) deallocates ranges; READ LOG 0x13 advertises it', () => {
    const img = image(4 << 20, (b) => b.fill(0xee));
    const r = rig(disk(img));
    const { clb } = r.startPort(0);
    const ranges = r.alloc(512);
    const e = new Uint8Array(512);
    e[0] = 8; e[6] = 16; // LBA 8, 16 sectors
    e[8] = 64; e[14] = 1; // LBA 64, 1 sector
    r.fill(ranges, e);
    r.command(clb, 0, h2d(ATA.DSM, 0, 1, 1), [{ addr: ranges, len: 512 }], { write: true });
    r.pwr(0, P.CI, 1);
    expect(r.prd(0, P.TFD) & 1).toBe(0);
    const f = fs.readFileSync(img);
    expect(f.subarray(8 * 512, 24 * 512).every((x) => x === 0)).toBe(true);
    expect(f[24 * 512]).toBe(0xee);
    expect(f.subarray(64 * 512, 65 * 512).every((x) => x === 0)).toBe(true);
    // SEND FPDMA QUEUED, DSM subcommand, TRIM
    e.fill(0); e[0] = 200; e[6] = 2;
    r.fill(ranges, e);
    const fis = h2d(ATA.SEND_FPDMA, 0, 5 << 3, 1); fis[13] = 0; fis[16] = 1;
    r.command(clb, 5, fis, [{ addr: ranges, len: 512 }], { write: true });
    r.pwr(0, P.SACT, 1 << 5);
    r.pwr(0, P.CI, 1 << 5);
    expect(r.prd(0, P.SACT)).toBe(0);
    expect(fs.readFileSync(img).subarray(200 * 512, 202 * 512).every((x) => x === 0)).toBe(true);
    const log = r.alloc(512);
    r.command(clb, 1, h2d(ATA.READ_LOG, 0x13, 1), [{ addr: log, len: 512 }]);
    r.pwr(0, P.CI, 2);
    expect(r.u32(log)).toBe(1);
    expect(r.u32(log + 4)).toBe(1);
    // nodelete: TRIM not offered and refused
    r.close(); rigs.length = 0;
    const r2 = rig(disk(img, { nodelete: 'true' }));
    const s2 = r2.startPort(0);
    const id = r2.alloc(512);
    r2.command(s2.clb, 0, h2d(ATA.IDENTIFY), [{ addr: id, len: 512 }]);
    r2.pwr(0, P.CI, 1);
    expect(new DataView(r2.read(id, 512).buffer).getUint16(169 * 2, true)).toBe(0);
  });

  it('SET FEATURES, SET MULTIPLE, CHECK POWER MODE and standby succeed; SMART is aborted as bhyve', () => {
    const r = rig(disk(image()));
    const { clb, fb } = r.startPort(0);
    const run = (slot: number, fis: number[]) => { r.command(clb, slot, fis, []); r.pwr(0, P.CI, 1 << slot); return r.prd(0, P.TFD); };
    expect(run(0, h2d(ATA.SETFEATURES, 0, 0x46, 0x03)) & 1).toBe(0); // UDMA6
    expect(run(1, h2d(ATA.SETFEATURES, 0, 0, 0x02)) & 1).toBe(0); // write cache on
    expect(run(2, h2d(ATA.SET_MULTI, 0, 16)) & 1).toBe(0);
    expect(run(3, h2d(ATA.CHECK_POWER)) & 1).toBe(0);
    expect(r.read(fb + 0x40 + 12, 1)[0]).toBe(0xff); // active
    expect(run(4, h2d(ATA.STANDBY_IMM)) & 1).toBe(0);
    const tfd = run(5, h2d(ATA.SMART, 0, 0, 0xd0));
    expect(tfd & 0x01).toBe(1);
    expect((tfd >> 8) & 0x04).toBe(4); // ABRT
    expect(r.prd(0, P.IS) & 0x40000000).toBe(0x40000000); // TFES
    expect(r.prd(0, P.CI)).toBe(1 << 5); // stays issued until the driver recovers
    // recovery: stop the port (clears CI), clear errors, start again
    r.pwr(0, P.CMD, 0x10);
    expect(r.prd(0, P.CI)).toBe(0);
    r.pwr(0, P.IS, 0xffffffff);
    r.pwr(0, P.CMD, 0x11);
    expect(run(6, h2d(ATA.CHECK_POWER)) & 1).toBe(0);
    expect(r.prd(0, P.CI)).toBe(0);
  });

  it('read-only images refuse writes; reads past the end are aborted', () => {
    const r = rig(disk(image(1 << 20), { ro: 'true' }));
    const { clb } = r.startPort(0);
    const b = r.alloc(512);
    r.command(clb, 0, h2d(ATA.WRITE_DMA48, 0, 1), [{ addr: b, len: 512 }], { write: true });
    r.pwr(0, P.CI, 1);
    expect(r.prd(0, P.TFD) & 1).toBe(1);
    r.pwr(0, P.CMD, 0x10); r.pwr(0, P.CMD, 0x11);
    r.command(clb, 1, h2d(ATA.READ_DMA48, 2047, 2), [{ addr: b, len: 1024 }]);
    r.pwr(0, P.CI, 2);
    expect(r.prd(0, P.TFD) & 1).toBe(1);
  });
});

describe('ahci: ATAPI CD-ROM', () => {
  const iso = () => image(8 * 2048, (b) => { for (let s = 0; s < 8; s++) b.fill(s + 1, s * 2048, (s + 1) * 2048); });
  const cd = (p: string) => ({ 'pci.0.4.0.port.0.type': 'cd', 'pci.0.4.0.port.0.path': p, 'pci.0.4.0.port.0.ro': 'true' });

  function packet(r: AhciRig, clb: number, slot: number, acmd: number[], len: number) {
    const buf = r.alloc(Math.max(len, 16));
    r.command(clb, slot, h2d(ATA.PACKET), len ? [{ addr: buf, len }] : [], { acmd, atapi: true });
    r.pwr(0, P.CI, 1 << slot);
    const tfd = r.prd(0, P.TFD);
    if (tfd & 1) { r.pwr(0, P.CMD, 0x10); r.pwr(0, P.IS, 0xffffffff); r.pwr(0, P.CMD, 0x11); }
    return { tfd, data: r.read(buf, len), n: r.prdbc(clb, slot) };
  }

  it('IDENTIFY PACKET DEVICE; INQUIRY, TEST UNIT READY, READ CAPACITY, READ(10/12), REQUEST SENSE', () => {
    const r = rig(cd(iso()));
    const { clb } = r.startPort(0);
    const id = r.alloc(512);
    r.command(clb, 0, h2d(ATA.ATAPI_IDENTIFY), [{ addr: id, len: 512 }]);
    r.pwr(0, P.CI, 1);
    expect(ataString(r.read(id, 512), 27, 40)).toBe('BHYVE SATA DVD ROM');
    expect(new DataView(r.read(id, 2).buffer).getUint16(0, true)).toBe(0x85c0);
    // plain IDENTIFY on an ATAPI port aborts (drivers use it to tell)
    r.command(clb, 1, h2d(ATA.IDENTIFY), [{ addr: id, len: 512 }]);
    r.pwr(0, P.CI, 2);
    expect(r.prd(0, P.TFD) & 1).toBe(1);
    r.pwr(0, P.CMD, 0x10); r.pwr(0, P.CMD, 0x11);

    const inq = packet(r, clb, 2, [0x12, 0, 0, 0, 36, 0], 36);
    expect(inq.tfd & 1).toBe(0);
    expect(inq.data[0]).toBe(5);
    expect(Buffer.from(inq.data.subarray(8, 16)).toString().trim()).toBe('BHYVE');
    expect(Buffer.from(inq.data.subarray(16, 32)).toString().trim()).toBe('BHYVE DVD-ROM');
    expect(packet(r, clb, 3, [0, 0, 0, 0, 0, 0], 0).tfd & 1).toBe(0);
    const cap = packet(r, clb, 4, [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
    expect(Buffer.from(cap.data).readUInt32BE(0)).toBe(7);
    expect(Buffer.from(cap.data).readUInt32BE(4)).toBe(2048);
    const rd = packet(r, clb, 5, [0x28, 0, 0, 0, 0, 2, 0, 0, 3, 0], 3 * 2048);
    expect(rd.tfd & 1).toBe(0);
    expect(rd.n).toBe(3 * 2048);
    expect([rd.data[0], rd.data[2048], rd.data[4096]]).toEqual([3, 4, 5]);
    const rd12 = packet(r, clb, 6, [0xa8, 0, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0], 2048);
    expect(rd12.data[0]).toBe(8);
    // past the end: CHECK CONDITION, sense ILLEGAL REQUEST / LBA out of range
    const bad = packet(r, clb, 7, [0x28, 0, 0, 0, 0, 7, 0, 0, 2, 0], 4096);
    expect(bad.tfd & 1).toBe(1);
    expect(bad.tfd >> 12).toBe(5);
    const sense = packet(r, clb, 8, [0x03, 0, 0, 0, 18, 0], 18);
    expect([sense.data[0], sense.data[2], sense.data[12]]).toEqual([0xf0, 5, 0x21]);
  });

  it('READ TOC formats 0/1/2 (LBA and MSF), MODE SENSE, GET CONFIGURATION, GET EVENT STATUS, eject, PREVENT ALLOW', () => {
    const r = rig(cd(iso()));
    const { clb } = r.startPort(0);
    const toc0 = packet(r, clb, 0, [0x43, 0, 0, 0, 0, 0, 0, 0, 100, 0], 100);
    expect(toc0.data.subarray(0, 4)).toEqual(Uint8Array.of(0, 18, 1, 1));
    expect(toc0.data[14]).toBe(0xaa); // lead-out
    expect(Buffer.from(toc0.data).readUInt32BE(16)).toBe(((8 * 2048) / 512) >> 2);
    const msf = packet(r, clb, 1, [0x43, 2, 0, 0, 0, 0, 0, 0, 100, 0], 100);
    expect(msf.data.subarray(8, 12)).toEqual(Uint8Array.of(0, 0, 2, 0)); // 00:02:00
    const toc1 = packet(r, clb, 2, [0x43, 0, 0, 0, 0, 0, 0, 0, 12, 0x40], 12);
    expect(toc1.data.subarray(0, 4)).toEqual(Uint8Array.of(0, 0xa, 1, 1));
    const toc2 = packet(r, clb, 3, [0x43, 0, 0, 0, 0, 0, 0, 0, 100, 0x80], 100);
    expect(Buffer.from(toc2.data).readUInt16BE(0)).toBe(46);
    expect(packet(r, clb, 4, [0x43, 0, 0, 0, 0, 0, 5, 0, 100, 0], 100).tfd & 1).toBe(1); // bad start track
    const ms = packet(r, clb, 5, [0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 30, 0], 30);
    expect([ms.data[8], ms.data[9]]).toEqual([0x2a, 20]);
    expect(packet(r, clb, 6, [0x5a, 0, 0xc0 | 0x2a, 0, 0, 0, 0, 0, 30, 0], 30).tfd >> 12).toBe(5); // saved values
    const gc = packet(r, clb, 7, [0x46, 0, 0, 0, 0, 0, 0, 0, 64, 0], 64);
    expect(gc.tfd & 1).toBe(0);
    expect(Buffer.from(gc.data).readUInt16BE(6)).toBe(0x0010); // DVD-ROM current
    const ev = packet(r, clb, 8, [0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8, 0], 8);
    expect(ev.data.subarray(0, 6)).toEqual(Uint8Array.of(0, 6, 4, 0x10, 0, 2));
    expect(packet(r, clb, 9, [0x4a, 0, 0, 0, 0x10, 0, 0, 0, 8, 0], 8).tfd & 1).toBe(1); // async not supported
    const ej = packet(r, clb, 10, [0x1b, 0, 0, 0, 2, 0], 0);
    expect(ej.tfd >> 12).toBe(5);
    expect(packet(r, clb, 11, [0x03, 0, 0, 0, 18, 0], 18).data[12]).toBe(0x53);
    expect(packet(r, clb, 12, [0x1b, 0, 0, 0, 1, 0], 0).tfd & 1).toBe(0);
    expect(packet(r, clb, 13, [0x1e, 0, 0, 0, 1, 0], 0).tfd & 1).toBe(0);
    expect(packet(r, clb, 14, [0xff, 0, 0, 0, 0, 0], 0).tfd >> 12).toBe(5);
    // ATA reads on an ATAPI port are aborted
    r.command(clb, 15, h2d(ATA.READ_DMA48, 0, 1), [{ addr: r.alloc(512), len: 512 }]);
    r.pwr(0, P.CI, 1 << 15);
    expect(r.prd(0, P.TFD) & 1).toBe(1);
  });
});

describe('ahci: resets and interrupts', () => {
  it('COMRESET (SCTL.DET=1 while stopped) restores signature and posts the reset D2H FIS; GHC.HR resets the HBA', () => {
    const r = rig(disk(image()));
    const { fb } = r.startPort(0);
    r.pwr(0, P.CMD, 0x10); // stop, keep FRE
    r.bytes.fill(0, r.off(fb), r.off(fb) + 256);
    r.pwr(0, P.SCTL, 1);
    r.pwr(0, P.SCTL, 0);
    expect(r.prd(0, P.SIG)).toBe(0x101);
    expect(r.read(fb + 0x40, 1)[0]).toBe(0x34);
    expect(r.prd(0, P.SSTS)).toBe(0x133);
    r.wr(0x04, 2); // IE
    r.wr(0x04, 1); // HR
    expect(r.rd(0x04)).toBe(0x80000000);
    expect(r.prd(0, P.CMD) & 0x11).toBe(0);
    expect(r.prd(0, P.IE)).toBe(0);
  });

  it('software reset through a control FIS (SRST set, then cleared)', () => {
    const r = rig(disk(image()));
    const { clb } = r.startPort(0);
    const c = new Array(20).fill(0); c[0] = 0x27; c[15] = 4;
    r.command(clb, 0, c, []);
    r.pwr(0, P.CI, 1);
    c[15] = 0;
    r.command(clb, 1, c, []);
    r.pwr(0, P.CI, 2);
    expect(r.prd(0, P.CI)).toBe(0);
    expect(r.prd(0, P.SIG)).toBe(0x101);
  });

  it('MSI: one message per port; nothing while GHC.IE is clear', () => {
    const r = rig({ ...disk(image()), 'pci.0.4.0.port.1.type': 'hd', 'pci.0.4.0.port.1.path': image() });
    let cap = r.cfgRd(0x34, 1);
    while (r.cfgRd(cap, 1) !== 0x05) cap = r.cfgRd(cap + 1, 1);
    expect((r.cfgRd(cap + 2, 2) >> 1) & 7).toBe(3); // 8 messages
    r.cfgWr(cap + 4, 0xfee00000);
    r.cfgWr(cap + 8, 0);
    r.cfgWr(cap + 12, 0x4040, 2);
    r.cfgWr(cap + 2, 1 | (3 << 4), 2); // enable, 8 messages
    for (const port of [0, 1]) {
      const { clb } = r.startPort(port);
      r.command(clb, 0, h2d(ATA.FLUSH48), []);
      r.pwr(port, P.CI, 1);
      expect(r.irq.msis).toEqual([]);
      r.pwr(port, P.IS, 0xffffffff);
      r.wr(0x08, 0xffffffff);
    }
    r.wr(0x04, 2); // IE
    for (const port of [0, 1]) {
      const clb = r.prd(port, P.CLB);
      r.command(clb, 1, h2d(ATA.FLUSH48), []);
      r.pwr(port, P.CI, 2);
      expect(r.rd(0x08) & (1 << port)).toBe(1 << port);
    }
    expect(r.irq.msis).toEqual([[0xfee00000, 0x4040], [0xfee00000, 0x4041]]);
  });

  it('INTx without MSI: asserted while IS & IE, deasserted when the driver clears IS', () => {
    const r = rig(disk(image()));
    const { clb } = r.startPort(0);
    r.wr(0x04, 2);
    expect(r.hba.intxState).toBe('idle');
    r.command(clb, 0, h2d(ATA.FLUSH48), []);
    r.pwr(0, P.CI, 1);
    expect(r.hba.intxState).toBe('asserted');
    r.pwr(0, P.IS, 0xffffffff);
    r.wr(0x08, 1);
    expect(r.hba.intxState).toBe('idle');
    // IE off in PxIE: completion sets PxIS but raises nothing
    r.pwr(0, P.IE, 0);
    r.command(clb, 1, h2d(ATA.FLUSH48), []);
    r.pwr(0, P.CI, 2);
    expect(r.prd(0, P.IS) & 1).toBe(1);
    expect(r.hba.intxState).toBe('idle');
  });
});

describe('ahci: hostile driver', () => {
  it('PRDT, command table and command list outside guest RAM end the command with ABORT + HBDS, never a throw', () => {
    const r = rig(disk(image()));
    const { clb } = r.startPort(0);
    const recover = () => { r.pwr(0, P.CMD, 0x10); r.pwr(0, P.IS, 0xffffffff); r.pwr(0, P.CMD, 0x11); };
    for (const addr of [0, RAM_BASE + RAM_SIZE - 100, 2 ** 52, 0xfee00000]) {
      r.command(clb, 0, h2d(ATA.READ_DMA48, 0, 1), [{ addr, len: 512 }]);
      expect(() => r.pwr(0, P.CI, 1)).not.toThrow();
      expect(r.prd(0, P.TFD) & 1).toBe(1);
      expect(r.prd(0, P.IS) & 0x10000000).toBe(0x10000000);
      recover();
    }
    // the table itself outside RAM, and a PRDTL of 65535 running off the end of RAM
    r.command(clb, 0, h2d(ATA.READ_DMA48, 0, 1), [], { ctba: 0x10 });
    expect(() => r.pwr(0, P.CI, 1)).not.toThrow();
    expect(r.prd(0, P.TFD) & 1).toBe(1);
    recover();
    const ctba = r.command(clb, 0, h2d(ATA.READ_DMA48, 0, 1), [{ addr: r.alloc(512), len: 512 }]);
    r.command(clb, 0, h2d(ATA.READ_DMA48, 0, 1), [], { ctba: RAM_BASE + RAM_SIZE - 0x100, prdtl: 65535 });
    expect(() => r.pwr(0, P.CI, 1)).not.toThrow();
    expect(r.prd(0, P.TFD) & 1).toBe(1);
    recover();
    expect(ctba).toBeGreaterThan(0);
    // the command list outside RAM
    r.pwr(0, P.CMD, 0x10);
    r.pwr(0, P.CLB, 0xfffff000);
    r.pwr(0, P.CMD, 0x11);
    expect(() => r.pwr(0, P.CI, 0xffffffff)).not.toThrow();
    expect(r.prd(0, P.TFD) & 1).toBe(1);
  });

  it('huge counts, short PRDTs, a non-command FIS and every slot issued at once all terminate', () => {
    const r = rig(disk(image(40 << 20)));
    const { clb } = r.startPort(0);
    const b = r.alloc(512);
    // 65536 sectors asked, 512 bytes of PRDT: the transfer stops at the PRDT (PRDBC says so)
    r.command(clb, 0, h2d(ATA.READ_DMA48, 0, 0), [{ addr: b, len: 512 }]);
    r.pwr(0, P.CI, 1);
    expect(r.prd(0, P.CI)).toBe(0);
    expect(r.prdbc(clb, 0)).toBe(512);
    // a data FIS where a command FIS belongs
    const bad = h2d(ATA.READ_DMA48, 0, 1); bad[0] = 0x46;
    r.command(clb, 1, bad, [{ addr: b, len: 512 }]);
    expect(() => r.pwr(0, P.CI, 2)).not.toThrow();
    r.pwr(0, P.CMD, 0x10); r.pwr(0, P.IS, 0xffffffff); r.pwr(0, P.CMD, 0x11);
    // random headers in all 32 slots
    const junk = r.alloc(4096);
    r.fill(junk, pattern(4096, 7));
    for (let s = 0; s < 32; s++) r.command(clb, s, Array.from(pattern(64, s)), [{ addr: junk, len: 512 }]);
    expect(() => r.pwr(0, P.CI, 0xffffffff)).not.toThrow();
  });

  it('seeded random register and command traffic never throws', () => {
    const r = rig({ ...disk(image()), 'pci.0.4.0.port.1.type': 'cd', 'pci.0.4.0.port.1.path': image(64 * 2048) });
    const ports = [r.startPort(0), r.startPort(1)];
    let x = 12345;
    const rnd = () => { x = (x * 1103515245 + 12345) >>> 0; return x; };
    const bufs = Array.from({ length: 4 }, () => r.alloc(8192));
    for (let i = 0; i < 3000; i++) {
      const port = rnd() & 1;
      const k = rnd() % 10;
      if (k < 5) {
        const cmds = [0xec, 0x25, 0x35, 0x60, 0x61, 0x64, 0x06, 0xea, 0xef, 0x2f, 0xa0, 0xa1, 0xb0, 0xe5, 0xc6, rnd() & 0xff];
        const f = h2d(cmds[rnd() % cmds.length], rnd() % 10000, rnd() & 0xffff, rnd() & 0xffff);
        const acmd = Array.from(pattern(16, rnd()));
        acmd[0] = [0x00, 0x03, 0x12, 0x1b, 0x1e, 0x25, 0x28, 0x43, 0x46, 0x4a, 0x5a, 0xa8, rnd() & 0xff][rnd() % 13];
        const prdt = Array.from({ length: rnd() % 4 }, () => ({ addr: rnd() % 3 ? bufs[rnd() & 3] : rnd() * 4096, len: 1 + (rnd() % 8192) }));
        const slot = rnd() & 31;
        r.command(ports[port].clb, slot, f, prdt, { acmd, atapi: port === 1 });
        if (rnd() & 1) r.pwr(port, P.SACT, 1 << slot);
        expect(() => r.pwr(port, P.CI, 1 << slot)).not.toThrow();
      } else if (k < 8) {
        const regs = [0x10, 0x14, 0x18, 0x2c, 0x30, 0x34, 0x38];
        const reg = regs[rnd() % regs.length];
        const v = reg === 0x18 ? (rnd() & 0x11) | 0x10 : rnd();
        expect(() => r.pwr(port, reg, v)).not.toThrow();
      } else {
        expect(() => r.wr([0x04, 0x08][rnd() & 1], rnd() & 0x7fffffff & ~1)).not.toThrow();
        expect(() => r.rd((rnd() % 0x400) & ~3)).not.toThrow();
      }
    }
  });

  it('sub-dword writes are ignored; reads of any width work', () => {
    const r = rig(disk(image()));
    r.startPort(0);
    r.wr(0x100 + P.CLB, 0xaa, 1);
    expect(r.prd(0, P.CLB)).not.toBe(0xaa);
    expect(r.rd(0x12, 2)).toBe(0x1);
    expect(r.rd(0x00, 1)).toBe(r.rd(0) & 0xff);
  });
});

describe('ahci: register page (regpage)', () => {
  function pageRig(settings: Record<string, string>): AhciRig {
    const r = new AhciRig(settings, { registerPages: true });
    rigs.push(r);
    return r;
  }
  /** Every register word of ABAR as the page has it equals what an exit reads. */
  function expectPageMatches(r: AhciRig): void {
    for (let off = 0; off < 0x100 + 6 * 0x80; off += 4) {
      const page = r.pageRd(off);
      const exit = r.rd(off);
      if (page !== exit) expect({ off: off.toString(16), page: page.toString(16) }).toEqual({ off: off.toString(16), page: exit.toString(16) });
    }
  }

  it('maps a read-only page of ABAR (4 KiB) where BAR 5 decodes and keeps it equal to the registers', () => {
    const r = pageRig({ ...disk(image()), 'pci.0.4.0.port.1.type': 'cd', 'pci.0.4.0.port.1.path': image(64 * 2048) });
    expect(r.hba.registerPage).toBe(true);
    expect(r.pages!.bytes.length).toBe(4096);
    r.cfgWr(0x24, 0xffffffff);
    expect((~(r.cfgRd(0x24) & ~0xf) + 1) >>> 0).toBe(4096);
    r.cfgWr(0x24, r.abar);
    expect(r.pages!.mappedAt).toBe(r.abar);
    expectPageMatches(r);
    // Port bring-up, NCQ commands in flight and done, a COMRESET, HBA reset.
    const { clb } = r.startPort(0);
    r.startPort(1);
    expectPageMatches(r);
    const buf = r.alloc(32 * 4096, 4096);
    for (let t = 0; t < 32; t++) r.command(clb, t, ncq(ATA.READ_FPDMA, t * 8, 8, t), [{ addr: buf + t * 4096, len: 4096 }]);
    r.pwr(0, P.SACT, 0xffffffff);
    expect(r.pageRd(0x100 + P.SACT)).toBe(0xffffffff);
    r.pwr(0, P.CI, 0xffffffff);
    expectPageMatches(r);
    expect(r.pageRd(0x100 + P.CI)).toBe(0);
    expect(r.pageRd(0x100 + P.SACT)).toBe(0);
    expect(r.pageRd(0x100 + P.IS) & 0x8).toBe(0x8); // SDB FIS interrupt
    r.pwr(0, P.IS, 0xffffffff);
    r.wr(0x08, 0xffffffff);
    expectPageMatches(r);
    r.pwr(0, P.CMD, 0x10);
    r.pwr(0, P.SCTL, 1);
    r.pwr(0, P.SCTL, 0);
    expectPageMatches(r);
    r.wr(0x04, 0x80000001); // GHC.HR
    expectPageMatches(r);
    r.hba.reset();
    expectPageMatches(r);
  });

  it('follows BAR moves and MEMEN; without KVM pages (or with regpage=false) reads exit as before', () => {
    const r = pageRig(disk(image()));
    const cmd = r.cfgRd(0x04, 2);
    r.cfgWr(0x04, cmd & ~0x2, 2);
    expect(r.pages!.mappedAt).toBeUndefined();
    r.cfgWr(0x04, cmd | 0x2, 2);
    expect(r.pages!.mappedAt).toBe(r.abar);
    const moved = r.abar + 0x100000;
    r.cfgWr(0x24, moved);
    expect(r.pages!.mappedAt).toBe(moved);
    const off = pageRig({ ...disk(image()), 'pci.0.4.0.regpage': 'false' });
    expect(off.hba.registerPage).toBe(false);
    expect(off.pages).toBeUndefined();
    const plain = rig(disk(image()));
    expect(plain.hba.registerPage).toBe(false);
    r.cfgWr(0x24, 0xffffffff);
    plain.cfgWr(0x24, 0xffffffff);
    expect((~(plain.cfgRd(0x24) & ~0xf) + 1) >>> 0).toBe(1024); // bhyve's size: 0x100 + 6 * 0x80
  });

  it('seeded random traffic keeps the page equal to the registers', () => {
    const r = pageRig({ ...disk(image()), 'pci.0.4.0.port.1.type': 'cd', 'pci.0.4.0.port.1.path': image(64 * 2048) });
    const ports = [r.startPort(0), r.startPort(1)];
    let x = 777;
    const rnd = () => { x = (x * 1103515245 + 12345) >>> 0; return x; };
    const buf = r.alloc(8192);
    for (let i = 0; i < 1500; i++) {
      const port = rnd() & 1;
      const k = rnd() % 10;
      if (k < 5) {
        const cmds = [0xec, 0x25, 0x35, 0x60, 0x61, 0xea, 0xef, 0xa0, 0xa1, 0xe5, rnd() & 0xff];
        const slot = rnd() & 31;
        r.command(ports[port].clb, slot, h2d(cmds[rnd() % cmds.length], rnd() % 1000, rnd() & 0xff, rnd() & 0xffff), [{ addr: buf, len: 1 + (rnd() % 8192) }], { atapi: port === 1 });
        if (rnd() & 1) r.pwr(port, P.SACT, 1 << slot);
        r.pwr(port, P.CI, 1 << slot);
      } else if (k < 8) {
        const regs = [0x10, 0x14, 0x18, 0x2c, 0x30, 0x34, 0x38];
        const reg = regs[rnd() % regs.length];
        r.pwr(port, reg, reg === 0x18 ? (rnd() & 0x11) | 0x10 : rnd());
      } else {
        r.wr([0x04, 0x08][rnd() & 1], rnd() & 0x7fffffff & ~1);
      }
      if (i % 25 === 0) expectPageMatches(r);
    }
    expectPageMatches(r);
  });
});

describe('ahci: PxSACT writes through the coalesced MMIO ring (sactcoalesce)', () => {
  function ringRig(settings: Record<string, string>, registerPages = true): AhciRig {
    const r = new AhciRig(settings, { registerPages, coalescedRing: true });
    rigs.push(r);
    return r;
  }
  const sactAddr = (r: AhciRig, port: number) => r.abar + 0x100 + 0x80 * port + P.SACT;

  it('a disk port\'s PxSACT is a zone where ABAR decodes: the write waits in the ring, the PxCI exit replays it first', () => {
    const img = image(4 << 20, (b) => b.set(pattern(32 * 4096, 5)));
    const r = ringRig(disk(img));
    expect(r.hba.coalescedSactPorts).toBe(1);
    expect([...r.ring!.zones]).toEqual([[sactAddr(r, 0), 4]]);
    const { clb } = r.startPort(0);
    const buf = r.alloc(32 * 4096, 4096);
    for (let t = 0; t < 32; t++) r.command(clb, t, ncq(ATA.READ_FPDMA, t * 8, 8, t), [{ addr: buf + t * 4096, len: 4096 }]);
    for (let t = 0; t < 32; t++) r.pwr(0, P.SACT, (1 << t) >>> 0);
    expect(r.ring!.buffered).toBe(32);
    // Until the next exit the device has not seen them (the read-only page lags).
    expect(r.pageRd(0x100 + P.SACT)).toBe(0);
    r.pwr(0, P.CI, 0xffffffff);
    expect(r.ring!.pending).toBe(false);
    expect(r.prd(0, P.CI)).toBe(0);
    expect(r.prd(0, P.SACT)).toBe(0);
    expect(r.prd(0, P.TFD) & 1).toBe(0);
    expect(r.read(buf, 32 * 4096)).toEqual(pattern(32 * 4096, 5));
    expect(r.pageRd(0x100 + P.SACT)).toBe(0);
    expect(r.pageRd(0x100 + P.IS) & 0x8).toBe(0x8); // SDB FIS
  });

  it('a read of PxSACT that exits (regpage=false) sees the buffered write', () => {
    const r = ringRig({ ...disk(image()), 'pci.0.4.0.regpage': 'false' }, false);
    expect(r.hba.coalescedSactPorts).toBe(1);
    r.startPort(0);
    r.pwr(0, P.SACT, 0x5);
    expect(r.ring!.buffered).toBe(1);
    expect(r.prd(0, P.SACT)).toBe(0x5);
  });

  it('zones follow BAR moves and MEMEN; none for a CD port or with sactcoalesce=false', () => {
    const r = ringRig({ ...disk(image()), 'pci.0.4.0.port.1.type': 'cd', 'pci.0.4.0.port.1.path': image(64 * 2048) });
    expect([...r.ring!.zones.keys()]).toEqual([sactAddr(r, 0)]);
    const cmd = r.cfgRd(0x04, 2);
    r.pwr(0, P.SACT, 1); // buffered, then replayed when the zone goes
    r.cfgWr(0x04, cmd & ~0x2, 2);
    expect(r.ring!.zones.size).toBe(0);
    expect(r.ring!.pending).toBe(false);
    r.cfgWr(0x04, cmd | 0x2, 2);
    const moved = r.abar + 0x100000;
    r.cfgWr(0x24, moved);
    expect([...r.ring!.zones.keys()]).toEqual([moved + 0x100 + P.SACT]);
    const off = ringRig({ ...disk(image()), 'pci.0.4.0.sactcoalesce': 'false' });
    expect(off.hba.coalescedSactPorts).toBe(0);
    expect(off.ring!.zones.size).toBe(0);
  });

  it('hostile: buffered PxSACT writes for slots with bad command tables, then a port stop, end as without the ring', () => {
    const run = (coalesce: string) => {
      const r = ringRig({ ...disk(image()), 'pci.0.4.0.sactcoalesce': coalesce });
      const { clb } = r.startPort(0);
      // Slot 0: a command table outside guest RAM; slot 1: a PRDT past RAM's end.
      r.command(clb, 0, ncq(ATA.READ_FPDMA, 0, 8, 0), [], { ctba: RAM_BASE + RAM_SIZE + 0x1000, prdtl: 1 });
      r.command(clb, 1, ncq(ATA.READ_FPDMA, 0, 8, 1), [{ addr: RAM_BASE + RAM_SIZE - 2048, len: 4096 }]);
      r.pwr(0, P.SACT, 0x3);
      r.pwr(0, P.CI, 0x3);
      const after = { is: r.prd(0, P.IS), tfd: r.prd(0, P.TFD), ci: r.prd(0, P.CI), sact: r.prd(0, P.SACT) };
      // Then PxSACT for an idle slot and a stop: the stop clears what is outstanding.
      r.pwr(0, P.SACT, 0x4);
      r.pwr(0, P.CMD, 0x10);
      return { after, stopped: { ci: r.prd(0, P.CI), sact: r.prd(0, P.SACT), cmd: r.prd(0, P.CMD) & 0xc011 }, buffered: r.ring!.buffered };
    };
    const on = run('true');
    const off = run('false');
    expect(on.buffered).toBe(2);
    expect(off.buffered).toBe(0);
    expect(on.after).toEqual(off.after);
    expect(on.stopped).toEqual(off.stopped);
    expect(on.after.is & 0x70000000).not.toBe(0); // HBFS/HBDS/TFES: the error was reported
    expect(on.stopped).toEqual({ ci: 0, sact: 0, cmd: 0x4010 }); // FRE, FR; ST and CR clear
  });
});

describe('ahci: large NCQ transfers on the I/O pool (iopool)', () => {
  const same = (a: Uint8Array, b: Uint8Array) => Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.length), Buffer.from(b.buffer, b.byteOffset, b.length)) === 0;
  // Without a VM memory file the pool has no threads: a request waits
  // until the controller's next poll() or register exit, which runs it.
  it('an NCQ read and write of at least iopool_min are in flight until poll(), then complete as without the pool', () => {
    const img = image(4 << 20, (b) => b.set(pattern(1 << 20, 9)));
    const r = rig({ ...disk(img), 'pci.0.4.0.iopool': '1', 'pci.0.4.0.iopool_min': '65536' });
    expect(r.hba.pool).toBeDefined();
    const { clb, fb } = r.startPort(0);
    const buf = r.alloc(256 * 1024, 4096);
    // Slot 0: 128 KiB read in two PRDs; slot 1: 4 KiB read (under iopool_min: runs in the exit).
    r.command(clb, 0, ncq(ATA.READ_FPDMA, 0, 256, 0), [{ addr: buf, len: 65536 }, { addr: buf + 65536, len: 65536 }]);
    r.command(clb, 1, ncq(ATA.READ_FPDMA, 256, 8, 1), [{ addr: buf + 131072, len: 4096 }]);
    r.pwr(0, P.SACT, 0x3);
    r.pwr(0, P.CI, 0x3);
    expect(r.hba.pool!.pending).toBe(1);
    expect(r.hba.pool!.submitted).toBe(1);
    expect(same(r.read(buf + 131072, 4096), pattern(1 << 20, 9).subarray(131072, 135168))).toBe(true);
    expect(r.u32(fb + 0x58 + 4)).toBe(0x2); // SDB FIS: slot 1 done
    expect(r.prdbc(clb, 0)).toBe(0);
    r.hba.poll();
    expect(r.hba.pool!.pending).toBe(0);
    expect(same(r.read(buf, 131072), pattern(1 << 20, 9).subarray(0, 131072))).toBe(true);
    expect(r.prdbc(clb, 0)).toBe(131072);
    expect(r.u32(fb + 0x58 + 4)).toBe(0x1); // SDB FIS: slot 0 done
    expect(r.prd(0, P.SACT)).toBe(0);
    expect(r.prd(0, P.TFD) & 1).toBe(0);
    // A 128 KiB NCQ write, completed by the next register exit.
    r.fill(buf, pattern(131072, 3));
    r.command(clb, 2, ncq(ATA.WRITE_FPDMA, 1024, 256, 2), [{ addr: buf, len: 131072 }], { write: true });
    r.pwr(0, P.SACT, 0x4);
    r.pwr(0, P.CI, 0x4);
    expect(r.hba.pool!.pending).toBe(1);
    expect(r.prd(0, P.SACT)).toBe(0); // the read's exit completed it first
    expect(same(fs.readFileSync(img).subarray(1024 * 512, 1024 * 512 + 131072), pattern(131072, 3))).toBe(true);
  });

  it('with the register page, the I/O thread completes a successful NCQ transfer itself: PRDBC, then the PxSACT bit in the page; the device thread adds the SDB FIS', () => {
    const img = image(4 << 20, (b) => b.set(pattern(1 << 20, 6)));
    const r = new AhciRig({ ...disk(img), 'pci.0.4.0.iopool': '1' }, { registerPages: true });
    rigs.push(r);
    r.cfgWr(0x24, r.abar);
    const { clb, fb } = r.startPort(0);
    const buf = r.alloc(4 * 131072, 4096);
    for (let t = 0; t < 4; t++) r.command(clb, t, ncq(ATA.READ_FPDMA, t * 256, 256, t), [{ addr: buf + t * 131072, len: 131072 }]);
    r.pwr(0, P.SACT, 0xf);
    r.pwr(0, P.CI, 0xf);
    expect(r.hba.pool!.pending).toBe(4);
    expect(r.pageRd(0x100 + P.SACT)).toBe(0xf);
    // The pool's requests run (here on this thread, as a worker would):
    // each clears its bit in the page; the driver may take the tag again
    // before the device thread has looked.
    expect(r.hba.pool!.stealStale(0)).toBe(4);
    expect(r.pageRd(0x100 + P.SACT)).toBe(0);
    for (let t = 0; t < 4; t++) expect(r.prdbc(clb, t)).toBe(131072);
    expect(same(r.read(buf, 4 * 131072), pattern(1 << 20, 6).subarray(0, 4 * 131072))).toBe(true);
    // Tag 2 again, before the device thread reaped the first one: the
    // reap that comes with the PxSACT write must leave the new bit set.
    r.command(clb, 2, ncq(ATA.READ_FPDMA, 4096, 256, 2), [{ addr: buf, len: 131072 }]);
    r.pwr(0, P.SACT, 0x4);
    expect(r.hba.pool!.pending).toBe(0);
    expect(r.u32(fb + 0x58 + 4) !== 0).toBe(true); // the reaped completions' SDB FIS
    expect(r.pageRd(0x100 + P.SACT)).toBe(0x4);
    r.pwr(0, P.CI, 0x4);
    expect(r.hba.pool!.pending).toBe(1);
    expect(r.pageRd(0x100 + P.SACT)).toBe(0x4);
    r.hba.poll();
    expect(r.pageRd(0x100 + P.SACT)).toBe(0);
    expect(r.prd(0, P.SACT)).toBe(0);
    expect(r.hba.ports[0]!.stats.reads).toBe(5);
    // A failed transfer is the device thread's: ABORT, the bit stays set.
    r.command(clb, 5, ncq(ATA.READ_FPDMA, 0, 256, 5), [{ addr: buf, len: 131072 }]);
    r.pwr(0, P.SACT, 0x20);
    r.pwr(0, P.CI, 0x20);
    r.hba.ports[0]!.backend.close();
    r.hba.poll();
    expect(r.prd(0, P.TFD) & 1).toBe(1);
    expect(r.pageRd(0x100 + P.SACT)).toBe(0x20);
    expect(r.hba.ports[0]!.stats.errors).toBe(1);
  });

  it('a port stop, COMRESET or HBA reset with transfers in flight finishes them first', () => {
    for (const [what, act] of [
      ['stop', (r: AhciRig) => r.pwr(0, P.CMD, 0x10)],
      ['hba reset', (r: AhciRig) => r.wr(0x04, 0x80000001)],
      ['machine reset', (r: AhciRig) => r.hba.reset()],
    ] as Array<[string, (r: AhciRig) => void]>) {
      const img = image(4 << 20, (b) => b.set(pattern(1 << 20, 4)));
      const r = rig({ ...disk(img), 'pci.0.4.0.iopool': '2' });
      const { clb } = r.startPort(0);
      const buf = r.alloc(32 * 65536, 4096);
      for (let t = 0; t < 8; t++) r.command(clb, t, ncq(ATA.READ_FPDMA, t * 128, 128, t), [{ addr: buf + t * 65536, len: 65536 }]);
      r.pwr(0, P.SACT, 0xff);
      r.pwr(0, P.CI, 0xff);
      expect(r.hba.pool!.pending, what).toBe(8);
      act(r);
      expect(r.hba.pool!.pending, what).toBe(0);
      expect(same(r.read(buf, 8 * 65536), pattern(1 << 20, 4).subarray(0, 8 * 65536)), what).toBe(true);
      expect(r.prd(0, P.SACT), what).toBe(0);
      expect(r.prd(0, P.CI), what).toBe(0);
    }
  });

  it('hostile: a PRD outside guest RAM ends the command with HBDS at once, nothing reaches the pool; an I/O error ends in ABORT', () => {
    const img = image(4 << 20);
    const r = rig({ ...disk(img), 'pci.0.4.0.iopool': '1' });
    const { clb } = r.startPort(0);
    r.command(clb, 0, ncq(ATA.READ_FPDMA, 0, 256, 0), [{ addr: RAM_BASE + RAM_SIZE - 4096, len: 131072 }]);
    r.pwr(0, P.SACT, 0x1);
    r.pwr(0, P.CI, 0x1);
    expect(r.hba.pool!.submitted).toBe(0);
    expect(r.prd(0, P.IS) & 0x10000000).toBe(0x10000000); // HBDS
    expect(r.prd(0, P.TFD) & 1).toBe(1);
    // A transfer that fails in the pool (its image is gone) ends as a failed transfer does without it.
    const r2 = rig({ ...disk(image(4 << 20)), 'pci.0.4.0.iopool': '1' });
    const p2 = r2.startPort(0);
    const buf = r2.alloc(131072, 4096);
    r2.command(p2.clb, 3, ncq(ATA.WRITE_FPDMA, 0, 256, 3), [{ addr: buf, len: 131072 }], { write: true });
    r2.pwr(0, P.SACT, 0x8);
    r2.pwr(0, P.CI, 0x8);
    expect(r2.hba.pool!.pending).toBe(1);
    r2.hba.ports[0]!.backend.close();
    r2.hba.poll();
    expect(r2.hba.pool!.pending).toBe(0);
    expect(r2.prd(0, P.TFD) & 1).toBe(1); // ERR
    expect(r2.prd(0, P.IS) & 0x40000000).toBe(0x40000000); // TFES
    expect(r2.hba.ports[0]!.stats.errors).toBe(1);
  });

  it('hostile: seeded random register and command traffic with every NCQ transfer on the pool never throws and leaves nothing in flight', () => {
    const r = rig({ ...disk(image()), 'pci.0.4.0.iopool': '1', 'pci.0.4.0.iopool_min': '512' });
    const p0 = r.startPort(0);
    let x = 4242;
    const rnd = () => { x = (x * 1103515245 + 12345) >>> 0; return x; };
    const bufs = Array.from({ length: 4 }, () => r.alloc(65536, 4096));
    for (let i = 0; i < 2000; i++) {
      const k = rnd() % 12;
      if (k < 6) {
        const op = [0x60, 0x61, 0x60, 0x61, 0x25, 0xea][rnd() % 6];
        const slot = rnd() & 31;
        const prdt = Array.from({ length: 1 + (rnd() % 3) }, () => ({ addr: rnd() % 5 ? bufs[rnd() & 3] : rnd() * 4096, len: 512 + (rnd() % 16384) }));
        r.command(p0.clb, slot, ncq(op, rnd() % 9000, 1 + (rnd() % 64), slot), prdt, { write: op === 0x61 });
        r.pwr(0, P.SACT, 1 << slot);
        expect(() => r.pwr(0, P.CI, 1 << slot)).not.toThrow();
      } else if (k < 8) {
        const regs = [0x10, 0x14, 0x2c, 0x30, 0x34, 0x38];
        expect(() => r.pwr(0, regs[rnd() % regs.length], rnd())).not.toThrow();
      } else if (k < 9) {
        // Error recovery as a driver does it: stop the port, start it again.
        expect(() => { r.pwr(0, P.CMD, 0x10); r.pwr(0, P.CMD, 0x11); }).not.toThrow();
      } else if (k < 11) {
        expect(() => r.hba.poll()).not.toThrow();
      } else {
        expect(() => r.wr([0x04, 0x08][rnd() & 1], rnd() & 0x7fffffff & ~1)).not.toThrow();
      }
    }
    r.hba.poll();
    expect(r.hba.pool!.pending).toBe(0);
    expect(r.hba.pool!.submitted).toBeGreaterThan(100);
  });

  it('iopool_merge: NCQ writes in flight that continue each other in the image are one pwritev; each completes as its own command', () => {
    for (const merge of ['1048576', '0']) {
      const img = image(4 << 20);
      const r = new AhciRig({ ...disk(img), 'pci.0.4.0.iopool': '1', 'pci.0.4.0.iopool_merge': merge }, { registerPages: true });
      rigs.push(r);
      r.cfgWr(0x24, r.abar);
      const { clb, fb } = r.startPort(0);
      const port = r.hba.ports[0]!;
      let writes = 0;
      const writev = port.backend.writev.bind(port.backend);
      port.backend.writev = (v, o) => { writes++; return writev(v, o); };
      const buf = r.alloc(8 * 65536, 4096);
      r.fill(buf, pattern(8 * 65536, 4));
      // Eight 64 KiB writes of LBA 2048.. in tag order 7..0, one PxCI write (as a driver may).
      for (let t = 0; t < 8; t++) r.command(clb, t, ncq(ATA.WRITE_FPDMA, 2048 + (7 - t) * 128, 128, t), [{ addr: buf + (7 - t) * 65536, len: 65536 }], { write: true });
      r.pwr(0, P.SACT, 0xff);
      r.pwr(0, P.CI, 0xff);
      expect(r.hba.pool!.pending).toBe(8);
      r.hba.poll();
      expect(r.hba.pool!.pending).toBe(0);
      expect(writes).toBe(merge === '0' ? 8 : 1);
      expect(r.hba.stats()['io pool requests merged']).toBe(merge === '0' ? 0 : 8);
      expect(r.pageRd(0x100 + P.SACT)).toBe(0);
      for (let t = 0; t < 8; t++) expect(r.prdbc(clb, t)).toBe(65536);
      expect(r.prd(0, P.TFD) & 1).toBe(0);
      expect(r.u32(fb + 0x58 + 4) !== 0).toBe(true); // SDB FIS posted
      expect(same(fs.readFileSync(img).subarray(2048 * 512, 2048 * 512 + 8 * 65536), pattern(8 * 65536, 4))).toBe(true);
    }
    expect(() => rig({ ...disk(image()), 'pci.0.4.0.iopool_merge': 'lots' })).toThrow(/invalid iopool_merge "lots"/);
    expect(ahciDevice.keys?.find((k) => k.key === 'iopool_merge')?.default).toBe('1048576');
  });

  it('no I/O thread by default (iopool=0); iopool=1 has one; a bad iopool is refused', () => {
    expect(ahciDevice.keys?.find((k) => k.key === 'iopool')?.default).toBe('0');
    expect(rig({ ...disk(image()) }).hba.pool).toBeUndefined();
    expect(rig({ ...disk(image()), 'pci.0.4.0.iopool': '1' }).hba.pool).toBeDefined();
    expect(rig({ ...disk(image()), 'pci.0.4.0.iopool': '0' }).hba.pool).toBeUndefined();
    expect(() => rig({ ...disk(image()), 'pci.0.4.0.iopool': 'many' })).toThrow(/invalid iopool "many"/);
    expect(() => rig({ ...disk(image()), 'pci.0.4.0.iopool': '9' })).toThrow(/invalid iopool "9"/);
  });
});

describe('ahci and nvme: boot order', () => {
  it('a port\'s bootindex (and nvme\'s) puts the function in fw_cfg\'s bootorder, duplicates refused', () => {
    const r = rig({
      ...disk(image(), { bootindex: '2' }),
      'pci.0.6.0.device': 'nvme', 'pci.0.6.0.path': image(), 'pci.0.6.0.bootindex': '1',
    });
    expect(r.platform.bootOrder.map((b) => [b.bootindex, b.slot, b.name])).toEqual([[1, 6, 'nvme@pci.0.6.0'], [2, 4, 'ahci@pci.0.4.0']]);
    for (const p of r.platform.devices) (p as { close?: () => void }).close?.();
    rigs.length = 0;
    expect(() => new AhciRig({ ...disk(image(), { bootindex: '1' }), 'pci.0.6.0.device': 'nvme', 'pci.0.6.0.path': image(), 'pci.0.6.0.bootindex': '1' }))
      .toThrow(/Bootindex already occupied by ahci@pci.0.4.0/);
    expect(() => new AhciRig(disk(image(), { bootindex: 'first' }))).toThrow(/Invalid bootindex first for ahci@pci.0.4.0/);
  });
});

describe('ahci: configuration errors', () => {
  it('CD images open read-only: a read-only ISO file works and two VMs share one ISO', () => {
    const iso = image(4 * 2048);
    fs.chmodSync(iso, 0o444);
    const cd = { 'pci.0.4.0.port.0.type': 'cd', 'pci.0.4.0.port.0.path': iso };
    const a = rig(cd);
    const b = rig(cd);
    expect(a.hba.ports[0]!.backend.readOnly).toBe(true);
    expect(b.prd(0, 0x24)).toBe(0xeb140101);
    // ...but a disk on the same image would write it: refused while they run
    expect(() => new AhciRig({ 'pci.0.4.0.port.0.type': 'hd', 'pci.0.4.0.port.0.path': iso, 'pci.0.4.0.port.0.ro': 'false' }))
      .toThrow(process.getuid?.() === 0 ? /in use by another VM/ : /permission denied|in use/);
  });

  it('a missing image, an image in use and a bad port type are one-line errors naming the port', () => {
    expect(() => new AhciRig(disk(path.join(tmp, 'nope')))).toThrow(/ahci at pci slot 0:4:0: port 0: disk image .* does not exist/);
    const img = image();
    const a = rig(disk(img));
    expect(a.hba).toBeDefined();
    expect(() => new AhciRig(disk(img))).toThrow(/port 0: disk image .* in use by another VM/);
    expect(() => new AhciRig({ 'pci.0.4.0.port.0.type': 'zip', 'pci.0.4.0.port.0.path': image() })).toThrow(/invalid type "zip"/);
    expect(() => new AhciRig(disk(image(), { nmrr: 'fast' }))).toThrow(/invalid nmrr/);
  });
});
