// Thin owning wrappers over /dev/kvm: the system handle, a VM and a vCPU.
// They own file descriptors and mappings and translate structures between
// the byte layouts of kvm-abi.ts and plain objects. No policy lives here.

import { UserError } from '../user-error.js';
import fs from 'node:fs';
import {
  CAP, COALESCED_MMIO_ZONE, CPUID_ENTRY, DTABLE, ENABLE_CAP, IOAPIC_NUM_PINS, IOEVENTFD, IOEVENTFD_FLAG, IRQ_LEVEL, IRQ_ROUTING,
  IRQ_ROUTING_ENTRY, IRQ_ROUTING_IRQCHIP, IRQ_ROUTING_MSI, IRQ_ROUTING_TYPE, IRQCHIP, IRQFD, IRQFD_FLAG, KVM,
  KVM_RUN_OFF, MSI, REGS_ORDER, SEGMENT, SIZEOF, SREGS, STATS_DESC, STATS_HEADER, USERSPACE_MEMORY_REGION,
  MEM_READONLY, type RegName, MEM_LOG_DIRTY_PAGES, CREATE_DEVICE, DEVICE_ATTR, DEV_TYPE_VFIO, DEV_VFIO,
} from './kvm-abi.js';
import { ioctl, ioctlRaw, ioctlValue, mmap, nativeBuffer, PROT_READ, PROT_WRITE, SysError, type Mapping } from './libc.js';

export interface CpuidEntry {
  function: number; index: number; flags: number; eax: number; ebx: number; ecx: number; edx: number;
}

export type Regs = Record<RegName, bigint>;

export interface Segment {
  base: bigint; limit: number; selector: number; type: number; present: number; dpl: number;
  db: number; s: number; l: number; g: number; avl: number; unusable: number;
}
export interface DescriptorTable { base: bigint; limit: number }
export interface Sregs {
  cs: Segment; ds: Segment; es: Segment; fs: Segment; gs: Segment; ss: Segment; tr: Segment; ldt: Segment;
  gdt: DescriptorTable; idt: DescriptorTable;
  cr0: bigint; cr2: bigint; cr3: bigint; cr4: bigint; cr8: bigint; efer: bigint; apic_base: bigint;
}
const SEGMENT_NAMES = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
const CONTROL_NAMES = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apic_base'] as const;

/** Why /dev/kvm could not be used, phrased for the user. */
export class KvmUnavailableError extends UserError { override readonly name: string = 'KvmUnavailableError'; }

export class Kvm {
  private constructor(readonly fd: number, readonly path: string) {}

  static open(path = '/dev/kvm'): Kvm {
    let fd: number;
    try {
      fd = fs.openSync(path, fs.constants.O_RDWR);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        throw new KvmUnavailableError(`${path} does not exist: load the kvm module (kvm_intel or kvm_amd) or enable virtualization in the firmware`);
      }
      if (code === 'EACCES' || code === 'EPERM') {
        throw new KvmUnavailableError(`no permission to open ${path}: run as root or add the user to the group owning ${path} (usually 'kvm')`);
      }
      throw new KvmUnavailableError(`cannot open ${path}: ${(e as Error).message}`);
    }
    return new Kvm(fd, path);
  }

  apiVersion(): number { return ioctlValue(this.fd, KVM.GET_API_VERSION, 0, 'KVM_GET_API_VERSION'); }

  /** KVM_CHECK_EXTENSION: 0 when absent, else a capability-specific value. */
  checkExtension(cap: number): number {
    const r = ioctlRaw(this.fd, KVM.CHECK_EXTENSION, cap);
    return r < 0 ? 0 : r;
  }

  vcpuMmapSize(): number { return ioctlValue(this.fd, KVM.GET_VCPU_MMAP_SIZE, 0, 'KVM_GET_VCPU_MMAP_SIZE'); }

  supportedCpuid(): CpuidEntry[] {
    const max = 256;
    const buf = new Uint8Array(SIZEOF.kvm_cpuid2 + max * SIZEOF.kvm_cpuid_entry2);
    new DataView(buf.buffer).setUint32(0, max, true);
    ioctl(this.fd, KVM.GET_SUPPORTED_CPUID, buf, 'KVM_GET_SUPPORTED_CPUID');
    return decodeCpuid(buf);
  }

  createVm(): Vm {
    return new Vm(this, ioctlValue(this.fd, KVM.CREATE_VM, 0, 'KVM_CREATE_VM'));
  }

  close(): void { fs.closeSync(this.fd); }
}

