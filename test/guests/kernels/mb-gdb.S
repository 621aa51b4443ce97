/*
 * mb-gdb: a Multiboot v1 kernel for bhyve's -G debug server
 * (test/integration/gdb-stub.test.ts), debugged with the symbols of
 * build/kernels/mb-gdb.elf. It calls `tick` three times (each call adds 1
 * to `counter`), then writes `exit_code` (0x10) to the pc-testdev port
 * 0xf4: bhyve exits with status (exit_code << 1) | 1 = 33. A debugger that
 * writes 0x11 into exit_code makes it exit 35 instead. Before exiting it
 * spins while `hold` is nonzero (0 as loaded): a debugger sets it to keep
 * the guest running until it interrupts it (Ctrl-C).
 */
	.code32
	.set MB_MAGIC, 0x1BADB002
	.set MB_FLAGS, 0x00010002	/* a.out kludge, memory info */

	.text
	.globl entry, tick, counter, exit_code, hold, hold_loop, spin
mbheader:
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)
	.long mbheader
	.long _load_start
	.long _load_end
	.long _bss_end
	.long entry

entry:
	cli
	mov	$stack_top, %esp
	xor	%ecx, %ecx
1:	call	tick
	cmp	$3, %ecx
	jb	1b
hold_loop:
	pause
	cmpl	$0, hold
	jne	hold_loop
	mov	exit_code, %eax
	out	%al, $0xf4
spin:	hlt
	jmp	spin

	.type tick, @function
tick:
	inc	%ecx
	incl	counter
	ret

	.data
	.align 4
	.type counter, @object
	.type exit_code, @object
	.type hold, @object
	.size hold, 4
	.size counter, 4
	.size exit_code, 4
counter:	.long 0
exit_code:	.long 0x10
hold:		.long 0

	.bss
	.align 16
	.skip 4096
stack_top:
