// ISO 9660 (ECMA-119) read-only access: the Primary Volume Descriptor at
// sector 16, path lookup through directory records, Rock Ridge names (NM) and
// symbolic links (SL), and Joliet (UCS-2 names) when there is no Rock Ridge.

import { type BlockReader, type FileSystem, pathComponents, u32 } from './block.js';
import { LoaderError } from './errors.js';

const SECTOR = 2048;
const VD_START = 16;

interface DirRecord {
  extent: number;
  size: number;
  isDir: boolean;
  isoName: string;
  rrName?: string;
  symlink?: string;
}

export function isIso9660(r: BlockReader): boolean {
  if (r.size < (VD_START + 1) * SECTOR) return false;
  const b = r.read(VD_START * SECTOR, 7);
  return b[0] === 1 && Buffer.from(b.subarray(1, 6)).toString('latin1') === 'CD001';
}

export class Iso9660 implements FileSystem {
  readonly type = 'iso9660';
  private readonly blockSize: number;
  private readonly root: DirRecord;
  private readonly joliet: boolean;
  /** Bytes to skip at the start of each system use area (SUSP SP entry). */
  private suspSkip = -1;

  constructor(private readonly r: BlockReader, readonly name = 'image') {
    if (!isIso9660(r)) throw new LoaderError(`${name} is not an ISO 9660 image`);
    let pvd: Uint8Array | undefined;
    let svd: Uint8Array | undefined;
    for (let s = VD_START; (s + 1) * SECTOR <= r.size && s < VD_START + 64; s++) {
      const d = r.read(s * SECTOR, SECTOR);
      if (Buffer.from(d.subarray(1, 6)).toString('latin1') !== 'CD001') break;
      if (d[0] === 255) break;
      if (d[0] === 1 && !pvd) pvd = d;
      // Joliet: a supplementary descriptor with a UCS-2 escape sequence %/@, %/C or %/E.
      if (d[0] === 2 && d[88] === 0x25 && d[89] === 0x2f && [0x40, 0x43, 0x45].includes(d[90])) svd = d;
    }
    if (!pvd) throw new LoaderError(`${name}: ISO 9660 image has no primary volume descriptor`);
    this.blockSize = pvd[128] | (pvd[129] << 8) || SECTOR;
    const pvdRoot = this.parseRecord(pvd, 156, false);
    if (!pvdRoot) throw new LoaderError(`${name}: corrupt ISO 9660 root directory record`);
    // Rock Ridge is announced by an SP entry in the root's "." record.
    this.readDir(pvdRoot, false, true);
    const hasRR = this.suspSkip >= 0;
    if (!hasRR && svd) {
      const j = this.parseRecord(svd, 156, true);
      if (!j) throw new LoaderError(`${name}: corrupt Joliet root directory record`);
      this.root = j;
      this.joliet = true;
    } else {
      this.root = pvdRoot;
      this.joliet = false;
    }
  }

  readFile(path: string): Uint8Array {
    const rec = this.lookup(path);
    if (rec.isDir) throw new LoaderError(`${this.name}:${path}: Is a directory`);
    return Uint8Array.from(this.r.read(rec.extent * this.blockSize, rec.size));
  }

