/*
 * xhci.rom: drive the first xHCI controller (class 0C/03/30) and the USB
 * HID tablet behind it as an OS does, in ring 3 on the virtio runtime
 * (vlib.c, irq.c):
 *   - capability registers and the Supported Protocol capabilities;
 *     stop, HCRST (wait for HCRST and CNR to clear), MaxSlotsEn, the DCBAA
 *     (and scratchpad buffers when HCSPARAMS2 asks for them), a command
 *     ring, one event ring segment, the interrupter, RS;
 *   - every connected root hub port reset (port status change event);
 *     Enable Slot, Address Device, GET_DESCRIPTOR device (Evaluate Context
 *     when bMaxPacketSize0 differs from the speed's default), the product
 *     string, the configuration, SET_CONFIGURATION, HID SET_IDLE, the HID
 *     report descriptor; a request for an unknown descriptor must STALL and
 *     endpoint 0 comes back by Reset Endpoint + Set TR Dequeue Pointer;
 *     Configure Endpoint for the interrupt IN endpoint;
 *   - test mode (ROM parameter 0): eight 8-byte IN TRBs queued, then
 *       xhci: ready for pointer events
 *     and one line per report the tablet sends (the test moves the VNC
 *     pointer):
 *       xhci: report N: buttons B x X y Y (L bytes)
 *     until three came (parameter 0x8000000R: until R came);
 *   - bench mode (parameter K != 0): the time from HCRST to a configured
 *     tablet, then K GET_DESCRIPTOR(device) control transfers timed
 *     ("bench:" lines).
 * Interrupt mode (mode word, irq.h): MODE_MSI (the MSI capability, one
 * message) or MODE_INTX (the handler clears IMAN.IP, which drops the
 * line); events are taken only after an interrupt announced them. Prints
 * "xhci: interrupts: ..." at the end. Failures print "FAIL: ..." (status
 * 3); no controller: status 5.
 */
#include "vlib.h"
#include "irq.h"

struct trb { uint32_t lo, hi, sts, ctl; };
struct ring { volatile struct trb *t; unsigned idx, cycle, n; };

#define TRB_NORMAL	1
#define TRB_SETUP	2
#define TRB_DATA	3
#define TRB_STATUS	4
#define TRB_LINK	6
#define TRB_ENABLE_SLOT	9
#define TRB_ADDRESS	11
#define TRB_CONFIGURE	12
#define TRB_EVALUATE	13
#define TRB_RESET_EP	14
#define TRB_SET_DEQ	16
#define EV_TRANSFER	32
#define EV_COMMAND	33
#define EV_PORT		34
#define CC_SUCCESS	1
#define CC_STALL	6
#define CC_SHORT	13

#define PORTSC_PP	(1u << 9)
#define PORTSC_PR	(1u << 4)
#define PORTSC_CHANGES	((1u << 17) | (1u << 18) | (1u << 19) | (1u << 20) | (1u << 21) | (1u << 22) | (1u << 23))

static uintptr_t cap, op, rt, db;
static int bdf, irqmode, vec = -1, ctxsz, armed;
static uint32_t irq_seen, events;
static struct ring cmdr, ep0r, intr;
static volatile struct trb *evr;
static unsigned ev_idx, ev_cycle = 1;
#define EV_N	64
static volatile uint64_t *dcbaa;
static int slot, port, speed, epid;
static uintptr_t devctx;
static int quiet;
/* Progress lines; bench mode keeps COM1 quiet while it times. */
#define say(...) do { if (!quiet) printf(__VA_ARGS__); } while (0)

static uint32_t opr(int off) { return mr32(op + off); }
static void opw(int off, uint32_t v) { mw32(op + off, v); }
static uint32_t irr(int off) { return mr32(rt + 0x20 + off); }
static void irw(int off, uint32_t v) { mw32(rt + 0x20 + off, v); }

static void ring_init(struct ring *r, unsigned n)
{
	r->t = alloc(n * sizeof(struct trb), 64);
	r->n = n;
	r->idx = 0;
	r->cycle = 1;
	r->t[n - 1].lo = (uint32_t)(uintptr_t)r->t;
	r->t[n - 1].hi = 0;
	r->t[n - 1].ctl = (TRB_LINK << 10) | 2;	/* toggle cycle */
}

