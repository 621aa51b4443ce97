// bhyve's boot ROM (`-l bootrom,ROMFILE[,VARFILE]`, bootrom.c): the ROM is
// mapped read-only and executable so that it ends at 4 GiB, inside the
// 16 MiB window below 4 GiB; the optional VARS file (UEFI variables) is
// mapped right below it. Guest writes to either exit to us as MMIO.
// A ROM that is a UEFI firmware-volume image (OVMF, EDK II) has its volume
// headers checked first (src/firmware/fv.ts): a truncated or corrupt image
// is refused with one line naming the file.

import { UserError } from '../user-error.js';
import fs from 'node:fs';

import { fsPath } from '../config/raw-argv.js';
import { FirmwareVolumeError, looksLikeFirmwareVolume, parseFirmwareVolumes } from '../firmware/fv.js';
import { BOOTROM_WINDOW_SIZE, HIGHMEM_BASE, PAGE_SIZE } from '../sys/memory-map.js';

export class BootromError extends UserError { override readonly name: string = 'BootromError'; }

export interface BootromSegment {
  readonly kind: 'rom' | 'vars';
  readonly path: string;
  readonly gpa: number;
  readonly size: number;
  /** Open file descriptor (read-only for the ROM, read-write for VARS). */
  readonly fd: number;
}

function openSized(path: string, write: boolean, what: string): { fd: number; size: number } {
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
    fd = fs.openSync(fsPath(path), (write ? fs.constants.O_RDWR : fs.constants.O_RDONLY) | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EISDIR') throw new BootromError(`${what} '${path}' is a directory, not a regular file`);
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (e as Error).message;
    throw new BootromError(`cannot open ${what} '${path}': ${why}`);
  }
  const st = fs.fstatSync(fd);
  if (!st.isFile()) { fs.closeSync(fd); throw new BootromError(`${what} '${path}' is not a regular file`); }
  return { fd, size: st.size };
}

/** Validates the firmware-volume headers of a ROM that starts with one. */
function checkFirmwareVolumes(fd: number, size: number, path: string): void {
  const head = new Uint8Array(64);
  fs.readSync(fd, head, 0, head.length, 0);
  if (!looksLikeFirmwareVolume(head)) return;
  const image = new Uint8Array(size);
  let got = 0;
  while (got < size) {
    const n = fs.readSync(fd, image, got, size - got, got);
    if (n === 0) break;
    got += n;
  }
  try {
    parseFirmwareVolumes(image.subarray(0, got));
  } catch (e) {
    if (e instanceof FirmwareVolumeError) throw new BootromError(`boot ROM '${path}' is not a valid UEFI firmware image: ${e.message}`);
    throw e;
  }
}

/** Where bhyve's bootrom.c places a ROM of `romSize` bytes (ending at
 * 4 GiB) and a VARS file of `varsSize` bytes (right below it). */
export function bootromPlacement(romSize: number, varsSize = 0): { romGpa: number; varsGpa: number } {
  const romGpa = HIGHMEM_BASE - romSize;
  return { romGpa, varsGpa: romGpa - varsSize };
}

/** Validates and opens the boot ROM and VARS files; returns what to map. */
export function loadBootrom(romPath: string, varsPath?: string): BootromSegment[] {
  const rom = openSized(romPath, false, 'boot ROM');
  const segments: BootromSegment[] = [];
  try {
    if (rom.size === 0 || rom.size % PAGE_SIZE !== 0) {
      throw new BootromError(`boot ROM '${romPath}' is ${rom.size} bytes, not a non-zero multiple of the ${PAGE_SIZE}-byte page size`);
    }
    if (rom.size > BOOTROM_WINDOW_SIZE) {
      throw new BootromError(`boot ROM '${romPath}' is ${rom.size} bytes, larger than the 16 MiB boot ROM window`);
    }
    checkFirmwareVolumes(rom.fd, rom.size, romPath);
    const romGpa = HIGHMEM_BASE - rom.size;
    segments.push({ kind: 'rom', path: romPath, gpa: romGpa, size: rom.size, fd: rom.fd });
    if (varsPath !== undefined) {
      const vars = openSized(varsPath, true, 'boot variables file');
      if (vars.size === 0 || vars.size % PAGE_SIZE !== 0) {
        fs.closeSync(vars.fd);
        throw new BootromError(`boot variables file '${varsPath}' is ${vars.size} bytes, not a non-zero multiple of the ${PAGE_SIZE}-byte page size`);
      }
      if (rom.size + vars.size > BOOTROM_WINDOW_SIZE) {
        fs.closeSync(vars.fd);
        throw new BootromError(`boot ROM and variables file together exceed the 16 MiB boot ROM window`);
      }
      segments.push({ kind: 'vars', path: varsPath, gpa: romGpa - vars.size, size: vars.size, fd: vars.fd });
    }
    return segments;
  } catch (e) {
    for (const s of segments) fs.closeSync(s.fd);
    if (!segments.some((s) => s.fd === rom.fd)) fs.closeSync(rom.fd);
    throw e;
  }
}
