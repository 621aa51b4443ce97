/*
 * mbelf-legacy: a Multiboot v1 kernel in ELF form (no a.out kludge), linked
 * the common way, `ld -m elf_i386 -Ttext=0x100000` without -N, so that its
 * first PT_LOAD (the ELF and program headers) starts at 0xff000, inside the
 * legacy range 0xA0000-0xFFFFF (scripts/build-kernels.sh). It checks the
 * PC platform a kernel booted by a BIOS boot loader expects. The check is
 * chosen by "test=NAME" on the command line:
 *
 *   (none)    prints "mbelf-legacy: loaded, entry 0x...": the file loaded.
 *   uip       RTC register A: waits for UIP to be clear, then set (the
 *             rising edge, reading the seconds after each clear UIP), then
 *             clear again: the seconds must have moved (the update happens
 *             at the end of the UIP time).
 *   acpi      finds the RSDP in 0xE0000-0xFFFFF, the RSDT, the FADT, the
 *             FACS it points to, and reads the PM timer at the FADT's
 *             PM_TMR_BLK until it moves.
 *   realmode  drops to real mode and checks the state a BIOS leaves: the
 *             BDA's base memory size, IVT entries for int 8 and int 0x1c
 *             (and that int 0x1c returns), the timer tick (IRQ 0 from the
 *             PIT through the 8259 at vector 8) waking `sti; hlt`; then
 *             raises IRQ 11 with one 4-byte write to pc-testdev's port
 *             0x200b (pins 11-14) and takes it at vector 0x73 after
 *             `sti; hlt`. Under QEMU, SeaBIOS has left that state.
 *             "test=realmode,bytewrite" raises IRQ 11 with a byte write:
 *             QEMU's TCG drops wider writes to that byte-wide region
 *             (its KVM path splits them, as bhyve does, but QEMU cannot
 *             deliver interrupts to real mode on kvm_pvm hosts).
 *   cpuid     prints the vendor string, where KVM's signature leaf is
 *             ("KVMKVMKVM" at 0x40000000 + 0x100 * n, as Linux looks) and
 *             whether its feature leaf offers kvmclock and PV EOI.
 *   s3        arms the RTC alarm 2 s ahead, puts the FACS waking vector on
 *             a real-mode stub, and enters S3 (SLP_TYP from \_S3 of the
 *             DSDT is not parsed: 1, bhyve's and QEMU's value) through
 *             PM1a_CNT; the stub prints "s3: resumed" and exits.
 *             "test=s3,noalarm" arms no alarm and leaves RTC_EN clear:
 *             only the power button (or bhyvectl --wakeup) wakes it.
 *
 * Each check prints "NAME: ..." lines and ends by writing 0x10 to port 0xf4
 * (exit status 33); a failure prints "FAIL: ..." and writes 2 (status 5).
 * CPL0 code is interpreted on hosts without VT-x/EPT: keep loops short.
 */
#define RM(x) ((x) - rm_start + RMBASE)
	.code32
	.set MB_MAGIC, 0x1BADB002
	.set MB_FLAGS, 0x00000003	/* page-align modules, memory info */
	.set COM1, 0x3f8
	.set RMBASE, 0x3000		/* where the real-mode code runs (SeaBIOS uses 0x7000) */

	.text
	.globl entry
mbheader:
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

entry:
	cli
	mov	$stack_top, %esp
	mov	%ebx, mbi
	cmp	$0x2BADB002, %eax
	je	1f
	mov	$s_badmagic, %esi
	jmp	fail
1:	testl	$4, 0(%ebx)		/* MBI_CMDLINE */
	jz	no_test
	mov	16(%ebx), %esi
	/* find "test=" */
2:	cmpb	$0, (%esi)
	je	no_test
	mov	$s_testeq, %edi
	call	prefix
	je	3f
	inc	%esi
	jmp	2b
3:	add	$5, %esi
	mov	$s_uip, %edi
	call	prefix
	je	t_uip
	mov	$s_acpi, %edi
	call	prefix
	je	t_acpi
	mov	$s_realmode, %edi
	call	prefix
	jne	1f
	/* "realmode,bytewrite": raise IRQ 11 with a byte write instead */
	mov	$s_realmode_bw, %edi
	call	prefix
	jne	t_realmode
	movb	$1, rm_bytewrite
	jmp	t_realmode
1:
	mov	$s_s3_noalarm, %edi
	call	prefix
	jne	1f
	movb	$1, s3_noalarm
	jmp	t_s3
1:
	mov	$s_s3, %edi
	call	prefix
	je	t_s3
	mov	$s_cpuid, %edi
	call	prefix
	je	t_cpuid
	mov	$s_unknown, %esi
	jmp	fail

no_test:
	mov	$s_loaded, %esi
	call	puts
	mov	$entry, %eax
	call	puthex
	call	newline
	jmp	pass

/* ---- uip ---- */
t_uip:
	mov	$0x0a, %al
	out	%al, $0x70
	mov	$2000000, %ecx
1:	in	$0x71, %al		/* UIP clear first */
	test	$0x80, %al
	jz	2f
	loop	1b
	jmp	uip_stuck
	/* Then the rising edge; the seconds are read after each read of
	 * UIP = 0, so %bl holds the seconds from before the edge. */
2:	mov	$100000, %ecx
3:	mov	$0x00, %al
	out	%al, $0x70
	in	$0x71, %al
	mov	%al, %bl
	mov	$0x0a, %al
	out	%al, $0x70
	in	$0x71, %al
	test	$0x80, %al
	jnz	4f
	loop	3b
	mov	$s_uip_none, %esi
	jmp	fail
4:	mov	$2000000, %ecx
5:	in	$0x71, %al		/* the falling edge */
	test	$0x80, %al
	jz	6f
	loop	5b
	jmp	uip_stuck
6:	mov	$0x00, %al		/* the update is done: a new second */
	out	%al, $0x70
	in	$0x71, %al
	cmp	%al, %bl
	jne	7f
	mov	$s_uip_same, %esi
	jmp	fail
7:	mov	$s_uip_ok, %esi
	call	puts
	jmp	pass
uip_stuck:
	mov	$s_uip_stuck, %esi
	jmp	fail

/* ---- acpi ---- */
t_acpi:
	call	find_rsdp
	mov	$s_acpi_rsdp, %esi
	call	puts
	call	find_fadt
	mov	$s_acpi_fadt, %esi
	call	puts
	mov	36(%ebx), %edi		/* FIRMWARE_CTRL */
	cmpl	$0x53434146, (%edi)	/* "FACS" */
	je	1f
	mov	$s_acpi_nofacs, %esi
	jmp	fail
1:	mov	$s_acpi_facs, %esi
	call	puts
	mov	76(%ebx), %edx		/* PM_TMR_BLK */
	test	%edx, %edx
	jnz	2f
	mov	$s_acpi_notmr, %esi
	jmp	fail
2:	in	%dx, %eax
	mov	%eax, %ebx
	mov	$1000, %ecx
3:	in	%dx, %eax
	cmp	%eax, %ebx
	jne	4f
	loop	3b
	mov	$s_acpi_tmrstuck, %esi
	jmp	fail
4:	cmp	$0xffffffff, %eax
	jne	5f
	mov	$s_acpi_tmrones, %esi
	jmp	fail
5:	mov	$s_acpi_tmr, %esi
	call	puts
	jmp	pass

/* find_rsdp: %edi = the RSDP (checksum of its first 20 bytes checked) */
find_rsdp:
	mov	$0xe0000, %edi
1:	cmpl	$0x20445352, (%edi)	/* "RSD " */
	jne	2f
	cmpl	$0x20525450, 4(%edi)	/* "PTR " */
	jne	2f
	xor	%eax, %eax
	xor	%ecx, %ecx
3:	add	(%edi,%ecx), %al
	inc	%ecx
	cmp	$20, %ecx
	jb	3b
	test	%al, %al
	jz	4f
2:	add	$16, %edi
	cmp	$0x100000, %edi
	jb	1b
	mov	$s_acpi_norsdp, %esi
	jmp	fail
4:	ret

/* find_fadt: from the RSDP in %edi, %ebx = the FADT ("FACP") the RSDT lists */
find_fadt:
	mov	16(%edi), %esi		/* RsdtAddress */
	cmpl	$0x54445352, (%esi)	/* "RSDT" */
	jne	2f
	mov	4(%esi), %ecx		/* length */
	sub	$36, %ecx
	shr	$2, %ecx
	lea	36(%esi), %edx
