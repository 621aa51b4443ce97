/*
 * virtio-9p.rom: find the virtio 9P transport (1af4:1049, or the
 * transitional 1af4:1009), read its mount tag, and speak 9P2000.L to it
 * from ring 3 with no file system in the guest: one chain per request
 * (the T-message, then room for the R-message), as Linux's
 * net/9p/trans_virtio.c does.
 *
 *   - test mode (ROM parameter 0): Tversion, Tattach; reads the host's
 *     host.txt; creates guest.txt and writes a 256 KiB pattern in msize
 *     chunks, fsyncs, reads it back through a second fid and compares
 *     (CRC-32); makes gdir, creates and renames tmp.txt to renamed.txt;
 *     lists the root with Treaddir; then tries to leave the share: ".." at
 *     the root (must be the root), a name with a slash, a walk through the
 *     host's link "escape" to a directory outside, opening that link, and
 *     creating through a link of its own to "../outside". Prints
 *       virtio-9p: mount tag 'TAG'
 *       virtio-9p: wrote 262144 bytes to guest.txt, read back OK, checksum XXXXXXXX
 *       virtio-9p: listed: NAME NAME ...
 *       virtio-9p: escapes refused: ...
 *   - bench mode (parameter != 0): bits 0..15 = M MiB: writes M MiB to
 *     bench.bin in msize-sized Twrites, reads it back in msize-sized
 *     Treads, printing "bench: write|read BYTES bytes CYCLES cycles".
 *
 * Interrupt mode (the mode word at 0xFFE4, irq.h) as the other guests:
 * replies are taken only after the queue's interrupt.
 */
#include "vlib.h"
#include "irq.h"

#define VIRTIO_ID_9P	9
#define MSIZE		(128 * 1024)

enum {
	RLERROR = 7, TSTATFS = 8, TLOPEN = 12, TLCREATE = 14, TSYMLINK = 16, TREADLINK = 22,
	TGETATTR = 24, TREADDIR = 40, TFSYNC = 50, TMKDIR = 72, TRENAMEAT = 74, TUNLINKAT = 76,
	TVERSION = 100, TATTACH = 104, TWALK = 110, TREAD = 116, TWRITE = 118, TCLUNK = 120,
};

static struct vdev *dev;
static uint8_t *req, *resp;
static uint32_t req_len, msize;
static uint16_t tag;

