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

#define F_INPUT_RANGE	0
#define F_DOMAIN_RANGE	1
#define F_MAP_UNMAP	2
#define F_PROBE		4
#define F_BYPASS_CONFIG	6

#define T_ATTACH	1
#define T_DETACH	2
#define T_MAP		3
#define T_UNMAP		4
#define T_PROBE		5
#define MAP_READ	1
#define MAP_WRITE	2

#define BLK_T_IN	0
#define BLK_T_OUT	1
#define S_NEEDS_RESET	0x40

#define IOVA_OFF	0x40000000ull	/* IOVA = GPA + 1 GiB */
#define DOMAIN		1
#define IO_BYTES	8192

static struct vdev *io, *blk;
static uint32_t probe_size = 512;

/* ---- ACPI: the VIOT ---- */

static int checksum_ok(const uint8_t *p, uint32_t n)
{
	uint8_t s = 0;
	for (uint32_t i = 0; i < n; i++)
		s += p[i];
	return s == 0;
}

static const uint8_t *viot_in_memory(void)
{
	for (uintptr_t a = 0xe0000; a < 0x100000; a += 16) {
		const uint8_t *p = (const uint8_t *)a;
		if (memcmp(p, "RSD PTR ", 8) || !checksum_ok(p, 20))
			continue;
		const uint8_t *rsdt = (const uint8_t *)(uintptr_t)*(const uint32_t *)(p + 16);
		uint32_t len = *(const uint32_t *)(rsdt + 4);
		for (uint32_t o = 36; o + 4 <= len; o += 4) {
			const uint8_t *t = (const uint8_t *)(uintptr_t)*(const uint32_t *)(rsdt + o);
			if (!memcmp(t, "VIOT", 4))
				return t;
		}
		return 0;
	}
	return 0;
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }

/* QEMU's fw_cfg (I/O ports 0x510/0x511): etc/acpi/tables, unpatched. */
static const uint8_t *viot_in_fwcfg(void)
{
	outw(0x510, 0);
	char sig[4];
	for (int i = 0; i < 4; i++)
		sig[i] = (char)inb(0x511);
	if (memcmp(sig, "QEMU", 4))
		return 0;
	outw(0x510, 0x19);
	uint8_t b[64];
	for (int i = 0; i < 4; i++)
		b[i] = inb(0x511);
	uint32_t count = be32(b);
	for (uint32_t f = 0; f < count && f < 256; f++) {
		for (int i = 0; i < 64; i++)
			b[i] = inb(0x511);
		if (strlen((const char *)b + 8) != 15 || memcmp(b + 8, "etc/acpi/tables", 15))
			continue;
		uint32_t size = be32(b);
		uint16_t sel = (uint16_t)(b[4] << 8 | b[5]);
		uint8_t *blob = alloc(size, 16);
		outw(0x510, sel);
		for (uint32_t i = 0; i < size; i++)
			blob[i] = inb(0x511);
		for (uint32_t o = 0; o + 36 <= size; o++) {
			if (memcmp(blob + o, "VIOT", 4))
				continue;
			uint32_t len = *(const uint32_t *)(blob + o + 4);
			/* QEMU's loader fills checksums in: the blob's is 0 */
			if (len >= 48 && o + len <= size)
				return blob + o;
		}
		return 0;
	}
	return 0;
}

/* The IOMMU's requester ID and the endpoint ID of `bdf`, from the VIOT. */
static void viot(int bdf, int *iommu_bdf, uint32_t *endpoint)
{
	const char *where = "memory";
	const uint8_t *t = viot_in_memory();
	if (!t) {
		t = viot_in_fwcfg();
		where = "fw_cfg";
	}
	if (!t)
		fail("viommu: no ACPI VIOT table (in memory or fw_cfg)");
	uint32_t len = *(const uint32_t *)(t + 4);
	uint16_t count = *(const uint16_t *)(t + 36), off = *(const uint16_t *)(t + 38);
	printf("viommu: VIOT in %s: %u bytes, %u nodes\n", where, len, count);
	*iommu_bdf = -1;
	int found = 0;
	for (unsigned i = 0; i < count && (uint32_t)off + 4 <= len; i++) {
		const uint8_t *n = t + off;
		uint16_t nlen = *(const uint16_t *)(n + 2);
		if (nlen < 4 || (uint32_t)off + nlen > len)
			fail("viommu: VIOT node %u of length %u", i, nlen);
		if (n[0] == 3) {
			*iommu_bdf = *(const uint16_t *)(n + 6);
			printf("viommu: VIOT virtio-pci IOMMU at %02x:%02x.%x (node %u)\n",
			    *iommu_bdf >> 8, (*iommu_bdf >> 3) & 31, *iommu_bdf & 7, off);
		} else if (n[0] == 1) {
			uint32_t ep0 = *(const uint32_t *)(n + 4);
			uint16_t first = *(const uint16_t *)(n + 12), last = *(const uint16_t *)(n + 14);
			uint16_t out = *(const uint16_t *)(n + 16);
			printf("viommu: VIOT PCI range %04x-%04x endpoint %x -> node %u\n", first, last, ep0, out);
			if (bdf >= first && bdf <= last) {
				*endpoint = ep0 + (uint32_t)(bdf - first);
				found = 1;
			}
		}
		off = (uint16_t)(off + nlen);
	}
	if (*iommu_bdf < 0)
		fail("viommu: VIOT has no virtio-pci IOMMU node");
	if (!found)
		fail("viommu: virtio-blk %02x:%02x.%x is not behind the IOMMU", bdf >> 8, (bdf >> 3) & 31, bdf & 7);
}

