// Kernel loaders without /dev/kvm: synthetic bzImage, PVH ELF and Multiboot
// images loaded into a GuestMemory over plain buffers.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

import {
  BOOT_CS, BOOT_DS, encodeDescriptor, flatCode64, flatData, fromHex, parseBootState, regValue,
} from '../../src/loader/boot-state.js';
import { LoaderError } from '../../src/loader/errors.js';
import { E820_RAM, E820_RESERVED, guestMemoryMap } from '../../src/loader/guest-layout.js';
import { detectKernelFormat, kernelRequestFromEnv, loadFromSource, loadKernel, selectLoader } from '../../src/loader/index.js';
import { BP, loadBzImage, parseSetupHeader } from '../../src/loader/linux.js';
import { loadMultiboot, MBI, MULTIBOOT_BOOTLOADER_MAGIC } from '../../src/loader/multiboot.js';
import { HVM_START_INFO, loadPvh, XEN_HVM_START_MAGIC_VALUE } from '../../src/loader/pvh.js';
import { HostDirSource } from '../../src/loader/source.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { computeLayout } from '../../src/sys/memory-map.js';

const M = 1024 * 1024;
const G = 1024 * M;

function guest(size = 64 * M) {
  const layout = computeLayout(size);
  const memory = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(layout.lowmem) }]);
  return { memory, layout };
}

const cstr = (mem: GuestMemory, at: number): string => {
  let s = '';
  for (let a = at; ; a++) {
    const c = mem.readU8(a);
    if (c === 0) return s;
    s += String.fromCharCode(c);
  }
};

interface BzOptions {
  version?: number;
  xloadflags?: number;
  pref?: bigint;
  initSize?: number;
  relocatable?: number;
  payload?: number;
  syssize?: number;
  magic?: string;
  loadflags?: number;
}

function bzImage(o: BzOptions = {}): Uint8Array {
  const setupSects = 4;
  const payload = o.payload ?? 8192;
  const b = new Uint8Array((setupSects + 1) * 512 + payload);
  const dv = new DataView(b.buffer);
  b[BP.setup_sects] = setupSects;
  dv.setUint32(BP.syssize, o.syssize ?? payload / 16, true);
  dv.setUint16(BP.boot_flag, 0xaa55, true);
  b[0x200] = 0xeb; b[0x201] = 0x66; // jump: the header ends at 0x268
  b.set(Buffer.from(o.magic ?? 'HdrS', 'latin1'), BP.header);
  dv.setUint16(BP.version, o.version ?? 0x020f, true);
  b[BP.loadflags] = o.loadflags ?? 1;
  dv.setUint32(BP.code32_start, 0x100000, true);
  dv.setUint32(BP.initrd_addr_max, 0x7fffffff, true);
  dv.setUint32(BP.kernel_alignment, 0x200000, true);
  b[BP.relocatable_kernel] = o.relocatable ?? 1;
  dv.setUint16(BP.xloadflags, o.xloadflags ?? 3, true);
  dv.setUint32(BP.cmdline_size, 2047, true);
  dv.setBigUint64(BP.pref_address, o.pref ?? 0x1000000n, true);
  dv.setUint32(BP.init_size, o.initSize ?? 0x40000, true);
  for (let i = 0; i < payload; i++) b[(setupSects + 1) * 512 + i] = (i * 7 + 3) & 0xff;
  return b;
}

describe('boot state', () => {
  it('encodes the flat GDT descriptors Linux expects', () => {
    expect(encodeDescriptor(flatCode64())).toBe(0x00af9b000000ffffn);
    expect(encodeDescriptor(flatData())).toBe(0x00cf93000000ffffn);
  });
  it('survives JSON and is validated when read back', () => {
    const { memory, layout } = guest();
    const r = loadBzImage(bzImage(), { memory, layout });
    const back = parseBootState(JSON.parse(JSON.stringify(r.state)));
    expect(back).toEqual(r.state);
    expect(regValue(back, 'rip')).toBe(0x1000200n);
    expect(() => parseBootState({ ...r.state, version: 9 })).toThrow(/unsupported version/);
    expect(() => parseBootState({ ...r.state, regs: { rip: 12 } })).toThrow(/hex strings/);
    expect(() => parseBootState({ ...r.state, sregs: { ...r.state.sregs, cs: undefined } })).toThrow(/segment cs/);
  });
});