  private lookup(path: string, depth = 0): DirRecord {
    if (depth > 40) throw new LoaderError(`${this.name}:${path}: too many levels of symbolic links`);
    const parts = pathComponents(path);
    let cur = this.root;
    const stack: DirRecord[] = [];
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i];
      if (p === '..') { cur = stack.pop() ?? this.root; continue; }
      if (!cur.isDir) throw new LoaderError(`${this.name}:${path}: Not a directory`);
      const found = this.findIn(cur, p);
      if (!found) throw new LoaderError(`${this.name}:${path}: No such file or directory`);
      if (found.symlink !== undefined) {
        const base = found.symlink.startsWith('/') ? '' : '/' + parts.slice(0, i).join('/');
        return this.lookup(`${base}/${found.symlink}/${parts.slice(i + 1).join('/')}`, depth + 1);
      }
      stack.push(cur);
      cur = found;
    }
    return cur;
  }

  private findIn(dir: DirRecord, name: string): DirRecord | undefined {
    const recs = this.readDir(dir, this.joliet, false);
    return recs.find((r) => r.rrName === name)
      ?? recs.find((r) => r.rrName === undefined && r.isoName === name)
      ?? recs.find((r) => r.rrName === undefined && r.isoName.toUpperCase() === name.toUpperCase());
  }

  private readDir(dir: DirRecord, joliet: boolean, rootProbe: boolean): DirRecord[] {
    const out: DirRecord[] = [];
    const data = this.r.read(dir.extent * this.blockSize, dir.size);
    let off = 0;
    while (off < data.length) {
      const len = data[off];
      if (len === 0) { off = (Math.floor(off / SECTOR) + 1) * SECTOR; continue; }
      if (off + len > data.length || len < 34) throw new LoaderError(`${this.name}: corrupt ISO 9660 directory record`);
      const nameLen = data[off + 32];
      const first = nameLen === 1 && data[off + 33] <= 1;
      if (rootProbe && first && data[off + 33] === 0) {
        // The root's "." record: look for the SUSP SP entry ("SP", 7, 1, 0xBE, 0xEF, skip).
        const su = off + 33 + nameLen + (nameLen % 2 === 0 ? 1 : 0);
        if (su + 7 <= off + len && data[su] === 0x53 && data[su + 1] === 0x50 && data[su + 4] === 0xbe && data[su + 5] === 0xef) {
          this.suspSkip = data[su + 6];
        }
        out.push(this.parseRecord(data, off, joliet)!);
      } else if (!first) {
        const rec = this.parseRecord(data, off, joliet);
        if (rec) out.push(rec);
      }
      off += len;
    }
    return out;
  }

  private parseRecord(b: Uint8Array, off: number, joliet: boolean): DirRecord | undefined {
    const len = b[off];
    if (len < 34) return undefined;
    const nameLen = b[off + 32];
    const raw = b.subarray(off + 33, off + 33 + nameLen);
    let isoName: string;
    if (joliet) {
      let s = '';
      for (let i = 0; i + 1 < raw.length; i += 2) s += String.fromCharCode((raw[i] << 8) | raw[i + 1]);
      isoName = s;
    } else isoName = Buffer.from(raw).toString('latin1');
    isoName = isoName.replace(/;\d+$/, '').replace(/\.$/, '');
    const rec: DirRecord = { extent: u32(b, off + 2), size: u32(b, off + 10), isDir: (b[off + 25] & 2) !== 0, isoName };
    if (!joliet && this.suspSkip >= 0) this.parseSusp(b, off + 33 + nameLen + (nameLen % 2 === 0 ? 1 : 0) + this.suspSkip, off + len, rec, 0);
    return rec;
  }

  /** Rock Ridge: NM (alternate name) and SL (symbolic link), following CE. */
  private parseSusp(b: Uint8Array, p: number, end: number, rec: DirRecord, depth: number): void {
    let nm: string | undefined;
    let sl: string | undefined;
    while (p + 4 <= end) {
      const sig = String.fromCharCode(b[p], b[p + 1]);
      const len = b[p + 2];
      if (len < 4 || p + len > end) break;
      if (sig === 'NM') {
        const flags = b[p + 4];
        if (!(flags & 0x6)) nm = (nm ?? '') + Buffer.from(b.subarray(p + 5, p + len)).toString('utf8');
      } else if (sig === 'SL') {
        let q = p + 5;
        let path = sl ?? '';
        while (q + 2 <= p + len) {
          const cf = b[q];
          const cl = b[q + 1];
          const comp = Buffer.from(b.subarray(q + 2, q + 2 + cl)).toString('utf8');
          const piece = cf & 0x2 ? '.' : cf & 0x4 ? '..' : cf & 0x8 ? '' : comp;
          if (cf & 0x8) path = '/';
          else path = path === '' || path.endsWith('/') ? path + piece : `${path}/${piece}`;
          q += 2 + cl;
        }
        sl = path;
      } else if (sig === 'CE' && depth < 8) {
        const block = u32(b, p + 4);
        const offset = u32(b, p + 12);
        const length = u32(b, p + 20);
        const ce = this.r.read(block * this.blockSize + offset, length);
        this.parseSusp(ce, 0, ce.length, rec, depth + 1);
      } else if (sig === 'ST') break;
      p += len;
    }
    if (nm !== undefined) rec.rrName = nm;
    if (sl !== undefined) rec.symlink = sl;
  }
}