/* ---- requests ---- */

static uint8_t *req, *tail;

/* Sends `n` readable bytes of req and `w` writable bytes at tail (the
 * status last); returns the status. */
static uint8_t send(uint32_t n, uint32_t w)
{
	memset(tail, 0xee, w);
	struct vbuf b[2] = { { req, n, 0 }, { tail, w, 1 } };
	if (vq_add(&io->vq[0], b, 2) < 0)
		fail("viommu: request queue full");
	vq_kick(&io->vq[0]);
	uint32_t len;
	vq_wait(io, &io->vq[0], &len);
	if (len != w)
		fail("viommu: request type %u: used length %u, expected %u", req[0], len, w);
	return tail[w - 4];
}

static void put32(uint32_t off, uint32_t v) { memcpy(req + off, &v, 4); }
static void put64(uint32_t off, uint64_t v) { memcpy(req + off, &v, 8); }

static uint8_t attach(uint32_t domain, uint32_t ep)
{
	memset(req, 0, 64);
	req[0] = T_ATTACH;
	put32(4, domain);
	put32(8, ep);
	return send(20, 4);
}

static uint8_t detach(uint32_t domain, uint32_t ep)
{
	memset(req, 0, 64);
	req[0] = T_DETACH;
	put32(4, domain);
	put32(8, ep);
	return send(20, 4);
}

static void map(uint64_t iova, uint64_t gpa, uint64_t size, uint32_t flags)
{
	memset(req, 0, 64);
	req[0] = T_MAP;
	put32(4, DOMAIN);
	put64(8, iova);
	put64(16, iova + size - 1);
	put64(24, gpa);
	put32(32, flags);
	uint8_t s = send(36, 4);
	if (s)
		fail("viommu: MAP %lx-%lx -> %lx flags %u: status %u", iova, iova + size - 1, gpa, flags, s);
}

static void unmap(uint64_t iova, uint64_t size)
{
	memset(req, 0, 64);
	req[0] = T_UNMAP;
	put32(4, DOMAIN);
	put64(8, iova);
	put64(16, iova + size - 1);
	uint8_t s = send(28, 4);
	if (s)
		fail("viommu: UNMAP %lx-%lx: status %u", iova, iova + size - 1, s);
}

static void probe(uint32_t ep)
{
	memset(req, 0, 80);
	req[0] = T_PROBE;
	put32(4, ep);
	uint8_t s = send(72, probe_size + 4);
	if (s)
		fail("viommu: PROBE endpoint %x: status %u", ep, s);
	int msi = 0;
	for (uint32_t o = 0; o + 4 <= probe_size;) {
		uint16_t type = *(uint16_t *)(tail + o) & 0xfff, len = *(uint16_t *)(tail + o + 2);
		if (type == 0)
			break;
		if (o + 4 + len > probe_size)
			fail("viommu: PROBE property at %u overruns (length %u)", o, len);
		if (type == 1 && len >= 20) {
			uint8_t sub = tail[o + 4];
			uint64_t start, end;
			memcpy(&start, tail + o + 8, 8);
			memcpy(&end, tail + o + 16, 8);
			printf("viommu: probe: resv_mem subtype %u %lx-%lx\n", sub, start, end);
			if (sub == 1 && start == 0xfee00000 && end == 0xfeefffff)
				msi = 1;
		} else {
			printf("viommu: probe: property type %u length %u\n", type, len);
		}
		o += 4 + len;
	}
	printf("viommu: probe: MSI window %s\n", msi ? "reserved" : "not reported");
}

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

/* Brings the virtio-iommu up (as Linux's viommu_probe): features, queues,
 * config, bypass off, 8 event buffers; returns the event buffers. */
