/*
 * irq.h - interrupt mode of the test guests (irq.c in ring 3, irq.S in
 * ring 0): IDT, local APIC, I/O APIC, MSI/MSI-X messages, the firmware's
 * interrupt routing (MP table, PIRQ router) and race-free waits.
 *
 * The guests run in ring 3 with IF=0 (always: on kvm_pvm hosts cli and sti
 * fault in ring 3 even with IOPL=3). A wait checks its condition and, when
 * it does not hold yet, executes hlt, which faults in ring 3 into
 * irq_gp_gate (irq.S): sti; hlt; iretq: an interrupt that came meanwhile stayed pending, the one
 * that ends the halt runs its handler (irq.S: count, acknowledge, EOI) and
 * the wait checks again. A
 * periodic local-APIC timer tick (IRQ_VEC_TICK, ~100 Hz) wakes every halt so
 * that waits can time out instead of hanging.
 */
#ifndef IRQ_H
#define IRQ_H
#include <stdint.h>
#include "irq-defs.h"

extern volatile uint32_t irq_count[256];	/* interrupts taken, by vector */
extern volatile uint32_t irq_ack_bits[256];	/* OR of what the ack action read */
extern volatile uint32_t irq_ack_zero[256];	/* IRQ_ACK_MMIO8 reads of 0 (spurious) */
extern volatile uint64_t irq_first_tsc[256];	/* TSC at the first / last one */
extern volatile uint64_t irq_last_tsc[256];
extern volatile uint8_t irq_ack_kind[256];	/* IRQ_ACK_* */
extern volatile uint64_t irq_ack_addr[256];
extern volatile uint32_t irq_ack_val[256];

/* The interrupt mode word at ROM offset 0xFFE4 (start.S rom_mode, read
 * with rom_word(1)):
 * bits 0-3 the virtio interrupt mode, bit 8 negotiate VIRTIO_F_EVENT_IDX,
 * bit 9 hold: wait for a byte on COM1 (by interrupt) before exiting. */
#define MODE_POLL		0
#define MODE_MSIX		1	/* one MSI-X vector per queue, one for config */
#define MODE_MSI		2	/* the MSI capability, one message (bhyve -W) */
#define MODE_INTX		3	/* INTx, routed as the firmware tables say */
#define MODE_EVENT_IDX		0x100
#define MODE_HOLD		0x200
const char *irq_mode_name(int mode);

/* IDT (exceptions print and end the run), local APIC on (spurious vector
 * 0xff, TPR 0), both 8259s masked, the watchdog tick running. */
void irq_init(void);
int irq_alloc_vector(void);
void irq_set_ack(int vec, int kind, uint64_t addr, uint32_t val);
/* Clear a vector's count, ack bits and timestamps. */
void irq_reset(int vec);
/* One halt with interrupts on (returns after any interrupt). */
void irq_halt(void);
/* Waits until *counter != seen; returns 0 after timeout_cycles TSC cycles. */
int irq_wait_change(volatile uint32_t *counter, uint32_t seen, uint64_t timeout_cycles);
/* Waits (halting) for `cycles` TSC cycles. */
void irq_sleep(uint64_t cycles);
/* Stops / restarts the watchdog tick (a test that owns the LAPIC timer). */
void irq_tick(int on);

uint32_t lapic_read(int reg);
void lapic_write(int reg, uint32_t v);
uint32_t lapic_id(void);
#define LAPIC_TPR	0x080
#define LAPIC_SVR	0x0f0
#define LAPIC_ISR0	0x100
#define LAPIC_IRR0	0x200
#define LAPIC_LVT_TIMER	0x320
#define LAPIC_LVT_LINT0	0x350
#define LAPIC_TMICT	0x380
#define LAPIC_TMCCT	0x390
#define LAPIC_TDCR	0x3e0

uint32_t ioapic_read(int reg);
void ioapic_write(int reg, uint32_t v);
int ioapic_pins(void);
/* Redirection entry of `pin`: fixed delivery to this CPU. */
void ioapic_route(int pin, int vec, int level, int active_low);
void ioapic_mask(int pin, int masked);

/* An MSI message to this CPU's local APIC, fixed delivery, edge. */
uint64_t msi_address(void);
uint32_t msi_data(int vec);

/* The firmware's interrupt routing. */
struct intx_route {
	int pin;		/* I/O APIC input */
	int level, active_low;
	int isa_irq;		/* -1 unless routed through an ISA IRQ */
	const char *source;	/* "MP table", "PIRQ router", "PIIX3 PIRQ routed by this guest" */
};
/* Does the MP table exist (bhyve's, at 0xf0000; -Y leaves it out)? */
int mptable_present(void);
/* I/O APIC input of ISA IRQ `irq`: the MP table's I/O interrupt entry for
 * the ISA bus, or the PC's wiring (IRQ 0 on input 2, the rest 1:1; "PC wiring: no MP table") when
 * the firmware left no table. */
int isa_irq_route(int irq, struct intx_route *r);
/* INTx of PCI function `bdf` (its interrupt pin register): the MP table's
 * entry for the PCI bus, else the PIRQ router's ISA IRQ that the firmware
 * wrote into the interrupt line register, else (no firmware: QEMU -bios)
 * the PIIX3's PIRQ links routed here as SeaBIOS does. 0 when none. */
int pci_intx_route(int bdf, struct intx_route *r);

/* MODE_HOLD: enable COM1's received-data interrupt (ISA IRQ 4, routed as
 * the MP table says), print "hold: waiting ...", halt until a byte comes. */
void irq_hold_com1(void);

#endif
