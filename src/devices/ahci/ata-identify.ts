// IDENTIFY (PACKET) DEVICE data of an AHCI port, as bhyve's
// ata_identify_init() fills struct ata_params: 256 little-endian words,
// strings with the bytes of each word swapped, a checksum in the last byte.

import { ATA_UDMA0, ATA_WDMA0 } from './ahci-constants.js';

export const ATA_PARAMS_SIZE = 512;

// Word indices of struct ata_params (sys/ata.h).
const W = {
  config: 0, cylinders: 1, heads: 3, sectors: 6, serial: 10, revision: 23, model: 27, sectorsIntr: 47, tcg: 48,
  capabilities1: 49, capabilities2: 50, atavalid: 53, multi: 59, lbaSize1: 60, lbaSize2: 61, obsolete62: 62,
  mwdmamodes: 63, apiomodes: 64, mwdmamin: 65, mwdmarec: 66, pioblind: 67, pioiordy: 68, support3: 69, queue: 75,
  satacapabilities: 76, satacapabilities2: 77, satasupport: 78, versionMajor: 80, versionMinor: 81,
  supportCommand1: 82, supportCommand2: 83, supportExtension: 84, enabledCommand1: 85, enabledCommand2: 86,
  enabledExtension: 87, udmamodes: 88, lbaSize48: 100, maxDsmBlocks: 105, pss: 106, lss1: 117, lss2: 118,
  support2: 119, enabled2: 120, supportDsm: 169, lsalign: 209, mediaRotationRate: 217, transportMajor: 222,
  integrity: 255,
} as const;

const ATA_PROTO_ATAPI = 0x8000;
const ATA_ATAPI_TYPE_CDROM = 0x0500;
const ATA_ATAPI_REMOVABLE = 0x0080;
const ATA_DRQ_FAST = 0x0040;
const ATA_SUPPORT_DMA = 0x0100;
const ATA_SUPPORT_LBA = 0x0200;
const ATA_SUPPORT_IORDY = 0x0800;
const ATA_FLAG_64_70 = 0x0002;
const ATA_FLAG_88 = 0x0004;
const ATA_MULTI_VALID = 0x0100;
const ATA_SATA_GEN1 = 0x0002;
const ATA_SATA_GEN2 = 0x0004;
const ATA_SATA_GEN3 = 0x0008;
const ATA_SUPPORT_NCQ = 0x0100;
const ATA_SUPPORT_RCVSND_FPDMA_QUEUED = 0x0040;
const ATA_SUPPORT_NCQ_STREAM = 0x0010;
const ATA_SUPPORT_POWERMGT = 0x0008;
const ATA_SUPPORT_PACKET = 0x0010;
const ATA_SUPPORT_WRITECACHE = 0x0020;
const ATA_SUPPORT_LOOKAHEAD = 0x0040;
const ATA_SUPPORT_RESET = 0x0200;
const ATA_SUPPORT_NOP = 0x4000;
const ATA_SUPPORT_ADDRESS48 = 0x0400;
const ATA_SUPPORT_FLUSHCACHE = 0x1000;
const ATA_SUPPORT_FLUSHCACHE48 = 0x2000;
const ATA_SUPPORT_RZAT = 0x0020;
const ATA_SUPPORT_DRAT = 0x4000;
const ATA_SUPPORT_DSM_TRIM = 0x0001;
const ATA_PSS_VALID_VALUE = 0x4000;
const ATA_PSS_MULTLS = 0x2000;
const ATA_PSS_LSSABOVE512 = 0x1000;
const ATA_SUPPORT_RWLOGDMAEXT = 0x0008;

export interface IdentifyOptions {
  atapi: boolean;
  /** Defaults as bhyve: serial "BHYVE-XXXX-XXXX-XXXX" (MD5 of the path),
   * revision "001", model "BHYVE SATA DISK" / "BHYVE SATA DVD ROM". */
  serial: string;
  revision?: string;
  model?: string;
  /** Nominal media rotation rate (nmrr=; 1 means a solid-state disk). */
  mediaRotationRate?: number;
  /** Disk geometry and capabilities (hard disks only). */
  size?: number;
  sectorSize?: number;
  physicalSectorSize?: number;
  canDelete?: boolean;
  readOnly?: boolean;
  /** PxSSTS (its speed field goes into satacapabilities2). */
  ssts: number;
  xfermode: number;
  multSectors: number;
}

