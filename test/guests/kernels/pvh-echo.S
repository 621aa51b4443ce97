/*
 * pvh-echo: a PVH test kernel (ELF32 loaded at 1 MiB; a PT_NOTE carries
 * XEN_ELFNOTE_PHYS32_ENTRY = 18 with the 32-bit entry). It is entered in
 * 32-bit protected mode, paging off, %ebx = struct hvm_start_info, and
 * prints on COM1 (0x3f8, polling the line status) what it was handed:
 *   pvh-echo: magic ok version <n>
 *   cmdline: <the command line at cmdline_paddr>
 *   modules: <nr_modules>
 *   mod0: size=<bytes> bytes: <first 16 bytes of module 0 in hex>
 *   memmap: <memmap_entries>
 *   memmap[i]: <addr> <size> <type>      (64-bit hex, type decimal)
 * then writes 0x10 to the pc-testdev/isa-debug-exit port 0xf4: bhyve exits 33.
 * CPL0 code is interpreted on hosts without VT-x/EPT: keep it short.
 */
	.code32
	.set COM1, 0x3f8
	.set HVM_START_MAGIC, 0x336ec578

	.section .note.Xen, "a"
	.balign	4
	.long	4			/* namesz: "Xen\0" */
	.long	4			/* descsz */
	.long	18			/* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz	"Xen"
	.long	pvh_entry
	.balign	4

	.text
	.globl	pvh_entry
pvh_entry:
	cli
	mov	$stack_top, %esp
	mov	%ebx, %edi		/* hvm_start_info */
	cmpl	$HVM_START_MAGIC, 0(%edi)
	je	1f
	mov	$s_bad, %esi
	call	puts
	jmp	exit
1:	mov	$s_magic, %esi
	call	puts
	mov	4(%edi), %eax		/* version */
	call	putdec
	call	newline

	mov	$s_cmdline, %esi
	call	puts
	mov	24(%edi), %esi		/* cmdline_paddr (low half) */
	test	%esi, %esi
	jz	2f
	call	puts
2:	call	newline

	mov	$s_mods, %esi
	call	puts
	mov	12(%edi), %eax		/* nr_modules */
	call	putdec
	call	newline
	test	%eax, %eax
	jz	15f
	mov	16(%edi), %ebx		/* modlist_paddr: entry 0 */
	mov	$s_mod0, %esi
	call	puts
	mov	8(%ebx), %eax		/* size */
	call	putdec
	mov	$s_bytes, %esi
	call	puts
	mov	0(%ebx), %esi		/* paddr */
	mov	8(%ebx), %ecx
	cmp	$16, %ecx
	jbe	3f
	mov	$16, %ecx
3:	jecxz	4f
	mov	$' ', %al
	call	putc
	lodsb
	call	puthex8
	loop	3b
4:	call	newline
15:

	mov	$s_memmap, %esi
	call	puts
	mov	48(%edi), %ecx		/* memmap_entries */
	mov	%ecx, %eax
	call	putdec
	call	newline
	mov	40(%edi), %ebx		/* memmap_paddr */
	xor	%ebp, %ebp
5:	cmp	%ecx, %ebp
	jae	exit
	mov	$s_memmap_i, %esi
	call	puts
	mov	%ebp, %eax
	call	putdec
	mov	$s_close, %esi
	call	puts
	mov	4(%ebx), %eax		/* addr */
	mov	0(%ebx), %edx
	call	puthex64
	mov	$' ', %al
	call	putc
	mov	12(%ebx), %eax		/* size */
	mov	8(%ebx), %edx
	call	puthex64
	mov	$' ', %al
	call	putc
	mov	16(%ebx), %eax		/* type */
	call	putdec
	call	newline
	add	$24, %ebx
	inc	%ebp
	jmp	5b

exit:
	mov	$0x10, %al
	out	%al, $0xf4
8:	hlt
	jmp	8b

/* putc: %al to COM1 once the transmitter holding register is empty */
putc:
	push	%eax
	push	%edx
	mov	%al, %ah
	mov	$COM1 + 5, %dx		/* line status */
9:	in	%dx, %al
	test	$0x20, %al
	jz	9b
	mov	$COM1, %dx
	mov	%ah, %al
	out	%al, %dx
	pop	%edx
	pop	%eax
	ret

newline:
	push	%eax
	mov	$10, %al
	call	putc
	pop	%eax
	ret

/* puts: NUL-terminated string at %esi */
puts:
	push	%eax
10:	lodsb
	test	%al, %al
	jz	11f
	call	putc
	jmp	10b
11:	pop	%eax
	ret

/* putdec: %eax in decimal */
putdec:
	push	%eax
	push	%ebx
	push	%ecx
	push	%edx
	mov	$10, %ebx
	xor	%ecx, %ecx
12:	xor	%edx, %edx
	div	%ebx
	push	%edx
	inc	%ecx
	test	%eax, %eax
	jnz	12b
13:	pop	%eax
	add	$'0', %al
	call	putc
	loop	13b
	pop	%edx
	pop	%ecx
	pop	%ebx
	pop	%eax
	ret

/* puthex8: %al as two hex digits */
puthex8:
	push	%eax
	shr	$4, %al
	call	hexdigit
	pop	%eax
	push	%eax
	call	hexdigit
	pop	%eax
	ret

hexdigit:
	and	$15, %al
	add	$'0', %al
	cmp	$'9', %al
	jbe	putc
	add	$('a' - '9' - 1), %al
	jmp	putc

/* puthex64: %eax:%edx (high:low) as 0x and 16 hex digits */
puthex64:
	push	%esi
	mov	$s_0x, %esi
	call	puts
	pop	%esi
	call	puthex32
	mov	%edx, %eax
/* puthex32: %eax as 8 hex digits */
puthex32:
	push	%ecx
	mov	$4, %ecx
14:	rol	$8, %eax
	call	puthex8
	loop	14b
	pop	%ecx
	ret

	.section .rodata
s_bad:		.asciz	"pvh-echo: bad hvm_start_info magic\n"
s_magic:	.asciz	"pvh-echo: magic ok version "
s_cmdline:	.asciz	"cmdline: "
s_mods:		.asciz	"modules: "
s_mod0:		.asciz	"mod0: size="
s_bytes:	.asciz	" bytes:"
s_memmap:	.asciz	"memmap: "
s_memmap_i:	.asciz	"memmap["
s_close:	.asciz	"]: "
s_0x:		.asciz	"0x"

	.bss
	.balign	16
	.space	4096
stack_top:
