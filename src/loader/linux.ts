// The Linux x86 boot protocol (Documentation/arch/x86/boot.rst) for bzImage
// kernels, entered directly in 64-bit mode (startup_64, load address + 0x200)
// or, for kernels without XLF_KERNEL_64, at the 32-bit entry (code32_start).
// We play the part of a boot loader that skips the real-mode setup code: the
// zero page (struct boot_params) is built here, with a copy of the image's
// setup header, the command line, the initrd and the e820 map.

import { longModeState, protectedModeState, type BootState } from './boot-state.js';
import { LoaderError, hex } from './errors.js';
import {
  GuestAllocator, type LoadOptions, type LoadResult, MIB, PAGE, alignUp, checkLayout, guestMemoryMap,
  writeGdt, writeIdentityPageTables,
} from './guest-layout.js';

export const HDRS_MAGIC = 0x53726448; // "HdrS"
export const LOADED_HIGH = 0x01;
export const XLF_KERNEL_64 = 0x01;
export const XLF_CAN_BE_LOADED_ABOVE_4G = 0x02;
export const MIN_PROTOCOL = 0x0206;

/** Offsets in struct boot_params (zero-page.rst) and the setup header (boot.rst). */
export const BP = {
  ext_ramdisk_image: 0x0c0,
  ext_ramdisk_size: 0x0c4,
  ext_cmd_line_ptr: 0x0c8,
  e820_entries: 0x1e8,
  hdr: 0x1f1,
  setup_sects: 0x1f1,
  syssize: 0x1f4,
  vid_mode: 0x1fa,
  boot_flag: 0x1fe,
  jump: 0x200,
  header: 0x202,
  version: 0x206,
  type_of_loader: 0x210,
  loadflags: 0x211,
  code32_start: 0x214,
  ramdisk_image: 0x218,
  ramdisk_size: 0x21c,
  heap_end_ptr: 0x224,
  cmd_line_ptr: 0x228,
  initrd_addr_max: 0x22c,
  kernel_alignment: 0x230,
  relocatable_kernel: 0x234,
  min_alignment: 0x235,
  xloadflags: 0x236,
  cmdline_size: 0x238,
  pref_address: 0x258,
  init_size: 0x260,
  e820_table: 0x2d0,
  /** End of the area the setup header may occupy in boot_params. */
  hdr_area_end: 0x290,
} as const;
export const E820_MAX_ENTRIES_ZEROPAGE = 128;
export const ZERO_PAGE_SIZE = 4096;

/** Where the loader puts its own structures (as Firecracker does). */
export const LINUX_ZERO_PAGE = 0x7000;
export const LINUX_BOOT_STACK = 0x8ff0;
export const LINUX_PAGE_TABLES = 0x9000;
export const LINUX_CMDLINE = 0x20000;
export const LINUX_DEFAULT_LOAD = 0x100000;
export const TYPE_OF_LOADER_UNDEFINED = 0xff;

export interface SetupHeader {
  setupSects: number;
  syssize: number;
  version: number;
  loadflags: number;
  code32Start: number;
  initrdAddrMax: number;
  kernelAlignment: number;
  relocatable: boolean;
  xloadflags: number;
  cmdlineSize: number;
  prefAddress: bigint;
  initSize: number;
  /** Offset in the file of the protected-mode kernel ((setup_sects+1)*512). */
  kernelOffset: number;
  /** Length in the file of the protected-mode kernel. */
  kernelSize: number;
  /** Bytes of the setup header copied to the zero page (from 0x1f1). */
  headerLength: number;
}

const versionString = (v: number) => `${v >> 8}.${(v & 0xff).toString().padStart(2, '0')}`;

/** True when the bytes carry the boot protocol's "HdrS" signature. */
export function isBzImage(b: Uint8Array): boolean {
  return b.length >= 0x206 && new DataView(b.buffer, b.byteOffset, b.length).getUint32(BP.header, true) === HDRS_MAGIC;
}

