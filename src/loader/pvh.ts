// PVH boot (Xen's direct boot ABI, used by QEMU and Firecracker for ELF
// kernels): an ELF kernel whose PT_NOTE carries XEN_ELFNOTE_PHYS32_ENTRY is
// entered in 32-bit protected mode, paging off, with %ebx pointing at an
// hvm_start_info structure (version 1, with the memory map).

import { protectedModeState } from './boot-state.js';
import { elfNotes, isElf, parseElf, PT_LOAD, type ElfImage } from './elf.js';
import { loadElfSegments } from './elf-load.js';
import { LoaderError, hex } from './errors.js';
import {
  GDT_ADDR, GuestAllocator, type LoadOptions, type LoadResult, PAGE, checkLayout, guestMemoryMap, writeGdt,
} from './guest-layout.js';

export const XEN_ELFNOTE_PHYS32_ENTRY = 18;
export const XEN_HVM_START_MAGIC_VALUE = 0x336ec578;
export const HVM_START_INFO_VERSION = 1;

/** struct hvm_start_info (version 1) field offsets; 56 bytes. */
export const HVM_START_INFO = {
  magic: 0, version: 4, flags: 8, nr_modules: 12, modlist_paddr: 16, cmdline_paddr: 24, rsdp_paddr: 32,
  memmap_paddr: 40, memmap_entries: 48, reserved: 52, size: 56,
} as const;
/** struct hvm_modlist_entry: paddr, size, cmdline_paddr, reserved; 32 bytes. */
export const HVM_MODLIST_ENTRY_SIZE = 32;
/** struct hvm_memmap_table_entry: addr, size, type, reserved; 24 bytes. */
export const HVM_MEMMAP_ENTRY_SIZE = 24;

/** Fixed places for the start info (as Firecracker lays them out). */
export const PVH_START_INFO = 0x6000;
export const PVH_CMDLINE = 0x20000;

/** The PVH entry point of an ELF kernel, or undefined when it has none. */
export function pvhEntry(b: Uint8Array, elf?: ElfImage): number | undefined {
  if (!isElf(b)) return undefined;
  let e: ElfImage;
  try {
    e = elf ?? parseElf(b);
  } catch {
    return undefined;
  }
  for (const n of elfNotes(b, e)) {
    if (n.name === 'Xen' && n.type === XEN_ELFNOTE_PHYS32_ENTRY && n.desc.length >= 4) {
      const dv = new DataView(n.desc.buffer, n.desc.byteOffset, n.desc.length);
      // The note holds a 32-bit physical address (some kernels write 8 bytes).
      return dv.getUint32(0, true);
    }
  }
  return undefined;
}

export interface PvhLoadResult extends LoadResult {
  startInfo: number;
  cmdlineAddress: number;
  modules: { addr: number; size: number; cmdline: number }[];
}

export function loadPvh(image: Uint8Array, o: LoadOptions): PvhLoadResult {
  const name = o.kernelName ?? 'kernel';
  checkLayout(o.layout);
  const elf = parseElf(image, name);
  const entry = pvhEntry(image, elf);
  if (entry === undefined) throw new LoaderError(`${name} is an ELF file without a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)`);
  if (!elf.segments.some((s) => s.type === PT_LOAD)) throw new LoaderError(`${name}: ELF file has nothing to load`);
  const alloc = new GuestAllocator(o.memory, o.layout);
  loadElfSegments(alloc, image, elf, name);
  if (!o.memory.contains(entry, 1)) throw new LoaderError(`${name}: PVH entry ${hex(entry)} is outside guest memory`);

  const mem = o.memory;
  const mods = [
    ...(o.initrd && o.initrd.length > 0 ? [{ name: o.initrdName ?? 'initrd', bytes: o.initrd, cmdline: undefined as string | undefined }] : []),
    ...(o.modules ?? []),
  ];
  const map = guestMemoryMap(o.layout);
  const modlistAt = PVH_START_INFO + 64;
  const memmapAt = modlistAt + mods.length * HVM_MODLIST_ENTRY_SIZE;
  const total = memmapAt + map.length * HVM_MEMMAP_ENTRY_SIZE - PVH_START_INFO;
  alloc.reserve(PVH_START_INFO, total, 'hvm_start_info');
  alloc.zero(PVH_START_INFO, total);

  const cmdline = o.cmdline ?? '';
  alloc.reserve(PVH_CMDLINE, Buffer.byteLength(cmdline) + 1, 'command line');
  alloc.writeString(PVH_CMDLINE, cmdline);

  mem.writeU32(PVH_START_INFO + HVM_START_INFO.magic, XEN_HVM_START_MAGIC_VALUE);
  mem.writeU32(PVH_START_INFO + HVM_START_INFO.version, HVM_START_INFO_VERSION);
  mem.writeU32(PVH_START_INFO + HVM_START_INFO.flags, 0);
  mem.writeU32(PVH_START_INFO + HVM_START_INFO.nr_modules, mods.length);
  mem.writeU64(PVH_START_INFO + HVM_START_INFO.modlist_paddr, BigInt(mods.length > 0 ? modlistAt : 0));
  mem.writeU64(PVH_START_INFO + HVM_START_INFO.cmdline_paddr, BigInt(PVH_CMDLINE));
  mem.writeU64(PVH_START_INFO + HVM_START_INFO.rsdp_paddr, 0n);
  mem.writeU64(PVH_START_INFO + HVM_START_INFO.memmap_paddr, BigInt(memmapAt));
  mem.writeU32(PVH_START_INFO + HVM_START_INFO.memmap_entries, map.length);

  map.forEach((e, i) => {
    const at = memmapAt + i * HVM_MEMMAP_ENTRY_SIZE;
    mem.writeU64(at, BigInt(e.addr));
    mem.writeU64(at + 8, BigInt(e.size));
    mem.writeU32(at + 16, e.type);
  });

  // Modules: the initrd first, placed high like Linux's initrd; command lines low.
  const placed: PvhLoadResult['modules'] = [];
  mods.forEach((m, i) => {
    const addr = alloc.allocHigh(m.bytes.length, PAGE, `module ${m.name}`);
    alloc.write(addr, m.bytes);
    let cmdAt = 0;
    if (m.cmdline !== undefined) {
      cmdAt = alloc.allocLow(Buffer.byteLength(m.cmdline) + 1, 8, `module ${m.name} command line`, PVH_CMDLINE);
      alloc.writeString(cmdAt, m.cmdline);
    }
    const at = modlistAt + i * HVM_MODLIST_ENTRY_SIZE;
    mem.writeU64(at, BigInt(addr));
    mem.writeU64(at + 8, BigInt(m.bytes.length));
    mem.writeU64(at + 16, BigInt(cmdAt));
    placed.push({ addr, size: m.bytes.length, cmdline: cmdAt });
  });

  const state = protectedModeState({ entry: 'pvh', rip: entry, gdtBase: GDT_ADDR, regs: { rbx: PVH_START_INFO } });
  writeGdt(alloc, state);
  return {
    format: 'pvh', state, placements: alloc.placements, entry, startInfo: PVH_START_INFO, cmdlineAddress: PVH_CMDLINE,
    modules: placed,
  };
}
