/*
 * bz-echo: a bzImage test kernel (Linux x86 boot protocol 2.15: "HdrS" setup
 * header, one setup sector, LOADED_HIGH, XLF_KERNEL_64, pref_address 1 MiB).
 * A boot loader that skips the real-mode setup enters it in 64-bit mode at
 * load address + 0x200 (startup_64) with %rsi = boot_params (the zero page).
 * It prints on COM1 (0x3f8, polling the line status) what it was handed:
 *   bz-echo: 64-bit entry, boot_params at 0x<addr>
 *   hdr: HdrS version 0x<version> loader 0x<type_of_loader>
 *   cmdline: <the string at cmd_line_ptr>
 *   ramdisk: image=0x<ramdisk_image> size=<ramdisk_size>
 *   initrd: <the first 16 bytes at ramdisk_image, in hex>
 *   e820: <e820_entries>
 *   e820[i]: 0x<addr> 0x<size> <type>       (at most the first 4)
 * then writes 0x10 to the pc-testdev/isa-debug-exit port 0xf4: bhyve exits
 * 33. Entered at the 32-bit entry (code32_start) instead, it writes 0x12
 * (exit 37). CPL0 code is interpreted on hosts without VT-x/EPT: keep it short.
 */
	.set COM1, 0x3f8

/* The boot sector and setup sector: the setup header at 0x1f1. */
	.section .setup, "a"
	.org	0x1f1
	.byte	1			/* setup_sects */
	.word	0			/* root_flags */
	.long	_syssize		/* syssize (16-byte units) */
	.word	0			/* ram_size */
	.word	0xffff			/* vid_mode: normal */
	.word	0			/* root_dev */
	.word	0xaa55			/* boot_flag */
	.byte	0xeb, 0x6a		/* jump: past the header, to 0x26c */
	.ascii	"HdrS"			/* header */
	.word	0x020f			/* version 2.15 */
	.long	0			/* realmode_swtch */
	.word	0x1000			/* start_sys_seg */
	.word	0			/* kernel_version */
	.byte	0			/* type_of_loader */
	.byte	0x01			/* loadflags: LOADED_HIGH */
	.word	0x8000			/* setup_move_size */
	.long	0x100000		/* code32_start */
	.long	0			/* ramdisk_image */
	.long	0			/* ramdisk_size */
	.long	0			/* bootsect_kludge */
	.word	0			/* heap_end_ptr */
	.byte	0			/* ext_loader_ver */
	.byte	0			/* ext_loader_type */
	.long	0			/* cmd_line_ptr */
	.long	0x37ffffff		/* initrd_addr_max */
	.long	0x200000		/* kernel_alignment */
	.byte	0			/* relocatable_kernel */
	.byte	0			/* min_alignment */
	.word	0x0001			/* xloadflags: XLF_KERNEL_64 */
	.long	2047			/* cmdline_size */
	.long	0			/* hardware_subarch */
	.quad	0			/* hardware_subarch_data */
	.long	0			/* payload_offset */
	.long	0			/* payload_length */
	.quad	0			/* setup_data */
	.quad	0x100000		/* pref_address */
	.long	_init_size		/* init_size */
	.long	0			/* handover_offset */
	.long	0			/* kernel_info_offset */
	.org	0x400

/* The protected-mode kernel, at the load address. */
	.text
	.code32
startup_32:				/* code32_start: not the entry we expect */
	mov	$0x12, %al
	out	%al, $0xf4
1:	hlt
	jmp	1b

	.org	0x200
	.code64
	.globl	startup_64
startup_64:
	cli
	mov	$stack_top, %esp
	mov	%rsi, %r12		/* boot_params */
	mov	$s_hello, %esi
	call	puts
	mov	%r12, %rax
	call	puthex64
	call	newline

	mov	$s_hdr, %esi
	call	puts
	cmpl	$0x53726448, 0x202(%r12)	/* "HdrS" */
	je	2f
	mov	$s_nohdr, %esi
	call	puts
	jmp	3f
2:	mov	$s_hdrs, %esi
	call	puts
	movzwl	0x206(%r12), %eax	/* version */
	rol	$16, %eax
	mov	$2, %ecx
	call	puthexn
	mov	$s_loader, %esi
	call	puts
	movzbl	0x210(%r12), %eax	/* type_of_loader */
	rol	$24, %eax
	mov	$1, %ecx
	call	puthexn
3:	call	newline

	mov	$s_cmdline, %esi
	call	puts
	mov	0x228(%r12), %esi	/* cmd_line_ptr */
	test	%esi, %esi
	jz	4f
	call	puts
