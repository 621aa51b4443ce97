/* irq.c - see irq.h. Runs in ring 3 except irq_exception (ring 0). */
#include "vlib.h"
#include "irq.h"

volatile uint32_t irq_count[256];
volatile uint32_t irq_ack_bits[256];
volatile uint32_t irq_ack_zero[256];
volatile uint64_t irq_first_tsc[256];
volatile uint64_t irq_last_tsc[256];
volatile uint8_t irq_ack_kind[256];
volatile uint64_t irq_ack_addr[256];
volatile uint32_t irq_ack_val[256];

extern char irq_stubs[], irq_spurious[], irq_gp_gate[];

#define SEL_CODE64	0x18
#define GATE_INT	0x8e	/* present, DPL 0, 64-bit interrupt gate */
#define TICK_COUNT	80000	/* LAPIC timer, divide by 128: ~10 ms at KVM's 1 GHz bus */

const char *irq_mode_name(int mode)
{
	switch (mode & 0xf) {
	case MODE_POLL: return "poll";
	case MODE_MSIX: return "msix";
	case MODE_MSI: return "msi";
	case MODE_INTX: return "intx";
	default: return "?";
	}
}

static void set_gate(int vec, void *handler, uint8_t type)
{
	uint64_t a = (uint64_t)(uintptr_t)handler;
	volatile uint32_t *g = (volatile uint32_t *)(uintptr_t)(IDT_BASE + 16 * vec);
	g[0] = (uint32_t)(SEL_CODE64 << 16) | (uint32_t)(a & 0xffff);
	g[1] = (uint32_t)(a & 0xffff0000u) | ((uint32_t)type << 8);
	g[2] = (uint32_t)(a >> 32);
	g[3] = 0;
}

/* Ring 0: an exception is the end of the run (printing is slow here). */
void irq_exception(uint64_t *f);
void irq_exception(uint64_t *f)
{
	printf("FAIL: exception %lu error %lx at rip %lx cs %lx rsp %lx\n", f[0], f[1], f[2], f[3], f[5]);
	exit_(EXIT_FAIL);
}

uint32_t lapic_read(int reg) { return mr32(LAPIC_BASE + reg); }
void lapic_write(int reg, uint32_t v) { mw32(LAPIC_BASE + reg, v); }
uint32_t lapic_id(void) { return lapic_read(0x20) >> 24; }

uint32_t ioapic_read(int reg)
{
	mw32(IOAPIC_BASE, (uint32_t)reg);
	return mr32(IOAPIC_BASE + 0x10);
}

void ioapic_write(int reg, uint32_t v)
{
	mw32(IOAPIC_BASE, (uint32_t)reg);
	mw32(IOAPIC_BASE + 0x10, v);
}

int ioapic_pins(void) { return (int)((ioapic_read(1) >> 16) & 0xff) + 1; }

void ioapic_route(int pin, int vec, int level, int active_low)
{
	ioapic_write(0x11 + 2 * pin, lapic_id() << 24);
	ioapic_write(0x10 + 2 * pin, (uint32_t)vec | (active_low ? 1u << 13 : 0) | (level ? 1u << 15 : 0));
}

void ioapic_mask(int pin, int masked)
{
	uint32_t lo = ioapic_read(0x10 + 2 * pin);
	ioapic_write(0x10 + 2 * pin, masked ? lo | 1u << 16 : lo & ~(1u << 16));
}

uint64_t msi_address(void) { return 0xfee00000ull | (uint64_t)lapic_id() << 12; }
uint32_t msi_data(int vec) { return (uint32_t)vec; }

static int next_vector = 0x30;

int irq_alloc_vector(void)
{
	if (next_vector >= IRQ_VEC_TICK)
		fail("irq: out of vectors");
	return next_vector++;
}

void irq_set_ack(int vec, int kind, uint64_t addr, uint32_t val)
{
	irq_ack_addr[vec] = addr;
	irq_ack_val[vec] = val;
	irq_ack_kind[vec] = (uint8_t)kind;
}

void irq_reset(int vec)
{
	irq_count[vec] = 0;
	irq_ack_bits[vec] = 0;
	irq_ack_zero[vec] = 0;
	irq_first_tsc[vec] = 0;
	irq_last_tsc[vec] = 0;
}

/* Ring 3 runs with IF=0, so the check before the halt cannot miss the
 * interrupt: it stays pending until the sti in irq_gp_gate. */
void irq_halt(void)
{
	__asm__ volatile("hlt" ::: "memory");
}

int irq_wait_change(volatile uint32_t *counter, uint32_t seen, uint64_t timeout_cycles)
{
	uint64_t t0 = rdtsc();
	while (*counter == seen) {
		if (rdtsc() - t0 > timeout_cycles)
			return 0;
		irq_halt();
	}
	return 1;
}

