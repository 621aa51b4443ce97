/*
 * virtio-iommu.rom: drives a virtio-iommu (1af4:1057) the way Linux's
 * viommu driver does and puts a virtio-blk behind it.
 *
 *   - finds the topology in the ACPI VIOT table (in memory from the RSDP,
 *     or in fw_cfg's etc/acpi/tables when the firmware did not install
 *     the tables, as under QEMU with this ROM as its BIOS): the IOMMU's
 *     requester ID and the endpoint ID of the virtio-blk;
 *   - negotiates MAP_UNMAP (required), INPUT_RANGE, DOMAIN_RANGE, PROBE,
 *     BYPASS_CONFIG, turns bypass off, gives the event queue 8 buffers;
 *   - PROBEs the endpoint (reserved regions), ATTACHes it to domain 1;
 *   - brings the virtio-blk up with VIRTIO_F_ACCESS_PLATFORM and every
 *     address it hands the device an IOVA = guest physical + 1 GiB
 *     (nothing is guest RAM there): MAPs the ring pages read/write, the
 *     request header page read/write, the write buffer read-only and the
 *     read buffer write-only;
 *   - writes 8 KiB at sector 0 and reads it back through the IOVAs;
 *   - UNMAPs the read buffer and reads into it again: the request must
 *     never complete, the buffer stay untouched, the virtio-blk enter
 *     DEVICE_NEEDS_RESET and a fault arrive on the event queue (reason
 *     MAPPING, a write, the endpoint, the buffer's IOVA);
 *   - DETACHes the endpoint.
 * Interrupt mode (ROM word 1) as the other virtio ROMs: every completion
 * of both devices is taken by interrupt (QEMU's virtio-iommu-pci has no
 * MSI-X: INTx there); with MODE_HOLD it waits for a byte on COM1 before
 * exiting. Prints "viommu: OK", exits 0x10.
 */
#include "irq.h"
#include "vlib.h"
#include "viommu.h"

#define BLK_T_IN	0
#define BLK_T_OUT	1
#define S_NEEDS_RESET	0x40

#define IOVA_OFF	0x40000000ull	/* IOVA = GPA + 1 GiB */
#define DOMAIN		1
#define IO_BYTES	8192
#define MAP_READ	VIOMMU_MAP_READ
#define MAP_WRITE	VIOMMU_MAP_WRITE

static struct vdev *blk;

static void map(uint64_t iova, uint64_t gpa, uint64_t size, uint32_t flags) { viommu_map(DOMAIN, iova, gpa, size, flags); }
static void unmap(uint64_t iova, uint64_t size) { viommu_unmap(DOMAIN, iova, size); }

/* ---- virtio-blk behind it ---- */

static uint8_t *hdr;			/* header at 0, status at 16 (one page) */

static uint64_t page_round(uint64_t n) { return (n + 4095) & ~4095ull; }

static int blk_request(int type, void *buf, int nowait)
{
	uint32_t *h = (uint32_t *)hdr;
	h[0] = (uint32_t)type;
	h[1] = 0;
	h[2] = 0;	/* sector 0 */
	h[3] = 0;
	hdr[16] = 0xff;
	struct vbuf b[3] = { { hdr, 16, 0 }, { buf, IO_BYTES, type == BLK_T_IN }, { hdr + 16, 1, 1 } };
	if (vq_add(&blk->vq[0], b, 3) < 0)
		fail("virtio-blk: queue full");
	vq_kick(&blk->vq[0]);
	if (nowait)
		return 0;
	uint32_t len;
	vq_wait(blk, &blk->vq[0], &len);
	return hdr[16];
}

static int bench(uint32_t k, struct pci_virtio ipci, struct pci_virtio bpci);

