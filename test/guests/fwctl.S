/*
 * fwctl.rom: bhyve's firmware control interface (usr.sbin/bhyve/fwctl.c,
 * lpc.fwcfg=bhyve with a boot ROM), as bhyve's UEFI firmware uses it:
 *   - a 16-bit write of 0 to port 0x510, then four byte reads of 0x511
 *     give the signature "BHYV";
 *   - a request is 32-bit writes to 0x510: its size in bytes (the 12-byte
 *     header included), the operation, a transaction id, then the data in
 *     4-byte words; the reply is 32-bit reads of 0x511: its size (16-byte
 *     header included), the operation, the transaction id, an errno, then
 *     the data.
 * Prints on COM1:
 *   fwctl: signature BHYV
 *   fwctl: hw.ncpu = N               (OP_GET: a size_t length, then the int)
 *   fwctl: hw.ncpu length 4          (OP_GET_LEN: a size_t)
 *   fwctl: hw.nope error 2           (ENOENT, no data)
 * and writes 0x10 to port 0xf4 (status 33); a failure prints
 * "fwctl: FAIL ..." and writes 2 (status 5).
 */
#include "lib16.inc"
#define FW_OUT	0x510
#define FW_IN	0x511
#define OP_GET		3
#define OP_GET_LEN	4

main:
	movw	$FW_OUT, %dx
	xorw	%ax, %ax
	outw	%ax, %dx
	movw	$FW_IN, %dx
	movw	$sig, %si
	movw	$4, %cx
1:	inb	%dx, %al
	cmpb	%cs:(%si), %al
	jne	fail_sig
	incw	%si
	loop	1b
	PUTS16(s_sig)

	/* OP_GET hw.ncpu: 28 bytes back: header, size_t 4, the int. */
	movl	$OP_GET, %ebx
	movl	$0x11, %edi
	movw	$n_ncpu, %si
	call	request
	movl	$28, %eax
	call	header
	call	inl_in
	cmpl	$4, %eax
	jne	fail_reply
	call	inl_in
	testl	%eax, %eax
	jne	fail_reply
	call	inl_in
	movl	%eax, %ebp
	PUTS16(s_ncpu)
	movl	%ebp, %eax
	call	putdec16
	PUTS16(s_nl)

	/* OP_GET_LEN hw.ncpu: 24 bytes back: header, size_t 4. */
	movl	$OP_GET_LEN, %ebx
	movl	$0x12, %edi
	movw	$n_ncpu, %si
	call	request
	movl	$24, %eax
	call	header
	call	inl_in
	movl	%eax, %ebp
	call	inl_in
	testl	%eax, %eax
	jne	fail_reply
	PUTS16(s_len)
	movl	%ebp, %eax
	call	putdec16
	PUTS16(s_nl)

	/* OP_GET of an unknown node: ENOENT, no data. */
	movl	$OP_GET, %ebx
	movl	$0x13, %edi
	movw	$n_nope, %si
	call	request
	movw	$FW_IN, %dx
	call	inl_in
	cmpl	$16, %eax
	jne	fail_reply
	call	inl_in
	call	inl_in
	call	inl_in
	movl	%eax, %ebp
	PUTS16(s_nope)
	movl	%ebp, %eax
	call	putdec16
	PUTS16(s_nl)
	movl	$0x10, %eax
	jmp	testdev_exit16

/* request: operation %ebx, txid %edi, the 8-byte name at %cs:%si */
request:
	movw	$FW_OUT, %dx
	movl	$(12 + 8), %eax
	outl	%eax, %dx
	movl	%ebx, %eax
	outl	%eax, %dx
	movl	%edi, %eax
	outl	%eax, %dx
	movl	%cs:(%si), %eax
	outl	%eax, %dx
	movl	%cs:4(%si), %eax
	outl	%eax, %dx
	ret

/* header: the reply's size must be %eax, then operation %ebx, txid %edi, errno 0 */
header:
	movl	%eax, %ecx
	call	inl_in
	cmpl	%ecx, %eax
	jne	fail_reply
	call	inl_in
	cmpl	%ebx, %eax
	jne	fail_reply
	call	inl_in
	cmpl	%edi, %eax
	jne	fail_reply
	call	inl_in
	testl	%eax, %eax
	jne	fail_reply
	ret

inl_in:
	movw	$FW_IN, %dx
	inl	%dx, %eax
	ret

fail_sig:
	PUTS16(s_failsig)
	jmp	1f
fail_reply:
	PUTS16(s_failreply)
1:	movl	$2, %eax
	jmp	testdev_exit16

sig:		.ascii	"BHYV"
n_ncpu:		.asciz	"hw.ncpu"
n_nope:		.asciz	"hw.nope"
s_sig:		.asciz	"fwctl: signature BHYV\r\n"
s_ncpu:		.asciz	"fwctl: hw.ncpu = "
s_len:		.asciz	"fwctl: hw.ncpu length "
s_nope:		.asciz	"fwctl: hw.nope error "
s_nl:		.asciz	"\r\n"
s_failsig:	.asciz	"fwctl: FAIL no BHYV signature at port 0x511\r\n"
s_failreply:	.asciz	"fwctl: FAIL unexpected reply\r\n"
#include "tail.inc"
