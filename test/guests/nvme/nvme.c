/*
 * nvme.rom: drive the first NVMe controller (class 01/08/02) as an OS
 * does, in ring 3 on the virtio runtime (vlib.c, irq.c):
 *   - CC.EN=0 and wait for CSTS.RDY=0, admin queues (AQA/ASQ/ACQ), CC.EN=1
 *     with 64/16-byte entries and wait for RDY; IDENTIFY controller and
 *     namespace (model, serial, size, LBA size, ONCS), SET FEATURES number
 *     of queues, CREATE I/O CQ and SQ (64 entries);
 *   - test mode (ROM parameter 0): write a 2 MiB pattern with WRITE
 *     commands of 64 KiB (PRP1 + a PRP list), 32 in flight, FLUSH, read it
 *     back with 128 KiB READs, compare; 512 random 4 KiB READs at depth 32
 *     checked against the pattern; DATASET MANAGEMENT deallocate of the
 *     first 64 KiB when ONCS offers it, WRITE ZEROES of the next 4 KiB when
 *     ONCS offers it (each range then reads as zeros); GET LOG PAGE SMART;
 *       nvme: wrote N sectors, read back OK, checksum XXXXXXXX
 *   - bench mode (parameter != 0): bits 0..15 = M MiB, bits 16..31 = K:
 *     sequential write (128 KiB, depth 32), FLUSH, sequential read, K*1000
 *     random 4 KiB reads at depth 32 and K*250 at depth 1 ("bench:" lines
 *     as virtio-blk.rom prints them).
 * Interrupt mode (mode word, irq.h): MODE_MSIX (admin CQ on vector entry 0,
 * the I/O CQ on entry 1); completions are taken only after an interrupt.
 * Prints "nvme: interrupts: msix vector V N, C commands". Failures print
 * "FAIL: ..." and exit 1 (status 3); no controller 2 (status 5).
 */
#include "vlib.h"
#include "irq.h"

#define CAP	0x00
#define VS	0x08
#define CC	0x14
#define CSTS	0x1c
#define AQA	0x24
#define ASQ	0x28
#define ACQ	0x30
#define QSIZE	64

struct sqe { uint8_t opc, flags; uint16_t cid; uint32_t nsid, cdw2, cdw3; uint64_t mptr, prp1, prp2; uint32_t cdw10, cdw11, cdw12, cdw13, cdw14, cdw15; };
struct cqe { uint32_t cdw0, rsvd; uint16_t sqhd, sqid, cid, status; };

static uintptr_t bar;
static int bdf, irqmode, vec_admin = -1, vec_io = -1;
static uint32_t seen_admin, seen_io;
static uint64_t commands;

struct q {
	int id;
	struct sqe *sq;
	volatile struct cqe *cq;
	unsigned size, sq_tail, cq_head, phase;
	int vec;
	uint32_t *seen;
	unsigned covered;	/* entries announced by an interrupt, not taken yet */
};
static struct q aq, iq;
static uint64_t *prplists;	/* one 4 KiB PRP list page per I/O cid */
/* Doorbell Buffer Config (OACS bit 8), as Linux's nvme_dbbuf_*: the I/O
 * queues' tails and heads go to the shadow page, the MMIO doorbell is
 * written only when the value passes the controller's EventIdx. */
static volatile uint32_t *dbs, *eis;
static uint64_t bells, bells_skipped;

static uint32_t r32(int off) { return mr32(bar + off); }
static void w32(int off, uint32_t v) { mw32(bar + off, v); }

static void wait_rdy(int want)
{
	uint64_t t0 = rdtsc();
	while ((r32(CSTS) & 1) != (uint32_t)want) {
		if (r32(CSTS) & 2)
			fail("nvme: controller fatal status (CSTS %x)", r32(CSTS));
		if (rdtsc() - t0 > poll_timeout_cycles)
			fail("nvme: CSTS.RDY stays %u", !want);
	}
}

/* I/O command identifiers, one bit per cid: a cid (with the 4 KiB buffer
 * and the PRP list page that go with it) is free again only once its
 * completion has been taken. The SQ slot is not the cid: a slot is free as
 * soon as the controller has fetched its entry, and commands complete in
 * any order (QEMU finishes a batch of reads in whatever order its thread
 * pool does), so an old command may still be outstanding when the tail
 * comes round to its slot again. */
