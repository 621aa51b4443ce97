// What bhyvectl can ask a running bhyve through its control socket
// (control-socket.ts): the operations and how each is served.

import type { ConfigTree } from '../config/tree.js';
import type { ControlHandlers, ControlRequest } from './control-socket.js';
import type { ExitRequest } from './exit-status.js';
import type { KvmStats } from '../sys/kvm.js';
import type { Machine } from './machine.js';
import { HIGHMEM_BASE } from '../sys/memory-map.js';
import { VCPU_STATE, type VcpuControl } from './vcpu-control.js';
import type { VcpuRequester } from './vcpu-requests.js';
import type { VcpuStateUpdate } from './vcpu-state.js';

export interface ControlContext {
  config: ConfigTree;
  machine: Machine;
  control: VcpuControl;
  requester: VcpuRequester;
  stats: Array<KvmStats | undefined>;
  finish: (r: ExitRequest) => void;
  /** Counters kept on the main thread (the fbuf VNC server), by device name. */
  hostStats?: () => Record<string, Record<string, number>>;
}

/** The operation table. */
export function controlHandlers(c: ControlContext): ControlHandlers {
  const n = c.machine.vcpus.length;
  const cpuOf = (req: ControlRequest): number => {
    const cpu = req.cpu === undefined ? 0 : Number(req.cpu);
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= n) throw new Error(`no vCPU ${String(req.cpu)} (the VM has ${n})`);
    return cpu;
  };
  return {
    'info': () => ({
      name: c.config.get('name'), pid: process.pid, running: true, cpus: n,
      memsize: c.machine.layout.lowmem + c.machine.layout.highmem,
      topology: c.machine.topo,
    }),
    'get-state': (req) => c.requester.request(cpuOf(req), { op: 'get-state' }),
    'set-state': (req) => c.requester.request(cpuOf(req), { op: 'set-state', update: req.update as VcpuStateUpdate }),
    'inject-nmi': (req) => c.requester.request(cpuOf(req), { op: 'nmi' }),
    'get-stats': async (req) => {
      const cpu = cpuOf(req);
      const kvm: Record<string, string> = {};
      const st = c.stats[cpu];
      for (const name of st?.names() ?? []) kvm[name] = String(st!.read(name) ?? 0n);
      const exits = await c.requester.request(cpu, { op: 'exit-counts' });
      // The devices run on vCPU 0's thread: their counters come with its stats.
      if (cpu !== 0) return { exits, kvm };
      const devices = await c.requester.request(0, { op: 'device-stats' }) as Record<string, Record<string, number>>;
      for (const [dev, counters] of Object.entries(c.hostStats?.() ?? {})) devices[dev] = { ...devices[dev], ...counters };
      return { exits, kvm, devices };
    },
    'get-memmap': () => memmapOf(c.machine),
    'get-active-cpus': () => Array.from({ length: n }, (_, i) => i).filter((i) => c.control.state(i) !== VCPU_STATE.INACTIVE),
    'get-cpu-topology': () => ({ cpus: n, ...c.machine.topo }),
    'force-reset': () => { c.finish({ kind: 'reset', why: 'bhyvectl --force-reset' }); return null; },
    'force-poweroff': () => { c.finish({ kind: 'poweroff', why: 'bhyvectl --force-poweroff' }); return null; },
    // The PM device runs on vCPU 0's thread: it checks and wakes in one step
    // there, so the answer (woke or not asleep) cannot race a wake of its own.
    'wakeup': async () => ({ woke: await c.requester.request(0, { op: 'wakeup' }) === true }),
  };
}

export interface MemmapEntry { gpa: string; size: string; kind: string; readonly: boolean; path?: string }

export function memmapOf(m: Pick<Machine, 'layout' | 'bootrom'>): MemmapEntry[] {
  const out: MemmapEntry[] = [{ gpa: '0x0', size: `0x${m.layout.lowmem.toString(16)}`, kind: 'lowmem', readonly: false }];
  if (m.layout.highmem > 0) out.push({ gpa: `0x${HIGHMEM_BASE.toString(16)}`, size: `0x${m.layout.highmem.toString(16)}`, kind: 'highmem', readonly: false });
  for (const b of m.bootrom) {
    out.push({ gpa: `0x${b.seg.gpa.toString(16)}`, size: `0x${b.seg.size.toString(16)}`, kind: b.seg.kind === 'rom' ? 'bootrom' : 'bootvars', readonly: true, path: b.seg.path });
  }
  return out;
}

