/*
 * virtio-blk.rom: find the virtio block device (1af4:1042, or transitional
 * 1af4:1001), drive it through the modern transport and
 *   - print its capacity and GET_ID serial,
 *   - test mode (ROM parameter 0, the default): write a 4 MiB pattern
 *     (generated in ring 3, a function of the disk byte offset) to sectors
 *     0.. with OUT requests (256 KiB, up to 16 in flight), FLUSH, read it
 *     back with IN requests (64 KiB in two data descriptors each, up to 8
 *     in flight), compare, and print
 *       virtio-blk: wrote N sectors, read back OK, checksum XXXXXXXX
 *     (XXXXXXXX = zlib CRC-32 of the bytes written, i.e. of the first
 *     N*512 bytes of the disk image), exit 0x10 (status 33);
 *   - bench mode (parameter != 0): bits 0..15 = M MiB, bits 16..31 = K:
 *     calibrate the TSC against the RTC seconds, write M MiB sequentially,
 *     FLUSH, read M MiB sequentially, then K*1000 random 4 KiB reads within
 *     the first M MiB at queue depth 32 and K*250 at depth 1, printing TSC
 *     cycles per phase ("bench: ..." lines, see bench/virtio-blk.mjs) and
 *     the notifies each phase sent.
 * Sequential and random transfers notify only when the device asks, as
 * Linux's virtqueue_kick_prepare (VIRTQ_USED_F_NO_NOTIFY, or avail_event
 * under EVENT_IDX): a device that leaves them off without serving hangs
 * the guest, which then times out.
 * A smaller disk than the pattern shrinks it; failures print "FAIL: ..."
 * and exit 1 (status 3), no device 2 (status 5), timeout 3 (status 7).
 *
 * Interrupt mode (the mode word at 0xFFE4, irq.h: MODE_MSIX, MODE_MSI,
 * MODE_INTX, optionally | MODE_EVENT_IDX, | MODE_HOLD): completions are
 * taken only after an interrupt (vlib.c vq_wait); after the test the guest
 * checks that the device honours interrupt suppression (without EVENT_IDX:
 * VIRTQ_AVAIL_F_NO_INTERRUPT; with it: used_event, and that the device
 * publishes avail_event), then prints
 *   virtio-blk: interrupts: MODE queue vector V N, config vector C M, R requests
 * and, with MODE_HOLD, waits for a byte on COM1 before exiting.
 */
#include "vlib.h"
#include "irq.h"

#define T_IN		0
#define T_OUT		1
#define T_FLUSH		4
#define T_GET_ID	8
#define F_SIZE_MAX	1
#define F_SEG_MAX	2
#define F_BLK_SIZE	6
#define F_FLUSH		9

struct blk_hdr { uint32_t type, reserved; uint64_t sector; };
struct slot { struct blk_hdr hdr; uint8_t status; uint8_t busy; };

#define MAX_DEPTH	32
static struct vdev *dev;
static struct slot *slots;
static int head_slot[1024];
static uint32_t seg_max = 0xffff, size_max = 0xffffffff;
static uint64_t requests;
static uint64_t kicks;		/* notifies sent by seq() and randread() */

/* Notify unless the device asked not to (as Linux's virtqueue_kick_prepare),
 * counting the notifies sent. */
static void kick(void)
{
	if (vq_kick_prepare(dev, &dev->vq[0])) {
		vq_kick(&dev->vq[0]);
		kicks++;
	}
}

static const char *tname(uint32_t t)
{
	return t == T_IN ? "IN" : t == T_OUT ? "OUT" : t == T_FLUSH ? "FLUSH" : t == T_GET_ID ? "GET_ID" : "?";
}

/* Queue one request on slot s: header, nseg data segments of len/nseg bytes, status. */
static void submit(int s, uint32_t type, uint64_t sector, void *buf, uint32_t len, int nseg)
{
	struct vbuf b[6];
	int n = 0;
	struct slot *sl = &slots[s];
	sl->hdr.type = type;
	sl->hdr.reserved = 0;
	sl->hdr.sector = sector;
	sl->status = 0xff;
	sl->busy = 1;
	b[n++] = (struct vbuf){ &sl->hdr, sizeof(sl->hdr), 0 };
	for (int k = 0; k < nseg && len; k++)
		b[n++] = (struct vbuf){ (uint8_t *)buf + k * (len / nseg), len / nseg, type != T_OUT };
	b[n++] = (struct vbuf){ &sl->status, 1, 1 };
	int head = vq_add(&dev->vq[0], b, n);
	if (head < 0)
		fail("virtio-blk: queue full");
	head_slot[head] = s;
}

