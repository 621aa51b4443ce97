// bhyvectl(8)'s long options (bhyvectl.c, amd64/bhyvectl_machdep.c); the man
// page and the flag parser are both generated from or checked against this.

import type { OptionInfo } from './bhyve-options.js';

const opts: OptionInfo[] = [];
const add = (flag: string, description: string, arg?: string): void => {
  opts.push(arg ? { flag, arg, description } : { flag, description });
};

// Selection and lifecycle
add('vm', 'name of the virtual machine', 'name');
add('libxo', 'output format: text, json or xml, optionally followed by ,pretty', 'options');
add('cpu', 'vCPU the other options apply to', 'vcpu');
add('create', 'create the virtual machine');
add('destroy', 'destroy the virtual machine');
add('run', 'run the vCPU once and print why it exited');
add('force-reset', 'force the virtual machine to reset');
add('force-poweroff', 'force the virtual machine to power off');
add('wakeup', 'wake the guest from ACPI S3 as the power button would');
add('checkpoint', 'save a snapshot of the running virtual machine to a file', 'file');
add('suspend', 'save a snapshot to a file and stop the virtual machine', 'file');
// Memory
add('set-mem', 'set guest memory size in MiB', 'size');
add('get-memmap', 'print the guest memory map');
add('get-memseg', 'print the guest memory segments');
add('get-gpa-pmap', 'print the page table entries mapping a guest physical address', 'gpa');
add('get-lowmem', 'print the size of guest memory below 4 GiB');
add('get-highmem', 'print the size of guest memory above 4 GiB');
// Information
add('get-all', 'print all vCPU state');
add('get-stats', 'print vCPU statistics');
add('screenshot', 'save the guest screen (fbuf) as a PNG file', 'file');
add('get-active-cpus', 'print the active vCPUs');
add('get-debug-cpus', 'print the vCPUs stopped for debugging');
add('get-suspended-cpus', 'print the suspended vCPUs');
add('get-cpu-topology', 'print sockets, cores, threads and maxcpus');
add('get-intinfo', 'print pending exception/interrupt information');
add('get-exit-reason', 'print the reason of the last VM exit');
// Capabilities
add('capname', 'capability to get or set', 'name');
add('getcap', 'print the value of a capability');
add('setcap', 'set a capability', '0|1');
// Interrupts
add('inject-nmi', 'inject an NMI into the vCPU');
add('assert-lapic-lvt', 'assert a local APIC LVT pin', 'pin');
add('set-x2apic-state', 'set the x2APIC state', 'state');
add('get-x2apic-state', 'print the x2APIC state');
// Registers. FreeBSD sets only rip, rsp, rax and rflags; we set every
// general purpose register (an extension, see bhyvectl(8)).
for (const r of ['rip', 'rsp', 'rax', 'rflags', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rbp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15']) {
  add(`set-${r}`, `set register ${r}`, 'value');
  add(`get-${r}`, `print register ${r}`);
}
for (const r of ['efer', 'cr0', 'cr2', 'cr3', 'cr4', 'dr0', 'dr1', 'dr2', 'dr3', 'dr6', 'dr7']) {
  add(`set-${r}`, `set register ${r}`, 'value');
  add(`get-${r}`, `print register ${r}`);
}
for (const s of ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldtr']) {
  add(`set-${s}`, `set the ${s} segment selector`, 'value');
  add(`get-${s}`, `print the ${s} segment selector`);
}
for (const s of ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldtr', 'gdtr', 'idtr']) {
  add(`set-desc-${s}`, `set the ${s} descriptor from --desc-base, --desc-limit and --desc-access`);
  add(`get-desc-${s}`, `print the ${s} descriptor`);
}
add('desc-base', 'descriptor base for --set-desc-*', 'value');
add('desc-limit', 'descriptor limit for --set-desc-*', 'value');
add('desc-access', 'descriptor access rights for --set-desc-*', 'value');
// RTC
add('get-rtc-time', 'print the RTC time');
add('set-rtc-time', 'set the RTC time in seconds since the epoch', 'secs');
add('get-rtc-nvram', 'print an RTC NVRAM byte');
add('set-rtc-nvram', 'set an RTC NVRAM byte', 'value');
add('rtc-nvram-offset', 'RTC NVRAM offset for --get/--set-rtc-nvram', 'offset');
// Passthru
add('unassign-pptdev', 'detach a passthru device from the virtual machine', 'bus/slot/func');
// VMCS/VMCB (common)
for (const f of ['eptp', 'exception-bitmap', 'io-bitmap-address', 'tsc-offset', 'msr-bitmap', 'msr-bitmap-address', 'guest-pat', 'guest-sysenter']) {
  add(`get-${f}`, `print the ${f.replace(/-/g, ' ')}`);
}
// Intel VMCS
for (const f of ['pinbased-ctls', 'procbased-ctls', 'procbased-ctls2', 'guest-linear-address', 'guest-physical-address',
  'entry-interruption-info', 'cr0-mask', 'cr0-shadow', 'cr4-mask', 'cr4-shadow', 'cr3-targets', 'tpr-threshold', 'vpid',
  'exit-ctls', 'entry-ctls', 'instruction-error', 'host-pat', 'host-cr0', 'host-cr3', 'host-cr4', 'host-rip', 'host-rsp',
  'exit-qualification', 'exit-inst-length', 'interruptibility', 'exit-interruption-error', 'exit-interruption-info', 'link']) {
  add(`get-vmcs-${f}`, `print the VMCS ${f.replace(/-/g, ' ')} (Intel)`);
}
add('get-apic-access-address', 'print the APIC access address (Intel)');
add('get-virtual-apic-address', 'print the virtual APIC page address (Intel)');
// AMD VMCB
for (const f of ['intercepts', 'asid', 'exit-details', 'tlb-ctrl', 'virq']) {
  add(`get-vmcb-${f}`, `print the VMCB ${f.replace(/-/g, ' ')} (AMD)`);
}
for (const f of ['apic-bar', 'backing-page', 'table']) {
  add(`get-avic-${f}`, `print the AVIC ${f.replace(/-/g, ' ')} (AMD)`);
}

export const BHYVECTL_OPTIONS: readonly OptionInfo[] = opts;

/** Options that only select or qualify; every other option is an operation. */
export const BHYVECTL_MODIFIERS: ReadonlySet<string> = new Set(['vm', 'libxo', 'cpu', 'capname', 'desc-base', 'desc-limit', 'desc-access', 'rtc-nvram-offset']);
