/*
 * exit-reset.rom: prints "resetting\r\n", then writes 0x06 (SYS_RST | RST_CPU)
 * to the reset control register at port 0xcf9.
 * Expected exit status under bhyve: 0 (reboot). QEMU -no-reboot: exits 0.
 * If the reset does not happen: prints "reset failed\r\n" and writes 2 to
 * port 0xf4 (status 5).
 */
#include "lib16.inc"
main:
	PUTS16(msg)
	movw	$0xcf9, %dx
	movb	$0x06, %al
	outb	%al, %dx
	PUTS16(failmsg)
	movl	$2, %eax
	jmp	testdev_exit16
msg:	.asciz	"resetting\r\n"
failmsg: .asciz	"reset failed\r\n"
#include "tail.inc"
