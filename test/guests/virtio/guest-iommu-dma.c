/*
 * virtio-iommu-dma.rom: a passthrough device and an emulated one behind
 * the same virtio-iommu, driven as an OS does (viommu.c: Linux's viommu).
 * The passthrough device is the test DMA engine (bhyve-vfio-user -d
 * test-dma, src/devices/vfio-user/test-dma-device.ts, the registers of
 * test/guests/dmatest) passed through with passthru,vfio-user=SOCKET,
 * iommu=true; the emulated one a virtio-blk with iommu=true.
 *
 *   - both endpoints from the ACPI VIOT; the virtio-iommu up, bypass off;
 *   - a copy before the DMA engine is attached: refused, a DOMAIN fault;
 *   - virtio-blk in domain 1 (rings and buffers at IOVA = GPA + 1 GiB, as
 *     virtio-iommu.rom): 8 KiB written and read back through the IOVAs;
 *   - the DMA engine in domain 2: its source buffer mapped read-only and
 *     its destination write-only at IOVAs that are the guest-physical
 *     addresses of two canary buffers (had anything used the IOVA as a
 *     physical address, the canaries would change); a copy started by the
 *     doorbell, ended by the MSI-X interrupt, the data checked, the
 *     canaries untouched;
 *   - refused, each with one fault event (reason, READ/WRITE, endpoint,
 *     address): a write into the read-only mapping, a read of the
 *     write-only one, a read of domain 1's
 *     IOVA, and, after the destination is UNMAPped, the same copy again:
 *     the destination and the canaries untouched;
 *   - the virtio-blk reads into an unmapped IOVA: no completion,
 *     DEVICE_NEEDS_RESET, a fault event;
 *   - DETACH of both; no fault event left over.
 * Interrupts of all three functions as the mode word says (MSI-X for the
 * DMA engine always). Prints "iommu-dma: OK", exits 0x10 (status 33).
 */
#include "irq.h"
#include "vlib.h"
#include "viommu.h"

#define BLK_T_IN	0
#define BLK_T_OUT	1
#define S_NEEDS_RESET	0x40

#define BLK_DOMAIN	1
#define DMA_DOMAIN	2
#define IOVA_OFF	0x40000000ull	/* virtio-blk: IOVA = GPA + 1 GiB */
#define IO_BYTES	8192
#define COPY_BYTES	65536

/* The test DMA engine's BAR 0 (test-dma-device.ts). */
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
#define ST_DONE		1
#define ST_ERROR	2

static uintptr_t bar0, bar4;
static int vec;
static uint32_t seen;
static uint32_t dma_ep, blk_ep;

static uint32_t r32(int off) { return mr32(bar0 + off); }
static void w32(int off, uint32_t v) { mw32(bar0 + off, v); }

/* BARs, bus mastering, MSI-X entry 1 aimed at a vector of ours. */
static void dma_engine_up(int bdf)
{
	bar0 = pci_bar_addr(bdf, 0);
	bar4 = pci_bar_addr(bdf, 4);
	pci_w16(bdf, 4, pci_r16(bdf, 4) | 0x6);
	if (r32(R_ID) != 0x31414d44)
		fail("iommu-dma: ID register %x", r32(R_ID));
	int mc = pci_find_cap(bdf, 0x11);
	if (!mc)
		fail("iommu-dma: no MSI-X capability");
	uint32_t t = pci_r32(bdf, mc + 4);
	uintptr_t table = pci_bar_addr(bdf, t & 7) + (t & ~7u);
	vec = irq_alloc_vector();
	uint64_t a = msi_address();
	mw32(table + 16 + 0, (uint32_t)a);
	mw32(table + 16 + 4, (uint32_t)(a >> 32));
	mw32(table + 16 + 8, msi_data(vec));
	mw32(table + 16 + 12, 0);
	pci_w16(bdf, mc + 2, (uint16_t)((pci_r16(bdf, mc + 2) & ~0x4000) | 0x8000));
	pci_w16(bdf, 4, pci_r16(bdf, 4) | 0x400);
	seen = irq_count[vec];
}

/* One copy: doorbell, then the MSI-X interrupt; returns the status. */
static uint32_t copy(uint64_t src, uint64_t dst, uint32_t len, const char *what)
{
	w32(R_STATUS, ST_DONE | ST_ERROR);
	w32(R_SRC, (uint32_t)src);
	w32(R_SRC + 4, (uint32_t)(src >> 32));
	w32(R_DST, (uint32_t)dst);
	w32(R_DST + 4, (uint32_t)(dst >> 32));
	w32(R_LEN, len);
	w32(R_VECTOR, 1);
	barrier();
	w32(R_DOORBELL, 1);
	if (!irq_wait_change(&irq_count[vec], seen, poll_timeout_cycles))
		fail("iommu-dma: no MSI-X interrupt after %s (status %x)", what, r32(R_STATUS));
	seen = irq_count[vec];
	return r32(R_STATUS);
}

