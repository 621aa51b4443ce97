// NVMe I/O command execution on guest memory and a namespace store: PRP
// walking (PRP1/PRP2, PRP lists chained by their last entry, each page
// checked to be guest RAM) and the NVM commands (read, write, flush, write
// zeroes, dataset management). One engine runs on the device thread (the
// doorbell exit path, nvme.ts) and one in the I/O thread
// (nvme-iothread-worker.ts) on its own mapping of guest RAM, so both serve
// the I/O queues the same way.

import type { GuestMemory } from '../../sys/guest-memory.js';
import { NVME_MAX_DATA_SIZE, NVME_PAGE } from './nvme-data.js';
import type { NvmeStore } from './nvme-store.js';

// Status: (SCT << 8) | SC; the DNR bit is added separately.
export const SC = {
  SUCCESS: 0x00, INVALID_OPCODE: 0x01, INVALID_FIELD: 0x02, DATA_TRANSFER_ERROR: 0x04, INTERNAL_DEVICE_ERROR: 0x06,
  INVALID_NAMESPACE_OR_FORMAT: 0x0b, COMMAND_SEQUENCE_ERROR: 0x0c, LBA_OUT_OF_RANGE: 0x80,
  // command specific (SCT 1)
  COMPLETION_QUEUE_INVALID: 0x100, INVALID_QUEUE_IDENTIFIER: 0x101, MAXIMUM_QUEUE_SIZE_EXCEEDED: 0x102,
  ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED: 0x105, INVALID_FIRMWARE_SLOT: 0x106, INVALID_INTERRUPT_VECTOR: 0x108,
  INVALID_LOG_PAGE: 0x109, INVALID_FORMAT: 0x10a, INVALID_QUEUE_DELETION: 0x10c, FEATURE_NOT_NS_SPECIFIC: 0x10f,
} as const;
/** In the status field above SC/SCT (bit 15 of the CQE status, after the phase shift). */
export const DNR = 0x4000;

export const IO_OPC = { FLUSH: 0x00, WRITE: 0x01, READ: 0x02, WRITE_ZEROES: 0x08, DATASET_MANAGEMENT: 0x09 } as const;

/** What the I/O commands did (stats, SMART / health log). */
export interface IoCounts {
  ioCommands: number;
  reads: number;
  writes: number;
  bytesRead: number;
  bytesWritten: number;
  flushes: number;
  deallocates: number;
  /** SMART: read and write commands, failed ones included. */
  readCommands: number;
  writeCommands: number;
}

export const IO_COUNT_KEYS = ['ioCommands', 'reads', 'writes', 'bytesRead', 'bytesWritten', 'flushes', 'deallocates', 'readCommands', 'writeCommands'] as const;

export function newIoCounts(): IoCounts {
  return { ioCommands: 0, reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, flushes: 0, deallocates: 0, readCommands: 0, writeCommands: 0 };
}

export interface NvmeIoOptions {
  mem: GuestMemory;
  store: NvmeStore;
  sectorSize: number;
  /** ONCS offers dataset management. */
  dsm: boolean;
  /** Deallocate reaches the storage. */
  deallocate: boolean;
}

export class NvmeIoEngine {
  /** The command being executed (64 bytes). */
  readonly cmd = new DataView(new ArrayBuffer(64));
  readonly cmdBytes = new Uint8Array(this.cmd.buffer);
  readonly counts: IoCounts = newIoCounts();
  /** Completion dword 0 of the command. */
  cdw0 = 0;
  readonly mem: GuestMemory;
  readonly store: NvmeStore;
  readonly sectorSize: number;
  private readonly dsm: boolean;
  private readonly deallocate: boolean;
  private readonly iov: Uint8Array[] = [];
  private readonly segs: Array<[number, number]> = [];

  constructor(o: NvmeIoOptions) {
    this.mem = o.mem;
    this.store = o.store;
    this.sectorSize = o.sectorSize;
    this.dsm = o.dsm;
    this.deallocate = o.deallocate;
  }