/* Puts a TRB (the cycle bit last); returns its address. */
static uint32_t put(struct ring *r, uint32_t lo, uint32_t hi, uint32_t sts, uint32_t ctl)
{
	volatile struct trb *t = &r->t[r->idx];
	t->lo = lo;
	t->hi = hi;
	t->sts = sts;
	barrier();
	t->ctl = (ctl & ~1u) | r->cycle;
	uint32_t at = (uint32_t)(uintptr_t)t;
	if (++r->idx == r->n - 1) {
		volatile struct trb *l = &r->t[r->n - 1];
		l->ctl = (l->ctl & ~1u) | r->cycle;
		r->idx = 0;
		r->cycle ^= 1;
	}
	return at;
}

static uint32_t ring_deq(struct ring *r) { return (uint32_t)(uintptr_t)&r->t[r->idx] | r->cycle; }

/* The next event. In interrupt mode an event is only taken once an
 * interrupt came after the ring was last seen empty. */
static struct trb next_event(void)
{
	uint64_t t0 = rdtsc();
	for (;;) {
		if (vec >= 0 && !armed) {
			if (!irq_wait_change(&irq_count[vec], irq_seen, poll_timeout_cycles))
				fail("xhci: no interrupt on vector %x (IMAN %x, USBSTS %x, %u events so far)", vec, irr(0), opr(4), events);
			irq_seen = irq_count[vec];
			irw(0, 3);	/* IP: write 1 to clear; IE stays */
			armed = 1;
		}
		volatile struct trb *e = &evr[ev_idx];
		if ((e->ctl & 1) == ev_cycle) {
			struct trb ev = { e->lo, e->hi, e->sts, e->ctl };
			if (++ev_idx == EV_N) {
				ev_idx = 0;
				ev_cycle ^= 1;
			}
			events++;
			/* Free the entry: the dequeue pointer moves (EHB stays). */
			irw(0x18, (uint32_t)(uintptr_t)&evr[ev_idx]);
			return ev;
		}
		/* Empty: hand the ring back (EHB cleared) and wait. */
		irw(0x18, (uint32_t)(uintptr_t)&evr[ev_idx] | 8);
		irw(0x1c, 0);
		if (vec >= 0) {
			armed = 0;
		} else if (rdtsc() - t0 > poll_timeout_cycles) {
			fail("xhci: no event (USBSTS %x)", opr(4));
		}
		if (opr(4) & ((1u << 2) | (1u << 12)))
			fail("xhci: controller error (USBSTS %x)", opr(4));
	}
}

/* Waits for an event of `type` (for commands and transfers: on TRB `at`). */
static struct trb wait_event(int type, uint32_t at)
{
	for (int guard = 0; guard < 1000; guard++) {
		struct trb e = next_event();
		int t = (e.ctl >> 10) & 0x3f;
		if (t == type && (type == EV_PORT || e.lo == at))
			return e;
		if (t == EV_PORT)
			continue;	/* a port change we did not ask about */
		if (t == EV_TRANSFER && type == EV_TRANSFER)
			return e;	/* a transfer event for an earlier TRB of this TD */
		printf("xhci: unexpected event type %d (%x %x %x %x)\n", t, e.lo, e.hi, e.sts, e.ctl);
	}
	fail("xhci: too many unrelated events");
}

static struct trb command(uint32_t lo, uint32_t sts, uint32_t ctl)
{
	uint32_t at = put(&cmdr, lo, 0, sts, ctl);
	mw32(db, 0);
	return wait_event(EV_COMMAND, at);
}

static int cc_of(struct trb e) { return e.sts >> 24; }

static void *ctx_at(void *base, int i) { return (uint8_t *)base + i * ctxsz; }

/* A control transfer on endpoint 0: returns the bytes moved, or -1 on a
 * STALL (endpoint 0 is then reset and its ring moved past the TD). */