describe('memory map', () => {
  it('reports usable RAM with the legacy hole reserved, and highmem above 4 GiB', () => {
    expect(guestMemoryMap(computeLayout(8 * G))).toEqual([
      { addr: 0, size: 0xa0000, type: E820_RAM },
      { addr: 0xa0000, size: 0x60000, type: E820_RESERVED },
      { addr: 0x100000, size: 3 * G - 0x100000, type: E820_RAM },
      { addr: 4 * G, size: 5 * G, type: E820_RAM },
    ]);
  });
});

describe('Linux boot protocol (bzImage)', () => {
  it('parses the setup header', () => {
    const h = parseSetupHeader(bzImage());
    expect(h).toMatchObject({ setupSects: 4, version: 0x020f, kernelOffset: 2560, kernelSize: 8192, relocatable: true,
      prefAddress: 0x1000000n, initSize: 0x40000, cmdlineSize: 2047, headerLength: 0x268 - 0x1f1 });
  });

  it('loads kernel, zero page, command line, initrd, e820 and page tables; enters at startup_64', () => {
    const { memory, layout } = guest(64 * M);
    const img = bzImage();
    const initrd = new Uint8Array(10000).map((_, i) => (i * 13) & 0xff);
    const r = loadBzImage(img, { memory, layout, cmdline: 'console=ttyS0 root=/dev/vda', initrd });
    // Kernel at pref_address.
    expect(r.loadAddress).toBe(0x1000000);
    expect(memory.read(0x1000000, 8192)).toEqual(img.subarray(2560));
    // Zero page: setup header copy and our fields.
    const zp = 0x7000;
    expect(r.zeroPage).toBe(zp);
    expect(memory.read(zp + 0x1f1, 0x268 - 0x1f1 - 0x40)).toEqual(Uint8Array.from(img.subarray(0x1f1, 0x268 - 0x40)).map((v, i) => {
      const off = 0x1f1 + i;
      if (off === BP.type_of_loader) return 0xff;
      if (off >= BP.vid_mode && off < BP.vid_mode + 2) return 0xff;
      if (off >= BP.cmd_line_ptr && off < BP.cmd_line_ptr + 4) return memory.readU8(zp + off);
      if (off >= BP.ramdisk_image && off < BP.ramdisk_image + 8) return memory.readU8(zp + off);
      return v;
    }));
    expect(memory.readU32(zp + BP.header)).toBe(0x53726448);
    expect(memory.readU8(zp + BP.type_of_loader)).toBe(0xff);
    expect(memory.readU32(zp + BP.cmd_line_ptr)).toBe(0x20000);
    expect(cstr(memory, 0x20000)).toBe('console=ttyS0 root=/dev/vda');
    // Initrd: as high as allowed, page-aligned, below lowmem end.
    const expectAt = Math.floor((64 * M - 10000) / 4096) * 4096;
    expect(r.initrdAddress).toBe(expectAt);
    expect(memory.readU32(zp + BP.ramdisk_image)).toBe(expectAt);
    expect(memory.readU32(zp + BP.ramdisk_size)).toBe(10000);
    expect(memory.read(expectAt, 10000)).toEqual(initrd);
    // e820.
    expect(memory.readU8(zp + BP.e820_entries)).toBe(3);
    const e820 = [0, 1, 2].map((i) => {
      const a = zp + BP.e820_table + i * 20;
      return [memory.readU64(a), memory.readU64(a + 8), memory.readU32(a + 16)];
    });
    expect(e820).toEqual([[0n, 0xa0000n, 1], [0xa0000n, 0x60000n, 2], [0x100000n, BigInt(63 * M), 1]]);
    // Page tables: identity map of 4 GiB with 2 MiB pages.
    const cr3 = Number(fromHex(r.state.sregs.cr3));
    const pml4e = memory.readU64(cr3);
    expect(pml4e & 0xfffn).toBe(3n);
    const pdpt = Number(pml4e & ~0xfffn);
    for (let i = 0; i < 4; i++) {
      const pd = Number(memory.readU64(pdpt + i * 8) & ~0xfffn);
      expect(memory.readU64(pd)).toBe((BigInt(i) << 30n) | 0x83n);
      expect(memory.readU64(pd + 511 * 8)).toBe((BigInt(i) << 30n) | (511n << 21n) | 0x83n);
    }
    expect(memory.readU64(pdpt + 4 * 8)).toBe(0n);
    // vCPU state for the 64-bit entry.
    const s = r.state;
    expect(s.entry).toBe('bzimage-64');
    expect(regValue(s, 'rip')).toBe(0x1000200n);
    expect(regValue(s, 'rsi')).toBe(BigInt(zp));
    expect(regValue(s, 'rflags')).toBe(2n);
    expect(s.sregs.cs).toMatchObject({ selector: BOOT_CS, l: 1, db: 0, type: 11, s: 1, present: 1 });
    expect(s.sregs.ds).toMatchObject({ selector: BOOT_DS, type: 3, db: 1 });
    expect(s.sregs.ss.selector).toBe(BOOT_DS);
    expect(fromHex(s.sregs.cr0) & 0x80000001n).toBe(0x80000001n);
    expect(fromHex(s.sregs.cr4) & 0x20n).toBe(0x20n);
    expect(fromHex(s.sregs.efer)).toBe(0x500n);
    // The GDT in memory matches the segments.
    const gdt = Number(fromHex(s.sregs.gdt.base));
    expect(memory.readU64(gdt + BOOT_CS)).toBe(0x00af9b000000ffffn);
    expect(memory.readU64(gdt + BOOT_DS)).toBe(0x00cf93000000ffffn);
  });

  it('uses the 32-bit entry when XLF_KERNEL_64 is absent', () => {
    const { memory, layout } = guest(64 * M);
    const r = loadBzImage(bzImage({ xloadflags: 0 }), { memory, layout });
    expect(r.state.entry).toBe('bzimage-32');
    expect(regValue(r.state, 'rip')).toBe(0x1000000n);
    expect(regValue(r.state, 'rsi')).toBe(0x7000n);
    expect(regValue(r.state, 'rbx')).toBe(0n);
    expect(memory.readU32(0x7000 + BP.code32_start)).toBe(0x1000000);
    expect(r.state.sregs.cs).toMatchObject({ l: 0, db: 1, selector: BOOT_CS });
    expect(fromHex(r.state.sregs.cr0) & 0x80000001n).toBe(1n);
    expect(fromHex(r.state.sregs.efer)).toBe(0n);
  });

  it('relocates a relocatable kernel when pref_address does not fit', () => {
    const { memory, layout } = guest(8 * M);
    const r = loadBzImage(bzImage({ pref: 0x1000000n }), { memory, layout });
    expect(r.loadAddress).toBe(0x200000);
  });

  it('rejects corrupt images with one clear message', () => {
    const { memory, layout } = guest(64 * M);
    const bad = (img: Uint8Array, re: RegExp, mem = { memory, layout }) =>
      expect(() => loadBzImage(img, { ...mem, kernelName: '/boot/vmlinuz' })).toThrow(re);
    bad(bzImage({ magic: 'NoPe' }), /^\/boot\/vmlinuz is not a bzImage/);
    bad(bzImage({ version: 0x0204 }), /boot protocol 2\.04; 2\.06 or later is required/);
    bad(bzImage({ syssize: 0x10000 }), /truncated: the header declares/);
    bad(bzImage().subarray(0, 0x250), /truncated/);
    bad(bzImage({ loadflags: 0 }), /zImage/);
    bad(bzImage({ relocatable: 0, initSize: 60 * M }), /does not fit in guest memory/);
    bad(bzImage({ relocatable: 0 }), /does not fit in guest memory/, guest(16 * M));
    expect(() => loadBzImage(bzImage(), { memory, layout, cmdline: 'x'.repeat(3000) })).toThrow(/command line is 3000 bytes/);
    expect(() => loadBzImage(bzImage(), { memory, layout, initrd: new Uint8Array(63 * M) })).toThrow(/initrd.*does not fit/);
    expect(() => loadBzImage(bzImage(), { memory, layout, modules: [{ name: 'm', bytes: new Uint8Array(1) }] })).toThrow(/modules are for/);
  });
});

