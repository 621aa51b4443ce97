/*
 * e1000.rom: an 82545EM (or 82540EM: QEMU's -device e1000) driver in ring 3 (virtio runtime: vlib.c, irq.c),
 * as Linux's e1000 drives the chip, run on bhyve's e1000 and on QEMU's
 * -device e1000:
 *   - find 8086:100f on bus 0, CTRL.RST, mask everything (IMC);
 *   - read the 64-word EEPROM by bit-banging EECD (Microwire READ), check
 *     its 0xBABA checksum, take the MAC from words 0-2, program RAL0/RAH0;
 *   - PHY id through MDIC, STATUS.LU;
 *   - 32-entry transmit and receive rings of legacy descriptors, 2 KiB
 *     buffers, RCTL (broadcast accept, strip CRC), TCTL;
 *   - interrupt mode INTx (the mode word, irq.h): the line routed as the
 *     firmware tables say, the handler reads ICR (which acknowledges it);
 *     LSC is raised through ICS as Linux does at open, and its interrupt
 *     awaited; receive waits halt until an interrupt (RXT0).
 * Then, by the parameter's low byte:
 *   0 (tap): as 10.0.2.15, ARP for 10.0.2.2 and an ICMP echo to it.
 *   1 (slirp): DHCP DISCOVER/REQUEST for a lease; a TCP connection to
 *     10.0.2.2:PORT (PORT = parameter bits 16-31): sends
 *     "hello from the e1000 guest\n", reads one line back, closes; then
 *     listens on TCP port 8080 (the host reaches it through hostfwd): reads
 *     a line, answers "e1000 guest got: LINE", closes. TCP frames use the
 *     context + data descriptors with IP and TCP checksum insertion; ARP,
 *     DHCP and ICMP use legacy descriptors.
 *   2 (bench TX): after ARP, N = parameter bits 8-31 UDP frames of 1514
 *     bytes to 10.0.2.2:9 as fast as the ring takes them; prints
 *     "bench: tx FRAMES frames BYTES bytes CYCLES cycles" and tsc_hz.
 *   3 (bench RX): after ARP, prints "bench: rx ready" and counts UDP
 *     frames to port 9 (the host floods it; each payload starts with a
 *     32-bit big-endian sequence number) until N = parameter bits 8-31
 *     arrived or none came for a second; RDT is written every 8 buffers
 *     (Linux's e1000 writes it every 16). Prints "bench: rx FRAMES frames
 *     BYTES bytes CYCLES cycles SEQS seqs" (SEQS: the span of sequence
 *     numbers seen, so FRAMES / SEQS is the fraction that arrived).
 * Exits 0x10 (status 33); failures print FAIL and exit 3.
 */
#include "vlib.h"
#include "irq.h"

#define NDESC		32
#define BUFLEN		2048

/* registers */
#define CTRL	0x0000
#define STATUS	0x0008
#define EECD	0x0010
#define MDIC	0x0020
#define ICR	0x00c0
#define ICS	0x00c8
#define IMS	0x00d0
#define IMC	0x00d8
#define RCTL	0x0100
#define TCTL	0x0400
#define TIPG	0x0410
#define RDBAL	0x2800
#define RDBAH	0x2804
#define RDLEN	0x2808
#define RDH	0x2810
#define RDT	0x2818
#define TDBAL	0x3800
#define TDBAH	0x3804
#define TDLEN	0x3808
#define TDH	0x3810
#define TDT	0x3818
#define RAL0	0x5400
#define RAH0	0x5404
#define MTA	0x5200

#define ICR_TXDW	0x01
#define ICR_LSC		0x04
#define ICR_RXT0	0x80

#define TXD_EOP		0x01000000u
#define TXD_IFCS	0x02000000u
#define TXD_RS		0x08000000u
#define TXD_DEXT	0x20000000u
#define TXD_DTYP_D	0x00100000u
#define TXC_TCP		0x01000000u
#define TXC_IP		0x02000000u

struct rxd { uint64_t addr; uint16_t len, csum; uint8_t status, errors; uint16_t special; };
struct txd { uint64_t addr; uint32_t lower, upper; };

