// QEMU's firmware configuration device (fw_cfg), as bhyve's qemu_fwcfg.c
// offers it with lpc.fwcfg=qemu and as QEMU documents it in
// docs/specs/fw_cfg.rst:
//
//   0x510  selector, 16-bit write (a read returns the current selector).
//          Bits 13-0 are the item key, bit 15 selects the architecture-
//          specific item set, bit 14 (write) is ignored: every item is
//          read-only, as in QEMU >= 2.4. Writing the selector rewinds the
//          data offset to 0.
//   0x511  data, 8-bit reads returning the selected item's next byte (0 past
//          the end or for a missing item); writes are ignored.
//   0x514  DMA address, 8 bytes, big-endian: a 32-bit write at 0x514 sets
//          the high half, a 32-bit write at 0x518 sets the low half and
//          starts the transfer described by the FWCfgDmaAccess at that guest
//          address. Reading these ports returns the "QEMU CFG" signature.
//
// FWCfgDmaAccess (big-endian): u32 control, u32 length, u64 address.
// control: bit 0 error, 1 read, 2 skip, 3 select (item key in bits 31-16),
// 4 write. The device clears control when it is done, or leaves the error
// bit set. Guest addresses outside RAM set the error bit; they never throw
// out of the device.
//
// Items: signature "QEMU" (0x00), ID (0x01: bit 0 traditional interface,
// bit 1 DMA), UUID (0x02), RAM size (0x03), NB_CPUS (0x05), BOOT_MENU (0x0e),
// MAX_CPUS (0x0f), the file directory (0x19: big-endian count, then entries
// of big-endian size, big-endian select, reserved, name[56]) and named files
// from 0x20 up. As in QEMU, files are kept sorted by name and file i in that
// order has selector 0x20 + i.

import { UserError } from '../user-error.js';
import type { AccessSize, Device, DeviceContext, PortIoHandler } from '../devices/device.js';
import type { GuestMemory } from '../sys/guest-memory.js';
import { HIGHMEM_BASE, type MemoryLayout } from '../sys/memory-map.js';
import { ascii } from './bytes.js';

export const FW_CFG_PORT_SEL = 0x510;
export const FW_CFG_PORT_DATA = 0x511;
export const FW_CFG_PORT_DMA = 0x514;
export const FW_CFG_DMA_PORT_LEN = 8;

export const FW_CFG_SIGNATURE = 0x00;
export const FW_CFG_ID = 0x01;
export const FW_CFG_UUID = 0x02;
export const FW_CFG_RAM_SIZE = 0x03;
export const FW_CFG_NOGRAPHIC = 0x04;
export const FW_CFG_NB_CPUS = 0x05;
export const FW_CFG_BOOT_MENU = 0x0e;
export const FW_CFG_MAX_CPUS = 0x0f;
export const FW_CFG_FILE_DIR = 0x19;
export const FW_CFG_FILE_FIRST = 0x20;
export const FW_CFG_WRITE_CHANNEL = 0x4000;
export const FW_CFG_ARCH_LOCAL = 0x8000;
export const FW_CFG_ENTRY_MASK = 0x3fff;
export const FW_CFG_MAX_FILE_NAME = 56;

export const FW_CFG_VERSION = 0x01;
export const FW_CFG_VERSION_DMA = 0x02;

export const FW_CFG_DMA_CTL_ERROR = 0x01;
export const FW_CFG_DMA_CTL_READ = 0x02;
export const FW_CFG_DMA_CTL_SKIP = 0x04;
export const FW_CFG_DMA_CTL_SELECT = 0x08;
export const FW_CFG_DMA_CTL_WRITE = 0x10;
/** "QEMU CFG", what a read of the DMA address register returns. */
export const FW_CFG_DMA_SIGNATURE = ascii('QEMU CFG');

/** A named fw_cfg file (`-f name,...`, etc/e820, bootorder, etc/acpi/...). */
export interface FwCfgFile {
  name: string;
  data: Uint8Array;
}

