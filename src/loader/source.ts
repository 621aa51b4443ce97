// Where bhyveload takes kernel, initrd and module files from: a host directory
// given with -h (paths resolved inside it and never escaping it, through ".."
// or symbolic links), or a disk image given with -d, read-only, holding an
// ISO 9660 or ext2/3/4 filesystem, whole or in an MBR/GPT partition.

import { readFileSync, realpathSync, statSync } from 'node:fs';
import { join, sep } from 'node:path';

import { decodeBytes, fsPath } from '../config/raw-argv.js';
import { type BlockReader, FileReader, type FileSystem, pathComponents } from './block.js';
import { LoaderError } from './errors.js';
import { ExtFs, isExt } from './ext.js';
import { Iso9660, isIso9660 } from './iso9660.js';
import { listPartitions, partitionReader } from './partition.js';
import { systemErrorText } from '../user-error.js';

export interface KernelSource {
  /** "host path /guest" or "disk image disk.img (ext, partition 1)". */
  readonly description: string;
  /** The bytes of a file; `what` names it in errors ("kernel", "initrd", "module.0"). */
  readFile(path: string, what: string): Uint8Array;
  close(): void;
}

/** realpath(3) of a path that may hold non-UTF-8 bytes (raw-argv.ts), kept so. */
function realpath(p: string): string {
  // .native: the JS realpathSync turns a Buffer path back into a string.
  return decodeBytes(realpathSync.native(fsPath(p), { encoding: 'buffer' }));
}

/** Files under a host directory (bhyveload -h). */
export class HostDirSource implements KernelSource {
  readonly root: string;
  readonly description: string;

  constructor(root: string) {
    try {
      this.root = realpath(root);
      if (!statSync(fsPath(this.root)).isDirectory()) throw Object.assign(new Error('Not a directory'), { code: 'ENOTDIR' });
    } catch (e) {
      throw new LoaderError(`host path ${root}: ${systemErrorText(e)}`);
    }
    this.description = `host path ${root}`;
  }

  /** The host path of a guest path, checked to lie inside the root. */
  resolve(path: string, what = 'file'): string {
    const parts: string[] = [];
    for (const c of pathComponents(path)) {
      if (c === '..') {
        if (parts.length === 0) throw new LoaderError(`${what} ${path} is outside the host path ${this.root}`);
        parts.pop();
      } else parts.push(c);
    }
    const full = join(this.root, ...parts);
    let real: string;
    try {
      real = realpath(full);
    } catch (e) {
      throw new LoaderError(`${what} ${path}: ${systemErrorText(e)} (in host path ${this.root})`);
    }
    if (real !== this.root && !real.startsWith(this.root + sep)) {
      throw new LoaderError(`${what} ${path} is outside the host path ${this.root} (a symbolic link leads to ${real})`);
    }
    return real;
  }

  readFile(path: string, what: string): Uint8Array {
    const real = this.resolve(path, what);
    try {
      if (!statSync(fsPath(real)).isFile()) throw new LoaderError(`${what} ${path}: not a regular file (in host path ${this.root})`);
      return new Uint8Array(readFileSync(fsPath(real)));
    } catch (e) {
      if (e instanceof LoaderError) throw e;
      throw new LoaderError(`${what} ${path}: ${systemErrorText(e)} (in host path ${this.root})`);
    }
  }

  close(): void {}
}

/** The filesystem of an image: the whole image, else its first partition holding one we read. */
export function openFileSystem(r: BlockReader, name: string): { fs: FileSystem; where: string } {
  const probe = (x: BlockReader, label: string): { fs: FileSystem; where: string } | undefined => {
    if (isIso9660(x)) return { fs: new Iso9660(x, name), where: label ? `iso9660, ${label}` : 'iso9660' };
    if (isExt(x)) return { fs: new ExtFs(x, name), where: label ? `ext, ${label}` : 'ext' };
    return undefined;
  };
  const whole = probe(r, '');
  if (whole) return whole;
  for (const p of listPartitions(r)) {
    const found = probe(partitionReader(r, p), `${p.scheme} partition ${p.index}`);
    if (found) return found;
  }
  throw new LoaderError(`disk image ${name} holds no ISO 9660 or ext2/3/4 filesystem (whole or in an MBR/GPT partition)`);
}

/** Files inside a disk image (bhyveload -d), opened read-only. */
export class DiskImageSource implements KernelSource {
  readonly description: string;
  private readonly reader: BlockReader & { close?: () => void };
  private readonly fs: FileSystem;

  constructor(readonly path: string, reader?: BlockReader) {
    this.reader = reader ?? new FileReader(path);
    try {
      const { fs, where } = openFileSystem(this.reader, path);
      this.fs = fs;
      this.description = `disk image ${path} (${where})`;
    } catch (e) {
      this.close();
      throw e;
    }
  }

  readFile(path: string, what: string): Uint8Array {
    try {
      return this.fs.readFile('/' + pathComponents(path).join('/'));
    } catch (e) {
      if (e instanceof LoaderError) throw new LoaderError(`${what} ${e.message}`);
      throw e;
    }
  }

  close(): void {
    this.reader.close?.();
  }
}

/** The source bhyveload's options name: -h wins when given, else the first -d. */
export function openKernelSource(o: { host?: string; disks?: string[] }): KernelSource {
  if (o.host !== undefined) return new HostDirSource(o.host);
  const disks = o.disks ?? [];
  if (disks.length === 0) throw new LoaderError('no host path (-h) or disk image (-d) to load the kernel from');
  return new DiskImageSource(disks[0]);
}
