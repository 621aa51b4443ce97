/*
 * exit-triplefault.rom: prints "triple faulting\r\n", enters 32-bit protected
 * mode, loads an IDT with limit 0 and executes ud2: #UD cannot be delivered
 * (#GP), nor can #GP (#DF), nor #DF: triple fault -> shutdown.
 * (Protected mode because KVM's emulator delivers real-mode interrupts without
 * checking the IVT limit.)
 * Expected exit status under bhyve: 3 (triple fault). QEMU -no-reboot: 0.
 * If no fault happens: prints "no triple fault\r\n", writes 2 to port 0xf4.
 */
#include "lib16.inc"
main:
	PUTS16(msg)
	jmp	enter_pm32
#include "lib32.inc"
	.code32
main32:
	lidt	ROM(idt_desc)
	ud2
	int3
	PUTS32(failmsg)
	movl	$2, %eax
	jmp	testdev_exit32
idt_desc:
	.word	0
	.long	0
msg:	.asciz	"triple faulting\r\n"
failmsg: .asciz	"no triple fault\r\n"
#include "tail.inc"
