// The Linux KVM ABI for x86-64, in one place: ioctl numbers, capability and
// exit-reason numbers, and the byte layouts of the structures we exchange
// with the kernel (from <linux/kvm.h> and <asm/kvm.h>). test/unit/kvm-abi
// checks every size and offset here against the installed kernel headers.

const KVMIO = 0xae;
const IOC_WRITE = 1;
const IOC_READ = 2;

function ioc(dir: number, nr: number, size: number): number {
  return ((dir << 30) | (size << 16) | (KVMIO << 8) | nr) >>> 0;
}
const io = (nr: number): number => ioc(0, nr, 0);
const iow = (nr: number, size: number): number => ioc(IOC_WRITE, nr, size);
const ior = (nr: number, size: number): number => ioc(IOC_READ, nr, size);
const iowr = (nr: number, size: number): number => ioc(IOC_READ | IOC_WRITE, nr, size);

/** Structure sizes in bytes. */
export const SIZEOF = {
  kvm_userspace_memory_region: 32,
  kvm_regs: 144,
  kvm_segment: 24,
  kvm_dtable: 16,
  kvm_sregs: 312,
  kvm_cpuid2: 8,
  kvm_cpuid_entry2: 40,
  kvm_irq_level: 8,
  kvm_pit_config: 64,
  kvm_mp_state: 4,
  kvm_msi: 32,
  kvm_enable_cap: 104,
  kvm_msrs: 8,
  kvm_msr_entry: 16,
  kvm_debugregs: 128,
  kvm_stats_header: 24,
  kvm_stats_desc: 16, // plus name_size bytes of name
  kvm_run_io: 16,
  kvm_run_mmio: 24,
  kvm_ioeventfd: 64,
  kvm_irqfd: 32,
  kvm_irq_routing: 8,
  kvm_irq_routing_entry: 48,
  kvm_irq_routing_msi: 16,
  kvm_irq_routing_irqchip: 8,
  kvm_irqchip: 520,
  kvm_pic_state: 16,
  kvm_pit_state2: 112,
  kvm_pit_channel_state: 24,
  kvm_lapic_state: 1024,
  kvm_coalesced_mmio_zone: 16,
  kvm_coalesced_mmio: 24,
  kvm_coalesced_mmio_ring: 8,
  kvm_create_device: 12,
  kvm_device_attr: 24,
} as const;

export const KVM = {
  GET_API_VERSION: io(0x00),
  CREATE_VM: io(0x01),
  CHECK_EXTENSION: io(0x03),
  GET_VCPU_MMAP_SIZE: io(0x04),
  GET_SUPPORTED_CPUID: iowr(0x05, SIZEOF.kvm_cpuid2),
  CREATE_VCPU: io(0x41),
  SET_USER_MEMORY_REGION: iow(0x46, SIZEOF.kvm_userspace_memory_region),
  GET_DIRTY_LOG: iow(0x42, 16), // struct kvm_dirty_log: slot, padding, bitmap pointer
  SET_TSS_ADDR: io(0x47),
  SET_IDENTITY_MAP_ADDR: iow(0x48, 8),
  CREATE_IRQCHIP: io(0x60),
  IRQ_LINE: iow(0x61, SIZEOF.kvm_irq_level),
  CREATE_PIT2: iow(0x77, SIZEOF.kvm_pit_config),
  RUN: io(0x80),
  GET_REGS: ior(0x81, SIZEOF.kvm_regs),
  SET_REGS: iow(0x82, SIZEOF.kvm_regs),
  GET_SREGS: ior(0x83, SIZEOF.kvm_sregs),
  SET_SREGS: iow(0x84, SIZEOF.kvm_sregs),
  GET_MSRS: iowr(0x88, SIZEOF.kvm_msrs),
  SET_MSRS: iow(0x89, SIZEOF.kvm_msrs),
  SET_CPUID2: iow(0x90, SIZEOF.kvm_cpuid2),
  GET_MP_STATE: ior(0x98, SIZEOF.kvm_mp_state),
  SET_MP_STATE: iow(0x99, SIZEOF.kvm_mp_state),
  NMI: io(0x9a),
  ENABLE_CAP: iow(0xa3, SIZEOF.kvm_enable_cap),
  SIGNAL_MSI: iow(0xa5, SIZEOF.kvm_msi),
  GET_DEBUGREGS: ior(0xa1, SIZEOF.kvm_debugregs),
  SET_DEBUGREGS: iow(0xa2, SIZEOF.kvm_debugregs),
  SET_GUEST_DEBUG: iow(0x9b, 72),
  GET_STATS_FD: io(0xce),
  SET_GSI_ROUTING: iow(0x6a, SIZEOF.kvm_irq_routing),
  IRQFD: iow(0x76, SIZEOF.kvm_irqfd),
  CREATE_DEVICE: iowr(0xe0, SIZEOF.kvm_create_device),
  SET_DEVICE_ATTR: iow(0xe1, SIZEOF.kvm_device_attr),
  IOEVENTFD: iow(0x79, SIZEOF.kvm_ioeventfd),
  GET_IRQCHIP: iowr(0x62, SIZEOF.kvm_irqchip),
  SET_IRQCHIP: ior(0x63, SIZEOF.kvm_irqchip),
  GET_PIT2: ior(0x9f, SIZEOF.kvm_pit_state2),
  SET_PIT2: iow(0xa0, SIZEOF.kvm_pit_state2),
  GET_LAPIC: ior(0x8e, SIZEOF.kvm_lapic_state),
  SET_LAPIC: iow(0x8f, SIZEOF.kvm_lapic_state),
  REGISTER_COALESCED_MMIO: iow(0x67, SIZEOF.kvm_coalesced_mmio_zone),
  UNREGISTER_COALESCED_MMIO: iow(0x68, SIZEOF.kvm_coalesced_mmio_zone),
} as const;

