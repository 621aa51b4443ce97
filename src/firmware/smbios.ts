// SMBIOS tables as bhyve's smbiostbl.c builds them: BIOS (type 0), system
// (1, with the UUID), baseboard (2), chassis (3), one processor per socket
// (4), the physical memory array (16), one memory device (17), the mapped
// address ranges (19: low memory, and memory above 4 GiB when there is
// some), system boot (32) and end of table (127). Strings come from the
// bhyve_config(5) keys bios.*, system.*, board.*, chassis.* with bhyve's
// defaults.
//
// Delivered either in low memory at bhyve's SMBIOS_BASE (0xf1000) behind a
// 2.x ("_SM_") or 3.0 ("_SM3_") entry point, or as QEMU's fw_cfg files
// etc/smbios/smbios-tables (the structures) and etc/smbios/smbios-anchor
// (the entry point; firmware fills in the table address).

import { UserError } from '../user-error.js';
import { hostname as osHostname } from 'node:os';
import { ConfigTree, ConfigError } from '../config/tree.js';
import { calcTopology } from '../config/topology.js';
import { HIGHMEM_BASE, type MemoryLayout } from '../sys/memory-map.js';
import { ByteWriter, fixChecksum } from './bytes.js';
import { md5 } from './md5.js';

export const SMBIOS_BASE = 0xf1000;
/** bhyve's SMBIOS_MAX_LENGTH: up to BHYVE_ACPI_BASE. */
export const SMBIOS_MAX_LENGTH = 0xf2400 - 0xf1000;

export const SMBIOS_TABLES_FILE = 'etc/smbios/smbios-tables';
export const SMBIOS_ANCHOR_FILE = 'etc/smbios/smbios-anchor';

/** Strings by config key, with the defaults of bhyve_config(5)/smbiostbl.c. */
export const SMBIOS_STRING_DEFAULTS: Readonly<Record<string, string>> = {
  'bios.vendor': 'BHYVE',
  'bios.version': '14.0',
  'bios.release_date': '10/17/2021',
  'system.manufacturer': 'FreeBSD',
  'system.product_name': 'BHYVE',
  'system.version': '1.0',
  'system.serial_number': 'None',
  'system.sku': 'None',
  'system.family_name': 'Virtual Machine',
  'board.manufacturer': 'FreeBSD',
  'board.product_name': 'BHYVE',
  'board.version': '1.0',
  'board.serial_number': 'None',
  'board.asset_tag': 'None',
  'board.location': 'None',
  'chassis.manufacturer': 'FreeBSD',
  'chassis.version': '1.0',
  'chassis.serial_number': 'None',
  'chassis.asset_tag': 'None',
  'chassis.sku': 'None',
};

export interface SmbiosOptions {
  strings: Record<string, string>;
  /** 16 bytes exactly as stored in the type 1 structure. */
  uuid: Uint8Array;
  sockets: number;
  cores: number;
  threads: number;
  lowmem: number;
  highmem: number;
}

/** Parses "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" into SMBIOS byte order
 * (uuid_enc_le: the first three fields little-endian). */
export function encodeUuidLe(s: string): Uint8Array {
  const m = /^([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})$/i.exec(s.trim());
  if (!m) throw new ConfigError(`invalid uuid '${s}' (use the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)`);
  const hex = (h: string): number[] => h.match(/../g)!.map((x) => parseInt(x, 16));
  return Uint8Array.from([...hex(m[1]).reverse(), ...hex(m[2]).reverse(), ...hex(m[3]).reverse(), ...hex(m[4]), ...hex(m[5])]);
}

/** The UUID in RFC 4122 (big-endian) order, e.g. for fw_cfg's FW_CFG_UUID. */
export function uuidBytesBe(s: string): Uint8Array {
  const le = encodeUuidLe(s);
  return Uint8Array.from([...le.subarray(0, 4)].reverse().concat([...le.subarray(4, 6)].reverse(), [...le.subarray(6, 8)].reverse(), [...le.subarray(8)]));
}

/**
 * bhyve's default UUID: MD5 of the VM name followed by the host name in a
 * MAXHOSTNAMELEN (256) byte buffer, with the version set to 3 and the
 * RFC 4122 variant; the digest is stored as is. (bhyve hashes the whole
 * buffer, whose bytes past the name are whatever the stack held; we use
 * zeros, so the value is reproducible.)
 */