  get cdw10(): number { return this.cmd.getUint32(40, true); }
  get cdw11(): number { return this.cmd.getUint32(44, true); }
  get cdw12(): number { return this.cmd.getUint32(48, true); }
  get cdw13(): number { return this.cmd.getUint32(52, true); }
  get nsid(): number { return this.cmd.getUint32(4, true); }
  get cid(): number { return this.cmd.getUint16(2, true); }
  get opcode(): number { return this.cmd.getUint8(0); }
  get prp1(): number { return this.cmd.getUint32(28, true) * 0x100000000 + ((this.cmd.getUint32(24, true) & ~3) >>> 0); }
  get prp2(): number { return this.cmd.getUint32(36, true) * 0x100000000 + ((this.cmd.getUint32(32, true) & ~3) >>> 0); }

  /** Reads the 64-byte command at `gpa` into cmd. */
  fetch(gpa: number): void {
    this.cmdBytes.set(this.mem.slice(gpa, 64));
  }

  // ---- I/O commands ----

  /** Runs the I/O command in cmd synchronously; its status. */
  execute(): number {
    this.counts.ioCommands++;
    this.cdw0 = 0;
    const nsid = this.nsid;
    if (nsid === 0 || nsid > 1) return SC.INVALID_NAMESPACE_OR_FORMAT | DNR;
    switch (this.opcode) {
      case IO_OPC.FLUSH:
        try { this.store.flush(); } catch { return SC.INTERNAL_DEVICE_ERROR; }
        this.counts.flushes++;
        return SC.SUCCESS;
      case IO_OPC.READ:
      case IO_OPC.WRITE:
        return this.readWrite(this.opcode === IO_OPC.WRITE);
      case IO_OPC.WRITE_ZEROES: {
        const lba = this.cdw11 * 0x100000000 + this.cdw10;
        const n = (this.cdw12 & 0xffff) + 1;
        if (this.outOfRange(lba, n)) return SC.LBA_OUT_OF_RANGE;
        if (this.store.readOnly) return SC.INVALID_FIELD;
        try { this.store.writeZeroes(lba * this.sectorSize, n * this.sectorSize); } catch { return SC.DATA_TRANSFER_ERROR; }
        return SC.SUCCESS;
      }
      case IO_OPC.DATASET_MANAGEMENT:
        return this.datasetManagement();
      default:
        return SC.INVALID_OPCODE;
    }
  }

  outOfRange(lba: number, blocks: number): boolean {
    const off = lba * this.sectorSize;
    return !Number.isSafeInteger(off) || off >= this.store.size || this.store.size - off < blocks * this.sectorSize;
  }

  /** Counts a read or write that ended (SMART counts failed ones too). */
  account(write: boolean, bytes: number, ok: boolean): void {
    const c = this.counts;
    if (write) {
      c.writeCommands++;
      if (ok) { c.writes++; c.bytesWritten += bytes; }
    } else {
      c.readCommands++;
      if (ok) { c.reads++; c.bytesRead += bytes; }
    }
  }

  /** The checks before a read or write moves data: a status, or undefined
   * when it may go ahead. */
  checkReadWrite(write: boolean): number | undefined {
    const lba = this.cdw11 * 0x100000000 + this.cdw10;
    const blocks = (this.cdw12 & 0xffff) + 1;
    const bytes = blocks * this.sectorSize;
    let status: number | undefined;
    if (bytes > NVME_MAX_DATA_SIZE) status = SC.INVALID_FIELD;
    else if (this.outOfRange(lba, blocks)) status = SC.LBA_OUT_OF_RANGE;
    else if (write && this.store.readOnly) status = SC.INVALID_FIELD;
    if (status !== undefined) this.account(write, bytes, false);
    return status;
  }

