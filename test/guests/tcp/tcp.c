/*
 * tcp.rom: TCP between a ring-3 guest and the host over virtio-net, with
 * Debian's lwIP 2.1.3 (liblwip.so.0, unmodified) as the guest's TCP/IP
 * stack. scripts/lwip-image.mjs loads the library at LWIP_BASE at build
 * time (relocated, its libc/pthread imports bound to libc.c) and stores it
 * in the ROM in front of the usual 64 KiB; this guest copies it into RAM
 * and uses lwIP's raw API from one polling loop (lwip_init, an Ethernet
 * netif, tcp_connect/tcp_write/tcp_recv, sys_check_timeouts); lwIP's
 * tcpip thread is never started.
 *
 * The guest is 10.0.2.15/24 and the host 10.0.2.2 (a tap, as virtio-net.rom).
 * ROM parameter: bits 0..27 = N KiB (0: 1024), bit 28 = send, bit 29 =
 * receive (neither: both), bit 30 = no CRC (bench: count bytes only).
 *   send:    connect to 10.0.2.2:5001, write N KiB of the pattern, wait
 *            until the host has acknowledged all of it, close, wait for the
 *            host's FIN: "tcp: sent B bytes in T cycles, crc C" (T: from
 *            the connection up to the last byte acknowledged)
 *   receive: connect to 10.0.2.2:5002, read until the host closes:
 *            "tcp: received B bytes in T cycles, crc C" (first to last byte)
 * The pattern: the bytes x & 0xff of xorshift32 (13, 17, 5) from
 * 0x12345678, PATTERN_LEN of them (a prime, so a misplaced segment shows),
 * repeated. The CRC is zlib's CRC-32 of the bytes sent or received (not
 * printed with bit 30). Also prints "bench: tsc_hz HZ" and, at the end,
 * "tcp: OK" (status 33). Failures: "FAIL: ..." and status 3; no
 * virtio-net: status 5. The ROM is larger than 64 KiB (the library comes
 * first): the parameter word is 0x20 bytes before its end, as always.
 * The host side: tcp/host-peer.mjs.
 *
 * Interrupt mode (the mode word at 0xFFE4, irq.h: MSI-X, MSI, INTx): a
 * poll round that finds nothing to do halts until a receive interrupt, as
 * Linux's NAPI does (idle()); at the end "tcp: interrupts: MODE rx vector V
 * N, H halts, L ended by another interrupt with a frame waiting" (L: halts
 * the ~100 Hz tick ended although a frame had arrived: a late or lost
 * receive interrupt).
 */
#include "lwip/init.h"
#include "lwip/netif.h"
#include "lwip/tcp.h"
#include "lwip/timeouts.h"
#include "lwip/etharp.h"
#include "lwip/ethip6.h"
#include "netif/ethernet.h"
#include "vlib.h"
#include "irq.h"
#include "tcp.h"

#define F_MAC		5
#define HDR		12		/* virtio_net_hdr without MRG_RXBUF */
#define BUFLEN		2048
#define QSIZE		256
#define PATTERN_LEN	65521
#define PORT_SEND	5001
#define PORT_RECV	5002

static struct vdev *d;
static uint8_t *rxmem, *txmem, mac[6];
static int tx_pending, irqmode;
static unsigned halts, late;
static struct netif nif;
static uint8_t pattern[PATTERN_LEN];
static uint64_t hz;

