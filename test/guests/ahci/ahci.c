/*
 * ahci.rom: drive the first AHCI controller (class 01/06/01) as an OS
 * does, in ring 3 on the virtio runtime (vlib.c, irq.c):
 *   - HBA: AE, CAP/PI/VS; the first port with a disk (SIG 0x101) and the
 *     first with an ATAPI device (SIG 0xeb140101);
 *   - port bring-up: stop, command list and FIS area, clear SERR/IS, FRE,
 *     ST; IDENTIFY DEVICE: model, serial, sectors, NCQ depth, TRIM;
 *   - test mode (ROM parameter 0): write a 2 MiB pattern with WRITE FPDMA
 *     QUEUED, 32 commands in flight (64 KiB each, two PRDT entries), FLUSH
 *     CACHE EXT, read it back with READ DMA EXT (one command at a time),
 *     compare; 512 random 4 KiB READ FPDMA QUEUED at depth 32, each
 *     compared with the pattern; DSM TRIM of the first 64 KiB when
 *     IDENTIFY offers it (the range reads back as zeros); on an ATAPI
 *     port, INQUIRY, READ CAPACITY and READ(10) of sector 0; then
 *       ahci: wrote N sectors, read back OK, checksum XXXXXXXX
 *     (zlib CRC-32 of the pattern, the first N*512 bytes of the image);
 *   - bench mode (parameter != 0): bits 0..15 = M MiB, bits 16..31 = K:
 *     sequential write (NCQ, depth 32, 128 KiB), FLUSH, sequential read,
 *     K*1000 random 4 KiB NCQ reads at depth 32 and K*250 at depth 1,
 *     "bench: ..." lines of TSC cycles as virtio-blk.rom prints them
 *     (then, with MODE_HOLD, holds for the host to read its counters).
 * Interrupt mode (mode word, irq.h): MODE_MSI (the MSI capability, one
 * message) or MODE_INTX (routed as the firmware says; the ring-0 handler
 * clears GHC.IE to drop the level line, ring 3 clears PxIS and IS and sets
 * it again). Completions are taken only after an interrupt: a command the
 * HBA completes without one times out. Prints
 *   ahci: interrupts: MODE vector V N, C commands
 * Failures print "FAIL: ..." and exit 1 (status 3); no controller or disk
 * 2 (status 5).
 */
#include "vlib.h"
#include "irq.h"

#define HBA_CAP		0x00
#define HBA_GHC		0x04
#define HBA_IS		0x08
#define HBA_PI		0x0c
#define HBA_VS		0x10
#define GHC_AE		0x80000000u
#define GHC_IE		0x2u
#define P_CLB		0x00
#define P_CLBU		0x04
#define P_FB		0x08
#define P_FBU		0x0c
#define P_IS		0x10
#define P_IE		0x14
#define P_CMD		0x18
#define P_TFD		0x20
#define P_SIG		0x24
#define P_SSTS		0x28
#define P_SERR		0x30
#define P_SACT		0x34
#define P_CI		0x38
#define CMD_ST		0x0001
#define CMD_FRE		0x0010
#define CMD_FR		0x4000
#define CMD_CR		0x8000
#define IS_TFES		0x40000000u
#define IS_HBFS		0x20000000u
#define IS_HBDS		0x10000000u

#define ATA_IDENTIFY	0xec
#define ATA_READ_DMA48	0x25
#define ATA_WRITE_DMA48	0x35
#define ATA_READ_FPDMA	0x60
#define ATA_WRITE_FPDMA	0x61
#define ATA_FLUSH48	0xea
#define ATA_DSM		0x06
#define ATA_PACKET	0xa0

struct cmd_hdr { uint16_t flags, prdtl; volatile uint32_t prdbc; uint64_t ctba; uint32_t rsvd[4]; };
struct prd { uint64_t dba; uint32_t rsvd, dbc; };
struct cmd_table { uint8_t cfis[64], acmd[16], rsvd[48]; struct prd prdt[8]; };

static uintptr_t abar;
static int bdf = -1, vec = -1, irqmode;
static uint32_t irq_seen;
static uint64_t commands;