  get rwOffset(): number { return (this.cdw11 * 0x100000000 + this.cdw10) * this.sectorSize; }
  get rwBytes(): number { return ((this.cdw12 & 0xffff) + 1) * this.sectorSize; }

  private readWrite(write: boolean): number {
    const bad = this.checkReadWrite(write);
    if (bad !== undefined) return bad;
    return this.transfer(write);
  }

  /** The data movement of a checked read or write. */
  transfer(write: boolean): number {
    const bytes = this.rwBytes;
    const views = this.prpViews(bytes);
    let ok = views !== undefined;
    if (views) {
      try {
        const n = write ? this.store.writev(views, this.rwOffset) : this.store.readv(views, this.rwOffset);
        ok = n === bytes;
      } catch {
        ok = false;
      }
    }
    this.account(write, bytes, ok);
    return ok ? SC.SUCCESS : SC.DATA_TRANSFER_ERROR;
  }

  private datasetManagement(): number {
    if (!this.dsm) return SC.INVALID_OPCODE;
    const nr = (this.cdw10 & 0xff) + 1;
    const ranges = new Uint8Array(4096);
    if (!this.prpCopy(ranges.subarray(0, nr * 16), false)) return SC.DATA_TRANSFER_ERROR;
    const v = new DataView(ranges.buffer);
    const list: Array<[number, number]> = [];
    for (let r = 0; r < nr; r++) {
      const len = v.getUint32(r * 16 + 4, true);
      const slba = Number(v.getBigUint64(r * 16 + 8, true));
      if (this.outOfRange(slba, len) && !(len === 0 && slba * this.sectorSize <= this.store.size)) return SC.LBA_OUT_OF_RANGE;
      if (len) list.push([slba * this.sectorSize, len * this.sectorSize]);
    }
    if (!(this.cdw11 & 0x4)) return SC.SUCCESS; // only deallocate does anything
    if (!this.deallocate || list.length === 0) return SC.SUCCESS; // advisory
    for (const [off, len] of list) {
      if (this.store.discard(off, len) < 0) {
        try { this.store.writeZeroes(off, len); } catch { return SC.INTERNAL_DEVICE_ERROR; }
      }
      this.counts.deallocates++;
    }
    return SC.SUCCESS;
  }

  // ---- PRPs ----

  /** Guest-physical segments of a data transfer of `bytes` described by
   * PRP1/PRP2 (PRP2 a second page or a PRP list, lists chained by their
   * last entry), physically contiguous pages merged; each page checked to
   * be guest RAM. Undefined when any of it is not. */
  prpSegments(bytes: number): Array<[number, number]> | undefined {
    const segs = this.segs;
    segs.length = 0;
    try {
      const prp1 = this.prp1;
      const first = Math.min(NVME_PAGE - (prp1 % NVME_PAGE), bytes);
      // The run of contiguous pages being built; checked when it ends.
      let runAt = prp1;
      let runLen = first;
      let left = bytes - first;
      if (left > 0 && left <= NVME_PAGE) {
        const gpa = this.prp2;
        if (runAt + runLen === gpa) runLen += left;
        else { segs.push([runAt, runLen]); runAt = gpa; runLen = left; }
        left = 0;
      }
      let list = this.prp2;
      let entries = Math.floor((NVME_PAGE - (list % NVME_PAGE)) / 8);
      // The list's entries up to its page's end, read through one view (a
      // page is guest RAM as a whole or not at all).
      let words = left > 0 && entries >= 1 ? this.listWords(list, entries) : undefined;
      let wordsAt = list;
      while (left > 0) {
        if (entries === 1 && left > NVME_PAGE) { // the last entry points to the next list
          list = this.prpEntry(words, wordsAt, list);
          entries = Math.floor((NVME_PAGE - (list % NVME_PAGE)) / 8);
          words = entries >= 1 ? this.listWords(list, entries) : undefined;
          wordsAt = list;
          continue;
        }
        const size = Math.min(left, NVME_PAGE);
        const gpa = this.prpEntry(words, wordsAt, list);
        if (runAt + runLen === gpa) runLen += size;
        else { segs.push([runAt, runLen]); runAt = gpa; runLen = size; }
        left -= size;
        list += 8;
        entries--;
      }
      segs.push([runAt, runLen]);
      for (let i = 0; i < segs.length; i++) if (!this.isRam(segs[i][0], segs[i][1])) return undefined;
      return segs;
    } catch {
      return undefined;
    }
  }

