// Multiboot v1 (the GNU Multiboot Specification 0.6.96): a header in the
// first 8192 bytes, the kernel loaded by the a.out kludge's addresses (flag 16)
// or by its ELF program headers, modules with their command lines, and the
// Multiboot information structure; entered in 32-bit protected mode, paging
// off, with eax = 0x2BADB002 and ebx = the information structure.

import { protectedModeState } from './boot-state.js';
import { isElf, parseElf, PT_LOAD, virtToPhys } from './elf.js';
import { loadElfSegments } from './elf-load.js';
import { LoaderError, hex } from './errors.js';
import {
  E820_RAM, GDT_ADDR, GuestAllocator, LEGACY_HOLE_END, LEGACY_HOLE_START, type LoadOptions, type LoadResult, PAGE,
  checkLayout, guestMemoryMap,
  writeGdt,
} from './guest-layout.js';

export const MULTIBOOT_HEADER_MAGIC = 0x1badb002;
export const MULTIBOOT_BOOTLOADER_MAGIC = 0x2badb002;
export const MULTIBOOT_SEARCH = 8192;
export const MB_PAGE_ALIGN = 1 << 0;
export const MB_MEMORY_INFO = 1 << 1;
export const MB_VIDEO_MODE = 1 << 2;
export const MB_AOUT_KLUDGE = 1 << 16;
/** Bits 0-15 are "required": a loader must refuse ones it does not know. */
const MB_KNOWN_REQUIRED = MB_PAGE_ALIGN | MB_MEMORY_INFO | MB_VIDEO_MODE;

/** multiboot_info flags and field offsets. */
export const MBI_FLAG = {
  MEMORY: 1 << 0, BOOTDEV: 1 << 1, CMDLINE: 1 << 2, MODS: 1 << 3, MEM_MAP: 1 << 6, BOOT_LOADER_NAME: 1 << 9,
} as const;
export const MBI = {
  flags: 0, mem_lower: 4, mem_upper: 8, boot_device: 12, cmdline: 16, mods_count: 20, mods_addr: 24,
  syms: 28, mmap_length: 44, mmap_addr: 48, drives_length: 52, drives_addr: 56, config_table: 60,
  boot_loader_name: 64, apm_table: 68, size: 120,
} as const;
export const MB_MODULE_SIZE = 16;
export const MB_MMAP_ENTRY_SIZE = 24; // u32 size (=20) + u64 base + u64 length + u32 type
export const BOOT_LOADER_NAME = 'bhyveload';

export interface MultibootHeader {
  offset: number;
  flags: number;
  headerAddr: number;
  loadAddr: number;
  loadEndAddr: number;
  bssEndAddr: number;
  entryAddr: number;
}

/** Finds a valid Multiboot header (magic + checksum) in the first 8 KiB. */
export function findMultibootHeader(b: Uint8Array): MultibootHeader | undefined {
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  const limit = Math.min(b.length, MULTIBOOT_SEARCH) - 12;
  for (let off = 0; off <= limit; off += 4) {
    if (dv.getUint32(off, true) !== MULTIBOOT_HEADER_MAGIC) continue;
    const flags = dv.getUint32(off + 4, true);
    const sum = (MULTIBOOT_HEADER_MAGIC + flags + dv.getUint32(off + 8, true)) >>> 0;
    if (sum !== 0) continue;
    const f = (i: number) => (off + 12 + i * 4 + 4 <= b.length ? dv.getUint32(off + 12 + i * 4, true) : 0);
    return {
      offset: off, flags,
      headerAddr: f(0), loadAddr: f(1), loadEndAddr: f(2), bssEndAddr: f(3), entryAddr: f(4),
    };
  }
  return undefined;
}

export interface MultibootLoadResult extends LoadResult {
  header: MultibootHeader;
  info: number;
  modules: { addr: number; end: number; string: number }[];
}

