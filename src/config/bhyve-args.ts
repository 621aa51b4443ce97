// bhyve(8)'s command line -> the bhyve_config(5) tree, following
// bhyve_init_config(), bhyve_optparse() and main() of FreeBSD's bhyve
// (amd64/bhyverun_machdep.c, bhyverun.c, pci_emul.c, amd64/pci_lpc.c).

import { statSync } from 'node:fs';

import { FileTooLargeError, readBounded } from './bounded-read.js';
import { fsPath } from './raw-argv.js';

import { BHYVE_OPTSTRING, bhyveUsage } from './bhyve-options.js';
import { ConfigError, EX_USAGE, UsageError } from './errors.js';
import { getoptIter } from './getopt.js';
import { createNode, parseLegacyConfig, setBool, setValue, setValueIfUnset } from './legacy.js';
import { parseMemorySize } from './size.js';
import { buildVcpuMaps, calcTopology, CPU_SETSIZE, strtolFull } from './topology.js';
import { ConfigTree, parseBool } from './tree.js';
import { systemErrorText } from '../user-error.js';
import { findPciDevice, lpcHelpText, pciHelpText, validatePciDevices } from '../devices/registry.js';

/** A `-f name,string=...|file=...` fw_cfg user file (kept outside the tree, as bhyve does). */
export interface FwCfgUserFile {
  name: string;
  data: Uint8Array;
}

export type ParseResult =
  /** Start the VM described by `config`. */
  | { kind: 'run'; config: ConfigTree; restoreFile?: string; fwcfgFiles: FwCfgUserFile[] }
  /** Print `text` on `stream` and exit (-h, -s help, -l help). */
  | { kind: 'help'; text: string; exitCode: number; stream: 'stdout' | 'stderr' }
  /** `-o config.dump=true`: print the variables and exit without creating a VM (bhyve exits 1). */
  | { kind: 'dump'; text: string; exitCode: number; config: ConfigTree };

/** bhyve_init_config() for amd64: the defaults set before option parsing. */
export function initConfig(): ConfigTree {
  const t = new ConfigTree();
  setBool(t, 'acpi_tables', true);
  setBool(t, 'acpi_tables_in_memory', true);
  setValue(t, 'memory.size', '256M');
  setBool(t, 'x86.strictmsr', true);
  setValue(t, 'lpc.fwcfg', 'bhyve');
  return t;
}

/** dump_config(): every variable as path=value, unexpanded, in tree order. */
export function dumpConfig(config: ConfigTree): string {
  return config.toJSON().map(([k, v]) => `${k}=${v}\n`).join('');
}

/** `strncmp(arg, "help", strlen(arg)) == 0`: any prefix of "help" asks for help. */
function isHelp(arg: string): boolean {
  return 'help'.startsWith(arg);
}

/** bhyve_topology_parse(): stores the values; calc_topology() checks them later. */
export function parseTopologyOption(config: ConfigTree, opt: string): void {
  if (opt === '') {
    for (const k of ['sockets', 'cores', 'threads', 'cpus']) setValue(config, k, '1');
    return;
  }
  for (const cp of opt.split(',')) {
    const m = /^(cpus|sockets|cores|threads)=(.*)$/s.exec(cp);
    if (m) setValue(config, m[1], m[2]);
    else if (cp.includes('=')) throw new UsageError(`invalid cpu topology '${opt}'`);
    else setValue(config, 'cpus', cp);
  }
}

/** Reads `%d` as sscanf does: optional blanks and sign, then digits. */
function scanInt(s: string): { n: number; rest: string } | null {
  const m = /^\s*([+-]?\d+)/.exec(s);
  return m ? { n: Number(m[1]), rest: s.slice(m[0].length) } : null;
}

