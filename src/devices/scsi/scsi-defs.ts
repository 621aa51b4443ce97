// What every SCSI target here shares (the AHCI CD-ROM's ATAPI packets,
// ../ahci/atapi.ts, and virtio-scsi's disks, scsi-disk.ts): operation
// codes (SPC-4, SBC-3, MMC-6), status and sense codes, fixed-format sense
// data, and big-endian CDB field access.

// --- Operation codes ---------------------------------------------------
export const TEST_UNIT_READY = 0x00;
export const REQUEST_SENSE = 0x03;
export const READ_6 = 0x08;
export const WRITE_6 = 0x0a;
export const INQUIRY = 0x12;
export const MODE_SENSE_6 = 0x1a;
export const START_STOP_UNIT = 0x1b;
export const PREVENT_ALLOW = 0x1e;
export const READ_CAPACITY = 0x25;
export const READ_10 = 0x28;
export const WRITE_10 = 0x2a;
export const VERIFY_10 = 0x2f;
export const SYNCHRONIZE_CACHE_10 = 0x35;
export const UNMAP = 0x42;
export const READ_TOC = 0x43;
export const GET_CONFIGURATION = 0x46;
export const GET_EVENT_STATUS_NOTIFICATION = 0x4a;
export const MODE_SENSE_10 = 0x5a;
export const READ_16 = 0x88;
export const WRITE_16 = 0x8a;
export const VERIFY_16 = 0x8f;
export const SYNCHRONIZE_CACHE_16 = 0x91;
export const SERVICE_ACTION_IN_16 = 0x9e;
export const SAI_READ_CAPACITY_16 = 0x10;
export const REPORT_LUNS = 0xa0;
export const READ_12 = 0xa8;
export const WRITE_12 = 0xaa;

// --- Mode pages ----------------------------------------------------------
export const MODEPAGE_RW_ERROR_RECOVERY = 0x01;
export const MODEPAGE_CACHING = 0x08;
export const MODEPAGE_CONTROL = 0x0a;
export const MODEPAGE_CD_CAPABILITIES = 0x2a;
export const MODEPAGE_ALL = 0x3f;

// --- Status (SAM-5) ------------------------------------------------------
export const SCSI_STATUS_GOOD = 0x00;
export const SCSI_STATUS_CHECK_CONDITION = 0x02;

// --- Sense keys and additional sense codes -------------------------------
export const SENSE_NO_SENSE = 0x00;
export const SENSE_NOT_READY = 0x02;
export const SENSE_MEDIUM_ERROR = 0x03;
export const SENSE_ILLEGAL_REQUEST = 0x05;
export const SENSE_UNIT_ATTENTION = 0x06;
export const SENSE_DATA_PROTECT = 0x07;

export const ASC_INVALID_OPCODE = 0x20;
export const ASC_LBA_OUT_OF_RANGE = 0x21;
export const ASC_INVALID_FIELD_IN_CDB = 0x24;
export const ASC_LUN_NOT_SUPPORTED = 0x25;
export const ASC_INVALID_FIELD_IN_PARAMETER_LIST = 0x26;
export const ASC_WRITE_PROTECTED = 0x27;
export const ASC_SAVING_PARAMETERS_NOT_SUPPORTED = 0x39;
export const ASC_PARAMETER_LIST_LENGTH_ERROR = 0x1a;
export const ASC_UNRECOVERED_READ_ERROR = 0x11;
export const ASC_WRITE_ERROR = 0x0c;

/** Fixed-format sense data (SPC-4 4.5.3): 18 bytes, current error. */
export const FIXED_SENSE_LEN = 18;

export function fixedSense(key: number, asc: number, ascq = 0): Uint8Array {
  const s = new Uint8Array(FIXED_SENSE_LEN);
  s[0] = 0x70;
  s[2] = key & 0x0f;
  s[7] = FIXED_SENSE_LEN - 8;
  s[12] = asc;
  s[13] = ascq;
  return s;
}

// --- Big-endian fields --------------------------------------------------
export const be16 = (b: Uint8Array, o: number): number => (b[o] << 8) | b[o + 1];
export const be24 = (b: Uint8Array, o: number): number => (b[o] << 16) | (b[o + 1] << 8) | b[o + 2];
export const be32 = (b: Uint8Array, o: number): number => ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
/** A 64-bit field as a number; values past 2^53 come back as Infinity
 * (always out of range for a disk). */
export function be64(b: Uint8Array, o: number): number {
  const hi = be32(b, o);
  return hi >= 0x200000 ? Infinity : hi * 0x100000000 + be32(b, o + 4);
}
export function put16(b: Uint8Array, o: number, v: number): void { b[o] = (v >> 8) & 0xff; b[o + 1] = v & 0xff; }
export function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 24) & 0xff; b[o + 1] = (v >>> 16) & 0xff; b[o + 2] = (v >>> 8) & 0xff; b[o + 3] = v & 0xff;
}
export function put64(b: Uint8Array, o: number, v: number): void {
  put32(b, o, Math.floor(v / 0x100000000));
  put32(b, o + 4, v >>> 0);
}

/** An ASCII field padded with spaces (INQUIRY vendor, product, revision). */
export function asciiField(b: Uint8Array, off: number, s: string, len: number): void {
  for (let i = 0; i < len; i++) b[off + i] = i < s.length ? s.charCodeAt(i) & 0x7f : 0x20;
}
