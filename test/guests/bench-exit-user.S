/*
 * bench-exit-user.rom: like bench-exit.rom, but the exit loop runs in ring 3
 * of 64-bit long mode (IOPL=3), where KVM runs guest code natively even on
 * hosts whose CPL0/real-mode code is interpreted (kvm_pvm); the figure is
 * then the VMM's exit round trip alone.
 * Prints "start\r\n" (real mode), enters long mode (identity-mapped 2 MiB
 * pages for 0..2 MiB and 0xFFE00000..4 GiB, tables at 0x1000..0x4fff),
 * drops to ring 3 with iretq, performs N `outb` to port 0x80, prints
 * "done\r\n" from ring 3 and writes 0x10 to port 0xf4 (exit status 33).
 * N is the little-endian 32-bit value at ROM file offset 0xFFE0
 * (default 100000), as in bench-exit.rom.
 */
#define ROM_PARAM 100000
#include "lib16.inc"

#define PML4	0x1000
#define PDPT	0x2000
#define PD_LOW	0x3000
#define PD_HIGH	0x4000
#define PTE_P	0x01
#define PTE_RW	0x02
#define PTE_US	0x04
#define PTE_PS	0x80
#define SEL_CODE64	0x18
#define SEL_UDATA	(0x20 | 3)
#define SEL_UCODE64	(0x28 | 3)

main:
	PUTS16(startmsg)
	jmp	enter_pm32
#include "lib32.inc"
	.code32
main32:
	lgdtl	ROM(lm_gdt_desc)
	/* page tables */
	movl	$PML4, %edi
	xorl	%eax, %eax
	movl	$((PD_HIGH + 0x1000 - PML4) / 4), %ecx
	rep stosl
	movl	$(PDPT | PTE_P | PTE_RW | PTE_US), PML4
	movl	$(PD_LOW | PTE_P | PTE_RW | PTE_US), PDPT
	movl	$(PD_HIGH | PTE_P | PTE_RW | PTE_US), PDPT + 3 * 8
	movl	$(0 | PTE_P | PTE_RW | PTE_US | PTE_PS), PD_LOW
	movl	$(0xFFE00000 | PTE_P | PTE_RW | PTE_US | PTE_PS), PD_HIGH + 511 * 8
	movl	$PML4, %eax
	movl	%eax, %cr3
	movl	%cr4, %eax
	orl	$(1 << 5), %eax			/* PAE */
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
	movl	$ROM(rom_param), %eax		/* (a disp32 would sign-extend) */
	movl	(%rax), %ebx
	pushq	$SEL_UDATA			/* ss */
	pushq	$0x7000				/* rsp */
	pushq	$0x3002				/* rflags: IOPL=3, IF=0 */
	pushq	$SEL_UCODE64			/* cs */
	movl	$ROM(user), %eax
	pushq	%rax				/* rip */
	iretq

user:						/* ring 3 */
	movl	%ebx, %ecx
	testl	%ecx, %ecx
	jz	2f
	movw	$0x80, %dx
1:	outb	%al, %dx
	decl	%ecx
	jnz	1b
2:	movl	$ROM(donemsg), %esi
3:	movb	(%rsi), %al
	incl	%esi
	testb	%al, %al
	jz	5f
	movb	%al, %ah
	movw	$COM1_LSR, %dx
4:	inb	%dx, %al
	testb	$LSR_THRE, %al
	jz	4b
	movb	%ah, %al
	movw	$COM1, %dx
	outb	%al, %dx
	jmp	3b
5:	movl	$0x10, %eax
	movw	$TESTDEV, %dx
	outl	%eax, %dx
6:	jmp	6b

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

startmsg: .asciz "start\r\n"
donemsg: .asciz	"done\r\n"
#include "tail.inc"
