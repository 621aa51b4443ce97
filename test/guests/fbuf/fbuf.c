/*
 * fbuf.rom: finds bhyve's framebuffer device (PCI fb5d:40fb), reads its
 * mode registers (BAR 0), optionally sets a mode, and draws a known
 * pattern into the framebuffer (BAR 1) from ring 3: blocks of 64x64
 * pixels, block (bx, by) in colour fbuf_colors[(bx + 2 * by) % 8], each
 * pixel a 32-bit 0x00RRGGBB (bytes B, G, R, X). test/integration/fbuf.test.ts
 * computes the same picture and compares it with what a VNC client saw.
 *
 * The parameter word (ROM offset 0xFFE0): 0 keeps the configured mode,
 * else (width << 16) | height is written to the mode registers first.
 * Bit 31 (bench/vnc.mjs): animate, redrawing the whole screen with the
 * pattern shifted by one colour per frame until COM1 has a byte.
 *
 * Under QEMU (no fbuf) the same picture goes to QEMU's bochs-display
 * (1234:1111: framebuffer at BAR 0, the Bochs DISPI registers at BAR 2
 * offset 0x500), in the mode the parameter gives (default 1024x768), so
 * the two VNC servers can be compared on one guest.
 * It also writes VGA_LINE into the VGA text buffer at 0xB8000 (row 1,
 * attribute 0x1f), which fbuf's vga=on shows.
 * Prints "fbuf: drew WxH at 0xADDR", then "fbuf: waiting" and polls COM1
 * until a byte arrives (~60 s at most), then "fbuf: OK" (status 33).
 * Meanwhile the guest takes the keyboard controller's interrupts (ISA IRQ 1
 * for the keyboard, IRQ 12 for the mouse, routed through the I/O APIC as
 * the MP table or the PC's wiring says) and only after an interrupt reads
 * and prints what the controller has: "kbd: XX" for keys typed in a VNC
 * client (scancode set 1: the command byte asks for translation),
 * "mouse: XX" for the PS/2 mouse's bytes (reporting is switched on with
 * 0xd4 0xf4; its ACK 0xfa comes first, then 3-byte movement packets from
 * VNC pointer events). At the end: "fbuf: interrupts: keyboard N, mouse M".
 */
#include "vlib.h"
#include "irq.h"

#define FBUF_VENDOR	0xfb5d
#define FBUF_DEVICE	0x40fb
#define REG_FBSIZE	0
#define REG_WIDTH	4
#define REG_HEIGHT	6
#define REG_DEPTH	8
#define BLOCK		64
#define ANIMATE		0x80000000u
#define BOCHS_VENDOR	0x1234
#define BOCHS_DEVICE	0x1111
#define DISPI(i)	(0x500 + 2 * (i))	/* XRES 1, YRES 2, BPP 3, ENABLE 4 */
#define VGA_LINE	"bhyve fbuf: VGA text mode, 80x25 {[|]} 0123456789"

static const uint32_t fbuf_colors[8] = {
	0x000000, 0xff0000, 0x00ff00, 0x0000ff, 0xffff00, 0xff00ff, 0x00ffff, 0xffffff,
};

static void draw(volatile uint32_t *px, unsigned w, unsigned h, unsigned shift)
{
	for (unsigned y = 0; y < h; y++)
		for (unsigned x = 0; x < w; x++)
			px[y * w + x] = fbuf_colors[(x / BLOCK + 2 * (y / BLOCK) + shift) % 8];
}

/* QEMU's bochs-display: set the mode through DISPI, return the framebuffer. */
static uintptr_t bochs_setup(int bdf, unsigned w, unsigned h)
{
	uintptr_t fb = pci_r32(bdf, 0x10) & ~0xful;
	uintptr_t mmio = pci_r32(bdf, 0x18) & ~0xful;
	mw16(mmio + DISPI(4), 0);
	mw16(mmio + DISPI(1), w);
	mw16(mmio + DISPI(2), h);
	mw16(mmio + DISPI(3), 32);
	mw16(mmio + DISPI(4), 0x41);	/* enabled, linear framebuffer */
	printf("fbuf: bochs-display %ux%u at 0x%lx\n", w, h, (unsigned long)fb);
	return fb;
}