export function defaultUuid(vmname: string, hostname: string): Uint8Array {
  const name = Buffer.from(vmname, 'latin1');
  const buf = Buffer.alloc(name.length + 256);
  name.copy(buf);
  buf.write(hostname.slice(0, 255), name.length, 'latin1');
  const d = md5(buf);
  d[6] = (d[6] & 0x0f) | 0x30;
  d[8] = (d[8] & 0x3f) | 0x80;
  return new Uint8Array(d);
}

export function smbiosOptionsFromConfig(config: ConfigTree, layout: MemoryLayout, hostname: string = osHostname()): SmbiosOptions {
  const strings: Record<string, string> = {};
  for (const [k, v] of Object.entries(SMBIOS_STRING_DEFAULTS)) strings[k] = config.get(k) ?? v;
  const uuidStr = config.get('uuid');
  const uuid = uuidStr !== undefined ? encodeUuidLe(uuidStr) : defaultUuid(config.get('name') ?? '', hostname);
  const topo = calcTopology(config);
  return { strings, uuid, sockets: topo.sockets, cores: topo.cores, threads: topo.threads, lowmem: layout.lowmem, highmem: layout.highmem };
}

export const SMBIOS_TYPE_BIOS = 0;
export const SMBIOS_TYPE_SYSTEM = 1;
export const SMBIOS_TYPE_BOARD = 2;
export const SMBIOS_TYPE_CHASSIS = 3;
export const SMBIOS_TYPE_PROCESSOR = 4;
export const SMBIOS_TYPE_MEMARRAY = 16;
export const SMBIOS_TYPE_MEMDEVICE = 17;
export const SMBIOS_TYPE_MEMARRAYMAP = 19;
export const SMBIOS_TYPE_BOOT = 32;
export const SMBIOS_TYPE_EOT = 127;

export interface SmbiosStructures {
  bytes: Uint8Array;
  count: number;
  /** Size of the largest structure, strings included. */
  maxSize: number;
}

class StructBuilder {
  private readonly parts: Uint8Array[] = [];
  private handle = 0;
  maxSize = 0;

  get count(): number { return this.parts.length; }
  get nextHandle(): number { return this.handle + 1; }

  /** Adds a structure; `fill` writes the formatted area after the header,
   * using `str()` to register strings. Returns the handle. */
  add(type: number, fill: (w: ByteWriter, str: (s: string | undefined) => number) => void): number {
    const strings: string[] = [];
    const str = (s: string | undefined): number => {
      if (s === undefined || s === '') return 0;
      strings.push(s);
      return strings.length;
    };
    const body = new ByteWriter();
    const handle = ++this.handle;
    fill(body, str);
    const w = new ByteWriter();
    w.u8(type).u8(4 + body.length).u16(handle).bytes(body.toBytes());
    if (strings.length === 0) w.u8(0).u8(0);
    else { for (const s of strings) w.bytes(Buffer.from(s, 'latin1')).u8(0); w.u8(0); }
    const bytes = w.toBytes();
    this.maxSize = Math.max(this.maxSize, bytes.length);
    this.parts.push(bytes);
    return handle;
  }

  toBytes(): Uint8Array {
    const w = new ByteWriter();
    for (const p of this.parts) w.bytes(p);
    return w.toBytes();
  }
}