4:	call	newline

	mov	$s_ramdisk, %esi
	call	puts
	mov	0x218(%r12), %eax	/* ramdisk_image */
	mov	$4, %ecx
	call	puthexn
	mov	$s_size, %esi
	call	puts
	mov	0x21c(%r12), %eax	/* ramdisk_size */
	call	putdec
	call	newline
	mov	$s_initrd, %esi
	call	puts
	mov	0x218(%r12), %esi
	mov	0x21c(%r12), %ecx
	cmp	$16, %ecx
	jbe	5f
	mov	$16, %ecx
5:	jrcxz	6f
	mov	$' ', %al
	call	putc
	lodsb
	shl	$24, %eax
	push	%rcx
	mov	$1, %ecx
	call	puthexn
	pop	%rcx
	loop	5b
6:	call	newline

	mov	$s_e820, %esi
	call	puts
	movzbl	0x1e8(%r12), %eax	/* e820_entries */
	call	putdec
	call	newline
	mov	%eax, %r13d
	cmp	$4, %r13d
	jbe	7f
	mov	$4, %r13d
7:	lea	0x2d0(%r12), %rbx	/* e820_table */
	xor	%ebp, %ebp
8:	cmp	%r13d, %ebp
	jae	exit
	mov	$s_e820_i, %esi
	call	puts
	mov	%ebp, %eax
	call	putdec
	mov	$s_close, %esi
	call	puts
	mov	0(%rbx), %rax
	call	puthex64
	mov	$' ', %al
	call	putc
	mov	8(%rbx), %rax
	call	puthex64
	mov	$' ', %al
	call	putc
	mov	16(%rbx), %eax
	call	putdec
	call	newline
	add	$20, %rbx
	inc	%ebp
	jmp	8b

exit:
	mov	$0x10, %al
	out	%al, $0xf4
9:	hlt
	jmp	9b

/* putc: %al to COM1 once the transmitter holding register is empty */
putc:
	push	%rax
	push	%rdx
	mov	%al, %ah
	mov	$COM1 + 5, %dx		/* line status */
10:	in	%dx, %al
	test	$0x20, %al
	jz	10b
	mov	$COM1, %dx
	mov	%ah, %al
	out	%al, %dx
	pop	%rdx
	pop	%rax
	ret

newline:
	push	%rax
	mov	$10, %al
	call	putc
	pop	%rax
	ret

/* puts: NUL-terminated string at %rsi */
puts:
	push	%rax
11:	lodsb
	test	%al, %al
	jz	12f
	call	putc
	jmp	11b
12:	pop	%rax
	ret

/* putdec: %eax in decimal */
putdec:
	push	%rax
	push	%rbx
	push	%rcx
	push	%rdx
	mov	$10, %ebx
	xor	%ecx, %ecx
13:	xor	%edx, %edx
	div	%ebx
	push	%rdx
	inc	%ecx
	test	%eax, %eax
	jnz	13b
14:	pop	%rax
	add	$'0', %al
	call	putc
	loop	14b
	pop	%rdx
	pop	%rcx
	pop	%rbx
	pop	%rax
	ret

/* puthex64: %rax as 0x and 16 hex digits */
puthex64:
	push	%rsi
	push	%rcx
	mov	$s_0x, %esi
	call	puts
	mov	$16, %ecx
	rol	$4, %rax
	jmp	15f
/* puthexn: the top %ecx bytes of %eax as hex digits */
puthexn:
	push	%rsi
	push	%rcx
	shl	$32, %rax
	shl	$1, %ecx
	rol	$4, %rax
15:	push	%rax
	call	hexdigit
	pop	%rax
	rol	$4, %rax
	loop	15b
	pop	%rcx
	pop	%rsi
	ret

hexdigit:
	and	$15, %al
	add	$'0', %al
	cmp	$'9', %al
	jbe	putc
	add	$('a' - '9' - 1), %al
	jmp	putc

	.section .rodata
s_hello:	.asciz	"bz-echo: 64-bit entry, boot_params at "
s_hdr:		.asciz	"hdr: "
s_nohdr:	.asciz	"no HdrS in the zero page"
s_hdrs:		.asciz	"HdrS version 0x"
s_loader:	.asciz	" loader 0x"
s_cmdline:	.asciz	"cmdline: "
s_ramdisk:	.asciz	"ramdisk: image=0x"
s_size:		.asciz	" size="
s_initrd:	.asciz	"initrd:"
s_e820:		.asciz	"e820: "
s_e820_i:	.asciz	"e820["
s_close:	.asciz	"]: "
s_0x:		.asciz	"0x"

	.bss
	.balign	16
	.space	4096
stack_top:
