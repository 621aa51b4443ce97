// The KVM ABI module must match the kernel headers installed on this host:
// a C program built with gcc prints sizeof/offsetof/ioctl numbers from
// <linux/kvm.h>, and every value is compared with src/sys/kvm-abi.ts.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as abi from '../../src/sys/kvm-abi.js';

const haveHeaders = fs.existsSync('/usr/include/linux/kvm.h');
const haveGcc = (() => { try { execFileSync('gcc', ['--version']); return true; } catch { return false; } })();

const C = String.raw`
#include <stdio.h>
#include <stddef.h>
#include <linux/kvm.h>
#define S(t) printf("size %s %zu\n", #t, sizeof(struct t));
#define O(t, f) printf("off %s.%s %zu\n", #t, #f, offsetof(struct t, f));
#define I(n) printf("ioctl %s %lu\n", #n, (unsigned long)(KVM_##n));
#define E(n) printf("exit %s %d\n", #n, KVM_EXIT_##n);
#define C(n) printf("cap %s %d\n", #n, KVM_CAP_##n);
int main(void) {
  S(kvm_userspace_memory_region) S(kvm_regs) S(kvm_segment) S(kvm_dtable) S(kvm_sregs) S(kvm_cpuid2)
  S(kvm_cpuid_entry2) S(kvm_irq_level) S(kvm_pit_config) S(kvm_mp_state) S(kvm_msi) S(kvm_enable_cap)
  S(kvm_msrs) S(kvm_msr_entry) S(kvm_debugregs) S(kvm_stats_header) S(kvm_stats_desc)
  S(kvm_ioeventfd) S(kvm_irqfd) S(kvm_irq_routing) S(kvm_irq_routing_entry) S(kvm_irq_routing_msi) S(kvm_irq_routing_irqchip)
  S(kvm_irqchip) S(kvm_pic_state) S(kvm_pit_state2) S(kvm_pit_channel_state) S(kvm_lapic_state)
  O(kvm_irqchip, chip_id) O(kvm_irqchip, chip)
  O(kvm_pic_state, last_irr) O(kvm_pic_state, irr) O(kvm_pic_state, imr) O(kvm_pic_state, isr) O(kvm_pic_state, priority_add)
  O(kvm_pic_state, irq_base) O(kvm_pic_state, read_reg_select) O(kvm_pic_state, poll) O(kvm_pic_state, special_mask)
  O(kvm_pic_state, init_state) O(kvm_pic_state, auto_eoi) O(kvm_pic_state, rotate_on_auto_eoi)
  O(kvm_pic_state, special_fully_nested_mode) O(kvm_pic_state, init4) O(kvm_pic_state, elcr) O(kvm_pic_state, elcr_mask)
  O(kvm_pit_channel_state, count) O(kvm_pit_channel_state, latched_count) O(kvm_pit_channel_state, count_latched)
  O(kvm_pit_channel_state, status_latched) O(kvm_pit_channel_state, status) O(kvm_pit_channel_state, read_state)
  O(kvm_pit_channel_state, write_state) O(kvm_pit_channel_state, write_latch) O(kvm_pit_channel_state, rw_mode)
  O(kvm_pit_channel_state, mode) O(kvm_pit_channel_state, bcd) O(kvm_pit_channel_state, gate)
  O(kvm_pit_channel_state, count_load_time) O(kvm_pit_state2, channels) O(kvm_pit_state2, flags)
  S(kvm_coalesced_mmio_zone) S(kvm_coalesced_mmio) S(kvm_coalesced_mmio_ring) S(kvm_create_device) S(kvm_device_attr)
  O(kvm_create_device, type) O(kvm_create_device, fd) O(kvm_create_device, flags)
  O(kvm_device_attr, flags) O(kvm_device_attr, group) O(kvm_device_attr, attr) O(kvm_device_attr, addr)
  printf("const DEV_TYPE_VFIO %d\nconst DEV_VFIO_GROUP %d\nconst DEV_VFIO_GROUP_ADD %d\nconst DEV_VFIO_GROUP_DEL %d\n",
    KVM_DEV_TYPE_VFIO, KVM_DEV_VFIO_GROUP, KVM_DEV_VFIO_GROUP_ADD, KVM_DEV_VFIO_GROUP_DEL);
  O(kvm_coalesced_mmio_zone, addr) O(kvm_coalesced_mmio_zone, size) O(kvm_coalesced_mmio_zone, pio)
  O(kvm_coalesced_mmio_ring, first) O(kvm_coalesced_mmio_ring, last) O(kvm_coalesced_mmio_ring, coalesced_mmio)
  O(kvm_coalesced_mmio, phys_addr) O(kvm_coalesced_mmio, len) O(kvm_coalesced_mmio, pio) O(kvm_coalesced_mmio, data)
  O(kvm_ioeventfd, datamatch) O(kvm_ioeventfd, addr) O(kvm_ioeventfd, len) O(kvm_ioeventfd, fd) O(kvm_ioeventfd, flags)
  O(kvm_irqfd, fd) O(kvm_irqfd, gsi) O(kvm_irqfd, flags) O(kvm_irqfd, resamplefd)
  O(kvm_irq_routing, nr) O(kvm_irq_routing, flags) O(kvm_irq_routing, entries)
  O(kvm_irq_routing_entry, gsi) O(kvm_irq_routing_entry, type) O(kvm_irq_routing_entry, flags) O(kvm_irq_routing_entry, u)
  O(kvm_irq_routing_msi, address_lo) O(kvm_irq_routing_msi, address_hi) O(kvm_irq_routing_msi, data) O(kvm_irq_routing_msi, devid)
  O(kvm_irq_routing_irqchip, irqchip) O(kvm_irq_routing_irqchip, pin)
  O(kvm_run, request_interrupt_window) O(kvm_run, immediate_exit) O(kvm_run, exit_reason)
  O(kvm_run, ready_for_interrupt_injection) O(kvm_run, if_flag) O(kvm_run, flags) O(kvm_run, cr8)
  O(kvm_run, apic_base) O(kvm_run, io)
  O(kvm_run, io.direction) O(kvm_run, io.size) O(kvm_run, io.port) O(kvm_run, io.count) O(kvm_run, io.data_offset)
  O(kvm_run, mmio.phys_addr) O(kvm_run, mmio.data) O(kvm_run, mmio.len) O(kvm_run, mmio.is_write)
  O(kvm_run, internal.suberror) O(kvm_run, internal.ndata) O(kvm_run, internal.data)
  O(kvm_run, fail_entry.hardware_entry_failure_reason) O(kvm_run, fail_entry.cpu)
  O(kvm_run, system_event.type) O(kvm_run, system_event.ndata) O(kvm_run, system_event.data)
  O(kvm_run, debug.arch.exception) O(kvm_run, debug.arch.pc) O(kvm_run, debug.arch.dr6) O(kvm_run, debug.arch.dr7)
  S(kvm_guest_debug)
  printf("guestdbg ENABLE %d\nguestdbg SINGLESTEP %d\nguestdbg USE_SW_BP %d\nguestdbg USE_HW_BP %d\n",
    KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_SW_BP, KVM_GUESTDBG_USE_HW_BP);
  O(kvm_run, msr.error) O(kvm_run, msr.reason) O(kvm_run, msr.index) O(kvm_run, msr.data)
  O(kvm_userspace_memory_region, slot) O(kvm_userspace_memory_region, flags)
  O(kvm_userspace_memory_region, guest_phys_addr) O(kvm_userspace_memory_region, memory_size)
  O(kvm_userspace_memory_region, userspace_addr)
  O(kvm_regs, rax) O(kvm_regs, rbx) O(kvm_regs, rcx) O(kvm_regs, rdx) O(kvm_regs, rsi) O(kvm_regs, rdi)
  O(kvm_regs, rsp) O(kvm_regs, rbp) O(kvm_regs, r8) O(kvm_regs, r9) O(kvm_regs, r10) O(kvm_regs, r11)
  O(kvm_regs, r12) O(kvm_regs, r13) O(kvm_regs, r14) O(kvm_regs, r15) O(kvm_regs, rip) O(kvm_regs, rflags)
  O(kvm_segment, base) O(kvm_segment, limit) O(kvm_segment, selector) O(kvm_segment, type)
  O(kvm_segment, present) O(kvm_segment, dpl) O(kvm_segment, db) O(kvm_segment, s) O(kvm_segment, l)
  O(kvm_segment, g) O(kvm_segment, avl) O(kvm_segment, unusable)
  O(kvm_dtable, base) O(kvm_dtable, limit)
  O(kvm_sregs, cs) O(kvm_sregs, ds) O(kvm_sregs, es) O(kvm_sregs, fs) O(kvm_sregs, gs) O(kvm_sregs, ss)
  O(kvm_sregs, tr) O(kvm_sregs, ldt) O(kvm_sregs, gdt) O(kvm_sregs, idt) O(kvm_sregs, cr0) O(kvm_sregs, cr2)
  O(kvm_sregs, cr3) O(kvm_sregs, cr4) O(kvm_sregs, cr8) O(kvm_sregs, efer) O(kvm_sregs, apic_base)
  O(kvm_sregs, interrupt_bitmap)
  O(kvm_cpuid_entry2, function) O(kvm_cpuid_entry2, index) O(kvm_cpuid_entry2, flags) O(kvm_cpuid_entry2, eax)
  O(kvm_cpuid_entry2, ebx) O(kvm_cpuid_entry2, ecx) O(kvm_cpuid_entry2, edx)
  O(kvm_irq_level, irq) O(kvm_irq_level, level)
  O(kvm_msi, address_lo) O(kvm_msi, address_hi) O(kvm_msi, data) O(kvm_msi, flags) O(kvm_msi, devid)
  O(kvm_enable_cap, cap) O(kvm_enable_cap, flags) O(kvm_enable_cap, args)
  O(kvm_stats_header, flags) O(kvm_stats_header, name_size) O(kvm_stats_header, num_desc)
  O(kvm_stats_header, id_offset) O(kvm_stats_header, desc_offset) O(kvm_stats_header, data_offset)
  O(kvm_stats_desc, flags) O(kvm_stats_desc, exponent) O(kvm_stats_desc, size) O(kvm_stats_desc, offset)
  O(kvm_stats_desc, bucket_size) O(kvm_stats_desc, name)
  I(GET_API_VERSION) I(CREATE_VM) I(CHECK_EXTENSION) I(GET_VCPU_MMAP_SIZE) I(GET_SUPPORTED_CPUID) I(CREATE_VCPU)
  I(SET_USER_MEMORY_REGION) I(GET_DIRTY_LOG) I(SET_TSS_ADDR) I(SET_IDENTITY_MAP_ADDR) I(CREATE_IRQCHIP) I(IRQ_LINE) I(CREATE_PIT2)
  I(RUN) I(GET_REGS) I(SET_REGS) I(GET_SREGS) I(SET_SREGS) I(GET_MSRS) I(SET_MSRS) I(SET_CPUID2) I(GET_MP_STATE)
  I(SET_MP_STATE) I(NMI) I(ENABLE_CAP) I(SIGNAL_MSI) I(GET_DEBUGREGS) I(SET_DEBUGREGS) I(SET_GUEST_DEBUG) I(GET_STATS_FD)
  I(SET_GSI_ROUTING) I(IRQFD) I(CREATE_DEVICE) I(SET_DEVICE_ATTR) I(IOEVENTFD) I(GET_IRQCHIP) I(SET_IRQCHIP) I(GET_PIT2) I(SET_PIT2) I(GET_LAPIC) I(SET_LAPIC) I(REGISTER_COALESCED_MMIO) I(UNREGISTER_COALESCED_MMIO)
  E(UNKNOWN) E(EXCEPTION) E(IO) E(HYPERCALL) E(DEBUG) E(HLT) E(MMIO) E(IRQ_WINDOW_OPEN) E(SHUTDOWN) E(FAIL_ENTRY)
  E(INTR) E(SET_TPR) E(TPR_ACCESS) E(NMI) E(INTERNAL_ERROR) E(SYSTEM_EVENT) E(IOAPIC_EOI) E(X86_RDMSR) E(X86_WRMSR)
  E(X86_BUS_LOCK) E(NOTIFY)
  C(IRQCHIP) C(HLT) C(USER_MEMORY) C(SET_TSS_ADDR) C(NR_VCPUS) C(PIT2) C(IOEVENTFD) C(IRQFD) C(MAX_VCPUS)
  C(SIGNAL_MSI) C(READONLY_MEM) C(IMMEDIATE_EXIT) C(X86_USER_SPACE_MSR) C(BINARY_STATS_FD)
  C(IRQ_ROUTING) C(IOEVENTFD_ANY_LENGTH) C(COALESCED_MMIO)
  printf("const MEM_READONLY %d\n", KVM_MEM_READONLY);
  printf("const MEM_LOG_DIRTY_PAGES %d\n", KVM_MEM_LOG_DIRTY_PAGES);
  printf("const PIT_SPEAKER_DUMMY %d\n", KVM_PIT_SPEAKER_DUMMY);
  printf("const MSR_EXIT_REASON_UNKNOWN %d\n", KVM_MSR_EXIT_REASON_UNKNOWN);
  printf("const SYSTEM_EVENT_SHUTDOWN %d\n", KVM_SYSTEM_EVENT_SHUTDOWN);
  printf("const SYSTEM_EVENT_RESET %d\n", KVM_SYSTEM_EVENT_RESET);
  printf("const MP_STATE_HALTED %d\n", KVM_MP_STATE_HALTED);
  printf("const MP_STATE_UNINITIALIZED %d\n", KVM_MP_STATE_UNINITIALIZED);
  printf("const MP_STATE_INIT_RECEIVED %d\n", KVM_MP_STATE_INIT_RECEIVED);
  printf("const IOEVENTFD_FLAG_DATAMATCH %d\n", KVM_IOEVENTFD_FLAG_DATAMATCH);
  printf("const IOEVENTFD_FLAG_PIO %d\n", KVM_IOEVENTFD_FLAG_PIO);
  printf("const IOEVENTFD_FLAG_DEASSIGN %d\n", KVM_IOEVENTFD_FLAG_DEASSIGN);
  printf("const IRQFD_FLAG_DEASSIGN %d\n", KVM_IRQFD_FLAG_DEASSIGN);
  printf("const IRQFD_FLAG_RESAMPLE %d\n", KVM_IRQFD_FLAG_RESAMPLE);
  printf("const IRQ_ROUTING_IRQCHIP %d\n", KVM_IRQ_ROUTING_IRQCHIP);
  printf("const IRQ_ROUTING_MSI %d\n", KVM_IRQ_ROUTING_MSI);
  printf("const IRQCHIP_PIC_MASTER %d\n", KVM_IRQCHIP_PIC_MASTER);
  printf("const IRQCHIP_PIC_SLAVE %d\n", KVM_IRQCHIP_PIC_SLAVE);
  printf("const IRQCHIP_IOAPIC %d\n", KVM_IRQCHIP_IOAPIC);
  printf("const IOAPIC_NUM_PINS %d\n", KVM_IOAPIC_NUM_PINS);
  return 0;
}`;