/** The int the kernel reads a VFIO file's fd from (KVM_SET_DEVICE_ATTR takes its address). */
let vfioFdArg: { address: bigint; bytes: Uint8Array } | undefined;

export class Vm {
  constructor(readonly kvm: Kvm | null, readonly fd: number) {}

  checkExtension(cap: number): number {
    const r = ioctlRaw(this.fd, KVM.CHECK_EXTENSION, cap);
    return r < 0 ? 0 : r;
  }

  setTssAddr(gpa: number): void { ioctlValue(this.fd, KVM.SET_TSS_ADDR, gpa, 'KVM_SET_TSS_ADDR'); }

  setIdentityMapAddr(gpa: number): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(gpa), true);
    ioctl(this.fd, KVM.SET_IDENTITY_MAP_ADDR, b, 'KVM_SET_IDENTITY_MAP_ADDR');
  }

  createIrqchip(): void { ioctl(this.fd, KVM.CREATE_IRQCHIP, null, 'KVM_CREATE_IRQCHIP'); }

  /** KVM_GET_IRQCHIP: the raw state of one in-kernel chip (IRQCHIP.*). */
  getIrqchip(chipId: number): Uint8Array {
    const b = new Uint8Array(SIZEOF.kvm_irqchip);
    new DataView(b.buffer).setUint32(0, chipId, true);
    ioctl(this.fd, KVM.GET_IRQCHIP, b, 'KVM_GET_IRQCHIP');
    return b;
  }

  /** KVM_SET_IRQCHIP with a buffer from getIrqchip(). */
  setIrqchip(state: Uint8Array): void { ioctl(this.fd, KVM.SET_IRQCHIP, state, 'KVM_SET_IRQCHIP'); }

  /** KVM_GET_PIT2: the raw struct kvm_pit_state2. */
  getPit2(): Uint8Array {
    const b = new Uint8Array(SIZEOF.kvm_pit_state2);
    ioctl(this.fd, KVM.GET_PIT2, b, 'KVM_GET_PIT2');
    return b;
  }

  /** KVM_SET_PIT2: reloads every channel's count (starting channel 0's timer). */
  setPit2(state: Uint8Array): void { ioctl(this.fd, KVM.SET_PIT2, state, 'KVM_SET_PIT2'); }

  createPit2(flags: number): void {
    const b = new Uint8Array(SIZEOF.kvm_pit_config);
    new DataView(b.buffer).setUint32(0, flags, true);
    ioctl(this.fd, KVM.CREATE_PIT2, b, 'KVM_CREATE_PIT2');
  }

  setMemoryRegion(slot: number, gpa: number, size: number, hostAddress: bigint, readonly: boolean, logDirty = false): void {
    const b = new Uint8Array(SIZEOF.kvm_userspace_memory_region);
    const v = new DataView(b.buffer);
    v.setUint32(USERSPACE_MEMORY_REGION.slot, slot, true);
    v.setUint32(USERSPACE_MEMORY_REGION.flags, (readonly ? MEM_READONLY : 0) | (logDirty ? MEM_LOG_DIRTY_PAGES : 0), true);
    v.setBigUint64(USERSPACE_MEMORY_REGION.guest_phys_addr, BigInt(gpa), true);
    v.setBigUint64(USERSPACE_MEMORY_REGION.memory_size, BigInt(size), true);
    v.setBigUint64(USERSPACE_MEMORY_REGION.userspace_addr, hostAddress, true);
    ioctl(this.fd, KVM.SET_USER_MEMORY_REGION, b, `KVM_SET_USER_MEMORY_REGION (slot ${slot} at 0x${gpa.toString(16)})`);
  }

  /** KVM_GET_DIRTY_LOG: the pages of `slot` (created with logDirty) the
   * guest wrote since the last call, one bit per 4 KiB page; clears them.
   * `bitmap` must come from dirtyBitmap(). False when KVM refused. */
  getDirtyLog(slot: number, bitmap: { address: bigint; bytes: Uint8Array }): boolean {
    const b = new Uint8Array(16);
    const v = new DataView(b.buffer);
    v.setUint32(0, slot, true);
    v.setBigUint64(8, bitmap.address, true);
    try {
      ioctl(this.fd, KVM.GET_DIRTY_LOG, b, 'KVM_GET_DIRTY_LOG');
      return true;
    } catch {
      return false;
    }
  }

  enableCap(cap: number, args: bigint[]): void {
    const b = new Uint8Array(SIZEOF.kvm_enable_cap);
    const v = new DataView(b.buffer);
    v.setUint32(ENABLE_CAP.cap, cap, true);
    args.forEach((a, i) => v.setBigUint64(ENABLE_CAP.args + 8 * i, a, true));
    ioctl(this.fd, KVM.ENABLE_CAP, b, `KVM_ENABLE_CAP ${cap}`);
  }

  // Interrupt injection is called from device threads; reuse one buffer per VM
  // object (each thread builds its own Vm view, so no sharing across threads).
  private readonly irqBuf = new Uint8Array(SIZEOF.kvm_irq_level);
  private readonly msiBuf = new Uint8Array(SIZEOF.kvm_msi);

  irqLine(gsi: number, level: boolean): void {
    const v = new DataView(this.irqBuf.buffer);
    v.setUint32(IRQ_LEVEL.irq, gsi, true);
    v.setUint32(IRQ_LEVEL.level, level ? 1 : 0, true);
    ioctl(this.fd, KVM.IRQ_LINE, this.irqBuf, 'KVM_IRQ_LINE');
  }

  signalMsi(address: number, data: number): void {
    this.msiBuf.fill(0);
    const v = new DataView(this.msiBuf.buffer);
    v.setUint32(MSI.address_lo, address >>> 0, true);
    v.setUint32(MSI.address_hi, Math.floor(address / 0x100000000) >>> 0, true);
    v.setUint32(MSI.data, data >>> 0, true);
    ioctl(this.fd, KVM.SIGNAL_MSI, this.msiBuf, 'KVM_SIGNAL_MSI');
  }

  /** KVM_IOEVENTFD: a guest write of `len` bytes (0: any length, with
   * KVM_CAP_IOEVENTFD_ANY_LENGTH) at `addr` signals eventfd `fd` inside the
   * kernel instead of exiting to userspace; `datamatch` restricts it to one
   * value. `deassign` removes the same registration. */
  ioeventfd(opts: { fd: number; addr: number; len: number; pio?: boolean; datamatch?: bigint; deassign?: boolean }): void {
    const b = new Uint8Array(SIZEOF.kvm_ioeventfd);
    const v = new DataView(b.buffer);
    let flags = 0;
    if (opts.pio) flags |= IOEVENTFD_FLAG.PIO;
    if (opts.datamatch !== undefined) { flags |= IOEVENTFD_FLAG.DATAMATCH; v.setBigUint64(IOEVENTFD.datamatch, opts.datamatch, true); }
    if (opts.deassign) flags |= IOEVENTFD_FLAG.DEASSIGN;
    v.setBigUint64(IOEVENTFD.addr, BigInt(opts.addr), true);
    v.setUint32(IOEVENTFD.len, opts.len, true);
    v.setInt32(IOEVENTFD.fd, opts.fd, true);
    v.setUint32(IOEVENTFD.flags, flags, true);
    ioctl(this.fd, KVM.IOEVENTFD, b, `KVM_IOEVENTFD${opts.deassign ? ' (deassign)' : ''} at 0x${opts.addr.toString(16)}`);
  }

  /** KVM_(UN)REGISTER_COALESCED_MMIO: guest MMIO writes to [addr,
   * addr+size) are appended to the VM's coalesced ring (CoalescedMmioRing)
   * and the vCPU goes straight back to the guest; reads still exit. */
  coalescedMmio(addr: number, size: number, register: boolean): void {
    const b = new Uint8Array(SIZEOF.kvm_coalesced_mmio_zone);
    const v = new DataView(b.buffer);
    v.setBigUint64(COALESCED_MMIO_ZONE.addr, BigInt(addr), true);
    v.setUint32(COALESCED_MMIO_ZONE.size, size, true);
    const req = register ? KVM.REGISTER_COALESCED_MMIO : KVM.UNREGISTER_COALESCED_MMIO;
    ioctl(this.fd, req, b, `KVM_${register ? '' : 'UN'}REGISTER_COALESCED_MMIO at 0x${addr.toString(16)}`);
  }

  /** KVM_IRQFD: writing eventfd `fd` raises GSI `gsi` (through its route). */
  irqfd(fd: number, gsi: number, deassign = false): void {
    const b = new Uint8Array(SIZEOF.kvm_irqfd);
    const v = new DataView(b.buffer);
    v.setUint32(IRQFD.fd, fd, true);
    v.setUint32(IRQFD.gsi, gsi, true);
    v.setUint32(IRQFD.flags, deassign ? IRQFD_FLAG.DEASSIGN : 0, true);
    ioctl(this.fd, KVM.IRQFD, b, `KVM_IRQFD${deassign ? ' (deassign)' : ''} gsi ${gsi}`);
  }

  /** KVM_IRQFD with KVM_IRQFD_FLAG_RESAMPLE: `fd` raises level GSI `gsi`;
   * the guest's EOI lowers it and signals `resampleFd`. */
  irqfdResample(fd: number, gsi: number, resampleFd: number, deassign = false): void {
    const b = new Uint8Array(SIZEOF.kvm_irqfd);
    const v = new DataView(b.buffer);
    v.setUint32(IRQFD.fd, fd, true);
    v.setUint32(IRQFD.gsi, gsi, true);
    v.setUint32(IRQFD.flags, deassign ? IRQFD_FLAG.DEASSIGN : IRQFD_FLAG.RESAMPLE, true);
    v.setUint32(IRQFD.resamplefd, resampleFd, true);
    ioctl(this.fd, KVM.IRQFD, b, `KVM_IRQFD${deassign ? ' (deassign)' : ' (resample)'} gsi ${gsi}`);
  }

  /** KVM_CREATE_DEVICE(KVM_DEV_TYPE_VFIO): KVM's VFIO pseudo-device, whose fd takes the VM's VFIO files. */
  createVfioDevice(): number {
    const b = new Uint8Array(SIZEOF.kvm_create_device);
    new DataView(b.buffer).setUint32(CREATE_DEVICE.type, DEV_TYPE_VFIO, true);
    ioctl(this.fd, KVM.CREATE_DEVICE, b, 'KVM_CREATE_DEVICE (VFIO)');
    return new DataView(b.buffer).getUint32(CREATE_DEVICE.fd, true);
  }

  /** KVM_SET_DEVICE_ATTR on KVM's VFIO device: adds (or removes) a VFIO group or device file. */
  static vfioFile(vfioDeviceFd: number, fileFd: number, add: boolean): void {
    const fdArg = (vfioFdArg ??= nativeBuffer(4));
    new DataView(fdArg.bytes.buffer, fdArg.bytes.byteOffset, 4).setInt32(0, fileFd, true);
    const b = new Uint8Array(SIZEOF.kvm_device_attr);
    const v = new DataView(b.buffer);
    v.setUint32(DEVICE_ATTR.group, DEV_VFIO.FILE, true);
    v.setBigUint64(DEVICE_ATTR.attr, BigInt(add ? DEV_VFIO.FILE_ADD : DEV_VFIO.FILE_DEL), true);
    v.setBigUint64(DEVICE_ATTR.addr, fdArg.address, true);
    ioctl(vfioDeviceFd, KVM.SET_DEVICE_ATTR, b, `KVM_SET_DEVICE_ATTR (VFIO file ${add ? 'add' : 'del'})`);
  }

  /** KVM_SET_GSI_ROUTING: replaces the whole table. First the PC's wiring
   * (what bhyve's vatpit/vioapic and QEMU's kvm_pc_setup_irq_routing do):
   * GSI 0, the PIT's and the HPET's legacy IRQ 0, reaches the 8259's IRQ 0
   * and I/O APIC input 2, as the MP table and the MADT's override say;
   * GSI 1-15 the 8259s and the I/O APIC 1:1, except GSI 2 (the cascade),
   * which has no route, so I/O APIC input 2 maps back to GSI 0 and the
   * in-kernel PIT sees its EOIs; GSI 16-23 the I/O APIC. KVM's own default
   * table is 1:1, which leaves the PIT on input 0, where no guest that
   * follows the firmware looks. Then one MSI route per entry of `msi`. */
  setGsiRouting(msi: ReadonlyArray<{ gsi: number; address: number; data: number }> = []): void {
    const entries: Array<(v: DataView, o: number) => void> = [];
    for (let gsi = 0; gsi < IOAPIC_NUM_PINS; gsi++) {
      if (gsi === 2) continue;
      const chips: Array<[number, number]> = [[IRQCHIP.IOAPIC, gsi === 0 ? 2 : gsi]];
      if (gsi < 16) chips.push([gsi < 8 ? IRQCHIP.PIC_MASTER : IRQCHIP.PIC_SLAVE, gsi % 8]);
      for (const [chip, p] of chips) {
        entries.push((v, o) => {
          v.setUint32(o + IRQ_ROUTING_ENTRY.gsi, gsi, true);
          v.setUint32(o + IRQ_ROUTING_ENTRY.type, IRQ_ROUTING_TYPE.IRQCHIP, true);
          v.setUint32(o + IRQ_ROUTING_ENTRY.u + IRQ_ROUTING_IRQCHIP.irqchip, chip, true);
          v.setUint32(o + IRQ_ROUTING_ENTRY.u + IRQ_ROUTING_IRQCHIP.pin, p, true);
        });
      }
    }
    for (const m of msi) {
      entries.push((v, o) => {
        v.setUint32(o + IRQ_ROUTING_ENTRY.gsi, m.gsi, true);
        v.setUint32(o + IRQ_ROUTING_ENTRY.type, IRQ_ROUTING_TYPE.MSI, true);
        v.setUint32(o + IRQ_ROUTING_ENTRY.u + IRQ_ROUTING_MSI.address_lo, m.address >>> 0, true);
        v.setUint32(o + IRQ_ROUTING_ENTRY.u + IRQ_ROUTING_MSI.address_hi, Math.floor(m.address / 0x100000000) >>> 0, true);
        v.setUint32(o + IRQ_ROUTING_ENTRY.u + IRQ_ROUTING_MSI.data, m.data >>> 0, true);
      });
    }
    const b = new Uint8Array(SIZEOF.kvm_irq_routing + entries.length * SIZEOF.kvm_irq_routing_entry);
    const v = new DataView(b.buffer);
    v.setUint32(IRQ_ROUTING.nr, entries.length, true);
    entries.forEach((fill, i) => fill(v, IRQ_ROUTING.entries + i * SIZEOF.kvm_irq_routing_entry));
    ioctl(this.fd, KVM.SET_GSI_ROUTING, b, 'KVM_SET_GSI_ROUTING');
  }

  createVcpu(id: number): number {
    return ioctlValue(this.fd, KVM.CREATE_VCPU, id, `KVM_CREATE_VCPU ${id}`);
  }
}

