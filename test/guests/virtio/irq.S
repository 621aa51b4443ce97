/*
 * irq.S - the ring-0 side of the test guests' interrupt mode (irq.c sets
 * it up from ring 3). Every path here is interpreted by KVM on kvm_pvm
 * hosts (~1 us per instruction), so it stays short: acknowledge, record,
 * EOI, iret. The guests' work loops stay in ring 3.
 *
 *   irq_stubs      256 entry stubs, 16 bytes apart (vector v at irq_stubs +
 *                  16 * v): exceptions (0-31) push a dummy error code where
 *                  the CPU pushes none, then the vector; irq_common or
 *                  exc_common follows.
 *   irq_common     counts the interrupt (irq_count[v]), runs the vector's
 *                  acknowledge action (irq_ack_kind[v]: read an MMIO byte such
 *                  as a virtio ISR, read an indexed port such as RTC register
 *                  C, write an MMIO dword such as the HPET interrupt status,
 *                  or read one such as the e1000's ICR)
 *                  and ORs what it read into irq_ack_bits[v] (an MMIO byte
 *                  that reads 0 counts in irq_ack_zero[v]), records the TSC
 *                  of the first and the last interrupt, writes the local APIC
 *                  EOI register, returns.
 *   irq_spurious   the APIC's spurious vector: counted, no EOI.
 *   irq_gp_gate    the general-protection handler, which is also the ring-3
 *                  wait: a hlt in ring 3 faults, and this handler steps over
 *                  it, then sti; hlt; iretq. Ring 3 runs with IF=0, so an
 *                  interrupt that came after its check stays pending until
 *                  the sti, and ends the halt. (int $n from ring 3 is #UD on
 *                  kvm_pvm hosts, so no software-interrupt gate.)
 *   exc_common     an exception: irq_exception() (irq.c) prints it and ends
 *                  the run.
 */
#include "irq-defs.h"

	.text
	.code64
	.balign	16
	.globl	irq_stubs
irq_stubs:
	.set	vec, 0
	.rept	256
	.balign	16
	.if	vec < 32
	.if	(vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
	.else
	pushq	$0
	.endif
	pushq	$vec
	jmp	exc_common
	.else
	pushq	$vec
	jmp	irq_common
	.endif
	.set	vec, vec + 1
	.endr

/* Stack at entry: vector, RIP, CS, RFLAGS, RSP, SS. */
irq_common:
	pushq	%rax
	pushq	%rcx
	pushq	%rdx
	movl	24(%rsp), %eax			/* vector */
	movl	$1, %ecx
	lock xaddl %ecx, irq_count(,%rax,4)
	pushq	%rcx				/* the count before this one */
	movzbl	irq_ack_kind(%rax), %ecx
	cmpl	$IRQ_ACK_MMIO8, %ecx
	jne	1f
	movq	irq_ack_addr(,%rax,8), %rdx	/* read the byte, e.g. a virtio ISR */
	movzbl	(%rdx), %ecx
	lock orl %ecx, irq_ack_bits(,%rax,4)
	testl	%ecx, %ecx
	jnz	4f
	lock incl irq_ack_zero(,%rax,4)		/* nothing to acknowledge: spurious */
	jmp	4f
1:	cmpl	$IRQ_ACK_PORT, %ecx
	jne	2f
	movq	irq_ack_addr(,%rax,8), %rcx	/* index | index port << 16 | data port << 32 */
	movl	%ecx, %eax
	shrq	$16, %rcx
	movw	%cx, %dx
	outb	%al, %dx
	shrq	$16, %rcx
	movw	%cx, %dx
	inb	%dx, %al
	movzbl	%al, %ecx
	movl	32(%rsp), %eax
	lock orl %ecx, irq_ack_bits(,%rax,4)
	jmp	4f
2:	cmpl	$IRQ_ACK_MMIO32W, %ecx
	jne	3f
	movq	irq_ack_addr(,%rax,8), %rdx	/* write a dword, e.g. HPET ISR bits */
	movl	irq_ack_val(,%rax,4), %ecx
	movl	%ecx, (%rdx)
	jmp	4f
3:	cmpl	$IRQ_ACK_MMIO32, %ecx
	jne	4f
	movq	irq_ack_addr(,%rax,8), %rdx	/* read a dword, e.g. the e1000's ICR */
	movl	(%rdx), %ecx
	lock orl %ecx, irq_ack_bits(,%rax,4)
	testl	%ecx, %ecx
	jnz	4f
	lock incl irq_ack_zero(,%rax,4)
4:	rdtsc
	shlq	$32, %rdx
	orq	%rax, %rdx
	movl	32(%rsp), %eax
	movq	%rdx, irq_last_tsc(,%rax,8)
	cmpq	$0, (%rsp)
	jne	5f
	movq	%rdx, irq_first_tsc(,%rax,8)
5:	movl	$LAPIC_EOI_ADDR, %edx
	movl	$0, (%rdx)
	addq	$8, %rsp
	popq	%rdx
	popq	%rcx
	popq	%rax
	addq	$8, %rsp			/* vector */
	iretq

	.globl	irq_spurious
irq_spurious:
	lock incl irq_count + 4 * IRQ_VEC_SPURIOUS
	iretq

/* #GP. A hlt in ring 3 faults; that is the guests' wait: step over it and
 * halt here with interrupts on, then return to ring 3 (IF=0 again from the
 * saved RFLAGS). Anything else is an exception. */
	.globl	irq_gp_gate
irq_gp_gate:					/* error code, RIP, CS, ... */
	pushq	%rax
	movq	16(%rsp), %rax
	cmpb	$0xf4, (%rax)
	jne	1f
	incq	16(%rsp)
	popq	%rax
	addq	$8, %rsp
	sti
	hlt
	iretq
1:	popq	%rax
	pushq	$13
	jmp	exc_common

/* Stack at entry: vector, error code, RIP, CS, RFLAGS, RSP, SS. */
exc_common:
	movq	%rsp, %rdi
	andq	$-16, %rsp
	call	irq_exception
1:	hlt
	jmp	1b