static uint64_t fault_address(void) { return r32(R_FAULT) | (uint64_t)r32(R_FAULT + 4) << 32; }

/* A refused copy: status error at `at`, and its fault event. */
static void refused(const char *what, uint64_t src, uint64_t dst, uint64_t at, uint8_t reason, uint32_t access)
{
	uint32_t st = copy(src, dst, COPY_BYTES, what);
	if (st != ST_ERROR || fault_address() != at)
		fail("iommu-dma: %s: status %x fault %lx, expected error at %lx", what, st, fault_address(), at);
	struct viommu_fault f = viommu_next_fault();
	printf("iommu-dma: %s refused at %lx; fault event: reason %u flags %x endpoint %x address %lx\n",
	    what, at, f.reason, f.flags, f.endpoint, f.address);
	if (f.reason != reason || f.endpoint != dma_ep || (f.flags & 3) != access
	    || !(f.flags & VIOMMU_FAULT_F_ADDRESS) || f.address != at)
		fail("iommu-dma: %s: the fault event is not reason %u, access %u, endpoint %x, address %lx", what, reason, access, dma_ep, at);
}

static void check_fill(const uint8_t *p, uint32_t n, uint8_t v, const char *what)
{
	for (uint32_t i = 0; i < n; i++)
		if (p[i] != v)
			fail("iommu-dma: byte %u of %s changed to %02x", i, what, p[i]);
}

/* ---- virtio-blk in domain 1 ---- */

static struct vdev *blk;
static uint8_t *hdr;	/* header at 0, status at 16 (one page) */

static void blk_request(int type, void *buf)
{
	uint32_t *h = (uint32_t *)hdr;
	h[0] = (uint32_t)type;
	h[1] = 0;
	h[2] = 0;
	h[3] = 0;
	hdr[16] = 0xff;
	struct vbuf b[3] = { { hdr, 16, 0 }, { buf, IO_BYTES, type == BLK_T_IN }, { hdr + 16, 1, 1 } };
	if (vq_add(&blk->vq[0], b, 3) < 0)
		fail("virtio-blk: queue full");
	vq_kick(&blk->vq[0]);
}

static uint8_t blk_io(int type, void *buf)
{
	blk_request(type, buf);
	uint32_t len;
	vq_wait(blk, &blk->vq[0], &len);
	return hdr[16];
}

static void bmap(void *p, uint64_t size, uint32_t flags)
{
	viommu_map(BLK_DOMAIN, (uintptr_t)p + IOVA_OFF, (uintptr_t)p, size, flags);
}