/** A vCPU as used by the thread that runs it (or inspects it while stopped). */
export class Vcpu {
  readonly run: Mapping;
  readonly runView: DataView;

  constructor(readonly fd: number, mmapSize: number, readonly id: number) {
    this.run = mmap(mmapSize, PROT_READ | PROT_WRITE, fd, 0, `kvm_run of vCPU ${id}`);
    this.runView = new DataView(this.run.bytes.buffer, this.run.bytes.byteOffset, mmapSize);
  }

  /** One KVM_RUN; returns 0 or -errno (EINTR when kicked). */
  enter(): number { return ioctlRaw(this.fd, KVM.RUN, 0); }

  /** KVM_GET_LAPIC: the local APIC's 1 KiB register page. */
  getLapic(): Uint8Array {
    const b = new Uint8Array(SIZEOF.kvm_lapic_state);
    ioctl(this.fd, KVM.GET_LAPIC, b, 'KVM_GET_LAPIC');
    return b;
  }

  setLapic(state: Uint8Array): void { ioctl(this.fd, KVM.SET_LAPIC, state, 'KVM_SET_LAPIC'); }

  get exitReason(): number { return this.runView.getUint32(KVM_RUN_OFF.exit_reason, true); }

  set immediateExit(v: boolean) { this.runView.setUint8(KVM_RUN_OFF.immediate_exit, v ? 1 : 0); }