// --- ELF builders -------------------------------------------------------

interface Seg { type: number; paddr: number; vaddr?: number; data: Uint8Array; memsz?: number }

function elf(o: { cls: 32 | 64; entry: number; segs: Seg[] }): Uint8Array {
  const is64 = o.cls === 64;
  const eh = is64 ? 64 : 52;
  const ph = is64 ? 56 : 32;
  let off = eh + ph * o.segs.length;
  const offsets = o.segs.map((s) => { const at = off; off += s.data.length; return at; });
  const b = new Uint8Array(off);
  const dv = new DataView(b.buffer);
  b.set([0x7f, 0x45, 0x4c, 0x46, is64 ? 2 : 1, 1, 1]);
  dv.setUint16(16, 2, true);
  dv.setUint16(18, is64 ? 62 : 3, true);
  dv.setUint32(20, 1, true);
  if (is64) {
    dv.setBigUint64(24, BigInt(o.entry), true);
    dv.setBigUint64(32, BigInt(eh), true);
    dv.setUint16(52, eh, true); dv.setUint16(54, ph, true); dv.setUint16(56, o.segs.length, true);
  } else {
    dv.setUint32(24, o.entry, true);
    dv.setUint32(28, eh, true);
    dv.setUint16(40, eh, true); dv.setUint16(42, ph, true); dv.setUint16(44, o.segs.length, true);
  }
  o.segs.forEach((s, i) => {
    const p = eh + i * ph;
    const memsz = s.memsz ?? s.data.length;
    if (is64) {
      dv.setUint32(p, s.type, true);
      dv.setBigUint64(p + 8, BigInt(offsets[i]), true);
      dv.setBigUint64(p + 16, BigInt(s.vaddr ?? s.paddr), true);
      dv.setBigUint64(p + 24, BigInt(s.paddr), true);
      dv.setBigUint64(p + 32, BigInt(s.data.length), true);
      dv.setBigUint64(p + 40, BigInt(memsz), true);
    } else {
      dv.setUint32(p, s.type, true);
      dv.setUint32(p + 4, offsets[i], true);
      dv.setUint32(p + 8, s.vaddr ?? s.paddr, true);
      dv.setUint32(p + 12, s.paddr, true);
      dv.setUint32(p + 16, s.data.length, true);
      dv.setUint32(p + 20, memsz, true);
    }
    b.set(s.data, offsets[i]);
  });
  return b;
}

