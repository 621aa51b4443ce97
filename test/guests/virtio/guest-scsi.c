/*
 * virtio-scsi.rom: find the virtio SCSI host (1af4:1048, or the
 * transitional 1af4:1004), and drive target 0 LUN 0 from ring 3 as
 * Linux's virtio_scsi + sd do, one command at a time on request queue 2
 * (the request header and CDB, data-out, then the response header and
 * data-in):
 *
 *   - test mode (ROM parameter 0): TEST UNIT READY until the unit is
 *     ready (a first UNIT ATTENTION is normal), INQUIRY (standard and the
 *     VPD page list), READ CAPACITY(16), REPORT LUNS, MODE SENSE(6) of the
 *     caching page; writes a 1 MiB pattern with WRITE(10) of 64 KiB,
 *     SYNCHRONIZE CACHE(10), reads it back with READ(16) of 32 KiB into two
 *     descriptors and compares (CRC-32); then a READ past the last block and
 *     an unknown operation code, which must end in CHECK CONDITION. Prints
 *       virtio-scsi: inquiry 'VENDOR PRODUCT REV'
 *       virtio-scsi: capacity N blocks of B bytes
 *       virtio-scsi: wrote 2048 blocks, read back OK, checksum XXXXXXXX
 *       virtio-scsi: read past the end: sense K/ASC, unknown opcode: sense K/ASC
 *   - bench mode (parameter != 0): bits 0..15 = M MiB, bits 16..31 = K:
 *     writes M MiB sequentially with WRITE(16) of 256 KiB, SYNCHRONIZE
 *     CACHE, reads it back with READ(16) of 256 KiB, then K*1000 random
 *     4 KiB READ(10)s, one command in flight, printing
 *     "bench: seq-write|seq-read BYTES bytes CYCLES cycles",
 *     "bench: rand-read N x 4096 CYCLES cycles depth 1".
 *
 * Interrupt mode (the mode word at 0xFFE4, irq.h) as the other guests.
 */
#include "vlib.h"
#include "irq.h"

#define VIRTIO_ID_SCSI	8
#define REQ_HDR		(19 + 32)
#define RESP_HDR	(12 + 96)

static struct vdev *dev;
static uint8_t *req, *resp;
static uint32_t blocks_lo;
static uint64_t nblocks;
static uint32_t bsize;

struct result { uint8_t response, status, key, asc; uint32_t residual, in; };

static void be32w(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static void be64w(uint8_t *p, uint64_t v) { be32w(p, (uint32_t)(v >> 32)); be32w(p + 4, (uint32_t)v); }
static uint32_t be32r(const uint8_t *p) { return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]; }
static uint32_t le32r(const uint8_t *p) { return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24); }

/* One command: cdb (up to 16 bytes), data-out or data-in (split in
 * `split` descriptors). */
static struct result cmd(const uint8_t *cdb, int cdblen, const void *out, uint32_t outlen, void *in, uint32_t inlen, int split)
{
	memset(req, 0, REQ_HDR);
	req[0] = 1; req[1] = 0; req[2] = 0x40; req[3] = 0;	/* target 0, LUN 0 */
	memcpy(req + 19, cdb, cdblen);
	memset(resp, 0xee, RESP_HDR);
	struct vbuf b[5];
	int n = 0;
	b[n++] = (struct vbuf){ req, REQ_HDR, 0 };
	if (outlen)
		b[n++] = (struct vbuf){ (void *)out, outlen, 0 };
	b[n++] = (struct vbuf){ resp, RESP_HDR, 1 };
	if (inlen) {
		uint32_t first = split > 1 ? inlen / 2 : inlen;
		b[n++] = (struct vbuf){ in, first, 1 };
		if (split > 1)
			b[n++] = (struct vbuf){ (uint8_t *)in + first, inlen - first, 1 };
	}
	struct vq *q = &dev->vq[2];
	if (vq_add(q, b, n) < 0)
		fail("virtio-scsi: request queue full");
	vq_kick(q);
	uint32_t len;
	vq_wait(dev, q, &len);
	struct result r = { resp[11], resp[10], 0, 0, le32r(resp + 4), len > RESP_HDR ? len - RESP_HDR : 0 };
	if (len < RESP_HDR)
		fail("virtio-scsi: used length %u is shorter than the response header", len);
	if (r.status == 2 && le32r(resp) >= 14) {
		r.key = resp[12 + 2] & 0xf;
		r.asc = resp[12 + 12];
	}
	return r;
}

static void good(const char *what, struct result r)
{
	if (r.response != 0 || r.status != 0)
		fail("virtio-scsi: %s: response %u status %u sense %u/%x", what, r.response, r.status, r.key, r.asc);
}