export function buildSmbiosStructures(o: SmbiosOptions): SmbiosStructures {
  const s = o.strings;
  const b = new StructBuilder();
  b.add(SMBIOS_TYPE_BIOS, (w, str) => {
    w.u8(str(s['bios.vendor'])).u8(str(s['bios.version'])).u16(0xf000).u8(str(s['bios.release_date']))
      .u8(0) // ROM size: 64 KiB
      .u64(0x10 | 0x80 | 0x1000 | 0x8000 | 0x80000) // ISA, PCI, shadowing, CD boot, EDD
      .u8(0x01) // ext 1: ACPI
      .u8(0x01 | 0x10) // ext 2: BIOS boot specification, virtual machine
      .u8(0).u8(0).u8(0xff).u8(0xff);
  });
  b.add(SMBIOS_TYPE_SYSTEM, (w, str) => {
    w.u8(str(s['system.manufacturer'])).u8(str(s['system.product_name'])).u8(str(s['system.version']))
      .u8(str(s['system.serial_number'])).bytes(o.uuid).u8(0x06 /* wake-up: power switch */)
      .u8(str(s['system.sku'])).u8(str(s['system.family_name']));
  });
  const boardHandle = b.nextHandle;
  const chassisHandle = boardHandle + 1;
  b.add(SMBIOS_TYPE_BOARD, (w, str) => {
    w.u8(str(s['board.manufacturer'])).u8(str(s['board.product_name'])).u8(str(s['board.version']))
      .u8(str(s['board.serial_number'])).u8(str(s['board.asset_tag'])).u8(0x01 /* hosting board */)
      .u8(str(s['board.location'])).u16(chassisHandle).u8(0x0a /* motherboard */).u8(0);
  });
  b.add(SMBIOS_TYPE_CHASSIS, (w, str) => {
    w.u8(str(s['chassis.manufacturer'])).u8(0x02 /* unknown */).u8(str(s['chassis.version']))
      .u8(str(s['chassis.serial_number'])).u8(str(s['chassis.asset_tag']))
      .u8(0x03).u8(0x03).u8(0x03) // boot-up, power supply, thermal: safe
      .u8(0x03) // security: none
      .u32(0).u8(0).u8(0).u8(0).u8(0).u8(str(s['chassis.sku']));
  });
  const perSocketThreads = o.cores * o.threads;
  for (let i = 0; i < o.sockets; i++) {
    b.add(SMBIOS_TYPE_PROCESSOR, (w, str) => {
      w.u8(str(`CPU #${i}`)).u8(0x03 /* central */).u8(0x01 /* other */).u8(str(' ')).u64(0)
        .u8(str(' ')).u8(0).u16(0).u16(0).u16(0).u8(0x40 | 0x01 /* populated, enabled */).u8(0x06 /* none */)
        .u16(0xffff).u16(0xffff).u16(0xffff).u8(str('None')).u8(str('None')).u8(str('None'))
        .u8(o.cores > 254 ? 0 : o.cores).u8(0).u8(perSocketThreads > 254 ? 0 : perSocketThreads)
        .u16(0x04 /* 64-bit capable */).u16(0x01);
    });
  }
  const memsize = o.lowmem + o.highmem;
  const arrayHandle = b.add(SMBIOS_TYPE_MEMARRAY, (w) => {
    w.u8(0x03 /* system board */).u8(0x03 /* system memory */).u8(0x03 /* no ECC */)
      .u32(0x80000000 /* use the extended size */).u16(0xfffe /* no error information */)
      .u16(o.highmem > 0 ? 2 : 1).u64(memsize);
  });
  b.add(SMBIOS_TYPE_MEMDEVICE, (w, str) => {
    const kb = Math.floor(memsize / 1024);
    let mb = Math.floor(memsize / (1024 * 1024));
    if (mb > 0x7fffffff) mb = 0x7fffffff;
    let size: number;
    let xsize = 0;
    if (kb <= 0x7fff) size = kb | 0x8000;
    else if (mb < 0x7fff) size = mb;
    else { size = 0x7fff; xsize = mb; }
    w.u16(arrayHandle).u16(0xfffe).u16(64).u16(64).u16(size).u8(0x02 /* unknown form */).u8(0)
      .u8(str(' ')).u8(str(' ')).u8(0x02 /* unknown type */).u16(0x0004 /* unknown */).u16(0)
      .u8(str(' ')).u8(str('None')).u8(str('None')).u8(str('None')).u8(0).u32(xsize)
      .u16(0).u16(0).u16(0).u16(0);
  });
  const map = (start: number, end: number): void => {
    b.add(SMBIOS_TYPE_MEMARRAYMAP, (w) => {
      // Ending addresses are inclusive (SMBIOS 7.20).
      w.u32(0xffffffff).u32(0xffffffff).u16(arrayHandle).u8(1).u64(start).u64(end - 1);
    });
  };
  map(0, o.lowmem);
  if (o.highmem > 0) map(HIGHMEM_BASE, HIGHMEM_BASE + o.highmem);
  b.add(SMBIOS_TYPE_BOOT, (w) => { w.zeros(6).u8(0 /* no errors */); });
  b.add(SMBIOS_TYPE_EOT, () => {});
  return { bytes: b.toBytes(), count: b.count, maxSize: b.maxSize };
}