static uint64_t cids_busy;

static int cid_get(void)
{
	if (!~cids_busy)
		fail("nvme: no free command identifier");
	int cid = __builtin_ctzll(~cids_busy);
	cids_busy |= 1ull << cid;
	return cid;
}

static void cid_put(int cid)
{
	if (cid >= QSIZE || !(cids_busy >> cid & 1))
		fail("nvme: completion for command %d, which is not outstanding", cid);
	cids_busy &= ~(1ull << cid);
}

/* Queues a command (admin: cid = SQ slot, one at a time; I/O: the cid io()
 * took); the caller rings the doorbell. */
static void put(struct q *q, struct sqe *c)
{
	if (!q->id)
		c->cid = (uint16_t)q->sq_tail;
	q->sq[q->sq_tail] = *c;
	q->sq_tail = (q->sq_tail + 1) % q->size;
	commands++;
}

/* nvme_dbbuf_need_event(). */
static int need_event(uint16_t ei, uint16_t val, uint16_t old)
{
	return (uint16_t)(val - ei - 1) < (uint16_t)(val - old);
}

/* Doorbell `off` (0: SQ tail, 1: CQ head) of q, through the shadow page
 * for I/O queues when Doorbell Buffer Config is on. */
static void doorbell(struct q *q, int off, uint32_t val)
{
	barrier();
	if (dbs && q->id) {
		unsigned i = 2 * (unsigned)q->id + (unsigned)off;
		uint16_t old = (uint16_t)dbs[i];
		dbs[i] = val;
		mb();
		bells++;
		if (!need_event((uint16_t)eis[i], (uint16_t)val, old)) {
			bells_skipped++;
			return;
		}
	}
	w32(0x1000 + 8 * q->id + 4 * off, val);
}

static void ring(struct q *q)
{
	doorbell(q, 0, q->sq_tail);
}

/* Entries of q's CQ that are new, from the head on. */
static unsigned visible(struct q *q)
{
	unsigned n = 0, h = q->cq_head, ph = q->phase;
	while (n < q->size && (q->cq[h].status & 1) == ph) {
		n++;
		h = (h + 1) % q->size;
		if (h == 0)
			ph ^= 1;
	}
	return n;
}

/* Takes one completion; returns its cid. In MSI-X mode only entries that
 * were already posted when an interrupt on the queue's vector was taken
 * (q->covered) are taken: a completion the controller did not signal
 * ends the run with a timeout. */
static int reap(struct q *q, uint32_t *cdw0)
{
	if (irqmode == MODE_MSIX) {
		while (!q->covered) {
			if (!irq_wait_change(&irq_count[q->vec], *q->seen, poll_timeout_cycles))
				fail("nvme: no interrupt on queue %d (vector %x) for %u posted entries", q->id, q->vec, visible(q));
			*q->seen = irq_count[q->vec];
			q->covered = visible(q);
		}
		q->covered--;
	} else {
		uint64_t t0 = rdtsc();
		while ((q->cq[q->cq_head].status & 1) != q->phase)
			if (rdtsc() - t0 > poll_timeout_cycles)
				fail("nvme: timeout on queue %d", q->id);
	}
	volatile struct cqe *e = &q->cq[q->cq_head];
	uint16_t st = e->status;
	int cid = e->cid;
	if (cdw0)
		*cdw0 = e->cdw0;
	q->cq_head = (q->cq_head + 1) % q->size;
	if (q->cq_head == 0)
		q->phase ^= 1;
	doorbell(q, 1, q->cq_head);
	if (q->id)
		cid_put(cid);
	if (st >> 1)
		fail("nvme: queue %d command %d: status sct %u sc %x", q->id, cid, (st >> 9) & 7, (st >> 1) & 0xff);
	return cid;
}

static uint32_t admin(struct sqe c)
{
	uint32_t cdw0;
	put(&aq, &c);
	ring(&aq);
	reap(&aq, &cdw0);
	return cdw0;
}

