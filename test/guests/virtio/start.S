/*
 * start.S - boot code of the virtio test ROMs (test/guests/virtio/).
 *
 * Real mode (lib16.inc: COM1 at 115200 8N1) -> flat 32-bit protected mode
 * (lib32.inc) -> 64-bit long mode with 0..4 GiB identity-mapped in 2 MiB
 * pages, all user-accessible -> ring 3 (IOPL=3, IF=0) at user_entry, which
 * copies the C payload (linked at 0x100000, stored in the ROM right after
 * this code, see virtio.ld) into RAM, clears its .bss and calls
 *     int guest_main(uint32_t param)
 * on a stack below 0x400000. guest_main's return value goes to the test exit port
 * 0xf4 (status (value << 1) | 1). The only code that runs at CPL0 is the
 * mode switching and the page-table fill below (interpreted by KVM on
 * kvm_pvm hosts); all the driver code runs natively in ring 3, where port
 * I/O works through IOPL=3 and MMIO through the user-accessible mapping.
 *
 * For interrupts (irq.c, irq.S) the ring-0 part also sets the stack that
 * interrupts from ring 3 switch to (RSP0 of the TSS at linear 0) and loads
 * an IDT at 0xa000, which ring 3 zeroes and irq_init() fills. Ring 3 runs
 * with IF=0 (and cannot change it on kvm_pvm hosts: cli/sti #GP there).
 *
 * Memory: RSP0 at 0x4..0xb, page tables 0x1000..0x6fff (PML4, PDPT, 4 PDs),
 * ring-0 stack 0x7000 (0x9000 once the PDs are written), IDT
 * 0xa000..0xafff, ring-0 interrupt stack 0xb000..0xffff, payload
 * 0x100000.., user stack top 0x400000, free RAM above (the C side's
 * allocator starts at 0x400000).
 */
#include "lib16.inc"

#define PML4	0x1000
#define PDPT	0x2000
#define PD0	0x3000			/* 4 PDs: 0x3000..0x6fff */
#define PTE_P	0x01
#define PTE_RW	0x02
#define PTE_US	0x04
#define PTE_PS	0x80
#define SEL_CODE64	0x18
#define SEL_UDATA	(0x20 | 3)
#define SEL_UCODE64	(0x28 | 3)
#define USER_STACK	0x400000
#define TSS_RSP0	0x4		/* the reset TSS is at 0 */
#define IDTR_TMP	0x9000
#define IDT_BASE	0xa000		/* irq-defs.h: IDT_BASE */
#define IDT_LIMIT	0xfff
#define IRQ_STACK	0x10000

main:
	jmp	enter_pm32
#include "lib32.inc"
	.code32
main32:
	lgdtl	ROM(lm_gdt_desc)
	movl	$PML4, %edi			/* clear PML4 and PDPT */
	xorl	%eax, %eax
	movl	$(0x2000 / 4), %ecx
	rep stosl
	movl	$(PDPT | PTE_P | PTE_RW | PTE_US), PML4
	movl	$(PD0 + 0x0000 | PTE_P | PTE_RW | PTE_US), PDPT + 0
	movl	$(PD0 + 0x1000 | PTE_P | PTE_RW | PTE_US), PDPT + 8
	movl	$(PD0 + 0x2000 | PTE_P | PTE_RW | PTE_US), PDPT + 16
	movl	$(PD0 + 0x3000 | PTE_P | PTE_RW | PTE_US), PDPT + 24
	movl	$PD0, %edi			/* 2048 x 2 MiB = 0..4 GiB */
	movl	$(PTE_P | PTE_RW | PTE_US | PTE_PS), %eax
	movl	$2048, %ecx
1:	movl	%eax, (%edi)
	movl	$0, 4(%edi)
	addl	$0x200000, %eax
	addl	$8, %edi
	loop	1b
	movl	$PML4, %eax
	movl	%eax, %cr3
	movl	%cr4, %eax
	/* PAE; OSFXSR and OSXMMEXCPT: SSE works (CR0.EM is clear from reset),
	 * for code built without -mgeneral-regs-only, such as the Debian
	 * liblwip.so.0 that tcp.rom carries (test/guests/tcp/) */
	orl	$((1 << 5) | (1 << 9) | (1 << 10)), %eax
	movl	%eax, %cr4
	movl	$0xC0000080, %ecx		/* EFER.LME */
	rdmsr
	orl	$(1 << 8), %eax
	wrmsr
	movl	%cr0, %eax
	orl	$0x80000001, %eax		/* PG | PE */
	movl	%eax, %cr0
	ljmpl	$SEL_CODE64, $ROM(long64)

	.code64
long64:
	movl	$0x9000, %esp			/* 0x7000 is below the PDs' end */
	/* Interrupts from ring 3 switch to TSS.RSP0. The TSS is the one the
	 * task register holds since reset (base 0, limit 0xffff, type 11: a
	 * busy 64-bit TSS in long mode), so RSP0 lives at linear address 4.
	 * (A TSS of our own would need ltr, and on kvm_pvm hosts an iretq to
	 * ring 3 after ltr triple-faults.) */
	movl	$IRQ_STACK, TSS_RSP0
	movl	$0, TSS_RSP0 + 4
	movw	$IDT_LIMIT, IDTR_TMP
	movq	$IDT_BASE, %rax
	movq	%rax, IDTR_TMP + 2
	lidt	IDTR_TMP
	pushq	$SEL_UDATA			/* ss */
	pushq	$USER_STACK			/* rsp */
	pushq	$0x3002				/* rflags: IOPL=3, IF=0 */
	pushq	$SEL_UCODE64			/* cs */
	movl	$ROM(user_entry), %eax
	pushq	%rax				/* rip */
	iretq

user_entry:					/* ring 3 from here on */
	movl	$IDT_BASE, %edi			/* an empty IDT until irq_init() */
	movl	$(IDT_LIMIT + 1), %ecx
	xorl	%eax, %eax
	rep stosb
	movl	$ROM(payload_lma), %esi
	movl	$payload_vma, %edi
	movl	$payload_size, %ecx
	rep movsb
	movl	$bss_start, %edi
	movl	$bss_end, %ecx
	subl	%edi, %ecx
	xorl	%eax, %eax
	rep stosb
	movl	$ROM(rom_param), %eax		/* (a disp32 would sign-extend) */
	movl	(%rax), %edi
	movl	$guest_main, %eax		/* absolute: this code runs at ROM(.) */
	call	*%rax
	movw	$TESTDEV, %dx
	outl	%eax, %dx
2:	pause
	jmp	2b

	/* accessed bits preset: the GDT is in ROM (see lib32.inc) */
	.balign	8
lm_gdt:
	.quad	0				/* null */
	.quad	0x00CF9B000000FFFF		/* 0x08: code, flat, 32-bit */
	.quad	0x00CF93000000FFFF		/* 0x10: data, flat */
	.quad	0x00AF9B000000FFFF		/* 0x18: code, 64-bit, DPL 0 */
	.quad	0x00CFF3000000FFFF		/* 0x20: data, DPL 3 */
	.quad	0x00AFFB000000FFFF		/* 0x28: code, 64-bit, DPL 3 */
lm_gdt_end:
lm_gdt_desc:
	.word	lm_gdt_end - lm_gdt - 1
	.long	ROM(lm_gdt)

/* The fixed end of the ROM (as tail.inc, but in its own section so the
 * linker can put the payload between): parameter at 0xFFE0, reset vector
 * at 0xFFF0. */
	.section .tail, "ax"
	.code16
	.globl	rom_param
rom_param:
	.long	0
	.globl	rom_mode
rom_mode:					/* 0xFFE4: interrupt mode (vlib.h, irq.h) */
	.long	0
	.org	0x10, 0xff
reset_vector:
	jmp	_start
	.org	0x20, 0xff