struct port {
	int n;
	uintptr_t r;
	struct cmd_hdr *clb;
	uint8_t *fb;
	struct cmd_table *ct;	/* 32 tables */
	uint32_t outstanding;	/* CI | SACT bits we issued */
};

static uint32_t pr(struct port *p, int reg) { return mr32(p->r + reg); }
static void pw(struct port *p, int reg, uint32_t v) { mw32(p->r + reg, v); }

static void port_start(struct port *p)
{
	uint64_t t0 = rdtsc();
	pw(p, P_CMD, pr(p, P_CMD) & ~(CMD_ST | CMD_FRE));
	while (pr(p, P_CMD) & (CMD_CR | CMD_FR))
		if (rdtsc() - t0 > poll_timeout_cycles)
			fail("ahci: port %d does not stop", p->n);
	p->clb = alloc(1024, 1024);
	p->fb = alloc(256, 256);
	p->ct = alloc(32 * sizeof(struct cmd_table), 128);
	pw(p, P_CLB, (uint32_t)(uintptr_t)p->clb);
	pw(p, P_CLBU, 0);
	pw(p, P_FB, (uint32_t)(uintptr_t)p->fb);
	pw(p, P_FBU, 0);
	pw(p, P_SERR, 0xffffffff);
	pw(p, P_IS, 0xffffffff);
	pw(p, P_CMD, pr(p, P_CMD) | CMD_FRE);
	while (pr(p, P_TFD) & 0x88)
		if (rdtsc() - t0 > poll_timeout_cycles)
			fail("ahci: port %d stays busy (TFD %x)", p->n, pr(p, P_TFD));
	pw(p, P_IE, irqmode == MODE_POLL ? 0 : 0x7d40003f);	/* DHR PS DS SDB UF DP, errors */
	pw(p, P_CMD, pr(p, P_CMD) | CMD_ST);
}

/* Builds command `slot`: H2D FIS, optional ATAPI packet, PRDT of nprd
 * pieces covering len bytes of buf. */
static void build(struct port *p, int slot, uint8_t cmd, uint64_t lba, uint32_t count, void *buf, uint32_t len, int nprd, int write, const uint8_t *acmd)
{
	struct cmd_table *t = &p->ct[slot];
	struct cmd_hdr *h = &p->clb[slot];
	memset(t, 0, sizeof(*t));
	uint8_t *f = t->cfis;
	f[0] = 0x27;
	f[1] = 0x80;
	f[2] = cmd;
	f[4] = (uint8_t)lba; f[5] = (uint8_t)(lba >> 8); f[6] = (uint8_t)(lba >> 16);
	f[7] = 0x40;
	f[8] = (uint8_t)(lba >> 24); f[9] = (uint8_t)(lba >> 32); f[10] = (uint8_t)(lba >> 40);
	if (cmd == ATA_READ_FPDMA || cmd == ATA_WRITE_FPDMA) {
		f[3] = (uint8_t)count; f[11] = (uint8_t)(count >> 8);
		f[12] = (uint8_t)(slot << 3);
	} else if (cmd == ATA_DSM) {
		f[3] = 1;	/* TRIM */
		f[12] = (uint8_t)count; f[13] = (uint8_t)(count >> 8);
	} else {
		f[12] = (uint8_t)count; f[13] = (uint8_t)(count >> 8);
	}
	if (acmd) {
		/* ATAPI: data by DMA (features bit 0), byte count limit as PIO would need. */
		memcpy(t->acmd, acmd, 12);
		f[3] = len ? 1 : 0;
		f[4] = 0; f[5] = (uint8_t)len; f[6] = (uint8_t)(len >> 8);
	}
	int n = 0;
	if (len) {
		uint32_t piece = len / (uint32_t)nprd;
		for (; n < nprd; n++) {
			t->prdt[n].dba = (uintptr_t)buf + (uint64_t)n * piece;
			t->prdt[n].rsvd = 0;
			t->prdt[n].dbc = (n == nprd - 1 ? len - piece * (uint32_t)n : piece) - 1;
		}
	}
	h->flags = (uint16_t)(5 | (write ? 0x40 : 0) | (acmd ? 0x20 : 0));
	h->prdtl = (uint16_t)n;
	h->prdbc = 0;
	h->ctba = (uintptr_t)t;
}

