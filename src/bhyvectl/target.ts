// What bhyvectl operates on: a VM object that a live bhyve is running (asked
// through its control socket) or an idle one (answered from what is stored in
// its directory: the boot state bhyveload left for vCPU 0 and the size of the
// memory file). Operations only a running VM can do fail with one line.

import fs from 'node:fs';
import { UserError } from '../user-error.js';

import { controlRequest } from '../vmm/control-socket.js';
import { HIGHMEM_BASE, computeLayout } from '../sys/memory-map.js';
import {
  CONTROL_REGS, DEBUG_REGS, SEGMENT_REGS, type SegmentJson, type VcpuStateJson, type VcpuStateUpdate, hex64, parseHex64,
} from '../vmm/vcpu-state.js';
import { REGS_ORDER, type RegName } from '../sys/kvm-abi.js';
import { VmObject, VmObjectError } from '../vmm/vm-object.js';

/** A bhyvectl failure the user can act on; bhyvectl exits 1. */
export class BhyvectlError extends UserError { override readonly name: string = 'BhyvectlError'; }

export interface MemmapEntry { gpa: string; size: string; kind: string; readonly: boolean; path?: string }
export interface StatsJson {
  exits: Record<string, number>;
  kvm: Record<string, string>;
  /** vCPU 0 only: device counters by device name ("virtio-blk@pci.0.3.0"). */
  devices?: Record<string, Record<string, number>>;
}
export interface TopologyJson { cpus: number; sockets: number; cores: number; threads: number }

export interface VmTarget {
  readonly name: string;
  readonly running: boolean;
  getState(cpu: number): Promise<VcpuStateJson>;
  setState(cpu: number, update: VcpuStateUpdate): Promise<void>;
  memmap(): Promise<MemmapEntry[]>;
  activeCpus(): Promise<number[]>;
  stats(cpu: number): Promise<StatsJson>;
  topology(): Promise<TopologyJson>;
  injectNmi(cpu: number): Promise<void>;
  forceReset(): Promise<void>;
  forcePoweroff(): Promise<void>;
  /** Wakes the guest from ACPI S3; fails with one line when it is not asleep. */
  wakeup(): Promise<void>;
}

/** Opens VM `name`; FreeBSD's wording when there is none. */
export function openVmObject(name: string): VmObject {
  try {
    return VmObject.open(name);
  } catch (e) {
    if (e instanceof VmObjectError && /^no VM named/.test(e.message)) {
      throw new BhyvectlError(`vm_open: ${name} could not be opened: No such file or directory`);
    }
    throw e;
  }
}

/** The target for a VM object: its running bhyve, or its stored state. */
export async function targetFor(obj: VmObject): Promise<VmTarget> {
  const pid = obj.runningPid();
  if (pid === undefined) return new IdleTarget(obj);
  // A bhyve that has just started may not listen yet: wait a little.
  for (let i = 0; i < 40 && !fs.existsSync(obj.controlSocketFile); i++) {
    await new Promise((r) => setTimeout(r, 50));
    if (obj.runningPid() === undefined) return new IdleTarget(obj);
  }
  return new RunningTarget(obj, pid);
}

export class RunningTarget implements VmTarget {
  readonly running = true;
  readonly name: string;

  constructor(readonly obj: VmObject, readonly pid: number) {
    this.name = obj.name;
  }

  private async ask(op: string, args: Record<string, unknown> = {}): Promise<unknown> {
    try {
      return await controlRequest(this.obj.controlSocketPath, op, args);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ECONNREFUSED') {
        throw new BhyvectlError(`VM '${this.name}'${this.pid ? ` (bhyve pid ${this.pid})` : ''} is not answering on ${this.obj.controlSocketFile}`);
      }
      throw new BhyvectlError(`VM '${this.name}': ${(e as Error).message}`);
    }
  }

  async getState(cpu: number): Promise<VcpuStateJson> { return await this.ask('get-state', { cpu }) as VcpuStateJson; }
  async setState(cpu: number, update: VcpuStateUpdate): Promise<void> { await this.ask('set-state', { cpu, update }); }
  async memmap(): Promise<MemmapEntry[]> { return await this.ask('get-memmap') as MemmapEntry[]; }
  async activeCpus(): Promise<number[]> { return await this.ask('get-active-cpus') as number[]; }
  async stats(cpu: number): Promise<StatsJson> { return await this.ask('get-stats', { cpu }) as StatsJson; }
  async topology(): Promise<TopologyJson> { return await this.ask('get-cpu-topology') as TopologyJson; }
  async injectNmi(cpu: number): Promise<void> { await this.ask('inject-nmi', { cpu }); }
  async forceReset(): Promise<void> { await this.ask('force-reset'); }
  async forcePoweroff(): Promise<void> { await this.ask('force-poweroff'); }
  async wakeup(): Promise<void> {
    if (!(await this.ask('wakeup') as { woke: boolean }).woke) {
      throw new BhyvectlError(`VM '${this.name}': the guest is not suspended (ACPI S3); nothing to wake`);
    }
  }
}