export class FwCfgError extends UserError { override readonly name: string = 'FwCfgError'; }

function itemKey(selector: number): number {
  return selector & (FW_CFG_ARCH_LOCAL | FW_CFG_ENTRY_MASK);
}

export class FwCfg implements Device {
  readonly name = 'fwcfg';
  private readonly items = new Map<number, Uint8Array>();
  private readonly files = new Map<string, Uint8Array>();
  private selector = 0;
  private offset = 0;
  private dmaHigh = 0;
  private dmaLow = 0;
  /** True once the guest has used the DMA interface (for tests and stats). */
  dmaCount = 0;

  constructor(private readonly mem: GuestMemory, opts: { dma?: boolean } = {}) {
    this.setItem(FW_CFG_SIGNATURE, ascii('QEMU'));
    const id = new Uint8Array(4);
    id[0] = FW_CFG_VERSION | (opts.dma === false ? 0 : FW_CFG_VERSION_DMA);
    this.setItem(FW_CFG_ID, id);
    this.rebuildDirectory();
  }

  /** Sets (or replaces) a numbered item. Selectors of files are managed by addFile. */
  setItem(selector: number, data: Uint8Array): void {
    const key = itemKey(selector);
    if (key >= FW_CFG_FILE_FIRST && key <= FW_CFG_ENTRY_MASK) throw new FwCfgError(`fw_cfg selector 0x${key.toString(16)} belongs to the file range`);
    this.items.set(key, data);
  }

  setU16(selector: number, v: number): void {
    this.setItem(selector, Uint8Array.of(v & 0xff, (v >>> 8) & 0xff));
  }