/** How many of `%d:%d:...` (up to max) sscanf would match at the start of s. */
function scanInts(s: string, max: number): number[] {
  const out: number[] = [];
  let rest = s;
  while (out.length < max) {
    if (out.length > 0) {
      if (rest[0] !== ':') break;
      rest = rest.slice(1);
    }
    const r = scanInt(rest);
    if (!r) break;
    out.push(r.n);
    rest = r.rest;
  }
  return out;
}

/** bhyve_pincpu_parse(): `vcpu:hostcpu` appended to vcpu.N.cpuset. */
export function parsePinOption(config: ConfigTree, opt: string): void {
  const bad = (why: string): UsageError => new UsageError(`invalid vcpu pinning configuration '${opt}': ${why}`);
  const v = scanInts(opt, 2);
  if (v.length !== 2) throw bad('use vcpu:hostcpu');
  const [vcpu, pcpu] = v;
  if (vcpu < 0) throw bad(`invalid vcpu '${vcpu}'`);
  if (pcpu < 0 || pcpu >= CPU_SETSIZE) throw bad(`hostcpu '${pcpu}' outside valid range from 0 to ${CPU_SETSIZE - 1}`);
  const key = `vcpu.${vcpu}.cpuset`;
  const old = config.getRaw(key);
  setValue(config, key, old !== undefined ? `${old},${pcpu}` : String(pcpu));
}

/** pci_parse_slot(): `slot,emulation[,conf]` -> pci.B.S.F. Errors exit 4. */
export function parseSlotOption(config: ConfigTree, opt: string): void {
  const c1 = opt.indexOf(',');
  if (c1 < 0) throw new ConfigError(`Invalid PCI slot info field "${opt}" (use slot,emulation[,conf])`);
  const slotStr = opt.slice(0, c1);
  let emul = opt.slice(c1 + 1);
  let conf: string | undefined;
  const c2 = emul.indexOf(',');
  if (c2 >= 0) { conf = emul.slice(c2 + 1); emul = emul.slice(0, c2); }
  const v = scanInts(slotStr, 3);
  let bus = 0, slot = -1, func = 0;
  if (v.length === 3) [bus, slot, func] = v;
  else if (v.length === 2) [slot, func] = v;
  else if (v.length === 1) [slot] = v;
  if (bus < 0 || bus >= 256 || slot < 0 || slot >= 32 || func < 0 || func >= 8) {
    throw new ConfigError(`Invalid PCI slot info field "${opt}" (slot is pcislot[:function] or bus:pcislot:function; bus 0-255, pcislot 0-31, function 0-7)`);
  }
  const where = `${bus}:${slot}:${func}`;
  const record = findPciDevice(emul);
  if (!record) throw new ConfigError(`pci slot ${where}: unknown device "${emul}" (see bhyve -s help)`);
  const node = `pci.${bus}.${slot}.${func}`;
  if (config.has(node)) throw new ConfigError(`pci slot ${where} already occupied!`);
  createNode(config, node);
  setValue(config, `${node}.device`, record.alias ?? emul);
  if (record.legacyConfig) record.legacyConfig(config, node, conf);
  else parseLegacyConfig(config, node, conf);
}

/** Splits like strsep(&str, ","): returns [token, rest|undefined]. */
function strsep(s: string | undefined): [string | undefined, string | undefined] {
  if (s === undefined) return [undefined, undefined];
  const i = s.indexOf(',');
  return i < 0 ? [s, undefined] : [s.slice(0, i), s.slice(i + 1)];
}

