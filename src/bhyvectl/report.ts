// bhyvectl's output. Each operation adds its text lines, printed as FreeBSD's
// bhyvectl.c prints them (printf formats kept), and the same facts as data
// for --libxo=json and --libxo=xml. The structured form (see bhyvectl(8),
// OUTPUT FORMATS) is one object "bhyvectl" holding:
//   vm, vcpu                      the VM name and selected vCPU
//   memseg: [{id, length, name}]  memmap: [{address, length, segment, offset, prot, flags}]
//   register: {efer, cr0, ..., rflags}            hex strings, 0x%016x
//   descriptor: {ds: {base, limit, access}, ..., gdtr: {base, limit}, idtr: ...}
//   segment: {cs: "0x0010", ...}                  selectors, 0x%04x
//   active-cpus: [0, 1]   stats: {vcpu, stat: [{description, value}]}
//   cpu-topology: {sockets, cores, threads, maxcpus}
// Lists are JSON arrays and repeated XML elements, as libxo emits them.

import { XMLBuilder } from 'fast-xml-parser';

import type { SegmentJson, VcpuStateJson } from '../vmm/vcpu-state.js';
import { encodeAccess } from './descriptor.js';
import type { MemmapEntry, StatsJson, TopologyJson } from './target.js';

export type OutputFormat = 'text' | 'json' | 'xml';

export interface LibxoOptions { format: OutputFormat; pretty: boolean }

/** Parses a --libxo argument: "text", "json", "xml", optionally ",pretty". */
export function parseLibxo(arg: string): LibxoOptions {
  const parts = arg.split(/[,:]/).filter((p) => p !== '');
  const o: LibxoOptions = { format: 'text', pretty: false };
  for (const p of parts) {
    if (p === 'text' || p === 'json' || p === 'xml') o.format = p;
    else if (p === 'pretty') o.pretty = true;
    else throw new RangeError(`invalid --libxo option '${p}' (use text, json or xml, optionally with ,pretty)`);
  }
  return o;
}

/** 0x%016lx of a hex string or number. */
export function hex16(v: string | bigint | number): string {
  return `0x${BigInt(v).toString(16).padStart(16, '0')}`;
}
const hexN = (v: string | bigint | number, n: number): string => `0x${BigInt(v).toString(16).padStart(n, '0')}`;

/** FreeBSD's humanize_number(buf, 8, n, "B", HN_AUTOSCALE, HN_NOSPACE). */
export function humanizeBytes(n: number | bigint): string {
  let q = BigInt(n);
  let rem = 0n;
  let i = 0;
  const max = 100000n; // 10^(len - baselen) with len 8, baselen 3 (digit, prefix, "B")
  const prefixes = ['', 'k', 'M', 'G', 'T', 'P', 'E'];
  while ((q >= max || (q === max - 1n && rem >= 950n)) && i < 7) {
    rem = q % 1024n;
    q /= 1024n;
    i++;
  }
  return `${q + (rem + 50n) / 1000n}${prefixes[i]}B`;
}

/** The order bhyvectl's get_all_registers() prints registers in. */
export const REGISTER_ORDER = [
  'efer', 'cr0', 'cr2', 'cr3', 'cr4', 'dr0', 'dr1', 'dr2', 'dr3', 'dr6', 'dr7',
  'rsp', 'rip', 'rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rbp',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rflags',
] as const;
export type RegisterName = (typeof REGISTER_ORDER)[number];

/** get_all_segments() order: descriptors, then selectors. */
export const DESC_ORDER = ['ds', 'es', 'fs', 'gs', 'ss', 'cs', 'tr', 'ldtr', 'gdtr', 'idtr'] as const;
export type DescName = (typeof DESC_ORDER)[number];
export const SELECTOR_ORDER = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldtr'] as const;
export type SelectorName = (typeof SELECTOR_ORDER)[number];

/** A register's value in a vCPU state. */
export function registerValue(st: VcpuStateJson, r: RegisterName): string {
  if (r in st.regs) return st.regs[r as keyof VcpuStateJson['regs']];
  if (r in st.control) return st.control[r as keyof VcpuStateJson['control']];
  return st.debug[r as keyof VcpuStateJson['debug']];
}

/** The state's segment for a bhyvectl name (KVM calls LDTR "ldt"). */
export function segmentOf(st: VcpuStateJson, s: SelectorName): SegmentJson {
  return st.segments[s === 'ldtr' ? 'ldt' : s];
}

export class Report {
  readonly lines: string[] = [];
  readonly data: Record<string, unknown>;

  constructor(vm: string, vcpu: number) {
    this.data = { vm, vcpu };
  }

  private obj(key: string): Record<string, unknown> {
    return (this.data[key] ??= {}) as Record<string, unknown>;
  }

  register(cpu: number, name: RegisterName, value: string): void {
    this.lines.push(`${name}[${cpu}]\t${name === 'rflags' ? '' : '\t'}${hex16(value)}`);
    this.obj('register')[name] = hex16(value);
  }

  descriptor(cpu: number, name: DescName, base: string, limit: number, access?: number): void {
    if (name === 'gdtr' || name === 'idtr') {
      this.lines.push(`${name}[${cpu}]\t\t${hex16(base)}/${hexN(limit, 8)}`);
      this.obj('descriptor')[name] = { base: hex16(base), limit: hexN(limit, 8) };
    } else {
      this.lines.push(`${name} desc[${cpu}]\t${hex16(base)}/${hexN(limit, 8)}/${hexN(access ?? 0, 8)}`);
      this.obj('descriptor')[name] = { base: hex16(base), limit: hexN(limit, 8), access: hexN(access ?? 0, 8) };
    }
  }

