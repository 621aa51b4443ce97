// vCPU topology and pinning checks bhyve(8) runs after option parsing
// (calc_topology() and build_vcpumaps() in bhyverun.c).

import { ConfigError } from './errors.js';
import { ConfigTree } from './tree.js';

const UINT16_MAX = 0xffff;
/** Host CPUs a pin may name (CPU_SETSIZE). */
export const CPU_SETSIZE = 1024;

export interface Topology {
  cpus: number;
  sockets: number;
  cores: number;
  threads: number;
}

/** strtol(value, &end, 0) that must consume the whole string; null otherwise. */
export function strtolFull(value: string): number | null {
  const m = /^\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(value);
  if (!m) return null;
  const d = m[2];
  const n = /^0[xX]/.test(d) ? parseInt(d.slice(2), 16) : d.length > 1 && d[0] === '0' ? parseInt(d.slice(1), 8) : parseInt(d, 10);
  return m[1] === '-' ? -n : n;
}

function parseIntValue(key: string, value: string, min: number, max: number): number {
  const n = strtolFull(value);
  if (n === null || n < min || n > max) throw new ConfigError(`Invalid value for ${key}: '${value}'`);
  return n;
}

/**
 * calc_topology(): cpus, sockets, cores and threads from the tree. Missing
 * cores/threads are 1; missing sockets is cpus; missing cpus is the product.
 * When cpus is given it must equal sockets*cores*threads.
 */
export function calcTopology(config: ConfigTree): Topology {
  const v = (k: string): string | undefined => config.get(k);
  const cpusStr = v('cpus');
  let cpus = cpusStr !== undefined ? parseIntValue('cpus', cpusStr, 1, UINT16_MAX) : 1;
  const coresStr = v('cores');
  const cores = coresStr !== undefined ? parseIntValue('cores', coresStr, 1, UINT16_MAX) : 1;
  const threadsStr = v('threads');
  const threads = threadsStr !== undefined ? parseIntValue('threads', threadsStr, 1, UINT16_MAX) : 1;
  const socketsStr = v('sockets');
  const sockets = socketsStr !== undefined ? parseIntValue('sockets', socketsStr, 1, UINT16_MAX) : cpus;
  const n = sockets * cores * threads;
  if (n > UINT16_MAX) throw new ConfigError(`Computed number of vCPUs too high: ${n}`);
  if (cpusStr !== undefined) {
    if (cpus !== n) {
      throw new ConfigError(`Topology (${sockets} sockets, ${cores} cores, ${threads} threads) does not match ${cpus} vCPUs`);
    }
  } else {
    cpus = n;
  }
  return { cpus, sockets, cores, threads };
}

/** parse_cpuset(): "0,2-5,7" -> sorted host CPU numbers. */
export function parseCpuset(vcpu: number, list: string): number[] {
  const set = new Set<number>();
  const bad = (): ConfigError => new ConfigError(`invalid cpuset for vcpu ${vcpu}: '${list}'`);
  let start = -1;
  let rest = list;
  for (;;) {
    const m = /^\s*[+]?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)/.exec(rest);
    if (!m) throw bad();
    const d = m[1];
    const pcpu = /^0[xX]/.test(d) ? parseInt(d.slice(2), 16) : d.length > 1 && d[0] === '0' ? parseInt(d.slice(1), 8) : parseInt(d, 10);
    if (pcpu >= CPU_SETSIZE) throw new ConfigError(`hostcpu '${pcpu}' outside valid range from 0 to ${CPU_SETSIZE - 1}`);
    rest = rest.slice(m[0].length);
    const c = rest[0];
    if (c === ',' || c === undefined) {
      if (start >= 0) {
        if (start > pcpu) throw new ConfigError(`Invalid hostcpu range ${start}-${pcpu}`);
        for (let i = start; i < pcpu; i++) set.add(i);
        start = -1;
      }
      set.add(pcpu);
    } else if (c === '-') {
      if (start >= 0) throw bad();
      start = pcpu;
    } else {
      throw bad();
    }
    if (c === undefined) break;
    rest = rest.slice(1);
  }
  return [...set].sort((a, b) => a - b);
}

/** build_vcpumaps(): the host CPU set of each vCPU that has vcpu.N.cpuset. */
export function buildVcpuMaps(config: ConfigTree, ncpus: number): Map<number, number[]> {
  const maps = new Map<number, number[]>();
  for (let vcpu = 0; vcpu < ncpus; vcpu++) {
    const value = config.get(`vcpu.${vcpu}.cpuset`);
    if (value !== undefined) maps.set(vcpu, parseCpuset(vcpu, value));
  }
  return maps;
}
