// The bhyve(8) command line and the bhyve_config(5) variables it maps to.
// man/bhyve.8 and man/bhyve_config.5 are checked against these tables, so the
// flag letters and key names here are the documented ones.

import { pciDeviceKeys } from '../devices/registry.js';

export interface OptionInfo {
  /** The option: one letter for getopt tools, the long name for bhyvectl. */
  flag: string;
  /** Name of the option's argument, when it takes one. */
  arg?: string;
  description: string;
  /** bhyve_config(5) variables the option sets. */
  keys?: string[];
  /** amd64-only in FreeBSD's bhyve. */
  amd64?: boolean;
}

export const BHYVE_OPTIONS: readonly OptionInfo[] = [
  { flag: 'a', description: 'local APIC is in xAPIC mode (the default; deprecated)', keys: ['x86.x2apic'], amd64: true },
  { flag: 'A', description: 'accepted for compatibility; ACPI tables are always generated', amd64: true },
  { flag: 'C', description: 'include guest memory in core files', keys: ['memory.guest_in_core'] },
  {
    flag: 'c', arg: '[[cpus=]numcpus][,sockets=n][,cores=n][,threads=n]',
    description: 'number of vCPUs and/or CPU topology; cpus must equal sockets*cores*threads',
    keys: ['cpus', 'sockets', 'cores', 'threads'],
  },
  { flag: 'D', description: 'destroy the VM on guest-initiated power-off', keys: ['destroy_on_poweroff'] },
  { flag: 'e', description: 'exit on access to an unemulated I/O port', keys: ['x86.strictio'], amd64: true },
  { flag: 'f', arg: 'name,string=data|name,file=path', description: 'add a fw_cfg file (QEMU fw_cfg interface, lpc.fwcfg=qemu)' },
  {
    flag: 'G', arg: '[w][bind_address:]port',
    description: 'start a GDB-protocol debug server; w waits for the debugger before the first instruction',
    keys: ['gdb.address', 'gdb.port', 'gdb.wait'],
  },
  { flag: 'H', description: 'vCPUs exit on HLT instead of spinning', keys: ['x86.vmexit_on_hlt'], amd64: true },
  { flag: 'h', description: 'print usage and exit' },
  { flag: 'I', description: 'accepted for compatibility; an I/O APIC is always present', amd64: true },
  { flag: 'k', arg: 'config_file', description: 'read key=value configuration lines from a file' },
  { flag: 'K', arg: 'layout', description: 'keyboard layout for the PS/2 keyboard', keys: ['keyboard.layout'] },
  { flag: 'l', arg: 'help|lpcdev[,conf]', description: 'configure an LPC device (com1-com4, bootrom, tpm, pc-testdev)', amd64: true },
  { flag: 'm', arg: 'memsize[K|k|M|m|G|g|T|t]', description: 'guest memory size (no suffix: MiB; default 256M)', keys: ['memory.size'] },
  {
    flag: 'n', arg: 'id=N,size=S,cpus=C[,domain_policy=P]',
    description: 'define a guest NUMA domain', keys: ['domains.N.size', 'domains.N.cpus', 'domains.N.domain_policy'], amd64: true,
  },
  { flag: 'o', arg: 'var=value', description: 'set a bhyve_config(5) variable' },
  { flag: 'P', description: 'vCPUs exit on PAUSE', keys: ['x86.vmexit_on_pause'], amd64: true },
  { flag: 'p', arg: 'vcpu:hostcpu', description: 'pin a vCPU to a host CPU (repeatable)', keys: ['vcpu.N.cpuset'] },
  { flag: 'r', arg: 'file', description: 'resume a VM from a snapshot file' },
  { flag: 'S', description: 'wire guest memory', keys: ['memory.wired'] },
  { flag: 's', arg: 'help|slot,emulation[,conf]', description: 'configure a PCI device; slot is pcislot[:function] or bus:pcislot:function', keys: ['pci.B.S.F.device'] },
  { flag: 'U', arg: 'uuid', description: 'SMBIOS system UUID', keys: ['uuid'] },
  { flag: 'u', description: 'RTC keeps UTC time', keys: ['rtc.use_localtime'] },
  { flag: 'W', description: 'virtio devices use single-vector MSI instead of MSI-X', keys: ['virtio_msix'] },
  { flag: 'w', description: 'ignore accesses to unimplemented MSRs', keys: ['x86.strictmsr'], amd64: true },
  { flag: 'x', description: 'local APIC is in x2APIC mode', keys: ['x86.x2apic'], amd64: true },
  { flag: 'Y', description: 'do not generate MP tables', keys: ['x86.mptable'], amd64: true },
];

/** The getopt(3) option string for bhyve (amd64, snapshot and NUMA support). */
export const BHYVE_OPTSTRING = 'aehuwxACDHIPSWYk:f:o:p:G:c:s:m:l:K:U:r:n:';

export interface ConfigKeyInfo {
  /** Dotted path; N is a number, B.S.F a PCI bus.slot.function. */
  key: string;
  default?: string;
  description: string;
  /** For pci.B.S.F keys: the emulations that read it (none: every one). */
  devices?: string[];
}