/** vCPU state at power-on (Intel SDM vol. 3 table 9-1), as KVM creates it. */
export function resetState(): VcpuStateJson {
  const seg = (o: Partial<SegmentJson>): SegmentJson => ({
    base: '0x0', limit: 0xffff, selector: 0, type: 3, present: 1, dpl: 0, db: 0, s: 1, l: 0, g: 0, avl: 0, unusable: 0, ...o,
  });
  const regs = Object.fromEntries(REGS_ORDER.map((r) => [r, '0x0'])) as Record<RegName, string>;
  regs.rip = '0xfff0';
  regs.rflags = '0x2';
  return {
    regs,
    segments: {
      cs: seg({ selector: 0xf000, base: '0xffff0000', type: 0xb }),
      ds: seg({}), es: seg({}), fs: seg({}), gs: seg({}), ss: seg({}),
      tr: seg({ type: 0xb, s: 0 }),
      ldt: seg({ type: 2, s: 0 }),
    },
    gdt: { base: '0x0', limit: 0xffff },
    idt: { base: '0x0', limit: 0xffff },
    control: { cr0: '0x60000010', cr2: '0x0', cr3: '0x0', cr4: '0x0', cr8: '0x0', efer: '0x0', apic_base: '0xfee00900' },
    debug: { dr0: '0x0', dr1: '0x0', dr2: '0x0', dr3: '0x0', dr6: '0xffff0ff0', dr7: '0x400' },
  };
}

interface StoredBootState {
  version: number;
  entry?: string;
  regs: Partial<Record<RegName, string>>;
  sregs: Record<string, unknown> & { gdt: { base: string; limit: number }; idt: { base: string; limit: number } };
}

/** The registers the stored boot state gives vCPU 0 when bhyve starts it. */
export function stateFromBootState(bs: StoredBootState): VcpuStateJson {
  const st = resetState();
  for (const r of REGS_ORDER) st.regs[r] = bs.regs[r] ?? '0x0';
  for (const s of SEGMENT_REGS) {
    const seg = bs.sregs[s] as SegmentJson | undefined;
    if (seg) st.segments[s] = { ...seg };
  }
  st.gdt = { ...bs.sregs.gdt };
  st.idt = { ...bs.sregs.idt };
  for (const c of ['cr0', 'cr3', 'cr4', 'efer'] as const) {
    const v = bs.sregs[c];
    if (typeof v === 'string') st.control[c] = v;
  }
  return st;
}

function checkBootState(raw: unknown, name: string): StoredBootState {
  const bs = raw as Partial<StoredBootState>;
  if (typeof bs !== 'object' || bs === null || typeof bs.regs !== 'object' || typeof bs.sregs !== 'object'
    || typeof bs.sregs?.gdt !== 'object' || typeof bs.sregs?.idt !== 'object') {
    throw new BhyvectlError(`the stored vCPU state of VM '${name}' is not one this bhyvectl understands; run bhyveload again`);
  }
  // Every value that is printed as a number must be one (a hand-edited or
  // damaged file must not end in an internal error).
  try {
    const st = stateFromBootState(bs as StoredBootState);
    for (const [k, v] of Object.entries(st.regs)) parseHex64(String(v), k);
    for (const [k, seg] of Object.entries(st.segments)) {
      parseHex64(String(seg.base), `${k}.base`);
      for (const f of ['limit', 'selector', 'type'] as const) {
        if (!Number.isInteger(seg[f])) throw new RangeError(`invalid value '${String(seg[f])}' for ${k}.${f}`);
      }
    }
    for (const t of ['gdt', 'idt'] as const) {
      parseHex64(String(st[t].base), `${t}.base`);
      if (!Number.isInteger(st[t].limit)) throw new RangeError(`invalid value '${String(st[t].limit)}' for ${t}.limit`);
    }
    for (const [k, v] of Object.entries(st.control)) parseHex64(String(v), k);
  } catch (e) {
    throw new BhyvectlError(`the stored vCPU state of VM '${name}' is corrupt (${(e as Error).message}); run bhyveload again`);
  }
  return bs as StoredBootState;
}