function note(name: string, type: number, desc: Uint8Array): Uint8Array {
  const n = Buffer.from(name + '\0', 'latin1');
  const pad = (x: number) => (x + 3) & ~3;
  const b = new Uint8Array(12 + pad(n.length) + pad(desc.length));
  const dv = new DataView(b.buffer);
  dv.setUint32(0, n.length, true); dv.setUint32(4, desc.length, true); dv.setUint32(8, type, true);
  b.set(n, 12); b.set(desc, 12 + pad(n.length));
  return b;
}

const u32le = (v: number) => { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, v, true); return b; };
const code = new Uint8Array(0x300).map((_, i) => (i * 5 + 1) & 0xff);

function pvhElf(cls: 32 | 64 = 64): Uint8Array {
  return elf({
    cls, entry: 0xffffffff, segs: [
      { type: 4, paddr: 0, data: Uint8Array.from([...note('GNU', 3, new Uint8Array(8)), ...note('Xen', 18, u32le(0x100040))]) },
      { type: 1, paddr: 0x100000, vaddr: cls === 64 ? 0 : 0xc0100000, data: code, memsz: 0x2000 },
    ],
  });
}

describe('PVH', () => {
  for (const cls of [64, 32] as const) {
    it(`loads an ELF${cls} kernel by its PVH note and builds hvm_start_info`, () => {
      const { memory, layout } = guest(64 * M);
      memory.slice(0x100000, 0x2000).fill(0xcc);
      const initrd = new Uint8Array(5000).fill(0x5a);
      const r = loadPvh(pvhElf(cls), {
        memory, layout, cmdline: 'console=hvc0', initrd,
        modules: [{ name: 'extra', bytes: new Uint8Array(100).fill(7), cmdline: 'extra arg=1' }],
      });
      expect(memory.read(0x100000, code.length)).toEqual(code);
      expect(memory.read(0x100000 + code.length, 0x2000 - code.length).every((x) => x === 0)).toBe(true);
      const si = r.startInfo;
      expect(memory.readU32(si + HVM_START_INFO.magic)).toBe(XEN_HVM_START_MAGIC_VALUE);
      expect(memory.readU32(si + HVM_START_INFO.version)).toBe(1);
      expect(memory.readU32(si + HVM_START_INFO.nr_modules)).toBe(2);
      expect(memory.readU64(si + HVM_START_INFO.rsdp_paddr)).toBe(0n);
      expect(cstr(memory, Number(memory.readU64(si + HVM_START_INFO.cmdline_paddr)))).toBe('console=hvc0');
      const modlist = Number(memory.readU64(si + HVM_START_INFO.modlist_paddr));
      const m0 = Number(memory.readU64(modlist));
      expect(memory.readU64(modlist + 8)).toBe(5000n);
      expect(memory.readU64(modlist + 16)).toBe(0n);
      expect(m0 % 4096).toBe(0);
      expect(memory.read(m0, 5000)).toEqual(initrd);
      const m1 = Number(memory.readU64(modlist + 32));
      expect(memory.read(m1, 100).every((x) => x === 7)).toBe(true);
      expect(cstr(memory, Number(memory.readU64(modlist + 48)))).toBe('extra arg=1');
      const mm = Number(memory.readU64(si + HVM_START_INFO.memmap_paddr));
      expect(memory.readU32(si + HVM_START_INFO.memmap_entries)).toBe(3);
      expect([memory.readU64(mm + 48), memory.readU64(mm + 56), memory.readU32(mm + 64)]).toEqual([0x100000n, BigInt(63 * M), 1]);
      expect(memory.readU32(mm + 24 + 16)).toBe(2);
      const s = r.state;
      expect(s.entry).toBe('pvh');
      expect(regValue(s, 'rip')).toBe(0x100040n);
      expect(regValue(s, 'rbx')).toBe(BigInt(si));
      expect(s.sregs.cs).toMatchObject({ db: 1, l: 0, selector: BOOT_CS, base: '0x0', limit: 0xffffffff });
      expect(fromHex(s.sregs.cr0)).toBe(0x11n);
      expect(fromHex(s.sregs.cr4)).toBe(0n);
      expect(fromHex(s.sregs.efer)).toBe(0n);
    });
  }

  it('refuses segments outside guest memory and ELF files without the note', () => {
    const { memory, layout } = guest(8 * M);
    const far = elf({ cls: 64, entry: 0, segs: [
      { type: 4, paddr: 0, data: note('Xen', 18, u32le(0x100000)) },
      { type: 1, paddr: 0x7f0000, data: code, memsz: 0x100000 },
    ] });
    expect(() => loadPvh(far, { memory, layout })).toThrow(/segment 1 at 0x7f0000-0x8f0000 does not fit in guest memory/);
    const plain = elf({ cls: 64, entry: 0x100000, segs: [{ type: 1, paddr: 0x100000, data: code }] });
    expect(() => loadPvh(plain, { memory, layout })).toThrow(/without a PVH entry note/);
    expect(() => selectLoader(plain, '/boot/plain')).toThrow('kernel /boot/plain is not a bzImage, PVH ELF or Multiboot image');
    expect(() => loadPvh(pvhElf().subarray(0, 200), { memory, layout })).toThrow(/truncated/);
  });
});