/* PRP1/PRP2 for `len` bytes at buf; the cid's list page when needed. */
static void prps(struct sqe *c, int cid, uint8_t *buf, uint32_t len)
{
	uintptr_t a = (uintptr_t)buf;
	c->prp1 = a;
	uint32_t first = 4096 - (a & 4095);
	if (len <= first) {
		c->prp2 = 0;
	} else if (len - first <= 4096) {
		c->prp2 = a + first;
	} else {
		uint64_t *l = prplists + (uint64_t)cid * 512;
		uintptr_t p = a + first;
		int n = 0;
		for (uint32_t left = len - first; left; left -= left < 4096 ? left : 4096, p += 4096)
			l[n++] = p;
		c->prp2 = (uintptr_t)l;
	}
}

/* An I/O command with a free cid (its PRP list page is the cid's). */
static void io(struct sqe *c, uint8_t opc, uint64_t lba, uint32_t blocks, uint8_t *buf, uint32_t len)
{
	memset(c, 0, sizeof(*c));
	c->cid = (uint16_t)cid_get();
	c->opc = opc;
	c->nsid = 1;
	c->cdw10 = (uint32_t)lba;
	c->cdw11 = (uint32_t)(lba >> 32);
	c->cdw12 = blocks - 1;
	if (buf)
		prps(c, c->cid, buf, len);
}

static uint32_t lbads;

/* Sequential transfer of `bytes` from disk byte 0, `chunk` per command, `depth` in flight. */
static void seq(uint8_t opc, uint8_t *buf, uint64_t buflen, uint64_t bytes, uint32_t chunk, int depth)
{
	uint64_t next = 0;
	int inflight = 0;
	while (next < bytes || inflight) {
		int queued = 0;
		while (inflight < depth && next < bytes) {
			struct sqe c;
			uint32_t len = bytes - next < chunk ? (uint32_t)(bytes - next) : chunk;
			io(&c, opc, next >> lbads, len >> lbads, buf + next % buflen, len);
			put(&iq, &c);
			next += len;
			inflight++;
			queued++;
		}
		if (queued)
			ring(&iq);
		reap(&iq, 0);
		inflight--;
	}
}

/* Says what a 4 KiB random read's buffer holds instead of the pattern of
 * disk byte `want`: which 4 KiB of the span it holds (that of the cid's
 * previous command: a stale SQE, or a completion taken for the wrong
 * command; another: a mixed-up buffer), where it differs (a partial DMA),
 * and whether it turns right a moment later (a completion seen before its
 * data was written). */
static void bad_read(const uint8_t *got, uint8_t *expect, uint64_t span, uint64_t want, uint64_t prev, int cid)
{
	uint32_t first = 0, last = 0, nbad = 0;
	for (uint32_t i = 0; i < 4096; i++)
		if (got[i] != expect[i]) {
			if (!nbad++)
				first = i;
			last = i;
		}
	long holds = -1;
	for (uint64_t off = 0; off < span && holds < 0; off += 4096) {
		disk_pattern(expect, off, 4096);
		if (!memcmp(expect, got, 4096))
			holds = (long)off;
	}
	uint64_t t0 = rdtsc();
	while (rdtsc() - t0 < poll_timeout_cycles / 30)
		;
	barrier();	/* the controller may have written the buffer meanwhile */
	disk_pattern(expect, want, 4096);
	int later = !memcmp(expect, got, 4096);
	fail("nvme: random read of disk byte %lu (cid %d) differs from the pattern: bytes %u..%u (%u differ); "
	    "it holds %s %ld (the cid's previous command read %lu)%s", want, cid, first, last, nbad,
	    holds < 0 ? "no 4 KiB of the span, disk byte" : "the pattern of disk byte", holds, prev,
	    later ? "; it is right a moment later" : "; still wrong a moment later");
}

static void randread(uint8_t *rbuf, uint64_t span, uint32_t n, int depth, int check)
{
	uint32_t issued = 0, done = 0;
	static uint64_t where[QSIZE], prev[QSIZE];
	for (int i = 0; i < QSIZE; i++)
		where[i] = (uint64_t)i * 4096;	/* what the sequential read left in cid i's buffer */
	uint8_t *expect = check ? alloc(4096, 4096) : 0;
	int inflight = 0;
	while (done < n) {
		int queued = 0;
		while (inflight < depth && issued < n) {
			struct sqe c;
			uint64_t off = (xorshift() % (span / 4096)) * 4096;
			io(&c, 0x02, off >> lbads, 4096 >> lbads, 0, 0);
			prev[c.cid] = where[c.cid];
			where[c.cid] = off;
			prps(&c, c.cid, rbuf + (uint64_t)c.cid * 4096, 4096);
			put(&iq, &c);
			issued++;
			inflight++;
			queued++;
		}
		if (queued)
			ring(&iq);
		int cid = reap(&iq, 0);
		inflight--;
		done++;
		if (check) {
			disk_pattern(expect, where[cid], 4096);
			if (memcmp(expect, rbuf + (uint64_t)cid * 4096, 4096))
				bad_read(rbuf + (uint64_t)cid * 4096, expect, span, where[cid], prev[cid], cid);
		}
	}
}

