// What an NVMe namespace is stored on: the block backend (an image file or
// block device, ../block/) or RAM (`ram=MiB`, bhyve's NVME_STOR_RAM).

import type { BlockFile } from '../block/block-backend.js';

export interface NvmeStore {
  readonly size: number;
  readonly readOnly: boolean;
  /** Whether deallocate (DSM) can reach the storage. */
  readonly canDelete: boolean;
  readv(views: Uint8Array[], position: number): number;
  writev(views: Uint8Array[], position: number): number;
  flush(): void;
  /** 0 or -errno. */
  discard(offset: number, length: number): number;
  writeZeroes(offset: number, length: number): void;
  close(): void;
  /** The image behind it (an I/O pool's workers adopt its fd); none for RAM. */
  readonly file?: BlockFile;
}

export function fileStore(f: BlockFile, nodelete: boolean): NvmeStore {
  return {
    size: f.size,
    readOnly: f.readOnly,
    canDelete: !nodelete && !f.readOnly,
    readv: (v, p) => f.readv(v, p),
    writev: (v, p) => f.writev(v, p),
    flush: () => { if (!f.readOnly) f.flush(); },
    discard: (o, l) => f.discard(o, l),
    writeZeroes: (o, l) => f.writeZeroes(o, l, false),
    close: () => f.close(),
    file: f,
  };
}

/** A zero-filled namespace in this process's memory; gone when the VM stops. */
export function ramStore(bytes: number): NvmeStore {
  const mem = new Uint8Array(bytes);
  const copy = (views: Uint8Array[], position: number, write: boolean): number => {
    let at = position;
    for (const v of views) {
      const n = Math.min(v.length, mem.length - at);
      if (n <= 0) break;
      if (write) mem.set(v.subarray(0, n), at);
      else v.set(mem.subarray(at, at + n));
      at += n;
    }
    return at - position;
  };
  return {
    size: bytes,
    readOnly: false,
    canDelete: false,
    readv: (v, p) => copy(v, p, false),
    writev: (v, p) => copy(v, p, true),
    flush: () => {},
    discard: () => -95,
    writeZeroes: (o, l) => { mem.fill(0, o, o + l); },
    close: () => {},
  };
}