1:	test	%ecx, %ecx
	jz	2f
	mov	(%edx), %ebx
	cmpl	$0x50434146, (%ebx)	/* "FACP" */
	je	3f
	add	$4, %edx
	dec	%ecx
	jmp	1b
2:	mov	$s_acpi_nofadt, %esi
	jmp	fail
3:	ret

/* ---- cpuid ---- */
t_cpuid:
	xor	%eax, %eax		/* the vendor string */
	cpuid
	mov	%ebx, cpuid_buf
	mov	%edx, cpuid_buf + 4
	mov	%ecx, cpuid_buf + 8
	movb	$0, cpuid_buf + 12
	mov	$s_cpuid_vendor, %esi
	call	puts
	mov	$cpuid_buf, %esi
	call	puts
	call	newline
	/* KVM's signature at 0x40000000 + 0x100 * n, as Linux looks for it */
	mov	$0x40000000, %edi
1:	mov	%edi, %eax
	cpuid
	cmp	$0x4b4d564b, %ebx	/* "KVMK" */
	jne	2f
	cmp	$0x564b4d56, %ecx	/* "VMKV" */
	jne	2f
	cmp	$0x4d, %edx		/* "M" */
	je	3f
2:	add	$0x100, %edi
	cmp	$0x40010000, %edi
	jb	1b
	mov	$s_cpuid_nokvm, %esi
	call	puts
	jmp	pass
3:	mov	$s_cpuid_kvm, %esi
	call	puts
	mov	%edi, %eax
	call	puthex
	call	newline
	lea	1(%edi), %eax
	cpuid
	mov	%eax, %ebx
	mov	$s_cpuid_clock, %esi
	call	puts
	mov	%ebx, %eax
	shr	$3, %eax		/* KVM_FEATURE_CLOCKSOURCE2 */
	call	yesno
	mov	$s_cpuid_eoi, %esi
	call	puts
	mov	%ebx, %eax
	shr	$6, %eax		/* KVM_FEATURE_PV_EOI */
	call	yesno
	jmp	pass

/* yesno: "yes\n" when bit 0 of %eax is set, else "no\n" */
yesno:
	mov	$s_yes, %esi
	test	$1, %al
	jnz	1f
	mov	$s_no, %esi
1:	jmp	puts

/* ---- real mode ---- */
	.set GDT16_CS, 0x08
	.set GDT16_DS, 0x10
t_realmode:
	/* Copy the real-mode code below 1 MiB, load a GDT with 16-bit
	 * segments, and leave protected mode through them. */
	mov	$rm_start, %esi
	mov	$RMBASE, %edi
	mov	$(rm_end - rm_start), %ecx
	cld
	rep movsb
	mov	rm_bytewrite, %al
	mov	%al, RM(rm_bytewrite_flag)
	lgdt	gdt16_desc
	ljmp	$GDT16_CS, $RM(rm_pm16)

/* ---- s3 ---- */
t_s3:
	call	find_rsdp
	call	find_fadt
	mov	%ebx, %ebp		/* the FADT */
	mov	36(%ebx), %edi		/* FACS */
	cmpl	$0x53434146, (%edi)
	je	1f
	mov	$s_acpi_nofacs, %esi
	jmp	fail