  setU64(selector: number, v: number | bigint): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
    this.setItem(selector, b);
  }

  item(selector: number): Uint8Array | undefined {
    return this.items.get(itemKey(selector));
  }

  /** Adds a named file; names are unique and shorter than 56 bytes. */
  addFile(name: string, data: Uint8Array): number {
    if (name.length === 0 || name.length >= FW_CFG_MAX_FILE_NAME) {
      throw new FwCfgError(`fw_cfg file name '${name}' must be 1 to ${FW_CFG_MAX_FILE_NAME - 1} characters`);
    }
    if (this.files.has(name)) throw new FwCfgError(`fw_cfg file '${name}' already exists`);
    if (FW_CFG_FILE_FIRST + this.files.size > FW_CFG_ENTRY_MASK) throw new FwCfgError('too many fw_cfg files');
    this.files.set(name, data);
    this.rebuildDirectory();
    return this.fileSelector(name)!;
  }

  /** The selector of a file, or undefined. */
  fileSelector(name: string): number | undefined {
    const i = this.sortedNames().indexOf(name);
    return i < 0 ? undefined : FW_CFG_FILE_FIRST + i;
  }

  file(name: string): Uint8Array | undefined {
    return this.files.get(name);
  }

  fileNames(): string[] {
    return this.sortedNames();
  }

  private sortedNames(): string[] {
    // strcmp order: compare as bytes, not by locale.
    return [...this.files.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  private rebuildDirectory(): void {
    const names = this.sortedNames();
    const dir = new Uint8Array(4 + 64 * names.length);
    const dv = new DataView(dir.buffer);
    dv.setUint32(0, names.length, false);
    for (const key of [...this.items.keys()]) if (key >= FW_CFG_FILE_FIRST && key <= FW_CFG_ENTRY_MASK) this.items.delete(key);
    names.forEach((name, i) => {
      const data = this.files.get(name)!;
      const off = 4 + 64 * i;
      dv.setUint32(off, data.length, false);
      dv.setUint16(off + 4, FW_CFG_FILE_FIRST + i, false);
      dir.set(ascii(name), off + 8);
      this.items.set(FW_CFG_FILE_FIRST + i, data);
    });
    this.items.set(FW_CFG_FILE_DIR, dir);
  }

  /** The selected item's data, or undefined when nothing is there. */
  private current(): Uint8Array | undefined {
    return this.items.get(itemKey(this.selector));
  }

  select(selector: number): void {
    this.selector = selector & 0xffff;
    this.offset = 0;
  }

  readDataByte(): number {
    const data = this.current();
    if (!data || this.offset >= data.length) return 0;
    return data[this.offset++];
  }

  // ---- port I/O ----

  readonly ports: PortIoHandler = {
    read: (port: number, size: AccessSize): number => {
      if (port === FW_CFG_PORT_SEL) return size === 1 ? this.selector & 0xff : this.selector;
      if (port === FW_CFG_PORT_DATA) {
        // One byte per access unit; wider reads return consecutive bytes,
        // the first in the low byte.
        let v = 0;
        for (let i = 0; i < size; i++) v |= this.readDataByte() << (8 * i);
        return v >>> 0;
      }
      return 0xffffffff;
    },
    write: (port: number, size: AccessSize, value: number): void => {
      if (port === FW_CFG_PORT_SEL && size >= 2) this.select(value & 0xffff);
      // Writes to the data port are ignored, as in QEMU >= 2.4.
    },
  };

  readonly dmaPorts: PortIoHandler = {
    read: (port: number, size: AccessSize): number => {
      const off = port - FW_CFG_PORT_DMA;
      let v = 0;
      for (let i = 0; i < size; i++) {
        const j = off + i;
        v |= (j < 8 ? FW_CFG_DMA_SIGNATURE[j] : 0xff) << (8 * i);
      }
      return v >>> 0;
    },
    write: (port: number, size: AccessSize, value: number): void => {
      const off = port - FW_CFG_PORT_DMA;
      if (size !== 4) return;
      // The register is big-endian: the byte at the lowest port is the most
      // significant, so the value as the port sees it is byte-swapped.
      const half = bswap32(value);
      if (off === 0) {
        this.dmaHigh = half;
      } else if (off === 4) {
        this.dmaLow = half;
        const addr = this.dmaHigh * 0x100000000 + this.dmaLow;
        this.dmaHigh = 0;
        this.runDma(addr);
      }
    },
  };

  /** Runs the FWCfgDmaAccess at guest address `addr` (QEMU's fw_cfg_dma_transfer). */
  runDma(addr: number): void {
    this.dmaCount++;
    let desc: Uint8Array;
    try {
      desc = this.mem.read(addr, 16);
    } catch {
      this.writeControl(addr, FW_CFG_DMA_CTL_ERROR);
      return;
    }
    const dv = new DataView(desc.buffer, desc.byteOffset, 16);
    let control = dv.getUint32(0, false);
    let length = dv.getUint32(4, false);
    let address = Number(dv.getBigUint64(8, false));
    if (control & FW_CFG_DMA_CTL_SELECT) this.select(control >>> 16);
    let read = false;
    let write = false;
    if (control & FW_CFG_DMA_CTL_READ) read = true;
    else if (control & FW_CFG_DMA_CTL_WRITE) write = true;
    else if (!(control & FW_CFG_DMA_CTL_SKIP)) length = 0;
    control = 0;
    while (length > 0 && !(control & FW_CFG_DMA_CTL_ERROR)) {
      const data = this.current();
      let len: number;
      if (!data || this.offset >= data.length) {
        len = length;
        if (read && !this.guestZero(address, len)) control |= FW_CFG_DMA_CTL_ERROR;
        if (write) control |= FW_CFG_DMA_CTL_ERROR;
      } else {
        len = Math.min(length, data.length - this.offset);
        if (read && !this.guestWrite(address, data.subarray(this.offset, this.offset + len))) control |= FW_CFG_DMA_CTL_ERROR;
        // Every item is read-only: a write is an error.
        if (write) control |= FW_CFG_DMA_CTL_ERROR;
        this.offset += len;
      }
      address += len;
      length -= len;
    }
    this.writeControl(addr, control);
  }

  /** Copies into guest memory; the buffer may run across RAM chunks. */
  private guestWrite(addr: number, data: Uint8Array): boolean {
    return this.guestViews(addr, data.length, (v, off) => v.set(data.subarray(off, off + v.length)));
  }

  /** Zeroes guest memory in place (QEMU's dma_memory_set): a length of up
   * to 4 GiB must not become a host buffer of that size. */
  private guestZero(addr: number, len: number): boolean {
    return this.guestViews(addr, len, (v) => v.fill(0));
  }

  /** Calls `f` on the views of [addr, addr+len); false when not all RAM. */
  private guestViews(addr: number, len: number, f: (view: Uint8Array, offset: number) => void): boolean {
    if (len === 0) return true;
    const views: Uint8Array[] = [];
    try {
      if (!Number.isSafeInteger(addr)) return false;
      this.mem.slices(addr, len, views);
    } catch {
      return false;
    }
    let off = 0;
    for (const v of views) { f(v, off); off += v.length; }
    return true;
  }

  private writeControl(addr: number, control: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, control >>> 0, false);
    this.guestWrite(addr, b);
  }

  reset(): void {
    this.selector = 0;
    this.offset = 0;
    this.dmaHigh = 0;
    this.dmaLow = 0;
  }
}