  getRegs(): Regs {
    const b = new Uint8Array(SIZEOF.kvm_regs);
    ioctl(this.fd, KVM.GET_REGS, b, 'KVM_GET_REGS');
    const v = new DataView(b.buffer);
    const out = {} as Regs;
    REGS_ORDER.forEach((n, i) => { out[n] = v.getBigUint64(8 * i, true); });
    return out;
  }

  setRegs(r: Regs): void {
    const b = new Uint8Array(SIZEOF.kvm_regs);
    const v = new DataView(b.buffer);
    REGS_ORDER.forEach((n, i) => v.setBigUint64(8 * i, r[n], true));
    ioctl(this.fd, KVM.SET_REGS, b, 'KVM_SET_REGS');
  }

  getSregs(): Sregs {
    const b = new Uint8Array(SIZEOF.kvm_sregs);
    ioctl(this.fd, KVM.GET_SREGS, b, 'KVM_GET_SREGS');
    return decodeSregs(new DataView(b.buffer));
  }

  setSregs(sr: Sregs): void {
    const b = new Uint8Array(SIZEOF.kvm_sregs);
    const v = new DataView(b.buffer);
    // Read-modify-write keeps interrupt_bitmap and anything we do not model.
    ioctl(this.fd, KVM.GET_SREGS, b, 'KVM_GET_SREGS');
    encodeSregs(v, sr);
    ioctl(this.fd, KVM.SET_SREGS, b, 'KVM_SET_SREGS');
  }

