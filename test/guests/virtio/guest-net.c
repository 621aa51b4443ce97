/*
 * virtio-net.rom: find the virtio network device (1af4:1041, or
 * transitional 1af4:1000), drive it through the modern transport (features
 * VERSION_1 and MAC; 12-byte virtio_net_hdr; receiveq 0, transmitq 1) and
 * talk to the host at 10.0.2.2 as 10.0.2.15:
 *   - ARP "who-has 10.0.2.2" until a reply arrives (every ~0.1 s, at most
 *     ~100 times: the tap's carrier may come up after the guest starts),
 *     answering ARP requests for 10.0.2.15 meanwhile;
 *   - ICMP echo request (id 0x4242, seq 1, 56 bytes) and wait for the reply.
 * Prints "virtio-net: mac ...", "virtio-net: 10.0.2.2 is at ...",
 * "virtio-net: ping reply from 10.0.2.2 OK" and exits 0x10 (status 33).
 * The host side: a tap with 10.0.2.2/24, e.g. in a network namespace.
 *
 * Bench mode (ROM parameter != 0, used by bench/virtio-net.mjs): bits 0..27
 * = N frames (N > 0), bit 28 = direction (0 TX, 1 RX), bit 29 = large frames (65535
 * bytes: a 65521-byte IPv4 packet, for a tap with MTU 65521, its largest; buffers of
 * 68 KiB) instead of 1514 bytes. Queues of up to 256
 * entries; after the ARP exchange (which also teaches the host our MAC) and
 * a TSC calibration against the RTC (1-2 s):
 *   TX: sends N UDP frames of 1514 (or 65535) bytes (10.0.2.15:40000 ->
 *       10.0.2.2:9, no checksum) as fast as the queue takes them: keeps the transmit
 *       queue full, kicks only when the device has not set NO_NOTIFY, then
 *       waits for every buffer back;
 *   RX: prints "bench: rx ready", then counts received frames of the bench
 *       size (others are recycled uncounted) until N have arrived or none
 *       came for ~1 s after the first (~30 s for the first), recycling each
 *       buffer at once.
 * Prints "bench: tsc_hz HZ", "bench: tx|rx FRAMES frames BYTES bytes CYCLES
 * cycles" (cycles from the first to the last frame) and "bench: done".
 *
 * Peer mode (ROM parameter 0x40000000, bit 30 alone): the guest is 10.0.2.2 for another
 * guest on the same bridge: it answers ARP for 10.0.2.2 and ICMP echo
 * requests, prints "virtio-net: answered ping from 10.0.2.15" after the
 * first and exits 0x10 (status 33); nothing within ~2 minutes fails.
 *
 * Interrupt mode (the mode word at 0xFFE4, irq.h): frames and transmit
 * completions are taken only after interrupts (MSI-X: one vector per queue;
 * MSI or INTx: one for both), then "virtio-net: interrupts: MODE rx vector V
 * N, tx vector W M" and, with MODE_HOLD, a wait for a byte on COM1. With
 * mtu= the device offers VIRTIO_NET_F_MTU: "virtio-net: mtu N".
 */
#include "vlib.h"
#include "irq.h"

#define F_MTU		3
#define F_MAC		5
#define HDR		12
#define RXBUFS		16
#define SMALL_BUFLEN	2048
#define LARGE_BUFLEN	69632
#define LARGE_FRAME	(14 + 65521)

/* Buffer size and bench frame size (large frames in bench mode, bit 29). */
static unsigned BUFLEN = SMALL_BUFLEN, frame_len = 1514;

static struct vdev *d;
static uint8_t *rxmem, *txbuf;
static uint8_t mac[6], host_mac[6];
static uint8_t my_ip[4] = { 10, 0, 2, 15 }, host_ip[4] = { 10, 0, 2, 2 };
static int have_host_mac, got_pong, peer, answered;

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }

static uint16_t ipsum(const uint8_t *p, unsigned n)
{
	uint32_t s = 0;
	for (unsigned i = 0; i + 1 < n; i += 2)
		s += be16(p + i);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static void send(unsigned len)
{
	memset(txbuf, 0, HDR);		/* no offloads, num_buffers 0 */
	if (len < 60)
		len = 60;
	struct vbuf b = { txbuf, HDR + len, 0 };
	if (vq_add(&d->vq[1], &b, 1) < 0)
		fail("virtio-net: tx queue full");
	vq_kick(&d->vq[1]);
	uint32_t l;
	vq_wait(d, &d->vq[1], &l);
}

static void arp(int op, const uint8_t *tha, const uint8_t *tpa, const uint8_t *dst)
{
	uint8_t *f = txbuf + HDR;
	memset(f, 0, 60);
	memcpy(f, dst, 6);
	memcpy(f + 6, mac, 6);
	put16(f + 12, 0x0806);
	put16(f + 14, 1);		/* ethernet */
	put16(f + 16, 0x0800);		/* IPv4 */
	f[18] = 6;
	f[19] = 4;
	put16(f + 20, (uint16_t)op);
	memcpy(f + 22, mac, 6);
	memcpy(f + 28, my_ip, 4);
	memcpy(f + 32, tha, 6);
	memcpy(f + 38, tpa, 4);
	send(42);
}

static void ping(void)
{
	uint8_t *f = txbuf + HDR, *ip = f + 14, *icmp = ip + 20;
	memset(f, 0, 14 + 20 + 8 + 56);
	memcpy(f, host_mac, 6);
	memcpy(f + 6, mac, 6);
	put16(f + 12, 0x0800);
	ip[0] = 0x45;
	put16(ip + 2, 20 + 8 + 56);
	put16(ip + 4, 1);
	ip[8] = 64;
	ip[9] = 1;			/* ICMP */
	memcpy(ip + 12, my_ip, 4);
	memcpy(ip + 16, host_ip, 4);
	put16(ip + 10, ipsum(ip, 20));
	icmp[0] = 8;			/* echo request */
	put16(icmp + 4, 0x4242);
	put16(icmp + 6, 1);
	for (int i = 0; i < 56; i++)
		icmp[8 + i] = (uint8_t)(i + 0x20);
	put16(icmp + 2, ipsum(icmp, 8 + 56));
	send(14 + 20 + 8 + 56);
}

/* Peer mode: answer an echo request to us with the same id, sequence and
 * payload, to the sender's MAC. */
static void echo_reply(const uint8_t *req, uint32_t len)
{
	uint8_t *f = txbuf + HDR, *ip = f + 14, *icmp = ip + 20;
	unsigned iplen = be16(req + 14 + 2);
	if (iplen > len - 14 || iplen > BUFLEN - HDR - 14 || (req[14] & 15) != 5)
		return;
	memcpy(f, req + 6, 6);
	memcpy(f + 6, mac, 6);
	memcpy(f + 12, req + 12, 2 + iplen);
	memcpy(ip + 12, my_ip, 4);
	memcpy(ip + 16, req + 14 + 12, 4);
	ip[8] = 64;
	put16(ip + 10, 0);
	put16(ip + 10, ipsum(ip, 20));
	icmp[0] = 0;
	put16(icmp + 2, 0);
	put16(icmp + 2, ipsum(icmp, iplen - 20));
	send(14 + iplen);
}

static void handle(const uint8_t *f, uint32_t len)
{
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	if (len < 14 || (memcmp(f, mac, 6) && memcmp(f, bcast, 6)))
		return;
	uint16_t type = be16(f + 12);
	if (type == 0x0806 && len >= 42 && be16(f + 14) == 1 && be16(f + 16) == 0x0800) {
		uint16_t op = be16(f + 20);
		if (op == 1 && !memcmp(f + 38, my_ip, 4)) {
			arp(2, f + 22, f + 28, f + 22);	/* reply to who-has us */
		} else if (op == 2 && !memcmp(f + 28, host_ip, 4) && !have_host_mac) {
			memcpy(host_mac, f + 22, 6);
			have_host_mac = 1;
			printf("virtio-net: 10.0.2.2 is at %02x:%02x:%02x:%02x:%02x:%02x\n", host_mac[0], host_mac[1],
			    host_mac[2], host_mac[3], host_mac[4], host_mac[5]);
		}
	} else if (type == 0x0800 && len >= 14 + 20 + 8 + 56) {
		const uint8_t *ip = f + 14, *icmp = ip + (ip[0] & 15) * 4;
		if (ip[9] != 1 || memcmp(ip + 12, host_ip, 4) || memcmp(ip + 16, my_ip, 4))
			return;
		if (peer && icmp[0] == 8) {
			echo_reply(f, len);
			answered = 1;
		} else if (icmp[0] == 0 && be16(icmp + 4) == 0x4242 && be16(icmp + 6) == 1) {
			for (int i = 0; i < 56; i++)
				if (icmp[8 + i] != (uint8_t)(i + 0x20))
					fail("virtio-net: ping reply payload differs at byte %d", i);
			got_pong = 1;
		}
	}
}

/* Receive and handle frames for up to `cycles` TSC cycles or until *flag. */
static void poll_rx(uint64_t cycles, int *flag)
{
	uint64_t t0 = rdtsc();
	while (!*flag && rdtsc() - t0 < cycles) {
		uint32_t len;
		int id = vq_next(d, &d->vq[0], &len, cycles - (rdtsc() - t0));
		if (id < 0)
			continue;
		uint8_t *buf = rxmem + (uint64_t)id * BUFLEN;
		if (len > BUFLEN)
			fail("virtio-net: device wrote %u bytes into a %u-byte buffer", len, BUFLEN);
		if (len > HDR)
			handle(buf + HDR, len - HDR);
		struct vbuf b = { buf, BUFLEN, 1 };
		vq_add(&d->vq[0], &b, 1);
		vq_kick(&d->vq[0]);
	}
}

static void bench_tx(uint64_t n)
{
	struct vq *q = &d->vq[1];
	uint8_t *bufs = alloc((size_t)q->size * BUFLEN, 4096);
	for (unsigned i = 0; i < q->size; i++) {
		uint8_t *f = bufs + (size_t)i * BUFLEN + HDR, *ip = f + 14, *udp = ip + 20;
		memcpy(f, host_mac, 6);
		memcpy(f + 6, mac, 6);
		put16(f + 12, 0x0800);
		ip[0] = 0x45;
		put16(ip + 2, (uint16_t)(frame_len - 14));
		ip[8] = 64;
		ip[9] = 17;			/* UDP */
		memcpy(ip + 12, my_ip, 4);
		memcpy(ip + 16, host_ip, 4);
		put16(ip + 10, ipsum(ip, 20));
		put16(udp, 40000);
		put16(udp + 2, 9);		/* discard */
		put16(udp + 4, (uint16_t)(frame_len - 34));
		for (unsigned k = 0; k < frame_len - 42; k++)
			udp[8 + k] = (uint8_t)k;
	}
	uint64_t added = 0, done = 0, first = 0, last = 0, idle = 0;
	while (done < n) {
		uint32_t len;
		int got = 0;
		while (vq_get(q, &len) >= 0) {
			done++;
			got = 1;
		}
		if (got) {
			last = rdtsc();
			idle = last;
		}
		int more = 0;
		while (added < n && q->num_free) {
			struct vbuf b = { bufs + (size_t)q->free_head * BUFLEN, HDR + frame_len, 0 };
			vq_add(q, &b, 1);
			if (!added)
				first = idle = rdtsc();
			added++;
			more = 1;
		}
		mb();
		/* kick unless the device asked not to be notified (VIRTQ_USED_F_NO_NOTIFY) */
		if (more && !(*(volatile uint16_t *)q->used & 1))
			vq_kick(q);
		if (!got && rdtsc() - idle > poll_timeout_cycles)
			fail("virtio-net: tx stalled after %lu of %lu frames", done, n);
	}
	printf("bench: tx %lu frames %lu bytes %lu cycles\n", n, n * frame_len, last - first);
}

static void bench_rx(uint64_t n, uint64_t hz)
{
	struct vq *q = &d->vq[0];
	uint64_t frames = 0, bytes = 0, first = 0, last = 0, t0 = rdtsc();
	printf("bench: rx ready\n");
	for (;;) {
		uint32_t len;
		int id = vq_get(q, &len);
		uint64_t now = rdtsc();
		if (id < 0) {
			if (frames ? now - last > hz : now - t0 > 30 * hz)
				break;
			__asm__ volatile("pause");
			continue;
		}
		/* Only the flood's frames count (and start the clock): a late ARP
		 * reply or other stray frame before the flood must not. */
		if (len == HDR + frame_len) {
			if (!frames)
				first = now;
			last = now;
			frames++;
			bytes += frame_len;
		}
		struct vbuf b = { rxmem + (uint64_t)id * BUFLEN, BUFLEN, 1 };
		vq_add(q, &b, 1);
		mb();
		if (!(*(volatile uint16_t *)q->used & 1))
			vq_kick(q);
		if (frames == n)
			break;
	}
	if (!frames)
		fail("virtio-net: rx bench received nothing");
	printf("bench: rx %lu frames %lu bytes %lu cycles\n", frames, bytes, last - first);
}

#define PEER_PARAM	0x40000000u

int guest_main(uint32_t param)
{
	peer = param == PEER_PARAM;
	int bench = param != 0 && !peer;
	uint64_t nframes = param & 0x0fffffff;
	int dir = (int)(param >> 28) & 1;
	if (bench && (param >> 29) == 1) {
		BUFLEN = LARGE_BUFLEN;
		frame_len = LARGE_FRAME;
	}
	uint32_t mode = rom_word(1);
	int irqmode = (int)(mode & 0xf);
	printf("virtio-net test (%s%s)\n", irq_mode_name(irqmode), mode & MODE_EVENT_IDX ? ", event idx" : "");
	if (irqmode != MODE_POLL || (mode & MODE_HOLD))
		irq_init();
	d = alloc(sizeof(*d), 64);
	virtio_init(d, pci_find_virtio(VIRTIO_ID_NET), (1ull << F_MAC) | (1ull << F_MTU)
	    | (mode & MODE_EVENT_IDX ? 1ull << VIRTIO_F_EVENT_IDX : 0));
	if ((mode & MODE_EVENT_IDX) && !(d->features & (1ull << VIRTIO_F_EVENT_IDX)))
		fail("virtio-net: the device does not offer VIRTIO_F_EVENT_IDX");
	virtio_setup_irqs(d, irqmode);
	virtio_setup_queue(d, 0, bench ? 256 : 64);
	virtio_setup_queue(d, 1, bench ? 256 : 64);
	if (d->features & (1ull << F_MAC)) {
		for (int i = 0; i < 6; i++)
			mac[i] = vcfg8(d, i);
	} else {
		static const uint8_t dflt[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
		memcpy(mac, dflt, 6);
	}
	printf("virtio-net: mac %02x:%02x:%02x:%02x:%02x:%02x\n", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
	if (d->features & (1ull << F_MTU))
		printf("virtio-net: mtu %u\n", vcfg16(d, 10));
	int nrx = bench ? (int)d->vq[0].size : RXBUFS;
	rxmem = alloc((size_t)nrx * BUFLEN, 4096);
	txbuf = alloc(BUFLEN, 4096);
	for (int i = 0; i < nrx; i++) {
		struct vbuf b = { rxmem + i * BUFLEN, BUFLEN, 1 };
		if (vq_add(&d->vq[0], &b, 1) != i)
			fail("virtio-net: rx buffer %d", i);
	}
	virtio_driver_ok(d);
	vq_kick(&d->vq[0]);

	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff }, zero[6];
	if (peer) {
		/* Peer mode: be 10.0.2.2 for another guest on the same bridge. */
		static const uint8_t a[4] = { 10, 0, 2, 2 }, b[4] = { 10, 0, 2, 15 };
		memcpy(my_ip, a, 4);
		memcpy(host_ip, b, 4);
		printf("virtio-net: peer 10.0.2.2 waiting for 10.0.2.15\n");
		uint64_t hz = tsc_hz_from_rtc();
		for (int s = 0; s < 120 && !answered; s++)
			poll_rx(hz, &answered);
		if (!answered)
			fail("virtio-net: no ping from 10.0.2.15");
		printf("virtio-net: answered ping from 10.0.2.15\n");
		return EXIT_OK;
	}
	/* ~0.1 s per try on a 1-4 GHz TSC; the overall limit is time, not tries */
	uint64_t step = 300000000ull;
	for (int tries = 0; !have_host_mac; tries++) {
		if (tries == 100)
			fail("virtio-net: no ARP reply from 10.0.2.2");
		arp(1, zero, host_ip, bcast);
		poll_rx(step, &have_host_mac);
	}
	if (bench) {
		if (!nframes || (param >> 30))
			fail("virtio-net: bad bench parameter %x", param);
		uint64_t hz = tsc_hz_from_rtc();
		poll_timeout_cycles = hz * 10;
		printf("bench: tsc_hz %lu\n", hz);
		if (dir == 0)
			bench_tx(nframes);
		else
			bench_rx(nframes, hz);
		printf("bench: done\n");
		return EXIT_OK;
	}
	for (int tries = 0; !got_pong; tries++) {
		if (tries == 30)
			fail("virtio-net: no ping reply from 10.0.2.2");
		ping();
		poll_rx(step, &got_pong);
	}
	printf("virtio-net: ping reply from 10.0.2.2 OK\n");
	if (irqmode != MODE_POLL) {
		int rv = d->vq[0].vec, tv = d->vq[1].vec;
		printf("virtio-net: interrupts: %s rx vector %x %u (%u spurious), tx vector %x %u\n", irq_mode_name(irqmode),
		    rv, irq_count[rv], irq_ack_zero[rv], tv, rv == tv ? 0 : irq_count[tv]);
		if (!irq_count[rv] || !irq_count[tv])
			fail("virtio-net: no interrupts");
	}
	if (mode & MODE_HOLD)
		irq_hold_com1();
	return EXIT_OK;
}
