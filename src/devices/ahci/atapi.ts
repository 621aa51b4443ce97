// The ATAPI (SCSI MMC) commands of an AHCI CD-ROM port, as bhyve's
// pci_ahci.c answers them (handle_packet_cmd and the atapi_* helpers). Pure
// functions of the 12-byte command packet and the medium: the port moves
// the answer through the PRDT and reports status in a D2H FIS.

import {
  ASC_INVALID_FIELD_IN_CDB, ASC_INVALID_OPCODE, ASC_SAVING_PARAMETERS_NOT_SUPPORTED, GET_CONFIGURATION,
  GET_EVENT_STATUS_NOTIFICATION, INQUIRY, MODE_SENSE_10, MODEPAGE_CD_CAPABILITIES, MODEPAGE_RW_ERROR_RECOVERY,
  PREVENT_ALLOW, READ_10, READ_12, READ_CAPACITY, READ_TOC, REPORT_LUNS, REQUEST_SENSE, SENSE_ILLEGAL_REQUEST,
  START_STOP_UNIT, TEST_UNIT_READY, asciiField, be16, be32, put16, put32,
} from '../scsi/scsi-defs.js';

export const ATAPI_SECTOR = 2048;

export type AtapiResult =
  /** Success with data for the host (already cut to the allocation length). */
  | { kind: 'data'; data: Uint8Array }
  /** Success without data. */
  | { kind: 'ok' }
  /** CHECK CONDITION with this sense. */
  | { kind: 'error'; senseKey: number; asc: number }
  /** READ(10/12): `length` bytes from byte `offset` of the medium. */
  | { kind: 'read'; offset: number; length: number };

export interface AtapiMedium {
  /** Bytes of the medium. */
  size: number;
  /** The backend's logical sector size (READ TOC counts in those / 4, as bhyve). */
  sectorSize: number;
}

const illegal = (asc: number): AtapiResult => ({ kind: 'error', senseKey: SENSE_ILLEGAL_REQUEST, asc });

function data(buf: Uint8Array, alloc: number): AtapiResult {
  return { kind: 'data', data: buf.subarray(0, Math.min(buf.length, alloc)) };
}

/** lba_to_msf(): minutes/seconds/frames with the 2-second lead-in. */
function lbaToMsf(b: Uint8Array, o: number, lba: number): void {
  lba += 150;
  b[o] = Math.floor(lba / 75 / 60) & 0xff;
  b[o + 1] = Math.floor(lba / 75) % 60;
  b[o + 2] = lba % 75;
}

function inquiry(acmd: Uint8Array): AtapiResult {
  const buf = new Uint8Array(36);
  let len: number;
  if (acmd[1] & 1) { // VPD
    if (acmd[2] !== 0) return illegal(ASC_INVALID_FIELD_IN_CDB);
    buf[0] = 0x05; buf[3] = 1; buf[4] = 0;
    len = 4 + buf[3];
  } else {
    buf[0] = 0x05; buf[1] = 0x80; buf[2] = 0x00; buf[3] = 0x21; buf[4] = 31;
    asciiField(buf, 8, 'BHYVE', 8);
    asciiField(buf, 16, 'BHYVE DVD-ROM', 16);
    asciiField(buf, 32, '001', 4);
    len = 36;
  }
  return data(buf.subarray(0, len), acmd[4]);
}

function readToc(acmd: Uint8Array, m: AtapiMedium): AtapiResult {
  const alloc = be16(acmd, 7);
  const format = acmd[9] >> 6;
  const msf = (acmd[1] >> 1) & 1;
  const leadOut = Math.floor(Math.floor(m.size / m.sectorSize) / 4);
  const addr = (b: number[], lba: number) => {
    if (msf) { const t = new Uint8Array(3); lbaToMsf(t, 0, lba); b.push(0, t[0], t[1], t[2]); } else {
      b.push((lba >>> 24) & 0xff, (lba >>> 16) & 0xff, (lba >>> 8) & 0xff, lba & 0xff);
    }
  };
  const out: number[] = [0, 0];
  switch (format) {
    case 0: {
      const start = acmd[6];
      if (start > 1 && start !== 0xaa) return illegal(ASC_INVALID_FIELD_IN_CDB);
      out.push(1, 1);
      if (start <= 1) { out.push(0, 0x14, 1, 0); addr(out, 0); }
      out.push(0, 0x14, 0xaa, 0);
      addr(out, leadOut);
      break;
    }
    case 1: {
      const buf = new Uint8Array(12);
      buf[1] = 0xa; buf[2] = 1; buf[3] = 1;
      return data(buf, alloc);
    }
    case 2: {
      out.push(1, 1);
      out.push(1, 0x14, 0, 0xa0, 0, 0, 0, 0, 1, 0, 0);
      out.push(1, 0x14, 0, 0xa1, 0, 0, 0, 0, 1, 0, 0);
      out.push(1, 0x14, 0, 0xa2, 0, 0, 0);
      addr(out, leadOut);
      out.push(1, 0x14, 0, 1, 0, 0, 0);
      addr(out, 0);
      break;
    }
    default:
      return illegal(ASC_INVALID_FIELD_IN_CDB);
  }
  const buf = Uint8Array.from(out);
  put16(buf, 0, buf.length - 2);
  return data(buf, alloc);
}