static uintptr_t bar0;
static struct rxd *rx;
static struct txd *tx;
static uint8_t *rxbuf, *txbufs;
static unsigned rx_next, tx_tail;
static unsigned nrx = NDESC;	/* receive ring entries (256, Linux's default, in the RX bench) */
static int irqmode, vec = -1;
static uint8_t mac[6], gw_mac[6];
static uint8_t my_ip[4] = { 10, 0, 2, 15 };
static const uint8_t host_ip[4] = { 10, 0, 2, 2 };
static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
static int have_gw, got_pong;

static uint32_t rd(int r) { return mr32(bar0 + (uintptr_t)r); }
static void wr(int r, uint32_t v) { mw32(bar0 + (uintptr_t)r, v); }
static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)(v >> 16)); put16(p + 2, (uint16_t)v); }

static uint32_t sum16(const uint8_t *p, unsigned n, uint32_t s)
{
	for (unsigned i = 0; i + 1 < n; i += 2)
		s += be16(p + i);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return s;
}

/* ---- EEPROM (Microwire through EECD) ---- */

static void ee_bit(uint32_t *eecd, int bit)
{
	*eecd = bit ? *eecd | 4 : *eecd & ~4u;
	wr(EECD, *eecd);
	wr(EECD, *eecd | 1);
	wr(EECD, *eecd);
}

static uint16_t ee_read(int addr)
{
	uint32_t eecd = (rd(EECD) & ~0xfu) | 0x40;	/* REQ */
	wr(EECD, eecd);
	eecd |= 2;					/* CS */
	wr(EECD, eecd);
	for (int b = 2; b >= 0; b--)
		ee_bit(&eecd, (0x6 >> b) & 1);		/* READ */
	for (int b = 5; b >= 0; b--)
		ee_bit(&eecd, (addr >> b) & 1);
	uint16_t v = 0;
	eecd &= ~4u;
	for (int b = 0; b < 16; b++) {
		wr(EECD, eecd | 1);
		v = (uint16_t)(v << 1 | ((rd(EECD) & 8) ? 1 : 0));
		wr(EECD, eecd);
	}
	wr(EECD, eecd & ~2u);
	wr(EECD, 0);
	return v;
}

/* ---- rings ---- */

static uint8_t *txbuf(unsigned i) { return txbufs + (uint64_t)i * BUFLEN; }

static void tx_wait_slot(unsigned i)
{
	uint64_t t0 = rdtsc();
	while (tx[i].lower && !(tx[i].upper & 1)) {	/* an unfinished earlier use */
		if (rdtsc() - t0 > poll_timeout_cycles)
			fail("e1000: transmit descriptor %u never completed (TDH %u TDT %u)", i, rd(TDH), rd(TDT));
		__asm__ volatile("pause");
	}
}

/* Sends `len` bytes of txbuf(slot) with a legacy descriptor. */
static void send_legacy(unsigned len)
{
	unsigned i = tx_tail;
	if (len < 60)
		len = 60;
	tx[i].addr = (uint64_t)(uintptr_t)txbuf(i);
	tx[i].upper = 0;
	tx[i].lower = len | TXD_EOP | TXD_IFCS | TXD_RS;
	tx_tail = (i + 1) % NDESC;
	tx_wait_slot(tx_tail);
	barrier();
	wr(TDT, tx_tail);
}

/* Sends an IPv4/TCP frame with a context descriptor asking for the IP and
 * TCP checksums (the driver leaves the pseudo-header sum, as Linux does). */
static void send_tcp_offload(unsigned len)
{
	unsigned c = tx_tail, d = (c + 1) % NDESC;
	uint8_t *f = txbuf(d);
	/* context: ipcss 14, ipcso 24, ipcse 33; tucss 34, tucso 50, tucse 0 */
	tx[c].addr = (uint64_t)14 | (uint64_t)24 << 8 | (uint64_t)33 << 16 | (uint64_t)34 << 32 | (uint64_t)50 << 40;
	tx[c].lower = TXD_DEXT | TXC_TCP | TXC_IP | TXD_RS;	/* RS: DD comes back here too */
	tx[c].upper = 0;
	(void)f;
	tx[d].addr = (uint64_t)(uintptr_t)txbuf(d);
	tx[d].upper = 0x03 << 8;			/* POPTS: IXSM | TXSM */
	tx[d].lower = len | TXD_DEXT | TXD_DTYP_D | TXD_EOP | TXD_IFCS | TXD_RS;
	tx_tail = (d + 1) % NDESC;
	tx_wait_slot(tx_tail);
	tx_wait_slot((tx_tail + 1) % NDESC);
	barrier();
	wr(TDT, tx_tail);
}