static void issue(struct port *p, int slot, int ncq)
{
	barrier();
	p->outstanding |= 1u << slot;
	if (ncq)
		pw(p, P_SACT, 1u << slot);
	pw(p, P_CI, 1u << slot);
	commands++;
}

/* Waits for completions; returns the bits of `outstanding` that are done. */
static uint32_t reap(struct port *p)
{
	for (;;) {
		if (irqmode != MODE_POLL) {
			if (!irq_wait_change(&irq_count[vec], irq_seen, poll_timeout_cycles))
				fail("ahci: no interrupt for outstanding commands %x (CI %x SACT %x IS %x TFD %x)",
				    p->outstanding, pr(p, P_CI), pr(p, P_SACT), pr(p, P_IS), pr(p, P_TFD));
			irq_seen = irq_count[vec];
			uint32_t is = pr(p, P_IS);
			pw(p, P_IS, is);
			mw32(abar + HBA_IS, 1u << p->n);
			if (irqmode == MODE_INTX)
				mw32(abar + HBA_GHC, GHC_AE | GHC_IE);	/* the handler cleared IE */
			if (is & (IS_TFES | IS_HBFS | IS_HBDS))
				fail("ahci: port %d error: IS %x TFD %x", p->n, is, pr(p, P_TFD));
		} else {
			uint64_t t0 = rdtsc();
			while (((pr(p, P_CI) | pr(p, P_SACT)) & p->outstanding) == p->outstanding) {
				if (pr(p, P_TFD) & 1)
					break;
				if (rdtsc() - t0 > poll_timeout_cycles)
					fail("ahci: timeout: CI %x SACT %x", pr(p, P_CI), pr(p, P_SACT));
			}
		}
		uint32_t tfd = pr(p, P_TFD);
		if (tfd & 1)
			fail("ahci: port %d: command error, TFD %x (error %x) CI %x", p->n, tfd, tfd >> 8, pr(p, P_CI));
		uint32_t done = p->outstanding & ~(pr(p, P_CI) | pr(p, P_SACT));
		if (done) {
			p->outstanding &= ~done;
			return done;
		}
	}
}

static void run1(struct port *p, int slot)
{
	issue(p, slot, 0);
	while (p->outstanding)
		reap(p);
}

/* Sequential NCQ transfer: `bytes` from disk byte 0, `chunk` per command,
 * `depth` slots in flight, data from/to buf (wrapping at buflen). */
static void seq_ncq(struct port *p, int write, uint8_t *buf, uint64_t buflen, uint64_t bytes, uint32_t chunk, int depth)
{
	uint64_t next = 0;
	uint32_t free = depth >= 32 ? 0xffffffffu : (1u << depth) - 1;
	while (next < bytes || p->outstanding) {
		while (free && next < bytes) {
			int s = __builtin_ctz(free);
			free &= ~(1u << s);
			uint32_t len = bytes - next < chunk ? (uint32_t)(bytes - next) : chunk;
			build(p, s, write ? ATA_WRITE_FPDMA : ATA_READ_FPDMA, next / 512, len / 512, buf + next % buflen, len, 2, write, 0);
			issue(p, s, 1);
			next += len;
		}
		free |= reap(p);
	}
}

/* n random 4 KiB NCQ reads in the first `span` bytes, depth in flight;
 * with `check`, each is compared with the pattern. */
static void randread(struct port *p, uint8_t *rbuf, uint64_t span, uint32_t n, int depth, int check)
{
	uint32_t issued = 0, done = 0;
	uint64_t where[32];
	uint32_t free = depth >= 32 ? 0xffffffffu : (1u << depth) - 1;
	uint8_t *expect = check ? alloc(4096, 4096) : 0;
	while (done < n) {
		while (free && issued < n) {
			int s = __builtin_ctz(free);
			free &= ~(1u << s);
			where[s] = (xorshift() % (span / 4096)) * 4096;
			build(p, s, ATA_READ_FPDMA, where[s] / 512, 8, rbuf + (uint64_t)s * 4096, 4096, 1, 0, 0);
			issue(p, s, 1);
			issued++;
		}
		uint32_t d = reap(p);
		free |= d;
		while (d) {
			int s = __builtin_ctz(d);
			d &= d - 1;
			done++;
			if (check) {
				disk_pattern(expect, where[s], 4096);
				if (memcmp(expect, rbuf + (uint64_t)s * 4096, 4096))
					fail("ahci: random read of disk byte %lu (tag %d) differs from the pattern", where[s], s);
			}
		}
	}
}