export function loadMultiboot(image: Uint8Array, o: LoadOptions): MultibootLoadResult {
  const name = o.kernelName ?? 'kernel';
  checkLayout(o.layout);
  const h = findMultibootHeader(image);
  if (!h) throw new LoaderError(`${name} is not a Multiboot kernel: no valid header in its first 8192 bytes`);
  const unknown = h.flags & 0xffff & ~MB_KNOWN_REQUIRED;
  if (unknown) throw new LoaderError(`${name} requires Multiboot features we do not provide (header flags ${hex(unknown)})`);
  const alloc = new GuestAllocator(o.memory, o.layout);
  let entry: number;
  let kernelEnd: number;
  if (h.flags & MB_AOUT_KLUDGE) {
    if (h.offset + 32 > image.length) throw new LoaderError(`${name} is truncated: Multiboot address fields missing`);
    if (h.headerAddr < h.loadAddr) throw new LoaderError(`${name}: corrupt Multiboot header (header_addr below load_addr)`);
    const fileStart = h.offset - (h.headerAddr - h.loadAddr);
    if (fileStart < 0) throw new LoaderError(`${name}: corrupt Multiboot header (load_addr lies before the file start)`);
    let loadSize: number;
    if (h.loadEndAddr === 0) loadSize = image.length - fileStart;
    else {
      if (h.loadEndAddr < h.loadAddr) throw new LoaderError(`${name}: corrupt Multiboot header (load_end_addr below load_addr)`);
      loadSize = h.loadEndAddr - h.loadAddr;
    }
    if (fileStart + loadSize > image.length) {
      throw new LoaderError(`${name} is truncated: Multiboot header asks for ${loadSize} bytes from offset ${hex(fileStart)} but the file has ${image.length}`);
    }
    const loadEnd = h.loadAddr + loadSize;
    const bssEnd = h.bssEndAddr === 0 ? loadEnd : h.bssEndAddr;
    if (bssEnd < loadEnd) throw new LoaderError(`${name}: corrupt Multiboot header (bss_end_addr below the loaded image)`);
    alloc.reserve(h.loadAddr, bssEnd - h.loadAddr, 'kernel', true);
    alloc.write(h.loadAddr, image.subarray(fileStart, fileStart + loadSize));
    alloc.zero(loadEnd, bssEnd - loadEnd);
    entry = h.entryAddr;
    kernelEnd = bssEnd;
    if (entry < h.loadAddr || entry >= loadEnd) {
      throw new LoaderError(`${name}: Multiboot entry ${hex(entry)} lies outside the loaded image ${hex(h.loadAddr)}-${hex(loadEnd)}`);
    }
  } else {
    if (!isElf(image)) throw new LoaderError(`${name}: Multiboot header without load addresses (flag 16) and not an ELF file`);
    const elf = parseElf(image, name);
    if (!elf.segments.some((s) => s.type === PT_LOAD)) throw new LoaderError(`${name}: ELF file has nothing to load`);
    kernelEnd = loadElfSegments(alloc, image, elf, name);
    const phys = virtToPhys(elf, elf.entry);
    if (phys === undefined) throw new LoaderError(`${name}: ELF entry ${hex(elf.entry)} lies outside its loaded segments`);
    entry = phys;
  }

  const mem = o.memory;
  // Info structure, memory map, strings: low memory, below 640 KiB.
  const map = guestMemoryMap(o.layout);
  const mods = [
    ...(o.modules ?? []),
    ...(o.initrd && o.initrd.length > 0 ? [{ name: o.initrdName ?? 'initrd', bytes: o.initrd, cmdline: o.initrdName ?? 'initrd' }] : []),
  ];
  const info = alloc.allocLow(MBI.size, 8, 'Multiboot information', 0x9000, LEGACY_HOLE_START);
  alloc.zero(info, MBI.size);
  const mmapAddr = alloc.allocLow(map.length * MB_MMAP_ENTRY_SIZE, 8, 'Multiboot memory map', 0x9000, LEGACY_HOLE_START);
  map.forEach((e, i) => {
    const at = mmapAddr + i * MB_MMAP_ENTRY_SIZE;
    mem.writeU32(at, 20);
    mem.writeU64(at + 4, BigInt(e.addr));
    mem.writeU64(at + 12, BigInt(e.size));
    mem.writeU32(at + 20, e.type);
  });
  const str = (s: string, what: string): number => {
    const at = alloc.allocLow(Buffer.byteLength(s) + 1, 1, what, 0x9000, LEGACY_HOLE_START);
    alloc.writeString(at, s);
    return at;
  };
  const cmdline = str(o.cmdline ?? '', 'command line');
  const loaderName = str(BOOT_LOADER_NAME, 'boot loader name');
  let flags = MBI_FLAG.MEMORY | MBI_FLAG.CMDLINE | MBI_FLAG.MEM_MAP | MBI_FLAG.BOOT_LOADER_NAME;

  const modsAddr = mods.length > 0 ? alloc.allocLow(mods.length * MB_MODULE_SIZE, 8, 'Multiboot module list', 0x9000, LEGACY_HOLE_START) : 0;
  const placed: MultibootLoadResult['modules'] = [];
  let next = Math.max(kernelEnd, LEGACY_HOLE_END);
  mods.forEach((m, i) => {
    const addr = alloc.allocLow(Math.max(m.bytes.length, 1), PAGE, `module ${m.name}`, next);
    alloc.write(addr, m.bytes);
    next = addr + m.bytes.length;
    const s = str(m.cmdline ?? m.name, `module ${m.name} command line`);
    const at = modsAddr + i * MB_MODULE_SIZE;
    mem.writeU32(at, addr);
    mem.writeU32(at + 4, addr + m.bytes.length);
    mem.writeU32(at + 8, s);
    mem.writeU32(at + 12, 0);
    placed.push({ addr, end: addr + m.bytes.length, string: s });
  });
  if (mods.length > 0) flags |= MBI_FLAG.MODS;

  const lowRam = map.find((e) => e.addr === 0 && e.type === E820_RAM);
  const upper = map.find((e) => e.addr === LEGACY_HOLE_END && e.type === E820_RAM);
  mem.writeU32(info + MBI.flags, flags);
  mem.writeU32(info + MBI.mem_lower, Math.floor((lowRam?.size ?? 0) / 1024));
  mem.writeU32(info + MBI.mem_upper, Math.floor((upper?.size ?? 0) / 1024));
  mem.writeU32(info + MBI.cmdline, cmdline);
  mem.writeU32(info + MBI.mods_count, mods.length);
  mem.writeU32(info + MBI.mods_addr, modsAddr);
  mem.writeU32(info + MBI.mmap_length, map.length * MB_MMAP_ENTRY_SIZE);
  mem.writeU32(info + MBI.mmap_addr, mmapAddr);
  mem.writeU32(info + MBI.boot_loader_name, loaderName);

  if (!o.memory.contains(entry, 1)) throw new LoaderError(`${name}: Multiboot entry ${hex(entry)} is outside guest memory`);
  const state = protectedModeState({
    entry: 'multiboot', rip: entry, gdtBase: GDT_ADDR, regs: { rax: MULTIBOOT_BOOTLOADER_MAGIC, rbx: info },
  });
  writeGdt(alloc, state);
  return { format: 'multiboot', state, placements: alloc.placements, entry, header: h, info, modules: placed };
}