static int control(uint8_t type, uint8_t req, uint16_t value, uint16_t index, uint16_t len, void *buf)
{
	int in = (type & 0x80) != 0;
	uint32_t trt = len == 0 ? 0 : in ? 3 : 2;
	put(&ep0r, type | (req << 8) | ((uint32_t)value << 16), index | ((uint32_t)len << 16), 8,
	    (TRB_SETUP << 10) | (1 << 6) | (trt << 16));
	uint32_t data = 0;
	if (len)
		data = put(&ep0r, (uint32_t)(uintptr_t)buf, 0, len, (TRB_DATA << 10) | (in ? (1u << 16) | (1 << 2) : 0));
	uint32_t status = put(&ep0r, 0, 0, 0, (TRB_STATUS << 10) | (1 << 5) | (in && len ? 0 : 1u << 16));
	mw32(db + 4 * slot, 1);
	int moved = len;
	for (;;) {
		struct trb e = wait_event(EV_TRANSFER, status);
		int cc = cc_of(e);
		if (cc == CC_STALL) {
			struct trb r = command(0, 0, (TRB_RESET_EP << 10) | (1 << 16) | ((uint32_t)slot << 24));
			if (cc_of(r) != CC_SUCCESS)
				fail("xhci: Reset Endpoint: completion code %d", cc_of(r));
			r = command(ring_deq(&ep0r), 0, (TRB_SET_DEQ << 10) | (1 << 16) | ((uint32_t)slot << 24));
			if (cc_of(r) != CC_SUCCESS)
				fail("xhci: Set TR Dequeue Pointer: completion code %d", cc_of(r));
			return -1;
		}
		if (e.lo == data && cc == CC_SHORT) {
			moved = len - (int)(e.sts & 0xffffff);
			continue;
		}
		if (cc != CC_SUCCESS)
			fail("xhci: control request %02x/%02x: completion code %d", type, req, cc);
		if (e.lo == status)
			return moved;
	}
}

static const char *speed_name(int s)
{
	switch (s) {
	case 1: return "full";
	case 2: return "low";
	case 3: return "high";
	case 4: return "super";
	default: return "unknown";
	}
}

static void controller_reset(void)
{
	opw(0, opr(0) & ~1u);
	uint64_t t0 = rdtsc();
	while (!(opr(4) & 1))
		if (rdtsc() - t0 > poll_timeout_cycles)
			fail("xhci: controller does not halt");
	opw(0, 2);
	while ((opr(0) & 2) || (opr(4) & (1u << 11)))
		if (rdtsc() - t0 > poll_timeout_cycles)
			fail("xhci: HCRST does not complete");
}

static void setup_interrupts(void)
{
	if (irqmode == MODE_MSI) {
		int mc = pci_find_cap(bdf, 0x05);
		if (!mc)
			fail("xhci: no MSI capability");
		vec = irq_alloc_vector();
		uint16_t ctrl = pci_r16(bdf, mc + 2);
		uint64_t a = msi_address();
		pci_w32(bdf, mc + 4, (uint32_t)a);
		int data = mc + 8;
		if (ctrl & 0x80) {
			pci_w32(bdf, mc + 8, (uint32_t)(a >> 32));
			data = mc + 12;
		}
		pci_w16(bdf, data, (uint16_t)msi_data(vec));
		pci_w16(bdf, mc + 2, (uint16_t)((ctrl & ~0x70) | 1));
		say("xhci: MSI, one message of %u, vector %x\n", 1u << ((ctrl >> 1) & 7), vec);
	} else if (irqmode == MODE_INTX) {
		struct intx_route r;
		if (!pci_intx_route(bdf, &r))
			fail("xhci: no INTx route");
		vec = irq_alloc_vector();
		pci_w16(bdf, 4, pci_r16(bdf, 4) & ~0x400);
		/* The handler clears IMAN.IP: the level drops; IE stays set. */
		irq_set_ack(vec, IRQ_ACK_MMIO32W, rt + 0x20, 3);
		ioapic_route(r.pin, vec, r.level, r.active_low);
		say("xhci: INT%c -> I/O APIC pin %d (%s), vector %x, from the %s\n", 'A' + pci_r8(bdf, 0x3d) - 1, r.pin,
		    r.level ? "level" : "edge", vec, r.source);
	} else if (irqmode != MODE_POLL) {
		fail("xhci: interrupt mode %d not supported (use MSI or INTx)", irqmode);
	}
	if (vec >= 0)
		irq_seen = irq_count[vec];
}

