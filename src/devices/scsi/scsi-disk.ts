// A SCSI direct-access block device (SBC-3) on the shared block backend
// (../block/block-backend.ts): what CTL's block LUN answers behind bhyve's
// virtio-scsi on FreeBSD, for a file or block device on Linux. Commands:
// TEST UNIT READY, REQUEST SENSE, INQUIRY (standard data and VPD pages
// 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2), READ CAPACITY(10/16), READ and
// WRITE (6/10/12/16, FUA), VERIFY(10/16), SYNCHRONIZE CACHE(10/16), UNMAP,
// REPORT LUNS, MODE SENSE(6/10) (caching and control pages),
// START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL. Anything else is CHECK
// CONDITION, ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE.
//
// A command is a CDB plus the initiator's data-out views (WRITE, UNMAP)
// or data-in views (everything that returns data); data moves straight
// between the image and those views. The transport reports the status,
// the sense (after CHECK CONDITION) and how many data-in bytes were
// filled. Every CDB field is checked: a range past the end of the disk,
// a transfer longer than the buffers, a reserved page, all end in CHECK
// CONDITION with the SPC sense code, never an exception.

import type { BlockFile } from '../block/block-backend.js';
import { isUnsupported } from '../../sys/file.js';
import {
  ASC_INVALID_FIELD_IN_CDB, ASC_INVALID_FIELD_IN_PARAMETER_LIST, ASC_INVALID_OPCODE, ASC_LBA_OUT_OF_RANGE,
  ASC_LUN_NOT_SUPPORTED, ASC_PARAMETER_LIST_LENGTH_ERROR, ASC_SAVING_PARAMETERS_NOT_SUPPORTED, ASC_UNRECOVERED_READ_ERROR,
  ASC_WRITE_ERROR, ASC_WRITE_PROTECTED, INQUIRY, MODE_SENSE_10, MODE_SENSE_6, MODEPAGE_ALL,
  MODEPAGE_CACHING, MODEPAGE_CONTROL, PREVENT_ALLOW, READ_10, READ_12, READ_16, READ_6, READ_CAPACITY, REPORT_LUNS,
  REQUEST_SENSE, SAI_READ_CAPACITY_16, SCSI_STATUS_CHECK_CONDITION, SCSI_STATUS_GOOD, SENSE_DATA_PROTECT,
  SENSE_ILLEGAL_REQUEST, SENSE_MEDIUM_ERROR, SENSE_NO_SENSE, SERVICE_ACTION_IN_16, START_STOP_UNIT,
  SYNCHRONIZE_CACHE_10, SYNCHRONIZE_CACHE_16, TEST_UNIT_READY, UNMAP, VERIFY_10, VERIFY_16, WRITE_10, WRITE_12,
  WRITE_16, WRITE_6, asciiField, be16, be24, be32, be64, fixedSense, put16, put32, put64,
} from './scsi-defs.js';

/** What a command came to. */
export interface ScsiResult {
  status: number;
  /** Sense data after CHECK CONDITION. */
  sense?: Uint8Array;
  /** Bytes written into the data-in buffers. */
  dataIn: number;
}

/** Where the initiator's data is: device-readable (data-out) or
 * device-writable (data-in) views, and their total lengths. */
export interface ScsiBuffers {
  dataOut: Uint8Array[];
  dataOutLength: number;
  dataIn: Uint8Array[];
  dataInLength: number;
}

export interface ScsiDiskOptions {
  /** Logical block size (the block backend's sectorsize; default 512). */
  blockSize?: number;
  physicalBlockSize?: number;
  /** Unit serial number (VPD 0x80). */
  serial: string;
  /** UNMAP refused (nodelete). */
  nodelete?: boolean;
}

export interface ScsiDiskStats {
  commands: number;
  reads: number;
  writes: number;
  bytesRead: number;
  bytesWritten: number;
  flushes: number;
  unmaps: number;
  checkConditions: number;
}

/** Largest transfer (blocks) the block-limits page offers. */
export const SCSI_MAX_TRANSFER_BLOCKS = 0xffff;
/** Most blocks one UNMAP descriptor may name, and descriptors per UNMAP. */
export const SCSI_MAX_UNMAP_BLOCKS = (16 << 20) / 512;
export const SCSI_MAX_UNMAP_DESCRIPTORS = 256;

const VENDOR = 'BHYVE';
const PRODUCT = 'BHYVE SCSI DISK';
const REVISION = '0001';

class CheckCondition extends Error {
  constructor(readonly key: number, readonly asc: number, readonly ascq = 0) { super(`sense ${key}/${asc}/${ascq}`); }
}

const illegal = (asc: number): never => { throw new CheckCondition(SENSE_ILLEGAL_REQUEST, asc); };

function copyInto(views: Uint8Array[], src: Uint8Array): number {
  let done = 0;
  for (let i = 0; i < views.length && done < src.length; i++) {
    const n = Math.min(views[i].length, src.length - done);
    views[i].set(src.subarray(done, done + n));
    done += n;
  }
  return done;
}

function copyFrom(views: Uint8Array[], dst: Uint8Array): number {
  let done = 0;
  for (let i = 0; i < views.length && done < dst.length; i++) {
    const n = Math.min(views[i].length, dst.length - done);
    dst.set(views[i].subarray(0, n), done);
    done += n;
  }
  return done;
}

/** Views covering the first `len` bytes of `views`. */
function prefix(views: Uint8Array[], len: number, out: Uint8Array[]): Uint8Array[] {
  out.length = 0;
  let left = len;
  for (let i = 0; i < views.length && left > 0; i++) {
    const v = views[i];
    out.push(v.length <= left ? v : v.subarray(0, left));
    left -= Math.min(v.length, left);
  }
  return out;
}

export class ScsiDisk {
  readonly blockSize: number;
  readonly blocks: number;
  readonly stats: ScsiDiskStats = { commands: 0, reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, flushes: 0, unmaps: 0, checkConditions: 0 };
  private readonly physExp: number;
  private readonly unmapOk: boolean;
  private readonly iov: Uint8Array[] = [];
  /** Sense of the last CHECK CONDITION, for REQUEST SENSE. */
  private lastSense = fixedSense(SENSE_NO_SENSE, 0);

  constructor(readonly file: BlockFile, readonly opts: ScsiDiskOptions) {
    this.blockSize = opts.blockSize ?? 512;
    this.blocks = Math.floor(file.size / this.blockSize);
    this.physExp = Math.log2((opts.physicalBlockSize ?? this.blockSize) / this.blockSize);
    this.unmapOk = !file.readOnly && !(opts.nodelete ?? false);
  }

  /** Runs one command for logical unit `lun` (only 0 exists). */
  execute(cdb: Uint8Array, lun: number, b: ScsiBuffers): ScsiResult {
    this.stats.commands++;
    try {
      const dataIn = this.dispatch(cdb, lun, b);
      return { status: SCSI_STATUS_GOOD, dataIn };
    } catch (e) {
      if (!(e instanceof CheckCondition)) throw e;
      this.stats.checkConditions++;
      const sense = fixedSense(e.key, e.asc, e.ascq);
      this.lastSense = sense;
      return { status: SCSI_STATUS_CHECK_CONDITION, sense, dataIn: 0 };
    }
  }

  /** Answers `data` cut to the allocation length and the buffers. */
  private answer(b: ScsiBuffers, data: Uint8Array, alloc: number): number {
    return copyInto(b.dataIn, data.subarray(0, Math.min(data.length, alloc)));
  }

