/* tcp.h - shared by tcp.c and libc.c (no lwIP or libc headers here). */
#ifndef TCP_H
#define TCP_H
#include <stdint.h>
#include "lwip-image.h"		/* generated: LWIP_BASE, LWIP_MEMSZ, LWIP_FILESZ, LWIP_ROM_IMAGE */

/* Memory: payload 0x100000, stack below 0x400000, vlib's alloc() (rings,
 * frame buffers) from 0x400000, liblwip.so.0 at LWIP_BASE (16 MiB), then
 * lwIP's malloc heap up to 48 MiB: the guest needs 64 MiB of RAM. */
#define HEAP_START	(LWIP_BASE + 0x100000)
#define HEAP_END	0x3000000ul
_Static_assert(LWIP_MEMSZ <= 0x100000, "liblwip.so.0 does not fit below the heap");

void libc_seed(uint32_t seed);
void libc_set_tsc_hz(uint64_t hz);
uint64_t heap_peak_bytes(void);
#endif