describe('Multiboot v1', () => {
  function aout(flags = 0x10003): Uint8Array {
    const b = new Uint8Array(0x1000);
    const dv = new DataView(b.buffer);
    const off = 0x40;
    dv.setUint32(off, 0x1badb002, true);
    dv.setUint32(off + 4, flags, true);
    dv.setUint32(off + 8, (-(0x1badb002 + flags)) >>> 0, true);
    dv.setUint32(off + 12, 0x100040, true); // header_addr
    dv.setUint32(off + 16, 0x100000, true); // load_addr
    dv.setUint32(off + 20, 0x100800, true); // load_end_addr
    dv.setUint32(off + 24, 0x103000, true); // bss_end_addr
    dv.setUint32(off + 28, 0x100100, true); // entry_addr
    for (let i = 0x100; i < 0x1000; i++) b[i] = i & 0xff;
    return b;
  }

  it('loads an a.out-kludge kernel with modules and builds the information structure', () => {
    const { memory, layout } = guest(64 * M);
    memory.slice(0x100000, 0x3000).fill(0xee);
    const img = aout();
    const r = loadMultiboot(img, {
      memory, layout, cmdline: 'kernel -v',
      modules: [
        { name: '/boot/mod0', bytes: new Uint8Array(3000).fill(1), cmdline: '/boot/mod0 a=1 b' },
        { name: '/boot/mod1', bytes: new Uint8Array(10).fill(2), cmdline: '/boot/mod1' },
      ],
    });
    expect(memory.read(0x100000, 0x800)).toEqual(img.subarray(0, 0x800));
    expect(memory.read(0x100800, 0x2800).every((x) => x === 0)).toBe(true);
    const s = r.state;
    expect(s.entry).toBe('multiboot');
    expect(regValue(s, 'rax')).toBe(BigInt(MULTIBOOT_BOOTLOADER_MAGIC));
    expect(regValue(s, 'rip')).toBe(0x100100n);
    expect(regValue(s, 'rbx')).toBe(BigInt(r.info));
    expect(s.sregs.cs).toMatchObject({ db: 1, l: 0, base: '0x0', limit: 0xffffffff });
    expect(fromHex(s.sregs.cr0) & 0x80000001n).toBe(1n);
    const mbi = r.info;
    const flags = memory.readU32(mbi + MBI.flags);
    expect(flags).toBe((1 << 0) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9));
    expect(memory.readU32(mbi + MBI.mem_lower)).toBe(640);
    expect(memory.readU32(mbi + MBI.mem_upper)).toBe(63 * 1024);
    expect(cstr(memory, memory.readU32(mbi + MBI.cmdline))).toBe('kernel -v');
    expect(cstr(memory, memory.readU32(mbi + MBI.boot_loader_name))).toBe('bhyveload');
    expect(memory.readU32(mbi + MBI.mods_count)).toBe(2);
    const mods = memory.readU32(mbi + MBI.mods_addr);
    const m0 = memory.readU32(mods);
    expect(m0 % 4096).toBe(0);
    expect(m0).toBeGreaterThanOrEqual(0x103000);
    expect(memory.readU32(mods + 4)).toBe(m0 + 3000);
    expect(memory.read(m0, 3000).every((x) => x === 1)).toBe(true);
    expect(cstr(memory, memory.readU32(mods + 8))).toBe('/boot/mod0 a=1 b');
    const m1 = memory.readU32(mods + 16);
    expect(m1 % 4096).toBe(0);
    expect(m1).toBeGreaterThanOrEqual(m0 + 3000);
    expect(memory.read(m1, 10).every((x) => x === 2)).toBe(true);
    expect(cstr(memory, memory.readU32(mods + 24))).toBe('/boot/mod1');
    const mmapLen = memory.readU32(mbi + MBI.mmap_length);
    const mmap = memory.readU32(mbi + MBI.mmap_addr);
    expect(mmapLen).toBe(3 * 24);
    expect(memory.readU32(mmap)).toBe(20);
    expect([memory.readU64(mmap + 4), memory.readU64(mmap + 12), memory.readU32(mmap + 20)]).toEqual([0n, 0xa0000n, 1]);
    expect([memory.readU64(mmap + 48 + 4), memory.readU64(mmap + 48 + 12), memory.readU32(mmap + 48 + 20)]).toEqual([0x100000n, BigInt(63 * M), 1]);
  });

  it('loads an ELF Multiboot kernel by its program headers, entry translated to physical', () => {
    const { memory, layout } = guest(16 * M);
    const hdr = new Uint8Array(12);
    new DataView(hdr.buffer).setUint32(0, 0x1badb002, true);
    new DataView(hdr.buffer).setUint32(4, 3, true);
    new DataView(hdr.buffer).setUint32(8, (-(0x1badb002 + 3)) >>> 0, true);
    const img = elf({ cls: 32, entry: 0xc0100010, segs: [
      { type: 1, paddr: 0x100000, vaddr: 0xc0100000, data: Uint8Array.from([...hdr, ...code]), memsz: 0x1000 },
    ] });
    expect(detectKernelFormat(img)).toBe('multiboot');
    const r = loadKernel(img, { memory, layout, cmdline: '' });
    expect(r.format).toBe('multiboot');
    expect(r.entry).toBe(0x100010);
    expect(memory.read(0x100000, 12)).toEqual(hdr);
  });

  it('loads an ELF Multiboot kernel linked without -N: the first PT_LOAD (ELF headers) at 0xff000, in the legacy range', () => {
    // ld -m elf_i386 -Ttext=0x100000: headers in a page of their own below
    // 1 MiB, .text at 1 MiB, all in one segment from file offset 0.
    const { memory, layout } = guest(16 * M);
    const hdr = new Uint8Array(12);
    new DataView(hdr.buffer).setUint32(0, 0x1badb002, true);
    new DataView(hdr.buffer).setUint32(4, 3, true);
    new DataView(hdr.buffer).setUint32(8, (-(0x1badb002 + 3)) >>> 0, true);
    const page = new Uint8Array(0x1000 + 0x100);
    page.set(hdr, 0x1000);
    page.set(code.subarray(0, 0x100 - 12), 0x1000 + 12);
    const img = elf({ cls: 32, entry: 0x10000c, segs: [{ type: 1, paddr: 0xff000, data: page, memsz: 0x3000 }] });
    const r = loadKernel(img, { memory, layout, cmdline: 'x' });
    expect(r.entry).toBe(0x10000c);
    expect(memory.read(0xff000, page.length)).toEqual(page);
    expect(r.placements.find((p) => p.addr === 0xff000)).toMatchObject({ size: 0x3000 });
    // The loader's own structures stay out of 0xA0000-0xFFFFF.
    const mine = r.placements.filter((p) => p.addr !== 0xff000);
    expect(mine.every((p) => p.addr + p.size <= 0xa0000 || p.addr >= 0x100000)).toBe(true);
    // An a.out-kludge kernel asking for the legacy range is loaded there too.
    const a = aout();
    const dv = new DataView(a.buffer);
    dv.setUint32(0x40 + 12, 0xf0040, true);
    dv.setUint32(0x40 + 16, 0xf0000, true);
    dv.setUint32(0x40 + 20, 0xf0800, true);
    dv.setUint32(0x40 + 24, 0xf3000, true);
    dv.setUint32(0x40 + 28, 0xf0100, true);
    dv.setUint32(0x48, (-(0x1badb002 + 0x10003)) >>> 0, true);
    const g2 = guest(16 * M);
    expect(loadMultiboot(a, { memory: g2.memory, layout: g2.layout }).entry).toBe(0xf0100);
    expect(g2.memory.read(0xf0000, 0x800)).toEqual(a.subarray(0, 0x800));
  });

  it('refuses bad headers clearly', () => {
    const { memory, layout } = guest(16 * M);
    const img = aout();
    new DataView(img.buffer).setUint32(0x48, 0, true); // break the checksum
    expect(detectKernelFormat(img)).toBeUndefined();
    expect(() => loadMultiboot(img, { memory, layout })).toThrow(/no valid header in its first 8192 bytes/);
    expect(() => loadMultiboot(aout(0x10000 | 0x8), { memory, layout })).toThrow(/features we do not provide/);
    const trunc = aout().subarray(0, 0x400);
    expect(() => loadMultiboot(trunc, { memory, layout })).toThrow(/truncated/);
  });
});

