// Partition tables of a disk image: MBR (primary partitions) and GPT, so a
// filesystem can be found inside a partitioned disk.

import { type BlockReader, SliceReader, u32, u64 } from './block.js';

export interface Partition {
  index: number;
  offset: number;
  size: number;
  scheme: 'mbr' | 'gpt';
}

const SECTOR = 512;
const MBR_GPT_PROTECTIVE = 0xee;
const MBR_EXTENDED = new Set([0x05, 0x0f, 0x85]);

export function listPartitions(r: BlockReader): Partition[] {
  if (r.size < 2 * SECTOR) return [];
  const mbr = r.read(0, SECTOR);
  if (mbr[510] !== 0x55 || mbr[511] !== 0xaa) return [];
  const out: Partition[] = [];
  let protective = false;
  for (let i = 0; i < 4; i++) {
    const e = 446 + i * 16;
    const type = mbr[e + 4];
    const lba = u32(mbr, e + 8);
    const count = u32(mbr, e + 12);
    if (type === 0 || count === 0) continue;
    if (type === MBR_GPT_PROTECTIVE) { protective = true; continue; }
    if (MBR_EXTENDED.has(type)) continue;
    if ((lba + count) * SECTOR <= r.size) out.push({ index: i + 1, offset: lba * SECTOR, size: count * SECTOR, scheme: 'mbr' });
  }
  if (protective) return listGpt(r);
  return out;
}

function listGpt(r: BlockReader): Partition[] {
  const hdr = r.read(SECTOR, SECTOR);
  if (Buffer.from(hdr.subarray(0, 8)).toString('latin1') !== 'EFI PART') return [];
  const entriesLba = u64(hdr, 72);
  const count = Math.min(u32(hdr, 80), 256);
  const entrySize = u32(hdr, 84);
  if (entrySize < 128 || (entriesLba * SECTOR) + count * entrySize > r.size) return [];
  const table = r.read(entriesLba * SECTOR, count * entrySize);
  const out: Partition[] = [];
  for (let i = 0; i < count; i++) {
    const e = i * entrySize;
    if (table.subarray(e, e + 16).every((x) => x === 0)) continue;
    const first = u64(table, e + 32);
    const last = u64(table, e + 40);
    if (last < first || (last + 1) * SECTOR > r.size) continue;
    out.push({ index: i + 1, offset: first * SECTOR, size: (last - first + 1) * SECTOR, scheme: 'gpt' });
  }
  return out;
}

export function partitionReader(r: BlockReader, p: Partition): BlockReader {
  return new SliceReader(r, p.offset, p.size);
}