/** blockif_chs(): a CHS geometry for the disk (VHD specification's algorithm). */
export function blockifChs(size: number, sectorSize: number): { cylinders: number; heads: number; sectors: number } {
  let sectors = Math.floor(size / sectorSize);
  if (sectors > 65535 * 16 * 255) sectors = 65535 * 16 * 255;
  let secpt: number;
  let heads: number;
  let hcyl: number;
  if (sectors >= 65536 * 16 * 63) {
    secpt = 255; heads = 16; hcyl = Math.floor(sectors / secpt);
  } else {
    secpt = 17;
    hcyl = Math.floor(sectors / secpt);
    heads = Math.floor((hcyl + 1023) / 1024);
    if (heads < 4) heads = 4;
    if (hcyl >= heads * 1024 || heads > 16) { secpt = 31; heads = 16; hcyl = Math.floor(sectors / secpt); }
    if (hcyl >= heads * 1024) { secpt = 63; heads = 16; hcyl = Math.floor(sectors / secpt); }
  }
  return { cylinders: Math.floor(hcyl / heads), heads, sectors: secpt };
}

/** ata_string(): space padded, the two bytes of each word swapped. */
function ataString(buf: Uint8Array, word: number, text: string, len: number): void {
  const src = Buffer.from(text, 'latin1');
  for (let i = 0; i < len; i++) buf[2 * word + (i ^ 1)] = i < src.length && src[i] !== 0 ? src[i] : 0x20;
}

/** ahci_checksum(): the last byte makes the 512 bytes sum to zero. */
export function ataChecksum(buf: Uint8Array): void {
  let sum = 0;
  for (let i = 0; i < buf.length - 1; i++) sum = (sum + buf[i]) & 0xff;
  buf[buf.length - 1] = (0x100 - sum) & 0xff;
}