describe('format detection', () => {
  it('tells bzImage, Multiboot and PVH apart, and names the file otherwise', () => {
    expect(detectKernelFormat(bzImage())).toBe('bzimage');
    expect(detectKernelFormat(pvhElf())).toBe('pvh');
    expect(selectLoader(pvhElf()).format).toBe('pvh');
    expect(() => selectLoader(new Uint8Array(100), 'junk.bin')).toThrow(LoaderError);
    expect(() => selectLoader(new Uint8Array(100), 'junk.bin')).toThrow('kernel junk.bin is not a bzImage, PVH ELF or Multiboot image');
  });
});

describe('host directory source', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'loader-src-'));
  const outside = fs.mkdtempSync(path.join(os.tmpdir(), 'loader-out-'));
  fs.mkdirSync(path.join(root, 'boot'));
  fs.writeFileSync(path.join(root, 'boot', 'vmlinuz'), 'KERNEL');
  fs.writeFileSync(path.join(outside, 'secret'), 'SECRET');
  fs.symlinkSync('vmlinuz', path.join(root, 'boot', 'current'));
  fs.symlinkSync(path.join(outside, 'secret'), path.join(root, 'boot', 'abs-escape'));
  fs.symlinkSync('../../' + path.basename(outside) + '/secret', path.join(root, 'boot', 'rel-escape'));
  const src = new HostDirSource(root);

  it('reads files inside the root, absolute or relative paths, symlinks that stay inside', () => {
    expect(Buffer.from(src.readFile('/boot/vmlinuz', 'kernel')).toString()).toBe('KERNEL');
    expect(Buffer.from(src.readFile('boot/current', 'kernel')).toString()).toBe('KERNEL');
    expect(Buffer.from(src.readFile('/boot/../boot/vmlinuz', 'kernel')).toString()).toBe('KERNEL');
  });
  it('never escapes it', () => {
    expect(() => src.readFile('../' + path.basename(outside) + '/secret', 'kernel')).toThrow(/^kernel \.\.\/.* is outside the host path/);
    expect(() => src.readFile('/boot/../../etc/passwd', 'kernel')).toThrow(/is outside the host path/);
    expect(() => src.readFile('/boot/abs-escape', 'initrd')).toThrow(/^initrd \/boot\/abs-escape is outside the host path .* symbolic link/);
    expect(() => src.readFile('/boot/rel-escape', 'kernel')).toThrow(/is outside the host path/);
    expect(() => src.readFile('/boot/missing', 'kernel')).toThrow(/^kernel \/boot\/missing: No such file or directory/);
    expect(() => src.readFile('/boot', 'kernel')).toThrow(/not a regular file/);
    expect(() => new HostDirSource(path.join(root, 'nope'))).toThrow(/^host path .*nope: No such file or directory$/);
  });
});