/* The buffer the next transmitted frame goes in (one slot ahead for TCP). */
static uint8_t *next_frame(int tcp) { return txbuf(tcp ? (tx_tail + 1) % NDESC : tx_tail); }

static void eth(uint8_t *f, const uint8_t *dst, uint16_t type)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, mac, 6);
	put16(f + 12, type);
}

static void ip_hdr(uint8_t *ip, const uint8_t *src, const uint8_t *dst, int proto, unsigned len, int csum)
{
	static uint16_t id = 1;
	memset(ip, 0, 20);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)len);
	put16(ip + 4, id++);
	ip[8] = 64;
	ip[9] = (uint8_t)proto;
	memcpy(ip + 12, src, 4);
	memcpy(ip + 16, dst, 4);
	if (csum)
		put16(ip + 10, (uint16_t)~sum16(ip, 20, 0));
}

static void arp(int op, const uint8_t *tha, const uint8_t *tpa, const uint8_t *dst)
{
	uint8_t *f = next_frame(0);
	memset(f, 0, 60);
	eth(f, dst, 0x0806);
	put16(f + 14, 1);
	put16(f + 16, 0x0800);
	f[18] = 6;
	f[19] = 4;
	put16(f + 20, (uint16_t)op);
	memcpy(f + 22, mac, 6);
	memcpy(f + 28, my_ip, 4);
	memcpy(f + 32, tha, 6);
	memcpy(f + 38, tpa, 4);
	send_legacy(42);
}

/* ---- TCP (one connection at a time) ---- */

struct tcb {
	uint16_t lport, rport;
	uint32_t snd_nxt, rcv_nxt;
	int state;		/* 0 closed, 1 syn sent, 2 listen, 3 established, 4 fin received */
	char line[128];
	unsigned linelen;
	int got_line, acked;
};
static struct tcb t;

static void tcp_send(uint8_t flags, const void *data, unsigned n)
{
	uint8_t *f = next_frame(1);
	uint8_t *ip = f + 14, *th = ip + 20;
	memset(f, 0, 14 + 40);
	eth(f, gw_mac, 0x0800);
	ip_hdr(ip, my_ip, host_ip, 6, 40 + n, 0);
	put16(th, t.lport);
	put16(th + 2, t.rport);
	put32(th + 4, t.snd_nxt);
	put32(th + 8, t.rcv_nxt);
	th[12] = 5 << 4;
	th[13] = flags;
	put16(th + 14, 8192);
	memcpy(th + 20, data, n);
	/* pseudo-header sum (with the length) for the device to finish */
	uint8_t ph[12];
	memcpy(ph, my_ip, 4);
	memcpy(ph + 4, host_ip, 4);
	ph[8] = 0;
	ph[9] = 6;
	put16(ph + 10, (uint16_t)(20 + n));
	put16(th + 16, (uint16_t)sum16(ph, 12, 0));
	send_tcp_offload(14 + 40 + n);
	t.snd_nxt += n + ((flags & 0x03) ? 1 : 0);	/* SYN and FIN count one */
}