  private dispatch(cdb: Uint8Array, lun: number, b: ScsiBuffers): number {
    const op = cdb[0];
    // A logical unit that does not exist still answers INQUIRY (qualifier
    // 3), REPORT LUNS and REQUEST SENSE (SPC-4 3.3).
    if (lun !== 0 && op !== INQUIRY && op !== REPORT_LUNS && op !== REQUEST_SENSE) illegal(ASC_LUN_NOT_SUPPORTED);
    switch (op) {
      case TEST_UNIT_READY:
      case START_STOP_UNIT:
      case PREVENT_ALLOW:
        return 0;
      case REQUEST_SENSE: {
        const s = lun !== 0 ? fixedSense(SENSE_ILLEGAL_REQUEST, ASC_LUN_NOT_SUPPORTED) : this.lastSense;
        this.lastSense = fixedSense(SENSE_NO_SENSE, 0);
        return this.answer(b, s, cdb[4]);
      }
      case INQUIRY:
        return this.answer(b, this.inquiry(cdb, lun), be16(cdb, 3));
      case READ_CAPACITY: {
        const d = new Uint8Array(8);
        put32(d, 0, Math.min(this.blocks - 1, 0xffffffff));
        put32(d, 4, this.blockSize);
        return this.answer(b, d, 8);
      }
      case SERVICE_ACTION_IN_16: {
        if ((cdb[1] & 0x1f) !== SAI_READ_CAPACITY_16) illegal(ASC_INVALID_FIELD_IN_CDB);
        const d = new Uint8Array(32);
        put64(d, 0, this.blocks - 1);
        put32(d, 8, this.blockSize);
        d[13] = this.physExp & 0x0f;
        // LBPME: UNMAP deallocates; LBPRZ: what it deallocated reads zeros.
        if (this.unmapOk) d[14] = 0xc0;
        return this.answer(b, d, be32(cdb, 10));
      }
      case READ_6: return this.read(b, be24(cdb, 1) & 0x1fffff, cdb[4] === 0 ? 256 : cdb[4], false);
      case READ_10: return this.read(b, be32(cdb, 2), be16(cdb, 7), (cdb[1] & 0x08) !== 0);
      case READ_12: return this.read(b, be32(cdb, 2), be32(cdb, 6), (cdb[1] & 0x08) !== 0);
      case READ_16: return this.read(b, be64(cdb, 2), be32(cdb, 10), (cdb[1] & 0x08) !== 0);
      case WRITE_6: return this.write(b, be24(cdb, 1) & 0x1fffff, cdb[4] === 0 ? 256 : cdb[4], false);
      case WRITE_10: return this.write(b, be32(cdb, 2), be16(cdb, 7), (cdb[1] & 0x08) !== 0);
      case WRITE_12: return this.write(b, be32(cdb, 2), be32(cdb, 6), (cdb[1] & 0x08) !== 0);
      case WRITE_16: return this.write(b, be64(cdb, 2), be32(cdb, 10), (cdb[1] & 0x08) !== 0);
      case VERIFY_10:
      case VERIFY_16: {
        // BYTCHK 0: the medium is checked, which a file always passes.
        if (cdb[1] & 0x06) illegal(ASC_INVALID_FIELD_IN_CDB);
        const lba = op === VERIFY_10 ? be32(cdb, 2) : be64(cdb, 2);
        const n = op === VERIFY_10 ? be16(cdb, 7) : be32(cdb, 10);
        this.range(lba, n);
        return 0;
      }
      case SYNCHRONIZE_CACHE_10:
      case SYNCHRONIZE_CACHE_16: {
        const lba = op === SYNCHRONIZE_CACHE_10 ? be32(cdb, 2) : be64(cdb, 2);
        const n = op === SYNCHRONIZE_CACHE_10 ? be16(cdb, 7) : be32(cdb, 10);
        this.range(lba, n);
        if (!this.file.readOnly) this.flush();
        return 0;
      }
      case UNMAP: return this.unmap(cdb, b);
      case REPORT_LUNS: {
        const alloc = be32(cdb, 6);
        if (alloc < 16) illegal(ASC_INVALID_FIELD_IN_CDB);
        const d = new Uint8Array(16);
        put32(d, 0, 8); // one LUN: 0
        return this.answer(b, d, alloc);
      }
      case MODE_SENSE_6: return this.modeSense(cdb, b, false);
      case MODE_SENSE_10: return this.modeSense(cdb, b, true);
      default:
        return illegal(ASC_INVALID_OPCODE);
    }
  }