int guest_main(uint32_t param)
{
	uint32_t mode = rom_word(1);
	int irqmode = (int)(mode & 0xf);
	printf("virtio-iommu test (%s)\n", irq_mode_name(irqmode));
	if (irqmode != MODE_POLL || (mode & MODE_HOLD))
		irq_init();
	struct pci_virtio ipci = pci_find_virtio(VIRTIO_ID_IOMMU);
	struct pci_virtio bpci = pci_find_virtio(VIRTIO_ID_BLOCK);
	if (param)
		return bench(param, ipci, bpci);
	int iommu_bdf;
	uint32_t ep = 0;
	viot_endpoint("virtio-blk", bpci.bdf, &iommu_bdf, &ep);
	if (iommu_bdf != ipci.bdf)
		fail("viommu: VIOT names %x as the IOMMU, the virtio-iommu is %x", iommu_bdf, ipci.bdf);
	printf("viommu: virtio-blk %02x:%02x.%x is endpoint %x\n", bpci.bdf >> 8, (bpci.bdf >> 3) & 31, bpci.bdf & 7, ep);

	viommu_up(ipci, irqmode);
	struct vdev *io = viommu;
	int iomode = io->irq_mode;
	if (io->features & 1ull << VIOMMU_F_PROBE)
		viommu_probe(ep);
	printf("viommu: ATTACH of endpoint 0x7fff0000: status %u\n", viommu_attach(DOMAIN, 0x7fff0000));
	uint8_t s = viommu_attach(DOMAIN, ep);
	if (s)
		fail("viommu: ATTACH endpoint %x to domain %u: status %u", ep, DOMAIN, s);
	printf("viommu: endpoint %x attached to domain %u\n", ep, DOMAIN);

	blk = alloc(sizeof(*blk), 64);
	virtio_init(blk, bpci, 1ull << VIRTIO_F_ACCESS_PLATFORM);
	if (!(blk->features & 1ull << VIRTIO_F_ACCESS_PLATFORM))
		fail("virtio-blk: no VIRTIO_F_ACCESS_PLATFORM behind the IOMMU");
	blk->dma_off = IOVA_OFF;
	virtio_setup_irqs(blk, irqmode);
	virtio_setup_queue(blk, 0, 64);
	struct vq *q = &blk->vq[0];
	uint64_t ring = (uintptr_t)q->desc, ring_len = page_round((uintptr_t)q->used + 6 + 8 * q->size - ring);
	map(ring + IOVA_OFF, ring, ring_len, MAP_READ | MAP_WRITE);
	virtio_driver_ok(blk);
	hdr = alloc(4096, 4096);
	uint8_t *wbuf = alloc(IO_BYTES, 4096), *rbuf = alloc(IO_BYTES, 4096);
	map((uintptr_t)hdr + IOVA_OFF, (uintptr_t)hdr, 4096, MAP_READ | MAP_WRITE);
	map((uintptr_t)wbuf + IOVA_OFF, (uintptr_t)wbuf, IO_BYTES, MAP_READ);
	map((uintptr_t)rbuf + IOVA_OFF, (uintptr_t)rbuf, IO_BYTES, MAP_WRITE);
	printf("viommu: mapped rings %lx+%lx, buffers at IOVA %lx (read-only), %lx (write-only)\n",
	    ring + IOVA_OFF, ring_len, (uintptr_t)wbuf + IOVA_OFF, (uintptr_t)rbuf + IOVA_OFF);

	for (int i = 0; i < IO_BYTES; i++)
		wbuf[i] = (uint8_t)(i * 13 + (i >> 8) + 1);
	if ((s = (uint8_t)blk_request(BLK_T_OUT, wbuf, 0)) != 0)
		fail("virtio-blk: OUT through the IOMMU: status %u", s);
	if ((s = (uint8_t)blk_request(BLK_T_IN, rbuf, 0)) != 0)
		fail("virtio-blk: IN through the IOMMU: status %u", s);
	if (memcmp(wbuf, rbuf, IO_BYTES))
		fail("virtio-blk: read back differs from what was written");
	printf("viommu: virtio-blk I/O through IOVAs OK (crc %x)\n", crc32(0, rbuf, IO_BYTES));

	/* The read buffer goes away; the device must not write it. */
	unmap((uintptr_t)rbuf + IOVA_OFF, IO_BYTES);
	memset(rbuf, 0x5a, IO_BYTES);
	blk_request(BLK_T_IN, rbuf, 1);
	uint32_t len;
	int got = vq_next(blk, q, &len, poll_timeout_cycles / 20);
	if (got >= 0)
		fail("virtio-blk: a read into an unmapped IOVA completed (status %u)", hdr[16]);
	uint8_t st = virtio_status(blk);
	printf("viommu: read into the unmapped buffer: no completion, device status %x\n", st);
	if (!(st & S_NEEDS_RESET))
		fail("virtio-blk: status %x lacks DEVICE_NEEDS_RESET", st);
	for (int i = 0; i < IO_BYTES; i++)
		if (rbuf[i] != 0x5a)
			fail("viommu: byte %d of the unmapped buffer changed to %02x", i, rbuf[i]);
	if (hdr[16] != 0xff)
		fail("viommu: status byte written (%02x)", hdr[16]);
	printf("viommu: unmapped buffer untouched\n");

	struct viommu_fault f = viommu_next_fault();
	uint32_t flags = f.flags, fep = f.endpoint;
	uint64_t addr = f.address;
	printf("viommu: fault event: reason %u flags %x endpoint %x address %lx (len %u)\n", f.reason, flags, fep, addr, f.len);
	/* QEMU 7.2 leaves the READ/WRITE flags out; when given, it is a write. */
	if (f.reason != 2 || fep != ep || (flags & 3 && (flags & 3) != 2))
		fail("viommu: the fault is not a write MAPPING fault of endpoint %x", ep);
	if ((flags & 0x100) && (addr < (uintptr_t)rbuf + IOVA_OFF || addr >= (uintptr_t)rbuf + IOVA_OFF + IO_BYTES))
		fail("viommu: fault address %lx is not in the unmapped buffer", addr);

	mw8(blk->common + 0x14, 0);	/* reset the virtio-blk */
	if ((s = viommu_detach(DOMAIN, ep)) != 0)
		fail("viommu: DETACH: status %u", s);
	printf("viommu: endpoint detached\n");
	if (irqmode != MODE_POLL)
		printf("viommu: interrupts: %s request vector %x %u, event vector %x %u\n", irq_mode_name(iomode),
		    io->vq[0].vec, irq_count[io->vq[0].vec], io->vq[1].vec, irq_count[io->vq[1].vec]);
	printf("viommu: OK\n");
	if (mode & MODE_HOLD)
		irq_hold_com1();
	return EXIT_OK;
}

/* ---- bench mode (bench/virtio-iommu.mjs): the cost of translated DMA ---- */

#define BENCH_DEPTH	32

static struct bslot { uint32_t type, reserved; uint64_t sector; } *bhdr;
static uint8_t *bstatus, *bbufs;
static uint8_t bhead_slot[256];

static void bsubmit(int s, uint64_t sector, void *buf)
{
	bhdr[s].type = BLK_T_IN;
	bhdr[s].reserved = 0;
	bhdr[s].sector = sector;
	bstatus[s] = 0xff;
	struct vbuf b[3] = { { &bhdr[s], 16, 0 }, { buf, 4096, 1 }, { &bstatus[s], 1, 1 } };
	int head = vq_add(&blk->vq[0], b, 3);
	if (head < 0)
		fail("virtio-blk: queue full");
	bhead_slot[head] = (uint8_t)s;
}

static int bcomplete(void)
{
	uint32_t len;
	int s = bhead_slot[vq_wait(blk, &blk->vq[0], &len)];
	if (bstatus[s] != 0)
		fail("virtio-blk: read status %u", bstatus[s]);
	return s;
}

/* n random 4 KiB reads within the first 4 MiB, `depth` in flight; with
 * `strict`, each buffer is mapped before its request and unmapped after
 * (the DMA API's strict mode: two IOMMU requests per I/O). */
static uint64_t brand(uint32_t n, int depth, int strict)
{
	uint8_t freelist[BENCH_DEPTH];
	int nfree = 0;
	for (int s = depth - 1; s >= 0; s--)
		freelist[nfree++] = (uint8_t)s;
	uint32_t issued = 0, done = 0;
	uint64_t t0 = rdtsc();
	while (done < n) {
		int queued = 0;
		while (nfree && issued < n) {
			int s = freelist[--nfree];
			uint8_t *buf = bbufs + (uint64_t)s * 4096;
			if (strict)
				map((uintptr_t)buf + IOVA_OFF, (uintptr_t)buf, 4096, MAP_WRITE);
			bsubmit(s, (xorshift() % 1024) * 8, buf);
			issued++;
			queued++;
		}
		if (queued)
			vq_kick(&blk->vq[0]);
		int s = bcomplete();
		if (strict)
			unmap((uintptr_t)(bbufs + (uint64_t)s * 4096) + IOVA_OFF, 4096);
		freelist[nfree++] = (uint8_t)s;
		done++;
	}
	return rdtsc() - t0;
}

static int bench(uint32_t k, struct pci_virtio ipci, struct pci_virtio bpci)
{
	uint64_t hz = tsc_hz_from_rtc();
	printf("bench: tsc_hz %lu\n", hz);
	blk = alloc(sizeof(*blk), 64);
	virtio_init(blk, bpci, 1ull << VIRTIO_F_ACCESS_PLATFORM);
	int translated = !!(blk->features & 1ull << VIRTIO_F_ACCESS_PLATFORM);
	uint32_t ep = 0;
	if (translated) {
		int iommu_bdf;
		viot_endpoint("virtio-blk", bpci.bdf, &iommu_bdf, &ep);
		viommu_up(ipci, MODE_POLL);
		if (viommu_attach(DOMAIN, ep))
			fail("viommu: ATTACH failed");
		blk->dma_off = IOVA_OFF;
	}
	virtio_setup_queue(blk, 0, 128);
	struct vq *q = &blk->vq[0];
	bhdr = alloc(4096, 4096);
	bstatus = (uint8_t *)bhdr + 2048;
	bbufs = alloc(BENCH_DEPTH * 4096, 4096);
	if (translated) {
		uint64_t ring = (uintptr_t)q->desc, ring_len = page_round((uintptr_t)q->used + 6 + 8 * q->size - ring);
		map(ring + IOVA_OFF, ring, ring_len, MAP_READ | MAP_WRITE);
		map((uintptr_t)bhdr + IOVA_OFF, (uintptr_t)bhdr, 4096, MAP_READ | MAP_WRITE);
	}
	virtio_driver_ok(blk);
	printf("bench: dma %s\n", translated ? "translated" : "direct");
	if (translated) {
		/* The buffers mapped once, for the whole run (static mappings). */
		map((uintptr_t)bbufs + IOVA_OFF, (uintptr_t)bbufs, BENCH_DEPTH * 4096, MAP_WRITE);
	}
	uint32_t n = k * 1000;
	printf("bench: rand-read %u x 4096 %lu cycles depth %d\n", n, brand(n, BENCH_DEPTH, 0), BENCH_DEPTH);
	printf("bench: rand-read %u x 4096 %lu cycles depth 1\n", n / 4, brand(n / 4, 1, 0));
	if (translated) {
		unmap((uintptr_t)bbufs + IOVA_OFF, BENCH_DEPTH * 4096);
		printf("bench: strict-read %u x 4096 %lu cycles depth 1\n", n / 4, brand(n / 4, 1, 1));
		/* The IOMMU's own request round trip: MAP + UNMAP pairs alone. */
		uint64_t t0 = rdtsc();
		for (uint32_t i = 0; i < n / 4; i++) {
			map((uintptr_t)bbufs + IOVA_OFF, (uintptr_t)bbufs, 4096, MAP_WRITE);
			unmap((uintptr_t)bbufs + IOVA_OFF, 4096);
		}
		printf("bench: map-unmap %u pairs %lu cycles\n", n / 4, rdtsc() - t0);
	}
	printf("bench: done\n");
	return EXIT_OK;
}