1:	movl	$RM(rm_wake), 12(%edi)	/* FirmwareWakingVector */
	mov	64(%ebp), %edx		/* PM1a_CNT_BLK */
	push	%edx
	mov	$rm_start, %esi		/* the waking code, below 1 MiB */
	mov	$RMBASE, %edi
	mov	$(rm_end - rm_start), %ecx
	cld
	rep movsb
	cmpb	$0, s3_noalarm
	jne	3f
	/* RTC alarm two seconds ahead: BCD seconds, any minute and hour. */
	mov	$0x0b, %al
	out	%al, $0x70
	in	$0x71, %al
	or	$0x20, %al		/* AIE */
	mov	%al, %bl
	mov	$0x00, %al
	out	%al, $0x70
	in	$0x71, %al
	call	bcd_add2
	mov	%al, %cl
	mov	$0x01, %al		/* seconds alarm */
	out	%al, $0x70
	mov	%cl, %al
	out	%al, $0x71
	mov	$0x03, %al
	out	%al, $0x70
	mov	$0xff, %al
	out	%al, $0x71
	mov	$0x05, %al
	out	%al, $0x70
	mov	$0xff, %al
	out	%al, $0x71
	mov	$0x0b, %al
	out	%al, $0x70
	mov	%bl, %al
	out	%al, $0x71
	mov	$0x0c, %al		/* clear pending flags */
	out	%al, $0x70
	in	$0x71, %al
	/* PM1 enables: RTC_EN (bit 10) so the alarm wakes the machine. */
	mov	56(%ebp), %edx		/* PM1a_EVT_BLK */
	add	$2, %edx		/* PM1a_EN */
	mov	$0x0400, %ax
	out	%ax, %dx
3:	mov	$s_s3_enter, %esi
	call	puts
	pop	%edx
	in	%dx, %ax
	and	$0xc3ff, %ax
	or	$((1 << 10) | (1 << 13)), %ax	/* SLP_TYP 1, SLP_EN */
	wbinvd
	out	%ax, %dx
	mov	$200000, %ecx		/* a sleeping CPU never gets here */
2:	loop	2b
	mov	$s_s3_nosleep, %esi
	jmp	fail

/* bcd_add2: %al (BCD seconds) + 2 mod 60, in BCD */
bcd_add2:
	push	%ebx
	movzb	%al, %eax
	mov	%eax, %ebx
	shr	$4, %ebx
	imul	$10, %ebx
	and	$0xf, %eax
	add	%ebx, %eax
	add	$2, %eax
	cmp	$60, %eax
	jb	1f
	sub	$60, %eax
1:	xor	%edx, %edx
	mov	$10, %ebx
	div	%ebx
	shl	$4, %eax
	or	%edx, %eax
	pop	%ebx
	ret

/* ---- common ---- */
pass:
	mov	$0x10, %al
	out	%al, $0xf4
	jmp	halt
fail:
	push	%esi
	mov	$s_fail, %esi
	call	puts
	pop	%esi
	call	puts
	mov	$2, %al
	out	%al, $0xf4
halt:
	hlt
	jmp	halt

/* prefix: ZF set when the string at %esi starts with the one at %edi */
prefix:
	push	%esi
	push	%edi
	push	%eax
1:	movb	(%edi), %al
	test	%al, %al
	jz	2f
	cmpb	(%esi), %al
	jne	2f
	inc	%esi
	inc	%edi
	jmp	1b
2:	pop	%eax
	pop	%edi
	pop	%esi
	ret

putc:
	push	%edx
	mov	$COM1, %dx
	out	%al, %dx
	pop	%edx
	ret

newline:
	mov	$10, %al
	jmp	putc

puts:
	push	%eax
1:	lodsb
	test	%al, %al
	jz	2f
	call	putc
	jmp	1b
2:	pop	%eax
	ret

putdec:
	push	%ebx
	push	%ecx
	push	%edx
	mov	$10, %ebx
	xor	%ecx, %ecx
1:	xor	%edx, %edx
	div	%ebx
	push	%edx
	inc	%ecx
	test	%eax, %eax
	jnz	1b
2:	pop	%eax
	add	$'0', %al
	call	putc
	loop	2b
	pop	%edx
	pop	%ecx
	pop	%ebx
	ret

puthex:
	push	%ecx
	push	%edx
	mov	%eax, %edx
	mov	$'0', %al
	call	putc
	mov	$'x', %al
	call	putc
	mov	$8, %ecx
1:	rol	$4, %edx
	mov	%dl, %al
	and	$0xf, %al
	add	$'0', %al
	cmp	$'9', %al
	jbe	2f
	add	$('a' - '9' - 1), %al
2:	call	putc
	loop	1b
	pop	%edx
	pop	%ecx
	ret

/*
 * The real-mode part, copied to RMBASE: addresses inside it are
 * RM(label). It runs with CS = 0.
 */
	.balign	16
rm_start:
	.code16