/* Resets every connected port; the tablet's becomes `port`. */
static void find_port(int nports)
{
	for (int p = 1; p <= nports; p++) {
		uint32_t sc = opr(0x400 + 16 * (p - 1));
		if (!(sc & 1))
			continue;
		opw(0x400 + 16 * (p - 1), PORTSC_PP | PORTSC_PR);
		uint64_t t0 = rdtsc();
		while (!(opr(0x400 + 16 * (p - 1)) & (1u << 21)))
			if (rdtsc() - t0 > poll_timeout_cycles)
				fail("xhci: port %d reset does not complete", p);
		struct trb e = wait_event(EV_PORT, 0);
		sc = opr(0x400 + 16 * (p - 1));
		opw(0x400 + 16 * (p - 1), PORTSC_PP | (sc & PORTSC_CHANGES));
		sc = opr(0x400 + 16 * (p - 1));
		if (!(sc & 2))
			fail("xhci: port %d not enabled after reset (PORTSC %x)", p, sc);
		port = p;
		speed = (sc >> 10) & 0xf;
		say("xhci: port %d: connected, %s speed, enabled after reset (event for port %u)\n", p, speed_name(speed), e.lo >> 24);
		return;
	}
	fail("xhci: no device on any port");
}

int guest_main(uint32_t param)
{
	uint32_t mode = rom_word(1);
	irqmode = (int)(mode & 0xf);
	printf("xhci test (%s)\n", irq_mode_name(irqmode));
	quiet = param && !(param & 0x80000000u);
	if (irqmode != MODE_POLL || (mode & MODE_HOLD))
		irq_init();
	struct pci_virtio none[1];
	pci_scan(none, 0);
	bdf = pci_find(0x08, 8, 0x0c0330);
	if (bdf < 0) {
		say("xhci: no xHCI controller\n");
		exit_(EXIT_NODEV);
	}
	pci_w16(bdf, 4, pci_r16(bdf, 4) | 0x6);
	uint32_t lo = pci_r32(bdf, 0x10);
	uint64_t bar = lo & ~0xfu;
	if (((lo >> 1) & 3) == 2)
		bar |= (uint64_t)pci_r32(bdf, 0x14) << 32;
	cap = (uintptr_t)bar;
	op = cap + mr8(cap);
	uint32_t hcs1 = mr32(cap + 4), hcs2 = mr32(cap + 8), hcc1 = mr32(cap + 0x10);
	db = cap + (mr32(cap + 0x14) & ~3u);
	rt = cap + (mr32(cap + 0x18) & ~0x1fu);
	ctxsz = hcc1 & 4 ? 64 : 32;
	int nslots = hcs1 & 0xff, nports = hcs1 >> 24;
	say("xhci: %04x:%04x at 00:%02x.%u, xHCI %x.%02x, %u slots, %u ports, %u interrupters, %u-byte contexts\n",
	    pci_r16(bdf, 0), pci_r16(bdf, 2), bdf >> 3, bdf & 7, mr32(cap) >> 24, (mr32(cap) >> 16) & 0xff, nslots, nports,
	    (hcs1 >> 8) & 0x7ff, ctxsz);
	for (uint32_t off = (hcc1 >> 16) * 4, guard = 0; off && guard < 32; guard++) {
		uint32_t c = mr32(cap + off);
		if ((c & 0xff) == 2) {
			uint32_t w2 = mr32(cap + off + 8);
			say("xhci: protocol USB %x.%x on ports %u-%u\n", c >> 24, (c >> 20) & 0xf, w2 & 0xff, (w2 & 0xff) + ((w2 >> 8) & 0xff) - 1);
		}
		if (!((c >> 8) & 0xff))
			break;
		off += ((c >> 8) & 0xff) * 4;
	}

	uint64_t t_reset = rdtsc();
	controller_reset();
	opw(0x38, nslots);
	dcbaa = alloc(8 * 256, 64);
	unsigned nsp = ((hcs2 >> 27) & 0x1f) | (((hcs2 >> 21) & 0x1f) << 5);
	if (nsp) {
		volatile uint64_t *sp = alloc(8 * nsp, 64);
		for (unsigned i = 0; i < nsp; i++)
			sp[i] = (uintptr_t)alloc(4096, 4096);
		dcbaa[0] = (uintptr_t)sp;
	}
	opw(0x30, (uint32_t)(uintptr_t)dcbaa);
	opw(0x34, 0);
	ring_init(&cmdr, 64);
	opw(0x18, (uint32_t)(uintptr_t)cmdr.t | 1);
	opw(0x1c, 0);
	evr = alloc(EV_N * sizeof(struct trb), 64);
	volatile uint32_t *erst = alloc(16, 64);
	erst[0] = (uint32_t)(uintptr_t)evr;
	erst[1] = 0;
	erst[2] = EV_N;
	irw(0x08, 1);
	irw(0x18, (uint32_t)(uintptr_t)evr);
	irw(0x1c, 0);
	irw(0x10, (uint32_t)(uintptr_t)erst);
	irw(0x14, 0);
	irw(0x04, 0);	/* no interrupt moderation */
	setup_interrupts();
	if (vec >= 0)
		irw(0, 2);	/* IE */
	opw(0, 1 | (vec >= 0 ? 4 : 0));
	while (opr(4) & 1)
		;

	find_port(nports);
	struct trb e = command(0, 0, TRB_ENABLE_SLOT << 10);
	if (cc_of(e) != CC_SUCCESS)
		fail("xhci: Enable Slot: completion code %d", cc_of(e));
	slot = e.ctl >> 24;

	/* Address Device */
	uint8_t *in = alloc(33 * ctxsz, 64);
	devctx = (uintptr_t)alloc(32 * ctxsz, 64);
	dcbaa[slot] = devctx;
	ring_init(&ep0r, 32);
	int mps0 = speed == 4 ? 512 : speed == 3 ? 64 : 8;
	((uint32_t *)in)[1] = 3;
	uint32_t *sctx = ctx_at(in, 1), *ep0 = ctx_at(in, 2);
	sctx[0] = (1u << 27) | ((uint32_t)speed << 20);
	sctx[1] = (uint32_t)port << 16;
	ep0[1] = (3 << 1) | (4 << 3) | ((uint32_t)mps0 << 16);
	ep0[2] = (uint32_t)(uintptr_t)ep0r.t | 1;
	ep0[3] = 0;
	ep0[4] = 8;
	e = command((uint32_t)(uintptr_t)in, 0, (TRB_ADDRESS << 10) | ((uint32_t)slot << 24));
	if (cc_of(e) != CC_SUCCESS)
		fail("xhci: Address Device: completion code %d", cc_of(e));
	uint32_t *osl = (uint32_t *)devctx;
	say("xhci: slot %d addressed (slot state %u, USB address %u)\n", slot, osl[3] >> 27, osl[3] & 0xff);

	uint8_t *buf = alloc(512, 64);
	int n = control(0x80, 6, 0x0100, 0, 18, buf);
	if (n != 18)
		fail("xhci: device descriptor: %d bytes", n);
	say("xhci: device: USB %x.%02x, vendor %04x product %04x, max packet %u, %u configuration(s)\n",
	    buf[3], buf[2], buf[8] | (buf[9] << 8), buf[10] | (buf[11] << 8), buf[7], buf[17]);
	int mps_desc = buf[3] >= 3 && speed == 4 ? 1 << buf[7] : buf[7];
	if (mps_desc != mps0) {
		memset(in, 0, 33 * ctxsz);
		((uint32_t *)in)[1] = 2;
		ep0[1] = (3 << 1) | (4 << 3) | ((uint32_t)mps_desc << 16);
		e = command((uint32_t)(uintptr_t)in, 0, (TRB_EVALUATE << 10) | ((uint32_t)slot << 24));
		if (cc_of(e) != CC_SUCCESS)
			fail("xhci: Evaluate Context: completion code %d", cc_of(e));
		say("xhci: endpoint 0 max packet %u -> %u (Evaluate Context)\n", mps0, mps_desc);
	}
	int iproduct = buf[15];
	n = control(0x80, 6, 0x0300 | iproduct, 0x0409, 64, buf);
	char name[33];
	int k = 0;
	for (int i = 2; i + 1 < n && k < 32; i += 2)
		name[k++] = (char)buf[i];
	name[k] = 0;
	say("xhci: product '%s'\n", name);

	n = control(0x80, 6, 0x0200, 0, 9, buf);
	int total = buf[2] | (buf[3] << 8);
	if (n != 9 || total > 512)
		fail("xhci: configuration descriptor: %d bytes, total %d", n, total);
	n = control(0x80, 6, 0x0200, 0, (uint16_t)total, buf);
	int cfgval = buf[5], iface = -1, replen = 0, epaddr = 0, epmps = 0, epint = 0;
	for (int i = 0; i + 1 < n && buf[i]; i += buf[i]) {
		if (buf[i + 1] == 4) {
			iface = buf[i + 2];
			say("xhci: interface %d: class %u/%u/%u\n", iface, buf[i + 5], buf[i + 6], buf[i + 7]);
		} else if (buf[i + 1] == 0x21)
			replen = buf[i + 7] | (buf[i + 8] << 8);
		else if (buf[i + 1] == 5 && (buf[i + 2] & 0x80) && (buf[i + 3] & 3) == 3 && !epaddr)
			epaddr = buf[i + 2], epmps = buf[i + 4] | (buf[i + 5] << 8), epint = buf[i + 6];
	}
	if (iface < 0 || !epaddr || !replen)
		fail("xhci: no HID interface with an interrupt IN endpoint");
	say("xhci: configuration %d (%d bytes): report descriptor %d bytes, endpoint %02x interrupt IN, %d bytes, bInterval %d\n",
	    cfgval, total, replen, epaddr, epmps, epint);
	if (control(0x00, 9, (uint16_t)cfgval, 0, 0, 0) != 0)
		fail("xhci: SET_CONFIGURATION");
	if (control(0x21, 0x0a, 0, (uint16_t)iface, 0, 0) != 0)
		fail("xhci: SET_IDLE");
	n = control(0x81, 6, 0x2200, (uint16_t)iface, (uint16_t)replen, buf);
	if (n != replen)
		fail("xhci: report descriptor: %d bytes of %d", n, replen);
	int xmax = -1;
	for (int i = 0; i + 2 < n; i++)
		if (buf[i] == 0x26)
			xmax = buf[i + 1] | (buf[i + 2] << 8);
	say("xhci: report descriptor crc %08x, logical maximum %d\n", crc32(0, buf, (size_t)n), xmax);
	if (control(0x80, 6, 0x7700, 0, 8, buf) != -1)
		fail("xhci: an unknown descriptor type did not STALL");
	say("xhci: unknown descriptor STALLs; endpoint 0 back after Reset Endpoint + Set TR Dequeue\n");
	if (control(0x80, 6, 0x0100, 0, 8, buf) != 8)
		fail("xhci: endpoint 0 does not work after the STALL");

	/* Configure Endpoint: the interrupt IN endpoint. */
	epid = (epaddr & 0xf) * 2 + 1;
	/* xHCI intervals are 2^n * 125 us: bInterval - 1 at high and super
	 * speed, frames (1 ms) converted at full and low speed. */
	int interval = 0;
	if (speed >= 3)
		interval = epint > 0 ? epint - 1 : 0;
	else
		for (int f = epint * 8; f > 1; f >>= 1)
			interval++;
	memset(in, 0, 33 * ctxsz);
	((uint32_t *)in)[1] = 1 | (1u << epid);
	sctx[0] = ((uint32_t)epid << 27) | ((uint32_t)speed << 20);
	sctx[1] = (uint32_t)port << 16;
	uint32_t *ep = ctx_at(in, epid + 1);
	ring_init(&intr, 32);
	ep[0] = (uint32_t)interval << 16;
	ep[1] = (3 << 1) | (7 << 3) | ((uint32_t)epmps << 16);
	ep[2] = (uint32_t)(uintptr_t)intr.t | 1;
	ep[4] = (uint32_t)epmps | ((uint32_t)epmps << 16);
	e = command((uint32_t)(uintptr_t)in, 0, (TRB_CONFIGURE << 10) | ((uint32_t)slot << 24));
	if (cc_of(e) != CC_SUCCESS)
		fail("xhci: Configure Endpoint: completion code %d", cc_of(e));
	uint64_t t_done = rdtsc();
	say("xhci: endpoint %d IN configured (endpoint ID %d, interval %d), slot state %u\n", epaddr & 0xf, epid, interval,
	    osl[3] >> 27);

	if (param && !(param & 0x80000000u)) {
		uint64_t hz = tsc_hz_from_rtc();
		printf("bench: tsc_hz %lu\n", hz);
		printf("bench: enumerate %lu us\n", (t_done - t_reset) * 1000000 / hz);
		uint64_t t0 = rdtsc();
		for (uint32_t i = 0; i < param; i++)
			if (control(0x80, 6, 0x0100, 0, 18, buf) != 18)
				fail("xhci: bench transfer %u", i);
		uint64_t dt = rdtsc() - t0;
		printf("bench: %u control transfers, %lu ns each\n", param, dt * 1000000000 / hz / param);
		/* One register read: the MMIO exit alone. */
		t0 = rdtsc();
		for (uint32_t i = 0; i < param; i++)
			(void)opr(4);
		dt = rdtsc() - t0;
		printf("bench: %u USBSTS reads, %lu ns each\n", param, dt * 1000000000 / hz / param);
		/* A doorbell nobody listens to (slot 64): the MMIO write exit alone. */
		t0 = rdtsc();
		for (uint32_t i = 0; i < param; i++)
			mw32(db + 4 * 64, 1);
		dt = rdtsc() - t0;
		printf("bench: %u idle doorbell writes, %lu ns each\n", param, dt * 1000000000 / hz / param);
		/* No Op commands: doorbell 0, one completion event. */
		t0 = rdtsc();
		for (uint32_t i = 0; i < param; i++)
			if (cc_of(command(0, 0, 23 << 10)) != CC_SUCCESS)
				fail("xhci: No Op failed");
		dt = rdtsc() - t0;
		printf("bench: %u No Op commands, %lu ns each\n", param, dt * 1000000000 / hz / param);
		return EXIT_OK;
	}

	/* Eight IN TRBs; each report completes one, which is put back. */
	uint8_t *rep = alloc(8 * 8, 64);
	uint32_t trb_at[8];
	for (int i = 0; i < 8; i++)
		trb_at[i] = put(&intr, (uint32_t)(uintptr_t)(rep + 8 * i), 0, 8, (TRB_NORMAL << 10) | (1 << 5) | (1 << 2));
	mw32(db + 4 * slot, (uint32_t)epid);
	say("xhci: ready for pointer events\n");
	int want = param ? (int)(param & 0xffff) : 3;
	for (int got = 0; got < want;) {
		struct trb t = next_event();
		int type = (t.ctl >> 10) & 0x3f;
		if (type != EV_TRANSFER || (int)((t.ctl >> 16) & 0x1f) != epid)
			continue;
		int cc = cc_of(t);
		if (cc != CC_SUCCESS && cc != CC_SHORT)
			fail("xhci: interrupt transfer: completion code %d", cc);
		int i = 0;
		while (i < 8 && trb_at[i] != t.lo)
			i++;
		if (i == 8)
			fail("xhci: transfer event for an unknown TRB %x", t.lo);
		uint8_t *r = rep + 8 * i;
		got++;
		say("xhci: report %d: buttons %x x %u y %u (%u bytes)\n", got, r[0], r[1] | (r[2] << 8), r[3] | (r[4] << 8),
		    8 - (t.sts & 0xffffff));
		trb_at[i] = put(&intr, (uint32_t)(uintptr_t)r, 0, 8, (TRB_NORMAL << 10) | (1 << 5) | (1 << 2));
		mw32(db + 4 * slot, (uint32_t)epid);
	}
	if (vec >= 0)
		say("xhci: interrupts: %s vector %x %u, %u events\n", irq_mode_name(irqmode), vec, irq_count[vec], events);
	if (mode & MODE_HOLD)
		irq_hold_com1();
	return EXIT_OK;
}
