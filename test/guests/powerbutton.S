/*
 * powerbutton.rom: the ACPI power button as an OS would see it, polled.
 * Enables ACPI (ACPI_ENABLE 0xa0 to the SMI command port 0xb2), enables the
 * power-button event (PM1_EN bit 8 at port 0x402), prints "acpi on\r\n",
 * then polls PM1_STS (port 0x400) until PWRBTN_STS (bit 8) is set. It then
 * clears it (write 1), prints "power button\r\n" and powers off through
 * PM1a control at 0x404 (SLP_TYP=5 | SLP_EN).
 * Expected under bhyve: SIGTERM after "acpi on" -> exit status 1.
 * With a nonzero parameter (ROM offset 0xFFE0) it instead prints
 * "ignored\r\n" and polls again: a guest that ignores the power button,
 * for managers that must fall back on bhyvectl --force-poweroff.
 */
#include "lib16.inc"
main:
	movw	$0xb2, %dx
	movb	$0xa0, %al
	outb	%al, %dx
	movw	$0x402, %dx
	movw	$0x0100, %ax
	outw	%ax, %dx
	PUTS16(onmsg)
1:	movw	$0x400, %dx
	inw	%dx, %ax
	testw	$0x0100, %ax
	jz	1b
	movw	$0x0100, %ax
	outw	%ax, %dx
	PUTS16(btnmsg)
	movl	%cs:rom_param, %eax
	testl	%eax, %eax
	jz	2f
	PUTS16(ignmsg)
	jmp	1b
2:	movw	$0x404, %dx
	movw	$((5 << 10) | (1 << 13)), %ax
	outw	%ax, %dx
	movl	$2, %eax
	jmp	testdev_exit16
onmsg:	.asciz	"acpi on\r\n"
btnmsg:	.asciz	"power button\r\n"
ignmsg:	.asciz	"ignored\r\n"
#include "tail.inc"