static void atapi_checks(struct port *p)
{
	uint8_t *buf = alloc(4096, 4096);
	uint8_t inq[12] = { 0x12, 0, 0, 0, 36, 0 };
	build(p, 0, ATA_PACKET, 0, 0, buf, 36, 1, 0, inq);
	run1(p, 0);
	char vendor[9], product[17];
	memcpy(vendor, buf + 8, 8); vendor[8] = 0;
	memcpy(product, buf + 16, 16); product[16] = 0;
	uint8_t cap[12] = { 0x25 };
	build(p, 1, ATA_PACKET, 0, 0, buf + 64, 8, 1, 0, cap);
	run1(p, 1);
	uint32_t last = (uint32_t)buf[64] << 24 | (uint32_t)buf[65] << 16 | (uint32_t)buf[66] << 8 | buf[67];
	uint32_t bs = (uint32_t)buf[68] << 24 | (uint32_t)buf[69] << 16 | (uint32_t)buf[70] << 8 | buf[71];
	uint8_t rd[12] = { 0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0 };
	build(p, 2, ATA_PACKET, 0, 0, buf + 2048, 2048, 1, 0, rd);
	run1(p, 2);
	printf("ahci: port %d ATAPI '%s' '%s', %u blocks of %u, sector 0 crc %08x\n", p->n, vendor, product, last + 1, bs,
	    crc32(0, buf + 2048, 2048));
}