/** struct kvm_irqchip: chip_id, pad, then the chip's state (a union). */
export const IRQCHIP_STATE = { chip_id: 0, chip: 8 } as const;
/** struct kvm_pic_state (one 8259), byte fields. */
export const PIC_STATE = {
  last_irr: 0, irr: 1, imr: 2, isr: 3, priority_add: 4, irq_base: 5, read_reg_select: 6, poll: 7,
  special_mask: 8, init_state: 9, auto_eoi: 10, rotate_on_auto_eoi: 11, special_fully_nested_mode: 12,
  init4: 13, elcr: 14, elcr_mask: 15,
} as const;
/** struct kvm_pit_channel_state (three in struct kvm_pit_state2, then flags). */
export const PIT_CHANNEL_STATE = {
  count: 0, latched_count: 4, count_latched: 6, status_latched: 7, status: 8, read_state: 9, write_state: 10,
  write_latch: 11, rw_mode: 12, mode: 13, bcd: 14, gate: 15, count_load_time: 16,
} as const;
export const PIT_STATE2 = { channels: 0, flags: 72 } as const;

export const CAP = {
  IRQCHIP: 0,
  HLT: 1,
  USER_MEMORY: 3,
  /** Answers the page of the vCPU mapping that holds the coalesced MMIO ring. */
  COALESCED_MMIO: 15,
  SET_TSS_ADDR: 4,
  NR_VCPUS: 9,
  PIT2: 33,
  IOEVENTFD: 36,
  IRQFD: 32,
  IRQ_ROUTING: 25,
  MAX_VCPUS: 66,
  IOEVENTFD_ANY_LENGTH: 122,
  SIGNAL_MSI: 77,
  READONLY_MEM: 81,
  IMMEDIATE_EXIT: 136,
  X86_USER_SPACE_MSR: 188,
  BINARY_STATS_FD: 203,
} as const;

export const EXIT = {
  UNKNOWN: 0,
  EXCEPTION: 1,
  IO: 2,
  HYPERCALL: 3,
  DEBUG: 4,
  HLT: 5,
  MMIO: 6,
  IRQ_WINDOW_OPEN: 7,
  SHUTDOWN: 8,
  FAIL_ENTRY: 9,
  INTR: 10,
  SET_TPR: 11,
  TPR_ACCESS: 12,
  NMI: 16,
  INTERNAL_ERROR: 17,
  SYSTEM_EVENT: 24,
  IOAPIC_EOI: 26,
  X86_RDMSR: 29,
  X86_WRMSR: 30,
  X86_BUS_LOCK: 33,
  NOTIFY: 37,
} as const;