int guest_main(uint32_t param)
{
	struct pci_virtio none[1];
	printf("fbuf test\n");
	pci_scan(none, 0);	/* assigns BARs, enables memory decoding */
	int animate = (param & ANIMATE) != 0;
	param &= ~ANIMATE;
	int bdf = pci_find(0x00, 0, (uint32_t)FBUF_DEVICE << 16 | FBUF_VENDOR);
	uintptr_t fb;
	unsigned w, h;
	if (bdf < 0) {
		bdf = pci_find(0x00, 0, (uint32_t)BOCHS_DEVICE << 16 | BOCHS_VENDOR);
		if (bdf < 0) {
			printf("FAIL: no fbuf device on PCI bus 0\n");
			return EXIT_NODEV;
		}
		w = param ? param >> 16 : 1024;
		h = param ? param & 0xffff : 768;
		fb = bochs_setup(bdf, w, h);
	} else {
		uintptr_t regs = pci_r32(bdf, 0x10) & ~0xful;
		fb = pci_r32(bdf, 0x14) & ~0xful;
		uint32_t fbsize = mr32(regs + REG_FBSIZE);
		printf("fbuf: regs at 0x%lx, framebuffer at 0x%lx, fbsize 0x%x, mode %ux%ux%u\n",
		    (unsigned long)regs, (unsigned long)fb, fbsize,
		    mr16(regs + REG_WIDTH), mr16(regs + REG_HEIGHT), mr16(regs + REG_DEPTH));
		if (param != 0) {
			mw16(regs + REG_WIDTH, param >> 16);
			mw16(regs + REG_HEIGHT, param & 0xffff);
			mw16(regs + REG_DEPTH, 32);
		}
		w = mr16(regs + REG_WIDTH);
		h = mr16(regs + REG_HEIGHT);
		if ((uint64_t)w * h * 4 > fbsize)
			fail("fbuf: mode %ux%u does not fit in 0x%x bytes", w, h, fbsize);
	}
	volatile uint32_t *px = (volatile uint32_t *)fb;
	draw(px, w, h, 0);
	/* The pixels read back: the BAR is memory, not a device that drops writes. */
	if (px[0] != fbuf_colors[0] || px[w * 70 + 65] != fbuf_colors[3])
		fail("fbuf: framebuffer reads back 0x%x 0x%x", px[0], px[w * 70 + 65]);
	printf("fbuf: drew %ux%u at 0x%lx\n", w, h, (unsigned long)fb);
	/* A line of VGA text (row 1, bright white on blue): shown with
	 * vga=on, ordinary RAM otherwise (and nothing under QEMU without a VGA). */
	volatile uint16_t *text = (volatile uint16_t *)0xb8000;
	for (int i = 0; VGA_LINE[i]; i++)
		text[80 + i] = 0x1f00 | (uint8_t)VGA_LINE[i];
	int vkbd = -1, vaux = -1;
	if (!animate) {
		struct intx_route r1, r12;
		irq_init();
		if (!isa_irq_route(1, &r1) || !isa_irq_route(12, &r12))
			fail("fbuf: no I/O APIC route for IRQ 1 or 12");
		vkbd = irq_alloc_vector();
		vaux = irq_alloc_vector();
		ioapic_route(r1.pin, vkbd, r1.level, r1.active_low);
		ioapic_route(r12.pin, vaux, r12.level, r12.active_low);
		printf("fbuf: keyboard IRQ 1 -> pin %d, mouse IRQ 12 -> pin %d (%s)\n", r1.pin, r12.pin, r1.source);
	}
	while (inb(0x64) & 1)	/* drop what firmware left */
		inb(0x60);
	outb(0x64, 0x60);	/* i8042 command byte: translation, system flag, */
	outb(0x60, animate ? 0x44 : 0x47);	/* and keyboard and mouse IRQs */
	outb(0x64, 0xa8);	/* enable the aux (mouse) port */
	outb(0x64, 0xd4);	/* next byte to the mouse: */
	outb(0x60, 0xf4);	/* enable reporting */
	if (animate) {
		printf("fbuf: animating\n");
		for (unsigned frame = 1; ; frame++) {
			draw(px, w, h, frame);
			if (inb(0x3f8 + 5) & 1) {
				printf("fbuf: drew %u frames\n", frame);
				return EXIT_OK;
			}
		}
	}
	printf("fbuf: waiting\n");
	/* Bytes are read only after an interrupt announced them: a byte the
	 * controller did not signal is never printed (the test would miss it). */
	uint32_t seen_kbd = irq_count[vkbd], seen_aux = irq_count[vaux];
	uint32_t tick0 = irq_count[IRQ_VEC_TICK];
	while (irq_count[IRQ_VEC_TICK] - tick0 < 6000) {	/* ~60 s at ~100 Hz */
		if (irq_count[vkbd] != seen_kbd || irq_count[vaux] != seen_aux) {
			seen_kbd = irq_count[vkbd];
			seen_aux = irq_count[vaux];
			uint8_t st;
			while ((st = inb(0x64)) & 1)
				printf("%s: %02x\n", (st & 0x20) ? "mouse" : "kbd", inb(0x60));
		}
		if (inb(0x3f8 + 5) & 1) {
			printf("fbuf: released by '%c'\n", inb(0x3f8));
			printf("fbuf: interrupts: keyboard %u, mouse %u\n", irq_count[vkbd], irq_count[vaux]);
			printf("fbuf: OK\n");
			return EXIT_OK;
		}
		irq_halt();
	}
	fail("fbuf: nothing on COM1 for a long time");
}
