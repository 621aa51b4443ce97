/*
 * uart.rom: drive the first PCI 16550 (class 07/00: bhyve's uart 131f:2000,
 * QEMU's pci-serial 1b36:0002) as an OS does, in ring 3 on the virtio
 * runtime (vlib.c, irq.c):
 *   - find it on bus 0, give its I/O BAR 0 an address when nobody did
 *     (QEMU -bios), enable I/O decoding;
 *   - 115200 8N1 with the FIFO on; the scratch register and the divisor
 *     latch read back; loopback (MCR bit 4): a byte written comes back in
 *     RBR and the modem lines mirror MCR;
 *   - echo: prints "uart: ready" on COM1, then sends back every byte the
 *     host sends on the port until it has echoed N bytes (the parameter;
 *     0 = 4096), in 16-byte bursts while THR is empty;
 *       uart: echoed N bytes, crc XXXXXXXX
 * Interrupt mode (mode word, irq.h): MODE_INTX: the received-data and
 * THR-empty interrupts on the function's INTx pin, routed as the firmware
 * says. The ring-0 handler drops the level line by writing IER = 0 (and
 * reads IIR); ring 3 serves the port and enables again what it waits for:
 * bytes are taken and sent only after an interrupt announced them.
 *   uart: interrupts: intx vector V N
 * Failures print "FAIL: ..." and exit 1 (status 3); no UART 2 (status 5).
 */
#include "vlib.h"
#include "irq.h"

#define RBR	0
#define THR	0
#define IER	1
#define IIR	2
#define FCR	2
#define LCR	3
#define MCR	4
#define LSR	5
#define MSR	6
#define SCR	7
#define DLL	0
#define DLH	1

#define IER_RX	0x01
#define IER_TX	0x02
#define LSR_DR	0x01
#define LSR_THRE 0x20
#define FIFO	16

#define IO_BAR_DEFAULT	0xc000	/* free on QEMU's pc machine and on bhyve */
#define PCTESTDEV_IRQ	0x2000	/* pc-testdev-irq-line: 0x2000 + I/O APIC pin */
#define PCTESTDEV_IRQ_END 0x2020

static uint16_t base;
static int bdf = -1, irqmode, vec = -1;

static uint8_t rd(int r) { return inb((uint16_t)(base + r)); }
static void wr(int r, uint8_t v) { outb((uint16_t)(base + r), v); }

static void setup_bar(void)
{
	uint32_t b0 = pci_r32(bdf, 0x10);
	if (!(b0 & 1))
		fail("uart: BAR 0 is not an I/O BAR (%x)", b0);
	pci_w16(bdf, 4, pci_r16(bdf, 4) & ~3);
	pci_w32(bdf, 0x10, 0xffffffff);
	uint32_t size = ~(pci_r32(bdf, 0x10) & 0xfffc) + 1;
	size &= 0xffff;
	pci_w32(bdf, 0x10, b0);
	if (size < 8)
		fail("uart: BAR 0 of %u ports", size);
	uint32_t at = b0 & ~3u;
	if (at == 0) {
		pci_w32(bdf, 0x10, IO_BAR_DEFAULT);
		printf("uart: BAR 0: assigned I/O %x size %u\n", IO_BAR_DEFAULT, size);
	} else if (at < PCTESTDEV_IRQ_END && at + size > PCTESTDEV_IRQ) {
		/* bhyve's I/O BARs start at 0x2000, where pc-testdev's IRQ-line
		 * ports sit (bhyve itself would fail to register the BAR). */
		pci_w32(bdf, 0x10, IO_BAR_DEFAULT);
		printf("uart: BAR 0: I/O %x overlaps pc-testdev's IRQ lines, moved to %x\n", at, IO_BAR_DEFAULT);
	} else {
		printf("uart: BAR 0: I/O %x size %u (already assigned)\n", b0 & ~3u, size);
	}
	base = (uint16_t)(pci_r32(bdf, 0x10) & ~3u);
	pci_w16(bdf, 4, (pci_r16(bdf, 4) | 1) & ~0x400);	/* I/O decoding, INTx allowed */
}

