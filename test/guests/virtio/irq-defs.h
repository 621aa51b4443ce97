/* irq-defs.h - constants shared by irq.S and irq.c (no C declarations). */
#ifndef IRQ_DEFS_H
#define IRQ_DEFS_H

#define IDT_BASE		0xa000		/* start.S loads the IDTR */
#define LAPIC_BASE		0xfee00000
#define LAPIC_EOI_ADDR		0xfee000b0
#define IOAPIC_BASE		0xfec00000

/* Vectors the runtime keeps for itself; irq_alloc_vector() hands out
 * 0x30..0xef. */
#define IRQ_VEC_TICK		0xf0		/* the watchdog tick (LAPIC timer) */
#define IRQ_VEC_SPURIOUS	0xff

/* irq_ack_kind[vector]: what the handler does before the EOI. */
#define IRQ_ACK_NONE		0
#define IRQ_ACK_MMIO8		1	/* read the byte at irq_ack_addr (virtio ISR) */
#define IRQ_ACK_PORT		2	/* outb index, inb data (RTC register C) */
#define IRQ_ACK_MMIO32W		3	/* write irq_ack_val to irq_ack_addr (HPET ISR) */
#define IRQ_ACK_MMIO32		4	/* read the dword at irq_ack_addr (e1000 ICR) */

#endif