export const EXIT_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(EXIT).map(([k, v]) => [v, k]),
);

export const SYSTEM_EVENT = { SHUTDOWN: 1, RESET: 2, CRASH: 3 } as const;
export const MP_STATE = { RUNNABLE: 0, UNINITIALIZED: 1, INIT_RECEIVED: 2, HALTED: 3, SIPI_RECEIVED: 4 } as const;
export const MEM_LOG_DIRTY_PAGES = 1 << 0;
export const MEM_READONLY = 1 << 1;
export const PIT_SPEAKER_DUMMY = 1;
export const MSR_EXIT_REASON_UNKNOWN = 1 << 1;
export const IO_DIRECTION_IN = 0;
export const IO_DIRECTION_OUT = 1;
export const RFLAGS_IF = 1 << 9;

/** A u64 field of a page KVM shares with us (kvm_run, the coalesced MMIO
 * ring) as a number: two 32-bit reads, not the BigInt getBigUint64 would
 * allocate on every exit (offsets and guest-physical addresses fit in 53
 * bits). */
export function getU64(v: DataView, off: number): number {
  return v.getUint32(off, true) + v.getUint32(off + 4, true) * 0x1_0000_0000;
}

/** struct kvm_run: the shared page between KVM_RUN and us (x86 part). */
export const KVM_RUN_OFF = {
  request_interrupt_window: 0,
  immediate_exit: 1,
  exit_reason: 8,
  ready_for_interrupt_injection: 12,
  if_flag: 13,
  flags: 14,
  cr8: 16,
  apic_base: 24,
  /** Start of the exit-specific union. */
  exit: 32,
} as const;

/** Offsets inside kvm_run's union, relative to KVM_RUN_OFF.exit. */
export const RUN_IO = { direction: 0, size: 1, port: 2, count: 4, data_offset: 8 } as const;
export const RUN_MMIO = { phys_addr: 0, data: 8, len: 16, is_write: 20 } as const;
export const RUN_INTERNAL = { suberror: 0, ndata: 4, data: 8 } as const;
export const RUN_FAIL_ENTRY = { hardware_entry_failure_reason: 0, cpu: 8 } as const;
export const RUN_SYSTEM_EVENT = { type: 0, ndata: 4, data: 8 } as const;
/** kvm_run.msr: u8 error; u8 pad[7]; u32 reason; u32 index; u64 data. */
/** kvm_run.debug.arch (KVM_EXIT_DEBUG). */
export const RUN_DEBUG = { exception: 0, pc: 8, dr6: 16, dr7: 24 } as const;
/** kvm_guest_debug.control bits. */
export const GUESTDBG = { ENABLE: 0x1, SINGLESTEP: 0x2, USE_SW_BP: 0x10000, USE_HW_BP: 0x20000 } as const;
export const RUN_MSR = { error: 0, reason: 8, index: 12, data: 16 } as const;

export const USERSPACE_MEMORY_REGION = { slot: 0, flags: 4, guest_phys_addr: 8, memory_size: 16, userspace_addr: 24 } as const;

/** General-purpose registers, in struct kvm_regs order, 8 bytes each. */
export const REGS_ORDER = [
  'rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags',
] as const;
export type RegName = (typeof REGS_ORDER)[number];

export const SEGMENT = {
  base: 0, limit: 8, selector: 12, type: 14, present: 15, dpl: 16, db: 17, s: 18, l: 19, g: 20, avl: 21, unusable: 22,
} as const;
export const DTABLE = { base: 0, limit: 8 } as const;
/** struct kvm_sregs field offsets. */
export const SREGS = {
  cs: 0, ds: 24, es: 48, fs: 72, gs: 96, ss: 120, tr: 144, ldt: 168,
  gdt: 192, idt: 208,
  cr0: 224, cr2: 232, cr3: 240, cr4: 248, cr8: 256, efer: 264, apic_base: 272, interrupt_bitmap: 280,
} as const;