rm_pm16:
	/* 16-bit protected mode: real-mode-sized segments, then PE off. */
	mov	$GDT16_DS, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	mov	%cr0, %eax
	and	$~1, %eax
	mov	%eax, %cr0
	ljmp	$0, $RM(rm_main)
rm_main:
	xor	%ax, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	mov	$RMBASE, %esp		/* all of it: BIOS code may use ESP */
	lidt	RM(rm_ivt)
	/* The BDA: base memory size (KiB) at 0x413. */
	mov	0x413, %ax
	cmp	$512, %ax
	jb	rm_fail_bda
	cmp	$640, %ax
	ja	rm_fail_bda
	mov	$RM(s_rm_bda), %si
	call	rm_puts
	/* The IVT a BIOS leaves: the timer (8) and user tick (0x1c)
	 * vectors point somewhere; int $0x1c returns. */
	cmpl	$0, 0x08 * 4
	je	rm_fail_ivt
	cmpl	$0, 0x1c * 4
	je	rm_fail_ivt
	int	$0x1c
	/* The timer tick: IRQ 0 from the PIT through the 8259 at vector 8
	 * (our handler counts it), waking `sti; hlt`. */
	movw	$RM(rm_irq0), 0x08 * 4
	movw	$0, 0x08 * 4 + 2
	mov	$40, %cx
1:	sti
	hlt
	cli
	cmpb	$0, RM(rm_irq0_count)
	jne	2f
	loop	1b
	mov	$RM(s_rm_notick), %si
	jmp	rm_fail
2:	mov	$RM(s_rm_tick), %si
	call	rm_puts
	/* IRQ 11: our handler at vector 0x70 + 3, unmasked at both 8259s. */
	movw	$RM(rm_irq11), 0x73 * 4
	movw	$0, 0x73 * 4 + 2
	movb	$0, RM(rm_irq11_count)
	in	$0xa1, %al
	and	$~0x08, %al
	out	%al, $0xa1
	in	$0x21, %al
	and	$~0x04, %al
	out	%al, $0x21
	mov	$0x200b, %dx		/* pins 11, 12, 13, 14 = 1, 0, 0, 0 */
	mov	$1, %eax
	cmpb	$0, RM(rm_bytewrite_flag)
	jne	7f
	out	%eax, %dx
	jmp	8f
7:	out	%al, %dx
8:
	mov	$40, %cx
3:	sti
	hlt
	cli
	cmpb	$0, RM(rm_irq11_count)
	jne	4f
	loop	3b
	mov	$RM(s_rm_noirq), %si
	jmp	rm_fail
4:	mov	$RM(s_rm_irq), %si
	call	rm_puts
	mov	$0x10, %al
	out	%al, $0xf4
5:	hlt
	jmp	5b

rm_irq0:
	push	%ax
	mov	$0x20, %al
	out	%al, $0x20
	incb	%cs:RM(rm_irq0_count)
	pop	%ax
	iret

rm_irq11:
	push	%ax
	push	%dx
	mov	$0x200b, %dx		/* lower the line */
	xor	%al, %al
	out	%al, %dx
	mov	$0x20, %al		/* EOI: slave, then master */
	out	%al, $0xa0
	out	%al, $0x20
	incb	%cs:RM(rm_irq11_count)
	pop	%dx
	pop	%ax
	iret

rm_fail_ivt:
	mov	$RM(s_rm_noivt), %si
	jmp	rm_fail
rm_fail_bda:
	mov	$RM(s_rm_nobda), %si
rm_fail:
	push	%si
	mov	$RM(s_rm_fail), %si
	call	rm_puts
	pop	%si
	call	rm_puts
	mov	$2, %al
	out	%al, $0xf4
6:	hlt
	jmp	6b

/* The S3 waking vector: entered in real mode at CS:IP = 0:RM(rm_wake). */
rm_wake:
	xor	%ax, %ax
	mov	%ax, %ds
	mov	$RM(s_s3_resumed), %si
	call	rm_puts
	mov	$0x10, %al
	out	%al, $0xf4
7:	hlt
	jmp	7b

rm_puts:
	push	%ax
	push	%dx
	mov	$COM1, %dx
1:	lodsb
	test	%al, %al
	jz	2f
	out	%al, %dx
	jmp	1b