/** Parses and checks the setup header; one clear LoaderError when corrupt. */
export function parseSetupHeader(b: Uint8Array, name = 'kernel'): SetupHeader {
  if (b.length < 0x264) {
    if (!isBzImage(b)) throw new LoaderError(`${name} is not a bzImage: no "HdrS" boot protocol signature at 0x202`);
    throw new LoaderError(`${name} is truncated: ${b.length} bytes, too short for a boot protocol setup header`);
  }
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  if (dv.getUint32(BP.header, true) !== HDRS_MAGIC) {
    throw new LoaderError(`${name} is not a bzImage: no "HdrS" boot protocol signature at 0x202`);
  }
  const version = dv.getUint16(BP.version, true);
  if (version < MIN_PROTOCOL) {
    throw new LoaderError(`${name} uses boot protocol ${versionString(version)}; ${versionString(MIN_PROTOCOL)} or later is required`);
  }
  const loadflags = dv.getUint8(BP.loadflags);
  if (!(loadflags & LOADED_HIGH)) throw new LoaderError(`${name} is a zImage (not LOADED_HIGH); only bzImage kernels are supported`);
  let setupSects = dv.getUint8(BP.setup_sects);
  if (setupSects === 0) setupSects = 4;
  const kernelOffset = (setupSects + 1) * 512;
  const syssize = dv.getUint32(BP.syssize, true);
  if (kernelOffset >= b.length) {
    throw new LoaderError(`${name} is truncated: setup code claims ${kernelOffset} bytes but the file has ${b.length}`);
  }
  // syssize counts 16-byte paragraphs of the protected-mode kernel.
  const declared = syssize * 16;
  if (declared > 0 && kernelOffset + declared > b.length) {
    throw new LoaderError(`${name} is truncated: the header declares ${kernelOffset + declared} bytes but the file has ${b.length}`);
  }
  const kernelSize = b.length - kernelOffset;
  const headerEnd = Math.min(0x202 + dv.getUint8(0x201), BP.hdr_area_end);
  const relocatable = dv.getUint8(BP.relocatable_kernel) !== 0;
  let kernelAlignment = dv.getUint32(BP.kernel_alignment, true);
  if (kernelAlignment === 0 || (kernelAlignment & (kernelAlignment - 1)) !== 0) {
    if (relocatable) throw new LoaderError(`${name} has an invalid kernel_alignment ${hex(kernelAlignment)}`);
    kernelAlignment = MIB;
  }
  return {
    setupSects,
    syssize,
    version,
    loadflags,
    code32Start: dv.getUint32(BP.code32_start, true),
    initrdAddrMax: dv.getUint32(BP.initrd_addr_max, true),
    kernelAlignment,
    relocatable,
    xloadflags: version >= 0x020c ? dv.getUint16(BP.xloadflags, true) : 0,
    cmdlineSize: dv.getUint32(BP.cmdline_size, true),
    prefAddress: version >= 0x020a ? dv.getBigUint64(BP.pref_address, true) : BigInt(LINUX_DEFAULT_LOAD),
    initSize: version >= 0x020a ? dv.getUint32(BP.init_size, true) : 0,
    kernelOffset,
    kernelSize,
    headerLength: Math.max(0, headerEnd - BP.hdr),
  };
}

/** Where the protected-mode kernel goes: pref_address when it fits, else
 * (relocatable kernels) the lowest kernel_alignment boundary from 1 MiB. */
function chooseLoadAddress(h: SetupHeader, lowmem: number, name: string): number {
  const span = Math.max(h.initSize, h.kernelSize);
  const pref = h.prefAddress <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(h.prefAddress) : Infinity;
  if (pref >= LINUX_DEFAULT_LOAD && pref + span <= lowmem) return pref;
  if (h.relocatable) {
    const a = alignUp(LINUX_DEFAULT_LOAD, h.kernelAlignment);
    if (a + span <= lowmem) return a;
  }
  const at = pref >= LINUX_DEFAULT_LOAD && pref !== Infinity ? pref : LINUX_DEFAULT_LOAD;
  throw new LoaderError(`${name} does not fit in guest memory: it needs ${hex(span)} bytes from ${hex(at)} but RAM below 4 GiB ends at ${hex(lowmem)}`);
}

export interface LinuxLoadResult extends LoadResult {
  header: SetupHeader;
  loadAddress: number;
  zeroPage: number;
  cmdlineAddress: number;
  initrdAddress?: number;
}