/** lpc_device_parse(): `-l lpcdev[,conf]`. */
export function parseLpcOption(config: ConfigTree, opts: string): void {
  const invalid = (): UsageError => new UsageError(`invalid lpc device configuration '${opts}' (see bhyve -l help)`);
  let [lpcdev, str] = strsep(opts);
  const dev = (lpcdev ?? '').toLowerCase();
  if (dev === 'bootrom') {
    let romfile: string | undefined;
    [romfile, str] = strsep(str);
    if (romfile === undefined) throw new ConfigError(`invalid bootrom option "${opts}" (use bootrom,romfile[,varfile])`);
    setValue(config, 'lpc.bootrom', romfile);
    let varfile: string | undefined;
    [varfile, str] = strsep(str);
    if (varfile === undefined) return;
    if (!varfile.includes('=')) setValue(config, 'lpc.bootvars', varfile);
    else parseLegacyConfig(config, 'lpc', varfile);
    parseLegacyConfig(config, 'lpc', str);
    return;
  }
  if (dev === 'tpm') {
    createNode(config, 'tpm');
    let type: string | undefined, path: string | undefined;
    [type, str] = strsep(str);
    if (type === undefined) throw new ConfigError(`invalid tpm type "${opts}" (use tpm,passthru|swtpm,path)`);
    setValue(config, 'tpm.type', type);
    [path, str] = strsep(str);
    if (path === undefined) throw new ConfigError(`invalid tpm path "${opts}" (use tpm,passthru|swtpm,path)`);
    setValue(config, 'tpm.path', path);
    parseLegacyConfig(config, 'tpm', str);
    setValueIfUnset(config, 'tpm.version', '2.0');
    return;
  }
  if (/^com[1-4]$/.test(dev)) {
    if (str === undefined) throw invalid();
    setValue(config, `lpc.${dev}.path`, str);
    return;
  }
  if (dev === 'pc-testdev') {
    setBool(config, 'lpc.pc-testdev', true);
    return;
  }
  if (dev === 'fwcfg') {
    // bhyve(8) documents `-l fwcfg,bhyve|qemu`; it is lpc.fwcfg.
    if (str === undefined || str === '') throw invalid();
    setValue(config, 'lpc.fwcfg', str);
    return;
  }
  throw invalid();
}

const FWCFG_MAX_NAME = 56;

