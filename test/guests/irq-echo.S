/*
 * irq-echo.rom: interrupt-driven COM1 echo, the way an OS driver works.
 * Programs the (in-kernel) 8259 PIC to deliver IRQ4 on vector 0x0c, enables
 * COM1's received-data interrupt (IER.ERBFI, MCR.OUT2), then idles in
 * `sti; hlt` (halted with interrupts ON: not a bhyve halt). The interrupt
 * handler echoes each received byte; on 'q' it prints "\r\nbye\r\n" and
 * writes 0x10 to port 0xf4 (exit status 33).
 * The idle loop and the handler run from RAM at 0x1000 (real-mode IRET
 * reloads CS from the stack, and the ROM is only reachable at 4 GiB).
 */
#include "lib16.inc"
#define RAMCODE 0x1000
main:
	/* copy the RAM part (position independent) to 0000:1000 */
	movw	$ramcode_start, %si
	movw	$RAMCODE, %di
	movw	$(ramcode_end - ramcode_start), %cx
	rep movsb %cs:(%si), %es:(%di)
	/* IVT[0x0c] = 0000:(RAMCODE + isr - ramcode_start) */
	movw	$(RAMCODE + isr - ramcode_start), 0x30
	movw	$0, 0x32
	/* 8259 master: ICW1..4, vectors 0x08-0x0f; mask all but IRQ4 */
	movb	$0x11, %al
	outb	%al, $0x20
	movb	$0x08, %al
	outb	%al, $0x21
	movb	$0x04, %al
	outb	%al, $0x21
	movb	$0x01, %al
	outb	%al, $0x21
	movb	$0xef, %al
	outb	%al, $0x21
	movb	$0xff, %al
	outb	%al, $0xa1
	/* COM1: MCR = DTR|RTS|OUT2, IER = received data available */
	movw	$COM1 + 4, %dx
	movb	$0x0b, %al
	outb	%al, %dx
	movw	$COM1 + 1, %dx
	movb	$0x01, %al
	outb	%al, %dx
	PUTS16(msg)
	ljmp	$0, $RAMCODE

ramcode_start:
idle:	sti
	hlt
	jmp	idle
isr:	pushw	%ax
	pushw	%dx
1:	movw	$COM1 + 5, %dx		/* drain every byte waiting */
	inb	%dx, %al
	testb	$LSR_DR, %al
	jz	3f
	movw	$COM1, %dx
	inb	%dx, %al
	cmpb	$0x71, %al		/* q */
	je	4f
	movb	%al, %ah
2:	movw	$COM1 + 5, %dx
	inb	%dx, %al
	testb	$LSR_THRE, %al
	jz	2b
	movb	%ah, %al
	movw	$COM1, %dx
	outb	%al, %dx
	jmp	1b
3:	movb	$0x20, %al		/* EOI */
	outb	%al, $0x20
	popw	%dx
	popw	%ax
	iret
4:	movw	$COM1, %dx		/* "\r\nbye\r\n" without data references */
	movb	$'\r', %al
	call	5f
	movb	$'\n', %al
	call	5f
	movb	$'b', %al
	call	5f
	movb	$'y', %al
	call	5f
	movb	$'e', %al
	call	5f
	movb	$'\r', %al
	call	5f
	movb	$'\n', %al
	call	5f
	movl	$0x10, %eax
	outl	%eax, $TESTDEV
6:	hlt
	jmp	6b
5:	movb	%al, %ah		/* putc from RAM: wait THRE, write */
7:	movw	$COM1 + 5, %dx
	inb	%dx, %al
	testb	$LSR_THRE, %al
	jz	7b
	movb	%ah, %al
	movw	$COM1, %dx
	outb	%al, %dx
	ret
ramcode_end:

msg:	.asciz	"irq echo ready\r\n"
#include "tail.inc"
