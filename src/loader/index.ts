// Kernel format recognition and dispatch: a bzImage (Linux boot protocol), a
// Multiboot v1 kernel, or an ELF kernel with a PVH entry note. The order
// follows QEMU's -kernel: the "HdrS" signature first, then a Multiboot
// header, then the PVH note.

import { LoaderError } from './errors.js';
import type { LoadOptions, LoadResult } from './guest-layout.js';
import { isBzImage, loadBzImage } from './linux.js';
import { findMultibootHeader, loadMultiboot } from './multiboot.js';
import { loadPvh, pvhEntry } from './pvh.js';

export type KernelFormat = 'bzimage' | 'multiboot' | 'pvh';

export interface KernelLoader {
  format: KernelFormat;
  load(image: Uint8Array, o: LoadOptions): LoadResult;
}

export const LOADERS: Record<KernelFormat, KernelLoader> = {
  bzimage: { format: 'bzimage', load: loadBzImage },
  multiboot: { format: 'multiboot', load: loadMultiboot },
  pvh: { format: 'pvh', load: loadPvh },
};

/** The format of a kernel image, or undefined when it is none we load. */
export function detectKernelFormat(image: Uint8Array): KernelFormat | undefined {
  if (isBzImage(image)) return 'bzimage';
  if (findMultibootHeader(image)) return 'multiboot';
  if (pvhEntry(image) !== undefined) return 'pvh';
  return undefined;
}

/** The loader for a kernel image; one clear error for anything else. */
export function selectLoader(image: Uint8Array, name = 'kernel'): KernelLoader {
  const f = detectKernelFormat(image);
  if (!f) throw new LoaderError(`kernel ${name} is not a bzImage, PVH ELF or Multiboot image`);
  return LOADERS[f];
}

/** Recognises the kernel and loads it with its initrd, modules and command line. */
export function loadKernel(image: Uint8Array, o: LoadOptions): LoadResult {
  return selectLoader(image, o.kernelName).load(image, o);
}

export { LoaderError } from './errors.js';
export type { LoadOptions, LoadResult, LoadModule, MemoryMapEntry, Placement } from './guest-layout.js';
export { guestMemoryMap } from './guest-layout.js';
export type { BootState, SegmentState } from './boot-state.js';
export { parseBootState, regValue, fromHex } from './boot-state.js';