const GLOBAL_KEYS: readonly ConfigKeyInfo[] = [
  // Global
  { key: 'name', description: 'VM name (the vmname operand)' },
  { key: 'cpus', default: '1', description: 'number of vCPUs' },
  { key: 'sockets', description: 'CPU sockets (default: cpus)' },
  { key: 'cores', default: '1', description: 'cores per socket' },
  { key: 'threads', default: '1', description: 'threads per core' },
  { key: 'memory.size', default: '256M', description: 'guest memory size' },
  { key: 'memory.wired', default: 'false', description: 'wire guest memory' },
  { key: 'memory.guest_in_core', default: 'false', description: 'include guest memory in core files' },
  { key: 'acpi_tables', default: 'true', description: 'generate ACPI tables' },
  { key: 'acpi_tables_in_memory', default: 'true', description: 'place ACPI tables in guest memory as well as fw_cfg' },
  { key: 'acpi_s3', default: 'false', description: 'offer ACPI S3 (suspend to RAM): \\_S3 in the DSDT, SLP_TYP 1 sleeps until an RTC alarm or the power button' },
  { key: 'destroy_on_poweroff', default: 'false', description: 'destroy the VM on guest power-off' },
  { key: 'gdb.address', default: 'localhost', description: 'debug server listen address' },
  { key: 'gdb.port', default: '0', description: 'debug server TCP port (0: no server)' },
  { key: 'gdb.wait', default: 'false', description: 'wait for a debugger before starting vCPUs' },
  { key: 'keyboard.layout', description: 'PS/2 keyboard layout' },
  { key: 'rtc.use_localtime', default: 'true', description: 'RTC keeps local time (false: UTC)' },
  { key: 'uuid', description: 'SMBIOS system UUID' },
  { key: 'virtio_msix', default: 'true', description: 'virtio devices use MSI-X' },
  { key: 'config.dump', default: 'false', description: 'print the configuration and exit' },
  { key: 'vcpu.N.cpuset', description: 'host CPUs vCPU N may run on (list and ranges)' },
  { key: 'vcpu.ap_model', default: 'pool', description: 'where application processors run: pool (libuv threadpool) or thread (one worker each)' },
  { key: 'vcpu.bsp_model', default: 'main', description: 'where vCPU 0 and the device models run: main (the main thread) or thread (a worker of its own)' },
  { key: 'domains.N.size', description: 'memory of guest NUMA domain N' },
  { key: 'domains.N.cpus', description: 'vCPUs of guest NUMA domain N' },
  { key: 'domains.N.domain_policy', description: 'host domainset(9) policy of guest NUMA domain N' },
  // SMBIOS
  { key: 'bios.vendor', default: 'BHYVE', description: 'SMBIOS BIOS vendor' },
  { key: 'bios.version', default: '14.0', description: 'SMBIOS BIOS version' },
  { key: 'bios.release_date', default: '10/17/2021', description: 'SMBIOS BIOS release date' },
  { key: 'system.family_name', description: 'SMBIOS system family' },
  { key: 'system.manufacturer', default: 'FreeBSD', description: 'SMBIOS system manufacturer' },
  { key: 'system.product_name', default: 'BHYVE', description: 'SMBIOS system product name' },
  { key: 'system.serial_number', default: 'None', description: 'SMBIOS system serial number' },
  { key: 'system.sku', description: 'SMBIOS system SKU' },
  { key: 'system.version', default: '1.0', description: 'SMBIOS system version' },
  { key: 'board.manufacturer', default: 'FreeBSD', description: 'SMBIOS board manufacturer' },
  { key: 'board.product_name', default: 'BHYVE', description: 'SMBIOS board product name' },
  { key: 'board.version', default: '1.0', description: 'SMBIOS board version' },
  { key: 'board.serial_number', default: 'None', description: 'SMBIOS board serial number' },
  { key: 'board.asset_tag', description: 'SMBIOS board asset tag' },
  { key: 'board.location', description: 'SMBIOS board location in chassis' },
  { key: 'chassis.manufacturer', description: 'SMBIOS chassis manufacturer' },
  { key: 'chassis.version', description: 'SMBIOS chassis version' },
  { key: 'chassis.serial_number', description: 'SMBIOS chassis serial number' },
  { key: 'chassis.asset_tag', description: 'SMBIOS chassis asset tag' },
  { key: 'chassis.sku', description: 'SMBIOS chassis SKU' },
  // x86
  { key: 'x86.mptable', default: 'true', description: 'generate MP tables' },
  { key: 'x86.x2apic', default: 'false', description: 'local APIC in x2APIC mode' },
  { key: 'x86.strictio', default: 'false', description: 'exit on access to an unemulated I/O port' },
  { key: 'x86.strictmsr', default: 'true', description: 'inject #GP on access to an unimplemented MSR' },
  { key: 'x86.vmexit_on_hlt', default: 'false', description: 'vCPUs exit on HLT' },
  { key: 'x86.vmexit_on_pause', default: 'false', description: 'vCPUs exit on PAUSE' },
  { key: 'x86.kvm_pv', default: 'off', description: "KVM paravirtual features in CPUID at 0x40000100 (off, all, or a list: kvmclock, pv_eoi, pv_ipi, ...)" },
  { key: 'x86.cpuid.vendor', description: 'CPUID vendor string (12 characters) for testing' },
  { key: 'x86.cpuid.set', description: 'CPUID bits to set, LEAF[.SUBLEAF].REG.BIT,... (testing)' },
  { key: 'x86.cpuid.clear', description: 'CPUID bits to clear, LEAF[.SUBLEAF].REG.BIT,... (testing)' },
  {
    key: 'x86.require_ept_rvi', default: 'true',
    description: 'refuse to run without hardware nested paging (EPT/RVI); false runs on hosts without it (e.g. shadow paging)',
  },
  // Security
  { key: 'security.sandbox', default: 'true', description: 'sandbox the process once the devices are open (Landlock, seccomp, no capabilities)' },
  { key: 'security.sandbox_log', default: 'false', description: 'log system calls outside the sandbox list instead of refusing them' },
  // PCI devices: from the device records (devices/registry.ts), below.
  // LPC
  { key: 'lpc.bootrom', description: 'boot ROM (firmware) image' },
  { key: 'lpc.bootvars', description: 'UEFI variable store file' },
  { key: 'lpc.comN.path', description: 'COM1-COM4 backend (stdio, a tty device, tcp=ip:port)' },
  { key: 'lpc.fwcfg', default: 'bhyve', description: 'firmware configuration interface (bhyve or qemu)' },
  { key: 'lpc.debugcon.path', description: 'QEMU debug console at port 0x402 (stdio or a file), lpc.fwcfg=qemu only' },
  { key: 'lpc.pc-testdev', default: 'false', description: 'attach the pc-testdev test device' },
  { key: 'lpc.pcireg.vendor', description: 'LPC bridge PCI vendor ID override' },
  { key: 'lpc.pcireg.device', description: 'LPC bridge PCI device ID override' },
  { key: 'tpm.type', description: 'TPM type (passthru or swtpm)' },
  { key: 'tpm.path', description: 'TPM device or swtpm socket' },
  { key: 'tpm.version', default: '2.0', description: 'TPM version' },
];