  /** dr0..dr3, dr6, dr7 (struct kvm_debugregs). */
  getDebugRegs(): bigint[] {
    const b = new Uint8Array(SIZEOF.kvm_debugregs);
    ioctl(this.fd, KVM.GET_DEBUGREGS, b, 'KVM_GET_DEBUGREGS');
    const v = new DataView(b.buffer);
    return [0, 1, 2, 3, 4, 5].map((i) => v.getBigUint64(8 * i, true));
  }

  setDebugRegs(values: bigint[]): void {
    const b = new Uint8Array(SIZEOF.kvm_debugregs);
    ioctl(this.fd, KVM.GET_DEBUGREGS, b, 'KVM_GET_DEBUGREGS');
    const v = new DataView(b.buffer);
    values.forEach((x, i) => v.setBigUint64(8 * i, x, true));
    ioctl(this.fd, KVM.SET_DEBUGREGS, b, 'KVM_SET_DEBUGREGS');
  }

  /** KVM_SET_GUEST_DEBUG: which debug events exit to us (GUESTDBG bits). */
  setGuestDebug(control: number, debugregs: readonly bigint[] = []): void {
    const b = new Uint8Array(72);
    const v = new DataView(b.buffer);
    v.setUint32(0, control >>> 0, true);
    debugregs.slice(0, 8).forEach((x, i) => v.setBigUint64(8 + 8 * i, x, true));
    ioctl(this.fd, KVM.SET_GUEST_DEBUG, b, 'KVM_SET_GUEST_DEBUG');
  }