/* Wait for one completion; check its status; return its slot. */
static int complete(void)
{
	uint32_t len;
	int head = vq_wait(dev, &dev->vq[0], &len);
	int s = head_slot[head];
	struct slot *sl = &slots[s];
	if (!sl->busy)
		fail("virtio-blk: completion for an idle request");
	sl->busy = 0;
	requests++;
	if (sl->status != 0)
		fail("virtio-blk: %s sector %lu: status %u", tname(sl->hdr.type), sl->hdr.sector, sl->status);
	return s;
}

/* Sequential transfer of `bytes` at disk byte 0 from/to buf (wrapping
 * around a buffer of buflen bytes), `chunk` per request, `depth` in flight. */
static void seq(uint32_t type, uint8_t *buf, uint64_t buflen, uint64_t bytes, uint32_t chunk, int depth, int nseg)
{
	uint64_t next = 0;
	int inflight = 0;
	uint8_t freelist[MAX_DEPTH];
	int nfree = 0;
	for (int s = depth - 1; s >= 0; s--)
		freelist[nfree++] = (uint8_t)s;
	while (next < bytes || inflight) {
		int queued = 0;
		while (nfree && next < bytes) {
			uint32_t len = bytes - next < chunk ? (uint32_t)(bytes - next) : chunk;
			submit(freelist[--nfree], type, next / 512, buf + next % buflen, len, nseg);
			next += len;
			inflight++;
			queued++;
		}
		if (queued)
			kick();
		freelist[nfree++] = (uint8_t)complete();
		inflight--;
	}
}

static void simple(uint32_t type, void *buf, uint32_t len)
{
	submit(0, type, 0, buf, len, len ? 1 : 0);
	vq_kick(&dev->vq[0]);
	complete();
}

/* n random 4 KiB reads within the first `span` bytes, `depth` in flight. */
static void randread(uint8_t *buf, uint64_t span, uint32_t n, int depth)
{
	uint32_t issued = 0, done = 0;
	uint8_t freelist[MAX_DEPTH];
	int nfree = 0;
	for (int s = depth - 1; s >= 0; s--)
		freelist[nfree++] = (uint8_t)s;
	while (done < n) {
		int queued = 0;
		while (nfree && issued < n) {
			int s = freelist[--nfree];
			uint64_t off = (xorshift() % (span / 4096)) * 4096;
			submit(s, T_IN, off / 512, buf + (uint64_t)s * 4096, 4096, 1);
			issued++;
			queued++;
		}
		if (queued)
			kick();
		freelist[nfree++] = (uint8_t)complete();
		done++;
	}
}

/* Submit one GET_ID and take its completion by polling the used ring. */
static void request_polled(char *id)
{
	submit(0, T_GET_ID, 0, id, 20, 1);
	vq_kick(&dev->vq[0]);
	uint64_t t0 = rdtsc();
	while (!vq_pending(&dev->vq[0]))
		if (rdtsc() - t0 > poll_timeout_cycles)
			fail("virtio-blk: suppression check: request not completed");
	uint32_t len;
	int head = vq_get(&dev->vq[0], &len);
	slots[head_slot[head]].busy = 0;
	requests++;
	dev->vq[0].covered = dev->vq[0].used_idx;	/* taken without an interrupt, on purpose */
}

/* ~0.1 s with interrupts on: whatever the device still had to send arrives. */
static uint32_t quiet_count(int vec)
{
	irq_sleep(poll_timeout_cycles / 100);
	return irq_count[vec];
}

/* The device must not interrupt while the driver suppresses it, and must
 * interrupt exactly once when the driver asks again. */
