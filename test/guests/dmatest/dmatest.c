/*
 * dmatest.rom: drive the vfio-user test DMA engine (bhyve-vfio-user -d
 * test-dma, src/devices/vfio-user/test-dma-device.ts) passed through by
 * bhyve's passthru, in ring 3 on the virtio runtime (vlib.c, irq.c):
 *   - find 1b36:00f0, memory decode and bus mastering on, MSI-X entry 1
 *     aimed at a vector of ours (entry 0 left masked), MSI-X on, INTx off;
 *   - 16 copies of growing sizes (4 KiB .. 1 MiB) between two buffers,
 *     each started by the doorbell and ended by the MSI-X interrupt (the
 *     data is looked at only after it): destination equals source, the
 *     status register says done, the completion record the device wrote
 *     in its mmap-able BAR 4 (read straight from the mapped page) has the
 *     copy count, length and the CRC-32 of the data;
 *   - a copy with entry 1 masked: no interrupt, the PBA bit set; unmasking
 *     delivers it;
 *   - a copy to an address outside guest RAM: refused (status error, the
 *     fault address), no write anywhere, the interrupt still comes.
 * Prints "dmatest: ..." lines; failures print "FAIL: ..." and exit 1
 * (status 3); no device: status 5. MODE_HOLD waits for COM1 at the end.
 */
#include "vlib.h"
#include "irq.h"

#define DMA_ENGINE_ID	0x00f01b36u	/* vendor 1b36 (QEMU), device 00f0: the test DMA engine */
#define R_ID		0x00
#define R_STATUS	0x04
#define R_SRC		0x08
#define R_DST		0x10
#define R_LEN		0x18
#define R_DOORBELL	0x1c
#define R_COPIES	0x20
#define R_VECTOR	0x24
#define R_FAULT		0x28

static uintptr_t bar0, table, pba, bar4;
static int vec;
static uint32_t seen;

static uint32_t r32(int off) { return mr32(bar0 + off); }
static void w32(int off, uint32_t v) { mw32(bar0 + off, v); }

static void start(uint64_t src, uint64_t dst, uint32_t len)
{
	w32(R_STATUS, 3);
	w32(R_SRC, (uint32_t)src);
	w32(R_SRC + 4, (uint32_t)(src >> 32));
	w32(R_DST, (uint32_t)dst);
	w32(R_DST + 4, (uint32_t)(dst >> 32));
	w32(R_LEN, len);
	w32(R_VECTOR, 1);
	barrier();
	w32(R_DOORBELL, 1);
}

static void wait_irq(const char *what)
{
	if (!irq_wait_change(&irq_count[vec], seen, poll_timeout_cycles))
		fail("dmatest: no MSI-X interrupt after %s (status %x)", what, r32(R_STATUS));
	seen = irq_count[vec];
}

static void fill(uint8_t *p, uint32_t n, uint32_t seed)
{
	uint32_t x = seed * 2654435761u + 1;
	for (uint32_t i = 0; i < n; i++) {
		x = x * 1103515245u + 12345u;
		p[i] = (uint8_t)(x >> 16);
	}
}