describe('bhyveload -e variables', () => {
  it('turn into a kernel request, modules numbered from 0', () => {
    expect(kernelRequestFromEnv({ kernel: '/boot/k', cmdline: 'a b', 'module.1': '/m1', 'module.0': '/m0 x=1  y' })).toEqual({
      kernel: '/boot/k', initrd: undefined, cmdline: 'a b',
      modules: [{ path: '/m0', cmdline: '/m0 x=1  y' }, { path: '/m1', cmdline: '/m1' }],
    });
    expect(() => kernelRequestFromEnv({})).toThrow('no kernel to load: give -e kernel=PATH');
    expect(() => kernelRequestFromEnv({ kernel: 'k', 'module.1': 'x' })).toThrow(/module\.0 is missing/);
    expect(() => kernelRequestFromEnv({ kernel: 'k', 'module.x': 'x' })).toThrow(/bad module variable/);
  });

  it('load a Multiboot kernel and its modules from a host path', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'loader-req-'));
    const b = new Uint8Array(0x1000);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, 0x1badb002, true); dv.setUint32(4, 0x10000, true); dv.setUint32(8, (-(0x1badb002 + 0x10000)) >>> 0, true);
    dv.setUint32(12, 0x200000, true); dv.setUint32(16, 0x200000, true); dv.setUint32(28, 0x200020, true);
    fs.writeFileSync(path.join(root, 'kern'), b);
    fs.writeFileSync(path.join(root, 'mod'), 'MODULE');
    const { memory, layout } = guest(16 * M);
    const r = loadFromSource(kernelRequestFromEnv({ kernel: '/kern', 'module.0': '/mod arg', cmdline: 'hi' }), new HostDirSource(root), memory, layout);
    expect(r.format).toBe('multiboot');
    expect(r.entry).toBe(0x200020);
    const mods = memory.readU32((r as unknown as { info: number }).info + MBI.mods_addr);
    expect(Buffer.from(memory.read(memory.readU32(mods), 6)).toString()).toBe('MODULE');
    expect(cstr(memory, memory.readU32(mods + 8))).toBe('/mod arg');
    expect(() => loadFromSource(kernelRequestFromEnv({ kernel: '/mod' }), new HostDirSource(root), memory, layout))
      .toThrow('kernel /mod is not a bzImage, PVH ELF or Multiboot image');
  });
});
