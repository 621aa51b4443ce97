// Guest NUMA domains (-n id=N,size=S,cpus=C; domains.N.* in bhyve_config(5)),
// as bhyverun.c's calc_mem_affinity() and set_vcpu_affinities() read them:
// domains 0, 1, ... (up to VM_MAXMEMDOM, 8) each with a memory size and a
// set of vCPUs; without any size given the memory is shared out evenly.
// Guest memory is handed out to the domains in order, lowest address
// first, as libvmmapi's vm_setup_memory_domains() lays the domains'
// segments out: RAM below 4 GiB (lowmem) first, then the RAM above 4 GiB,
// so a domain can have a range in each. The guest learns the split from
// the ACPI SRAT (every vCPU's local APIC and every memory range with its
// domain) and SLIT (10 within a domain, 20 between two), acpi/numa-tables.ts.
//
// Where this differs from bhyve, each time with one clear line instead of
// a silent change: domain sizes that do not add up to the guest memory are
// refused (bhyve would size the guest from the domains), as are domain
// numbers with a gap (bhyve stops reading at the gap) and a vCPU in two
// domains or in none of the guest's; `domain_policy` (a FreeBSD
// domainset(9) host memory policy) is refused: Linux has no such policy
// names.

import { ConfigError, type ConfigTree } from '../config/tree.js';
import { parseMemorySize } from '../config/size.js';
import { parseCpuset } from '../config/topology.js';
import { HIGHMEM_BASE, type MemoryLayout } from '../sys/memory-map.js';

/** bhyve's VM_MAXMEMDOM. */
export const VM_MAXMEMDOM = 8;
/** Even shares are rounded down to this (the rest goes to the last domain). */
const SHARE_ALIGN = 2 * 1024 * 1024;

export interface NumaDomain {
  id: number;
  size: number;
  cpus: number[];
}

export interface NumaLayout {
  domains: NumaDomain[];
  /** Guest-physical RAM ranges, ascending, with their domain. */
  memory: Array<{ domain: number; base: number; length: number }>;
}

/** The configured domains, checked against the guest's vCPUs and memory;
 * undefined when none is configured. Throws ConfigError (one line). */
export function numaDomains(config: ConfigTree, ncpus: number, memsize: number, warn: (m: string) => void = () => {}): NumaDomain[] | undefined {
  const node = config.getNode('domains');
  if (!node) return undefined;
  const ids = [...node.keys()].map((k) => {
    if (!/^(0|[1-9][0-9]*)$/.test(k)) throw new ConfigError(`invalid NUMA domain number '${k}' (use domains.0, domains.1, ...)`);
    return Number(k);
  }).sort((a, b) => a - b);
  if (ids.length > VM_MAXMEMDOM) throw new ConfigError(`${ids.length} NUMA domains: at most ${VM_MAXMEMDOM} are supported`);
  ids.forEach((id, i) => {
    if (id !== i) throw new ConfigError(`NUMA domain ${i} is missing (domains are numbered 0 to ${ids.length - 1} without gaps)`);
  });
  const domains: NumaDomain[] = [];
  const owner = new Map<number, number>();
  let sized = 0;
  for (const id of ids) {
    if (config.get(`domains.${id}.domain_policy`) !== undefined) {
      throw new ConfigError(`NUMA domain ${id}: domain_policy (a FreeBSD domainset(9) host memory policy) is not supported on Linux hosts`);
    }
    const list = config.get(`domains.${id}.cpus`);
    if (list === undefined) throw new ConfigError(`Missing CPU set for domain ${id}`);
    let cpus: number[];
    try {
      cpus = parseCpuset(id, list);
    } catch {
      throw new ConfigError(`invalid CPU set for NUMA domain ${id}: '${list}' (use a list of vCPU numbers and ranges, e.g. 0-1,3)`);
    }
    for (const c of cpus) {
      if (c >= ncpus) throw new ConfigError(`NUMA domain ${id}: vCPU ${c} does not exist (the guest has ${ncpus})`);
      const other = owner.get(c);
      if (other !== undefined) throw new ConfigError(`vCPU ${c} is in NUMA domains ${other} and ${id}`);
      owner.set(c, id);
    }
    const sizeSpec = config.get(`domains.${id}.size`);
    let size = 0;
    if (sizeSpec !== undefined) {
      try {
        size = parseMemorySize(sizeSpec);
      } catch {
        throw new ConfigError(`invalid memsize for domain ${id}: '${sizeSpec}'`);
      }
      if (size === 0) throw new ConfigError(`invalid memsize for domain ${id}: '${sizeSpec}'`);
      sized++;
    }
    domains.push({ id, size, cpus });
  }
  if (sized < domains.length) {
    warn('At least one domain memory size was not specified, distributing total VM memory size across all domains');
    const share = Math.floor(memsize / domains.length / SHARE_ALIGN) * SHARE_ALIGN;
    if (share === 0) throw new ConfigError(`${memsize} bytes of guest memory cannot be shared out among ${domains.length} NUMA domains`);
    domains.forEach((d, i) => { d.size = i === domains.length - 1 ? memsize - share * (domains.length - 1) : share; });
  } else {
    const total = domains.reduce((s, d) => s + d.size, 0);
    if (total !== memsize) {
      throw new ConfigError(`the NUMA domain sizes add up to ${total} bytes, not the guest memory size of ${memsize} bytes (-m)`);
    }
  }
  const missing = Array.from({ length: ncpus }, (_, c) => c).filter((c) => !owner.has(c));
  if (missing.length > 0) throw new ConfigError(`vCPU ${missing[0]} is in no NUMA domain (give every vCPU a domain with cpus=)`);
  return domains;
}

/** Where each domain's memory lies in guest-physical space. */
export function numaLayout(domains: NumaDomain[], layout: MemoryLayout): NumaLayout {
  const memory: NumaLayout['memory'] = [];
  let offset = 0; // into guest RAM, lowmem then highmem
  for (const d of domains) {
    let left = d.size;
    while (left > 0) {
      const inLow = offset < layout.lowmem;
      const base = inLow ? offset : HIGHMEM_BASE + (offset - layout.lowmem);
      const room = inLow ? layout.lowmem - offset : layout.highmem - (offset - layout.lowmem);
      if (room <= 0) throw new ConfigError('NUMA domains hold more memory than the guest has');
      const length = Math.min(left, room);
      memory.push({ domain: d.id, base, length });
      offset += length;
      left -= length;
    }
  }
  return { domains, memory };
}