int guest_main(uint32_t param)
{
	(void)param;
	uint32_t mode = rom_word(1);
	int irqmode = (int)(mode & 0xf);
	printf("iommu-dma test (%s)\n", irq_mode_name(irqmode));
	irq_init();
	struct pci_virtio ipci = pci_find_virtio(VIRTIO_ID_IOMMU);
	struct pci_virtio bpci = pci_find_virtio(VIRTIO_ID_BLOCK);
	int dbdf = pci_find(0x00, 0, DMA_ENGINE_ID);
	if (dbdf < 0) {
		printf("iommu-dma: no test DMA engine\n");
		exit_(EXIT_NODEV);
	}
	int iommu_bdf, other;
	viot_endpoint("test DMA engine", dbdf, &iommu_bdf, &dma_ep);
	viot_endpoint("virtio-blk", bpci.bdf, &other, &blk_ep);
	if (iommu_bdf != ipci.bdf)
		fail("viommu: VIOT names %x as the IOMMU, the virtio-iommu is %x", iommu_bdf, ipci.bdf);
	printf("iommu-dma: test DMA engine 00:%02x.%x is endpoint %x, virtio-blk 00:%02x.%x is endpoint %x\n",
	    (dbdf >> 3) & 31, dbdf & 7, dma_ep, (bpci.bdf >> 3) & 31, bpci.bdf & 7, blk_ep);

	viommu_up(ipci, irqmode);
	if (viommu->features & 1ull << VIOMMU_F_PROBE)
		viommu_probe(dma_ep);
	dma_engine_up(dbdf);

	uint8_t *src = alloc(COPY_BYTES, 4096), *dst = alloc(COPY_BYTES, 4096);
	uint8_t *csrc = alloc(COPY_BYTES, 4096), *cdst = alloc(COPY_BYTES, 4096);
	uint64_t iova_src = (uintptr_t)csrc, iova_dst = (uintptr_t)cdst;
	memset(csrc, 0xc3, COPY_BYTES);
	memset(cdst, 0xc3, COPY_BYTES);
	for (uint32_t i = 0; i < COPY_BYTES; i++)
		src[i] = (uint8_t)(i * 7 + (i >> 9) + 3);

	/* Bypass is off: before ATTACH the engine reaches nothing. */
	refused("copy before ATTACH", iova_src, iova_dst, iova_src, VIOMMU_FAULT_R_DOMAIN, VIOMMU_FAULT_F_READ);

	uint8_t s;
	if ((s = viommu_attach(BLK_DOMAIN, blk_ep)) != 0 || (s = viommu_attach(DMA_DOMAIN, dma_ep)) != 0)
		fail("viommu: ATTACH: status %u", s);
	printf("iommu-dma: virtio-blk attached to domain %u, DMA engine to domain %u\n", BLK_DOMAIN, DMA_DOMAIN);

	/* virtio-blk through IOVAs. */
	blk = alloc(sizeof(*blk), 64);
	virtio_init(blk, bpci, 1ull << VIRTIO_F_ACCESS_PLATFORM);
	if (!(blk->features & 1ull << VIRTIO_F_ACCESS_PLATFORM))
		fail("virtio-blk: no VIRTIO_F_ACCESS_PLATFORM behind the IOMMU");
	blk->dma_off = IOVA_OFF;
	virtio_setup_irqs(blk, irqmode);
	virtio_setup_queue(blk, 0, 64);
	struct vq *q = &blk->vq[0];
	uint64_t ring = (uintptr_t)q->desc, ring_len = ((uintptr_t)q->used + 6 + 8 * q->size - ring + 4095) & ~4095ull;
	bmap((void *)ring, ring_len, VIOMMU_MAP_READ | VIOMMU_MAP_WRITE);
	virtio_driver_ok(blk);
	hdr = alloc(4096, 4096);
	uint8_t *wbuf = alloc(IO_BYTES, 4096), *rbuf = alloc(IO_BYTES, 4096);
	bmap(hdr, 4096, VIOMMU_MAP_READ | VIOMMU_MAP_WRITE);
	bmap(wbuf, IO_BYTES, VIOMMU_MAP_READ);
	bmap(rbuf, IO_BYTES, VIOMMU_MAP_WRITE);
	for (int i = 0; i < IO_BYTES; i++)
		wbuf[i] = (uint8_t)(i * 13 + (i >> 8) + 1);
	if ((s = blk_io(BLK_T_OUT, wbuf)) != 0)
		fail("virtio-blk: OUT through the IOMMU: status %u", s);
	if ((s = blk_io(BLK_T_IN, rbuf)) != 0)
		fail("virtio-blk: IN through the IOMMU: status %u", s);
	if (memcmp(wbuf, rbuf, IO_BYTES))
		fail("virtio-blk: read back differs from what was written");
	printf("iommu-dma: virtio-blk I/O through IOVAs OK (crc %x)\n", crc32(0, rbuf, IO_BYTES));

	/* The engine's buffers at IOVAs that are other pages' addresses. */
	viommu_map(DMA_DOMAIN, iova_src, (uintptr_t)src, COPY_BYTES, VIOMMU_MAP_READ);
	viommu_map(DMA_DOMAIN, iova_dst, (uintptr_t)dst, COPY_BYTES, VIOMMU_MAP_WRITE);
	printf("iommu-dma: mapped IOVA %lx -> %lx (read-only), %lx -> %lx (write-only)\n",
	    iova_src, (uint64_t)(uintptr_t)src, iova_dst, (uint64_t)(uintptr_t)dst);
	uint32_t copies = r32(R_COPIES);
	uint32_t st = copy(iova_src, iova_dst, COPY_BYTES, "a copy");
	if (st != ST_DONE)
		fail("iommu-dma: copy through the IOMMU: status %x fault %lx", st, fault_address());
	if (memcmp(src, dst, COPY_BYTES))
		fail("iommu-dma: the destination differs from the source");
	check_fill(csrc, COPY_BYTES, 0xc3, "the page at the source IOVA");
	check_fill(cdst, COPY_BYTES, 0xc3, "the page at the destination IOVA");
	uint32_t crc = crc32(0, dst, COPY_BYTES);
	if (r32(R_COPIES) != copies + 1 || mr32(bar4) != copies + 1 || mr32(bar4 + 4) != COPY_BYTES || mr32(bar4 + 8) != crc)
		fail("iommu-dma: BAR 4 record %u %u %x, expected %u %u %x", mr32(bar4), mr32(bar4 + 4), mr32(bar4 + 8), copies + 1, COPY_BYTES, crc);
	printf("iommu-dma: copy of %u bytes through the IOMMU checked after the MSI-X interrupt (crc %x), pages at the IOVAs untouched\n",
	    COPY_BYTES, crc);

	/* Permissions and domains hold. */
	refused("write into the read-only mapping", iova_src, iova_src, iova_src, VIOMMU_FAULT_R_MAPPING, VIOMMU_FAULT_F_WRITE);
	refused("read of the write-only mapping", iova_dst, iova_dst, iova_dst, VIOMMU_FAULT_R_MAPPING, VIOMMU_FAULT_F_READ);
	refused("read of domain 1's IOVA", (uintptr_t)wbuf + IOVA_OFF, iova_dst, (uintptr_t)wbuf + IOVA_OFF, VIOMMU_FAULT_R_MAPPING, VIOMMU_FAULT_F_READ);
	check_fill(csrc, COPY_BYTES, 0xc3, "the page at the source IOVA");
	if (memcmp(src, dst, COPY_BYTES))
		fail("iommu-dma: a refused copy changed the destination");

	/* The destination goes away: the same copy is refused, nothing written. */
	viommu_unmap(DMA_DOMAIN, iova_dst, COPY_BYTES);
	memset(dst, 0x5a, COPY_BYTES);
	refused("copy into the unmapped destination", iova_src, iova_dst, iova_dst, VIOMMU_FAULT_R_MAPPING, VIOMMU_FAULT_F_WRITE);
	check_fill(dst, COPY_BYTES, 0x5a, "the unmapped destination");
	check_fill(cdst, COPY_BYTES, 0xc3, "the page at the destination IOVA");
	check_fill(csrc, COPY_BYTES, 0xc3, "the page at the source IOVA");
	if (r32(R_COPIES) != copies + 1)
		fail("iommu-dma: COPIES %u after refused copies, expected %u", r32(R_COPIES), copies + 1);
	printf("iommu-dma: unmapped destination and the pages at the IOVAs untouched\n");

	/* virtio-blk into an unmapped IOVA. */
	viommu_unmap(BLK_DOMAIN, (uintptr_t)rbuf + IOVA_OFF, IO_BYTES);
	memset(rbuf, 0x5a, IO_BYTES);
	blk_request(BLK_T_IN, rbuf);
	uint32_t len;
	if (vq_next(blk, q, &len, poll_timeout_cycles / 20) >= 0)
		fail("virtio-blk: a read into an unmapped IOVA completed (status %u)", hdr[16]);
	uint8_t bst = virtio_status(blk);
	if (!(bst & S_NEEDS_RESET))
		fail("virtio-blk: status %x lacks DEVICE_NEEDS_RESET", bst);
	check_fill(rbuf, IO_BYTES, 0x5a, "the unmapped virtio-blk buffer");
	struct viommu_fault f = viommu_next_fault();
	printf("iommu-dma: virtio-blk read into an unmapped IOVA: no completion, status %x; fault event: reason %u flags %x endpoint %x address %lx\n",
	    bst, f.reason, f.flags, f.endpoint, f.address);
	if (f.reason != VIOMMU_FAULT_R_MAPPING || f.endpoint != blk_ep)
		fail("iommu-dma: the virtio-blk fault is not a MAPPING fault of endpoint %x", blk_ep);

	mw8(blk->common + 0x14, 0);	/* reset the virtio-blk */
	if ((s = viommu_detach(BLK_DOMAIN, blk_ep)) != 0 || (s = viommu_detach(DMA_DOMAIN, dma_ep)) != 0)
		fail("viommu: DETACH: status %u", s);
	if (viommu_fault_pending())
		fail("iommu-dma: a fault event nobody caused");
	printf("iommu-dma: endpoints detached\n");
	printf("iommu-dma: interrupts: DMA engine msix vector %x %u, viommu %s request %u event %u\n", vec, irq_count[vec],
	    irq_mode_name(viommu->irq_mode), irq_count[viommu->vq[0].vec], irq_count[viommu->vq[1].vec]);
	printf("iommu-dma: OK\n");
	if (mode & MODE_HOLD)
		irq_hold_com1();
	return EXIT_OK;
}