static void check_suppression(char *id)
{
	struct vq *q = &dev->vq[0];
	int vec = q->vec;
	uint32_t base = quiet_count(vec);	/* what is still pending from before */
	if (!(dev->features & (1ull << VIRTIO_F_EVENT_IDX))) {
		vq_set_avail_flags(q, VRING_AVAIL_F_NO_INTERRUPT);
		for (int i = 0; i < 4; i++)
			request_polled(id);
		uint32_t n = quiet_count(vec) - base;
		if (n)
			fail("virtio-blk: %u interrupts for 4 requests under VIRTQ_AVAIL_F_NO_INTERRUPT", n);
		vq_set_avail_flags(q, 0);
		printf("virtio-blk: VIRTQ_AVAIL_F_NO_INTERRUPT: 4 requests, 0 interrupts\n");
	} else {
		uint16_t want = (uint16_t)(q->used_idx + 3);	/* after the 4th */
		vq_set_used_event(q, want);
		for (int i = 0; i < 3; i++)
			request_polled(id);
		uint32_t n = quiet_count(vec) - base;
		if (n)
			fail("virtio-blk: %u interrupts before used_event %u was reached", n, want);
		if (vq_avail_event(q) != q->avail_idx)
			fail("virtio-blk: avail_event is %u, the device consumed %u", vq_avail_event(q), q->avail_idx);
		printf("virtio-blk: used_event %u: 3 requests, 0 interrupts; avail_event %u\n", want, vq_avail_event(q));
	}
	/* One more request, taken by interrupt: exactly one. An INTx whose
	 * handler finds the ISR clear is spurious and counted apart: KVM's
	 * in-kernel I/O APIC here delivers a level-triggered interrupt once
	 * more after the EOI when the line dropped while it was in service
	 * (test/guests/README.md). */
	q->irq_seen = irq_count[vec];
	uint32_t zero = irq_ack_zero[vec];
	submit(0, T_GET_ID, 0, id, 20, 1);
	vq_kick(q);
	complete();
	uint32_t n = quiet_count(vec) - base, spurious = irq_ack_zero[vec] - zero;
	if (n - spurious != 1 || spurious > 1)
		fail("virtio-blk: %u interrupts (%u spurious) for the request that asked for one", n, spurious);
	printf("virtio-blk: interrupt suppression honoured\n");
}