  /** The PRP list entries from `list` to its page's end, as a view. */
  private listWords(list: number, entries: number): DataView {
    const b = this.mem.slice(list, entries * 8);
    return new DataView(b.buffer, b.byteOffset, b.byteLength);
  }

  /** The PRP entry at `at`, from `words` (read at `wordsAt`) when it holds it. */
  private prpEntry(words: DataView | undefined, wordsAt: number, at: number): number {
    const o = at - wordsAt;
    if (words && o >= 0 && o + 8 <= words.byteLength) return words.getUint32(o + 4, true) * 0x100000000 + ((words.getUint32(o, true) & ~3) >>> 0);
    return this.mem.readU32(at + 4) * 0x100000000 + ((this.mem.readU32(at) & ~3) >>> 0);
  }

  /** Whether every page of [gpa, gpa+len) is guest RAM (the range may run
   * on across RAM chunks that touch). */
  isRam(gpa: number, len: number): boolean {
    const mem = this.mem;
    if (mem.contains(gpa, len)) return true;
    for (let at = gpa; at < gpa + len;) {
      const n = Math.min(gpa + len - at, NVME_PAGE - (at % NVME_PAGE));
      if (!mem.contains(at, n)) return false;
      at += n;
    }
    return true;
  }

  /** Guest buffers of a data transfer of `bytes` (prpSegments as views).
   * Undefined when any of it is not guest RAM. */
  prpViews(bytes: number): Uint8Array[] | undefined {
    const segs = this.prpSegments(bytes);
    if (!segs) return undefined;
    const views = this.iov;
    views.length = 0;
    try {
      for (const [gpa, len] of segs) this.mem.slices(gpa, len, views);
      return views;
    } catch {
      return undefined;
    }
  }

  /** nvme_prp_memcpy(): admin data (at most 8 KiB) to or from PRP1/PRP2. */
  prpCopy(buf: Uint8Array, toGuest: boolean): boolean {
    const views = this.prpViews(buf.length);
    if (!views) return false;
    let off = 0;
    for (const v of views) {
      if (toGuest) v.set(buf.subarray(off, off + v.length));
      else buf.set(v, off);
      off += v.length;
    }
    return true;
  }
}

/** Writes one completion entry at `gpa` (pci_nvme_cq_update()): the
 * status word last, its phase tag making the entry valid. */
export function writeCompletion(mem: GuestMemory, gpa: number, cdw0: number, sqhd: number, sqid: number, cid: number, status: number, phase: number): void {
  const e = mem.slice(gpa, 16);
  const v = new DataView(e.buffer, e.byteOffset, 16);
  v.setUint32(0, cdw0 >>> 0, true);
  v.setUint32(4, 0, true);
  v.setUint16(8, sqhd, true);
  v.setUint16(10, sqid, true);
  v.setUint16(12, cid, true);
  const dnr = status & DNR ? 0x8000 : 0;
  v.setUint16(14, (((status & 0x7ff) << 1) | dnr | phase) & 0xffff, true);
}

/** nvme_dbbuf_need_event() as the driver computes it: whether moving a
 * doorbell from `old` to `value` passes `eventIdx` (the driver then writes
 * the MMIO doorbell too). */
export function dbbufNeedEvent(eventIdx: number, value: number, old: number): boolean {
  return ((value - eventIdx - 1) & 0xffff) < ((value - old) & 0xffff);
}
