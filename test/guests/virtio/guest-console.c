/*
 * virtio-console.rom: find the virtio console (1af4:1043, or transitional
 * 1af4:1003), drive it through the modern transport without
 * VIRTIO_CONSOLE_F_MULTIPORT (so only port 0: receiveq 0, transmitq 1),
 * write the line "hello from virtio-console guest\n" on port 0, then read
 * from port 0 until a newline arrives and print
 *     virtio-console: received 'LINE'
 * and exit 0x10 (status 33). No line within ~10 s: FAIL, status 7.
 */
#include "vlib.h"

#define RXBUFS	4
#define RXLEN	128

int guest_main(uint32_t param)
{
	(void)param;
	printf("virtio-console test\n");
	struct vdev *d = alloc(sizeof(*d), 64);
	virtio_init(d, pci_find_virtio(VIRTIO_ID_CONSOLE), 0);
	virtio_setup_queue(d, 0, 64);
	virtio_setup_queue(d, 1, 64);
	virtio_driver_ok(d);
	uint8_t *rx = alloc(RXBUFS * RXLEN, 64);
	for (int i = 0; i < RXBUFS; i++) {
		struct vbuf b = { rx + i * RXLEN, RXLEN, 1 };
		if (vq_add(&d->vq[0], &b, 1) != i)
			fail("virtio-console: rx buffer %d", i);
	}
	vq_kick(&d->vq[0]);

	static const char msg[] = "hello from virtio-console guest\n";
	char *tx = alloc(sizeof(msg), 64);
	memcpy(tx, msg, sizeof(msg) - 1);
	struct vbuf t = { tx, sizeof(msg) - 1, 0 };
	vq_add(&d->vq[1], &t, 1);
	vq_kick(&d->vq[1]);
	uint32_t len;
	vq_wait(d, &d->vq[1], &len);
	printf("virtio-console: sent %u bytes\n", (unsigned)(sizeof(msg) - 1));

	char line[256];
	unsigned n = 0;
	for (;;) {
		int id = vq_wait(d, &d->vq[0], &len);
		if (len > RXLEN)
			fail("virtio-console: device wrote %u bytes into a %u-byte buffer", len, RXLEN);
		const char *p = (const char *)rx + id * RXLEN;
		int done = 0;
		for (uint32_t i = 0; i < len && !done; i++) {
			if (p[i] == '\n')
				done = 1;
			else if (p[i] != '\r' && n < sizeof(line) - 1)
				line[n++] = p[i];
		}
		struct vbuf b = { (void *)p, RXLEN, 1 };	/* recycle the buffer */
		vq_add(&d->vq[0], &b, 1);
		vq_kick(&d->vq[0]);
		if (done)
			break;
	}
	line[n] = 0;
	printf("virtio-console: received '%s'\n", line);
	return EXIT_OK;
}
