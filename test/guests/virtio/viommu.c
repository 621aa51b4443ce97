/* viommu.c - see viommu.h. */
#include "viommu.h"
#include "irq.h"

#define T_ATTACH	1
#define T_DETACH	2
#define T_MAP		3
#define T_UNMAP		4
#define T_PROBE		5

#define EVENTS		8
#define EVENT_SIZE	64

struct vdev *viommu;
static uint32_t probe_size = 512;
static uint8_t *req, *tail, *evbuf;

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

void viot_endpoint(const char *what, int bdf, int *iommu_bdf, uint32_t *endpoint)
{
	static const uint8_t *t;
	static int printed;
	const char *where = "memory";
	if (!t)
		t = viot_in_memory();
	if (!t) {
		t = viot_in_fwcfg();
		where = "fw_cfg";
	}
	if (!t)
		fail("viommu: no ACPI VIOT table (in memory or fw_cfg)");
	uint32_t len = *(const uint32_t *)(t + 4);
	uint16_t count = *(const uint16_t *)(t + 36), off = *(const uint16_t *)(t + 38);
	if (!printed)
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
			if (!printed)
				printf("viommu: VIOT virtio-pci IOMMU at %02x:%02x.%x (node %u)\n",
				    *iommu_bdf >> 8, (*iommu_bdf >> 3) & 31, *iommu_bdf & 7, off);
		} else if (n[0] == 1) {
			uint32_t ep0 = *(const uint32_t *)(n + 4);
			uint16_t first = *(const uint16_t *)(n + 12), last = *(const uint16_t *)(n + 14);
			uint16_t out = *(const uint16_t *)(n + 16);
			if (!printed)
				printf("viommu: VIOT PCI range %04x-%04x endpoint %x -> node %u\n", first, last, ep0, out);
			if (bdf >= first && bdf <= last) {
				*endpoint = ep0 + (uint32_t)(bdf - first);
				found = 1;
			}
		}
		off = (uint16_t)(off + nlen);
	}
	printed = 1;
	if (*iommu_bdf < 0)
		fail("viommu: VIOT has no virtio-pci IOMMU node");
	if (!found)
		fail("viommu: %s %02x:%02x.%x is not behind the IOMMU", what, bdf >> 8, (bdf >> 3) & 31, bdf & 7);
}

/* ---- requests ---- */

/* Sends `n` readable bytes of req and `w` writable bytes at tail (the
 * status last); returns the status. */
static uint8_t send(uint32_t n, uint32_t w)
{
	memset(tail, 0xee, w);
	struct vbuf b[2] = { { req, n, 0 }, { tail, w, 1 } };
	if (vq_add(&viommu->vq[0], b, 2) < 0)
		fail("viommu: request queue full");
	vq_kick(&viommu->vq[0]);
	uint32_t len;
	vq_wait(viommu, &viommu->vq[0], &len);
	if (len != w)
		fail("viommu: request type %u: used length %u, expected %u", req[0], len, w);
	return tail[w - 4];
}

static void put32(uint32_t off, uint32_t v) { memcpy(req + off, &v, 4); }
static void put64(uint32_t off, uint64_t v) { memcpy(req + off, &v, 8); }

uint8_t viommu_attach(uint32_t domain, uint32_t ep)
{
	memset(req, 0, 64);
	req[0] = T_ATTACH;
	put32(4, domain);
	put32(8, ep);
	return send(20, 4);
}

uint8_t viommu_detach(uint32_t domain, uint32_t ep)
{
	memset(req, 0, 64);
	req[0] = T_DETACH;
	put32(4, domain);
	put32(8, ep);
	return send(20, 4);
}

void viommu_map(uint32_t domain, uint64_t iova, uint64_t gpa, uint64_t size, uint32_t flags)
{
	memset(req, 0, 64);
	req[0] = T_MAP;
	put32(4, domain);
	put64(8, iova);
	put64(16, iova + size - 1);
	put64(24, gpa);
	put32(32, flags);
	uint8_t s = send(36, 4);
	if (s)
		fail("viommu: MAP %lx-%lx -> %lx flags %u: status %u", iova, iova + size - 1, gpa, flags, s);
}

void viommu_unmap(uint32_t domain, uint64_t iova, uint64_t size)
{
	memset(req, 0, 64);
	req[0] = T_UNMAP;
	put32(4, domain);
	put64(8, iova);
	put64(16, iova + size - 1);
	uint8_t s = send(28, 4);
	if (s)
		fail("viommu: UNMAP %lx-%lx: status %u", iova, iova + size - 1, s);
}

void viommu_probe(uint32_t ep)
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

/* ---- bring-up, faults ---- */

void viommu_up(struct pci_virtio ipci, int irqmode)
{
	viommu = alloc(sizeof(*viommu), 64);
	struct vdev *io = viommu;
	virtio_init(io, ipci, 1ull << VIOMMU_F_INPUT_RANGE | 1ull << VIOMMU_F_DOMAIN_RANGE | 1ull << VIOMMU_F_MAP_UNMAP
	    | 1ull << VIOMMU_F_PROBE | 1ull << VIOMMU_F_BYPASS_CONFIG);
	if (!(io->features & 1ull << VIOMMU_F_MAP_UNMAP))
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
	if (io->features & 1ull << VIOMMU_F_PROBE)
		probe_size = vcfg32(io, 32);
	printf("viommu: page_size_mask %lx input_range %lx-%lx domain_range %u-%u probe_size %u bypass %u\n",
	    psm, in0, in1, d0, d1, probe_size, vcfg8(io, 36));
	if (!(psm & 0x1000) || (psm & 0xfff))
		fail("viommu: page_size_mask %lx does not allow 4 KiB pages", psm);
	if (probe_size < 64 || probe_size > 4096)
		fail("viommu: probe_size %u", probe_size);
	if (io->features & 1ull << VIOMMU_F_BYPASS_CONFIG) {
		mw8(io->devcfg + 36, 0);
		if (vcfg8(io, 36) != 0)
			fail("viommu: bypass stays %u", vcfg8(io, 36));
	}
	req = alloc(128, 64);
	tail = alloc(4096 + 8, 64);
	evbuf = alloc(EVENTS * EVENT_SIZE, 64);
	for (int i = 0; i < EVENTS; i++) {
		struct vbuf b = { evbuf + EVENT_SIZE * i, 24, 1 };
		vq_add(&io->vq[1], &b, 1);
	}
	vq_kick(&io->vq[1]);
}

/* The buffers were posted one descriptor each, in order: a used head id is
 * the buffer's index (a freed descriptor is the next one handed out, so a
 * repost keeps it). */
static struct viommu_fault take_fault(int e, uint32_t len)
{
	const uint8_t *f = evbuf + EVENT_SIZE * e;
	struct viommu_fault r;
	r.reason = f[0];
	memcpy(&r.flags, f + 4, 4);
	memcpy(&r.endpoint, f + 8, 4);
	memcpy(&r.address, f + 16, 8);
	r.len = len;
	struct vbuf b = { evbuf + EVENT_SIZE * e, 24, 1 };
	vq_add(&viommu->vq[1], &b, 1);
	vq_kick(&viommu->vq[1]);
	return r;
}

struct viommu_fault viommu_next_fault(void)
{
	uint32_t len;
	int e = vq_wait(viommu, &viommu->vq[1], &len);
	return take_fault(e, len);
}

int viommu_fault_pending(void)
{
	return vq_pending(&viommu->vq[1]) != 0;
}
