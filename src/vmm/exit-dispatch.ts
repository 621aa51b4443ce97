// What a vCPU does after KVM_RUN returns: one table from exit reason to
// handler. Handlers read the exit from the kvm_run page (a DataView, so unit
// tests can build synthetic exits without /dev/kvm) and either let the vCPU
// continue or end the run with a bhyve(8) outcome.

import type { AccessSize } from '../devices/device.js';
import type { ExitRequest } from './exit-status.js';
import type { IoBus } from './io-bus.js';
import {
  EXIT, EXIT_NAMES, getU64, IO_DIRECTION_OUT, KVM_RUN_OFF, RUN_FAIL_ENTRY, RUN_INTERNAL, RUN_IO, RUN_MMIO, RUN_MSR,
  RUN_SYSTEM_EVENT, SYSTEM_EVENT,
} from '../sys/kvm-abi.js';

export type ExitAction = 'continue' | 'halted' | ExitRequest;

export interface ExitContext {
  readonly vcpuId: number;
  readonly run: DataView;
  readonly bus: IoBus;
  /** x86.strictio: an access to a port no device decodes ends the run. */
  readonly strictIo: boolean;
  /** The guest RIP, fetched lazily (a KVM_GET_REGS) for error messages. */
  rip(): number;
  /** Views of `run`'s MMIO data by length, made at the first MMIO exit. */
  mmioViews?: Uint8Array[];
}

export type ExitHandler = (ctx: ExitContext) => ExitAction;

const ALL_ONES = [0, 0xff, 0xffff, 0, 0xffffffff];

const hex = (n: number): string => `0x${n.toString(16)}`;

/** The MMIO data field of the vCPU's kvm_run page as a view of `len`
 * bytes (1..8). The views are made once per vCPU and kept in its context,
 * not one per exit: a device uses `data` only during the call (the next exit
 * overwrites it anyway). */
function mmioData(ctx: ExitContext, len: number): Uint8Array {
  let views = ctx.mmioViews;
  if (views === undefined) {
    const v = ctx.run;
    const at = v.byteOffset + KVM_RUN_OFF.exit + RUN_MMIO.data;
    views = Array.from({ length: 9 }, (_, n) => new Uint8Array(v.buffer, at, n));
    ctx.mmioViews = views;
  }
  return views[len];
}

function handleIo(ctx: ExitContext): ExitAction {
  const v = ctx.run;
  const e = KVM_RUN_OFF.exit;
  const out = v.getUint8(e + RUN_IO.direction) === IO_DIRECTION_OUT;
  const size = v.getUint8(e + RUN_IO.size) as AccessSize;
  const port = v.getUint16(e + RUN_IO.port, true);
  const count = v.getUint32(e + RUN_IO.count, true);
  let off = getU64(v, e + RUN_IO.data_offset);
  if (size !== 1 && size !== 2 && size !== 4) return { kind: 'error', message: `vCPU ${ctx.vcpuId}: bad port I/O size ${size}` };
  if (off + count * size > v.byteLength) return { kind: 'error', message: `vCPU ${ctx.vcpuId}: port I/O data outside kvm_run` };
  for (let i = 0; i < count; i++, off += size) {
    if (out) {
      const value = size === 1 ? v.getUint8(off) : size === 2 ? v.getUint16(off, true) : v.getUint32(off, true);
      if (!ctx.bus.portWrite(port, size, value) && ctx.strictIo) return unhandledPort(ctx, port, size, 'out');
    } else {
      let value = ctx.bus.portRead(port, size);
      if (value === undefined) {
        if (ctx.strictIo) return unhandledPort(ctx, port, size, 'in');
        value = ALL_ONES[size];
      }
      if (size === 1) v.setUint8(off, value);
      else if (size === 2) v.setUint16(off, value, true);
      else v.setUint32(off, value >>> 0, true);
    }
  }
  return 'continue';
}

function unhandledPort(ctx: ExitContext, port: number, size: number, dir: string): ExitAction {
  return {
    kind: 'error',
    message: `unhandled ${dir} of ${size} byte(s) at I/O port ${hex(port)} by vCPU ${ctx.vcpuId} at rip ${hex(ctx.rip())} (x86.strictio is set)`,
  };
}

function handleMmio(ctx: ExitContext): ExitAction {
  const v = ctx.run;
  const e = KVM_RUN_OFF.exit;
  const addr = getU64(v, e + RUN_MMIO.phys_addr);
  const len = v.getUint32(e + RUN_MMIO.len, true);
  if (len < 1 || len > 8) return { kind: 'error', message: `vCPU ${ctx.vcpuId}: bad MMIO length ${len}` };
  const data = mmioData(ctx, len);
  if (v.getUint8(e + RUN_MMIO.is_write)) {
    ctx.bus.mmioWrite(addr, data);
  } else if (!ctx.bus.mmioRead(addr, data)) {
    // bhyve's fallback for the PCI holes: reads of nothing return all-ones.
    data.fill(0xff);
  }
  return 'continue';
}

function handleSystemEvent(ctx: ExitContext): ExitAction {
  const type = ctx.run.getUint32(KVM_RUN_OFF.exit + RUN_SYSTEM_EVENT.type, true);
  if (type === SYSTEM_EVENT.RESET) return { kind: 'reset', why: `vCPU ${ctx.vcpuId} requested a reset` };
  if (type === SYSTEM_EVENT.SHUTDOWN) return { kind: 'poweroff', why: `vCPU ${ctx.vcpuId} requested a shutdown` };
  return { kind: 'error', message: `vCPU ${ctx.vcpuId}: system event ${type} at rip ${hex(ctx.rip())}` };
}

function handleInternalError(ctx: ExitContext): ExitAction {
  const sub = ctx.run.getUint32(KVM_RUN_OFF.exit + RUN_INTERNAL.suberror, true);
  const what = sub === 1 ? 'instruction emulation failed' : `internal error, suberror ${sub}`;
  return { kind: 'error', message: `vCPU ${ctx.vcpuId}: KVM ${what} at rip ${hex(ctx.rip())}` };
}

function handleFailEntry(ctx: ExitContext): ExitAction {
  const reason = ctx.run.getBigUint64(KVM_RUN_OFF.exit + RUN_FAIL_ENTRY.hardware_entry_failure_reason, true);
  return { kind: 'error', message: `vCPU ${ctx.vcpuId}: VM entry failed, hardware reason 0x${reason.toString(16)}` };
}

// With x86.strictmsr=false, KVM hands accesses to MSRs it does not know to
// us: reads return 0 and writes are ignored, as bhyve's -w does.
function handleRdmsr(ctx: ExitContext): ExitAction {
  ctx.run.setUint8(KVM_RUN_OFF.exit + RUN_MSR.error, 0);
  ctx.run.setBigUint64(KVM_RUN_OFF.exit + RUN_MSR.data, 0n, true);
  return 'continue';
}

function handleWrmsr(ctx: ExitContext): ExitAction {
  ctx.run.setUint8(KVM_RUN_OFF.exit + RUN_MSR.error, 0);
  return 'continue';
}

export const EXIT_HANDLERS: Readonly<Record<number, ExitHandler>> = {
  [EXIT.IO]: handleIo,
  [EXIT.MMIO]: handleMmio,
  [EXIT.SHUTDOWN]: (ctx) => ({ kind: 'triplefault', vcpu: ctx.vcpuId, rip: ctx.rip() }),
  [EXIT.SYSTEM_EVENT]: handleSystemEvent,
  [EXIT.INTERNAL_ERROR]: handleInternalError,
  [EXIT.FAIL_ENTRY]: handleFailEntry,
  [EXIT.HLT]: () => 'halted',
  [EXIT.IRQ_WINDOW_OPEN]: () => 'continue',
  [EXIT.INTR]: () => 'continue',
  [EXIT.X86_RDMSR]: handleRdmsr,
  [EXIT.X86_WRMSR]: handleWrmsr,
};

/** Per-reason exit counters, indexed by KVM exit reason. */
export class ExitCounters {
  readonly counts = new Float64Array(64);
  add(reason: number): void { this.counts[reason < 64 ? reason : 0]++; }
}

export function dispatchExit(reason: number, ctx: ExitContext): ExitAction {
  const h = EXIT_HANDLERS[reason];
  if (h) return h(ctx);
  const name = EXIT_NAMES[reason] ?? 'unknown';
  return { kind: 'error', message: `vCPU ${ctx.vcpuId}: unhandled VM exit ${reason} (${name}) at rip ${hex(ctx.rip())}` };
}