/** qemu_fwcfg_parse_cmdline_arg(): `[name=]name,string=data|file=path`. */
export function parseFwCfgOption(opt: string): FwCfgUserFile {
  const invalid = (why: string): UsageError => new UsageError(`invalid fwcfg item '${opt}': ${why}`);
  let p = opt.startsWith('name=') ? opt.slice(5) : opt;
  const comma = p.indexOf(',');
  if (comma < 0) throw invalid('use [name=]name,string=data or [name=]name,file=path');
  const name = p.slice(0, comma);
  if (name.length >= FWCFG_MAX_NAME) throw invalid(`fw_cfg name too long (max ${FWCFG_MAX_NAME - 1} characters)`);
  p = p.slice(comma + 1);
  if (p.startsWith('string=')) return { name, data: new TextEncoder().encode(p.slice(7)) };
  if (p.startsWith('file=')) {
    const path = p.slice(5);
    try {
      if (!statSync(fsPath(path)).isFile()) throw invalid(`"${path}" is not a regular file`);
      return { name, data: new Uint8Array(readBounded(fsPath(path), MAX_FWCFG_FILE_BYTES)) };
    } catch (e) {
      if (e instanceof UsageError) throw e;
      if (e instanceof FileTooLargeError) throw invalid(`"${path}" is ${e.message}`);
      throw invalid(`cannot read "${path}": ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  throw invalid('use [name=]name,string=data or [name=]name,file=path');
}

/** bhyve_parse_gdb_options(): `[w][address:]port`. */
export function parseGdbOption(config: ConfigTree, opt: string): void {
  let o = opt;
  if (o[0] === 'w') { setBool(config, 'gdb.wait', true); o = o.slice(1); }
  const colon = o.lastIndexOf(':');
  if (colon < 0) { setValue(config, 'gdb.port', o); return; }
  setValue(config, 'gdb.address', o.slice(0, colon));
  setValue(config, 'gdb.port', o.slice(colon + 1));
}

/** bhyve_parse_config_option(): `path=value`, value non-empty. */
export function parseConfigOption(config: ConfigTree, option: string): boolean {
  const eq = option.indexOf('=');
  if (eq < 0 || eq === option.length - 1) return false;
  setValue(config, option.slice(0, eq), option.slice(eq + 1));
  return true;
}

/** Bounds on files read whole at start-up (bounded-read.ts). */
const MAX_CONFIG_FILE_BYTES = 1024 * 1024;
const MAX_FWCFG_FILE_BYTES = 64 * 1024 * 1024;

/** bhyve_parse_simple_config_file(): `-k file`, key=value lines, '#' comments. */
export function parseConfigFile(config: ConfigTree, path: string): void {
  let text: string;
  try {
    text = readBounded(fsPath(path), MAX_CONFIG_FILE_BYTES).toString('utf8');
  } catch (e) {
    if (e instanceof FileTooLargeError) throw new ConfigError(`configuration file ${path} is ${e.message} (a -k file is key=value lines)`);
    throw new ConfigError(`Failed to open configuration file ${path}: ${systemErrorText(e)}`);
  }
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((line, i) => {
    if (line === '' || line[0] === '#') return;
    if (!parseConfigOption(config, line)) {
      throw new ConfigError(`${path} line ${i + 1}: invalid config option '${line}' (use key=value)`);
    }
  });
}

/** bhyve_numa_parse(): `id=N[,size=S][,cpus=C][,domain_policy=P]` -> domains.N.* */
export function parseNumaOption(config: ConfigTree, opt: string): void {
  if (opt === '') throw new UsageError(`invalid NUMA configuration '${opt}'`);
  let id = -1;
  const vals: Array<[string, string]> = [];
  for (const cp of opt.split(',')) {
    if (cp.startsWith('id=')) {
      const n = strtolFull(cp.slice(3));
      if (n === null || n < 0 || n > 255) throw new ConfigError(`Invalid value for id: '${cp.slice(3)}'`);
      id = n;
    } else {
      const m = /^(size|domain_policy|cpus)=(.*)$/s.exec(cp);
      if (m) vals.push([m[1], m[2]]);
    }
  }
  if (id < 0) throw new UsageError(`invalid NUMA configuration '${opt}': missing NUMA domain ID (id=N)`);
  createNode(config, `domains.${id}`);
  for (const k of ['size', 'domain_policy', 'cpus']) {
    const v = vals.filter(([n]) => n === k).pop();
    if (v) setValue(config, `domains.${id}.${k}`, v[1]);
  }
}

const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/**
 * The checks bhyve makes after option parsing and before it creates the VM:
 * topology, vCPU pinning, memory size, UUID, booleans, and each PCI
 * device's own checks.
 */
export function validateConfig(config: ConfigTree): void {
  const topo = calcTopology(config);
  buildVcpuMaps(config, topo.cpus);
  const mem = config.get('memory.size');
  if (mem === undefined) throw new UsageError("invalid memsize '' (set memory.size, e.g. -m 512M)");
  parseMemorySize(mem);
  const uuid = config.get('uuid');
  if (uuid !== undefined && !UUID_RE.test(uuid)) {
    throw new ConfigError(`Invalid UUID '${uuid}' (use the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)`);
  }
  for (const k of ['x86.x2apic', 'x86.strictio', 'x86.strictmsr', 'x86.vmexit_on_hlt', 'x86.vmexit_on_pause',
    'x86.mptable', 'x86.require_ept_rvi', 'memory.wired', 'memory.guest_in_core', 'acpi_tables',
    'destroy_on_poweroff', 'rtc.use_localtime', 'virtio_msix', 'gdb.wait', 'lpc.pc-testdev',
    'security.sandbox', 'security.sandbox_log']) {
    const v = config.get(k);
    if (v !== undefined) parseBool(v, k);
  }
  const bspModel = config.get('vcpu.bsp_model');
  if (bspModel !== undefined && bspModel !== 'main' && bspModel !== 'thread') {
    throw new ConfigError(`invalid vcpu.bsp_model '${bspModel}' (main or thread)`);
  }
  const apModel = config.get('vcpu.ap_model');
  if (apModel !== undefined && apModel !== 'pool' && apModel !== 'thread') {
    throw new ConfigError(`invalid vcpu.ap_model '${apModel}' (pool or thread)`);
  }
  // Each configured device's own checks (its record's validate).
  validatePciDevices(config);
}

/**
 * Parses bhyve's argv (without the program name). Throws UsageError (with
 * bhyve's exit status) or ConfigError (exit status 4) on bad input.
 */
export function parseBhyveArgs(argv: readonly string[]): ParseResult {
  const config = initConfig();
  const state = { operands: [] as string[] };
  let restoreFile: string | undefined;
  const fwcfgFiles: FwCfgUserFile[] = [];
  for (const { opt, arg = '' } of getoptIter(argv, BHYVE_OPTSTRING, state)) {
    switch (opt) {
      case 'a': setBool(config, 'x86.x2apic', false); break;
      case 'A': break; // no-op: ACPI tables are always generated
      case 'D': setBool(config, 'destroy_on_poweroff', true); break;
      case 'p': parsePinOption(config, arg); break;
      case 'c': parseTopologyOption(config, arg); break;
      case 'C': setBool(config, 'memory.guest_in_core', true); break;
      case 'f': fwcfgFiles.push(parseFwCfgOption(arg)); break;
      case 'G': parseGdbOption(config, arg); break;
      case 'k': parseConfigFile(config, arg); break;
      case 'K': setValue(config, 'keyboard.layout', arg); break;
      case 'l':
        if (isHelp(arg)) return { kind: 'help', text: lpcHelpText(), exitCode: 0, stream: 'stdout' };
        parseLpcOption(config, arg);
        break;
      case 'n': parseNumaOption(config, arg); break;
      case 'r': restoreFile = arg; break;
      case 's':
        if (isHelp(arg)) return { kind: 'help', text: pciHelpText(), exitCode: 0, stream: 'stdout' };
        parseSlotOption(config, arg);
        break;
      case 'S': setBool(config, 'memory.wired', true); break;
      case 'm': setValue(config, 'memory.size', arg); break;
      case 'o':
        if (!parseConfigOption(config, arg)) throw new UsageError(`invalid configuration option '${arg}' (use -o var=value)`);
        break;
      case 'H': setBool(config, 'x86.vmexit_on_hlt', true); break;
      case 'I': break; // no-op: an I/O APIC is always present
      case 'P': setBool(config, 'x86.vmexit_on_pause', true); break;
      case 'e': setBool(config, 'x86.strictio', true); break;
      case 'u': setBool(config, 'rtc.use_localtime', false); break;
      case 'U': setValue(config, 'uuid', arg); break;
      case 'w': setBool(config, 'x86.strictmsr', false); break;
      case 'W': setBool(config, 'virtio_msix', false); break;
      case 'x': setBool(config, 'x86.x2apic', true); break;
      case 'Y': setBool(config, 'x86.mptable', false); break;
      case 'h': return { kind: 'help', text: bhyveUsage(), exitCode: 0, stream: 'stderr' };
      default: throw new UsageError(`illegal option -- ${opt}`, 1);
    }
  }
  const operands = state.operands;
  if (operands.length > 1) throw new UsageError(`too many operands: ${operands.slice(1).join(' ')} (only one vmname allowed)`, 1);
  if (operands.length === 1) setValue(config, 'name', operands[0]);
  else if (config.get('name') === undefined) throw new UsageError('missing vmname', 1);

  if (config.getBool('config.dump', false)) {
    return { kind: 'dump', text: dumpConfig(config), exitCode: 1, config };
  }
  validateConfig(config);
  return { kind: 'run', config, ...(restoreFile !== undefined ? { restoreFile } : {}), fwcfgFiles };
}

export { EX_USAGE };