static void program(void)
{
	wr(IER, 0);
	wr(LCR, 0x80);
	wr(DLL, 1);
	wr(DLH, 0);
	wr(LCR, 0x03);
	if (rd(LCR) != 0x03)
		fail("uart: LCR reads %x", rd(LCR));
	wr(LCR, 0x83);
	if (rd(DLL) != 1 || rd(DLH) != 0)
		fail("uart: divisor latch reads %x:%x", rd(DLH), rd(DLL));
	wr(LCR, 0x03);
	wr(FCR, 0x07);			/* FIFO on, both reset */
	if ((rd(IIR) & 0xc0) != 0xc0)
		fail("uart: FIFO not enabled (IIR %x)", rd(IIR));
	wr(SCR, 0xa5);
	if (rd(SCR) != 0xa5)
		fail("uart: scratch register reads %x", rd(SCR));
	/* Loopback: TX goes to RX; RTS/DTR/OUT1/OUT2 show as CTS/DSR/RI/DCD. */
	wr(MCR, 0x1f);
	if ((rd(MSR) & 0xf0) != 0xf0)
		fail("uart: loopback MSR %x", rd(MSR));
	while (rd(LSR) & LSR_DR)
		rd(RBR);
	wr(THR, 0x5a);
	uint64_t t0 = rdtsc();
	while (!(rd(LSR) & LSR_DR))
		if (rdtsc() - t0 > poll_timeout_cycles)
			fail("uart: loopback byte never arrived");
	uint8_t c = rd(RBR);
	if (c != 0x5a)
		fail("uart: loopback returned %x", c);
	wr(MCR, 0x0b);			/* DTR, RTS, OUT2 */
	while (rd(LSR) & LSR_DR)	/* nothing of the loopback stays */
		rd(RBR);
	printf("uart: 115200 8N1, FIFO on, scratch and loopback OK\n");
}

static void setup_intx(void)
{
	struct intx_route r;
	if (!pci_intx_route(bdf, &r))
		fail("uart: no INTx route");
	vec = irq_alloc_vector();
	/* The handler writes IER = 0 (index 0 to port base+1), reading IIR after. */
	irq_set_ack(vec, IRQ_ACK_PORT, (uint64_t)0 | (uint64_t)(base + IER) << 16 | (uint64_t)(base + IIR) << 32, 0);
	ioapic_route(r.pin, vec, r.level, r.active_low);
	printf("uart: INT%c -> I/O APIC pin %d (%s), vector %x, from the %s\n", 'A' + pci_r8(bdf, 0x3d) - 1, r.pin,
	    r.level ? "level" : "edge", vec, r.source);
}

int guest_main(uint32_t param)
{
	uint32_t mode = rom_word(1);
	irqmode = mode & 0xf;
	uint32_t total = param ? param : 4096;
	if (irqmode != MODE_POLL || (mode & MODE_HOLD))
		irq_init();
	if (irqmode != MODE_POLL && irqmode != MODE_INTX)
		fail("uart: interrupt mode %d not supported (use INTx)", irqmode);

	bdf = pci_find(0x08, 16, 0x0700);
	if (bdf < 0) {
		printf("FAIL: no PCI serial port (class 07/00) on bus 0\n");
		return EXIT_NODEV;
	}
	printf("uart: 00:%02x.%u %04x:%04x class %06x, INT%c\n", (bdf >> 3) & 31, bdf & 7, pci_r16(bdf, 0), pci_r16(bdf, 2),
	    pci_r32(bdf, 8) >> 8, 'A' + pci_r8(bdf, 0x3d) - 1);
	setup_bar();
	program();
	if (irqmode == MODE_INTX)
		setup_intx();

	uint8_t *q = alloc(total, 64);
	uint32_t rx = 0, tx = 0, crc = 0, rx_irqs = 0, tx_irqs = 0;
	uint64_t first_wait = poll_timeout_cycles * 6;	/* the host connects first */
	printf("uart: ready to echo %u bytes\n", total);
	uint32_t seen = vec >= 0 ? irq_count[vec] : 0;
	while (tx < total) {
		if (irqmode == MODE_INTX) {
			wr(IER, (uint8_t)((rx < total ? IER_RX : 0) | (tx < rx ? IER_TX : 0)));
			if (!irq_wait_change(&irq_count[vec], seen, rx == 0 ? first_wait : poll_timeout_cycles))
				fail("uart: no interrupt (received %u, sent %u of %u; LSR %x IIR %x)", rx, tx, total, rd(LSR), rd(IIR));
			seen = irq_count[vec];
		} else {
			uint64_t t0 = rdtsc();
			while (!(rd(LSR) & LSR_DR) && tx >= rx)
				if (rdtsc() - t0 > (rx == 0 ? first_wait : poll_timeout_cycles))
					fail("uart: timeout (received %u, sent %u of %u)", rx, tx, total);
		}
		uint8_t lsr = rd(LSR);
		if (lsr & LSR_DR)
			rx_irqs++;
		while ((lsr & LSR_DR) && rx < total) {
			q[rx++] = rd(RBR);
			lsr = rd(LSR);
		}
		if ((lsr & LSR_THRE) && tx < rx) {
			tx_irqs++;
			for (int k = 0; k < FIFO && tx < rx; k++) {
				crc = crc32(crc, &q[tx], 1);
				wr(THR, q[tx++]);
			}
		}
	}
	wr(IER, 0);
	printf("uart: echoed %u bytes, crc %08x\n", total, crc);
	if (irqmode == MODE_INTX)
		printf("uart: interrupts: intx vector %x %u (%u with received data, %u with THR empty)\n", vec, irq_count[vec],
		    rx_irqs, tx_irqs);
	if (mode & MODE_HOLD)
		irq_hold_com1();
	return EXIT_OK;
}
