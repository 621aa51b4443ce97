/*
 * smp.rom: brings up the application processors.
 * The BSP enters flat 32-bit protected mode (to reach the local APIC at
 * 0xFEE00000), prints "BSP <apic id> up", copies a 16-bit trampoline to
 * 0x8000 and broadcasts INIT, then SIPI twice with vector 0x08 (=> 0x8000),
 * all with the "all excluding self" shorthand. Each AP enters protected mode
 * through the trampoline, prints "AP <apic id> up" under a spinlock (xchg),
 * increments a counter (lock incl) and halts (cli; hlt).
 * The BSP waits for the counter to reach cpus - 1, then prints
 * "all <cpus> cpus up" and writes 0x10 to port 0xf4 (exit status 33).
 * cpus = the 32-bit parameter at ROM offset 0xFFE0 if nonzero, else the
 * ACPI MADT or CPUID topology (see cpus.inc). Timeout ~2^34 TSC ticks (a few seconds):
 * prints "timeout waiting for APs (<n> up)" and writes 1 to port 0xf4
 * (exit status 3).
 * Low RAM used: 0x7000 BSP stack, 0x8000 trampoline, 0x9000 lock,
 * 0x9004 counter, 0x10000 + id * 0x1000 AP stacks.
 */
#include "lib16.inc"

#define LAPIC		0xFEE00000
#define LAPIC_ID	(LAPIC + 0x20)
#define LAPIC_SVR	(LAPIC + 0xF0)
#define LAPIC_ICR_LO	(LAPIC + 0x300)
#define LAPIC_ICR_HI	(LAPIC + 0x310)
#define TRAMPOLINE	0x8000
#define LOCK		0x9000
#define COUNTER		0x9004

main:
	jmp	enter_pm32
#include "lib32.inc"
	.code32
#include "cpus.inc"

/* delay: spin for %ecx TSC ticks. Clobbers eax, edx, esi, edi. */
delay:
	rdtsc
	movl	%eax, %esi
	movl	%edx, %edi
	addl	%ecx, %esi
	adcl	$0, %edi
1:	rdtsc
	cmpl	%edi, %edx
	ja	2f
	jb	1b
	cmpl	%esi, %eax
	jb	1b
2:	ret

/* send_ipi: write %eax to ICR low (destination shorthand in it), wait idle. */
send_ipi:
	movl	$0, LAPIC_ICR_HI
	movl	%eax, LAPIC_ICR_LO
1:	testl	$(1 << 12), LAPIC_ICR_LO	/* delivery status */
	jnz	1b
	ret

lock_acquire:
	movl	$1, %eax
	xchgl	%eax, LOCK
	testl	%eax, %eax
	jnz	lock_acquire
	ret

lock_release:
	movl	$0, LOCK
	ret

main32:
	movl	$0, LOCK
	movl	$0, COUNTER
	/* software-enable the local APIC (SVR bit 8, spurious vector 0xff) */
	movl	$0x1ff, LAPIC_SVR

	PUTS32(bspmsg)
	movl	LAPIC_ID, %eax
	shrl	$24, %eax
	call	putdec32
	PUTS32(upmsg)

	/* copy the AP trampoline to 0x8000 */
	movl	$ROM(ap_tramp), %esi
	movl	$TRAMPOLINE, %edi
	movl	$(ap_tramp_end - ap_tramp), %ecx
	rep movsb

	/* INIT, ~10 ms, SIPI, ~200 us, SIPI (vector 0x08 => 0x8000) */
	movl	$0x000C4500, %eax		/* all excl. self, assert, INIT */
	call	send_ipi
	movl	$(1 << 25), %ecx
	call	delay
	movl	$(0x000C4600 | (TRAMPOLINE >> 12)), %eax	/* SIPI */
	call	send_ipi
	movl	$(1 << 20), %ecx
	call	delay
	movl	$(0x000C4600 | (TRAMPOLINE >> 12)), %eax
	call	send_ipi

	/* expected number of CPUs -> %ebp */
#ifdef SMP_AP_EXITS
	call	cpu_count			/* the parameter is the APs' exit count */
	movl	%eax, %ebp
#else
	movl	ROM(rom_param), %ebp
	testl	%ebp, %ebp
	jnz	1f
	call	cpu_count
	movl	%eax, %ebp
#endif
1:	leal	-1(%ebp), %ebx			/* APs expected */

	/* wait for the APs, with a TSC deadline 2^34 ticks away */
	rdtsc
	leal	4(%edx), %edi			/* deadline high dword */
2:	cmpl	%ebx, COUNTER
	jae	3f
	rdtsc
	cmpl	%edi, %edx
	jb	2b
	call	lock_acquire
	PUTS32(timeoutmsg)
	movl	COUNTER, %eax
	call	putdec32
	PUTS32(timeout2msg)
	movl	$1, %eax
	jmp	testdev_exit32

3:	call	lock_acquire
	PUTS32(allmsg)
	movl	%ebp, %eax
	call	putdec32
	PUTS32(cpusupmsg)
	movl	$0x10, %eax
	jmp	testdev_exit32

/* AP, in protected mode: per-CPU stack, print under the lock, count, halt. */
ap32:
	movw	$SEL_DATA32, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	movw	%ax, %fs
	movw	%ax, %gs
	movl	LAPIC_ID, %ebx
	shrl	$24, %ebx
	movl	%ebx, %esp
	shll	$12, %esp
	addl	$0x11000, %esp			/* 0x10000 + (id + 1) * 0x1000 */
#ifdef SMP_AP_EXITS
	/* smp-exits.S: no printing; the parameter's count of port 0x80 writes */
	movl	ROM(rom_param), %ecx
	jecxz	2f
1:	outb	%al, $0x80
	loop	1b
2:
#else
	call	lock_acquire
	PUTS32(apmsg)
	movl	%ebx, %eax
	call	putdec32
	PUTS32(upmsg)
	call	lock_release
#endif
	lock incl COUNTER
	cli
1:	hlt
	jmp	1b

/* The AP trampoline: copied to 0x8000, entered in real mode at 0800:0000.
 * Position independent: only offsets relative to ap_tramp are used. */
	.code16
ap_tramp:
	cli
	cld
	lgdtl	%cs:(ap_gdt_desc - ap_tramp)
	movl	%cr0, %eax
	orl	$1, %eax
	movl	%eax, %cr0
	ljmpl	$SEL_CODE32, $ROM(ap32)
ap_gdt_desc:
	.word	gdt_end - gdt - 1
	.long	ROM(gdt)
ap_tramp_end:

bspmsg:	.asciz	"BSP "
apmsg:	.asciz	"AP "
upmsg:	.asciz	" up\r\n"
allmsg:	.asciz	"all "
cpusupmsg: .asciz " cpus up\r\n"
timeoutmsg: .asciz "timeout waiting for APs ("
timeout2msg: .asciz " up)\r\n"
#include "tail.inc"