/* ---- zlib's CRC-32, eight bytes a step (slicing-by-8) ---- */
static uint32_t crc_tab[8][256];
static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_tab[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
}
static uint32_t crc_update(uint32_t crc, const uint8_t *p, size_t n)
{
	uint32_t c = ~crc;
	for (; n && ((uintptr_t)p & 7); n--)
		c = crc_tab[0][(c ^ *p++) & 0xff] ^ (c >> 8);
	for (; n >= 8; n -= 8, p += 8) {
		uint32_t a = *(const uint32_t *)p ^ c, b = *(const uint32_t *)(p + 4);
		c = crc_tab[7][a & 0xff] ^ crc_tab[6][(a >> 8) & 0xff] ^ crc_tab[5][(a >> 16) & 0xff] ^ crc_tab[4][a >> 24]
		    ^ crc_tab[3][b & 0xff] ^ crc_tab[2][(b >> 8) & 0xff] ^ crc_tab[1][(b >> 16) & 0xff] ^ crc_tab[0][b >> 24];
	}
	while (n--)
		c = crc_tab[0][(c ^ *p++) & 0xff] ^ (c >> 8);
	return ~c;
}

/* ---- the virtio-net driver under lwIP's netif ---- */

static void kick(struct vq *q)
{
	mb();		/* avail idx before reading NO_NOTIFY */
	if (!(*(volatile uint16_t *)q->used & VRING_USED_F_NO_NOTIFY))
		vq_kick(q);
}

static int flush_tx(void)
{
	if (!tx_pending)
		return 0;
	kick(&d->vq[1]);
	tx_pending = 0;
	return 1;
}

static int reclaim_tx(void)
{
	uint32_t len;
	int n = 0;
	while (vq_get(&d->vq[1], &len) >= 0)
		n++;
	return n;
}

/* Interrupt mode, when a poll round found nothing to do: as Linux's NAPI,
 * receive interrupts back on, the ring checked once more (a frame that came
 * meanwhile is taken by polling), else halt until the interrupt (or the
 * ~100 Hz tick that runs lwIP's timers); then off again while polling.
 * Transmit completions never interrupt: buffers come back by polling. */
static void idle(void)
{
	struct vq *q = &d->vq[0];
	vq_set_avail_flags(q, 0);
	mb();
	if (!vq_pending(q)) {
		uint32_t seen = irq_count[q->vec];
		irq_halt();
		halts++;
		/* woken by something else (the tick) while a frame waited: its
		 * interrupt is late or lost */
		if (irq_count[q->vec] == seen && vq_pending(q))
			late++;
	}
	vq_set_avail_flags(q, VRING_AVAIL_F_NO_INTERRUPT);
}

/* lwIP hands over a frame (a pbuf chain): copy it behind a zeroed header
 * into a free transmit buffer; the kick waits for the end of the poll round. */
static err_t linkoutput(struct netif *n, struct pbuf *p)
{
	(void)n;
	struct vq *q = &d->vq[1];
	reclaim_tx();
	if (!q->num_free) {
		flush_tx();
		uint64_t t0 = rdtsc();
		while (!q->num_free) {
			reclaim_tx();
			if (rdtsc() - t0 > poll_timeout_cycles)
				fail("tcp: the transmit queue stays full");
		}
	}
	if (p->tot_len > BUFLEN - HDR)
		return ERR_IF;
	uint8_t *buf = txmem + (size_t)q->free_head * BUFLEN;
	memset(buf, 0, HDR);
	unsigned len = pbuf_copy_partial(p, buf + HDR, p->tot_len, 0);
	if (len < 60) {
		memset(buf + HDR + len, 0, 60 - len);
		len = 60;
	}
	struct vbuf b = { buf, HDR + len, 0 };
	vq_add(q, &b, 1);
	tx_pending = 1;
	return ERR_OK;
}

static err_t nif_init(struct netif *n)
{
	n->name[0] = 'v';
	n->name[1] = 'n';
	n->output = etharp_output;
	n->output_ip6 = ethip6_output;
	n->linkoutput = linkoutput;
	n->mtu = 1500;
	n->hwaddr_len = 6;
	memcpy(n->hwaddr, mac, 6);
	n->flags = NETIF_FLAG_BROADCAST | NETIF_FLAG_ETHARP | NETIF_FLAG_ETHERNET | NETIF_FLAG_LINK_UP;
	return ERR_OK;
}