static void run1(struct sqe *c)
{
	put(&iq, c);
	ring(&iq);
	reap(&iq, 0);
}

static int zeros(const uint8_t *b, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (b[i])
			return 0;
	return 1;
}

int guest_main(uint32_t param)
{
	uint32_t mode = rom_word(1);
	irqmode = (int)(mode & 0xf);
	printf("nvme test (%s)\n", irq_mode_name(irqmode));
	if (irqmode != MODE_POLL && irqmode != MODE_MSIX)
		fail("nvme: interrupt mode %d not supported (bhyve's NVMe interrupts by MSI-X only)", irqmode);
	if (irqmode != MODE_POLL || (mode & MODE_HOLD))
		irq_init();
	struct pci_virtio none[1];
	pci_scan(none, 0);
	bdf = pci_find(0x08, 8, 0x010802);
	if (bdf < 0) {
		printf("nvme: no NVMe controller\n");
		exit_(EXIT_NODEV);
	}
	uint32_t lo = pci_r32(bdf, 0x10);
	bar = (lo & ~0xfu) | ((lo & 6) == 4 ? (uintptr_t)pci_r32(bdf, 0x14) << 32 : 0);
	pci_w16(bdf, 4, pci_r16(bdf, 4) | 0x6);
	printf("nvme: %04x:%04x at 00:%02x.%u, BAR0 %lx, CAP %x %x, VS %x\n", pci_r16(bdf, 0), pci_r16(bdf, 2), bdf >> 3, bdf & 7,
	    (uint64_t)bar, r32(CAP + 4), r32(CAP), r32(VS));

	if (irqmode == MODE_MSIX) {
		int mc = pci_find_cap(bdf, 0x11);
		if (!mc)
			fail("nvme: no MSI-X capability");
		uint32_t t = pci_r32(bdf, mc + 4);
		uint32_t blo = pci_r32(bdf, 0x10 + 4 * (t & 7));
		uintptr_t tbar = (blo & ~0xfu) | ((blo & 6) == 4 ? (uintptr_t)pci_r32(bdf, 0x14 + 4 * (t & 7)) << 32 : 0);
		uintptr_t table = tbar + (t & ~7u);
		vec_admin = irq_alloc_vector();
		vec_io = irq_alloc_vector();
		int vecs[2] = { vec_admin, vec_io };
		for (int i = 0; i < 2; i++) {
			uint64_t a = msi_address();
			mw32(table + 16 * i, (uint32_t)a);
			mw32(table + 16 * i + 4, (uint32_t)(a >> 32));
			mw32(table + 16 * i + 8, msi_data(vecs[i]));
			mw32(table + 16 * i + 12, 0);
		}
		pci_w16(bdf, mc + 2, (uint16_t)((pci_r16(bdf, mc + 2) & ~0x4000) | 0x8000));
		pci_w16(bdf, 4, pci_r16(bdf, 4) | 0x400);	/* INTx off */
		printf("nvme: MSI-X, %u entries, admin vector %x, I/O vector %x\n", (pci_r16(bdf, mc + 2) & 0x7ff) + 1, vec_admin, vec_io);
		seen_admin = irq_count[vec_admin];
		seen_io = irq_count[vec_io];
	}

	w32(CC, 0);
	wait_rdy(0);
	aq = (struct q){ .id = 0, .size = 16, .phase = 1, .vec = vec_admin, .seen = &seen_admin };
	aq.sq = alloc(16 * 64, 4096);
	aq.cq = alloc(16 * 16, 4096);
	w32(AQA, 15 | (15 << 16));
	w32(ASQ, (uint32_t)(uintptr_t)aq.sq); w32(ASQ + 4, 0);
	w32(ACQ, (uint32_t)(uintptr_t)aq.cq); w32(ACQ + 4, 0);
	w32(CC, 1 | (6 << 16) | (4 << 20));
	wait_rdy(1);

	uint8_t *id = alloc(4096, 4096);
	admin((struct sqe){ .opc = 0x06, .prp1 = (uintptr_t)id, .cdw10 = 1 });
	char mn[41], sn[21];
	memcpy(mn, id + 24, 40); mn[40] = 0;
	memcpy(sn, id + 4, 20); sn[20] = 0;
	for (int i = 39; i >= 0 && mn[i] == ' '; i--) mn[i] = 0;
	for (int i = 19; i >= 0 && sn[i] == ' '; i--) sn[i] = 0;
	uint16_t oncs = (uint16_t)(id[520] | id[521] << 8);
	uint16_t oacs = (uint16_t)(id[256] | id[257] << 8);
	uint8_t mdts = id[77];
	admin((struct sqe){ .opc = 0x06, .nsid = 1, .prp1 = (uintptr_t)id, .cdw10 = 0 });
	uint64_t nsze = *(uint64_t *)id;
	lbads = (id[128 + 2 + 4 * (id[26] & 0xf)]);
	printf("nvme: model '%s' serial '%s', namespace 1: %lu blocks of %u (%lu MiB), MDTS %u, ONCS %x\n", mn, sn, nsze,
	    1u << lbads, (nsze << lbads) >> 20, mdts, oncs);
	uint32_t nq = admin((struct sqe){ .opc = 0x09, .cdw10 = 0x07, .cdw11 = 0 });
	printf("nvme: queues granted %u SQ, %u CQ\n", (nq & 0xffff) + 1, (nq >> 16) + 1);

	if (oacs & 0x100) {
		dbs = alloc(4096, 4096);
		eis = alloc(4096, 4096);
		memset((void *)dbs, 0, 4096);
		memset((void *)eis, 0, 4096);
		admin((struct sqe){ .opc = 0x7c, .prp1 = (uintptr_t)dbs, .prp2 = (uintptr_t)eis });
		printf("nvme: doorbell buffer config on (OACS %x)\n", oacs);
	}

	iq = (struct q){ .id = 1, .size = QSIZE, .phase = 1, .vec = vec_io, .seen = &seen_io };
	iq.sq = alloc(QSIZE * 64, 4096);
	iq.cq = alloc(QSIZE * 16, 4096);
	prplists = alloc((uint64_t)QSIZE * 4096, 4096);
	admin((struct sqe){ .opc = 0x05, .prp1 = (uintptr_t)iq.cq, .cdw10 = 1 | ((QSIZE - 1) << 16),
	    .cdw11 = 1 | (irqmode == MODE_MSIX ? 2 | (1u << 16) : 0) });
	admin((struct sqe){ .opc = 0x01, .prp1 = (uintptr_t)iq.sq, .cdw10 = 1 | ((QSIZE - 1) << 16), .cdw11 = 1 | (1u << 16) });

	if (param == 0) {
		uint64_t bytes = 2ull << 20;
		if (bytes > (nsze << lbads))
			fail("nvme: namespace too small");
		uint8_t *w = alloc(bytes, 4096), *r = alloc(bytes, 4096);
		disk_pattern(w, 0, bytes);
		uint32_t sum = crc32(0, w, bytes);
		seq(0x01, w, bytes, bytes, 64 * 1024, 32);
		struct sqe c;
		io(&c, 0x00, 0, 1, 0, 0);
		run1(&c);
		seq(0x02, r, bytes, bytes, 128 * 1024, 8);
		uint32_t rsum = crc32(0, r, bytes);
		if (rsum != sum || memcmp(w, r, bytes))
			fail("nvme: read back checksum %08x, wrote %08x", rsum, sum);
		printf("nvme: wrote %lu sectors, read back OK, checksum %08x\n", bytes / 512, sum);
		randread(r, bytes, 512, 32, 1);
		printf("nvme: 512 random reads at depth 32 match\n");
		if (oncs & 4) {
			uint32_t *range = alloc(4096, 4096);
			range[0] = 0; range[1] = (64 * 1024) >> lbads; range[2] = 0; range[3] = 0;	/* cattr, nlb, slba */
			memset(&c, 0, sizeof(c));
			c.cid = (uint16_t)cid_get(); c.opc = 0x09; c.nsid = 1; c.prp1 = (uintptr_t)range; c.cdw10 = 0; c.cdw11 = 4;
			run1(&c);
			io(&c, 0x02, 0, (64 * 1024) >> lbads, r, 64 * 1024);
			run1(&c);
			printf("nvme: deallocated 64 KiB %s\n", zeros(r, 64 * 1024) ? "reads back as zeros" : "(still readable: deallocate is advisory)");
		}
		if (oncs & 8) {
			io(&c, 0x08, (64 * 1024) >> lbads, 4096 >> lbads, 0, 0);
			run1(&c);
			io(&c, 0x02, (64 * 1024) >> lbads, 4096 >> lbads, r, 4096);
			run1(&c);
			if (!zeros(r, 4096))
				fail("nvme: WRITE ZEROES range does not read as zeros");
			printf("nvme: WRITE ZEROES of 4 KiB reads back as zeros\n");
		}
		uint8_t *log = alloc(4096, 4096);
		admin((struct sqe){ .opc = 0x02, .nsid = 0xffffffff, .prp1 = (uintptr_t)log, .cdw10 = 0x02 | (127u << 16) });
		printf("nvme: SMART: temperature %u K, spare %u%%, host writes %lu, host reads %lu\n", log[1] | log[2] << 8, log[3],
		    *(uint64_t *)(log + 80), *(uint64_t *)(log + 64));
		if (dbs)
			printf("nvme: doorbell buffer: %lu of %lu I/O doorbell writes skipped\n", bells_skipped, bells);
		if (irqmode == MODE_MSIX)
			printf("nvme: interrupts: msix vector %x %u, vector %x %u, %lu commands\n", vec_admin, irq_count[vec_admin],
			    vec_io, irq_count[vec_io], commands);
		if (mode & MODE_HOLD)
			irq_hold_com1();
		return EXIT_OK;
	}

	uint64_t mib = param & 0xffff, nrand = (uint64_t)(param >> 16) * 1000;
	uint64_t bytes = mib << 20;
	if (bytes > (nsze << lbads))
		fail("nvme: bench needs %lu MiB, the namespace has %lu", mib, (nsze << lbads) >> 20);
	uint64_t buflen = bytes < (8ull << 20) ? bytes : 8ull << 20;
	uint8_t *buf = alloc(buflen, 4096), *rbuf = alloc(QSIZE * 4096, 4096);
	disk_pattern(buf, 0, buflen);
	uint64_t hz = tsc_hz_from_rtc();
	poll_timeout_cycles = hz * 30;
	printf("bench: tsc_hz %lu\n", hz);
	uint64_t t0 = rdtsc();
	seq(0x01, buf, buflen, bytes, 128 * 1024, 32);
	uint64_t t1 = rdtsc();
	struct sqe c;
	io(&c, 0x00, 0, 1, 0, 0);
	run1(&c);
	uint64_t t2 = rdtsc();
	seq(0x02, buf, buflen, bytes, 128 * 1024, 32);
	uint64_t t3 = rdtsc();
	printf("bench: seq-write %lu bytes %lu cycles chunk %u depth %d\n", bytes, t1 - t0, 128 * 1024, 32);
	printf("bench: flush %lu cycles\n", t2 - t1);
	printf("bench: seq-read %lu bytes %lu cycles chunk %u depth %d\n", bytes, t3 - t2, 128 * 1024, 32);
	if (nrand) {
		t0 = rdtsc();
		randread(rbuf, bytes, (uint32_t)nrand, 32, 0);
		t1 = rdtsc();
		printf("bench: rand-read %lu x 4096 %lu cycles depth 32\n", nrand, t1 - t0);
		t0 = rdtsc();
		randread(rbuf, bytes, (uint32_t)(nrand / 4), 1, 0);
		t1 = rdtsc();
		printf("bench: rand-read %lu x 4096 %lu cycles depth 1\n", nrand / 4, t1 - t0);
	}
	if (dbs)
		printf("bench: doorbell buffer: %lu of %lu I/O doorbell writes skipped\n", bells_skipped, bells);
	printf("bench: done\n");
	return EXIT_OK;
}
