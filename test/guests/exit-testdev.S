/*
 * exit-testdev.rom: prints "hello from testdev rom\r\n" on COM1, then writes
 * 16 (0x10) to the test exit port 0xf4.
 * Expected exit status: 33 ((16 << 1) | 1) under bhyve -l pc-testdev and
 * under QEMU -device isa-debug-exit,iobase=0xf4,iosize=4.
 */
#include "lib16.inc"
main:
	PUTS16(msg)
	movl	$0x10, %eax
	jmp	testdev_exit16
msg:	.asciz	"hello from testdev rom\r\n"
#include "tail.inc"