export function bswap32(v: number): number {
  return (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | ((v >>> 24) & 0xff)) >>> 0;
}

// ---------------------------------------------------------------------------
// Standard contents

/** QEMU's struct e820_entry types. */
export const E820_RAM = 1;
export const E820_RESERVED = 2;
export const E820_ACPI = 3;
export const E820_NVS = 4;

export interface E820Entry {
  base: number;
  length: number;
  type: number;
}

/** bhyve's fixed holes in low RAM: VGA [0xA0000, 0xC0000) and ROM [0xC0000, 0x100000). */
export const E820_HOLES: ReadonlyArray<readonly [number, number]> = [[0xa0000, 0xc0000], [0xc0000, 0x100000]];

/**
 * The E820 map bhyve's e820.c reports: lowmem RAM from 0 and highmem RAM
 * from 4 GiB, with the VGA and ROM holes below 1 MiB punched out, plus any
 * extra ranges carved out of RAM (`reserved`, e.g. what e820_alloc() hands
 * out to GVT-d) as their own entries.
 */
export function buildE820(layout: MemoryLayout, reserved: readonly E820Entry[] = []): E820Entry[] {
  let ram: Array<[number, number]> = [];
  if (layout.lowmem > 0) ram.push([0, layout.lowmem]);
  if (layout.highmem > 0) ram.push([HIGHMEM_BASE, HIGHMEM_BASE + layout.highmem]);
  const punch = (lo: number, hi: number): void => {
    const out: Array<[number, number]> = [];
    for (const [b, e] of ram) {
      if (hi <= b || lo >= e) { out.push([b, e]); continue; }
      if (b < lo) out.push([b, lo]);
      if (hi < e) out.push([hi, e]);
    }
    ram = out;
  };
  for (const [lo, hi] of E820_HOLES) punch(lo, hi);
  for (const r of reserved) punch(r.base, r.base + r.length);
  const entries: E820Entry[] = ram.map(([b, e]) => ({ base: b, length: e - b, type: E820_RAM }));
  entries.push(...reserved.map((r) => ({ ...r })));
  return entries.sort((a, b) => a.base - b.base);
}

/** etc/e820: packed struct e820_entry { u64 address; u64 length; u32 type; } little-endian. */
export function encodeE820(entries: readonly E820Entry[]): Uint8Array {
  const out = new Uint8Array(20 * entries.length);
  const dv = new DataView(out.buffer);
  entries.forEach((e, i) => {
    dv.setBigUint64(20 * i, BigInt(e.base), true);
    dv.setBigUint64(20 * i + 8, BigInt(e.length), true);
    dv.setUint32(20 * i + 16, e.type, true);
  });
  return out;
}