static void tcp_input(const uint8_t *ip, unsigned len)
{
	unsigned ihl = (ip[0] & 15) * 4u;
	const uint8_t *th = ip + ihl;
	if (len < ihl + 20)
		return;
	unsigned off = (th[12] >> 4) * 4u, dlen = len - ihl - off;
	uint16_t sport = be16(th), dport = be16(th + 2);
	uint32_t seq = be32(th + 4), ack = be32(th + 8);
	uint8_t fl = th[13];
	if (dport != t.lport)
		return;
	if (t.state == 2 && (fl & 0x02)) {			/* SYN to our listener */
		t.rport = sport;
		t.rcv_nxt = seq + 1;
		t.snd_nxt = 0x2000;
		tcp_send(0x12, 0, 0);				/* SYN|ACK */
		t.state = 3;
		return;
	}
	if (sport != t.rport)
		return;
	if (fl & 0x04)
		fail("e1000: tcp: connection reset by 10.0.2.2:%u", sport);
	if (t.state == 1 && (fl & 0x12) == 0x12 && ack == t.snd_nxt) {
		t.rcv_nxt = seq + 1;
		t.state = 3;
		tcp_send(0x10, 0, 0);
		return;
	}
	if (t.state < 3)
		return;
	if ((fl & 0x10) && ack == t.snd_nxt)
		t.acked = 1;
	if (seq == t.rcv_nxt && dlen) {
		for (unsigned i = 0; i < dlen && t.linelen + 1 < sizeof(t.line); i++) {
			char c = (char)th[off + i];
			if (c == '\n')
				t.got_line = 1;
			else if (!t.got_line)
				t.line[t.linelen++] = c;
		}
		t.line[t.linelen] = 0;
		t.rcv_nxt += dlen;
		tcp_send(0x10, 0, 0);
	}
	if ((fl & 0x01) && seq + dlen == t.rcv_nxt) {
		t.rcv_nxt++;
		t.state = 4;
		tcp_send(0x10, 0, 0);
	}
}

/* ---- receive ---- */

static uint32_t lease_ip, lease_router, lease_dns, lease_server;
static int dhcp_type;

static void handle(const uint8_t *f, unsigned len)
{
	if (len < 14 || (memcmp(f, mac, 6) && memcmp(f, bcast, 6)))
		return;
	uint16_t type = be16(f + 12);
	if (type == 0x0806 && len >= 42 && be16(f + 14) == 1 && be16(f + 16) == 0x0800) {
		uint16_t op = be16(f + 20);
		if (op == 1 && !memcmp(f + 38, my_ip, 4))
			arp(2, f + 22, f + 28, f + 22);
		else if (op == 2 && !memcmp(f + 28, host_ip, 4) && !have_gw) {
			memcpy(gw_mac, f + 22, 6);
			have_gw = 1;
			printf("e1000: 10.0.2.2 is at %02x:%02x:%02x:%02x:%02x:%02x\n", gw_mac[0], gw_mac[1], gw_mac[2],
			    gw_mac[3], gw_mac[4], gw_mac[5]);
		}
		return;
	}
	if (type != 0x0800 || len < 34)
		return;
	const uint8_t *ip = f + 14;
	unsigned iplen = be16(ip + 2);
	if (iplen > len - 14)
		return;
	if (ip[9] == 1 && !memcmp(ip + 12, host_ip, 4)) {
		const uint8_t *icmp = ip + (ip[0] & 15) * 4;
		if (icmp[0] == 0 && be16(icmp + 4) == 0x4242)
			got_pong = 1;
	} else if (ip[9] == 17 && be16(ip + 20 + 2) == 68 && iplen >= 20 + 8 + 240) {
		const uint8_t *b = ip + 28;
		if (b[0] != 2 || be32(b + 236) != 0x63825363)
			return;
		lease_ip = be32(b + 16);
		for (unsigned o = 240; o + 2 <= iplen - 28 && b[o] != 255;) {
			if (b[o] == 0) {
				o++;
				continue;
			}
			unsigned ol = b[o + 1];
			if (b[o] == 53)
				dhcp_type = b[o + 2];
			else if (b[o] == 3 && ol >= 4)
				lease_router = be32(b + o + 2);
			else if (b[o] == 6 && ol >= 4)
				lease_dns = be32(b + o + 2);
			else if (b[o] == 54 && ol >= 4)
				lease_server = be32(b + o + 2);
			o += 2 + ol;
		}
	} else if (ip[9] == 6 && !memcmp(ip + 16, my_ip, 4)) {
		tcp_input(ip, iplen);
	}
}

/* Receives and handles frames until *flag or `cycles` pass. In interrupt
 * mode the ring is looked at only after an interrupt (the handler read
 * ICR: RXT0, TXDW...): an empty wait halts until the next one. */
static uint32_t rx_seen;