function modeSense(acmd: Uint8Array): AtapiResult {
  const alloc = be16(acmd, 7);
  const pc = acmd[2] >> 6;
  const code = acmd[2] & 0x3f;
  if (pc === 3) return illegal(ASC_SAVING_PARAMETERS_NOT_SUPPORTED); // saving parameters not supported
  if (pc !== 0) return illegal(ASC_INVALID_FIELD_IN_CDB);
  if (code === MODEPAGE_RW_ERROR_RECOVERY) {
    const buf = new Uint8Array(16);
    put16(buf, 0, 16 - 2);
    buf[2] = 0x70; buf[8] = 0x01; buf[9] = 16 - 10; buf[11] = 0x05;
    return data(buf, alloc);
  }
  if (code === MODEPAGE_CD_CAPABILITIES) {
    const buf = new Uint8Array(30);
    put16(buf, 0, 30 - 2);
    buf[2] = 0x70; buf[8] = 0x2a; buf[9] = 30 - 10; buf[10] = 0x08; buf[12] = 0x71;
    put16(buf, 18, 2);
    put16(buf, 20, 512);
    return data(buf, alloc);
  }
  return illegal(ASC_INVALID_FIELD_IN_CDB);
}

/** GET CONFIGURATION (MMC-6; bhyve has none, QEMU and Linux's sr probe
 * it): the feature header with the current profile (DVD-ROM), the profile
 * list (DVD-ROM, CD-ROM) and the core feature, cut to what was asked. */
function getConfiguration(acmd: Uint8Array): AtapiResult {
  const alloc = be16(acmd, 7);
  const rt = acmd[1] & 3;
  const start = be16(acmd, 2);
  const features: number[][] = [
    // Profile list: 0x0010 DVD-ROM (current), 0x0008 CD-ROM.
    [0x00, 0x00, 0x03, 8, 0x00, 0x10, 0x01, 0x00, 0x00, 0x08, 0x00, 0x00],
    // Core: ATAPI physical interface (2), persistent + current.
    [0x00, 0x01, 0x0b, 8, 0, 0, 0, 2, 0, 0, 0, 0],
  ];
  const out: number[] = [0, 0, 0, 0, 0, 0, 0x00, 0x10];
  for (const f of features) {
    const code = (f[0] << 8) | f[1];
    if (rt === 2 ? code === start : code >= start) out.push(...f);
  }
  const buf = Uint8Array.from(out);
  put32(buf, 0, buf.length - 4);
  return data(buf, alloc);
}

function eventStatus(acmd: Uint8Array): AtapiResult {
  if (!(acmd[1] & 1)) return illegal(ASC_INVALID_FIELD_IN_CDB); // asynchronous operation not supported
  const buf = new Uint8Array(8);
  put16(buf, 0, 8 - 2);
  buf[2] = 0x04; buf[3] = 0x10; buf[5] = 0x02;
  return data(buf, be16(acmd, 7));
}

/** Answers one packet command. `sense` is the port's current sense (for
 * REQUEST SENSE). */
export function atapiCommand(acmd: Uint8Array, m: AtapiMedium, sense: { key: number; asc: number }): AtapiResult {
  switch (acmd[0]) {
    case TEST_UNIT_READY:
    case PREVENT_ALLOW:
      return { kind: 'ok' };
    case INQUIRY:
      return inquiry(acmd);
    case READ_CAPACITY: {
      const buf = new Uint8Array(8);
      put32(buf, 0, Math.floor(m.size / ATAPI_SECTOR) - 1);
      put32(buf, 4, ATAPI_SECTOR);
      return { kind: 'data', data: buf };
    }
    case READ_TOC:
      return readToc(acmd, m);
    case REPORT_LUNS: {
      const buf = new Uint8Array(16);
      buf[3] = 8;
      return { kind: 'data', data: buf };
    }
    case READ_10:
    case READ_12: {
      const lba = be32(acmd, 2);
      const n = acmd[0] === READ_10 ? be16(acmd, 7) : be32(acmd, 6);
      return { kind: 'read', offset: lba * ATAPI_SECTOR, length: n * ATAPI_SECTOR };
    }
    case REQUEST_SENSE: {
      const buf = new Uint8Array(Math.min(acmd[4], 64));
      const full = new Uint8Array(64);
      full[0] = 0x70 | 0x80; full[2] = sense.key; full[7] = 10; full[12] = sense.asc;
      buf.set(full.subarray(0, buf.length));
      return { kind: 'data', data: buf };
    }
    case START_STOP_UNIT:
      // Eject (LoEj=1, Start=0) is refused as bhyve does: the medium stays.
      return (acmd[4] & 3) === 2 ? illegal(0x53) : { kind: 'ok' };
    case MODE_SENSE_10:
      return modeSense(acmd);
    case GET_EVENT_STATUS_NOTIFICATION:
      return eventStatus(acmd);
    case GET_CONFIGURATION:
      return getConfiguration(acmd);
    default:
      return illegal(ASC_INVALID_OPCODE); // invalid command operation code
  }
}