  setCpuid(entries: CpuidEntry[]): void {
    const b = new Uint8Array(SIZEOF.kvm_cpuid2 + entries.length * SIZEOF.kvm_cpuid_entry2);
    const v = new DataView(b.buffer);
    v.setUint32(0, entries.length, true);
    // Field by field, no loop over their names: each vCPU's ~50 entries
    // then cost V8's tiering budget little, and -c 8 does not get this
    // function compiled by TurboFan at start (~3 MiB of RSS the first time,
    // test/integration/startup-tiering.test.ts).
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      const o = SIZEOF.kvm_cpuid2 + i * SIZEOF.kvm_cpuid_entry2;
      v.setUint32(o + CPUID_ENTRY.function, e.function >>> 0, true);
      v.setUint32(o + CPUID_ENTRY.index, e.index >>> 0, true);
      v.setUint32(o + CPUID_ENTRY.flags, e.flags >>> 0, true);
      v.setUint32(o + CPUID_ENTRY.eax, e.eax >>> 0, true);
      v.setUint32(o + CPUID_ENTRY.ebx, e.ebx >>> 0, true);
      v.setUint32(o + CPUID_ENTRY.ecx, e.ecx >>> 0, true);
      v.setUint32(o + CPUID_ENTRY.edx, e.edx >>> 0, true);
    }
    ioctl(this.fd, KVM.SET_CPUID2, b, 'KVM_SET_CPUID2');
  }

  getMpState(): number {
    const b = new Uint8Array(SIZEOF.kvm_mp_state);
    ioctl(this.fd, KVM.GET_MP_STATE, b, 'KVM_GET_MP_STATE');
    return new DataView(b.buffer).getUint32(0, true);
  }

  setMpState(state: number): void {
    const b = new Uint8Array(SIZEOF.kvm_mp_state);
    new DataView(b.buffer).setUint32(0, state, true);
    ioctl(this.fd, KVM.SET_MP_STATE, b, 'KVM_SET_MP_STATE');
  }

  nmi(): void { ioctl(this.fd, KVM.NMI, null, 'KVM_NMI'); }

  /** The binary statistics fd (KVM_GET_STATS_FD), or -1 when unsupported. */
  statsFd(): number {
    const r = ioctlRaw(this.fd, KVM.GET_STATS_FD, 0);
    return r < 0 ? -1 : r;
  }
}