void irq_sleep(uint64_t cycles)
{
	uint64_t t0 = rdtsc();
	while (rdtsc() - t0 < cycles)
		irq_halt();
}

void irq_tick(int on)
{
	if (on) {
		lapic_write(LAPIC_TDCR, 0xa);			/* divide by 128 */
		lapic_write(LAPIC_LVT_TIMER, (1u << 17) | IRQ_VEC_TICK);	/* periodic */
		lapic_write(LAPIC_TMICT, TICK_COUNT);
	} else {
		lapic_write(LAPIC_TMICT, 0);
		lapic_write(LAPIC_LVT_TIMER, (1u << 16) | IRQ_VEC_TICK);
	}
}

void irq_init(void)
{
	for (int v = 0; v < 256; v++)
		set_gate(v, irq_stubs + 16 * v, GATE_INT);
	set_gate(13, irq_gp_gate, GATE_INT);
	set_gate(IRQ_VEC_SPURIOUS, irq_spurious, GATE_INT);
	outb(0x21, 0xff);				/* both 8259s masked */
	outb(0xa1, 0xff);
	lapic_write(LAPIC_TPR, 0);
	lapic_write(LAPIC_LVT_LINT0, 1u << 16);		/* no ExtINT from the 8259 */
	lapic_write(LAPIC_SVR, 0x100 | IRQ_VEC_SPURIOUS);
	irq_tick(1);
	printf("irq: local APIC id %u version %x, I/O APIC %u pins\n", lapic_id(), lapic_read(0x30) & 0xff, ioapic_pins());
}

/* ---- the MP table (Intel MultiProcessor Specification 1.4) ---- */

struct mp_int { uint8_t type, bus, irq, pin; uint16_t flags; };
static struct {
	int probed, found;
	int pci_bus, isa_bus;
	int nints;
	struct mp_int ints[96];
} mp;

static int sum8(const volatile uint8_t *p, unsigned n)
{
	uint8_t s = 0;
	while (n--)
		s = (uint8_t)(s + *p++);
	return s;
}

static void mp_probe(void)
{
	if (mp.probed)
		return;
	mp.probed = 1;
	mp.pci_bus = mp.isa_bus = -1;
	/* The signatures built at run time: this ROM is visible at 0xf0000
	 * under QEMU -bios, and must not hold "_MP_" itself. */
	static volatile uint32_t sig_base = 0x5f504d5e;
	const uint32_t sig_fp = sig_base + 1, sig_ct = 0x504d4350;	/* "_MP_", "PCMP" */
	uintptr_t fp = 0;
	for (uintptr_t a = 0xf0000; a < 0x100000; a += 16)
		if (mr32(a) == sig_fp && mr8(a + 8) == 1 && sum8((volatile uint8_t *)a, 16) == 0) {
			fp = a;
			break;
		}
	if (!fp)
		return;
	uintptr_t ct = mr32(fp + 4);
	if (!ct || mr32(ct) != sig_ct)
		return;
	unsigned len = mr16(ct + 4), count = mr16(ct + 34);
	if (sum8((volatile uint8_t *)ct, len) != 0) {
		printf("mptable: configuration table checksum is wrong\n");
		return;
	}
	mp.found = 1;
	uintptr_t e = ct + 44, end = ct + len;
	for (unsigned i = 0; i < count && e < end; i++) {
		uint8_t type = mr8(e);
		if (type == 0) {			/* processor */
			e += 20;
			continue;
		}
		if (type == 1) {			/* bus: id, type string */
			uint32_t t = mr32(e + 2);
			if (t == 0x20494350)		/* "PCI " */
				mp.pci_bus = mr8(e + 1);
			else if (t == 0x20415349)	/* "ISA " */
				mp.isa_bus = mr8(e + 1);
		} else if (type == 3 && mp.nints < 96) {	/* I/O interrupt */
			struct mp_int *m = &mp.ints[mp.nints++];
			m->type = mr8(e + 1);
			m->flags = mr16(e + 2);
			m->bus = mr8(e + 4);
			m->irq = mr8(e + 5);
			m->pin = mr8(e + 7);
		}
		e += 8;
	}
	printf("mptable: at %lx, %u entries, PCI bus %d, ISA bus %d, %d I/O interrupt entries\n", (uint64_t)ct, count,
	    mp.pci_bus, mp.isa_bus, mp.nints);
}

int mptable_present(void)
{
	mp_probe();
	return mp.found;
}

/* MPS interrupt flags: polarity bits 0-1, trigger bits 2-3 (0 = conforms to the bus). */
static void mp_flags(uint16_t flags, int pci, struct intx_route *r)
{
	int po = flags & 3, el = (flags >> 2) & 3;
	r->active_low = po == 0 ? pci : po == 3;
	r->level = el == 0 ? pci : el == 3;
}

