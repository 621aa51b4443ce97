/*
 * virtio-storm.rom: masks and unmasks a virtio-blk device's interrupt while
 * requests keep completing, and checks that no completion is lost, none is
 * reported twice or for a request not in flight, none carries wrong data,
 * that no interrupt arrives while masked and that the one the device had
 * to send meanwhile arrives at the unmask.
 *
 * Mode word (0xFFE4, irq.h): MODE_MSIX (the default here) or MODE_INTX,
 * optionally | MODE_HOLD; ROM parameter: rounds (0: 100).
 *   1. writes a 1 MiB pattern (a function of the sector) and FLUSHes;
 *   2. each round: an unmasked phase (QD requests in flight, refilled as
 *      they complete, completions taken only after interrupts: vlib.c
 *      vq_wait), then a masked phase: MSI-X: the queue's vector-control
 *      mask bit (even rounds) or the function mask (odd rounds); INTx: the
 *      command register's INTx disable bit. While masked the guest submits
 *      QD more requests and takes their completions by polling the used
 *      ring; no interrupt may arrive, and for MSI-X the vector's pending
 *      bit must be set. Then unmask: the pending interrupt must arrive
 *      (MSI-X: and the pending bit clear).
 * Every request is a random 4 KiB read inside the pattern, checked word by
 * word. Prints
 *   storm: N requests in R rounds (QD D), interrupts: X while unmasked, 0 while masked, M on unmask
 *   storm: OK
 * and exits 0x10 (status 33); FAIL lines and status 3 / 7 otherwise.
 */
#include "vlib.h"
#include "irq.h"

#define T_IN		0
#define T_OUT		1
#define T_FLUSH		4
#define F_FLUSH		9
#define SPAN		(1u << 20)		/* the pattern */
#define BLOCK		4096
#define QD		16

struct req {
	uint32_t type, reserved;
	uint64_t sector;
	uint8_t status;
	uint8_t busy;
	uint64_t want_sector;
};

static struct vdev *dev;
static struct req *reqs;
static uint8_t *bufs;
static int head_req[1024];
static uint64_t issued, completed, inflight;
static uint64_t rng = 0x2545F4914F6CDD1Dull;

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static uint64_t word_at(uint64_t byte)
{
	uint64_t x = (byte / 8 + 1) * 0x9E3779B97F4A7C15ull;
	x ^= x >> 29;
	return x * 0xBF58476D1CE4E5B9ull;
}

static void submit(int r, uint32_t type, uint64_t sector, void *buf, uint32_t len)
{
	struct req *q = &reqs[r];
	if (q->busy)
		fail("storm: slot %d reused while in flight", r);
	q->type = type;
	q->reserved = 0;
	q->sector = sector;
	q->want_sector = sector;
	q->status = 0xff;
	q->busy = 1;
	struct vbuf b[3];
	int n = 0;
	b[n++] = (struct vbuf){ q, 16, 0 };
	if (len)
		b[n++] = (struct vbuf){ buf, len, type == T_IN };
	b[n++] = (struct vbuf){ &q->status, 1, 1 };
	int head = vq_add(&dev->vq[0], b, n);
	if (head < 0)
		fail("storm: queue full");
	head_req[head] = r;
	issued++;
	inflight++;
}

/* A used entry: it must belong to a request in flight, be complete and
 * carry the right data. Returns the slot, free again. */
static int take(int head, uint32_t len)
{
	int r = head_req[head];
	struct req *q = &reqs[r];
	if (!q->busy)
		fail("storm: completion (head %d) for slot %d, which is not in flight", head, r);
	if (q->status != 0)
		fail("storm: request for sector %lu: status %u", q->want_sector, q->status);
	if (q->type == T_IN) {
		if (len != BLOCK + 1)
			fail("storm: read of sector %lu: used length %u", q->want_sector, len);
		const uint64_t *w = (const uint64_t *)(bufs + (uint64_t)r * BLOCK);
		for (unsigned i = 0; i < BLOCK / 8; i++)
			if (w[i] != word_at(q->want_sector * 512 + 8ull * i))
				fail("storm: read of sector %lu: word %u differs", q->want_sector, i);
	}
	q->busy = 0;
	completed++;
	inflight--;
	return r;
}

static void read_random(int r)
{
	uint64_t sector = (next_rand() % (SPAN / BLOCK)) * (BLOCK / 512);
	submit(r, T_IN, sector, bufs + (uint64_t)r * BLOCK, BLOCK);
}

/* n requests, QD in flight, completions by interrupt. */
static void unmasked_phase(unsigned n)
{
	unsigned started = 0;
	int freelist[QD], nfree = 0;
	for (int r = QD - 1; r >= 0; r--)
		freelist[nfree++] = r;
	while (started < n || inflight) {
		int queued = 0;
		while (nfree && started < n) {
			read_random(freelist[--nfree]);
			started++;
			queued++;
		}
		if (queued)
			vq_kick(&dev->vq[0]);
		uint32_t len;
		int head = vq_wait(dev, &dev->vq[0], &len);
		freelist[nfree++] = take(head, len);
	}
}

/* QD requests while the interrupt is masked, taken by polling. */
static void masked_batch(void)
{
	struct vq *q = &dev->vq[0];
	for (int r = 0; r < QD; r++)
		read_random(r);
	vq_kick(q);
	uint64_t t0 = rdtsc();
	while (inflight) {
		uint32_t len;
		int head = vq_get(q, &len);
		if (head < 0) {
			if (rdtsc() - t0 > poll_timeout_cycles)
				fail("storm: %lu requests did not complete while masked", inflight);
			__asm__ volatile("pause");
			continue;
		}
		take(head, len);
	}
	q->covered = q->used_idx;			/* taken without an interrupt, on purpose */
}

