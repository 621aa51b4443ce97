/*
 * exit-halt.rom: prints "halting\r\n", then cli; hlt with interrupts off.
 * Expected exit status under bhyve: 2 (halted). QEMU just stays halted.
 */
#include "lib16.inc"
main:
	PUTS16(msg)
	cli
1:	hlt
	jmp	1b
msg:	.asciz	"halting\r\n"
#include "tail.inc"
