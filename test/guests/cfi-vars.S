/*
 * cfi-vars.rom: exercises the UEFI variable store below the boot ROM the way
 * EDK II's flash driver does (CFI commands, see src/devices/lpc/bootvars.ts).
 * Run with `-l bootrom,cfi-vars.rom,VARS` where VARS is a 4 KiB file: the ROM
 * is 64 KiB, so VARS sits at 0xFFFEF000 (the patchable parameter at ROM
 * offset 0xFFE0 holds that address; change it for another VARS size).
 *
 *   1. reads the counter byte at the start of VARS (read-array mode) and
 *      prints "cfi-vars: counter N"
 *   2. probes like EDK II: clear status (0x50), read status (0x70): 0x00
 *   3. programs N+1 (0x10, then the byte), reads status (0x70): 0x80 ready
 *   4. back to read-array (0xff), reads the byte again: N+1
 *   5. prints "cfi-vars: wrote N+1, status 0x80, read back N+1" and writes
 *      0x10 to port 0xf4: exit status 33 under bhyve -l pc-testdev.
 * Any mismatch prints "cfi-vars: FAIL <what> <value>" and exits 35 (0x11).
 */
#define ROM_PARAM 0xFFFEF000
#include "lib16.inc"

main:
	PUTS16(banner)
	jmp	enter_pm32
#include "lib32.inc"

/* puthex8: write %al as 0xNN. */
puthex8:
	pushl	%eax
	pushl	%ecx
	movb	%al, %cl
	movb	$'0', %al
	call	putc32
	movb	$'x', %al
	call	putc32
	movb	%cl, %al
	shrb	$4, %al
	call	1f
	movb	%cl, %al
	andb	$0xf, %al
	call	1f
	popl	%ecx
	popl	%eax
	ret
1:	addb	$'0', %al
	cmpb	$'9', %al
	jbe	2f
	addb	$('a' - '0' - 10), %al
2:	jmp	putc32

main32:
	movl	ROM(rom_param), %ebx		/* VARS base */
	movzbl	(%ebx), %edi			/* N: read-array read of the counter */
	PUTS32(msg_counter)
	movl	%edi, %eax
	call	putdec32
	PUTS32(crlf)

	/* EDK II's QemuFlashDetected probe: clear status, read status = 0. */
	movb	$0x50, (%ebx)
	movb	$0x70, (%ebx)
	movzbl	(%ebx), %eax
	movl	$ROM(what_probe), %esi
	testb	%al, %al
	jnz	fail
	movb	$0xff, (%ebx)

	/* Program N+1. */
	leal	1(%edi), %ecx
	andl	$0xff, %ecx
	movb	$0x10, (%ebx)
	movb	%cl, (%ebx)
	movb	$0x70, (%ebx)
	movzbl	(%ebx), %edx			/* status */
	movl	%edx, %eax
	movl	$ROM(what_status), %esi
	cmpb	$0x80, %al
	jne	fail

	/* Back to read-array; read the new value. */
	movb	$0xff, (%ebx)
	movzbl	(%ebx), %eax
	movl	$ROM(what_readback), %esi
	cmpl	%ecx, %eax
	jne	fail

	PUTS32(msg_wrote)
	movl	%ecx, %eax
	call	putdec32
	PUTS32(msg_status)
	movl	%edx, %eax
	call	puthex8
	PUTS32(msg_readback)
	movzbl	(%ebx), %eax
	call	putdec32
	PUTS32(crlf)
	movl	$0x10, %eax
	jmp	testdev_exit32

/* fail: %esi = what failed, %eax = the value seen. */
fail:
	pushl	%eax
	pushl	%esi
	PUTS32(msg_fail)
	popl	%esi
	call	puts32
	movb	$' ', %al
	call	putc32
	popl	%eax
	call	puthex8
	PUTS32(crlf)
	movl	$0x11, %eax
	jmp	testdev_exit32

banner:		.asciz	"cfi-vars rom\r\n"
msg_counter:	.asciz	"cfi-vars: counter "
msg_wrote:	.asciz	"cfi-vars: wrote "
msg_status:	.asciz	", status "
msg_readback:	.asciz	", read back "
msg_fail:	.asciz	"cfi-vars: FAIL "
what_probe:	.asciz	"probe-status"
what_status:	.asciz	"program-status"
what_readback:	.asciz	"read-back"
crlf:		.asciz	"\r\n"
#include "tail.inc"
