// passthru's rom= file: read and checked as bhyve's passthru_init_rom
// does, before the VM exists (the record's check) and again when the
// function is built (before the sandbox); and the ROM BAR sizes.

import fs from 'node:fs';
import { ConfigError } from '../../config/tree.js';

/** The expansion ROM BAR's size for a ROM file of `length` bytes, as
 * bhyve's pci_emul_alloc_rom: 1 << fls(length), at least 2 KiB. */
export function romBarSize(length: number): number {
  return Math.max(2 ** (Math.floor(Math.log2(length)) + 1), ROM_MIN);
}
export const ROM_MIN = 0x800;

/** bhyve's PCI_EMUL_ROMSIZE: the ROM space all functions share. */
export const ROM_SPACE = 0x1000000;

/** The rom= file (bhyve's passthru_init_rom): read before the sandbox, checked as bhyve does. */
export function readRom(file: string): Uint8Array {
  let bytes: Uint8Array;
  try { bytes = fs.readFileSync(file); } catch { throw new ConfigError(`passthru: can't open romfile "${file}"`); }
  if (bytes.length === 0) throw new ConfigError(`passthru: romfile "${file}" is empty`);
  if (romBarSize(bytes.length) > ROM_SPACE) throw new ConfigError(`passthru: romfile "${file}" does not fit the ${ROM_SPACE / 0x100000} MiB ROM space`);
  return bytes;
}