export const CPUID_ENTRY = { function: 0, index: 4, flags: 8, eax: 12, ebx: 16, ecx: 20, edx: 24 } as const;
export const CPUID_FLAG_SIGNIFICANT_INDEX = 1;

export const IRQ_LEVEL = { irq: 0, level: 4 } as const;
export const MSI = { address_lo: 0, address_hi: 4, data: 8, flags: 12, devid: 16 } as const;
export const ENABLE_CAP = { cap: 0, flags: 4, args: 8 } as const;
export const STATS_HEADER = { flags: 0, name_size: 4, num_desc: 8, id_offset: 12, desc_offset: 16, data_offset: 20 } as const;
export const STATS_DESC = { flags: 0, exponent: 4, size: 6, offset: 8, bucket_size: 12, name: 16 } as const;

/** struct kvm_ioeventfd: a guest write to [addr, addr+len) (MMIO, or port
 * I/O with FLAG_PIO) signals `fd` in the kernel, without an exit to us. */
export const IOEVENTFD = { datamatch: 0, addr: 8, len: 16, fd: 20, flags: 24 } as const;
export const IOEVENTFD_FLAG = { DATAMATCH: 1 << 0, PIO: 1 << 1, DEASSIGN: 1 << 2 } as const;
/** struct kvm_coalesced_mmio_zone: guest writes to [addr, addr+size) are
 * appended to the VM's coalesced MMIO ring instead of exiting to us. */
export const COALESCED_MMIO_ZONE = { addr: 0, size: 8, pio: 12 } as const;
/** struct kvm_coalesced_mmio_ring { u32 first, last; entries[] } (one page
 * of the vCPU mapping) and its entries (struct kvm_coalesced_mmio). */
export const COALESCED_MMIO_RING = { first: 0, last: 4, coalesced_mmio: 8 } as const;
export const COALESCED_MMIO = { phys_addr: 0, len: 8, pio: 12, data: 16 } as const;
/** struct kvm_irqfd: writing `fd` injects GSI `gsi` (through its route). */
export const IRQFD = { fd: 0, gsi: 4, flags: 8, resamplefd: 12 } as const;
export const IRQFD_FLAG = { DEASSIGN: 1 << 0, RESAMPLE: 1 << 1 } as const;
/** struct kvm_create_device and struct kvm_device_attr (KVM's device API). */
export const CREATE_DEVICE = { type: 0, fd: 4, flags: 8 } as const;
export const DEVICE_ATTR = { flags: 0, group: 4, attr: 8, addr: 16 } as const;
/** KVM's VFIO pseudo-device: the VFIO group or device files a VM uses
 * (KVM_DEV_VFIO_GROUP, called KVM_DEV_VFIO_FILE from Linux 6.6, same value). */
export const DEV_TYPE_VFIO = 4;
export const DEV_VFIO = { FILE: 1, FILE_ADD: 1, FILE_DEL: 2 } as const;
/** struct kvm_irq_routing { u32 nr; u32 flags; entries[] } and its entries. */
export const IRQ_ROUTING = { nr: 0, flags: 4, entries: 8 } as const;
export const IRQ_ROUTING_ENTRY = { gsi: 0, type: 4, flags: 8, u: 16 } as const;
export const IRQ_ROUTING_MSI = { address_lo: 0, address_hi: 4, data: 8, devid: 12 } as const;
export const IRQ_ROUTING_IRQCHIP = { irqchip: 0, pin: 4 } as const;
export const IRQ_ROUTING_TYPE = { IRQCHIP: 1, MSI: 2 } as const;
export const IRQCHIP = { PIC_MASTER: 0, PIC_SLAVE: 1, IOAPIC: 2 } as const;
/** GSIs of KVM's default routing (PIC 0-15 and IOAPIC 0-23); routes we add
 * for irqfds start above them. */
export const IOAPIC_NUM_PINS = 24;

/** Guest physical addresses KVM needs for Intel's real-mode support (as QEMU). */
export const TSS_ADDR = 0xfeffd000;
export const IDENTITY_MAP_ADDR = 0xfeffc000;
