// bhyveload(8): loads a kernel into a VM object's memory and stores the state
// vCPU 0 must start in, so that the next bhyve(8) of that VM runs it. FreeBSD's
// userboot cannot run on Linux: the kernel is chosen with -e kernel=PATH
// (plus initrd, cmdline and module.N) and read from the -h host directory or
// the -d disk image. bin/bhyveload calls it.

import fs from 'node:fs';

import { BHYVELOAD_USAGE } from '../config/bhyveload-options.js';
import { ConfigError, UsageError } from '../config/errors.js';
import { getopt } from '../config/getopt.js';
import { fsPath, rawArgv } from '../config/raw-argv.js';
import { parseMemorySize } from '../config/size.js';
import { reportError } from './output.js';
import { systemErrorText } from '../user-error.js';

const PROG = 'bhyveload';
export const BHYVELOAD_OPTSTRING = 'CSc:d:e:h:l:m:';
const KNOWN_VARS = /^(kernel|initrd|cmdline|module\.\d+)$/;

export interface BhyveloadArgs {
  vmname: string;
  memsize: number;
  /** -m as given, for messages. */
  memspec: string;
  console?: string;
  disks: string[];
  env: Record<string, string>;
  host?: string;
  loader?: string;
  wired: boolean;
  core: boolean;
}

/** Parses bhyveload's command line (getopt(3), as bhyveload.c). */
export function parseBhyveloadArgs(argv: readonly string[]): BhyveloadArgs {
  const { options, operands } = getopt(argv, BHYVELOAD_OPTSTRING);
  const a: BhyveloadArgs = { vmname: '', memsize: 256 * 1024 * 1024, memspec: '256M', disks: [], env: {}, wired: false, core: false };
  for (const o of options) {
    const arg = o.arg ?? '';
    switch (o.opt) {
      case 'C': a.core = true; break;
      case 'S': a.wired = true; break;
      case 'c': a.console = arg; break;
      case 'd': a.disks.push(arg); break;
      case 'e': {
        const eq = arg.indexOf('=');
        if (eq <= 0) throw new UsageError(`invalid environment variable '${arg}' (use -e name=value)`, 1);
        a.env[arg.slice(0, eq)] = arg.slice(eq + 1);
        break;
      }
      case 'h': a.host = arg; break;
      case 'l':
        if (a.loader !== undefined) throw new UsageError('-l can only be given once', 1);
        a.loader = arg;
        break;
      case 'm': a.memsize = parseMemorySize(arg); a.memspec = arg; break;
    }
  }
  if (operands.length === 0) throw new UsageError('missing vmname', 1);
  if (operands.length > 1) throw new UsageError(`too many operands: ${operands.slice(1).join(' ')}`, 1);
  a.vmname = operands[0];
  return a;
}

/** Checks the arguments that need no VM: console, loader, paths. */
function checkArgs(a: BhyveloadArgs): string[] {
  const warnings: string[] = [];
  if (a.loader !== undefined) throw new ConfigError(`not supported yet: loader modules (-l ${a.loader}); kernels are chosen with -e kernel=PATH`);
  if (a.console !== undefined && a.console !== 'stdio') {
    try {
      fs.statSync(a.console);
    } catch (e) {
      throw new ConfigError(`console ${a.console}: ${systemErrorText(e)}`);
    }
  }
  for (const d of a.disks) {
    let st: fs.Stats;
    try { st = fs.statSync(fsPath(d)); } catch (e) { throw new ConfigError(`disk ${d}: ${systemErrorText(e)}`); }
    if (st.isDirectory()) throw new ConfigError(`disk ${d}: Is a directory`);
  }
  if (a.host === undefined && a.disks.length === 0) {
    throw new ConfigError('nothing to load from: give a host directory with -h host-path or a disk image with -d disk-path');
  }
  for (const k of Object.keys(a.env)) {
    if (!KNOWN_VARS.test(k)) warnings.push(`${PROG}: warning: ignoring -e ${k} (this bhyveload uses kernel, initrd, cmdline and module.N)`);
  }
  return warnings;
}

/** Runs bhyveload with argv (without the program name); resolves to the exit status. */
export async function bhyveloadMain(argv: readonly string[]): Promise<number> {
  try {
    const a = parseBhyveloadArgs(rawArgv(argv));
    for (const w of checkArgs(a)) process.stderr.write(`${w}\n`);
    // Loaded only when something is really loaded: keeps usage errors fast.
    const [loader, vmo] = await Promise.all([import('../loader/index.js'), import('../vmm/vm-object.js')]);
    const request = loader.kernelRequestFromEnv(a.env);
    vmo.validateVmName(a.vmname);
    const source = loader.openKernelSource({ host: a.host, disks: a.disks });
    try {
      await loadInto(a, request, source, loader, vmo);
    } finally {
      source.close();
    }
    return 0;
  } catch (err) {
    // bhyveload exits 1 on every error it reports (err(1, ...) in bhyveload.c).
    return reportError(PROG, err, 1, 'see bhyveload(8)');
  }
}

async function loadInto(
  a: BhyveloadArgs,
  request: import('../loader/index.js').KernelRequest,
  source: import('../loader/index.js').KernelSource,
  loader: typeof import('../loader/index.js'),
  vmo: typeof import('../vmm/vm-object.js'),
): Promise<void> {
  const [{ computeLayout, HIGHMEM_BASE }, { GuestMemory }, libc] = await Promise.all([
    import('../sys/memory-map.js'), import('../sys/guest-memory.js'), import('../sys/libc.js'),
  ]);
  // Refuse a running VM before touching anything.
  let existing: import('../vmm/vm-object.js').VmObject | undefined;
  try { existing = vmo.VmObject.open(a.vmname); } catch { existing = undefined; }
  const pid = existing?.runningPid();
  if (pid !== undefined) {
    throw new vmo.VmObjectError(`VM '${a.vmname}' is running${pid ? ` (bhyve pid ${pid})` : ''}: stop it (or bhyvectl --vm=${a.vmname} --force-poweroff) before loading a kernel`);
  }
  const limits = await import('../vmm/guest-limits.js');
  limits.checkGuestMemorySize(a.memsize, a.memspec);
  // The run lock, held while the memory is written: no bhyve may start it meanwhile.
  const obj = vmo.VmObject.acquire(a.vmname, a.memsize);
  let ok = false;
  try {
    const layout = computeLayout(a.memsize);
    const fd = obj.openMemory();
    let map: import('../sys/libc.js').Mapping;
    try {
      map = libc.mmap(a.memsize, libc.PROT_READ | libc.PROT_WRITE, fd, 0, 'guest memory');
    } finally {
      fs.closeSync(fd);
    }
    try {
      libc.madvise(map, a.core ? libc.MADV_DODUMP : libc.MADV_DONTDUMP);
      const regions = [{ gpa: 0, bytes: map.bytes.subarray(0, layout.lowmem) }];
      if (layout.highmem > 0) regions.push({ gpa: HIGHMEM_BASE, bytes: map.bytes.subarray(layout.lowmem, layout.lowmem + layout.highmem) });
      const memory = new GuestMemory(regions);
      const result = loader.loadFromSource(request, source, memory, layout);
      obj.writeBootState(result.state);
    } finally {
      map.unmap();
    }
    ok = true;
  } finally {
    if (!ok && obj.createdHere) obj.destroy(); else obj.unlock();
  }
}

export { BHYVELOAD_USAGE };