function headerFacts(): Map<string, number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvm-abi-'));
  try {
    fs.writeFileSync(path.join(dir, 'abi.c'), C);
    execFileSync('gcc', ['-o', path.join(dir, 'abi'), path.join(dir, 'abi.c')]);
    const out = execFileSync(path.join(dir, 'abi'), { encoding: 'utf8' });
    const m = new Map<string, number>();
    for (const line of out.trim().split('\n')) {
      const [kind, key, value] = line.split(' ');
      m.set(`${kind} ${key}`, Number(value));
    }
    return m;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const UNION = abi.KVM_RUN_OFF.exit;

describe.skipIf(!haveHeaders || !haveGcc)('KVM ABI matches <linux/kvm.h>', () => {
  const h = haveHeaders && haveGcc ? headerFacts() : new Map<string, number>();
  const get = (k: string): number => {
    const v = h.get(k);
    if (v === undefined) throw new Error(`header fact ${k} missing`);
    return v;
  };

  it('KVM_SET_GUEST_DEBUG: struct size and control bits', () => {
    expect(get('size kvm_guest_debug')).toBe(72);
    for (const [n, v] of Object.entries(abi.GUESTDBG)) expect([n, v]).toEqual([n, get(`guestdbg ${n}`)]);
  });

  it('struct sizes', () => {
    for (const [name, size] of Object.entries(abi.SIZEOF)) {
      if (name.startsWith('kvm_run_')) continue;
      expect([name, size]).toEqual([name, get(`size ${name}`)]);
    }
  });

  it('kvm_run offsets', () => {
    for (const [f, off] of Object.entries(abi.KVM_RUN_OFF)) {
      if (f === 'exit') expect(off).toBe(get('off kvm_run.io'));
      else expect([f, off]).toEqual([f, get(`off kvm_run.${f}`)]);
    }
    const groups: Array<[string, Record<string, number>]> = [
      ['io', abi.RUN_IO], ['mmio', abi.RUN_MMIO], ['internal', abi.RUN_INTERNAL],
      ['fail_entry', abi.RUN_FAIL_ENTRY], ['system_event', abi.RUN_SYSTEM_EVENT], ['msr', abi.RUN_MSR],
      ['debug.arch', abi.RUN_DEBUG],
    ];
    for (const [g, fields] of groups) {
      for (const [f, off] of Object.entries(fields)) {
        expect([`${g}.${f}`, UNION + off]).toEqual([`${g}.${f}`, get(`off kvm_run.${g}.${f}`)]);
      }
    }
  });

  it('structure field offsets', () => {
    const groups: Array<[string, Record<string, number>]> = [
      ['kvm_userspace_memory_region', abi.USERSPACE_MEMORY_REGION], ['kvm_segment', abi.SEGMENT],
      ['kvm_dtable', abi.DTABLE], ['kvm_sregs', abi.SREGS], ['kvm_cpuid_entry2', abi.CPUID_ENTRY],
      ['kvm_irq_level', abi.IRQ_LEVEL], ['kvm_msi', abi.MSI], ['kvm_enable_cap', abi.ENABLE_CAP],
      ['kvm_stats_header', abi.STATS_HEADER], ['kvm_stats_desc', abi.STATS_DESC],
      ['kvm_ioeventfd', abi.IOEVENTFD], ['kvm_irqfd', abi.IRQFD], ['kvm_irq_routing', abi.IRQ_ROUTING],
      ['kvm_irq_routing_entry', abi.IRQ_ROUTING_ENTRY], ['kvm_irq_routing_msi', abi.IRQ_ROUTING_MSI],
      ['kvm_irq_routing_irqchip', abi.IRQ_ROUTING_IRQCHIP], ['kvm_irqchip', abi.IRQCHIP_STATE],
      ['kvm_pic_state', abi.PIC_STATE], ['kvm_pit_channel_state', abi.PIT_CHANNEL_STATE],
      ['kvm_pit_state2', abi.PIT_STATE2], ['kvm_coalesced_mmio_zone', abi.COALESCED_MMIO_ZONE],
      ['kvm_coalesced_mmio_ring', abi.COALESCED_MMIO_RING], ['kvm_coalesced_mmio', abi.COALESCED_MMIO],
      ['kvm_create_device', abi.CREATE_DEVICE], ['kvm_device_attr', abi.DEVICE_ATTR],
    ];
    for (const [s, fields] of groups) {
      for (const [f, off] of Object.entries(fields)) {
        expect([`${s}.${f}`, off]).toEqual([`${s}.${f}`, get(`off ${s}.${f}`)]);
      }
    }
    abi.REGS_ORDER.forEach((r, i) => expect([r, 8 * i]).toEqual([r, get(`off kvm_regs.${r}`)]));
  });

  it('ioctl numbers, exit reasons and capabilities', () => {
    for (const [n, v] of Object.entries(abi.KVM)) expect([n, v]).toEqual([n, get(`ioctl ${n}`)]);
    for (const [n, v] of Object.entries(abi.EXIT)) expect([n, v]).toEqual([n, get(`exit ${n}`)]);
    for (const [n, v] of Object.entries(abi.CAP)) expect([n, v]).toEqual([n, get(`cap ${n}`)]);
  });

  it('flag constants', () => {
    expect(abi.MEM_READONLY).toBe(get('const MEM_READONLY'));
    expect(abi.MEM_LOG_DIRTY_PAGES).toBe(get('const MEM_LOG_DIRTY_PAGES'));
    expect(abi.PIT_SPEAKER_DUMMY).toBe(get('const PIT_SPEAKER_DUMMY'));
    expect(abi.MSR_EXIT_REASON_UNKNOWN).toBe(get('const MSR_EXIT_REASON_UNKNOWN'));
    expect(abi.SYSTEM_EVENT.SHUTDOWN).toBe(get('const SYSTEM_EVENT_SHUTDOWN'));
    expect(abi.SYSTEM_EVENT.RESET).toBe(get('const SYSTEM_EVENT_RESET'));
    expect(abi.MP_STATE.HALTED).toBe(get('const MP_STATE_HALTED'));
    expect(abi.MP_STATE.UNINITIALIZED).toBe(get('const MP_STATE_UNINITIALIZED'));
    expect(abi.MP_STATE.INIT_RECEIVED).toBe(get('const MP_STATE_INIT_RECEIVED'));
    for (const [n, v] of Object.entries(abi.IOEVENTFD_FLAG)) expect([n, v]).toEqual([n, get(`const IOEVENTFD_FLAG_${n}`)]);
    for (const [n, v] of Object.entries(abi.IRQFD_FLAG)) expect([n, v]).toEqual([n, get(`const IRQFD_FLAG_${n}`)]);
    for (const [n, v] of Object.entries(abi.IRQ_ROUTING_TYPE)) expect([n, v]).toEqual([n, get(`const IRQ_ROUTING_${n}`)]);
    for (const [n, v] of Object.entries(abi.IRQCHIP)) expect([n, v]).toEqual([n, get(`const IRQCHIP_${n}`)]);
    expect(abi.IOAPIC_NUM_PINS).toBe(get('const IOAPIC_NUM_PINS'));
    expect(abi.DEV_TYPE_VFIO).toBe(get('const DEV_TYPE_VFIO'));
    expect([abi.DEV_VFIO.FILE, abi.DEV_VFIO.FILE_ADD, abi.DEV_VFIO.FILE_DEL])
      .toEqual([get('const DEV_VFIO_GROUP'), get('const DEV_VFIO_GROUP_ADD'), get('const DEV_VFIO_GROUP_DEL')]);
  });
});

describe('getU64', () => {
  it('reads a little-endian u64 whole, high word included, as a number', () => {
    const v = new DataView(new ArrayBuffer(24));
    for (const x of [0n, 0xffn, 0xffff_ffffn, 0x1_0000_0000n, 0x8_0000_1234n, 0xf_ffff_ffff_fff0n]) {
      v.setBigUint64(8, x, true);
      expect(abi.getU64(v, 8)).toBe(Number(x));
    }
  });
});
