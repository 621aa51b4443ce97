// Just enough ELF (32- and 64-bit, little-endian x86) to load a kernel by its
// program headers: PT_LOAD segments at their physical addresses, PT_NOTE notes.

import { LoaderError, hex } from './errors.js';

export const PT_LOAD = 1;
export const PT_NOTE = 4;
export const EM_386 = 3;
export const EM_X86_64 = 62;

export interface ElfSegment {
  type: number;
  offset: number;
  vaddr: bigint;
  paddr: number;
  filesz: number;
  memsz: number;
}

export interface ElfNote {
  name: string;
  type: number;
  desc: Uint8Array;
}

export interface ElfImage {
  class: 32 | 64;
  machine: number;
  entry: bigint;
  segments: ElfSegment[];
}

export function isElf(b: Uint8Array): boolean {
  return b.length >= 16 && b[0] === 0x7f && b[1] === 0x45 && b[2] === 0x4c && b[3] === 0x46;
}

const big = (v: bigint, what: string, name: string): number => {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new LoaderError(`${name}: ${what} ${hex(v)} is out of range`);
  return Number(v);
};

export function parseElf(b: Uint8Array, name = 'kernel'): ElfImage {
  if (!isElf(b)) throw new LoaderError(`${name} is not an ELF file`);
  const cls = b[4];
  if (cls !== 1 && cls !== 2) throw new LoaderError(`${name}: unknown ELF class ${cls}`);
  if (b[5] !== 1) throw new LoaderError(`${name}: big-endian ELF is not an x86 kernel`);
  const is64 = cls === 2;
  const ehsize = is64 ? 64 : 52;
  if (b.length < ehsize) throw new LoaderError(`${name} is truncated: ELF header incomplete`);
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  const machine = dv.getUint16(18, true);
  const entry = is64 ? dv.getBigUint64(24, true) : BigInt(dv.getUint32(24, true));
  const phoff = is64 ? big(dv.getBigUint64(32, true), 'program header offset', name) : dv.getUint32(28, true);
  const phentsize = dv.getUint16(is64 ? 54 : 42, true);
  const phnum = dv.getUint16(is64 ? 56 : 44, true);
  if (phnum === 0) throw new LoaderError(`${name}: ELF file has no program headers`);
  if (phentsize < (is64 ? 56 : 32) || phoff + phnum * phentsize > b.length) {
    throw new LoaderError(`${name} is truncated: ELF program headers lie outside the file`);
  }
  const segments: ElfSegment[] = [];
  for (let i = 0; i < phnum; i++) {
    const p = phoff + i * phentsize;
    const seg: ElfSegment = is64
      ? {
          type: dv.getUint32(p, true),
          offset: big(dv.getBigUint64(p + 8, true), 'segment offset', name),
          vaddr: dv.getBigUint64(p + 16, true),
          paddr: big(dv.getBigUint64(p + 24, true), 'segment physical address', name),
          filesz: big(dv.getBigUint64(p + 32, true), 'segment size', name),
          memsz: big(dv.getBigUint64(p + 40, true), 'segment size', name),
        }
      : {
          type: dv.getUint32(p, true),
          offset: dv.getUint32(p + 4, true),
          vaddr: BigInt(dv.getUint32(p + 8, true)),
          paddr: dv.getUint32(p + 12, true),
          filesz: dv.getUint32(p + 16, true),
          memsz: dv.getUint32(p + 20, true),
        };
    if ((seg.type === PT_LOAD || seg.type === PT_NOTE) && seg.offset + seg.filesz > b.length) {
      throw new LoaderError(`${name} is truncated: segment ${i} (${seg.filesz} bytes at offset ${hex(seg.offset)}) lies outside the file`);
    }
    if (seg.type === PT_LOAD && seg.filesz > seg.memsz) {
      throw new LoaderError(`${name}: corrupt ELF segment ${i} (file size larger than memory size)`);
    }
    segments.push(seg);
  }
  return { class: is64 ? 64 : 32, machine, entry, segments };
}

/** The notes of every PT_NOTE segment. */
export function elfNotes(b: Uint8Array, elf: ElfImage): ElfNote[] {
  const notes: ElfNote[] = [];
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  for (const s of elf.segments) {
    if (s.type !== PT_NOTE) continue;
    let p = s.offset;
    const end = s.offset + s.filesz;
    while (p + 12 <= end) {
      const namesz = dv.getUint32(p, true);
      const descsz = dv.getUint32(p + 4, true);
      const type = dv.getUint32(p + 8, true);
      const nameAt = p + 12;
      const descAt = nameAt + ((namesz + 3) & ~3);
      const next = descAt + ((descsz + 3) & ~3);
      if (descAt + descsz > end || next < p) break;
      const name = Buffer.from(b.subarray(nameAt, nameAt + namesz)).toString('latin1').replace(/\0+$/, '');
      notes.push({ name, type, desc: b.subarray(descAt, descAt + descsz) });
      p = next;
    }
  }
  return notes;
}

/** Physical address of a virtual address inside a PT_LOAD segment, if any. */
export function virtToPhys(elf: ElfImage, vaddr: bigint): number | undefined {
  for (const s of elf.segments) {
    if (s.type === PT_LOAD && vaddr >= s.vaddr && vaddr < s.vaddr + BigInt(s.memsz)) return s.paddr + Number(vaddr - s.vaddr);
  }
  return undefined;
}
