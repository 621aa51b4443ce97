/*
 * bench-exit.rom: prints "start\r\n", performs N port-I/O exits
 * (outb to port 0x80, handled trivially by every VMM), prints "done\r\n" and
 * writes 0x10 to port 0xf4 (exit status 33).
 * N is the little-endian 32-bit value at ROM file offset 0xFFE0 (default
 * 100000); patch it in a copy of the ROM, no rebuild needed. N = 0: no exits.
 */
#define ROM_PARAM 100000
#include "lib16.inc"
main:
	PUTS16(startmsg)
	movl	%cs:rom_param, %ecx
	testl	%ecx, %ecx
	jz	2f
	movw	$0x80, %dx
1:	outb	%al, %dx
	decl	%ecx
	jnz	1b
2:	PUTS16(donemsg)
	movl	$0x10, %eax
	jmp	testdev_exit16
startmsg: .asciz "start\r\n"
donemsg: .asciz	"done\r\n"
#include "tail.inc"