static void rw10(uint8_t op, uint32_t lba, uint16_t n, void *buf, int split)
{
	uint8_t c[10] = { op, 0, 0, 0, 0, 0, 0, (uint8_t)(n >> 8), (uint8_t)n, 0 };
	be32w(c + 2, lba);
	uint32_t len = (uint32_t)n * bsize;
	good(op == 0x28 ? "READ(10)" : "WRITE(10)",
	    op == 0x28 ? cmd(c, 10, 0, 0, buf, len, split) : cmd(c, 10, buf, len, 0, 0, 1));
}

static void rw16(uint8_t op, uint64_t lba, uint32_t n, void *buf, int split)
{
	uint8_t c[16] = { op };
	be64w(c + 2, lba);
	be32w(c + 10, n);
	uint32_t len = n * bsize;
	good(op == 0x88 ? "READ(16)" : "WRITE(16)",
	    op == 0x88 ? cmd(c, 16, 0, 0, buf, len, split) : cmd(c, 16, buf, len, 0, 0, 1));
}

static void sync_cache(void)
{
	uint8_t c[10] = { 0x35 };
	good("SYNCHRONIZE CACHE", cmd(c, 10, 0, 0, 0, 0, 1));
}

static uint8_t pat(uint64_t i) { return (uint8_t)((i * 29 + (i >> 9) * 3 + 5) & 0xff); }

static void bring_up(void)
{
	uint8_t *buf = alloc(4096, 64);
	uint8_t tur[6] = { 0 };
	int tries = 0;
	for (;; tries++) {
		struct result r = cmd(tur, 6, 0, 0, 0, 0, 1);
		if (r.response != 0)
			fail("virtio-scsi: TEST UNIT READY: response %u", r.response);
		if (r.status == 0)
			break;
		if (tries > 5)
			fail("virtio-scsi: unit not ready: sense %u/%x", r.key, r.asc);
	}
	uint8_t inq[6] = { 0x12, 0, 0, 0, 96, 0 };
	struct result r = cmd(inq, 6, 0, 0, buf, 96, 1);
	good("INQUIRY", r);
	char id[29];
	memcpy(id, buf + 8, 28);
	id[28] = 0;
	printf("virtio-scsi: inquiry '%s', device type %u\n", id, buf[0] & 0x1f);
	uint8_t vpd[6] = { 0x12, 1, 0, 0, 64, 0 };
	good("INQUIRY VPD 0", cmd(vpd, 6, 0, 0, buf, 64, 1));
	printf("virtio-scsi: vpd pages");
	for (int i = 0; i < buf[3] && i < 32; i++)
		printf(" %02x", buf[4 + i]);
	printf("\n");
	uint8_t rc16[16] = { 0x9e, 0x10 };
	rc16[13] = 32;
	good("READ CAPACITY(16)", cmd(rc16, 16, 0, 0, buf, 32, 1));
	nblocks = ((uint64_t)be32r(buf) << 32 | be32r(buf + 4)) + 1;
	bsize = be32r(buf + 8);
	blocks_lo = (uint32_t)nblocks;
	printf("virtio-scsi: capacity %lu blocks of %u bytes\n", nblocks, bsize);
	if (bsize != 512 && bsize != 4096)
		fail("virtio-scsi: block size %u", bsize);
}

static int test_mode(void)
{
	uint8_t *buf = alloc(4096, 64);
	uint8_t rl[12] = { 0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0 };
	good("REPORT LUNS", cmd(rl, 12, 0, 0, buf, 256, 1));
	printf("virtio-scsi: report luns: %u\n", be32r(buf) / 8);
	uint8_t ms[6] = { 0x1a, 0x08, 0x08, 0, 64, 0 };
	good("MODE SENSE(6)", cmd(ms, 6, 0, 0, buf, 64, 1));
	printf("virtio-scsi: caching page %02x, WCE %u\n", buf[4] & 0x3f, (buf[6] >> 2) & 1);
	uint32_t total = 1 << 20;
	uint8_t *w = alloc(total, 4096), *rd = alloc(total, 4096);
	for (uint32_t i = 0; i < total; i++)
		w[i] = pat(i);
	uint32_t per = 65536 / bsize;
	for (uint32_t off = 0; off < total; off += 65536)
		rw10(0x2a, off / bsize, (uint16_t)per, w + off, 1);
	sync_cache();
	per = 32768 / bsize;
	for (uint32_t off = 0; off < total; off += 32768)
		rw16(0x88, off / bsize, per, rd + off, 2);
	if (memcmp(w, rd, total))
		fail("virtio-scsi: read back differs");
	uint32_t sum = crc32(0, w, total);
	if (crc32(0, rd, total) != sum)
		fail("virtio-scsi: checksum");
	printf("virtio-scsi: wrote %u blocks, read back OK, checksum %08x\n", total / bsize, sum);
	/* errors the guest must get back, not a hang or a crash */
	uint8_t past[10] = { 0x28 };
	be32w(past + 2, blocks_lo);
	past[8] = 1;
	struct result e1 = cmd(past, 10, 0, 0, buf, bsize, 1);
	uint8_t unk[6] = { 0xee };
	struct result e2 = cmd(unk, 6, 0, 0, 0, 0, 1);
	if (e1.status != 2 || e2.status != 2)
		fail("virtio-scsi: bad commands got status %u and %u", e1.status, e2.status);
	printf("virtio-scsi: read past the end: sense %u/%x, unknown opcode: sense %u/%x\n", e1.key, e1.asc, e2.key, e2.asc);
	return EXIT_OK;
}