export const SMBIOS_EP21_LENGTH = 0x1f;
export const SMBIOS_EP30_LENGTH = 0x18;

/** The SMBIOS 2.8 32-bit entry point ("_SM_" ... "_DMI_"), 31 bytes. */
export function buildEntryPoint21(st: SmbiosStructures, tableAddress: number): Uint8Array {
  const w = new ByteWriter();
  w.fixed('_SM_', 4).u8(0).u8(SMBIOS_EP21_LENGTH).u8(2).u8(8).u16(st.maxSize).u8(0).zeros(5)
    .fixed('_DMI_', 5).u8(0).u16(st.bytes.length).u32(tableAddress).u16(st.count).u8(0x28);
  const ep = w.toBytes();
  fixChecksum(ep, 0x15, 0x10, 0x0f);
  fixChecksum(ep, 0x04, 0, SMBIOS_EP21_LENGTH);
  return ep;
}

/** The SMBIOS 3.0 64-bit entry point ("_SM3_"), 24 bytes. */
export function buildEntryPoint30(st: SmbiosStructures, tableAddress: number): Uint8Array {
  const w = new ByteWriter();
  w.fixed('_SM3_', 5).u8(0).u8(SMBIOS_EP30_LENGTH).u8(3).u8(0).u8(0 /* docrev */).u8(1 /* EP revision */).u8(0)
    .u32(st.bytes.length).u64(tableAddress);
  const ep = w.toBytes();
  fixChecksum(ep, 5, 0, SMBIOS_EP30_LENGTH);
  return ep;
}

export type SmbiosVersion = '2' | '3';

export interface SmbiosInMemory {
  base: number;
  /** Entry point followed by the structure table, to write at `base`. */
  image: Uint8Array;
  entryPointLength: number;
}

/** The in-memory form bhyve writes: entry point at 0xf1000, structures right after. */
export function buildSmbiosInMemory(o: SmbiosOptions, version: SmbiosVersion = '2', base = SMBIOS_BASE): SmbiosInMemory {
  const st = buildSmbiosStructures(o);
  const epLen = version === '3' ? SMBIOS_EP30_LENGTH : SMBIOS_EP21_LENGTH;
  const ep = version === '3' ? buildEntryPoint30(st, base + epLen) : buildEntryPoint21(st, base + epLen);
  if (epLen + st.bytes.length > SMBIOS_MAX_LENGTH) throw new UserError(`SMBIOS entry point and tables (${epLen + st.bytes.length} bytes) exceed bhyve's ${SMBIOS_MAX_LENGTH}-byte area`);
  const image = new Uint8Array(epLen + st.bytes.length);
  image.set(ep, 0);
  image.set(st.bytes, epLen);
  return { base, image, entryPointLength: epLen };
}

/** The SMBIOS entry point and tables bhyve writes at SMBIOS_BASE; throws
 * a UserError when they do not fit there. */
export function smbiosImage(config: ConfigTree, layout: MemoryLayout, hostname?: string, version: SmbiosVersion = '2'): Uint8Array {
  return buildSmbiosInMemory(smbiosOptionsFromConfig(config, layout, hostname), version).image;
}

/** QEMU's fw_cfg files: etc/smbios/smbios-tables and etc/smbios/smbios-anchor
 * (table address 0: SeaBIOS and OVMF place the table and fix the anchor). */
export function smbiosFwCfgFiles(o: SmbiosOptions, version: SmbiosVersion = '2'): Array<{ name: string; data: Uint8Array }> {
  const st = buildSmbiosStructures(o);
  const anchor = version === '3' ? buildEntryPoint30(st, 0) : buildEntryPoint21(st, 0);
  return [
    { name: SMBIOS_TABLES_FILE, data: st.bytes },
    { name: SMBIOS_ANCHOR_FILE, data: anchor },
  ];
}
