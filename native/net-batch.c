// Frame batches: many frames to (or from) one fd in one call from
// JavaScript (src/sys/net-batch.ts). A tap takes one frame per write(2)
// and gives one per read(2), so a queueful of frames is a queueful of
// system calls either way; what the batch saves is the foreign-function
// glue around each (koffi's and N-API's, ~0.2-0.3 us a call here against
// ~0.1 us for the system call itself), which was most of what our data
// path cost above QEMU's.
//
// JavaScript does the ring work (it pops and validates every chain and
// writes host addresses of guest buffers it checked into `iov`; received
// frames land in its own buffer); this file only issues the calls. It
// reads no guest data and owns no state.
//
// Built by `npm run build` (scripts/build-native.mjs) and loaded with koffi.

#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <sys/uio.h>
#include <unistd.h>

/* Writes frame i as iov[first_i .. first_i + cnt[i]) (the frames' iovecs
 * follow each other) with writev(2): res[i] is the byte count or -errno.
 * Every frame is tried (a refused frame is dropped, as a NIC would); EINTR
 * is retried. Returns n. */
int nb_writev_each(int fd, const struct iovec *iov, const uint32_t *cnt, uint32_t n, int32_t *res)
{
	uint32_t at = 0;
	for (uint32_t i = 0; i < n; i++) {
		ssize_t r;
		do
			r = writev(fd, iov + at, (int)cnt[i]);
		while (r < 0 && errno == EINTR);
		res[i] = r < 0 ? -errno : (int32_t)r;
		at += cnt[i];
	}
	return (int)n;
}

/* Reads up to n frames, frame i into buf + i * slot (at most slot bytes:
 * a tap or packet socket returns one whole frame per read when slot holds
 * its largest), res[i] its length. Stops at the first read that returns
 * no frame (EAGAIN: the fd is dry; 0: the peer closed). Returns the frames
 * read, or -errno of the first read when there were none (0 for end of
 * file). */
int nb_read_each(int fd, uint8_t *buf, uint32_t slot, uint32_t n, int32_t *res)
{
	for (uint32_t i = 0; i < n; i++) {
		ssize_t r;
		do
			r = read(fd, buf + (size_t)i * slot, slot);
		while (r < 0 && errno == EINTR);
		if (r <= 0)
			return i > 0 ? (int)i : (r < 0 ? -errno : 0);
		res[i] = (int32_t)r;
	}
	return (int)n;
}
