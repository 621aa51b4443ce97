// `bhyve`'s run: from a frozen config tree to a running VM and back to a
// bhyve(8) exit status. The main thread is the control plane (signals, host
// backends, the halt watchdog); each vCPU runs on its own worker thread.

import fs from 'node:fs';
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { parseMemorySize } from '../config/size.js';
import { ConfigError, ConfigTree } from '../config/tree.js';
import { UsageError } from '../config/errors.js';
import { openUartBackend, restoreTerminal, type UartBackendHost, type UartStreamTransfer } from '../devices/lpc/uart-backend.js';
import { Mailbox } from './ap-mailbox.js';
import { buildFirmwareInMemory } from '../firmware/index.js';
import { GuestMemory } from './guest-memory.js';
import { BootromError, loadBootrom, type BootromSegment } from './bootrom.js';
import { buildCpuid, type Topology } from './cpuid.js';
import { EXIT_ERROR, exitStatusOf, type ExitRequest } from './exit-status.js';
import {
  CAP, IDENTITY_MAP_ADDR, MSR_EXIT_REASON_UNKNOWN, PIT_SPEAKER_DUMMY, TSS_ADDR,
} from './kvm-abi.js';
import { Kvm, KvmStats, KvmUnavailableError, Vcpu, type Vm } from './kvm.js';
import {
  madvise, MADV_DODUMP, MADV_DONTDUMP, mlock, mmap, PROT_READ, PROT_WRITE, SysError, type Mapping,
} from './libc.js';
import { computeLayout, HIGHMEM_BASE, LEGACY_WINDOW_END, type MemoryLayout } from './memory-map.js';
import { mapGuestRam, ramRegions, ramSlots, type RamChunk } from './guest-ram.js';
import { checkRequirements, HostRequirementError, probeHost } from './probe.js';
import { DEVICE_REQUEST, Kicker, VCPU_REQUEST, VCPU_STATE, VcpuControl } from './vcpu-control.js';
import type { VcpuThreadData, VcpuThreadMessage } from './vcpu-thread-data.js';
import { VmObject, VmObjectError } from './vm-object.js';
import { ControlServer, type ControlHandlers, type ControlRequest } from './control-socket.js';
import { VcpuRequester } from './vcpu-requests.js';
import { applyVcpuState, SEGMENT_REGS, type VcpuStateUpdate } from './vcpu-state.js';
import { BOOT_STATE_VERSION, type BootState } from '../loader/boot-state.js';

/** A failure to set the VM up, reported to the user as one line. */
export class VmSetupError extends Error {}

const HALT_WATCH_MS = 100;
const STOP_GRACE_MS = 2000;

const SLOT_BOOTROM = 2;

/** Whether the legacy BIOS window is left to the chipset (QEMU personality). */
function legacyWindowFor(config: ConfigTree, layout: MemoryLayout): boolean {
  return config.get('lpc.fwcfg') === 'qemu' && layout.lowmem > LEGACY_WINDOW_END;
}

function intKey(config: ConfigTree, key: string, dflt: number): number {
  const v = config.get(key);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new VmSetupError(`invalid ${key} '${v}'`);
  return n;
}

function parseCpuset(spec: string, key: string): number[] {
  const out: number[] = [];
  for (const part of spec.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw new VmSetupError(`invalid host CPU set '${spec}' in ${key}`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    for (let c = lo; c <= hi; c++) out.push(c);
  }
  return out;
}

interface Machine {
  topo: Topology;
  vmObject: VmObject;
  kvm: Kvm;
  vm: Vm;
  ram: RamChunk[];
  layout: MemoryLayout;
  bootrom: Array<{ seg: BootromSegment; map: Mapping }>;
  vcpus: Vcpu[];
}

function setUpMemory(vm: Vm, vmObject: VmObject, layout: MemoryLayout, config: ConfigTree): RamChunk[] {
  const fd = fs.openSync(vmObject.memoryPath, 'r+');
  let ram: RamChunk[];
  try {
    ram = mapGuestRam(fd, layout);
  } finally {
    fs.closeSync(fd);
  }
  for (const s of ramSlots(ram, legacyWindowFor(config, layout))) vm.setMemoryRegion(s.slot, s.gpa, s.size, s.address, false);
  const wired = config.getBool('memory.wired', false);
  // bhyve leaves guest memory out of core dumps unless -C.
  const dump = config.getBool('memory.guest_in_core', false) ? MADV_DODUMP : MADV_DONTDUMP;
  for (const c of ram) {
    if (wired) {
      try {
        mlock(c.map);
      } catch (e) {
        throw new VmSetupError(`cannot wire guest memory (-S): ${(e as Error).message}; raise the locked-memory limit (ulimit -l)`);
      }
    }
    madvise(c.map, dump);
  }
  return ram;
}

/** bhyve's in-memory MP table, SMBIOS and ACPI tables (below 1 MiB). */
function writeFirmwareTables(ram: readonly RamChunk[], layout: MemoryLayout, config: ConfigTree, ncpu: number): void {
  const low = new GuestMemory(ramRegions(ram));
  for (const region of buildFirmwareInMemory(config, layout, { ncpu, hostname: os.hostname() })) {
    low.write(region.gpa, region.bytes);
  }
}

function setUpBootrom(vm: Vm, rom: string, config: ConfigTree): Array<{ seg: BootromSegment; map: Mapping }> {
  const segs = loadBootrom(rom, config.get('lpc.bootvars'));
  return segs.map((seg, i) => {
    const map = mmap(seg.size, PROT_READ | (seg.kind === 'vars' ? PROT_WRITE : 0), seg.fd, 0, seg.path);
    // Read-only to the guest: writes exit to us as MMIO (ROM: ignored).
    vm.setMemoryRegion(SLOT_BOOTROM + i, seg.gpa, seg.size, map.address, true);
    return { seg, map };
  });
}

function createMachine(config: ConfigTree): { machine: Machine; topo: Topology; ncpus: number; warnings: string[] } {
  const name = config.get('name');
  if (!name) throw new VmSetupError('no VM name given');
  const memsize = parseMemorySize(config.get('memory.size') ?? '256M');
  // As bhyve's topology defaults: cores and threads 1, sockets from cpus.
  const cores = intKey(config, 'cores', 1);
  const threads = intKey(config, 'threads', 1);
  const explicitSockets = config.get('sockets') !== undefined;
  const ncpus = intKey(config, 'cpus', explicitSockets ? intKey(config, 'sockets', 1) * cores * threads : 1);
  const sockets = explicitSockets ? intKey(config, 'sockets', 1) : Math.max(1, Math.floor(ncpus / (cores * threads)));
  if (sockets * cores * threads !== ncpus) {
    throw new VmSetupError(`CPU topology ${sockets} sockets x ${cores} cores x ${threads} threads does not give ${ncpus} vCPUs`);
  }
  const topo: Topology = { sockets, cores, threads };

  const kvm = Kvm.open(process.env.BHYVE_KVM_DEVICE ?? '/dev/kvm');
  const caps = probeHost(kvm);
  const warnings = checkRequirements(caps, config.getBool('x86.require_ept_rvi', true));
  if (ncpus > caps.maxVcpus) throw new VmSetupError(`${ncpus} vCPUs requested but this host's KVM allows at most ${caps.maxVcpus}`);

  const layout = computeLayout(memsize);
  const vmObject = VmObject.openOrCreate(name, memsize);
  try {
    vmObject.lock();
  } catch (e) {
    throw new VmSetupError((e as Error).message);
  }
  try {
    const vm = kvm.createVm();
    vm.setTssAddr(TSS_ADDR);
    vm.setIdentityMapAddr(IDENTITY_MAP_ADDR);
    vm.createIrqchip();
    vm.createPit2(PIT_SPEAKER_DUMMY);
    if (!config.getBool('x86.strictmsr', true)) {
      if (!caps.userSpaceMsr) warnings.push('warning: x86.strictmsr=false needs KVM_CAP_X86_USER_SPACE_MSR, which this host lacks; unknown MSRs still fault');
      else vm.enableCap(CAP.X86_USER_SPACE_MSR, [BigInt(MSR_EXIT_REASON_UNKNOWN)]);
    }
    const ram = setUpMemory(vm, vmObject, layout, config);
    writeFirmwareTables(ram, layout, config, ncpus);
    // Boot from the ROM when one is given, else from what bhyveload loaded.
    const rom = config.get('lpc.bootrom');
    const bootState = rom === undefined ? vmObject.readBootState() : undefined;
    if (rom === undefined && bootState === undefined) {
      throw new VmSetupError(`nothing to boot in VM '${name}': give a boot ROM with -l bootrom,ROMFILE or load a kernel with bhyveload`);
    }
    const bootrom = rom === undefined ? [] : setUpBootrom(vm, rom, config);
    const supported = kvm.supportedCpuid();
    const x2apic = config.getBool('x86.x2apic', false);
    const mmapSize = kvm.vcpuMmapSize();
    const vcpus: Vcpu[] = [];
    for (let i = 0; i < ncpus; i++) {
      const v = new Vcpu(vm.createVcpu(i), mmapSize, i);
      v.setCpuid(buildCpuid(supported, i, topo, x2apic));
      vcpus.push(v);
    }
    if (bootState !== undefined) applyVcpuState(vcpus[0], bootStateUpdate(bootState));
    return { machine: { topo, vmObject, kvm, vm, ram, layout, bootrom, vcpus }, topo, ncpus, warnings };
  } catch (e) {
    if (vmObject.createdHere) vmObject.destroy(); else vmObject.unlock();
    throw e;
  }
}

/** Runs the VM described by `config`; resolves to bhyve(8)'s exit status. */
export async function runVm(config: ConfigTree): Promise<number> {
  // Start the vCPU threads first: their module loading overlaps our setup.
  const expectedCpus = Number(config.get('cpus') ?? '1');
  const threads: Worker[] = [];
  const spawnThread = (): Worker => new Worker(new URL('./vcpu-thread.js', import.meta.url));
  if (Number.isInteger(expectedCpus) && expectedCpus > 0 && expectedCpus <= 64) {
    for (let i = 0; i < expectedCpus; i++) threads.push(spawnThread());
  }
  let created: ReturnType<typeof createMachine>;
  try {
    created = createMachine(config);
  } catch (e) {
    for (const t of threads) void t.terminate();
    throw asUserError(e);
  }
  const { machine, ncpus, warnings } = created;
  while (threads.length < ncpus) threads.push(spawnThread());
  while (threads.length > ncpus) void threads.pop()!.terminate();
  for (const w of warnings) process.stderr.write(`bhyve: ${w}\n`);

  const control = VcpuControl.create(ncpus);
  const kicker = new Kicker(control, new Map(machine.vcpus.map((v, i) => [i, v])));
  const kickDeviceThread = (bits: number): void => { control.addDeviceRequest(bits); kicker.kick(0); };
  const requester = new VcpuRequester(ncpus, control, kicker);
  let controlServer: ControlServer | undefined;
  // The kick signal; libuv's handler is harmless on any thread.
  const onKickSignal = (): void => {};
  process.on('SIGUSR2', onKickSignal);

  const backends: UartBackendHost[] = [];
  let outcome: ExitRequest | undefined;
  let resolveOutcome!: (r: ExitRequest) => void;
  const outcomePromise = new Promise<ExitRequest>((r) => { resolveOutcome = r; });
  const finish = (req: ExitRequest): void => {
    if (outcome) return;
    outcome = req;
    control.stop();
    kicker.kickAll();
    resolveOutcome(req);
  };
  const claimAndFinish = (req: ExitRequest): void => { if (control.claimExit()) finish(req); };

  const signalHandlers: Array<[NodeJS.Signals, () => void]> = [
    // SIGTERM presses the ACPI power button, as bhyve does; the guest decides.
    ['SIGTERM', () => kickDeviceThread(DEVICE_REQUEST.POWER_BUTTON)],
    ['SIGINT', () => claimAndFinish({ kind: 'signal', signal: 'SIGINT' })],
    ['SIGHUP', () => claimAndFinish({ kind: 'signal', signal: 'SIGHUP' })],
  ];
  for (const [sig, h] of signalHandlers) process.on(sig, h);

  let watchdog: NodeJS.Timeout | undefined;
  const stats: Array<KvmStats | undefined> = [];
  try {
    const streams: Record<string, UartStreamTransfer> = {};
    for (const com of ['com1', 'com2', 'com3', 'com4']) {
      const path = config.get(`lpc.${com}.path`);
      if (path === undefined) continue;
      const host = await openUartBackend(path, () => kickDeviceThread(DEVICE_REQUEST.POLL))
        .catch((e: Error) => { throw new VmSetupError(`${com}: ${e.message}`); });
      backends.push(host);
      streams[`lpc.${com}`] = host.transfer;
    }

    const mailboxes = machine.vcpus.map(() => Mailbox.create().sab);
    const started: Promise<void>[] = [];
    const stoppedAll: Promise<void>[] = [];
    threads.forEach((w, i) => {
      const cpusetSpec = config.get(`vcpu.${i}.cpuset`);
      const data: VcpuThreadData = {
        id: i,
        vcpuCount: ncpus,
        vcpuFd: machine.vcpus[i].fd,
        bspFd: machine.vcpus[0].fd,
        vmFd: machine.vm.fd,
        mmapSize: machine.vcpus[i].run.length,
        controlSab: control.sab,
        mailboxes,
        memoryPath: machine.vmObject.memoryPath,
        legacyWindow: legacyWindowFor(config, machine.layout),
        bootromPath: machine.bootrom.find((b) => b.seg.kind === 'rom')?.seg.path,
        layout: machine.layout,
        config: config.toJSON(),
        streams,
        strictIo: config.getBool('x86.strictio', false),
        requestPort: requester.portFor(i),
        cpuset: cpusetSpec === undefined ? undefined : parseCpuset(cpusetSpec, `vcpu.${i}.cpuset`),
      };
      started.push(new Promise((resolve, reject) => {
        w.on('message', (m: VcpuThreadMessage) => {
          if (m.type === 'ready') resolve();
          else if (m.type === 'exit') finish(m.request);
        });
        w.once('error', (e) => {
          reject(e);
          claimAndFinish({ kind: 'error', message: `vCPU ${i}: ${e.message}` });
        });
      }));
      stoppedAll.push(new Promise((resolve) => w.once('exit', () => resolve())));
      w.postMessage(data, [data.requestPort]);
    });
    await Promise.race([Promise.all(started), outcomePromise]);
    if (!outcome) {
      for (const v of machine.vcpus) {
        const fd = v.statsFd();
        stats.push(fd >= 0 ? new KvmStats(fd) : undefined);
      }
      control.go();
      watchdog = setInterval(() => watchHalts(control, kicker, stats, claimAndFinish), HALT_WATCH_MS);
      controlServer = await ControlServer.listen(machine.vmObject.controlSocketPath, controlHandlers({
        config, machine, control, requester, stats, finish: claimAndFinish,
      }));
    }

    const req = await outcomePromise;
    if (watchdog) clearInterval(watchdog);
    const grace = new Promise<void>((r) => setTimeout(r, STOP_GRACE_MS).unref());
    await Promise.race([Promise.all(stoppedAll), grace]);
    if (req.kind === 'error') process.stderr.write(`bhyve: ${req.message}\n`);
    else if (process.env.BHYVE_DEBUG) process.stderr.write(`bhyve: ${describe(req)}\n`);
    const destroy = machine.vmObject.createdHere
      || (req.kind === 'poweroff' && config.getBool('destroy_on_poweroff', false));
    cleanup(machine, destroy);
    return exitStatusOf(req);
  } catch (e) {
    control.stop();
    kicker.kickAll();
    cleanup(machine, machine.vmObject.createdHere);
    throw asUserError(e);
  } finally {
    if (watchdog) clearInterval(watchdog);
    controlServer?.close();
    requester.close();
    for (const w of threads) void w.terminate();
    for (const b of backends) await b.close();
    restoreTerminal();
    for (const [sig, h] of signalHandlers) process.off(sig, h);
    process.off('SIGUSR2', onKickSignal);
    for (const s of stats) s?.close();
  }
}

interface ControlContext {
  config: ConfigTree;
  machine: Machine;
  control: VcpuControl;
  requester: VcpuRequester;
  stats: Array<KvmStats | undefined>;
  finish: (r: ExitRequest) => void;
}

/** What bhyvectl can ask a running bhyve (see control-socket.ts). */
function controlHandlers(c: ControlContext): ControlHandlers {
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
      return { exits: await c.requester.request(cpu, { op: 'exit-counts' }), kvm };
    },
    'get-memmap': () => memmapOf(c.machine),
    'get-active-cpus': () => Array.from({ length: n }, (_, i) => i).filter((i) => c.control.state(i) !== VCPU_STATE.INACTIVE),
    'get-cpu-topology': () => ({ cpus: n, ...c.machine.topo }),
    'force-reset': () => { c.finish({ kind: 'reset', why: 'bhyvectl --force-reset' }); return null; },
    'force-poweroff': () => { c.finish({ kind: 'poweroff', why: 'bhyvectl --force-poweroff' }); return null; },
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

/** Every 100 ms: kick vCPUs that KVM reports blocked so they look at their
 * own state; when all started vCPUs are halted with interrupts disabled, the
 * run ends with status 2 as bhyve's does. */
function watchHalts(
  control: VcpuControl, kicker: Kicker, stats: Array<KvmStats | undefined>, claim: (r: ExitRequest) => void,
): void {
  const n = control.vcpuCount;
  let allHalted = control.state(0) === VCPU_STATE.HALTED_IF0;
  for (let i = 0; i < n; i++) {
    const s = control.state(i);
    if (s !== VCPU_STATE.HALTED_IF0 && s !== VCPU_STATE.INACTIVE) allHalted = false;
  }
  if (allHalted) {
    claim({ kind: 'halt', why: 'all vCPUs halted with interrupts disabled' });
    return;
  }
  for (let i = 0; i < n; i++) {
    const blocking = stats[i]?.read('blocking');
    // Without KVM statistics, look at every vCPU each time.
    if (blocking === undefined || blocking !== 0n) {
      control.request(i, VCPU_REQUEST.CHECK_STATE);
      kicker.kick(i);
    } else if (control.state(i) !== VCPU_STATE.RUNNING) {
      control.setState(i, VCPU_STATE.RUNNING);
    }
  }
}

/** The registers bhyveload stored (src/loader/boot-state.ts) as an update. */
function bootStateUpdate(raw: unknown): VcpuStateUpdate {
  const bs = raw as Partial<BootState>;
  if (bs?.version !== BOOT_STATE_VERSION || typeof bs.regs !== 'object' || typeof bs.sregs !== 'object') {
    throw new VmSetupError('the stored boot state is not one this bhyve understands; run bhyveload again');
  }
  const sr = bs.sregs;
  return {
    regs: bs.regs,
    segments: Object.fromEntries(SEGMENT_REGS.map((n) => [n, sr[n]])),
    gdt: sr.gdt,
    idt: sr.idt,
    control: { cr0: sr.cr0, cr3: sr.cr3, cr4: sr.cr4, efer: sr.efer },
  };
}

/** Errors a user can cause or fix, turned into one-line VmSetupErrors. */
function asUserError(e: unknown): unknown {
  const userClasses = [RangeError, KvmUnavailableError, HostRequirementError, BootromError, VmObjectError, SysError, UsageError, ConfigError];
  if (userClasses.some((c) => e instanceof c)) return new VmSetupError((e as Error).message);
  return e;
}

function describe(req: ExitRequest): string {
  switch (req.kind) {
    case 'reset': case 'poweroff': case 'halt': return `${req.kind}: ${req.why}`;
    case 'triplefault': return `triple fault on vCPU ${req.vcpu}`;
    case 'testdev': return `pc-testdev exit with value ${req.value}`;
    case 'signal': return `ended by ${req.signal}`;
    case 'error': return req.message;
  }
}

function cleanup(m: Machine, destroy: boolean): void {
  for (const b of m.bootrom) { b.map.unmap(); fs.closeSync(b.seg.fd); }
  m.bootrom.length = 0;
  if (destroy) m.vmObject.destroy(); else m.vmObject.unlock();
}

export { EXIT_ERROR };