/** Loads a bzImage and builds its zero page; returns the boot vCPU state. */
export function loadBzImage(image: Uint8Array, o: LoadOptions): LinuxLoadResult {
  const name = o.kernelName ?? 'kernel';
  checkLayout(o.layout);
  const h = parseSetupHeader(image, name);
  if (o.modules && o.modules.length > 0) {
    throw new LoaderError(`${name} is a bzImage: modules are for Multiboot and PVH kernels (use initrd= for a bzImage)`);
  }
  const long = (h.xloadflags & XLF_KERNEL_64) !== 0;
  const alloc = new GuestAllocator(o.memory, o.layout);
  const loadAddress = chooseLoadAddress(h, o.layout.lowmem, name);
  const span = Math.max(h.initSize, h.kernelSize);
  alloc.reserve(loadAddress, span, 'kernel');
  alloc.write(loadAddress, image.subarray(h.kernelOffset));
  alloc.zero(loadAddress + h.kernelSize, span - h.kernelSize);

  // The zero page: all zero but for the setup header and what we fill in.
  alloc.reserve(LINUX_ZERO_PAGE, ZERO_PAGE_SIZE, 'zero page');
  alloc.zero(LINUX_ZERO_PAGE, ZERO_PAGE_SIZE);
  const zp = LINUX_ZERO_PAGE;
  const mem = o.memory;
  alloc.write(zp + BP.hdr, image.subarray(BP.hdr, BP.hdr + h.headerLength));
  mem.writeU8(zp + BP.type_of_loader, TYPE_OF_LOADER_UNDEFINED);
  if (!long) mem.writeU32(zp + BP.code32_start, loadAddress);
  mem.writeU16(zp + BP.vid_mode, 0xffff); // "normal"

  // Command line: cmdline_size excludes the terminating NUL.
  const cmdline = o.cmdline ?? '';
  const cmdBytes = Buffer.byteLength(cmdline, 'utf8');
  const maxCmd = h.cmdlineSize > 0 ? h.cmdlineSize : 255;
  if (cmdBytes > maxCmd) {
    throw new LoaderError(`command line is ${cmdBytes} bytes; ${name} accepts at most ${maxCmd}`);
  }
  alloc.reserve(LINUX_CMDLINE, cmdBytes + 1, 'command line');
  alloc.writeString(LINUX_CMDLINE, cmdline);
  mem.writeU32(zp + BP.cmd_line_ptr, LINUX_CMDLINE);

  // Boot stack and page tables (64-bit entry), GDT.
  alloc.reserve(LINUX_BOOT_STACK - 0x1000 + 0x10, 0x1000 - 0x10, 'boot stack');
  let initrdAddress: number | undefined;
  if (o.initrd && o.initrd.length > 0) {
    const max = Math.min(h.initrdAddrMax >>> 0 || 0x37ffffff, o.layout.lowmem - 1);
    const size = o.initrd.length;
    const addr = Math.floor((max + 1 - size) / PAGE) * PAGE;
    const kernelEnd = loadAddress + span;
    if (addr < kernelEnd) {
      throw new LoaderError(`initrd ${o.initrdName ?? ''}`.trimEnd() + ` (${size} bytes) does not fit in guest memory between the kernel end ${hex(kernelEnd)} and ${hex(max + 1)}`);
    }
    alloc.reserve(addr, size, 'initrd');
    alloc.write(addr, o.initrd);
    initrdAddress = addr;
    mem.writeU32(zp + BP.ramdisk_image, addr);
    mem.writeU32(zp + BP.ramdisk_size, size);
  }

  const map = guestMemoryMap(o.layout);
  mem.writeU8(zp + BP.e820_entries, map.length);
  map.forEach((e, i) => {
    const at = zp + BP.e820_table + i * 20;
    mem.writeU64(at, BigInt(e.addr));
    mem.writeU64(at + 8, BigInt(e.size));
    mem.writeU32(at + 16, e.type);
  });

  let state: BootState;
  let entry: number;
  if (long) {
    const cr3 = writeIdentityPageTables(alloc, LINUX_PAGE_TABLES);
    entry = loadAddress + 0x200;
    state = longModeState({
      entry: 'bzimage-64', rip: entry, gdtBase: 0x500, cr3,
      regs: { rsi: zp, rsp: LINUX_BOOT_STACK, rbp: LINUX_BOOT_STACK },
    });
  } else {
    entry = loadAddress;
    state = protectedModeState({
      entry: 'bzimage-32', rip: entry, gdtBase: 0x500,
      // boot.rst: %esi holds boot_params; %ebp, %edi and %ebx must be zero.
      regs: { rsi: zp, rsp: LINUX_BOOT_STACK },
    });
  }
  writeGdt(alloc, state);
  return {
    format: 'bzimage', state, placements: alloc.placements, entry,
    header: h, loadAddress, zeroPage: zp, cmdlineAddress: LINUX_CMDLINE, initrdAddress,
  };
}
