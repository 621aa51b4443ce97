/*
 * exit-poweroff.rom: prints "powering off\r\n", then writes SLP_TYP=5 | SLP_EN
 * ((5 << 10) | (1 << 13) = 0x3400) with a 16-bit out to bhyve's ACPI PM1a
 * control block at port 0x404.
 * Expected exit status under bhyve: 1 (powered off).
 * If the power-off does not happen (e.g. QEMU, whose PM block is elsewhere):
 * prints "poweroff failed\r\n" and writes 2 to port 0xf4 (status 5).
 */
#include "lib16.inc"
main:
	PUTS16(msg)
	movw	$0x404, %dx
	movw	$((5 << 10) | (1 << 13)), %ax
	outw	%ax, %dx
	PUTS16(failmsg)
	movl	$2, %eax
	jmp	testdev_exit16
msg:	.asciz	"powering off\r\n"
failmsg: .asciz	"poweroff failed\r\n"
#include "tail.inc"
