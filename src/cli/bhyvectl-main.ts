// bhyvectl(8): argv -> operations on a VM object, in the order FreeBSD's
// bhyvectl.c performs them (create, open, set memory, set registers, inject
// NMI, print memory map, registers, segments, CPUs, stats, topology, force
// reset/poweroff, destroy). bin/bhyvectl calls it.

import { BHYVECTL_OPTIONS } from '../config/bhyvectl-options.js';
import { UsageError } from '../config/errors.js';
import type { VcpuStateUpdate, SegmentJson } from '../vmm/vcpu-state.js';
import { VmObject, VmObjectError } from '../vmm/vm-object.js';
import { decodeAccess } from '../bhyvectl/descriptor.js';
import {
  DESC_ORDER, type DescName, type LibxoOptions, parseLibxo, REGISTER_ORDER, type RegisterName, Report, SELECTOR_ORDER,
  type SelectorName,
} from '../bhyvectl/report.js';
import { BhyvectlError, openVmObject, targetFor, type VmTarget } from '../bhyvectl/target.js';
import { reportError, writeOut } from './output.js';
import { NoFramebufferError, screenshotPng } from '../devices/display/screenshot.js';
import fs from 'node:fs';

const PROG = 'bhyvectl';
const USAGE_HINT = 'see bhyvectl(8)';
const OPTION_ARG = new Map(BHYVECTL_OPTIONS.map((o) => [o.flag, o.arg !== undefined]));

/** Options (by long name) with their last value: true for flags. */
export type ParsedOptions = Map<string, string | true>;

/** getopt_long(3) as bhyvectl calls it: "--name", "--name=value" or
 * "--name value", unambiguous prefixes accepted; no short options. */
export function parseBhyvectlArgs(argv: readonly string[]): ParsedOptions {
  const out: ParsedOptions = new Map();
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i];
    if (word === '--') {
      if (i + 1 < argv.length) throw new UsageError(`unexpected operand: ${argv[i + 1]}`, 1);
      break;
    }
    if (!word.startsWith('--')) {
      if (word.startsWith('-') && word.length > 1) throw new UsageError(`unrecognized option '${word}'`, 1);
      throw new UsageError(`unexpected operand: ${word}`, 1);
    }
    const eq = word.indexOf('=');
    const given = word.slice(2, eq < 0 ? undefined : eq);
    let name = given;
    if (!OPTION_ARG.has(given)) {
      const matches = [...OPTION_ARG.keys()].filter((k) => k.startsWith(given));
      if (matches.length !== 1 || given === '') {
        throw new UsageError(matches.length > 1 ? `option '--${given}' is ambiguous` : `unrecognized option '--${given}'`, 1);
      }
      name = matches[0];
    }
    if (OPTION_ARG.get(name)) {
      if (eq >= 0) out.set(name, word.slice(eq + 1));
      else if (i + 1 < argv.length) out.set(name, argv[++i]);
      else throw new UsageError(`option '--${name}' requires an argument`, 1);
    } else {
      if (eq >= 0) throw new UsageError(`option '--${name}' doesn't allow an argument`, 1);
      out.set(name, true);
    }
  }
  return out;
}

/** strtoul(s, NULL, 0), but strict: the whole word must be a number. */
export function parseNumber(s: string, what: string, bits = 64): bigint {
  const t = s.trim();
  let v: bigint;
  if (/^0[xX][0-9a-fA-F]+$/.test(t)) v = BigInt(t);
  else if (/^0[0-7]*$/.test(t)) v = BigInt(`0o${t.slice(1) || '0'}`);
  else if (/^[1-9][0-9]*$/.test(t)) v = BigInt(t);
  else throw new UsageError(`invalid value '${s}' for --${what}`, 1);
  if (v >= 1n << BigInt(bits)) throw new UsageError(`value '${s}' for --${what} does not fit in ${bits} bits`, 1);
  return v;
}

/** Operations this bhyvectl does not do, each refused with one line. */
const UNSUPPORTED = new Set([
  'run', 'get-gpa-pmap', 'get-lowmem', 'get-highmem', 'get-debug-cpus', 'get-suspended-cpus', 'get-intinfo',
  'get-exit-reason', 'getcap', 'setcap', 'assert-lapic-lvt', 'set-x2apic-state', 'get-x2apic-state',
  'get-rtc-time', 'set-rtc-time', 'get-rtc-nvram', 'set-rtc-nvram', 'unassign-pptdev',
]);
const isHardwareOnly = (n: string): boolean => /^get-(vmcs-|vmcb-|avic-)/.test(n)
  || ['get-eptp', 'get-exception-bitmap', 'get-io-bitmap-address', 'get-tsc-offset', 'get-msr-bitmap',
    'get-msr-bitmap-address', 'get-guest-pat', 'get-guest-sysenter', 'get-apic-access-address', 'get-virtual-apic-address'].includes(n);

const GPRS = new Set(['rip', 'rsp', 'rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rbp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rflags']);
const CONTROL = new Set(['efer', 'cr0', 'cr2', 'cr3', 'cr4']);
const DEBUG = new Set(['dr0', 'dr1', 'dr2', 'dr3', 'dr6', 'dr7']);
const kvmSeg = (s: string): keyof NonNullable<VcpuStateUpdate['segments']> => (s === 'ldtr' ? 'ldt' : s) as 'ldt';

/** The register update that the --set-* options ask for (empty when none). */
export function buildUpdate(opts: ParsedOptions): VcpuStateUpdate {
  const u: VcpuStateUpdate = {};
  const num = (name: string, bits = 64): bigint => parseNumber(String(opts.get(name) ?? '0'), name, bits);
  const hex = (v: bigint): string => `0x${v.toString(16)}`;
  for (const r of REGISTER_ORDER) {
    if (!opts.has(`set-${r}`)) continue;
    const v = hex(num(`set-${r}`));
    if (GPRS.has(r)) (u.regs ??= {})[r as 'rax'] = v;
    else if (CONTROL.has(r)) (u.control ??= {})[r as 'cr0'] = v;
    else if (DEBUG.has(r)) (u.debug ??= {})[r as 'dr0'] = v;
  }
  const segs = (): NonNullable<VcpuStateUpdate['segments']> => (u.segments ??= {});
  for (const d of DESC_ORDER) {
    if (!opts.has(`set-desc-${d}`)) continue;
    const base = hex(num('desc-base'));
    const limit = Number(num('desc-limit', 32));
    if (d === 'gdtr' || d === 'idtr') {
      u[d === 'gdtr' ? 'gdt' : 'idt'] = { base, limit };
    } else {
      const access = Number(num('desc-access', 32));
      segs()[kvmSeg(d)] = { ...segs()[kvmSeg(d)], base, limit, ...decodeAccess(access) } as Partial<SegmentJson>;
    }
  }
  for (const s of SELECTOR_ORDER) {
    if (!opts.has(`set-${s}`)) continue;
    const sel = Number(num(`set-${s}`, 16));
    segs()[kvmSeg(s)] = { ...segs()[kvmSeg(s)], selector: sel };
  }
  return u;
}

const isEmptyUpdate = (u: VcpuStateUpdate): boolean => Object.keys(u).length === 0;

/** Takes the VM's run lock, retrying for up to `timeoutMs`: 'locked', or
 * 'held' when it stays held, or 'gone' when the VM went away meanwhile (a
 * bhyve that created it destroys it when it ends). */
async function lockWithin(obj: VmObject, timeoutMs: number): Promise<'locked' | 'held' | 'gone'> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      obj.lock();
      return 'locked';
    } catch (e) {
      if (!(e instanceof VmObjectError)) throw e;
      if (/was destroyed/.test(e.message)) return 'gone';
      if (!/already running/.test(e.message)) throw e;
      if (Date.now() >= end) return 'held';
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs bhyvectl with argv (without the program name); resolves to the exit status. */
export async function bhyvectlMain(argv: readonly string[]): Promise<number> {
  let report: Report | undefined;
  let libxo: LibxoOptions = { format: 'text', pretty: false };
  try {
    const opts = parseBhyvectlArgs(argv);
    if (opts.has('libxo')) {
      try { libxo = parseLibxo(String(opts.get('libxo'))); } catch (e) { throw new UsageError((e as Error).message, 1); }
    }
    const vm = opts.get('vm');
    if (typeof vm !== 'string' || vm === '') throw new UsageError('missing --vm=NAME', 1);
    const cpu = opts.has('cpu') ? Number(parseNumber(String(opts.get('cpu')), 'cpu', 16)) : 0;
    const on = (n: string): boolean => opts.has(n);
    const all = on('get-all');

    for (const n of opts.keys()) {
      if (UNSUPPORTED.has(n)) throw new BhyvectlError(`not supported yet: --${n}`);
      if (isHardwareOnly(n)) throw new BhyvectlError(`not supported yet: --${n} (KVM does not expose the VMCS/VMCB)`);
      if (n === 'suspend' || n === 'checkpoint') throw new BhyvectlError(`not supported yet: snapshots (--${n})`);
    }
    if (opts.has('set-mem')) parseNumber(String(opts.get('set-mem')), 'set-mem', 32);
    const update = buildUpdate(opts);

    report = new Report(vm, cpu);
    if (on('create')) {
      try {
        VmObject.create(vm).unlock();
      } catch (e) {
        if (e instanceof VmObjectError && /already exists/.test(e.message)) {
          throw new BhyvectlError(`vm_create: ${vm}: VM already exists (destroy it first with bhyvectl --vm=${vm} --destroy)`);
        }
        throw e;
      }
    }
    const obj = openVmObject(vm);
    if (on('set-mem')) {
      const mb = Number(parseNumber(String(opts.get('set-mem')), 'set-mem', 32));
      const bytes = Math.ceil((mb * 1024 * 1024) / (2 * 1024 * 1024)) * 2 * 1024 * 1024;
      if (bytes === 0) throw new UsageError('invalid value \'0\' for --set-mem', 1);
      obj.ensureMemory(bytes);
    }

    const regs = REGISTER_ORDER.filter((r) => all || on(`get-${r}`)) as RegisterName[];
    const descs = DESC_ORDER.filter((d) => all || on(`get-desc-${d}`)) as DescName[];
    const sels = SELECTOR_ORDER.filter((s) => all || on(`get-${s}`)) as SelectorName[];
    const needsTarget = !isEmptyUpdate(update) || regs.length || descs.length || sels.length || all
      || ['inject-nmi', 'get-memseg', 'get-memmap', 'get-active-cpus', 'get-stats', 'get-cpu-topology', 'force-reset', 'force-poweroff', 'wakeup']
        .some(on);
    let target: VmTarget | undefined;
    if (needsTarget) target = await targetFor(obj);

    if (target && !isEmptyUpdate(update)) await target.setState(cpu, update);
    if (target && on('inject-nmi')) await target.injectNmi(cpu);
    if (target && (all || on('get-memseg') || on('get-memmap'))) {
      const map = await target.memmap();
      if (all || on('get-memseg')) report.memseg(map);
      if (all || on('get-memmap')) report.memmap(map);
    }
    if (target && (regs.length || descs.length || sels.length)) {
      report.state(cpu, await target.getState(cpu), regs, descs, sels);
    }
    if (target && (all || on('get-active-cpus'))) report.activeCpus(await target.activeCpus());
    // --get-all of an idle VM leaves out what only a running bhyve knows.
    if (target && (on('get-stats') || (all && target.running))) report.stats(cpu, await target.stats(cpu));
    if (target && (on('get-cpu-topology') || (all && target.running))) report.topology(await target.topology());
    if (on('screenshot')) {
      const file = String(opts.get('screenshot'));
      let shot: ReturnType<typeof screenshotPng>;
      try { shot = screenshotPng(obj.dir, vm); } catch (e) {
        if (e instanceof NoFramebufferError) throw new BhyvectlError(e.message);
        throw e;
      }
      try { fs.writeFileSync(file, shot.png); } catch (e) {
        throw new BhyvectlError(`cannot write ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
    }
    if (target && on('wakeup')) await target.wakeup();
    if (target && on('force-reset')) await target.forceReset();
    if (target && on('force-poweroff')) await target.forcePoweroff();

    if (on('destroy')) {
      const pid = obj.runningPid();
      if (pid !== undefined) {
        // As on FreeBSD, destroying a running VM ends its bhyve: power it off first.
        const t = target?.running ? target : await targetFor(obj);
        if (t.running) await t.forcePoweroff().catch(() => undefined);
      }
      // The run lock is free once no bhyve (or bhyveload) has the VM.
      const got = await lockWithin(obj, pid === undefined ? 0 : 10_000);
      if (got === 'held') {
        throw new BhyvectlError(`VM '${vm}' is still running${pid ? ` (bhyve pid ${pid})` : ''}${pid === undefined ? '' : ' after --force-poweroff'}; not destroyed`);
      }
      if (got === 'locked') obj.destroy();
    }
    await flush(report, libxo);
    return 0;
  } catch (err) {
    if (report) await flush(report, libxo);
    if (err instanceof BhyvectlError) {
      process.stderr.write(err.message.startsWith('vm_open:') ? `${err.message}\n` : `${PROG}: ${err.message}\n`);
      return err.exitCode ?? 1;
    }
    return reportError(PROG, err, 1, USAGE_HINT);
  }
}

async function flush(report: Report, libxo: LibxoOptions): Promise<void> {
  await writeOut(process.stdout, report.render(libxo));
}
