// Kernel format recognition and dispatch: a bzImage (Linux boot protocol), a
// Multiboot v1 kernel, or an ELF kernel with a PVH entry note. The order
// follows QEMU's -kernel: the "HdrS" signature first, then a Multiboot
// header, then the PVH note.

import type { GuestMemory } from '../sys/guest-memory.js';
import type { MemoryLayout } from '../sys/memory-map.js';
import type { KernelSource } from './source.js';
import { LoaderError } from './errors.js';
import type { LoadModule, LoadOptions, LoadResult } from './guest-layout.js';
import { isBzImage, loadBzImage } from './linux.js';
import { findMultibootHeader, loadMultiboot } from './multiboot.js';
import { loadPvh, pvhEntry } from './pvh.js';
import { writeBiosState } from './bios-state.js';

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
export { DiskImageSource, HostDirSource, openKernelSource, type KernelSource } from './source.js';
export type { BootState, SegmentState } from './boot-state.js';
export { parseBootState, regValue, fromHex } from './boot-state.js';

/** What bhyveload's -e variables ask for: kernel=PATH, initrd=PATH,
 * cmdline=STRING, module.N=PATH[ ARGS] (N from 0, without gaps). */
export interface KernelRequest {
  kernel: string;
  initrd?: string;
  cmdline?: string;
  modules: { path: string; cmdline: string }[];
}

export function kernelRequestFromEnv(env: Record<string, string>): KernelRequest {
  const kernel = env.kernel;
  if (kernel === undefined || kernel === '') throw new LoaderError('no kernel to load: give -e kernel=PATH');
  const modules: KernelRequest['modules'] = [];
  const indices = Object.keys(env).filter((k) => k.startsWith('module.')).map((k) => {
    const n = k.slice('module.'.length);
    if (!/^(0|[1-9][0-9]*)$/.test(n)) throw new LoaderError(`bad module variable '${k}': use module.N=PATH[ ARGS] with N from 0`);
    return Number(n);
  }).sort((a, b) => a - b);
  indices.forEach((n, i) => {
    if (n !== i) throw new LoaderError(`module.${i} is missing: modules are numbered from 0 without gaps`);
    const value = env[`module.${n}`].trim();
    const path = value.split(/\s+/)[0];
    if (!path) throw new LoaderError(`module.${n} names no file`);
    modules.push({ path, cmdline: value });
  });
  return { kernel, initrd: env.initrd || undefined, cmdline: env.cmdline, modules };
}

/** Reads the request's files from the source, loads them into guest memory
 * and leaves the BIOS-era state beside them (bhyveload). */
export function loadFromSource(req: KernelRequest, source: KernelSource, memory: GuestMemory, layout: MemoryLayout): LoadResult {
  const image = source.readFile(req.kernel, 'kernel');
  const loader = selectLoader(image, req.kernel);
  const initrd = req.initrd !== undefined ? source.readFile(req.initrd, 'initrd') : undefined;
  const modules: LoadModule[] = req.modules.map((m, i) => ({
    name: m.path, bytes: source.readFile(m.path, `module.${i}`), cmdline: m.cmdline,
  }));
  const result = loader.load(image, {
    memory, layout, kernelName: req.kernel, cmdline: req.cmdline, initrd, initrdName: req.initrd, modules,
  });
  // The state a BIOS boot loader leaves (IVT, BDA; the devices by bhyve).
  result.placements.push(...writeBiosState(memory, layout, result.placements));
  result.state.bios = true;
  return result;
}