static void poll_rx(uint64_t cycles, volatile int *flag)
{
	uint64_t t0 = rdtsc();
	while (!*flag && rdtsc() - t0 < cycles) {
		if (vec >= 0) {
			if (irq_count[vec] == rx_seen) {
				irq_wait_change(&irq_count[vec], rx_seen, cycles / 20 + 1);
				continue;
			}
			rx_seen = irq_count[vec];
		}
		int got = 0;
		for (;;) {
			struct rxd *d = &rx[rx_next];
			if (!(*(volatile uint8_t *)&d->status & 1))
				break;
			barrier();
			if (d->status & 2)
				handle(rxbuf + (uint64_t)rx_next * BUFLEN, d->len);
			d->status = 0;
			barrier();
			wr(RDT, rx_next);
			rx_next = (rx_next + 1) % nrx;
			got = 1;
		}
		if (!got && vec < 0)
			__asm__ volatile("pause");
	}
}

static void ping(void)
{
	uint8_t *f = next_frame(0), *ip = f + 14, *icmp = ip + 20;
	memset(f, 0, 14 + 20 + 8 + 56);
	eth(f, gw_mac, 0x0800);
	ip_hdr(ip, my_ip, host_ip, 1, 20 + 8 + 56, 1);
	icmp[0] = 8;
	put16(icmp + 4, 0x4242);
	put16(icmp + 6, 1);
	for (int i = 0; i < 56; i++)
		icmp[8 + i] = (uint8_t)(i + 0x20);
	put16(icmp + 2, (uint16_t)~sum16(icmp, 64, 0));
	send_legacy(14 + 20 + 64);
}

static void dhcp(int type)
{
	uint8_t *f = next_frame(0), *ip = f + 14, *udp = ip + 20, *b = udp + 8;
	static const uint8_t zero[4], all[4] = { 255, 255, 255, 255 };
	unsigned blen = 240 + 16;
	memset(f, 0, 14 + 28 + blen);
	eth(f, bcast, 0x0800);
	ip_hdr(ip, zero, all, 17, 28 + blen, 1);
	put16(udp, 68);
	put16(udp + 2, 67);
	put16(udp + 4, (uint16_t)(8 + blen));
	b[0] = 1;
	b[1] = 1;
	b[2] = 6;
	put32(b + 4, 0xe1000001);
	put16(b + 10, 0x8000);
	memcpy(b + 28, mac, 6);
	put32(b + 236, 0x63825363);
	uint8_t *o = b + 240;
	*o++ = 53; *o++ = 1; *o++ = (uint8_t)type;
	if (type == 3) {
		*o++ = 50; *o++ = 4; put32(o, lease_ip); o += 4;
		*o++ = 54; *o++ = 4; put32(o, lease_server); o += 4;
	}
	*o = 255;
	send_legacy(14 + 28 + blen);
}

static void ipprint(const char *what, uint32_t a)
{
	printf(" %s %u.%u.%u.%u", what, a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
}

static void resolve_gateway(uint64_t step)
{
	static const uint8_t zero6[6];
	for (int tries = 0; !have_gw; tries++) {
		if (tries == 100)
			fail("e1000: no ARP reply from 10.0.2.2");
		arp(1, zero6, host_ip, bcast);
		poll_rx(step, &have_gw);
	}
}

static void slirp_test(uint16_t port, uint64_t step)
{
	static volatile int got_offer, got_ack;
	for (int tries = 0; dhcp_type != 2; tries++) {
		if (tries == 30)
			fail("e1000: no DHCP offer");
		dhcp(1);
		got_offer = 0;
		for (uint64_t t0 = rdtsc(); dhcp_type != 2 && rdtsc() - t0 < step * 5;)
			poll_rx(step, &got_offer);
	}
	for (int tries = 0; dhcp_type != 5; tries++) {
		if (tries == 30)
			fail("e1000: no DHCP ack");
		dhcp(3);
		got_ack = 0;
		for (uint64_t t0 = rdtsc(); dhcp_type != 5 && rdtsc() - t0 < step * 5;)
			poll_rx(step, &got_ack);
	}
	put32(my_ip, lease_ip);
	printf("e1000: dhcp lease");
	ipprint("ip", lease_ip);
	ipprint("router", lease_router);
	ipprint("dns", lease_dns);
	printf("\n");
	resolve_gateway(step);

	/* out: a connection to the host */
	static const char hello[] = "hello from the e1000 guest\n";
	memset(&t, 0, sizeof(t));
	t.lport = 40000;
	t.rport = port;
	t.snd_nxt = 0x1000;
	t.state = 1;
	for (int tries = 0; t.state == 1; tries++) {
		if (tries == 20)
			fail("e1000: tcp: no answer from 10.0.2.2:%u", port);
		t.snd_nxt = 0x1000;
		tcp_send(0x02, 0, 0);				/* SYN */
		static volatile int never;
		for (uint64_t t0 = rdtsc(); t.state == 1 && rdtsc() - t0 < step * 5;)
			poll_rx(step, &never);
	}
	printf("e1000: tcp connected to 10.0.2.2:%u\n", port);
	tcp_send(0x18, hello, sizeof(hello) - 1);		/* PSH|ACK */
	for (uint64_t t0 = rdtsc(); !t.got_line;) {
		if (rdtsc() - t0 > step * 100)
			fail("e1000: tcp: no line from the host");
		poll_rx(step, &t.got_line);
	}
	printf("e1000: tcp received '%s'\n", t.line);
	tcp_send(0x11, 0, 0);					/* FIN|ACK */
	for (uint64_t t0 = rdtsc(); t.state != 4 && rdtsc() - t0 < step * 50;) {
		static volatile int never2;
		poll_rx(step, &never2);
	}

	/* in: the host connects through hostfwd to port 8080 */
	memset(&t, 0, sizeof(t));
	t.lport = 8080;
	t.state = 2;
	printf("e1000: listening on 8080\n");
	for (uint64_t t0 = rdtsc(); !t.got_line;) {
		if (rdtsc() - t0 > step * 300)
			fail("e1000: tcp: nobody connected to port 8080");
		poll_rx(step, &t.got_line);
	}
	printf("e1000: tcp 8080 received '%s'\n", t.line);
	char reply[160];
	unsigned n = 0;
	static const char pre[] = "e1000 guest got: ";
	memcpy(reply, pre, sizeof(pre) - 1);
	n = sizeof(pre) - 1;
	memcpy(reply + n, t.line, t.linelen);
	n += t.linelen;
	reply[n++] = '\n';
	tcp_send(0x19, reply, n);				/* FIN|PSH|ACK */
	for (uint64_t t0 = rdtsc(); t.state != 4 && rdtsc() - t0 < step * 50;) {
		static volatile int never3;
		poll_rx(step, &never3);
	}
	printf("e1000: slirp OK\n");
}

static void bench_tx(uint64_t n)
{
	uint64_t hz = tsc_hz_from_rtc();
	printf("bench: tsc_hz %lu\n", hz);
	poll_timeout_cycles = hz * 10;
	for (unsigned i = 0; i < NDESC; i++) {
		uint8_t *f = txbuf(i), *ip = f + 14, *udp = ip + 20;
		memset(f, 0, 14 + 28);
		eth(f, gw_mac, 0x0800);
		ip_hdr(ip, my_ip, host_ip, 17, 1500, 1);
		put16(udp, 40000);
		put16(udp + 2, 9);
		put16(udp + 4, 1480);
		for (int k = 0; k < 1472; k++)
			udp[8 + k] = (uint8_t)k;
	}
	uint64_t first = rdtsc(), sent = 0;
	while (sent < n) {
		unsigned i = tx_tail;
		tx_wait_slot((i + 1) % NDESC);
		tx[i].addr = (uint64_t)(uintptr_t)txbuf(i);
		tx[i].upper = 0;
		tx[i].lower = 1514 | TXD_EOP | TXD_IFCS | TXD_RS;
		tx_tail = (i + 1) % NDESC;
		sent++;
		/* like Linux's xmit_more: tell the device every 8 frames */
		if ((sent & 7) == 0 || sent == n) {
			barrier();
			wr(TDT, tx_tail);
		}
	}
	tx_wait_slot((tx_tail + NDESC - 1) % NDESC);
	uint64_t last = rdtsc();
	printf("bench: tx %lu frames %lu bytes %lu cycles\n", n, n * 1514, last - first);
}

static void bench_rx(uint64_t n, uint64_t hz)
{
	uint64_t frames = 0, bytes = 0, first = 0, last = 0, t0 = rdtsc();
	uint32_t seq_lo = 0, seq_hi = 0;
	unsigned freed = 0;
	printf("bench: rx ready\n");
	for (;;) {
		struct rxd *d = &rx[rx_next];
		uint64_t now = rdtsc();
		if (!(*(volatile uint8_t *)&d->status & 1)) {
			if (frames ? now - last > hz : now - t0 > 30 * hz)
				break;
			if (vec >= 0) {
				/* interrupt mode: halt until the next one (RXT0) */
				if (irq_count[vec] == rx_seen)
					irq_wait_change(&irq_count[vec], rx_seen, hz / 10);
				rx_seen = irq_count[vec];
			} else {
				__asm__ volatile("pause");
			}
			continue;
		}
		barrier();
		const uint8_t *f = rxbuf + (uint64_t)rx_next * BUFLEN;
		unsigned len = d->len;
		if ((d->status & 2) && len >= 14 + 28 + 4 && be16(f + 12) == 0x0800 && f[14 + 9] == 17 && be16(f + 14 + 22) == 9) {
			uint32_t seq = be32(f + 14 + 28);
			if (!frames) {
				first = now;
				seq_lo = seq_hi = seq;
			}
			if (seq < seq_lo)
				seq_lo = seq;
			if (seq > seq_hi)
				seq_hi = seq;
			last = now;
			frames++;
			bytes += len;
		} else {
			handle(f, len);		/* ARP requests for us (the host resolves 10.0.2.15) */
		}
		d->status = 0;
		unsigned done = rx_next;
		rx_next = (rx_next + 1) % nrx;
		if (++freed == 8) {
			freed = 0;
			barrier();
			wr(RDT, done);
		}
		if (frames == n)
			break;
	}
	if (!frames)
		fail("e1000: rx bench received nothing");
	printf("bench: rx %lu frames %lu bytes %lu cycles %lu seqs\n", frames, bytes, last - first, (uint64_t)(seq_hi - seq_lo) + 1);
}

int guest_main(uint32_t param)
{
	uint32_t mode = rom_word(1);
	irqmode = (int)(mode & 0xf);
	int test = (int)(param & 0xff);
	printf("e1000 test (%s)\n", irq_mode_name(irqmode));
	if (irqmode != MODE_POLL && irqmode != MODE_INTX)
		fail("e1000: interrupt mode %d not supported (the 82545 interrupts by INTx here, as on bhyve)", irqmode);
	if (irqmode != MODE_POLL || (mode & MODE_HOLD))
		irq_init();
	pci_scan(0, 0);
	int bdf = -1;
	for (int dev = 0; dev < 32 && bdf < 0; dev++)
		if (pci_r32(BDF(0, dev, 0), 0) == 0x100f8086 || pci_r32(BDF(0, dev, 0), 0) == 0x100e8086)
			bdf = BDF(0, dev, 0);				/* 82545EM (bhyve) or 82540EM (QEMU's e1000) */
	if (bdf < 0) {
		printf("FAIL: no e1000 (8086:100f or 8086:100e) on PCI bus 0\n");
		exit_(EXIT_NODEV);
	}
	bar0 = pci_r32(bdf, 0x10) & ~0xfu;
	pci_w16(bdf, 4, (uint16_t)(pci_r16(bdf, 4) | 0x6));	/* memory, bus master */

	wr(IMC, 0xffffffff);
	wr(CTRL, rd(CTRL) | 0x04000000);			/* RST */
	for (int i = 0; i < 1000 && (rd(CTRL) & 0x04000000); i++)
		;
	wr(IMC, 0xffffffff);
	(void)rd(ICR);

	uint16_t sum = 0, w[64];
	for (int i = 0; i < 64; i++)
		sum = (uint16_t)(sum + (w[i] = ee_read(i)));
	if (sum != 0xbaba)
		fail("e1000: EEPROM checksum %04x, not baba", sum);
	for (int i = 0; i < 3; i++) {
		mac[2 * i] = (uint8_t)w[i];
		mac[2 * i + 1] = (uint8_t)(w[i] >> 8);
	}
	printf("e1000: %04x, eeprom checksum OK, mac %02x:%02x:%02x:%02x:%02x:%02x\n", pci_r16(bdf, 2), mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
	wr(MDIC, 0x08000000u | 1u << 21 | 2u << 16);
	for (int i = 0; i < 1000 && !(rd(MDIC) & 0x10000000); i++)
		;
	uint32_t id1 = rd(MDIC) & 0xffff;
	printf("e1000: phy id %04x, link %s\n", id1, (rd(STATUS) & 2) ? "up" : "down");

	wr(RAL0, (uint32_t)mac[0] | (uint32_t)mac[1] << 8 | (uint32_t)mac[2] << 16 | (uint32_t)mac[3] << 24);
	wr(RAH0, (uint32_t)mac[4] | (uint32_t)mac[5] << 8 | 0x80000000u);
	for (int i = 0; i < 128; i++)
		wr(MTA + 4 * i, 0);
	if (test == 3)
		nrx = 256;
	rx = alloc(nrx * sizeof(*rx), 128);
	tx = alloc(NDESC * sizeof(*tx), 128);
	rxbuf = alloc(nrx * BUFLEN, 4096);
	txbufs = alloc(NDESC * BUFLEN, 4096);
	for (unsigned i = 0; i < nrx; i++)
		rx[i].addr = (uint64_t)(uintptr_t)(rxbuf + i * BUFLEN);
	wr(RDBAL, (uint32_t)(uintptr_t)rx);
	wr(RDBAH, 0);
	wr(RDLEN, nrx * 16);
	wr(RDH, 0);
	wr(RDT, nrx - 1);
	wr(TDBAL, (uint32_t)(uintptr_t)tx);
	wr(TDBAH, 0);
	wr(TDLEN, NDESC * 16);
	wr(TDH, 0);
	wr(TDT, 0);
	wr(TIPG, 10 | 10 << 10 | 10 << 20);
	wr(TCTL, 0x2 | 0x8 | 0x10 << 4 | 0x40 << 12);		/* EN, PSP, CT, COLD */
	wr(RCTL, 0x2 | 0x8000 | 0x04000000);			/* EN, BAM, SECRC; 2 KiB buffers */

	if (irqmode == MODE_INTX) {
		struct intx_route r;
		if (!pci_intx_route(bdf, &r))
			fail("e1000: no INTx route");
		vec = irq_alloc_vector();
		pci_w16(bdf, 4, (uint16_t)(pci_r16(bdf, 4) & ~0x400));
		irq_set_ack(vec, IRQ_ACK_MMIO32, bar0 + ICR, 0);
		ioapic_route(r.pin, vec, r.level, r.active_low);
		printf("e1000: INTA -> I/O APIC pin %d (%s), vector %x, from the %s\n", r.pin, r.level ? "level" : "edge", vec, r.source);
		wr(IMS, ICR_RXT0 | ICR_LSC | ICR_TXDW);
		uint32_t seen = irq_count[vec];
		wr(ICS, ICR_LSC);					/* as Linux's e1000_open */
		if (!irq_wait_change(&irq_count[vec], seen, poll_timeout_cycles))
			fail("e1000: no interrupt for the LSC set through ICS");
		if (!(irq_ack_bits[vec] & ICR_LSC))
			fail("e1000: the interrupt's ICR %x has no LSC", irq_ack_bits[vec]);
		printf("e1000: LSC interrupt, ICR %x\n", irq_ack_bits[vec]);
	}

	uint64_t step = 300000000ull;				/* ~0.1 s on a 1-4 GHz TSC */
	if (test == 1) {
		slirp_test((uint16_t)(param >> 16), step);
	} else {
		resolve_gateway(step);
		if (test == 2 || test == 3) {
			if (test == 2) {
				bench_tx(param >> 8);
			} else {
				uint64_t hz = tsc_hz_from_rtc();
				printf("bench: tsc_hz %lu\n", hz);
				bench_rx(param >> 8, hz);
			}
			printf("bench: done\n");
			return EXIT_OK;
		}
		for (int tries = 0; !got_pong; tries++) {
			if (tries == 30)
				fail("e1000: no ping reply from 10.0.2.2");
			ping();
			poll_rx(step, &got_pong);
		}
		printf("e1000: ping reply from 10.0.2.2 OK\n");
	}
	if (vec >= 0) {
		printf("e1000: interrupts: intx vector %x %u (%u spurious), causes %x\n", vec, irq_count[vec], irq_ack_zero[vec],
		    irq_ack_bits[vec]);
		if (!(irq_ack_bits[vec] & ICR_RXT0))
			fail("e1000: no receive interrupt");
	}
	if (mode & MODE_HOLD)
		irq_hold_com1();
	return EXIT_OK;
}
