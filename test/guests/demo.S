/*
 * demo.rom: the project's demo guest. Prints on COM1:
 *   bhyve-kvm demo guest
 *   cpu vendor: <CPUID 0 vendor string>
 *   hypervisor: <CPUID 0x40000000 signature, "none" without CPUID.1:ECX[31]>
 *   cpus: <CPU count: ACPI MADT if present, else CPUID topology; cpus.inc>
 *   memory: <N> MiB
 *   powering off
 * then writes SLP_TYP=5 | SLP_EN (0x3400) to the ACPI PM1a control block at
 * port 0x404 (bhyve's). Expected exit status under bhyve: 1 (powered off).
 * If that does not power off (QEMU): prints "poweroff failed" and writes 0x10
 * to port 0xf4 (status 33 with an isa-debug-exit / pc-testdev device).
 *
 * Memory size from the RTC CMOS as bhyve (and QEMU) set it:
 *   0x34/0x35      memory above 16 MiB below 4 GiB, 64 KiB units
 *   0x5b/0x5c/0x5d memory above 4 GiB, 64 KiB units
 *   0x30/0x31      extended memory 1..64 MiB in KiB (used if 0x34/0x35 = 0)
 * Runs in flat 32-bit protected mode (to read ACPI tables); numbers are
 * printed in decimal.
 */
#include "lib16.inc"

#define CMOS_READ(reg)	movb $reg, %al; outb %al, $0x70; inb $0x71, %al

main:
	PUTS16(banner)
	jmp	enter_pm32
#include "lib32.inc"
#include "cpus.inc"

/* put4chars32: write the 4 bytes of %eax, low byte first, skipping NULs. */
put4chars32:
	pushl	%eax
	pushl	%ecx
	movl	$4, %ecx
1:	testb	%al, %al
	jz	2f
	call	putc32
2:	shrl	$8, %eax
	decl	%ecx
	jnz	1b
	popl	%ecx
	popl	%eax
	ret

main32:
	PUTS32(vendormsg)
	xorl	%eax, %eax
	cpuid
	movl	%ebx, %eax
	call	put4chars32
	movl	%edx, %eax
	call	put4chars32
	movl	%ecx, %eax
	call	put4chars32
	PUTS32(crlf)

	PUTS32(hvmsg)
	movl	$1, %eax
	cpuid
	testl	$(1 << 31), %ecx
	jnz	1f
	PUTS32(nonemsg)
	jmp	2f
1:	movl	$0x40000000, %eax
	cpuid
	movl	%ebx, %eax
	call	put4chars32
	movl	%ecx, %eax
	call	put4chars32
	movl	%edx, %eax
	call	put4chars32
2:	PUTS32(crlf)

	PUTS32(cpusmsg)
	call	cpu_count
	call	putdec32
	PUTS32(crlf)

	PUTS32(memmsg)
	xorl	%ebx, %ebx
	CMOS_READ(0x35)
	movb	%al, %bh
	CMOS_READ(0x34)
	movb	%al, %bl		/* ebx = 64 KiB units above 16 MiB */
	testl	%ebx, %ebx
	jz	3f
	shrl	$4, %ebx		/* MiB */
	addl	$16, %ebx
	jmp	4f
3:	CMOS_READ(0x31)			/* no 0x34/0x35: 1 MiB + extended KiB */
	movb	%al, %bh
	CMOS_READ(0x30)
	movb	%al, %bl
	shrl	$10, %ebx
	incl	%ebx
4:	xorl	%ecx, %ecx
	CMOS_READ(0x5d)
	movb	%al, %cl
	shll	$8, %ecx
	CMOS_READ(0x5c)
	movb	%al, %cl
	shll	$8, %ecx
	CMOS_READ(0x5b)
	movb	%al, %cl		/* ecx = 64 KiB units above 4 GiB */
	shrl	$4, %ecx
	addl	%ecx, %ebx
	movl	%ebx, %eax
	call	putdec32
	PUTS32(mibmsg)

	PUTS32(offmsg)
	movw	$0x404, %dx
	movw	$((5 << 10) | (1 << 13)), %ax
	outw	%ax, %dx
	PUTS32(failmsg)
	movl	$0x10, %eax
	jmp	testdev_exit32

banner:	.asciz	"bhyve-kvm demo guest\r\n"
vendormsg: .asciz "cpu vendor: "
hvmsg:	.asciz	"hypervisor: "
nonemsg: .asciz	"none"
cpusmsg: .asciz	"cpus: "
memmsg:	.asciz	"memory: "
mibmsg:	.asciz	" MiB\r\n"
offmsg:	.asciz	"powering off\r\n"
failmsg: .asciz	"poweroff failed\r\n"
crlf:	.asciz	"\r\n"
#include "tail.inc"
