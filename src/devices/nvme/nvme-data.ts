// The data structures an NVMe controller hands its driver, as bhyve's
// pci_nvme.c fills them (pci_nvme_init_ctrldata, pci_nvme_init_nsdata,
// pci_nvme_init_logpages): Identify Controller and Identify Namespace (4 KiB
// each, little endian), the error, SMART / health and firmware-slot log
// pages, and the default EUI-64.

export const NVME_IDENTIFY_SIZE = 4096;
export const NVME_MDTS = 9;
export const NVME_PAGE = 4096;
/** 2^MDTS pages of CAP.MPSMIN (4 KiB): the largest transfer. */
export const NVME_MAX_DATA_SIZE = (1 << NVME_MDTS) * NVME_PAGE;
/** Reported temperature, in Kelvin. */
export const NVME_TEMPERATURE = 296;
/** FreeBSD's OUI, the range bhyve gives emulated NVMe namespaces (ieee_oui.h). */
const OUI_FREEBSD_NVME_LOW = 0x589cfc000000n;

export const ONCS_DSM = 1 << 2;
export const ONCS_WRITE_ZEROES = 1 << 3;

function pad(buf: Uint8Array, off: number, len: number, text: string): void {
  for (let i = 0; i < len; i++) buf[off + i] = i < text.length ? text.charCodeAt(i) & 0x7f : 0x20;
}

export interface ControllerDataOptions {
  serial: string;
  dsm: boolean;
  /** Doorbell Buffer Config (OACS bit 8). */
  dbbuf?: boolean;
}

/** pci_nvme_init_ctrldata(). */
export function identifyController(o: ControllerDataOptions): Uint8Array {
  const b = new Uint8Array(NVME_IDENTIFY_SIZE);
  const v = new DataView(b.buffer);
  v.setUint16(0, 0xfb5d, true); // vid
  v.setUint16(2, 0x0000, true); // ssvid
  pad(b, 4, 20, o.serial); // sn
  pad(b, 24, 40, 'bhyve-NVMe'); // mn
  pad(b, 64, 8, '1.0'); // fr
  b[72] = 4; // rab
  b[73] = 0x58; b[74] = 0x9c; b[75] = 0xfc; // ieee: FreeBSD OUI
  b[76] = 0; // cmic
  b[77] = NVME_MDTS;
  v.setUint32(80, 0x00010400, true); // ver 1.4
  v.setUint32(92, 1 << 8, true); // oaes: namespace attribute notices
  b[111] = 1; // cntrltype: I/O controller
  v.setUint16(256, (1 << 1) | (o.dbbuf ? 1 << 8 : 0), true); // oacs: Format NVM, Doorbell Buffer Config
  b[258] = 2; // acl
  b[259] = 4; // aerl (zero-based: 5 outstanding)
  b[260] = 1 | (1 << 1); // frmw: slot 1 read-only, 1 slot
  b[261] = 0; // lpa
  b[262] = 0; // elpe
  b[263] = 0; // npss: one power state
  v.setUint16(266, 0x0157, true); // wctemp
  v.setUint16(268, 0x0157, true); // cctemp
  v.setUint32(328, 1 << 30, true); // sanicap: no-deallocate modifies media: no
  b[512] = (6 << 4) | 6; // sqes: 64-byte entries
  b[513] = (4 << 4) | 4; // cqes: 16-byte entries
  v.setUint32(516, 1, true); // nn: one namespace
  v.setUint16(520, o.dsm ? ONCS_DSM : 0, true); // oncs
  b[524] = 1; // fna: format applies to all namespaces
  b[525] = 2 << 1; // vwc: no volatile write cache, broadcast flush not supported
  return b;
}

export interface NamespaceDataOptions {
  size: number;
  sectorSize: number;
  eui64: bigint;
}

/** pci_nvme_init_nsdata(): one LBA format of the backend's sector size. */
export function identifyNamespace(o: NamespaceDataOptions): Uint8Array {
  const b = new Uint8Array(NVME_IDENTIFY_SIZE);
  const v = new DataView(b.buffer);
  const blocks = BigInt(Math.floor(o.size / o.sectorSize));
  v.setBigUint64(0, blocks, true); // nsze
  v.setBigUint64(8, blocks, true); // ncap
  v.setBigUint64(16, blocks, true); // nuse
  b[25] = 0; // nlbaf (zero-based: one format)
  b[26] = 0; // flbas
  v.setBigUint64(120, o.eui64, false); // eui64, big endian
  v.setUint32(128, Math.log2(o.sectorSize) << 16, true); // lbaf[0].lbads
  return b;
}

/** CRC-16 (polynomial 0x8005, reflected), as pci_nvme.c's crc16(). */
export function crc16(crc: number, data: Uint8Array): number {
  for (const byte of data) {
    crc ^= byte;
    for (let i = 0; i < 8; i++) crc = crc & 1 ? (crc >>> 1) ^ 0xa001 : crc >>> 1;
  }
  return crc & 0xffff;
}

/** The EUI-64 bhyve makes up when eui64= is not given: FreeBSD's OUI, the
 * CRC-16 of "<vmname><bus><slot><func>", and the namespace ID. */
export function defaultEui64(vmName: string, bus: number, slot: number, func: number, nsid: number): bigint {
  const c = crc16(0, Buffer.from(`${vmName}${bus}${slot}${func}`, 'latin1'));
  return (((OUI_FREEBSD_NVME_LOW | BigInt(c)) << 16n) | BigInt(nsid & 0xffff)) & 0xffffffffffffffffn;
}

export const ERROR_LOG_SIZE = 64;
export const HEALTH_LOG_SIZE = 512;
export const FIRMWARE_LOG_SIZE = 512;
export const NS_LIST_SIZE = 4096;

/** SMART / health information with bhyve's nominal values and the
 * command counters (128-bit little-endian fields). */
export function healthLog(c: { criticalWarning: number; dataUnitsRead: bigint; dataUnitsWritten: bigint; readCommands: bigint; writeCommands: bigint }): Uint8Array {
  const b = new Uint8Array(HEALTH_LOG_SIZE);
  const v = new DataView(b.buffer);
  b[0] = c.criticalWarning;
  v.setUint16(1, NVME_TEMPERATURE, true);
  b[3] = 100; // available spare
  b[4] = 10; // available spare threshold
  const u128 = (off: number, x: bigint) => {
    v.setBigUint64(off, x & 0xffffffffffffffffn, true);
    v.setBigUint64(off + 8, x >> 64n, true);
  };
  u128(32, c.dataUnitsRead);
  u128(48, c.dataUnitsWritten);
  u128(64, c.readCommands);
  u128(80, c.writeCommands);
  u128(112, 1n); // power cycles
  return b;
}

/** Firmware slot information: slot 1 active, revision "1.0". */
export function firmwareLog(): Uint8Array {
  const b = new Uint8Array(FIRMWARE_LOG_SIZE);
  b[0] = 1;
  pad(b, 8, 8, '1.0');
  return b;
}