export function decodeCpuid(buf: Uint8Array): CpuidEntry[] {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = v.getUint32(0, true);
  const out: CpuidEntry[] = [];
  for (let i = 0; i < n; i++) {
    const o = SIZEOF.kvm_cpuid2 + i * SIZEOF.kvm_cpuid_entry2;
    out.push({
      function: v.getUint32(o + CPUID_ENTRY.function, true),
      index: v.getUint32(o + CPUID_ENTRY.index, true),
      flags: v.getUint32(o + CPUID_ENTRY.flags, true),
      eax: v.getUint32(o + CPUID_ENTRY.eax, true),
      ebx: v.getUint32(o + CPUID_ENTRY.ebx, true),
      ecx: v.getUint32(o + CPUID_ENTRY.ecx, true),
      edx: v.getUint32(o + CPUID_ENTRY.edx, true),
    });
  }
  return out;
}

function decodeSegment(v: DataView, o: number): Segment {
  const u8 = (k: keyof typeof SEGMENT): number => v.getUint8(o + SEGMENT[k]);
  return {
    base: v.getBigUint64(o + SEGMENT.base, true),
    limit: v.getUint32(o + SEGMENT.limit, true),
    selector: v.getUint16(o + SEGMENT.selector, true),
    type: u8('type'), present: u8('present'), dpl: u8('dpl'), db: u8('db'), s: u8('s'), l: u8('l'), g: u8('g'),
    avl: u8('avl'), unusable: u8('unusable'),
  };
}