const IDLE_SETTABLE_CONTROL = new Set(['cr0', 'cr3', 'cr4', 'efer']);

export class IdleTarget implements VmTarget {
  readonly running = false;
  readonly name: string;

  constructor(readonly obj: VmObject) {
    this.name = obj.name;
  }

  private notRunning(what: string): BhyvectlError {
    return new BhyvectlError(`VM '${this.name}' is not running: ${what} needs a running bhyve`);
  }

  private stored(): StoredBootState | undefined {
    let raw: unknown;
    try {
      raw = this.obj.readBootState();
    } catch (e) {
      throw new BhyvectlError((e as Error).message);
    }
    return raw === undefined ? undefined : checkBootState(raw, this.name);
  }

  private checkCpu(cpu: number): void {
    if (cpu !== 0) {
      throw new BhyvectlError(`VM '${this.name}' is not running: only vCPU 0's state is stored (vCPU ${cpu} exists once bhyve runs)`);
    }
  }

  async getState(cpu: number): Promise<VcpuStateJson> {
    this.checkCpu(cpu);
    const bs = this.stored();
    return bs ? stateFromBootState(bs) : resetState();
  }

  async setState(cpu: number, u: VcpuStateUpdate): Promise<void> {
    this.checkCpu(cpu);
    const bs = this.stored();
    if (!bs) {
      throw new BhyvectlError(`VM '${this.name}' has no stored vCPU state to change: load a kernel with bhyveload, or set registers while bhyve runs it`);
    }
    for (const k of Object.keys(u.control ?? {})) if (!IDLE_SETTABLE_CONTROL.has(k)) throw this.notRunning(`setting ${k}`);
    if (u.debug && Object.keys(u.debug).length) throw this.notRunning(`setting ${Object.keys(u.debug)[0]}`);
    for (const [r, v] of Object.entries(u.regs ?? {})) {
      if (!(REGS_ORDER as readonly string[]).includes(r)) throw new BhyvectlError(`unknown register '${r}'`);
      bs.regs[r as RegName] = hex64(parseHex64(v as string, r));
    }
    for (const [s, seg] of Object.entries(u.segments ?? {})) {
      const cur = (bs.sregs[s] ?? resetState().segments[s as keyof VcpuStateJson['segments']]) as SegmentJson;
      const next = { ...cur, ...seg } as SegmentJson;
      next.base = hex64(parseHex64(String(next.base), `${s}.base`));
      bs.sregs[s] = next;
    }
    for (const t of ['gdt', 'idt'] as const) {
      const d = u[t];
      if (!d) continue;
      if (d.base !== undefined) bs.sregs[t].base = hex64(parseHex64(d.base, `${t}.base`));
      if (d.limit !== undefined) bs.sregs[t].limit = Number(d.limit) & 0xffff;
    }
    for (const [c, v] of Object.entries(u.control ?? {})) bs.sregs[c] = hex64(parseHex64(v as string, c));
    this.obj.writeBootState(bs);
  }

  async memmap(): Promise<MemmapEntry[]> {
    const size = this.obj.memorySize();
    if (size === undefined || size === 0) return [];
    const layout = computeLayout(size);
    const out: MemmapEntry[] = [{ gpa: '0x0', size: `0x${layout.lowmem.toString(16)}`, kind: 'lowmem', readonly: false }];
    if (layout.highmem > 0) out.push({ gpa: `0x${HIGHMEM_BASE.toString(16)}`, size: `0x${layout.highmem.toString(16)}`, kind: 'highmem', readonly: false });
    return out;
  }

  async activeCpus(): Promise<number[]> { return []; }
  async stats(): Promise<StatsJson> { throw this.notRunning('--get-stats'); }
  async topology(): Promise<TopologyJson> { throw this.notRunning('--get-cpu-topology (set by bhyve -c)'); }
  async injectNmi(): Promise<void> { throw this.notRunning('--inject-nmi'); }
  async forceReset(): Promise<void> { throw this.notRunning('--force-reset'); }
  async forcePoweroff(): Promise<void> { throw this.notRunning('--force-poweroff'); }
  async wakeup(): Promise<void> { throw this.notRunning('--wakeup'); }
}

export { CONTROL_REGS, DEBUG_REGS, SEGMENT_REGS };