static int bench_mode(uint32_t param)
{
	uint64_t bytes = (uint64_t)(param & 0xffff) << 20;
	uint32_t nrand = (param >> 16) * 1000;
	uint64_t buflen = 8ull << 20;
	uint8_t *buf = alloc(buflen, 4096);
	for (uint64_t i = 0; i < buflen; i++)
		buf[i] = pat(i);
	if (bytes / bsize > nblocks)
		fail("virtio-scsi: the disk holds fewer than %lu bytes", bytes);
	uint64_t hz = tsc_hz_from_rtc();
	poll_timeout_cycles = hz * 30;
	printf("bench: tsc_hz %lu\n", hz);
	uint32_t chunk = 256 * 1024;
	uint64_t t0 = rdtsc();
	for (uint64_t off = 0; off < bytes; off += chunk)
		rw16(0x8a, off / bsize, chunk / bsize, buf + (off % buflen), 1);
	sync_cache();
	uint64_t t1 = rdtsc();
	for (uint64_t off = 0; off < bytes; off += chunk)
		rw16(0x88, off / bsize, chunk / bsize, buf + (off % buflen), 1);
	uint64_t t2 = rdtsc();
	uint64_t x = 88172645463325252ull;
	uint64_t span = bytes / 4096;
	for (uint32_t i = 0; i < nrand; i++) {
		x ^= x << 13; x ^= x >> 7; x ^= x << 17;
		rw10(0x28, (uint32_t)((x % span) * (4096 / bsize)), (uint16_t)(4096 / bsize), buf, 1);
	}
	uint64_t t3 = rdtsc();
	printf("bench: seq-write %lu bytes %lu cycles\n", bytes, t1 - t0);
	printf("bench: seq-read %lu bytes %lu cycles\n", bytes, t2 - t1);
	printf("bench: rand-read %u x 4096 %lu cycles depth 1\n", nrand, t3 - t2);
	printf("bench: done\n");
	return EXIT_OK;
}

int guest_main(uint32_t param)
{
	uint32_t mode = rom_word(1);
	int irqmode = (int)(mode & 0xf);
	printf("virtio-scsi test (%s)\n", irq_mode_name(irqmode));
	if (irqmode != MODE_POLL || (mode & MODE_HOLD))
		irq_init();
	dev = alloc(sizeof(*dev), 64);
	virtio_init(dev, pci_find_virtio(VIRTIO_ID_SCSI), 0);
	virtio_setup_irqs(dev, irqmode);
	for (int i = 0; i < 3; i++)
		virtio_setup_queue(dev, i, 64);
	virtio_driver_ok(dev);
	printf("virtio-scsi: num_queues %u seg_max %u max_sectors %u cdb_size %u sense_size %u max_lun %u\n",
	    vcfg32(dev, 0), vcfg32(dev, 4), vcfg32(dev, 8), vcfg32(dev, 24), vcfg32(dev, 20), vcfg32(dev, 32));
	if (vcfg32(dev, 24) != 32 || vcfg32(dev, 20) != 96)
		fail("virtio-scsi: unexpected cdb_size/sense_size");
	req = alloc(REQ_HDR, 64);
	resp = alloc(RESP_HDR, 64);
	bring_up();
	int r = param ? bench_mode(param) : test_mode();
	if (irqmode != MODE_POLL) {
		int qv = dev->vq[2].vec;
		printf("virtio-scsi: interrupts: %s request queue vector %x %u\n", irq_mode_name(irqmode), qv, irq_count[qv]);
	}
	if (mode & MODE_HOLD)
		irq_hold_com1();
	return r;
}