function encodeSegment(v: DataView, o: number, sg: Segment): void {
  v.setBigUint64(o + SEGMENT.base, sg.base, true);
  v.setUint32(o + SEGMENT.limit, sg.limit >>> 0, true);
  v.setUint16(o + SEGMENT.selector, sg.selector, true);
  for (const k of ['type', 'present', 'dpl', 'db', 's', 'l', 'g', 'avl', 'unusable'] as const) v.setUint8(o + SEGMENT[k], sg[k]);
}

export function encodeSregs(v: DataView, sr: Sregs): void {
  for (const n of SEGMENT_NAMES) encodeSegment(v, SREGS[n], sr[n]);
  for (const t of ['gdt', 'idt'] as const) {
    v.setBigUint64(SREGS[t] + DTABLE.base, sr[t].base, true);
    v.setUint16(SREGS[t] + DTABLE.limit, sr[t].limit, true);
  }
  for (const n of CONTROL_NAMES) v.setBigUint64(SREGS[n], sr[n], true);
}

export function decodeSregs(v: DataView): Sregs {
  const out = {} as Sregs;
  for (const n of SEGMENT_NAMES) out[n] = decodeSegment(v, SREGS[n]);
  out.gdt = { base: v.getBigUint64(SREGS.gdt + DTABLE.base, true), limit: v.getUint16(SREGS.gdt + DTABLE.limit, true) };
  out.idt = { base: v.getBigUint64(SREGS.idt + DTABLE.base, true), limit: v.getUint16(SREGS.idt + DTABLE.limit, true) };
  for (const n of CONTROL_NAMES) out[n] = v.getBigUint64(SREGS[n], true);
  return out;
}

/** Reads KVM's binary statistics (Documentation/virt/kvm/api.rst, 4.133). */
export class KvmStats {
  private readonly offsets = new Map<string, number>();
  private readonly dataOffset: number;
  private readonly buf = Buffer.alloc(8);

  constructor(readonly fd: number) {
    const hdr = Buffer.alloc(SIZEOF.kvm_stats_header);
    fs.readSync(fd, hdr, 0, hdr.length, 0);
    const nameSize = hdr.readUInt32LE(STATS_HEADER.name_size);
    const num = hdr.readUInt32LE(STATS_HEADER.num_desc);
    const descOffset = hdr.readUInt32LE(STATS_HEADER.desc_offset);
    this.dataOffset = hdr.readUInt32LE(STATS_HEADER.data_offset);
    const descSize = SIZEOF.kvm_stats_desc + nameSize;
    const d = Buffer.alloc(descSize * num);
    fs.readSync(fd, d, 0, d.length, descOffset);
    for (let i = 0; i < num; i++) {
      const o = i * descSize;
      const name = d.toString('latin1', o + STATS_DESC.name, o + STATS_DESC.name + nameSize).replace(/\0.*$/s, '');
      this.offsets.set(name, d.readUInt32LE(o + STATS_DESC.offset));
    }
  }

  names(): string[] { return [...this.offsets.keys()]; }

  close(): void { fs.closeSync(this.fd); }

  /** The first 64-bit value of a statistic, or undefined when KVM lacks it. */
  read(name: string): bigint | undefined {
    const off = this.offsets.get(name);
    if (off === undefined) return undefined;
    fs.readSync(this.fd, this.buf, 0, 8, this.dataOffset + off);
    return this.buf.readBigUInt64LE(0);
  }
}

export { CAP, SysError };