/** Every documented variable: the global ones, then pci.B.S.F.* as the
 * device records registered now declare them (with the devices that read
 * each). */
export function configKeys(): ConfigKeyInfo[] {
  return [
    ...GLOBAL_KEYS,
    ...pciDeviceKeys().map((k) => ({
      key: `pci.B.S.F.${k.key}`, description: k.description, ...(k.default !== undefined ? { default: k.default } : {}),
      ...(k.devices.length ? { devices: k.devices } : {}),
    })),
  ];
}

/** The key patterns of configKeys(). */
export function knownConfigKeys(): string[] {
  return configKeys().map((k) => k.key);
}

/** bhyve's usage text (bhyve_usage() in amd64/bhyverun_machdep.c). */
export function bhyveUsage(progname = 'bhyve'): string {
  const pad = ' '.repeat(progname.length);
  return (
    `Usage: ${progname} [-aCDeHhPSuWwxY]\n` +
    `       ${pad} [-c [[cpus=]numcpus][,sockets=n][,cores=n][,threads=n]]\n` +
    `       ${pad} [-G port] [-k config_file] [-l lpc] [-m mem] [-o var=value]\n` +
    `       ${pad} [-p vcpu:hostcpu] [-r file] [-s pci] [-U uuid] vmname\n` +
    '       -a: local apic is in xAPIC mode (deprecated)\n' +
    '       -C: include guest memory in core file\n' +
    '       -c: number of CPUs and/or topology specification\n' +
    '       -D: destroy on power-off\n' +
    '       -e: exit on unhandled I/O access\n' +
    '       -f: add a fw_cfg file\n' +
    '       -G: start a debug server\n' +
    '       -H: vmexit from the guest on HLT\n' +
    '       -h: help\n' +
    '       -k: key=value flat config file\n' +
    '       -K: PS2 keyboard layout\n' +
    '       -l: LPC device configuration\n' +
    '       -m: memory size\n' +
    '       -n: NUMA domain specification\n' +
    "       -o: set config 'var' to 'value'\n" +
    '       -P: vmexit from the guest on pause\n' +
    "       -p: pin 'vcpu' to 'hostcpu'\n" +
    '       -r: path to checkpoint file\n' +
    '       -S: guest memory cannot be swapped\n' +
    '       -s: <slot,driver,configinfo> PCI slot config\n' +
    '       -U: UUID\n' +
    '       -u: RTC keeps UTC time\n' +
    '       -W: force virtio to use single-vector MSI\n' +
    '       -w: ignore unimplemented MSRs\n' +
    '       -x: local APIC is in x2APIC mode\n' +
    '       -Y: disable MPtable generation\n'
  );
}