int guest_main(uint32_t param)
{
	uint32_t mode = rom_word(1);
	irqmode = (int)(mode & 0xf);
	printf("ahci test (%s)\n", irq_mode_name(irqmode));
	if (irqmode != MODE_POLL || (mode & MODE_HOLD))
		irq_init();
	struct pci_virtio none[1];
	pci_scan(none, 0);
	bdf = pci_find(0x08, 8, 0x010601);
	if (bdf < 0) {
		printf("ahci: no AHCI controller\n");
		exit_(EXIT_NODEV);
	}
	uint32_t bar5 = pci_r32(bdf, 0x24);
	abar = bar5 & ~0xfu;
	pci_w16(bdf, 4, pci_r16(bdf, 4) | 0x6);	/* memory, bus master */
	mw32(abar + HBA_GHC, GHC_AE);
	uint32_t cap = mr32(abar + HBA_CAP), pi = mr32(abar + HBA_PI);
	printf("ahci: %04x:%04x at 00:%02x.%u, ABAR %x, CAP %x (%u ports, %u slots%s), PI %x, VS %x\n",
	    pci_r16(bdf, 0), pci_r16(bdf, 2), bdf >> 3, bdf & 7, (uint32_t)abar, cap, (cap & 0x1f) + 1, ((cap >> 8) & 0x1f) + 1,
	    cap & (1u << 30) ? ", NCQ" : "", pi, mr32(abar + HBA_VS));

	if (irqmode == MODE_MSI) {
		int mc = pci_find_cap(bdf, 0x05);
		if (!mc)
			fail("ahci: no MSI capability");
		vec = irq_alloc_vector();
		uint16_t ctrl = pci_r16(bdf, mc + 2);
		uint64_t a = msi_address();
		pci_w32(bdf, mc + 4, (uint32_t)a);
		int data = mc + 8;
		if (ctrl & 0x80) { pci_w32(bdf, mc + 8, (uint32_t)(a >> 32)); data = mc + 12; }
		pci_w16(bdf, data, (uint16_t)msi_data(vec));
		pci_w16(bdf, mc + 2, (uint16_t)((ctrl & ~0x70) | 1));	/* one message: every port shares it */
		printf("ahci: MSI, one message of %u, vector %x\n", 1u << ((ctrl >> 1) & 7), vec);
	} else if (irqmode == MODE_INTX) {
		struct intx_route r;
		if (!pci_intx_route(bdf, &r))
			fail("ahci: no INTx route");
		vec = irq_alloc_vector();
		pci_w16(bdf, 4, pci_r16(bdf, 4) & ~0x400);
		/* The handler drops the level line by clearing GHC.IE; ring 3 acks and sets it again. */
		irq_set_ack(vec, IRQ_ACK_MMIO32W, abar + HBA_GHC, GHC_AE);
		ioapic_route(r.pin, vec, r.level, r.active_low);
		printf("ahci: INT%c -> I/O APIC pin %d (%s), vector %x, from the %s\n", 'A' + pci_r8(bdf, 0x3d) - 1, r.pin,
		    r.level ? "level" : "edge", vec, r.source);
	} else if (irqmode != MODE_POLL) {
		fail("ahci: interrupt mode %d not supported (use MSI or INTx)", irqmode);
	}
	if (vec >= 0) {
		irq_seen = irq_count[vec];
		mw32(abar + HBA_GHC, GHC_AE | GHC_IE);
	}

	/* Ports with a device: command list, FIS area and FRE first; the
	 * signature is only valid once the device's first D2H FIS came in. */
	struct port disk = { .n = -1 }, cd = { .n = -1 };
	for (int i = 0; i < 32; i++) {
		if (!(pi & (1u << i)))
			continue;
		struct port q = { .n = i, .r = abar + 0x100 + 0x80 * (uintptr_t)i };
		uint32_t ssts = pr(&q, P_SSTS);
		if ((ssts & 0xf) != 3) {
			printf("ahci: port %d SSTS %x: no device\n", i, ssts);
			continue;
		}
		port_start(&q);
		uint32_t sig = pr(&q, P_SIG);
		printf("ahci: port %d SSTS %x SIG %x\n", i, ssts, sig);
		if (sig == 0x101 && disk.n < 0) disk = q;
		else if (sig == 0xeb140101 && cd.n < 0) cd = q;
	}
	if (disk.n < 0) {
		printf("ahci: no disk\n");
		exit_(EXIT_NODEV);
	}
	struct port *p = &disk;
	uint16_t *id = alloc(512, 512);
	build(p, 0, ATA_IDENTIFY, 0, 0, id, 512, 1, 0, 0);
	run1(p, 0);
	char model[41], serial[21];
	for (int i = 0; i < 20; i++) { model[2 * i] = (char)(id[27 + i] >> 8); model[2 * i + 1] = (char)id[27 + i]; }
	for (int i = 0; i < 10; i++) { serial[2 * i] = (char)(id[10 + i] >> 8); serial[2 * i + 1] = (char)id[10 + i]; }
	model[40] = serial[20] = 0;
	for (int i = 39; i >= 0 && model[i] == ' '; i--) model[i] = 0;
	for (int i = 19; i >= 0 && serial[i] == ' '; i--) serial[i] = 0;
	uint64_t sectors = (uint64_t)id[100] | (uint64_t)id[101] << 16 | (uint64_t)id[102] << 32;
	int ncq = !!(id[76] & 0x100), trim = id[169] & 1;
	printf("ahci: port %d disk '%s' serial '%s', %lu sectors (%lu MiB), NCQ %s depth %u, TRIM %s, PRDBC %u\n", p->n, model,
	    serial, sectors, sectors >> 11, ncq ? "yes" : "no", (id[75] & 0x1f) + 1, trim ? "yes" : "no", p->clb[0].prdbc);
	if (!ncq)
		fail("ahci: the disk does not offer NCQ");

	if (param == 0) {
		uint64_t bytes = 2ull << 20;
		if (bytes > sectors * 512)
			fail("ahci: disk too small");
		uint8_t *w = alloc(bytes, 4096), *r = alloc(bytes, 4096);
		disk_pattern(w, 0, bytes);
		uint32_t sum = crc32(0, w, bytes);
		seq_ncq(p, 1, w, bytes, bytes, 64 * 1024, 32);
		build(p, 0, ATA_FLUSH48, 0, 0, 0, 0, 0, 0, 0);
		run1(p, 0);
		for (uint64_t off = 0; off < bytes; off += 64 * 1024) {
			build(p, 1, ATA_READ_DMA48, off / 512, 128, r + off, 64 * 1024, 2, 0, 0);
			run1(p, 1);
			if (p->clb[1].prdbc != 64 * 1024)
				fail("ahci: READ DMA EXT moved %u bytes", p->clb[1].prdbc);
		}
		uint32_t rsum = crc32(0, r, bytes);
		if (rsum != sum || memcmp(w, r, bytes))
			fail("ahci: read back checksum %08x, wrote %08x", rsum, sum);
		printf("ahci: wrote %lu sectors, read back OK, checksum %08x\n", bytes / 512, sum);
		randread(p, r, bytes, 512, 32, 1);
		printf("ahci: 512 random NCQ reads at depth 32 match\n");
		if (trim) {
			uint64_t *range = alloc(512, 512);
			range[0] = 0 | (128ull << 48);	/* LBA 0, 128 sectors */
			build(p, 2, ATA_DSM, 0, 1, range, 512, 1, 1, 0);
			run1(p, 2);
			build(p, 3, ATA_READ_DMA48, 0, 128, r, 64 * 1024, 1, 0, 0);
			run1(p, 3);
			for (int i = 0; i < 64 * 1024; i++)
				if (r[i])
					fail("ahci: byte %d of a trimmed range reads %02x", i, r[i]);
			printf("ahci: TRIM of 128 sectors reads back as zeros\n");
		}
		if (cd.n >= 0)
			atapi_checks(&cd);
		if (vec >= 0)
			printf("ahci: interrupts: %s vector %x %u, %lu commands\n", irq_mode_name(irqmode), vec, irq_count[vec], commands);
		if (mode & MODE_HOLD)
			irq_hold_com1();
		return EXIT_OK;
	}

	uint64_t mib = param & 0xffff, nrand = (uint64_t)(param >> 16) * 1000;
	uint64_t bytes = mib << 20;
	if (bytes > sectors * 512)
		fail("ahci: bench needs %lu MiB, the disk has %lu", mib, sectors >> 11);
	uint64_t buflen = bytes < (8ull << 20) ? bytes : 8ull << 20;
	uint8_t *buf = alloc(buflen, 4096), *rbuf = alloc(32 * 4096, 4096);
	disk_pattern(buf, 0, buflen);
	uint64_t hz = tsc_hz_from_rtc();
	poll_timeout_cycles = hz * 30;
	printf("bench: tsc_hz %lu\n", hz);
	uint64_t t0 = rdtsc();
	seq_ncq(p, 1, buf, buflen, bytes, 128 * 1024, 32);
	uint64_t t1 = rdtsc();
	build(p, 0, ATA_FLUSH48, 0, 0, 0, 0, 0, 0, 0);
	run1(p, 0);
	uint64_t t2 = rdtsc();
	seq_ncq(p, 0, buf, buflen, bytes, 128 * 1024, 32);
	uint64_t t3 = rdtsc();
	printf("bench: seq-write %lu bytes %lu cycles chunk %u depth %d\n", bytes, t1 - t0, 128 * 1024, 32);
	printf("bench: flush %lu cycles\n", t2 - t1);
	printf("bench: seq-read %lu bytes %lu cycles chunk %u depth %d\n", bytes, t3 - t2, 128 * 1024, 32);
	if (nrand) {
		t0 = rdtsc();
		randread(p, rbuf, bytes, (uint32_t)nrand, 32, 0);
		t1 = rdtsc();
		printf("bench: rand-read %lu x 4096 %lu cycles depth 32\n", nrand, t1 - t0);
		t0 = rdtsc();
		randread(p, rbuf, bytes, (uint32_t)(nrand / 4), 1, 0);
		t1 = rdtsc();
		printf("bench: rand-read %lu x 4096 %lu cycles depth 1\n", nrand / 4, t1 - t0);
	}
	printf("bench: done\n");
	if (mode & MODE_HOLD)
		irq_hold_com1();
	return EXIT_OK;
}
