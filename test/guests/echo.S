/*
 * echo.rom: prints "echo ready\r\n", then echoes every byte received on COM1
 * back to COM1 (polling LSR.DR, reading RBR, writing THR).
 * Protocol: the byte 'q' (0x71) or ^D (0x04) is not echoed; on receiving it
 * the ROM prints "\r\nbye\r\n" and writes 0x10 to port 0xf4.
 * Expected exit status: 33 (bhyve -l pc-testdev and QEMU isa-debug-exit).
 */
#include "lib16.inc"
main:
	PUTS16(msg)
1:	movw	$COM1_LSR, %dx
	inb	%dx, %al
	testb	$LSR_DR, %al
	jz	1b
	movw	$COM1, %dx
	inb	%dx, %al
	cmpb	$0x71, %al		/* q */
	je	2f
	cmpb	$0x04, %al		/* ^D */
	je	2f
	call	putc16
	jmp	1b
2:	PUTS16(byemsg)
	movl	$0x10, %eax
	jmp	testdev_exit16
msg:	.asciz	"echo ready\r\n"
byemsg:	.asciz	"\r\nbye\r\n"
#include "tail.inc"