static uint8_t *iommu_up(struct pci_virtio ipci, int irqmode)
{
	uint8_t *evbuf;
	io = alloc(sizeof(*io), 64);
	virtio_init(io, ipci, 1ull << F_INPUT_RANGE | 1ull << F_DOMAIN_RANGE | 1ull << F_MAP_UNMAP
	    | 1ull << F_PROBE | 1ull << F_BYPASS_CONFIG);
	if (!(io->features & 1ull << F_MAP_UNMAP))
		fail("viommu: no VIRTIO_IOMMU_F_MAP_UNMAP");
	/* QEMU's virtio-iommu-pci has no MSI-X: INTx there. */
	int iomode = irqmode == MODE_MSIX && !pci_find_cap(ipci.bdf, 0x11) ? MODE_INTX : irqmode;
	if (iomode != irqmode)
		printf("viommu: no MSI-X capability, interrupts by %s\n", irq_mode_name(iomode));
	virtio_setup_irqs(io, iomode);
	virtio_setup_queue(io, 0, 64);
	virtio_setup_queue(io, 1, 16);
	virtio_driver_ok(io);
	uint64_t psm = vcfg64(io, 0), in0 = vcfg64(io, 8), in1 = vcfg64(io, 16);
	uint32_t d0 = vcfg32(io, 24), d1 = vcfg32(io, 28);
	if (io->features & 1ull << F_PROBE)
		probe_size = vcfg32(io, 32);
	printf("viommu: page_size_mask %lx input_range %lx-%lx domain_range %u-%u probe_size %u bypass %u\n",
	    psm, in0, in1, d0, d1, probe_size, vcfg8(io, 36));
	if (!(psm & 0x1000) || (psm & 0xfff))
		fail("viommu: page_size_mask %lx does not allow 4 KiB pages", psm);
	if (probe_size < 64 || probe_size > 4096)
		fail("viommu: probe_size %u", probe_size);
	if (io->features & 1ull << F_BYPASS_CONFIG) {
		mw8(io->devcfg + 36, 0);
		if (vcfg8(io, 36) != 0)
			fail("viommu: bypass stays %u", vcfg8(io, 36));
	}
	req = alloc(128, 64);
	tail = alloc(4096 + 8, 64);
	evbuf = alloc(8 * 64, 64);
	for (int i = 0; i < 8; i++) {
		struct vbuf b = { evbuf + 64 * i, 24, 1 };
		vq_add(&io->vq[1], &b, 1);
	}
	vq_kick(&io->vq[1]);

	return evbuf;
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
	viot(bpci.bdf, &iommu_bdf, &ep);
	if (iommu_bdf != ipci.bdf)
		fail("viommu: VIOT names %x as the IOMMU, the virtio-iommu is %x", iommu_bdf, ipci.bdf);
	printf("viommu: virtio-blk %02x:%02x.%x is endpoint %x\n", bpci.bdf >> 8, (bpci.bdf >> 3) & 31, bpci.bdf & 7, ep);

	uint8_t *evbuf = iommu_up(ipci, irqmode);
	int iomode = io->irq_mode;
	if (io->features & 1ull << F_PROBE)
		probe(ep);
	printf("viommu: ATTACH of endpoint 0x7fff0000: status %u\n", attach(DOMAIN, 0x7fff0000));
	uint8_t s = attach(DOMAIN, ep);
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

	int e = vq_wait(io, &io->vq[1], &len);
	const uint8_t *f = evbuf + 64 * e;
	uint32_t flags, fep;
	uint64_t addr;
	memcpy(&flags, f + 4, 4);
	memcpy(&fep, f + 8, 4);
	memcpy(&addr, f + 16, 8);
	printf("viommu: fault event: reason %u flags %x endpoint %x address %lx (len %u)\n", f[0], flags, fep, addr, len);
	/* QEMU 7.2 leaves the READ/WRITE flags out; when given, it is a write. */
	if (f[0] != 2 || fep != ep || (flags & 3 && (flags & 3) != 2))
		fail("viommu: the fault is not a write MAPPING fault of endpoint %x", ep);
	if ((flags & 0x100) && (addr < (uintptr_t)rbuf + IOVA_OFF || addr >= (uintptr_t)rbuf + IOVA_OFF + IO_BYTES))
		fail("viommu: fault address %lx is not in the unmapped buffer", addr);

	mw8(blk->common + 0x14, 0);	/* reset the virtio-blk */
	if ((s = detach(DOMAIN, ep)) != 0)
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
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t xorshift(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

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
		viot(bpci.bdf, &iommu_bdf, &ep);
		iommu_up(ipci, MODE_POLL);
		if (attach(DOMAIN, ep))
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