export function buildIdentify(o: IdentifyOptions): Uint8Array {
  const buf = new Uint8Array(ATA_PARAMS_SIZE);
  const dv = new DataView(buf.buffer);
  const set = (w: number, v: number) => dv.setUint16(2 * w, v & 0xffff, true);
  ataString(buf, W.serial, o.serial, 20);
  ataString(buf, W.revision, o.revision ?? '001', 8);
  ataString(buf, W.model, o.model ?? (o.atapi ? 'BHYVE SATA DVD ROM' : 'BHYVE SATA DISK'), 40);
  if (o.mediaRotationRate !== undefined) set(W.mediaRotationRate, o.mediaRotationRate);
  const mwdma = 0x7 | ((o.xfermode & ATA_WDMA0) ? 1 << ((o.xfermode & 7) + 8) : 0);
  const udma = 0x7f | ((o.xfermode & ATA_UDMA0) ? 1 << ((o.xfermode & 7) + 8) : 0);
  if (o.atapi) {
    set(W.config, ATA_PROTO_ATAPI | ATA_ATAPI_TYPE_CDROM | ATA_ATAPI_REMOVABLE | ATA_DRQ_FAST);
    set(W.capabilities1, ATA_SUPPORT_LBA | ATA_SUPPORT_DMA);
    set(W.capabilities2, (1 << 14) | 1);
    set(W.atavalid, ATA_FLAG_64_70 | ATA_FLAG_88);
    set(W.obsolete62, 0x3f);
    set(W.mwdmamodes, mwdma);
    set(W.apiomodes, 3);
    set(W.mwdmamin, 0x78); set(W.mwdmarec, 0x78); set(W.pioblind, 0x78); set(W.pioiordy, 0x78);
    set(W.satacapabilities, ATA_SATA_GEN1 | ATA_SATA_GEN2 | ATA_SATA_GEN3);
    set(W.satacapabilities2, (o.ssts & 0xf0) >> 3);
    set(W.satasupport, ATA_SUPPORT_NCQ_STREAM);
    set(W.versionMajor, 0x3f0);
    const cmd1 = ATA_SUPPORT_POWERMGT | ATA_SUPPORT_PACKET | ATA_SUPPORT_RESET | ATA_SUPPORT_NOP;
    set(W.supportCommand1, cmd1);
    set(W.supportCommand2, 1 << 14);
    set(W.supportExtension, 1 << 14);
    set(W.enabledCommand1, cmd1);
    set(W.enabledExtension, 1 << 14);
    set(W.udmamodes, udma);
  } else {
    const sectsz = o.sectorSize ?? 512;
    const psectsz = o.physicalSectorSize ?? sectsz;
    const sectors = Math.floor((o.size ?? 0) / sectsz);
    const chs = blockifChs(o.size ?? 0, sectsz);
    set(W.config, ATA_DRQ_FAST);
    set(W.cylinders, chs.cylinders);
    set(W.heads, chs.heads);
    set(W.sectors, chs.sectors);
    set(W.sectorsIntr, 0x8000 | 128);
    set(W.tcg, 0);
    set(W.capabilities1, ATA_SUPPORT_DMA | ATA_SUPPORT_LBA | ATA_SUPPORT_IORDY);
    set(W.capabilities2, 1 << 14);
    set(W.atavalid, ATA_FLAG_64_70 | ATA_FLAG_88);
    if (o.multSectors) set(W.multi, ATA_MULTI_VALID | o.multSectors);
    if (sectors <= 0x0fffffff) {
      set(W.lbaSize1, sectors);
      set(W.lbaSize2, Math.floor(sectors / 0x10000));
    } else {
      set(W.lbaSize1, 0xffff);
      set(W.lbaSize2, 0x0fff);
    }
    set(W.mwdmamodes, mwdma);
    set(W.apiomodes, 0x3);
    set(W.mwdmamin, 0x78); set(W.mwdmarec, 0x78); set(W.pioblind, 0x78); set(W.pioiordy, 0x78);
    let support3 = 0;
    set(W.queue, 31);
    set(W.satacapabilities, ATA_SATA_GEN1 | ATA_SATA_GEN2 | ATA_SATA_GEN3 | ATA_SUPPORT_NCQ);
    set(W.satacapabilities2, ATA_SUPPORT_RCVSND_FPDMA_QUEUED | ((o.ssts & 0xf0) >> 3));
    set(W.versionMajor, 0x3f0);
    set(W.versionMinor, 0x28);
    const cmd1 = ATA_SUPPORT_POWERMGT | ATA_SUPPORT_WRITECACHE | ATA_SUPPORT_LOOKAHEAD | ATA_SUPPORT_NOP;
    const cmd2 = ATA_SUPPORT_ADDRESS48 | ATA_SUPPORT_FLUSHCACHE | ATA_SUPPORT_FLUSHCACHE48;
    set(W.supportCommand1, cmd1);
    set(W.supportCommand2, cmd2 | (1 << 14));
    set(W.supportExtension, 1 << 14);
    set(W.enabledCommand1, cmd1);
    set(W.enabledCommand2, cmd2 | (1 << 15));
    set(W.enabledExtension, 1 << 14);
    set(W.udmamodes, udma);
    for (let i = 0; i < 4; i++) set(W.lbaSize48 + i, Math.floor(sectors / 2 ** (16 * i)));
    if (o.canDelete && !o.readOnly) {
      support3 |= ATA_SUPPORT_RZAT | ATA_SUPPORT_DRAT;
      set(W.maxDsmBlocks, 1);
      set(W.supportDsm, ATA_SUPPORT_DSM_TRIM);
    }
    set(W.support3, support3);
    let pss = ATA_PSS_VALID_VALUE;
    const lsalign = 0x4000;
    if (psectsz > sectsz) {
      pss |= ATA_PSS_MULTLS;
      pss |= Math.log2(psectsz / sectsz);
    }
    if (sectsz > 512) {
      pss |= ATA_PSS_LSSABOVE512;
      set(W.lss1, sectsz / 2);
      set(W.lss2, Math.floor(sectsz / 2 / 0x10000));
    }
    set(W.pss, pss);
    set(W.lsalign, lsalign);
    set(W.support2, ATA_SUPPORT_RWLOGDMAEXT | (1 << 14));
    set(W.enabled2, ATA_SUPPORT_RWLOGDMAEXT | (1 << 14));
  }
  set(W.transportMajor, 0x1020);
  set(W.integrity, 0x00a5);
  ataChecksum(buf);
  return buf;
}