int guest_main(uint32_t param)
{
	uint32_t mode = rom_word(1);
	int irqmode = (int)(mode & 0xf);
	if (irqmode == MODE_POLL)
		irqmode = MODE_MSIX;
	if (irqmode != MODE_MSIX && irqmode != MODE_INTX)
		fail("storm: mode %s: use msix or intx", irq_mode_name(irqmode));
	unsigned rounds = param ? param : 100;
	printf("virtio-storm test (%s, %u rounds)\n", irq_mode_name(irqmode), rounds);
	irq_init();
	dev = alloc(sizeof(*dev), 64);
	reqs = alloc(sizeof(*reqs) * QD, 64);
	bufs = alloc((uint64_t)QD * BLOCK, 4096);
	virtio_init(dev, pci_find_virtio(2), 1ull << F_FLUSH);
	virtio_setup_irqs(dev, irqmode);
	virtio_setup_queue(dev, 0, 256);
	virtio_driver_ok(dev);
	uint64_t cap = vcfg64(dev, 0);
	if (cap * 512 < SPAN)
		fail("storm: the disk needs %u bytes, it has %lu", SPAN, cap * 512);
	struct vq *q = &dev->vq[0];
	int vec = q->vec, bdf = dev->pci.bdf;

	/* the pattern, written through interrupts as well */
	uint8_t *pat = alloc(SPAN, 4096);
	for (uint64_t i = 0; i < SPAN / 8; i++)
		((uint64_t *)pat)[i] = word_at(8 * i);
	for (unsigned off = 0; off < SPAN; off += 64 * 1024) {
		submit(0, T_OUT, off / 512, pat + off, 64 * 1024);
		vq_kick(q);
		uint32_t len;
		take(vq_wait(dev, q, &len), len);
	}
	if (dev->features & (1ull << F_FLUSH)) {
		submit(0, T_FLUSH, 0, 0, 0);
		vq_kick(q);
		uint32_t len;
		take(vq_wait(dev, q, &len), len);
	}
	printf("storm: pattern written\n");

	uint32_t unmasked = 0, on_unmask = 0;
	for (unsigned round = 0; round < rounds; round++) {
		uint32_t c0 = irq_count[vec];
		unmasked_phase(2 * QD);
		unmasked += irq_count[vec] - c0;
		/* whatever the device still had to send arrives now */
		irq_sleep(poll_timeout_cycles / 3000);
		q->irq_seen = irq_count[vec];
		uint32_t before = irq_count[vec];
		uint16_t cmd = pci_r16(bdf, 4);
		int fnmask = round & 1;
		if (irqmode == MODE_MSIX) {
			if (fnmask)
				pci_w16(bdf, dev->msix_cap + 2, pci_r16(bdf, dev->msix_cap + 2) | 0x4000);
			else
				virtio_msix_mask(dev, 1, 1);
		} else {
			pci_w16(bdf, 4, cmd | 0x400);		/* INTx disable */
		}
		masked_batch();
		irq_sleep(poll_timeout_cycles / 3000);	/* ~1 ms: room for a wrong interrupt */
		if (irq_count[vec] != before)
			fail("storm: round %u: %u interrupts while masked (%s)", round, irq_count[vec] - before,
			    irqmode == MODE_INTX ? "INTx disable" : fnmask ? "function mask" : "vector mask");
		if (irqmode == MODE_MSIX && !virtio_msix_pending(dev, 1))
			fail("storm: round %u: no pending bit for the masked vector after %u completions", round, QD);
		uint32_t zero = irq_ack_zero[vec];
		if (irqmode == MODE_MSIX) {
			if (fnmask)
				pci_w16(bdf, dev->msix_cap + 2, pci_r16(bdf, dev->msix_cap + 2) & ~0x4000);
			else
				virtio_msix_mask(dev, 1, 0);
		} else {
			pci_w16(bdf, 4, cmd & ~0x400);
		}
		if (!irq_wait_change(&irq_count[vec], before, poll_timeout_cycles))
			fail("storm: round %u: the interrupt held back by the mask never came", round);
		irq_sleep(poll_timeout_cycles / 3000);
		uint32_t got = irq_count[vec] - before - (irq_ack_zero[vec] - zero);
		if (got != 1)
			fail("storm: round %u: %u interrupts on unmask", round, got);
		if (irqmode == MODE_MSIX && virtio_msix_pending(dev, 1))
			fail("storm: round %u: the pending bit stayed set after the unmask", round);
		if (irqmode == MODE_INTX && !(irq_ack_bits[vec] & 1))
			fail("storm: round %u: the interrupt on unmask found no queue bit in the ISR", round);
		on_unmask += got;
		q->irq_seen = irq_count[vec];
	}
	if (inflight || completed != issued)
		fail("storm: %lu requests issued, %lu completed", issued, completed);
	printf("storm: %lu requests in %u rounds (QD %d), interrupts: %u while unmasked, 0 while masked, %u on unmask, %u spurious\n",
	    completed, rounds, QD, unmasked, on_unmask, irq_ack_zero[vec]);
	printf("storm: OK\n");
	if (mode & MODE_HOLD)
		irq_hold_com1();
	return EXIT_OK;
}