2:	pop	%dx
	pop	%ax
	ret

	.balign	4
rm_ivt:	.word	0x3ff
	.long	0
rm_irq0_count:	.byte	0
rm_bytewrite_flag:	.byte	0
rm_irq11_count:	.byte	0
s_rm_bda:	.asciz	"realmode: BDA base memory size ok\n"
s_rm_nobda:	.asciz	"realmode: BDA base memory size (0x413) is not 512-640 KiB\n"
s_rm_noivt:	.asciz	"realmode: no BIOS vectors for int 8 / int 0x1c\n"
s_rm_tick:	.asciz	"realmode: the PIT tick (IRQ 0 at vector 8) woke sti;hlt\n"
s_rm_notick:	.asciz	"realmode: no timer tick at vector 8 in 40 halts\n"
s_rm_irq:	.asciz	"realmode: IRQ 11 from pc-testdev taken at vector 0x73\n"
s_rm_noirq:	.asciz	"realmode: IRQ 11 not taken at vector 0x73\n"
s_rm_fail:	.asciz	"FAIL: "
s_s3_resumed:	.asciz	"s3: resumed at the waking vector\n"
rm_end:
	.code32

	.section .rodata
	.balign	8
gdt16:	.quad	0
	.quad	0x00009b000000ffff	/* 16-bit code, base 0, limit 64 KiB, accessed */
	.quad	0x000093000000ffff	/* 16-bit data, base 0, limit 64 KiB, accessed */
gdt16_desc:
	.word	23
	.long	gdt16
s_badmagic:	.asciz	"bad Multiboot magic\n"
s_testeq:	.asciz	"test="
s_uip:		.asciz	"uip"
s_acpi:		.asciz	"acpi"
s_realmode:	.asciz	"realmode"
s_realmode_bw:	.asciz	"realmode,bytewrite"
s_s3:		.asciz	"s3"
s_s3_noalarm:	.asciz	"s3,noalarm"
s_unknown:	.asciz	"unknown test\n"
s_cpuid:	.asciz	"cpuid"
s_cpuid_vendor:	.asciz	"cpuid: vendor "
s_cpuid_nokvm:	.asciz	"cpuid: no KVM signature\n"
s_cpuid_kvm:	.asciz	"cpuid: KVM signature at "
s_cpuid_clock:	.asciz	"cpuid: kvmclock "
s_cpuid_eoi:	.asciz	"cpuid: pv_eoi "
s_yes:		.asciz	"yes\n"
s_no:		.asciz	"no\n"
s_loaded:	.asciz	"mbelf-legacy: loaded, entry "
s_fail:		.asciz	"FAIL: "
s_uip_ok:	.asciz	"uip: rising edge seen, the seconds moved when it fell\n"
s_uip_none:	.asciz	"uip: no rising edge of register A's UIP\n"
s_uip_stuck:	.asciz	"uip: UIP stays set\n"
s_uip_same:	.asciz	"uip: the seconds did not move across UIP\n"
s_acpi_rsdp:	.asciz	"acpi: RSDP found\n"
s_acpi_norsdp:	.asciz	"acpi: no RSDP in 0xE0000-0xFFFFF\n"
s_acpi_fadt:	.asciz	"acpi: FADT found\n"
s_acpi_nofadt:	.asciz	"acpi: no FADT in the RSDT\n"
s_acpi_facs:	.asciz	"acpi: FACS found\n"
s_acpi_nofacs:	.asciz	"acpi: FIRMWARE_CTRL does not point to a FACS\n"
s_acpi_notmr:	.asciz	"acpi: no PM_TMR_BLK\n"
s_acpi_tmr:	.asciz	"acpi: PM timer advances\n"
s_acpi_tmrstuck:.asciz	"acpi: PM timer does not move\n"
s_acpi_tmrones:	.asciz	"acpi: PM timer reads all-ones\n"
s_s3_enter:	.asciz	"s3: entering S3\n"
s_s3_nosleep:	.asciz	"s3: still running after SLP_EN\n"

	.data
	.balign	4
mbi:	.long	0
cpuid_buf:	.space	16
s3_noalarm:	.byte	0
rm_bytewrite:	.byte	0

	.bss
	.balign	16
	.space	4096
stack_top:
