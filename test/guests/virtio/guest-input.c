/*
 * virtio-input.rom: find the virtio input device (1af4:1052), drive it
 * through the modern transport as a driver does:
 *   - config space: ID_NAME, ID_SERIAL, ID_DEVIDS, PROP_BITS, EV_BITS of
 *     EV_KEY, EV_REL, EV_ABS, EV_MSC, EV_SW, EV_LED, ABS_INFO of ABS_X when
 *     the device has EV_ABS; printed one a line ("vinput: ...");
 *   - 32 event buffers of 8 bytes on queue 0, then "vinput: ready for N
 *     events" (N: the parameter, 0 = 4); every event received is printed
 *     ("vinput: event K: type T code C value V") and its buffer given back;
 *   - after N events, EV_LED LED_CAPSL 1 and EV_SYN on the status queue
 *     (queue 1), waiting until the device has used both;
 *       vinput: received N events, crc XXXXXXXX
 * Interrupt mode (the mode word, irq.h: MODE_MSIX, MODE_MSI, MODE_INTX,
 * | MODE_EVENT_IDX, | MODE_HOLD): events are taken only after an interrupt
 * announced them; prints "vinput: interrupts: MODE queue vector V N".
 */
#include "vlib.h"
#include "irq.h"

#define NBUF		32
#define SEL_NAME	0x01
#define SEL_SERIAL	0x02
#define SEL_DEVIDS	0x03
#define SEL_PROPS	0x10
#define SEL_EV_BITS	0x11
#define SEL_ABS_INFO	0x12
#define EV_SYN		0x00
#define EV_KEY		0x01
#define EV_REL		0x02
#define EV_ABS		0x03
#define EV_MSC		0x04
#define EV_SW		0x05
#define EV_LED		0x11
#define LED_CAPSL	0x01

struct vev { uint16_t type, code; uint32_t value; };

static struct vdev *d;

/* Selects a question; returns the answer's size. */
static unsigned ask(uint8_t select, uint8_t subsel)
{
	mw8(d->devcfg + 0, select);
	mw8(d->devcfg + 1, subsel);
	return vcfg8(d, 2);
}

static uint8_t u8(int i) { return vcfg8(d, 8 + i); }

static void print_bits(const char *what, unsigned type)
{
	unsigned n = ask(SEL_EV_BITS, (uint8_t)type);
	unsigned set = 0;
	for (unsigned i = 0; i < n; i++)
		for (uint8_t b = u8((int)i); b; b &= (uint8_t)(b - 1))
			set++;
	printf("vinput: ev_bits %s: %u bytes, %u codes", what, n, set);
	if (type == EV_KEY && n > 30 / 8)
		printf(", KEY_A %s", u8(30 / 8) & (1 << (30 % 8)) ? "yes" : "no");
	if (type == EV_LED && n)
		printf(", LED_CAPSL %s", u8(0) & (1 << LED_CAPSL) ? "yes" : "no");
	printf("\n");
}

int guest_main(uint32_t param)
{
	uint32_t mode = rom_word(1);
	int irqmode = (int)(mode & 0xf);
	unsigned want = param ? param : 4;
	printf("virtio-input test (%s%s)\n", irq_mode_name(irqmode), mode & MODE_EVENT_IDX ? ", event idx" : "");
	if (irqmode != MODE_POLL || (mode & MODE_HOLD))
		irq_init();
	d = alloc(sizeof(*d), 64);
	struct pci_virtio pci = pci_find_virtio(VIRTIO_ID_INPUT);
	printf("vinput: 00:%02x.%u %04x:%04x rev %u subsystem %04x:%04x class %06x\n", (pci.bdf >> 3) & 31, pci.bdf & 7,
	    pci.vendor, pci.device, pci_r8(pci.bdf, 8), pci_r16(pci.bdf, 0x2c), pci_r16(pci.bdf, 0x2e), pci_r32(pci.bdf, 8) >> 8);
	virtio_init(d, pci, mode & MODE_EVENT_IDX ? 1ull << VIRTIO_F_EVENT_IDX : 0);
	virtio_setup_irqs(d, irqmode);
	virtio_setup_queue(d, 0, 64);
	virtio_setup_queue(d, 1, 64);

	char name[129];
	unsigned n = ask(SEL_NAME, 0);
	for (unsigned i = 0; i < n && i < 128; i++)
		name[i] = (char)u8((int)i);
	name[n < 128 ? n : 128] = 0;
	printf("vinput: name '%s'\n", name);
	printf("vinput: serial %u bytes\n", ask(SEL_SERIAL, 0));
	if (ask(SEL_DEVIDS, 0) == 8)
		printf("vinput: ids bus %04x vendor %04x product %04x version %04x\n", vcfg16(d, 8), vcfg16(d, 10), vcfg16(d, 12),
		    vcfg16(d, 14));
	else
		printf("vinput: no ids\n");
	n = ask(SEL_PROPS, 0);
	printf("vinput: props %u bytes%s\n", n, n ? (u8(0) & 1 ? ", INPUT_PROP_POINTER" : "") : "");
	print_bits("EV_KEY", EV_KEY);
	print_bits("EV_REL", EV_REL);
	print_bits("EV_ABS", EV_ABS);
	print_bits("EV_MSC", EV_MSC);
	print_bits("EV_SW", EV_SW);
	print_bits("EV_LED", EV_LED);
	if (ask(SEL_EV_BITS, EV_ABS) && (u8(0) & 1)) {
		if (ask(SEL_ABS_INFO, 0) == 20)
			printf("vinput: ABS_X min %d max %d fuzz %d flat %d res %d\n", (int)vcfg32(d, 8), (int)vcfg32(d, 12),
			    (int)vcfg32(d, 16), (int)vcfg32(d, 20), (int)vcfg32(d, 24));
		else
			fail("vinput: the device has ABS_X but no ABS_INFO for it");
	}

	struct vev *bufs = alloc(NBUF * sizeof(struct vev), 64);
	struct vev *by_id[64];
	struct vq *q = &d->vq[0];
	for (int i = 0; i < NBUF; i++) {
		struct vbuf b = { &bufs[i], sizeof(struct vev), 1 };
		int id = vq_add(q, &b, 1);
		if (id < 0)
			fail("vinput: event buffer %d", i);
		by_id[id] = &bufs[i];
	}
	virtio_driver_ok(d);
	vq_kick(q);
	printf("vinput: ready for %u events\n", want);

	uint32_t crc = 0;
	for (unsigned got = 0; got < want; got++) {
		uint32_t len;
		int id = vq_next(d, q, &len, poll_timeout_cycles * 6);
		if (id < 0)
			fail("vinput: no event %u of %u", got + 1, want);
		if (len != sizeof(struct vev))
			fail("vinput: event of %u bytes", len);
		struct vev e = *by_id[id];
		crc = crc32(crc, &e, sizeof(e));
		printf("vinput: event %u: type %x code %u value %d\n", got, e.type, e.code, (int)e.value);
		struct vbuf b = { by_id[id], sizeof(struct vev), 1 };
		int nid = vq_add(q, &b, 1);
		if (nid < 0)
			fail("vinput: cannot give the buffer back");
		by_id[nid] = b.addr;
		vq_kick(q);
	}

	struct vev *st = alloc(2 * sizeof(struct vev), 64);
	st[0] = (struct vev){ EV_LED, LED_CAPSL, 1 };
	st[1] = (struct vev){ EV_SYN, 0, 0 };
	struct vbuf s0 = { &st[0], sizeof(struct vev), 0 }, s1 = { &st[1], sizeof(struct vev), 0 };
	vq_add(&d->vq[1], &s0, 1);
	vq_add(&d->vq[1], &s1, 1);
	vq_kick(&d->vq[1]);
	uint32_t len;
	vq_wait(d, &d->vq[1], &len);
	vq_wait(d, &d->vq[1], &len);
	printf("vinput: sent LED_CAPSL on, the status queue returned both buffers\n");
	printf("vinput: received %u events, crc %08x\n", want, crc);
	if (irqmode != MODE_POLL)
		printf("vinput: interrupts: %s queue vector %x %u\n", irq_mode_name(irqmode), q->vec, irq_count[q->vec]);
	if (mode & MODE_HOLD)
		irq_hold_com1();
	return EXIT_OK;
}