  selector(cpu: number, name: SelectorName, selector: number): void {
    this.lines.push(`${name}[${cpu}]\t\t${hexN(selector, 4)}`);
    this.obj('segment')[name] = hexN(selector, 4);
  }

  /** Registers and segments of a vCPU state, those selected (all with get-all). */
  state(cpu: number, st: VcpuStateJson, regs: readonly RegisterName[], descs: readonly DescName[], sels: readonly SelectorName[]): void {
    for (const r of REGISTER_ORDER) if (regs.includes(r)) this.register(cpu, r, registerValue(st, r));
    for (const d of DESC_ORDER) {
      if (!descs.includes(d)) continue;
      if (d === 'gdtr' || d === 'idtr') {
        const t = st[d === 'gdtr' ? 'gdt' : 'idt'];
        this.descriptor(cpu, d, t.base, t.limit);
      } else {
        const s = segmentOf(st, d);
        this.descriptor(cpu, d, s.base, s.limit, encodeAccess(s));
      }
    }
    for (const s of SELECTOR_ORDER) if (sels.includes(s)) this.selector(cpu, s, segmentOf(st, s).selector);
  }

  memseg(entries: MemmapEntry[]): void {
    this.lines.push('ID  Length      Name');
    const segs = memsegs(entries);
    for (const s of segs) this.lines.push(`${String(s.id).padEnd(4)}${humanizeBytes(s.length).padEnd(12)}${s.name}`);
    this.data.memseg = segs.map((s) => ({ id: s.id, length: s.length, name: s.name }));
  }

  memmap(entries: MemmapEntry[]): void {
    this.lines.push('Address     Length      Segment     Offset      Prot  Flags');
    const rows: Record<string, unknown>[] = [];
    let lowmem = 0n;
    for (const e of entries) if (e.kind === 'lowmem') lowmem = BigInt(e.size);
    for (const e of entries) {
      const gpa = BigInt(e.gpa);
      const size = BigInt(e.size);
      const seg = segmentName(e.kind);
      const offset = e.kind === 'highmem' ? lowmem : 0n;
      const prot = e.readonly ? 'R-X' : 'RWX';
      this.lines.push(`${gpa.toString(16).toUpperCase().padEnd(12)}${humanizeBytes(size).padEnd(12)}${seg.padEnd(12)}`
        + `${offset.toString(16).toUpperCase().padEnd(12)}${prot}   `);
      rows.push({ address: `0x${gpa.toString(16)}`, length: Number(size), segment: seg, offset: `0x${offset.toString(16)}`, prot, flags: '' });
    }
    this.data.memmap = rows;
  }

  activeCpus(cpus: number[]): void {
    this.lines.push(`active cpus:\t${cpus.length ? cpus.map((c, i) => `${i ? ', ' : ' '}${c}`).join('') : ' (none)'}`);
    this.data['active-cpus'] = cpus;
  }

  stats(cpu: number, s: StatsJson): void {
    const stat = statLines(s);
    this.lines.push(`vcpu${cpu} stats:`);
    for (const { description, value } of stat) this.lines.push(`${description.padEnd(40)}\t${value}`);
    this.data.stats = { vcpu: cpu, stat: stat.map((x) => ({ description: x.description, value: Number(x.value) })) };
  }

  topology(t: TopologyJson): void {
    const maxcpus = t.cpus;
    this.lines.push(`cpu_topology:\tsockets=${t.sockets}, cores=${t.cores}, threads=${t.threads}, maxcpus=${maxcpus}`);
    this.data['cpu-topology'] = { sockets: t.sockets, cores: t.cores, threads: t.threads, maxcpus };
  }

  /** The whole output in the chosen format. */
  render(o: LibxoOptions): string {
    if (o.format === 'text') return this.lines.length ? `${this.lines.join('\n')}\n` : '';
    if (o.format === 'json') return `${JSON.stringify({ bhyvectl: this.data }, null, o.pretty ? 2 : undefined)}\n`;
    const builder = new XMLBuilder({ format: o.pretty, indentBy: '  ', suppressEmptyNode: false });
    const xml = builder.build({ bhyvectl: this.data }) as string;
    return xml.endsWith('\n') ? xml : `${xml}\n`;
  }
}

function segmentName(kind: string): string {
  return kind === 'lowmem' || kind === 'highmem' ? 'sysmem' : kind;
}

/** Memory segments behind a memory map: sysmem (all RAM) then the others. */
export function memsegs(entries: MemmapEntry[]): { id: number; length: number; name: string }[] {
  let sysmem = 0;
  const others: { id: number; length: number; name: string }[] = [];
  for (const e of entries) {
    if (e.kind === 'lowmem' || e.kind === 'highmem') sysmem += Number(BigInt(e.size));
    else others.push({ id: 1 + others.length, length: Number(BigInt(e.size)), name: e.kind });
  }
  return sysmem ? [{ id: 0, length: sysmem, name: 'sysmem' }, ...others] : others;
}

/** Stats as bhyvectl lists them: description and count. */
export function statLines(s: StatsJson): { description: string; value: string }[] {
  const out: { description: string; value: string }[] = [];
  const exits = Object.entries(s.exits ?? {});
  out.push({ description: 'total number of vm exits', value: String(exits.reduce((n, [, v]) => n + Number(v), 0)) });
  for (const [reason, n] of exits) out.push({ description: `vm exits due to ${reason}`, value: String(n) });
  for (const [name, v] of Object.entries(s.kvm ?? {})) out.push({ description: `kvm ${name}`, value: String(v) });
  for (const [dev, counters] of Object.entries(s.devices ?? {})) {
    for (const [name, v] of Object.entries(counters)) out.push({ description: `${dev} ${name}`, value: String(v) });
  }
  return out;
}
