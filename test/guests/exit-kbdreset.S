/*
 * exit-kbdreset.rom: prints "resetting via keyboard controller\r\n", then
 * writes 0xfe (pulse reset line) to the i8042 command port 0x64.
 * Expected exit status under bhyve: 0 (reboot). QEMU -no-reboot: exits 0.
 * If the reset does not happen: prints "reset failed\r\n" and writes 2 to
 * port 0xf4 (status 5).
 */
#include "lib16.inc"
main:
	PUTS16(msg)
	movw	$0x64, %dx
	movb	$0xfe, %al
	outb	%al, %dx
	PUTS16(failmsg)
	movl	$2, %eax
	jmp	testdev_exit16
msg:	.asciz	"resetting via keyboard controller\r\n"
failmsg: .asciz	"reset failed\r\n"
#include "tail.inc"