/* One poll round: every received frame into lwIP (copied into a pbuf, the
 * buffer goes straight back), transmit buffers back, lwIP's timers, and
 * the kicks the round owes; in interrupt mode a round without work ends
 * in idle(). */
static void poll_net(void)
{
	struct vq *q = &d->vq[0];
	uint32_t len;
	int id, got = 0;
	while ((id = vq_get(q, &len)) >= 0) {
		uint8_t *buf = rxmem + (size_t)id * BUFLEN;
		if (len > BUFLEN)
			fail("tcp: device wrote %u bytes into a %u-byte buffer", len, BUFLEN);
		if (len > HDR) {
			struct pbuf *p = pbuf_alloc(PBUF_RAW, (u16_t)(len - HDR), PBUF_POOL);
			if (p) {
				pbuf_take(p, buf + HDR, (u16_t)(len - HDR));
				if (nif.input(p, &nif) != ERR_OK)
					pbuf_free(p);
			}
		}
		struct vbuf b = { rxmem + (size_t)q->free_head * BUFLEN, BUFLEN, 1 };
		vq_add(q, &b, 1);
		got = 1;
	}
	if (got)
		kick(q);
	int work = got | reclaim_tx();
	sys_check_timeouts();
	work |= flush_tx();
	if (!work && irqmode != MODE_POLL)
		idle();
}

/* ---- one connection ---- */

struct conn {
	struct tcp_pcb *pcb;
	int connected, peer_closed;
	err_t error;			/* from the err callback (the pcb is gone) */
	uint64_t acked, rcvd, first, last;
	uint32_t crc;
	int check;
};

static err_t on_connected(void *arg, struct tcp_pcb *pcb, err_t err)
{
	(void)pcb;
	struct conn *c = arg;
	c->connected = err == ERR_OK;
	return ERR_OK;
}

static err_t on_sent(void *arg, struct tcp_pcb *pcb, u16_t len)
{
	(void)pcb;
	((struct conn *)arg)->acked += len;
	return ERR_OK;
}

static err_t on_recv(void *arg, struct tcp_pcb *pcb, struct pbuf *p, err_t err)
{
	struct conn *c = arg;
	(void)err;
	if (!p) {
		c->peer_closed = 1;
		return ERR_OK;
	}
	uint64_t now = rdtsc();
	if (!c->rcvd)
		c->first = now;
	c->last = now;
	if (c->check)
		for (struct pbuf *q = p; q; q = q->next)
			c->crc = crc_update(c->crc, q->payload, q->len);
	c->rcvd += p->tot_len;
	tcp_recved(pcb, p->tot_len);
	pbuf_free(p);
	return ERR_OK;
}

static void on_err(void *arg, err_t err)
{
	struct conn *c = arg;
	c->pcb = NULL;
	c->error = err;
}

/* Poll until *flag or the connection fails; fail after `secs` seconds. */
static void wait_for(struct conn *c, volatile int *flag, unsigned secs, const char *what)
{
	uint64_t t0 = rdtsc();
	while (!*flag) {
		poll_net();
		if (c->error != ERR_OK)
			fail("tcp: %s: connection failed (lwIP error %d)", what, c->error);
		if (rdtsc() - t0 > secs * hz)
			fail("tcp: %s: nothing after %u s", what, secs);
	}
}

static void open_conn(struct conn *c, uint16_t port, int check)
{
	memset(c, 0, sizeof(*c));
	c->check = check;
	c->pcb = tcp_new();
	if (!c->pcb)
		fail("tcp: tcp_new failed");
	tcp_arg(c->pcb, c);
	tcp_err(c->pcb, on_err);
	tcp_recv(c->pcb, on_recv);
	tcp_sent(c->pcb, on_sent);
	ip_addr_t host;
	IP_ADDR4(&host, 10, 0, 2, 2);
	err_t e = tcp_connect(c->pcb, &host, port, on_connected);
	if (e != ERR_OK)
		fail("tcp: tcp_connect: lwIP error %d", e);
	wait_for(c, &c->connected, 30, "connect");
	printf("tcp: connected to 10.0.2.2:%u\n", port);
}

/* Close our side and keep the stack running until the host has closed its
 * side too (so the FIN and any retransmissions go out). */
static void close_conn(struct conn *c, const char *what)
{
	if (c->pcb && tcp_close(c->pcb) != ERR_OK)
		fail("tcp: %s: tcp_close failed", what);
	uint64_t t0 = rdtsc();
	while (!c->peer_closed && c->error == ERR_OK && rdtsc() - t0 < 10 * hz)
		poll_net();
	if (!c->peer_closed)
		fail("tcp: %s: the host did not close its side", what);
	/* our last ACK of the host's FIN */
	for (t0 = rdtsc(); rdtsc() - t0 < hz / 20;)
		poll_net();
}

static void do_send(uint64_t n, int check)
{
	struct conn c;
	open_conn(&c, PORT_SEND, check);
	uint64_t queued = 0, t0 = rdtsc(), idle = t0, seen = 0;
	while (c.acked < n) {
		while (c.pcb && queued < n) {
			uint64_t off = queued % PATTERN_LEN, len = tcp_sndbuf(c.pcb);
			if (len > n - queued)
				len = n - queued;
			if (len > PATTERN_LEN - off)
				len = PATTERN_LEN - off;
			/* ERR_MEM: the send queue is full; more after the next ACKs */
			if (!len || tcp_write(c.pcb, pattern + off, (u16_t)len, TCP_WRITE_FLAG_COPY) != ERR_OK)
				break;
			if (check)
				c.crc = crc_update(c.crc, pattern + off, len);
			queued += len;
		}
		if (c.pcb)
			tcp_output(c.pcb);
		poll_net();
		if (c.error != ERR_OK)
			fail("tcp: send: connection failed after %lu bytes acknowledged (lwIP error %d)", c.acked, c.error);
		uint64_t now = rdtsc();
		if (c.acked != seen) {
			seen = c.acked;
			idle = now;
		} else if (now - idle > 10 * hz) {
			fail("tcp: send: stalled at %lu of %lu bytes acknowledged (%lu queued)", c.acked, n, queued);
		}
	}
	uint64_t t1 = rdtsc();
	close_conn(&c, "send");
	printf("tcp: sent %lu bytes in %lu cycles", c.acked, t1 - t0);
	if (check)
		printf(", crc %08x", c.crc);
	printf("\n");
}

static void do_recv(uint64_t n, int check)
{
	struct conn c;
	open_conn(&c, PORT_RECV, check);
	uint64_t seen = 0, idle = rdtsc();
	while (!c.peer_closed) {
		poll_net();
		if (c.error != ERR_OK)
			fail("tcp: receive: connection failed after %lu bytes (lwIP error %d)", c.rcvd, c.error);
		uint64_t now = rdtsc();
		if (c.rcvd != seen) {
			seen = c.rcvd;
			idle = now;
		} else if (now - idle > 10 * hz) {
			fail("tcp: receive: stalled at %lu bytes", c.rcvd);
		}
	}
	close_conn(&c, "receive");
	if (c.rcvd != n)
		fail("tcp: received %lu bytes, expected %lu", c.rcvd, n);
	printf("tcp: received %lu bytes in %lu cycles", c.rcvd, c.last - c.first);
	if (check)
		printf(", crc %08x", c.crc);
	printf("\n");
}

/* Copy liblwip.so.0's relocated image from the ROM to where it was linked
 * to run, and clear its .bss. */
static void load_lwip(void)
{
	memcpy((void *)LWIP_BASE, (const void *)LWIP_ROM_IMAGE, LWIP_FILESZ);
	memset((void *)(LWIP_BASE + LWIP_FILESZ), 0, LWIP_MEMSZ - LWIP_FILESZ);
}

int guest_main(uint32_t param)
{
	uint64_t kib = param & 0x0fffffff;
	irqmode = (int)(rom_word(1) & 0xf);
	if (irqmode != MODE_POLL && irqmode != MODE_MSIX && irqmode != MODE_MSI && irqmode != MODE_INTX)
		fail("tcp: unknown interrupt mode %d", irqmode);
	int send = (param >> 28) & 1, recv = (param >> 29) & 1, check = !((param >> 30) & 1);
	if (!kib)
		kib = 1024;
	if (!send && !recv)
		send = recv = 1;
	printf("tcp test: lwIP %s (liblwip.so.0 at %lx), %lu KiB%s%s%s, %s\n", LWIP_VERSION_STRING, LWIP_BASE, kib,
	    send ? ", send" : "", recv ? ", receive" : "", check ? ", CRC" : "", irq_mode_name(irqmode));
	load_lwip();
	hz = tsc_hz_from_rtc();
	poll_timeout_cycles = 10 * hz;
	printf("bench: tsc_hz %lu\n", hz);
	libc_set_tsc_hz(hz);
	libc_seed((uint32_t)rdtsc());
	crc_init();
	uint32_t x = 0x12345678;
	for (int i = 0; i < PATTERN_LEN; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		pattern[i] = (uint8_t)x;
	}

	if (irqmode != MODE_POLL)
		irq_init();
	d = alloc(sizeof(*d), 64);
	virtio_init(d, pci_find_virtio(VIRTIO_ID_NET), 1ull << F_MAC);
	virtio_setup_irqs(d, irqmode);
	virtio_setup_queue(d, 0, QSIZE);
	virtio_setup_queue(d, 1, QSIZE);
	/* until idle() wants one (interrupt mode), no interrupts */
	vq_set_avail_flags(&d->vq[0], VRING_AVAIL_F_NO_INTERRUPT);
	vq_set_avail_flags(&d->vq[1], VRING_AVAIL_F_NO_INTERRUPT);
	if (d->features & (1ull << F_MAC)) {
		for (int i = 0; i < 6; i++)
			mac[i] = vcfg8(d, i);
	} else {
		static const uint8_t dflt[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
		memcpy(mac, dflt, 6);
	}
	printf("tcp: mac %02x:%02x:%02x:%02x:%02x:%02x\n", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
	rxmem = alloc((size_t)d->vq[0].size * BUFLEN, 4096);
	txmem = alloc((size_t)d->vq[1].size * BUFLEN, 4096);
	for (unsigned i = 0; i < d->vq[0].size; i++) {
		struct vbuf b = { rxmem + (size_t)i * BUFLEN, BUFLEN, 1 };
		vq_add(&d->vq[0], &b, 1);
	}
	virtio_driver_ok(d);
	vq_kick(&d->vq[0]);

	lwip_init();
	ip4_addr_t ip, mask, gw;
	IP4_ADDR(&ip, 10, 0, 2, 15);
	IP4_ADDR(&mask, 255, 255, 255, 0);
	IP4_ADDR(&gw, 10, 0, 2, 2);
	if (!netif_add(&nif, &ip, &mask, &gw, NULL, nif_init, ethernet_input))
		fail("tcp: netif_add failed");
	netif_set_default(&nif);
	netif_set_up(&nif);

	if (send)
		do_send(kib * 1024, check);
	if (recv)
		do_recv(kib * 1024, check);
	printf("tcp: lwIP heap peak %lu KiB\n", heap_peak_bytes() >> 10);
	if (irqmode != MODE_POLL) {
		int v = d->vq[0].vec;
		printf("tcp: interrupts: %s rx vector %x %u, %u halts, %u ended by another interrupt with a frame waiting\n",
		    irq_mode_name(irqmode), v, irq_count[v], halts, late);
		if (!irq_count[v])
			fail("tcp: no receive interrupts");
	}
	printf("tcp: OK\n");
	return EXIT_OK;
}