int guest_main(uint32_t param)
{
	(void)param;
	uint32_t mode = rom_word(1);
	printf("dmatest (%s)\n", irq_mode_name((int)(mode & 0xf)));
	irq_init();
	struct pci_virtio none[1];
	pci_scan(none, 0);
	int bdf = pci_find(0x00, 0, DMA_ENGINE_ID);
	if (bdf < 0) {
		printf("dmatest: no test DMA device\n");
		exit_(EXIT_NODEV);
	}
	bar0 = pci_bar_addr(bdf, 0);
	bar4 = pci_bar_addr(bdf, 4);
	pci_w16(bdf, 4, pci_r16(bdf, 4) | 0x6);
	if (r32(R_ID) != 0x31414d44)
		fail("dmatest: ID register %x", r32(R_ID));
	int mc = pci_find_cap(bdf, 0x11);
	if (!mc)
		fail("dmatest: no MSI-X capability");
	uint32_t t = pci_r32(bdf, mc + 4), p = pci_r32(bdf, mc + 8);
	table = pci_bar_addr(bdf, t & 7) + (t & ~7u);
	pba = pci_bar_addr(bdf, p & 7) + (p & ~7u);
	vec = irq_alloc_vector();
	uint64_t a = msi_address();
	mw32(table + 16 + 0, (uint32_t)a);
	mw32(table + 16 + 4, (uint32_t)(a >> 32));
	mw32(table + 16 + 8, msi_data(vec));
	mw32(table + 16 + 12, 0);
	pci_w16(bdf, mc + 2, (uint16_t)((pci_r16(bdf, mc + 2) & ~0x4000) | 0x8000));
	pci_w16(bdf, 4, pci_r16(bdf, 4) | 0x400);
	printf("dmatest: %04x:%04x at 00:%02x.%u, BAR0 %lx, BAR4 %lx, MSI-X %u entries, vector %x\n", pci_r16(bdf, 0), pci_r16(bdf, 2),
	    bdf >> 3, bdf & 7, (uint64_t)bar0, (uint64_t)bar4, (pci_r16(bdf, mc + 2) & 0x7ff) + 1, vec);
	seen = irq_count[vec];

	const uint32_t max = 1024 * 1024;
	uint8_t *src = alloc(max, 4096), *dst = alloc(max, 4096);
	uint32_t len = 4096, copies = 0, sum = 0;
	for (int i = 0; i < 16; i++, len = len * 3 / 2 > max ? max : len * 3 / 2) {
		fill(src, len, (uint32_t)i);
		memset(dst, 0, len + 64 <= max ? len + 64 : len);
		start((uintptr_t)src, (uintptr_t)dst, len);
		wait_irq("a copy");
		if (r32(R_STATUS) != 1)
			fail("dmatest: copy %d of %u bytes: status %x", i, len, r32(R_STATUS));
		if (memcmp(src, dst, len))
			fail("dmatest: copy %d of %u bytes: destination differs", i, len);
		if (len + 64 <= max)
			for (int k = 0; k < 64; k++)
				if (dst[len + k])
					fail("dmatest: copy %d wrote past its length", i);
		copies++;
		uint32_t crc = crc32(0, src, len);
		if (mr32(bar4) != copies || mr32(bar4 + 4) != len || mr32(bar4 + 8) != crc)
			fail("dmatest: BAR 4 record %u %u %x, expected %u %u %x", mr32(bar4), mr32(bar4 + 4), mr32(bar4 + 8), copies, len, crc);
		sum = crc32(sum, dst, len);
	}
	printf("dmatest: %u copies checked, interrupts %u, checksum %08x\n", copies, irq_count[vec], sum);

	/* Masked: held in the PBA, delivered on unmask. */
	mw32(table + 16 + 12, 1);
	start((uintptr_t)src, (uintptr_t)dst, 64);
	uint64_t t0 = rdtsc();
	while (!(r32(R_STATUS) & 1))
		if (rdtsc() - t0 > poll_timeout_cycles)
			fail("dmatest: masked copy never finished");
	irq_sleep(20000000);
	if (irq_count[vec] != seen)
		fail("dmatest: interrupt while the vector was masked");
	if (!(mr32(pba) & 2))
		fail("dmatest: PBA %x: vector 1 not pending while masked", mr32(pba));
	mw32(table + 16 + 12, 0);
	wait_irq("unmasking a pending vector");
	if (mr32(pba) & 2)
		fail("dmatest: PBA %x still pending after delivery", mr32(pba));
	printf("dmatest: masked vector held pending, delivered on unmask\n");

	/* Outside guest RAM: refused, nothing written. */
	uint64_t bad = 0xf000000000ull;
	memset(dst, 0xa5, 4096);
	start((uintptr_t)src, bad, 4096);
	wait_irq("a refused copy");
	uint64_t fault = r32(R_FAULT) | (uint64_t)r32(R_FAULT + 4) << 32;
	if (r32(R_STATUS) != 2 || fault != bad)
		fail("dmatest: copy outside RAM: status %x fault %lx", r32(R_STATUS), fault);
	if (dst[0] != 0xa5 || r32(R_COPIES) != copies + 1)
		fail("dmatest: a refused copy changed something");
	printf("dmatest: copy outside guest memory refused at %lx\n", fault);
	printf("dmatest: done\n");
	if (mode & MODE_HOLD)
		irq_hold_com1();
	return EXIT_OK;
}
