/*
 * A 512-byte MBR boot sector for the SeaBIOS integration test: the BIOS
 * loads it at 0000:7C00 and jumps to it in real mode. It prints
 * "boot sector running\r\n" on COM1 through the UART's ports (no BIOS
 * calls), then writes 0x10 to isa-debug-exit / pc-testdev at port 0xf4:
 * bhyve exits with status (0x10 << 1) | 1 = 33, as QEMU does with
 * -device isa-debug-exit,iobase=0xf4,iosize=4. If the exit port does
 * nothing it halts with interrupts off.
 */
	.code16
	.section .text
	.globl _start
_start:
	cli
	xorw	%ax, %ax
	movw	%ax, %ds
	movw	%ax, %ss
	movw	$0x7c00, %sp
	ljmp	$0, $1f
1:
	/* COM1: 8N1 at 115200 baud, FIFO on (the BIOS may have left it so). */
	movw	$0x3fb, %dx
	movb	$0x80, %al		/* DLAB */
	outb	%al, %dx
	movw	$0x3f8, %dx
	movb	$1, %al			/* divisor 1 */
	outb	%al, %dx
	incw	%dx
	xorb	%al, %al
	outb	%al, %dx
	movw	$0x3fb, %dx
	movb	$0x03, %al		/* 8N1, DLAB off */
	outb	%al, %dx
	movw	$msg - _start + 0x7c00, %si
2:
	lodsb
	testb	%al, %al
	jz	3f
	movb	%al, %bl
	movw	$0x3fd, %dx		/* line status: wait for THR empty */
4:
	inb	%dx, %al
	testb	$0x20, %al
	jz	4b
	movw	$0x3f8, %dx
	movb	%bl, %al
	outb	%al, %dx
	jmp	2b
3:
	movw	$0xf4, %dx
	movl	$0x10, %eax
	outl	%eax, %dx
5:
	hlt
	jmp	5b

msg:
	.asciz	"boot sector running\r\n"

	. = _start + 510
	.byte	0x55, 0xaa
