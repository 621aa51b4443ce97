/*
 * mb-echo: a Multiboot v1 test kernel (a.out kludge, 32-bit, loaded at
 * 1 MiB). It prints on COM1 (port 0x3f8) what its boot loader handed it:
 *   mb-echo: magic ok
 *   cmdline: <the kernel command line>
 *   mem_upper: <KiB above 1 MiB>
 *   mods: <count>
 *   mod0: <module string> [<first line of the module's bytes>] size=<bytes>
 * then writes 0x10 to the isa-debug-exit/pc-testdev port 0xf4, so bhyve
 * exits with status 33 (QEMU: -device isa-debug-exit, same status).
 * With a command line starting "cycle" it instead counts its boots in guest
 * RAM at 3 MiB (which survives bhyve exits: the memory belongs to the VM
 * object), prints "boot N", and resets the VM (i8042 0xfe, bhyve exits 0)
 * on the first boot and powers it off (ACPI PM1a SLP_EN, exit 1) after.
 * With a command line starting "nmi" it installs an NMI handler, prints
 * "nmi: waiting" and spins; the handler prints "nmi: received" and writes
 * 0x11 to port 0xf4 (bhyve exits 35): bhyvectl --inject-nmi is observed.
 * CPL0 code here is interpreted on hosts without VT-x/EPT: keep it short.
 */
	.code32
	.set MB_MAGIC, 0x1BADB002
	.set MB_FLAGS, 0x00010002	/* a.out kludge, memory info */
	.set COM1, 0x3f8

	.text
	.globl entry
mbheader:
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)
	.long mbheader		/* header_addr */
	.long _load_start	/* load_addr */
	.long _load_end		/* load_end_addr */
	.long _bss_end		/* bss_end_addr */
	.long entry		/* entry_addr */

entry:
	cli
	mov	$stack_top, %esp
	mov	%ebx, %edi		/* multiboot_info */
	cmp	$0x2BADB002, %eax
	je	1f
	mov	$s_badmagic, %esi
	call	puts
	jmp	done
1:	mov	$s_magic, %esi
	call	puts

	testl	$4, 0(%edi)		/* MBI_CMDLINE */
	jz	2f
	mov	$s_cmdline, %esi
	call	puts
	mov	16(%edi), %esi
	call	puts
	call	newline

2:	testl	$1, 0(%edi)		/* MBI_MEMORY */
	jz	3f
	mov	$s_memupper, %esi
	call	puts
	mov	8(%edi), %eax
	call	putdec
	call	newline

3:	mov	$s_mods, %esi
	call	puts
	xor	%ecx, %ecx
	testl	$8, 0(%edi)		/* MBI_MODS */
	jz	4f
	mov	20(%edi), %ecx
4:	mov	%ecx, %eax
	call	putdec
	call	newline

	mov	24(%edi), %ebx		/* mods_addr */
	xor	%ebp, %ebp		/* module index */
5:	cmp	%ecx, %ebp
	jae	done
	push	%ecx
	mov	$s_mod, %esi
	call	puts
	mov	%ebp, %eax
	call	putdec
	mov	$s_colon, %esi
	call	puts
	mov	8(%ebx), %esi		/* module string */
	call	puts
	mov	$s_open, %esi
	call	puts
	mov	0(%ebx), %esi		/* mod_start: first line, at most 40 bytes */
	mov	4(%ebx), %ecx
	sub	%esi, %ecx
	cmp	$40, %ecx
	jbe	6f
	mov	$40, %ecx
6:	test	%ecx, %ecx
	jz	7f
	lodsb
	cmp	$10, %al
	je	7f
	call	putc
	dec	%ecx
	jmp	6b
7:	mov	$s_size, %esi
	call	puts
	mov	4(%ebx), %eax
	sub	0(%ebx), %eax
	call	putdec
	call	newline
	pop	%ecx
	add	$16, %ebx
	inc	%ebp
	jmp	5b

done:
	testl	$4, 0(%edi)
	jz	exit
	mov	16(%edi), %esi		/* command line starts with "cycle"? */
	mov	$s_cycle, %edx
13:	movb	(%edx), %al
	test	%al, %al
	jz	cycle
	cmpb	(%esi), %al
	jne	14f
	inc	%esi
	inc	%edx
	jmp	13b
14:	mov	16(%edi), %esi		/* command line starts with "nmi"? */
	mov	$s_nmi, %edx
16:	movb	(%edx), %al
	test	%al, %al
	jz	nmiwait
	cmpb	(%esi), %al
	jne	exit
	inc	%esi
	inc	%edx
	jmp	16b
nmiwait:
	mov	$nmi_handler, %eax	/* IDT entry 2: 32-bit interrupt gate */
	mov	%ax, idt + 16
	movw	%cs, idt + 18
	movw	$0x8e00, idt + 20
	shr	$16, %eax
	mov	%ax, idt + 22
	lidt	idtr
	mov	$s_nmiwait, %esi
	call	puts
17:	pause
	jmp	17b
nmi_handler:
	mov	$s_nmirecv, %esi
	call	puts
	mov	$0x11, %al
	out	%al, $0xf4
	jmp	8f
cycle:
	mov	$0x300000, %ebx
	cmpl	$0xB007C0DE, (%ebx)
	je	18f
	movl	$0xB007C0DE, (%ebx)
	movl	$0, 4(%ebx)
18:	incl	4(%ebx)
	mov	$s_boot, %esi
	call	puts
	mov	4(%ebx), %eax
	call	putdec
	call	newline
	cmpl	$1, 4(%ebx)
	jne	15f
	mov	$0xfe, %al		/* first boot: reset */
	out	%al, $0x64
	jmp	8f
15:	mov	$0x404, %dx		/* later: power off (SLP_TYP 5, SLP_EN) */
	mov	$((5 << 10) | (1 << 13)), %ax
	out	%ax, %dx
	jmp	8f
exit:
	mov	$0x10, %al
	out	%al, $0xf4
8:	hlt
	jmp	8b

/* putc: %al to COM1 */
putc:
	push	%edx
	mov	$COM1, %dx
	out	%al, %dx
	pop	%edx
	ret

newline:
	mov	$10, %al
	jmp	putc

/* puts: NUL-terminated string at %esi */
puts:
	push	%eax
9:	lodsb
	test	%al, %al
	jz	10f
	call	putc
	jmp	9b
10:	pop	%eax
	ret

/* putdec: %eax in decimal */
putdec:
	push	%ebx
	push	%ecx
	push	%edx
	mov	$10, %ebx
	xor	%ecx, %ecx
11:	xor	%edx, %edx
	div	%ebx
	push	%edx
	inc	%ecx
	test	%eax, %eax
	jnz	11b
12:	pop	%eax
	add	$'0', %al
	call	putc
	loop	12b
	pop	%edx
	pop	%ecx
	pop	%ebx
	ret

	.section .rodata
s_badmagic:	.asciz	"mb-echo: bad magic\n"
s_magic:	.asciz	"mb-echo: magic ok\n"
s_cmdline:	.asciz	"cmdline: "
s_memupper:	.asciz	"mem_upper: "
s_mods:		.asciz	"mods: "
s_mod:		.asciz	"mod"
s_colon:	.asciz	": "
s_open:		.asciz	" ["
s_size:		.asciz	"] size="
s_cycle:	.asciz	"cycle"
s_boot:		.asciz	"boot "
s_nmi:		.asciz	"nmi"
s_nmiwait:	.asciz	"nmi: waiting\n"
s_nmirecv:	.asciz	"nmi: received\n"
	.balign	8
idt:		.quad	0, 0, 0
idtr:		.word	23
		.long	idt

	.bss
	.balign	16
	.space	4096
stack_top:
