// Read-only byte access to a disk image (or a part of one), so filesystem
// readers never load a whole image into memory.

import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';

import { fsPath } from '../config/raw-argv.js';
import { fileSize } from '../sys/file.js';

import { LoaderError } from './errors.js';

export interface BlockReader {
  readonly size: number;
  /** Reads exactly `length` bytes at `offset`; a clear error past the end. */
  read(offset: number, length: number): Uint8Array;
}

export class BufferReader implements BlockReader {
  constructor(private readonly bytes: Uint8Array, readonly name = 'image') {}
  get size(): number { return this.bytes.length; }
  read(offset: number, length: number): Uint8Array {
    if (offset < 0 || length < 0 || offset + length > this.bytes.length) {
      throw new LoaderError(`${this.name}: read of ${length} bytes at ${offset} is past its end (${this.bytes.length} bytes); the image is corrupt or truncated`);
    }
    return this.bytes.subarray(offset, offset + length);
  }
}

/** A disk image file opened read-only. */
export class FileReader implements BlockReader {
  private fd: number;
  readonly size: number;

  constructor(readonly path: string) {
    try {
      // O_NONBLOCK: a FIFO must not make the open wait for a writer.
      this.fd = openSync(fsPath(path), constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new LoaderError(`disk image ${path}: ${code === 'ENOENT' ? 'No such file or directory' : code === 'EACCES' ? 'Permission denied' : (e as Error).message}`);
    }
    const st = fstatSync(this.fd);
    if (!st.isFile() && !st.isBlockDevice()) {
      closeSync(this.fd);
      throw new LoaderError(`disk image ${path} is neither a file nor a block device`);
    }
    this.size = st.isFile() ? st.size : Math.max(0, fileSize(this.fd));
  }

  read(offset: number, length: number): Uint8Array {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new LoaderError(`disk image ${this.path}: read of ${length} bytes at ${offset} is past its end (${this.size} bytes); the image is corrupt or truncated`);
    }
    const buf = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, buf, done, length - done, offset + done);
      if (n <= 0) throw new LoaderError(`disk image ${this.path}: short read at ${offset + done}`);
      done += n;
    }
    return buf;
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}

/** A window [base, base+size) of another reader (a partition). */
export class SliceReader implements BlockReader {
  constructor(private readonly inner: BlockReader, private readonly base: number, readonly size: number) {}
  read(offset: number, length: number): Uint8Array {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new LoaderError(`partition: read of ${length} bytes at ${offset} is past its end (${this.size} bytes); the image is corrupt`);
    }
    return this.inner.read(this.base + offset, length);
  }
}

export const u16 = (b: Uint8Array, o: number): number => b[o] | (b[o + 1] << 8);
export const u32 = (b: Uint8Array, o: number): number => (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;
export const u64 = (b: Uint8Array, o: number): number => u32(b, o) + u32(b, o + 4) * 2 ** 32;

/** A read-only filesystem inside an image. Paths are absolute, '/'-separated. */
export interface FileSystem {
  readonly type: string;
  readFile(path: string): Uint8Array;
}

/** Splits a path into components, ignoring empty ones and '.'. */
export function pathComponents(path: string): string[] {
  return path.split('/').filter((c) => c !== '' && c !== '.');
}
