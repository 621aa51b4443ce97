// A VM made ready to run: /dev/kvm opened and checked, the VM object
// locked, guest RAM and the boot ROM mapped, vCPUs
// created with their CPUID and (after bhyveload) the boot vCPU's state.

import os from 'node:os';
import { isUserError, UserError } from '../user-error.js';
import fs from 'node:fs';
import { parseMemorySize } from '../config/size.js';
import { calcTopology } from '../config/topology.js';
import { ConfigTree } from '../config/tree.js';
import { BOOT_STATE_VERSION, type BootState } from '../loader/boot-state.js';
import { loadBootrom, type BootromSegment } from './bootrom.js';
import { applyBiosDevices } from './bios-devices.js';
import { buildCpuid, type Topology } from './cpuid.js';
import { applyCpuidShaping, cpuidShapingFromConfig } from './cpuid-shaping.js';
import { smbiosImage } from '../firmware/smbios.js';
import { checkGuestMemorySize, checkVcpuCount } from './guest-limits.js';
import { mapGuestRam, ramSlots, VGA_WINDOW_END, type RamChunk } from '../sys/guest-ram.js';
import { fbufVgaOn } from '../devices/display/fbuf-options.js';
import { CAP, IDENTITY_MAP_ADDR, MSR_EXIT_REASON_UNKNOWN, PIT_SPEAKER_DUMMY, TSS_ADDR } from '../sys/kvm-abi.js';
import { Kvm, Vcpu, type Vm } from '../sys/kvm.js';
import { madvise, MADV_DODUMP, MADV_DONTDUMP, mlock, mmap, PROT_READ, PROT_WRITE, type Mapping } from '../sys/libc.js';
import { computeLayout, LEGACY_WINDOW_END, type MemoryLayout } from '../sys/memory-map.js';
import { checkRequirements, probeHost } from './probe.js';
import { applyVcpuState, SEGMENT_REGS, type VcpuStateUpdate } from './vcpu-state.js';
import { VmObject } from './vm-object.js';
import { trace } from './startup-trace.js';

/** A failure to set the VM up, reported to the user as one line. */
export class VmSetupError extends UserError { override readonly name: string = 'VmSetupError'; }

const SLOT_BOOTROM = 2;

export interface Machine {
  topo: Topology;
  vmObject: VmObject;
  kvm: Kvm;
  vm: Vm;
  ram: RamChunk[];
  layout: MemoryLayout;
  bootrom: Array<{ seg: BootromSegment; map: Mapping }>;
  vcpus: Vcpu[];
}

/** Whether the legacy BIOS window is left to the chipset (QEMU personality
 * with a boot ROM for the PAM registers to shadow). Without a ROM (a kernel
 * from bhyveload) there is no BIOS to shadow and nobody to program PAM: the
 * window stays RAM, as in bhyve's own model, so the guest sees the ACPI,
 * SMBIOS and MP tables written there. */
export function legacyWindowFor(config: ConfigTree, layout: MemoryLayout): boolean {
  return config.get('lpc.fwcfg') === 'qemu' && config.get('lpc.bootrom') !== undefined
    && layout.lowmem > LEGACY_WINDOW_END;
}

/** Whether 0xA0000-0xBFFFF is left to fbuf's VGA (vga=on). */
export function vgaWindowFor(config: ConfigTree, layout: MemoryLayout): boolean {
  return fbufVgaOn(config) && layout.lowmem > VGA_WINDOW_END;
}