/* --- message building --- */
static void put8(uint8_t v) { req[req_len++] = v; }
static void put16(uint16_t v) { put8(v & 0xff); put8(v >> 8); }
static void put32(uint32_t v) { put16(v & 0xffff); put16(v >> 16); }
static void put64(uint64_t v) { put32((uint32_t)v); put32((uint32_t)(v >> 32)); }
static void putstr(const char *s) { uint16_t n = (uint16_t)strlen(s); put16(n); memcpy(req + req_len, s, n); req_len += n; }
static void begin(uint8_t type) { req_len = 0; put32(0); put8(type); put16(++tag); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get32(const uint8_t *p) { return get16(p) | ((uint32_t)get16(p + 2) << 16); }
static uint64_t get64(const uint8_t *p) { return get32(p) | ((uint64_t)get32(p + 4) << 32); }

/* Sends req (and `data` after it, if any), waits for the reply in resp
 * (and `rdata` for Tread's payload). Returns the reply type; *err gets
 * Rlerror's errno. */
static int rpc(const void *data, uint32_t dlen, void *rdata, uint32_t rlen, uint32_t *err)
{
	req[0] = req_len & 0xff; req[1] = (req_len >> 8) & 0xff;
	req[2] = (req_len >> 16) & 0xff; req[3] = (uint8_t)(req_len >> 24);
	if (data) {
		uint32_t total = req_len + dlen;
		req[0] = total & 0xff; req[1] = (total >> 8) & 0xff;
		req[2] = (total >> 16) & 0xff; req[3] = (uint8_t)(total >> 24);
	}
	struct vbuf b[4];
	int n = 0;
	b[n++] = (struct vbuf){ req, req_len, 0 };
	if (data)
		b[n++] = (struct vbuf){ (void *)data, dlen, 0 };
	b[n++] = (struct vbuf){ resp, rdata ? 11 : 4096, 1 };
	if (rdata)
		b[n++] = (struct vbuf){ rdata, rlen, 1 };
	memset(resp, 0, 16);
	if (vq_add(&dev->vq[0], b, n) < 0)
		fail("virtio-9p: queue full");
	vq_kick(&dev->vq[0]);
	uint32_t len;
	vq_wait(dev, &dev->vq[0], &len);
	if (len < 7)
		fail("virtio-9p: reply of %u bytes", len);
	if (get16(resp + 5) != tag)
		fail("virtio-9p: reply tag %u, sent %u", get16(resp + 5), tag);
	if (resp[4] == RLERROR) {
		*err = get32(resp + 7);
		return RLERROR;
	}
	*err = 0;
	return resp[4];
}

/* A request that must succeed. */
static void ok(const char *what, const void *data, uint32_t dlen, void *rdata, uint32_t rlen)
{
	uint32_t err;
	int t = rpc(data, dlen, rdata, rlen, &err);
	if (t == RLERROR)
		fail("virtio-9p: %s: Rlerror %u", what, err);
}

static uint32_t walk(uint32_t fid, uint32_t newfid, int n, const char **names, uint16_t *nwqid)
{
	begin(TWALK); put32(fid); put32(newfid); put16((uint16_t)n);
	for (int i = 0; i < n; i++)
		putstr(names[i]);
	uint32_t err;
	rpc(0, 0, 0, 0, &err);
	*nwqid = err ? 0 : get16(resp + 7);
	return err;
}

static void clunk(uint32_t fid)
{
	begin(TCLUNK); put32(fid);
	ok("Tclunk", 0, 0, 0, 0);
}

static uint8_t pat(uint64_t i) { return (uint8_t)((i * 131 + (i >> 9) * 7 + 1) & 0xff); }

static void write_file(uint32_t fid, const uint8_t *buf, uint64_t total)
{
	uint32_t chunk = msize - 23;
	for (uint64_t off = 0; off < total;) {
		uint32_t n = total - off < chunk ? (uint32_t)(total - off) : chunk;
		begin(TWRITE); put32(fid); put64(off); put32(n);
		ok("Twrite", buf + off, n, 0, 0);
		uint32_t got = get32(resp + 7);
		if (got == 0 || got > n)
			fail("virtio-9p: Rwrite count %u of %u", got, n);
		off += got;
	}
}

static uint64_t read_file(uint32_t fid, uint8_t *buf, uint64_t max)
{
	uint32_t chunk = msize - 11;
	uint64_t off = 0;
	while (off < max) {
		uint32_t n = max - off < chunk ? (uint32_t)(max - off) : chunk;
		begin(TREAD); put32(fid); put64(off); put32(n);
		ok("Tread", 0, 0, buf + off, n);
		uint32_t got = get32(resp + 7);
		if (got > n)
			fail("virtio-9p: Rread count %u of %u", got, n);
		if (got == 0)
			break;
		off += got;
	}
	return off;
}

static void version_attach(void)
{
	begin(TVERSION); put32(MSIZE); putstr("9P2000.L");
	ok("Tversion", 0, 0, 0, 0);
	msize = get32(resp + 7);
	char v[16] = { 0 };
	uint16_t vl = get16(resp + 11);
	memcpy(v, resp + 13, vl < 15 ? vl : 15);
	printf("virtio-9p: version %s msize %u\n", v, msize);
	if (msize > MSIZE || msize < 8192)
		fail("virtio-9p: msize %u", msize);
	begin(TATTACH); put32(0); put32(0xffffffff); putstr("root"); putstr(""); put32(0);
	ok("Tattach", 0, 0, 0, 0);
}

static uint64_t root_qid_path;

static int test_mode(void)
{
	uint8_t *buf = alloc(256 * 1024, 4096), *back = alloc(256 * 1024, 4096);
	uint16_t nq;
	uint32_t err;
	/* the root's qid, for the ".." check */
	begin(TGETATTR); put32(0); put64(0x7ff);
	ok("Tgetattr", 0, 0, 0, 0);
	root_qid_path = get64(resp + 7 + 8 + 5);
	/* a file the host put there */
	const char *host[] = { "host.txt" };
	if (walk(0, 1, 1, host, &nq) || nq != 1)
		fail("virtio-9p: walk to host.txt failed");
	begin(TLOPEN); put32(1); put32(0);
	ok("Tlopen host.txt", 0, 0, 0, 0);
	uint64_t n = read_file(1, back, 4096);
	back[n] = 0;
	while (n && (back[n - 1] == '\n' || back[n - 1] == '\r'))
		back[--n] = 0;
	printf("virtio-9p: host.txt says '%s'\n", (char *)back);
	clunk(1);
	/* create, write, fsync */
	for (uint64_t i = 0; i < 256 * 1024; i++)
		buf[i] = pat(i);
	uint32_t sum = crc32(0, buf, 256 * 1024);
	if (walk(0, 2, 0, 0, &nq))
		fail("virtio-9p: clone walk failed");
	begin(TLCREATE); put32(2); putstr("guest.txt"); put32(2 /* O_RDWR */); put32(0644); put32(0);
	ok("Tlcreate guest.txt", 0, 0, 0, 0);
	write_file(2, buf, 256 * 1024);
	begin(TFSYNC); put32(2); put32(0);
	ok("Tfsync", 0, 0, 0, 0);
	clunk(2);
	/* read back through a new fid */
	const char *g[] = { "guest.txt" };
	if (walk(0, 3, 1, g, &nq) || nq != 1)
		fail("virtio-9p: walk to guest.txt failed");
	begin(TLOPEN); put32(3); put32(0);
	ok("Tlopen guest.txt", 0, 0, 0, 0);
	memset(back, 0, 256 * 1024);
	uint64_t got = read_file(3, back, 256 * 1024);
	clunk(3);
	if (got != 256 * 1024 || memcmp(buf, back, 256 * 1024))
		fail("virtio-9p: read back %lu bytes that differ", got);
	uint32_t rsum = crc32(0, back, 256 * 1024);
	if (rsum != sum)
		fail("virtio-9p: read back checksum %08x, wrote %08x", rsum, sum);
	printf("virtio-9p: wrote 262144 bytes to guest.txt, read back OK, checksum %08x\n", sum);
	/* mkdir; create and rename */
	begin(TMKDIR); put32(0); putstr("gdir"); put32(0755); put32(0);
	ok("Tmkdir", 0, 0, 0, 0);
	walk(0, 4, 0, 0, &nq);
	begin(TLCREATE); put32(4); putstr("tmp.txt"); put32(1 /* O_WRONLY */); put32(0644); put32(0);
	ok("Tlcreate tmp.txt", 0, 0, 0, 0);
	write_file(4, (const uint8_t *)"renamed\n", 8);
	clunk(4);
	begin(TRENAMEAT); put32(0); putstr("tmp.txt"); put32(0); putstr("renamed.txt");
	ok("Trenameat", 0, 0, 0, 0);
	/* list the root */
	walk(0, 5, 0, 0, &nq);
	begin(TLOPEN); put32(5); put32(0200000 /* O_DIRECTORY */);
	ok("Tlopen /", 0, 0, 0, 0);
	printf("virtio-9p: listed:");
	uint64_t off = 0;
	for (int round = 0; round < 64; round++) {
		begin(TREADDIR); put32(5); put64(off); put32(512);
		ok("Treaddir", 0, 0, back, 512);
		uint32_t count = get32(resp + 7);
		if (count == 0)
			break;
		for (uint32_t at = 0; at < count;) {
			uint16_t nl = get16(back + at + 22);
			off = get64(back + at + 13);
			char name[64] = { 0 };
			memcpy(name, back + at + 24, nl < 63 ? nl : 63);
			if (strlen(name) && !(name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0))))
				printf(" %s", name);
			at += 24u + nl;
		}
	}
	printf("\n");
	clunk(5);
	/* leave the share: every way must fail */
	const char *up[] = { "..", ".." };
	if (walk(0, 6, 2, up, &nq) || nq != 2)
		fail("virtio-9p: walking .. at the root failed");
	uint64_t upq = get64(resp + 9 + 13 + 5);
	if (upq != root_qid_path)
		fail("virtio-9p: .. at the root is not the root (qid %lx, root %lx)", upq, root_qid_path);
	clunk(6);
	const char *slash[] = { "../outside" };
	uint32_t e1 = walk(0, 7, 1, slash, &nq);
	if (!e1)
		fail("virtio-9p: walked a name with a slash");
	const char *through[] = { "escape", "secret" };
	uint32_t e2 = walk(0, 8, 2, through, &nq);
	if (!e2 && nq == 2)
		fail("virtio-9p: walked through the host's link out of the share");
	if (!e2) {
		/* a partial walk makes no fid */
		begin(TGETATTR); put32(8); put64(0x7ff);
		if (rpc(0, 0, 0, 0, &err) != RLERROR)
			fail("virtio-9p: a partial walk made a fid");
	}
	const char *esc[] = { "escape" };
	if (walk(0, 9, 1, esc, &nq) || nq != 1)
		fail("virtio-9p: walk to the link itself failed");
	begin(TLOPEN); put32(9); put32(0);
	uint32_t e3;
	if (rpc(0, 0, 0, 0, &e3) != RLERROR)
		fail("virtio-9p: opened the host's link out of the share");
	begin(TLCREATE); put32(9); putstr("planted"); put32(2); put32(0644); put32(0);
	uint32_t e4;
	if (rpc(0, 0, 0, 0, &e4) != RLERROR)
		fail("virtio-9p: created a file through the host's link");
	clunk(9);
	begin(TSYMLINK); put32(0); putstr("mine"); putstr("../outside"); put32(0);
	ok("Tsymlink", 0, 0, 0, 0);
	const char *mine[] = { "mine" };
	walk(0, 10, 1, mine, &nq);
	begin(TMKDIR); put32(10); putstr("planted"); put32(0755); put32(0);
	uint32_t e5;
	if (rpc(0, 0, 0, 0, &e5) != RLERROR)
		fail("virtio-9p: made a directory through the guest's own link");
	clunk(10);
	printf("virtio-9p: escapes refused: slash %u, through link %s, open link %u, create via link %u, mkdir via own link %u\n",
	    e1, e2 ? "error" : "partial", e3, e4, e5);
	return EXIT_OK;
}