  private inquiry(cdb: Uint8Array, lun: number): Uint8Array {
    if (cdb[1] & 0x02) illegal(ASC_INVALID_FIELD_IN_CDB); // CMDDT
    const evpd = (cdb[1] & 1) !== 0;
    const page = cdb[2];
    // Peripheral qualifier 3 / type 0x1f: no logical unit here.
    const pdt = lun === 0 ? 0x00 : 0x7f;
    if (!evpd) {
      if (page !== 0) illegal(ASC_INVALID_FIELD_IN_CDB);
      const d = new Uint8Array(36);
      d[0] = pdt;
      d[2] = 0x06; // SPC-4
      d[3] = 0x12; // HISUP, response data format 2
      d[4] = 36 - 5;
      d[7] = 0x02; // CMDQUE
      asciiField(d, 8, VENDOR, 8);
      asciiField(d, 16, PRODUCT, 16);
      asciiField(d, 32, REVISION, 4);
      return d;
    }
    if (lun !== 0) illegal(ASC_LUN_NOT_SUPPORTED);
    const vpd = (code: number, body: number[] | Uint8Array): Uint8Array => {
      const d = new Uint8Array(4 + body.length);
      d[0] = pdt;
      d[1] = code;
      put16(d, 2, body.length);
      d.set(body, 4);
      return d;
    };
    const serial = Buffer.from(this.opts.serial, 'latin1');
    switch (page) {
      case 0x00: return vpd(0x00, [0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
      case 0x80: return vpd(0x80, serial);
      case 0x83: {
        // One designator: T10 vendor ID based (type 1, ASCII), vendor then serial.
        const id = Buffer.concat([Buffer.from(VENDOR.padEnd(8, ' '), 'latin1'), serial]);
        return vpd(0x83, [0x02, 0x01, 0x00, id.length, ...id]);
      }
      case 0xb0: {
        const d = new Uint8Array(0x3c);
        put32(d, 4, SCSI_MAX_TRANSFER_BLOCKS); // maximum transfer length
        put32(d, 8, Math.max(1, 4096 / this.blockSize) | 0); // optimal transfer length
        if (this.unmapOk) {
          put32(d, 16, SCSI_MAX_UNMAP_BLOCKS); // maximum unmap LBA count
          put32(d, 20, SCSI_MAX_UNMAP_DESCRIPTORS); // maximum unmap block descriptor count
          put32(d, 24, 1 << this.physExp); // optimal unmap granularity
        }
        return vpd(0xb0, d);
      }
      case 0xb1: {
        const d = new Uint8Array(0x3c);
        put16(d, 0, 1); // medium rotation rate: non-rotating
        return vpd(0xb1, d);
      }
      case 0xb2: {
        const d = new Uint8Array(4);
        // LBPU (UNMAP), LBPRZ; provisioning type thin when UNMAP is on.
        if (this.unmapOk) { d[1] = 0x80 | 0x04; d[2] = 0x02; }
        return vpd(0xb2, d);
      }
      default:
        return illegal(ASC_INVALID_FIELD_IN_CDB);
    }
  }

  /** Range check: LBA + count within the disk (SBC: LBA OUT OF RANGE). */
  private range(lba: number, n: number): void {
    if (!Number.isFinite(lba) || lba > this.blocks || n > this.blocks - lba) {
      throw new CheckCondition(SENSE_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
    }
  }

  /** The data buffer must hold the whole transfer. */
  private fits(have: number, len: number): void {
    if (have < len) illegal(ASC_INVALID_FIELD_IN_CDB);
  }

  private read(b: ScsiBuffers, lba: number, n: number, _fua: boolean): number {
    this.range(lba, n);
    const len = n * this.blockSize;
    this.fits(b.dataInLength, len);
    if (len === 0) return 0;
    let got: number;
    try {
      got = this.file.readv(prefix(b.dataIn, len, this.iov), lba * this.blockSize);
    } catch {
      throw new CheckCondition(SENSE_MEDIUM_ERROR, ASC_UNRECOVERED_READ_ERROR);
    }
    if (got !== len) throw new CheckCondition(SENSE_MEDIUM_ERROR, ASC_UNRECOVERED_READ_ERROR);
    this.stats.reads++;
    this.stats.bytesRead += len;
    return len;
  }

  private write(b: ScsiBuffers, lba: number, n: number, fua: boolean): number {
    if (this.file.readOnly) throw new CheckCondition(SENSE_DATA_PROTECT, ASC_WRITE_PROTECTED);
    this.range(lba, n);
    const len = n * this.blockSize;
    this.fits(b.dataOutLength, len);
    if (len === 0) return 0;
    let put: number;
    try {
      put = this.file.writev(prefix(b.dataOut, len, this.iov), lba * this.blockSize);
      if (fua) this.flush();
    } catch {
      throw new CheckCondition(SENSE_MEDIUM_ERROR, ASC_WRITE_ERROR);
    }
    if (put !== len) throw new CheckCondition(SENSE_MEDIUM_ERROR, ASC_WRITE_ERROR);
    this.stats.writes++;
    this.stats.bytesWritten += len;
    return 0;
  }

  private flush(): void {
    this.file.flush();
    this.stats.flushes++;
  }

  private unmap(cdb: Uint8Array, b: ScsiBuffers): number {
    if (this.file.readOnly) throw new CheckCondition(SENSE_DATA_PROTECT, ASC_WRITE_PROTECTED);
    if (!this.unmapOk) illegal(ASC_INVALID_OPCODE);
    if (cdb[1] & 0x01) illegal(ASC_INVALID_FIELD_IN_CDB); // ANCHOR
    const plen = be16(cdb, 7);
    if (plen === 0) return 0;
    if (plen < 8 || b.dataOutLength < plen) illegal(ASC_PARAMETER_LIST_LENGTH_ERROR);
    const list = new Uint8Array(Math.min(plen, 8 + 16 * SCSI_MAX_UNMAP_DESCRIPTORS + 16));
    copyFrom(b.dataOut, list);
    const bdl = be16(list, 2);
    if (bdl % 16 !== 0 || 8 + bdl > plen) illegal(ASC_PARAMETER_LIST_LENGTH_ERROR);
    const count = bdl / 16;
    if (count > SCSI_MAX_UNMAP_DESCRIPTORS) illegal(ASC_INVALID_FIELD_IN_PARAMETER_LIST);
    // Check every descriptor before deallocating anything.
    const ranges: Array<[number, number]> = [];
    for (let i = 0; i < count; i++) {
      const lba = be64(list, 8 + 16 * i);
      const n = be32(list, 16 + 16 * i);
      if (n > SCSI_MAX_UNMAP_BLOCKS) illegal(ASC_INVALID_FIELD_IN_PARAMETER_LIST);
      this.range(lba, n);
      if (n > 0) ranges.push([lba, n]);
    }
    for (const [lba, n] of ranges) {
      const r = this.file.discard(lba * this.blockSize, n * this.blockSize);
      // A file system without hole punching: UNMAP is advisory (SBC-3 4.7.3.4).
      if (r < 0 && !isUnsupported(r)) throw new CheckCondition(SENSE_MEDIUM_ERROR, ASC_WRITE_ERROR);
      this.stats.unmaps++;
    }
    return 0;
  }

  private modeSense(cdb: Uint8Array, b: ScsiBuffers, ten: boolean): number {
    const dbd = (cdb[1] & 0x08) !== 0;
    const pc = cdb[2] >> 6;
    const page = cdb[2] & 0x3f;
    const subpage = cdb[3];
    const alloc = ten ? be16(cdb, 7) : cdb[4];
    if (pc === 3) illegal(ASC_SAVING_PARAMETERS_NOT_SUPPORTED);
    if (subpage !== 0 && subpage !== 0xff) illegal(ASC_INVALID_FIELD_IN_CDB);
    const pages: number[] = [];
    const changeable = pc === 1;
    const caching = (): number[] => {
      const p = new Array<number>(20).fill(0);
      p[0] = MODEPAGE_CACHING; p[1] = 18;
      if (!changeable) p[2] = 0x04; // WCE: writes may sit in the host's page cache until a SYNCHRONIZE CACHE
      return p;
    };
    const control = (): number[] => {
      const p = new Array<number>(12).fill(0);
      p[0] = MODEPAGE_CONTROL; p[1] = 10;
      return p;
    };
    if (page === MODEPAGE_CACHING || page === MODEPAGE_ALL) pages.push(...caching());
    if (page === MODEPAGE_CONTROL || page === MODEPAGE_ALL) pages.push(...control());
    if (pages.length === 0) illegal(ASC_INVALID_FIELD_IN_CDB);
    const bd = dbd ? [] : (() => {
      const d = new Uint8Array(8);
      put32(d, 0, Math.min(this.blocks, 0xffffffff));
      d[5] = (this.blockSize >> 16) & 0xff; d[6] = (this.blockSize >> 8) & 0xff; d[7] = this.blockSize & 0xff;
      return [...d];
    })();
    // Device-specific parameter: WP for a read-only image, DPOFUA.
    const dsp = (this.file.readOnly ? 0x80 : 0) | 0x10;
    const hdr = ten ? [0, 0, 0, dsp, 0, 0, 0, bd.length] : [0, 0, dsp, bd.length];
    const d = Uint8Array.from([...hdr, ...bd, ...pages]);
    if (ten) put16(d, 0, d.length - 2); else d[0] = d.length - 1;
    return this.answer(b, d, alloc);
  }
}
