/*
 * virtio-rnd.rom: find the virtio entropy device (1af4:1044, or the
 * transitional 1af4:1005), drive it through the modern transport, read 64
 * bytes twice (one device-writable buffer per request, repeated until 64
 * bytes arrived), print them in hex and check they are not all zero and
 * not equal. Prints "virtio-rnd: OK" and exits 0x10 (status 33).
 */
#include "vlib.h"

static void fill(struct vdev *d, uint8_t *out, unsigned n)
{
	unsigned got = 0;
	while (got < n) {
		struct vbuf b = { out + got, n - got, 1 };
		if (vq_add(&d->vq[0], &b, 1) < 0)
			fail("virtio-rnd: queue full");
		vq_kick(&d->vq[0]);
		uint32_t len;
		vq_wait(d, &d->vq[0], &len);
		if (len > n - got)
			fail("virtio-rnd: device wrote %u bytes into a %u-byte buffer", len, n - got);
		got += len;
	}
}

static void hex(const char *label, const uint8_t *p, unsigned n)
{
	printf("virtio-rnd: %s ", label);
	for (unsigned i = 0; i < n; i++)
		printf("%02x", p[i]);
	printf("\n");
}

int guest_main(uint32_t param)
{
	(void)param;
	printf("virtio-rnd test\n");
	struct vdev *d = alloc(sizeof(*d), 64);
	virtio_init(d, pci_find_virtio(VIRTIO_ID_RNG), 0);
	virtio_setup_queue(d, 0, 64);
	virtio_driver_ok(d);
	uint8_t *a = alloc(64, 64), *b = alloc(64, 64);
	fill(d, a, 64);
	fill(d, b, 64);
	hex("read 1", a, 64);
	hex("read 2", b, 64);
	static const uint8_t zero[64];
	if (!memcmp(a, zero, 64) || !memcmp(b, zero, 64))
		fail("virtio-rnd: all-zero entropy");
	if (!memcmp(a, b, 64))
		fail("virtio-rnd: the two reads are equal");
	printf("virtio-rnd: OK\n");
	return EXIT_OK;
}