static int bench_mode(uint32_t param)
{
	uint64_t bytes = (uint64_t)(param & 0xffff) << 20;
	uint64_t buflen = 8ull << 20;
	uint8_t *buf = alloc(buflen, 4096);
	for (uint64_t i = 0; i < buflen; i++)
		buf[i] = pat(i);
	uint64_t hz = tsc_hz_from_rtc();
	poll_timeout_cycles = hz * 30;
	printf("bench: tsc_hz %lu\n", hz);
	uint16_t nq;
	walk(0, 1, 0, 0, &nq);
	begin(TLCREATE); put32(1); putstr("bench.bin"); put32(2); put32(0644); put32(0);
	ok("Tlcreate bench.bin", 0, 0, 0, 0);
	uint32_t wchunk = msize - 23, rchunk = msize - 11;
	uint64_t t0 = rdtsc();
	for (uint64_t off = 0; off < bytes;) {
		uint32_t n = bytes - off < wchunk ? (uint32_t)(bytes - off) : wchunk;
		begin(TWRITE); put32(1); put64(off); put32(n);
		ok("Twrite", buf + (off % (buflen - wchunk)), n, 0, 0);
		off += get32(resp + 7);
	}
	uint64_t t1 = rdtsc();
	for (uint64_t off = 0; off < bytes;) {
		uint32_t n = bytes - off < rchunk ? (uint32_t)(bytes - off) : rchunk;
		begin(TREAD); put32(1); put64(off); put32(n);
		ok("Tread", 0, 0, buf, n);
		uint32_t got = get32(resp + 7);
		if (!got)
			fail("virtio-9p: short file");
		off += got;
	}
	uint64_t t2 = rdtsc();
	clunk(1);
	printf("bench: write %lu bytes %lu cycles chunk %u\n", bytes, t1 - t0, wchunk);
	printf("bench: read %lu bytes %lu cycles chunk %u\n", bytes, t2 - t1, rchunk);
	printf("bench: done\n");
	return EXIT_OK;
}