/**
 * The `bootorder` file for boot devices on bus 0, in boot order: one
 * OpenFirmware path per line, NUL-terminated as QEMU writes it; undefined
 * when there is none (bhyve then adds no file). bhyve (pci_emul.c
 * init_bootorder) writes "/pci@i0cf8/pci@SLOT,FUNC" in decimal; we write
 * hex, as OpenFirmware paths, SeaBIOS and OVMF expect (the two agree below
 * slot 10), and leave out ",0". Devices on another bus cannot be named under the i0cf8 root.
 */
export function encodeBootOrder(devices: ReadonlyArray<{ bus: number; slot: number; func: number; name?: string }>): Uint8Array | undefined {
  // Function 0 is the unit address "S", not "S,0" (as QEMU writes it):
  // SeaBIOS's glob_prefix needs the device part to end there, else no
  // entry ever matches and bootindex= has no effect. A virtio-scsi
  // controller boots from its disk, whose path goes on to the channel and
  // unit, as QEMU writes it (SeaBIOS matches nothing shorter).
  const paths = devices.filter((d) => d.bus === 0)
    .map((d) => `/pci@i0cf8/pci@${d.slot.toString(16)}${d.func ? `,${d.func.toString(16)}` : ''}`
      + (d.name?.startsWith('virtio-scsi@') ? '/channel@0/disk@0,0' : ''));
  if (paths.length === 0) return undefined;
  return ascii(paths.join('\n') + '\0');
}

export interface StandardItemsOptions {
  ncpu: number;
  layout: MemoryLayout;
  /** Boot menu flag (QEMU -boot menu=on); bhyve has none, default off. */
  bootMenu?: boolean;
  /** 16 bytes, RFC 4122 byte order, for FW_CFG_UUID. */
  uuid?: Uint8Array;
}

/** Fills the numbered items bhyve and QEMU provide. */
export function setStandardItems(fw: FwCfg, opts: StandardItemsOptions): void {
  fw.setU64(FW_CFG_RAM_SIZE, opts.layout.lowmem + opts.layout.highmem);
  fw.setU16(FW_CFG_NB_CPUS, opts.ncpu);
  // No CPU hotplug: MAX_CPUS is the CPU count, as bhyve sets it.
  fw.setU16(FW_CFG_MAX_CPUS, opts.ncpu);
  fw.setU16(FW_CFG_BOOT_MENU, opts.bootMenu ? 1 : 0);
  fw.setU16(FW_CFG_NOGRAPHIC, 0);
  if (opts.uuid) fw.setItem(FW_CFG_UUID, opts.uuid);
}

/**
 * etc/e820 from the memory layout. bootorder, ACPI and SMBIOS files come
 * from the machine as built (buildFwCfgFiles in firmware/index.ts).
 */
export function standardFiles(layout: MemoryLayout, reserved: readonly E820Entry[] = []): FwCfgFile[] {
  return [{ name: 'etc/e820', data: encodeE820(buildE820(layout, reserved)) }];
}

/**
 * Creates the fw_cfg device on the I/O bus: ports 0x510-0x511 and the DMA
 * register at 0x514-0x51b. The numbered items come from the context (vCPU
 * count, memory layout); `files` are added as named files (standard files
 * and -f user files alike; a duplicate name is an error).
 */
export function createFwCfg(ctx: DeviceContext, files: readonly FwCfgFile[], opts: { layout: MemoryLayout; uuid?: Uint8Array; bootMenu?: boolean }): FwCfg {
  const fw = new FwCfg(ctx.mem);
  setStandardItems(fw, { ncpu: ctx.machine.vcpuCount, layout: opts.layout, uuid: opts.uuid, bootMenu: opts.bootMenu });
  for (const f of files) fw.addFile(f.name, f.data);
  ctx.io.registerPorts('fwcfg', FW_CFG_PORT_SEL, 2, fw.ports);
  ctx.io.registerPorts('fwcfg-dma', FW_CFG_PORT_DMA, FW_CFG_DMA_PORT_LEN, fw.dmaPorts);
  return fw;
}
