/*
 * demo.rom: the project's demo guest. Prints on COM1:
 *   bhyve-kvm demo guest
 *   cpu vendor: <CPUID 0 vendor string>
 *   hypervisor: <CPUID 0x40000000 signature, "none" without CPUID.1:ECX[31]>
 *   cpus: <CPU count from the CPUID topology, see cpus.inc>
 *   memory: <N> MiB
 *   powering off
 * then writes SLP_TYP=5 | SLP_EN (0x3400) to the ACPI PM1a control block at
 * port 0x404 (bhyve's). Expected exit status under bhyve: 1 (powered off).
 * If that does not power off (QEMU): prints "poweroff failed" and writes 0x10
 * to port 0xf4 (status 33 with an isa-debug-exit / pc-testdev device).
 *
 * Memory size from the RTC CMOS as bhyve (and QEMU) set it:
 *   0x34/0x35     memory above 16 MiB below 4 GiB, 64 KiB units
 *   0x5b/0x5c/0x5d memory above 4 GiB, 64 KiB units
 *   0x30/0x31     extended memory 1..64 MiB in KiB (used if 0x34/0x35 = 0)
 * Everything runs in real mode; numbers are printed in decimal.
 */
#include "lib16.inc"

#define CMOS_READ(reg)	movb $reg, %al; outb %al, $0x70; inb $0x71, %al

main:
	PUTS16(banner)

	PUTS16(vendormsg)
	xorl	%eax, %eax
	cpuid
	movl	%ebx, %eax
	call	put4chars16
	movl	%edx, %eax
	call	put4chars16
	movl	%ecx, %eax
	call	put4chars16
	PUTS16(crlf)

	PUTS16(hvmsg)
	movl	$1, %eax
	cpuid
	testl	$(1 << 31), %ecx
	jnz	1f
	PUTS16(nonemsg)
	jmp	2f
1:	movl	$0x40000000, %eax
	cpuid
	movl	%ebx, %eax
	call	put4chars16
	movl	%ecx, %eax
	call	put4chars16
	movl	%edx, %eax
	call	put4chars16
2:	PUTS16(crlf)

	PUTS16(cpusmsg)
	call	cpu_count
	call	putdec16
	PUTS16(crlf)

	PUTS16(memmsg)
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
	call	putdec16
	PUTS16(mibmsg)

	PUTS16(offmsg)
	movw	$0x404, %dx
	movw	$((5 << 10) | (1 << 13)), %ax
	outw	%ax, %dx
	PUTS16(failmsg)
	movl	$0x10, %eax
	jmp	testdev_exit16

#include "cpus.inc"

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