int isa_irq_route(int irq, struct intx_route *r)
{
	mp_probe();
	r->isa_irq = irq;
	if (mp.found) {
		for (int i = 0; i < mp.nints; i++) {
			struct mp_int *m = &mp.ints[i];
			if (m->type == 0 && m->bus == mp.isa_bus && m->irq == irq) {
				r->pin = m->pin;
				mp_flags(m->flags, 0, r);
				r->source = "MP table";
				return 1;
			}
		}
		printf("mptable: no entry for ISA IRQ %d\n", irq);
		return 0;
	}
	r->pin = irq == 0 ? 2 : irq;
	r->level = 0;
	r->active_low = 0;
	r->source = "PC wiring: no MP table";
	return 1;
}

int pci_intx_route(int bdf, struct intx_route *r)
{
	int ipin = pci_r8(bdf, 0x3d), slot = (bdf >> 3) & 31, fn = bdf & 7;
	if (ipin < 1 || ipin > 4)
		return 0;
	mp_probe();
	r->isa_irq = -1;
	if (mp.found && mp.pci_bus >= 0) {
		for (int i = 0; i < mp.nints; i++) {
			struct mp_int *m = &mp.ints[i];
			if (m->type == 0 && m->bus == mp.pci_bus && m->irq == ((slot << 2) | (ipin - 1))) {
				r->pin = m->pin;
				mp_flags(m->flags, 1, r);
				r->source = "MP table";
				return 1;
			}
		}
		printf("intx: the MP table has no entry for 00:%02x.%u INT%c\n", slot, fn, 'A' + ipin - 1);
	}
	int line = pci_r8(bdf, 0x3c), lpc = pci_find(0x08, 16, 0x0601);
	if (lpc < 0)
		return 0;
	static const uint8_t pirq_regs[8] = { 0x60, 0x61, 0x62, 0x63, 0x68, 0x69, 0x6a, 0x6b };
	if (line >= 1 && line <= 15) {
		for (int i = 0; i < 8; i++) {
			uint8_t v = pci_r8(lpc, pirq_regs[i]);
			if (!(v & 0x80) && (v & 0x0f) == line) {
				struct intx_route isa;
				if (!isa_irq_route(line, &isa))
					return 0;
				r->pin = isa.pin;
				r->isa_irq = line;
				r->level = 1;
				r->active_low = 1;
				r->source = "PIRQ router";
				printf("intx: interrupt line %d is PIRQ%c's IRQ\n", line, 'A' + i);
				return 1;
			}
		}
	}
	/* No firmware (QEMU -bios): route the PIIX3's PIRQA-D links to IRQs
	 * 10, 10, 11, 11 as SeaBIOS does; the board wires slot s pin p to
	 * PIRQ (p - 1 + s - 1) & 3. */
	if (!mp.found && lpc == BDF(0, 1, 0) && pci_r32(lpc, 0) == 0x70008086) {
		static const uint8_t irqs[4] = { 10, 10, 11, 11 };
		for (int i = 0; i < 4; i++)
			pci_w8(lpc, 0x60 + i, irqs[i]);
		int pirq = (ipin - 1 + slot - 1) & 3;
		int irq = irqs[pirq];
		pci_w8(bdf, 0x3c, (uint8_t)irq);
		r->pin = irq;
		r->isa_irq = irq;
		r->level = 1;
		r->active_low = 0;
		r->source = "PIIX3 PIRQ routed by this guest";
		printf("intx: PIRQ%c -> IRQ %d\n", 'A' + pirq, irq);
		return 1;
	}
	return 0;
}

void irq_hold_com1(void)
{
	struct intx_route r;
	if (!isa_irq_route(4, &r))
		fail("hold: no route for IRQ 4");
	int vec = irq_alloc_vector();
	ioapic_route(r.pin, vec, r.level, r.active_low);
	while (inb(0x3f8 + 5) & 1)			/* drop what is waiting */
		inb(0x3f8);
	outb(0x3f8 + 4, 0x0b);				/* DTR, RTS, OUT2 (the IRQ gate) */
	outb(0x3f8 + 1, 0x01);				/* received-data interrupt */
	printf("hold: waiting for a byte on COM1 (IRQ 4 -> I/O APIC pin %d, %s)\n", r.pin, r.source);
	if (!irq_wait_change(&irq_count[vec], 0, 60 * poll_timeout_cycles / 10))
		fail("hold: no COM1 interrupt within ~60 s");
	outb(0x3f8 + 1, 0);
	printf("hold: released by '%c'\n", inb(0x3f8));
}