function setUpMemory(vm: Vm, vmObject: VmObject, layout: MemoryLayout, config: ConfigTree): RamChunk[] {
  const fd = vmObject.openMemory();
  let ram: RamChunk[];
  try {
    ram = mapGuestRam(fd, layout);
  } finally {
    fs.closeSync(fd);
  }
  for (const s of ramSlots(ram, legacyWindowFor(config, layout), vgaWindowFor(config, layout))) vm.setMemoryRegion(s.slot, s.gpa, s.size, s.address, false);
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

/** SMBIOS holds one processor structure per socket in bhyve's fixed area
 * below 1 MiB; refuse a topology that cannot fit before anything is created
 * (the tables themselves are written once the platform is built). */
function checkSmbiosFits(config: ConfigTree, layout: MemoryLayout, ncpu: number, sockets: number): Uint8Array {
  try {
    return smbiosImage(config, layout, os.hostname());
  } catch (e) {
    if (isUserError(e) && /^SMBIOS/.test(e.message) && sockets > 1) {
      throw new VmSetupError(`${e.message}: it holds one processor structure per socket, too many for ${sockets} sockets; give fewer (e.g. -c ${ncpu},sockets=1,cores=${ncpu})`);
    }
    throw e;
  }
}

function setUpBootrom(vm: Vm, rom: string, config: ConfigTree): Array<{ seg: BootromSegment; map: Mapping }> {
  const segs = loadBootrom(rom, config.get('lpc.bootvars'));
  return segs.map((seg, i) => {
    const map = mmap(seg.size, PROT_READ | (seg.kind === 'vars' ? PROT_WRITE : 0), seg.fd, 0, seg.path);
    // Read-only to the guest: writes exit to us as MMIO (ROM: ignored).
    // The VARS slot is the device thread's (src/devices/lpc/bootvars.ts).
    if (seg.kind === 'rom') vm.setMemoryRegion(SLOT_BOOTROM + i, seg.gpa, seg.size, map.address, true);
    return { seg, map };
  });
}

/** `smbios`: the SMBIOS image the fit check built, for vCPU 0's thread to
 * write (DeviceHostData.smbios) instead of building it again. */
export function createMachine(config: ConfigTree): { machine: Machine; topo: Topology; ncpus: number; warnings: string[]; smbios: Uint8Array } {
  const name = config.get('name');
  if (!name) throw new VmSetupError('no VM name given');
  const memSpec = config.get('memory.size') ?? '256M';
  const memsize = parseMemorySize(memSpec);
  const t = calcTopology(config);
  const ncpus = t.cpus;
  const topo: Topology = { sockets: t.sockets, cores: t.cores, threads: t.threads };
  const kvm = Kvm.open(process.env.BHYVE_KVM_DEVICE ?? '/dev/kvm');
  const caps = probeHost(kvm);
  trace('main: kvm open, host probed');
  const warnings = checkRequirements(caps, config.getBool('x86.require_ept_rvi', true));
  checkVcpuCount(ncpus, caps.maxVcpus);
  checkGuestMemorySize(memsize, memSpec);

  const layout = computeLayout(memsize);
  const smbios = checkSmbiosFits(config, layout, ncpus, t.sockets);
  trace('main: smbios checked');
  const vmObject = VmObject.acquire(name, memsize);
  try {
    vmObject.writePid();
    trace('main: vm object');
    const vm = kvm.createVm();
    vm.setTssAddr(TSS_ADDR);
    vm.setIdentityMapAddr(IDENTITY_MAP_ADDR);
    vm.createIrqchip();
    vm.setGsiRouting(); // the PC's IRQ 0 on I/O APIC input 2 (kvm.ts)
    vm.createPit2(PIT_SPEAKER_DUMMY);
    if (!config.getBool('x86.strictmsr', true)) {
      if (!caps.userSpaceMsr) warnings.push('warning: x86.strictmsr=false needs KVM_CAP_X86_USER_SPACE_MSR, which this host lacks; unknown MSRs still fault');
      else vm.enableCap(CAP.X86_USER_SPACE_MSR, [BigInt(MSR_EXIT_REASON_UNKNOWN)]);
    }
    trace('main: vm, irqchip, pit');
    const ram = setUpMemory(vm, vmObject, layout, config);
    trace('main: memory');
    // Boot from the ROM when one is given, else from what bhyveload loaded.
    const rom = config.get('lpc.bootrom');
    const bootState = rom === undefined ? vmObject.readBootState() : undefined;
    if (rom === undefined && bootState === undefined) {
      throw new VmSetupError(`nothing to boot in VM '${name}': give a boot ROM with -l bootrom,ROMFILE or load a kernel with bhyveload`);
    }
    const bootrom = rom === undefined ? [] : setUpBootrom(vm, rom, config);
    trace('main: boot rom');
    const supported = kvm.supportedCpuid();
    const x2apic = config.getBool('x86.x2apic', false);
    const shaping = cpuidShapingFromConfig(config);
    const mmapSize = kvm.vcpuMmapSize();
    const vcpus: Vcpu[] = [];
    for (let i = 0; i < ncpus; i++) {
      const v = new Vcpu(vm.createVcpu(i), mmapSize, i);
      const shaped = applyCpuidShaping(buildCpuid(supported, i, topo, x2apic), supported, shaping);
      if (i === 0) warnings.push(...shaped.warnings);
      v.setCpuid(shaped.entries);
      vcpus.push(v);
    }
    if (bootState !== undefined) {
      try {
        applyVcpuState(vcpus[0], bootStateUpdate(bootState));
        if ((bootState as Partial<BootState>).bios === true) applyBiosDevices(vm, vcpus[0]);
      } catch (e) {
        if (!(e instanceof RangeError)) throw e;
        throw new VmSetupError(`the stored boot state of VM '${name}' is corrupt (${e.message}); run bhyveload again`);
      }
    }
    return { machine: { topo, vmObject, kvm, vm, ram, layout, bootrom, vcpus }, topo, ncpus, warnings, smbios };
  } catch (e) {
    if (vmObject.createdHere) vmObject.destroy(); else vmObject.unlock();
    throw e;
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

export function cleanupMachine(m: Machine, destroy: boolean): void {
  for (const b of m.bootrom) { b.map.unmap(); fs.closeSync(b.seg.fd); }
  m.bootrom.length = 0;
  if (destroy) m.vmObject.destroy(); else m.vmObject.unlock();
}

