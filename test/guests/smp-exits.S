/*
 * smp-exits.rom: smp.rom whose application processors check in without
 * printing: each writes port 0x80 as many times as the 32-bit parameter at
 * ROM offset 0xFFE0 says (default 0), then increments the counter and
 * halts. The BSP takes the CPU count from the ACPI MADT or CPUID and
 * prints "all <cpus> cpus up" (exit status 33) or the timeout line (3).
 * With 0 the APs make no exit to the VMM at all: how long all of them take
 * to come up is the VMM's own AP start-up; with N each makes N port exits
 * (bench/launch.mjs, bench/ap-exits.mjs).
 */
#define SMP_AP_EXITS
#include "smp.S"