int guest_main(uint32_t param)
{
	uint32_t mode = rom_word(1);
	int irqmode = (int)(mode & 0xf);
	printf("virtio-blk test (%s%s)\n", irq_mode_name(irqmode), mode & MODE_EVENT_IDX ? ", event idx" : "");
	if (irqmode != MODE_POLL || (mode & MODE_HOLD))
		irq_init();
	dev = alloc(sizeof(*dev), 64);
	slots = alloc(sizeof(*slots) * MAX_DEPTH, 64);
	virtio_init(dev, pci_find_virtio(VIRTIO_ID_BLOCK),
	    (1ull << F_FLUSH) | (1ull << F_BLK_SIZE) | (1ull << F_SEG_MAX) | (1ull << F_SIZE_MAX)
	    | (mode & MODE_EVENT_IDX ? 1ull << VIRTIO_F_EVENT_IDX : 0));
	if ((mode & MODE_EVENT_IDX) && !(dev->features & (1ull << VIRTIO_F_EVENT_IDX)))
		fail("virtio-blk: the device does not offer VIRTIO_F_EVENT_IDX");
	virtio_setup_irqs(dev, irqmode);
	virtio_setup_queue(dev, 0, 256);
	virtio_driver_ok(dev);
	uint64_t cap = vcfg64(dev, 0);
	if (dev->features & (1ull << F_SIZE_MAX))
		size_max = vcfg32(dev, 8);
	if (dev->features & (1ull << F_SEG_MAX))
		seg_max = vcfg32(dev, 12);
	uint32_t blk_size = dev->features & (1ull << F_BLK_SIZE) ? vcfg32(dev, 20) : 512;
	printf("virtio-blk: capacity %lu sectors (%lu MiB), blk_size %u, seg_max %u, size_max %u, queue size %u\n",
	    cap, cap >> 11, blk_size, seg_max, size_max, dev->vq[0].size);
	int has_flush = !!(dev->features & (1ull << F_FLUSH));

	char *id = alloc(32, 16);
	simple(T_GET_ID, id, 20);
	printf("virtio-blk: serial '%s'\n", id);

	int depth = MAX_DEPTH;
	if ((unsigned)depth > dev->vq[0].size / 4)
		depth = (int)(dev->vq[0].size / 4);
	uint32_t wchunk = 256 * 1024, rchunk = 64 * 1024;
	while (wchunk > size_max)
		wchunk >>= 1;
	int rseg = seg_max >= 2 ? 2 : 1;
	while (rchunk / (uint32_t)rseg > size_max)
		rchunk >>= 1;

	if (param == 0) {
		uint64_t bytes = 4ull << 20;
		if (bytes > cap * 512)
			bytes = cap * 512 & ~(uint64_t)0xfff;
		if (!bytes)
			fail("virtio-blk: disk too small");
		uint8_t *w = alloc(bytes, 4096), *r = alloc(bytes, 4096);
		disk_pattern(w, 0, bytes);
		uint32_t sum = crc32(0, w, bytes);
		seq(T_OUT, w, bytes, bytes, wchunk, depth < 16 ? depth : 16, 1);
		if (has_flush)
			simple(T_FLUSH, 0, 0);
		else
			printf("virtio-blk: device does not offer VIRTIO_BLK_F_FLUSH\n");
		seq(T_IN, r, bytes, bytes, rchunk, depth < 8 ? depth : 8, rseg);
		uint32_t rsum = crc32(0, r, bytes);
		if (rsum != sum || memcmp(w, r, bytes)) {
			for (uint64_t i = 0; i < bytes; i++)
				if (w[i] != r[i]) {
					printf("virtio-blk: first difference at byte %lu: wrote %02x read %02x\n", i, w[i], r[i]);
					break;
				}
			fail("virtio-blk: read back checksum %08x, wrote %08x", rsum, sum);
		}
		printf("virtio-blk: wrote %lu sectors, read back OK, checksum %08x\n", bytes / 512, sum);
		if (irqmode != MODE_POLL) {
			check_suppression(id);
			int qv = dev->vq[0].vec, cv = dev->vec_config;
			printf("virtio-blk: interrupts: %s queue vector %x %u (%u spurious), config vector %x %u, %lu requests\n",
			    irq_mode_name(irqmode), qv, irq_count[qv], irq_ack_zero[qv], cv, qv == cv ? 0 : irq_count[cv], requests);
		}
		if (mode & MODE_HOLD)
			irq_hold_com1();
		return EXIT_OK;
	}

	/* bench mode */
	uint64_t mib = param & 0xffff, nrand = (uint64_t)(param >> 16) * 1000;
	uint64_t bytes = mib << 20;
	if (bytes > cap * 512)
		fail("virtio-blk: bench needs %lu MiB, the disk has %lu", mib, cap >> 11);
	uint64_t buflen = bytes < (8ull << 20) ? bytes : 8ull << 20;
	uint8_t *buf = alloc(buflen, 4096), *rbuf = alloc(MAX_DEPTH * 4096, 4096);
	disk_pattern(buf, 0, buflen);
	uint64_t hz = tsc_hz_from_rtc();
	poll_timeout_cycles = hz * 30;
	printf("bench: tsc_hz %lu\n", hz);
	uint64_t k[5] = { 0 };
	k[0] = kicks;
	uint64_t t0 = rdtsc();
	seq(T_OUT, buf, buflen, bytes, wchunk, depth < 16 ? depth : 16, 1);
	uint64_t t1 = rdtsc();
	k[1] = kicks;
	if (has_flush)
		simple(T_FLUSH, 0, 0);
	uint64_t t2 = rdtsc();
	k[2] = kicks;
	seq(T_IN, buf, buflen, bytes, wchunk, depth < 16 ? depth : 16, 1);
	uint64_t t3 = rdtsc();
	k[3] = kicks;
	printf("bench: seq-write %lu bytes %lu cycles chunk %u depth %d\n", bytes, t1 - t0, wchunk, depth < 16 ? depth : 16);
	printf("bench: flush %lu cycles\n", t2 - t1);
	printf("bench: seq-read %lu bytes %lu cycles chunk %u depth %d\n", bytes, t3 - t2, wchunk, depth < 16 ? depth : 16);
	if (nrand) {
		t0 = rdtsc();
		randread(rbuf, bytes, (uint32_t)nrand, depth);
		t1 = rdtsc();
		printf("bench: rand-read %lu x 4096 %lu cycles depth %d\n", nrand, t1 - t0, depth);
		k[4] = kicks;
		t0 = rdtsc();
		randread(rbuf, bytes, (uint32_t)(nrand / 4), 1);
		t1 = rdtsc();
		printf("bench: rand-read %lu x 4096 %lu cycles depth 1\n", nrand / 4, t1 - t0);
	}
	/* notifies sent per phase (fewer than requests: the device asked for
	 * none while it was serving) */
	printf("bench: notifies seq-write %lu seq-read %lu rand-read-qd%d %lu rand-read-qd1 %lu\n",
	    k[1] - k[0], k[3] - k[2], depth, nrand ? k[4] - k[3] : 0, nrand ? kicks - k[4] : 0);
	printf("bench: done\n");
	return EXIT_OK;
}