int guest_main(uint32_t param)
{
	uint32_t mode = rom_word(1);
	int irqmode = (int)(mode & 0xf);
	printf("virtio-9p test (%s)\n", irq_mode_name(irqmode));
	if (irqmode != MODE_POLL || (mode & MODE_HOLD))
		irq_init();
	dev = alloc(sizeof(*dev), 64);
	virtio_init(dev, pci_find_virtio(VIRTIO_ID_9P), 1ull << 0 /* VIRTIO_9P_MOUNT_TAG */);
	if (!(dev->features & 1))
		fail("virtio-9p: no VIRTIO_9P_MOUNT_TAG");
	virtio_setup_irqs(dev, irqmode);
	virtio_setup_queue(dev, 0, 128);
	virtio_driver_ok(dev);
	char mtag[64] = { 0 };
	uint16_t tl = vcfg16(dev, 0);
	for (int i = 0; i < tl && i < 63; i++)
		mtag[i] = (char)vcfg8(dev, 2 + i);
	printf("virtio-9p: mount tag '%s'\n", mtag);
	req = alloc(8192, 4096);
	resp = alloc(8192, 4096);
	version_attach();
	int r = param ? bench_mode(param) : test_mode();
	if (irqmode != MODE_POLL) {
		int qv = dev->vq[0].vec;
		printf("virtio-9p: interrupts: %s queue vector %x %u\n", irq_mode_name(irqmode), qv, irq_count[qv]);
	}
	if (mode & MODE_HOLD)
		irq_hold_com1();
	return r;
}
