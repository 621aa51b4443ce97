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
 * Prints "fbuf: drew WxH at 0xADDR", then "fbuf: waiting" and polls COM1
 * until a byte arrives (~60 s at most), then "fbuf: OK" (status 33).
 * Meanwhile every byte the keyboard controller has (keys typed in a VNC
 * client, scancode set 1: the command byte asks for translation) is
 * printed as "kbd: XX".
 */
#include "vlib.h"

#define FBUF_VENDOR	0xfb5d
#define FBUF_DEVICE	0x40fb
#define REG_FBSIZE	0
#define REG_WIDTH	4
#define REG_HEIGHT	6
#define REG_DEPTH	8
#define BLOCK		64

static const uint32_t fbuf_colors[8] = {
	0x000000, 0xff0000, 0x00ff00, 0x0000ff, 0xffff00, 0xff00ff, 0x00ffff, 0xffffff,
};

static int find_fbuf(void)
{
	for (int dev = 0; dev < 32; dev++) {
		uint32_t id = pci_r32(BDF(0, dev, 0), 0);
		if ((id & 0xffff) == FBUF_VENDOR && (id >> 16) == FBUF_DEVICE)
			return BDF(0, dev, 0);
	}
	return -1;
}

int guest_main(uint32_t param)
{
	struct pci_virtio none[1];
	printf("fbuf test\n");
	pci_scan(none, 0);	/* assigns BARs, enables memory decoding */
	int bdf = find_fbuf();
	if (bdf < 0) {
		printf("FAIL: no fbuf device on PCI bus 0\n");
		return EXIT_NODEV;
	}
	uintptr_t regs = pci_r32(bdf, 0x10) & ~0xful;
	uintptr_t fb = pci_r32(bdf, 0x14) & ~0xful;
	uint32_t fbsize = mr32(regs + REG_FBSIZE);
	printf("fbuf: regs at 0x%lx, framebuffer at 0x%lx, fbsize 0x%x, mode %ux%ux%u\n",
	    (unsigned long)regs, (unsigned long)fb, fbsize,
	    mr16(regs + REG_WIDTH), mr16(regs + REG_HEIGHT), mr16(regs + REG_DEPTH));
	if (param != 0) {
		mw16(regs + REG_WIDTH, param >> 16);
		mw16(regs + REG_HEIGHT, param & 0xffff);
		mw16(regs + REG_DEPTH, 32);
	}
	unsigned w = mr16(regs + REG_WIDTH), h = mr16(regs + REG_HEIGHT);
	if ((uint64_t)w * h * 4 > fbsize)
		fail("fbuf: mode %ux%u does not fit in 0x%x bytes", w, h, fbsize);
	volatile uint32_t *px = (volatile uint32_t *)fb;
	for (unsigned y = 0; y < h; y++)
		for (unsigned x = 0; x < w; x++)
			px[y * w + x] = fbuf_colors[(x / BLOCK + 2 * (y / BLOCK)) % 8];
	/* The pixels read back: the BAR is memory, not a device that drops writes. */
	if (px[0] != fbuf_colors[0] || px[w * 70 + 65] != fbuf_colors[3])
		fail("fbuf: framebuffer reads back 0x%x 0x%x", px[0], px[w * 70 + 65]);
	printf("fbuf: drew %ux%u at 0x%lx\n", w, h, (unsigned long)fb);
	outb(0x64, 0x60);	/* i8042 command byte: translation, system flag, no IRQs */
	outb(0x60, 0x44);
	printf("fbuf: waiting\n");
	for (unsigned long n = 0; n < 600000ul; n++) {
		while (inb(0x64) & 1)
			printf("kbd: %02x\n", inb(0x60));
		if (inb(0x3f8 + 5) & 1) {
			printf("fbuf: released by '%c'\n", inb(0x3f8));
			printf("fbuf: OK\n");
			return EXIT_OK;
		}
		for (volatile int i = 0; i < 20000; i++)
			;
	}
	fail("fbuf: nothing on COM1 for a long time");
}
