/*
 * vlib.h - the small runtime of the virtio test ROMs: runs in ring 3 of
 * long mode (IOPL=3, identity-mapped 0..4 GiB), see start.S.
 *   console/printf on COM1, test exit, port I/O, MMIO, TSC, a bump
 *   allocator, CRC-32, PCI configuration mechanism #1 and BAR assignment,
 *   and a virtio 1.x modern-transport driver with split virtqueues.
 */
#ifndef VLIB_H
#define VLIB_H
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define EXIT_OK		0x10		/* status 33 */
#define EXIT_FAIL	0x01		/* status 3 */
#define EXIT_NODEV	0x02		/* status 5: device not found */
#define EXIT_TIMEOUT	0x03		/* status 7: device did not answer */

static inline void outb(uint16_t p, uint8_t v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(p)); }
static inline void outw(uint16_t p, uint16_t v) { __asm__ volatile("outw %0, %1" :: "a"(v), "Nd"(p)); }
static inline void outl(uint16_t p, uint32_t v) { __asm__ volatile("outl %0, %1" :: "a"(v), "Nd"(p)); }
static inline uint8_t inb(uint16_t p) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline uint16_t inw(uint16_t p) { uint16_t v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline uint32_t inl(uint16_t p) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(p)); return v; }

static inline uint8_t mr8(uintptr_t a) { return *(volatile uint8_t *)a; }
static inline uint16_t mr16(uintptr_t a) { return *(volatile uint16_t *)a; }
static inline uint32_t mr32(uintptr_t a) { return *(volatile uint32_t *)a; }
static inline void mw8(uintptr_t a, uint8_t v) { *(volatile uint8_t *)a = v; }
static inline void mw16(uintptr_t a, uint16_t v) { *(volatile uint16_t *)a = v; }
static inline void mw32(uintptr_t a, uint32_t v) { *(volatile uint32_t *)a = v; }

#define barrier() __asm__ volatile("" ::: "memory")
/* A full fence: orders the store of avail idx before the load of the
 * device's NO_NOTIFY flag / avail_event (virtio 2.7.7.2, Linux's
 * virtio_mb before virtqueue_kick_prepare reads them). Without it a device
 * running on another CPU (an I/O thread) can miss the new buffers while the
 * driver skips the notify. */
#define mb() __asm__ volatile("mfence" ::: "memory")

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

void putchar_(int c);
void puts_(const char *s);
void vprintf_(const char *fmt, va_list ap);
void printf_(const char *fmt, ...);
#define printf printf_
void __attribute__((noreturn)) exit_(uint32_t value);
void __attribute__((noreturn)) fail(const char *fmt, ...);

void *alloc(size_t size, size_t align);		/* zeroed; never freed */
uint32_t crc32(uint32_t crc, const void *buf, size_t n); /* zlib's CRC-32; start with 0 */
uint64_t tsc_hz_from_rtc(void);			/* ~1-2 s: TSC ticks per RTC second */
uint64_t xorshift(void);			/* a fixed pseudo-random sequence */
/* The disk test pattern: each 8-byte word a function of its disk byte
 * offset, so any block read back can be checked wherever it landed. */
void disk_pattern(uint8_t *buf, uint64_t disk_off, uint64_t len);
extern uint64_t poll_timeout_cycles;		/* give-up time of a poll loop */

/* PCI configuration mechanism #1 */
uint32_t pci_r32(int bdf, int off);
uint16_t pci_r16(int bdf, int off);
uint8_t pci_r8(int bdf, int off);
void pci_w32(int bdf, int off, uint32_t v);
void pci_w16(int bdf, int off, uint16_t v);
void pci_w8(int bdf, int off, uint8_t v);
/* Config offset of capability `id` of function bdf, or 0. */
int pci_find_cap(int bdf, int id);
/* The first function on bus 0 whose config dword at `reg`, shifted right
 * by `shift`, is `value` (class code: pci_find(0x08, 8, 0x010802); vendor
 * and device: pci_find(0x00, 0, device << 16 | vendor)); -1 if none. */
int pci_find(int reg, int shift, uint32_t value);
/* Address of memory BAR `bar` of function bdf (64-bit BARs whole); 0 for
 * an I/O BAR. */
uintptr_t pci_bar_addr(int bdf, int bar);
#define BDF(b, d, f)	(((b) << 8) | ((d) << 3) | (f))

/* virtio device types */
#define VIRTIO_ID_NET		1
#define VIRTIO_ID_BLOCK		2
#define VIRTIO_ID_CONSOLE	3
#define VIRTIO_ID_RNG		4
#define VIRTIO_ID_INPUT		18

#define VIRTIO_F_VERSION_1	32
#define VIRTIO_F_EVENT_IDX	29
#define VIRTIO_F_ACCESS_PLATFORM	33
#define VIRTIO_ID_IOMMU		23
#define VRING_AVAIL_F_NO_INTERRUPT	1
#define VRING_USED_F_NO_NOTIFY		1
#define VIRTIO_MSI_NO_VECTOR	0xffff

struct pci_virtio {
	int bdf;
	uint16_t vendor, device;
	int type;			/* VIRTIO_ID_*, from device or subsystem ID */
};

/* Enumerate bus 0, print every function, assign unassigned memory BARs and
 * enable memory decoding and bus mastering; return the virtio functions. */
int pci_scan(struct pci_virtio *out, int max);
/* The first virtio function of `type`, or fail (EXIT_NODEV). */
struct pci_virtio pci_find_virtio(int type);
const char *virtio_type_name(int type);

struct vring_desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct vring_used_elem { uint32_t id, len; };
#define VRING_DESC_F_NEXT	1
#define VRING_DESC_F_WRITE	2

struct vq {
	int index;
	unsigned size;
	struct vring_desc *desc;
	volatile uint16_t *avail;	/* flags, idx, ring[size], used_event */
	volatile uint8_t *used;		/* flags, idx, ring[size] of {id,len}, avail_event */
	uintptr_t notify;
	uint16_t avail_idx;		/* next avail index to publish */
	uint16_t kicked_idx;		/* avail_idx when vq_kick_prepare last ran */
	uint16_t used_idx;		/* next used entry to consume */
	uint16_t free_head;
	unsigned num_free;
	uint16_t *chain_n;		/* descriptors per chain, by head id */
	uint64_t dma_off;		/* added to every address the device is given (an IOVA offset behind an IOMMU) */
	/* interrupt mode (irq.h): the vector this queue's used-buffer
	 * notifications arrive on, its count when the driver last looked, and
	 * the device's used index then: entries below it were announced by an
	 * interrupt, the driver takes no others */
	int vec;
	uint32_t irq_seen;
	uint16_t covered;
};

struct vdev {
	struct pci_virtio pci;
	uintptr_t common, notify, isr, devcfg;
	uint32_t notify_mult;
	uint64_t features;		/* negotiated */
	uint64_t dma_off;		/* IOVA = guest physical + dma_off for its rings and buffers (0: no IOMMU) */
	struct vq vq[3];
	int irq_mode;			/* MODE_* of irq.h; MODE_POLL: no interrupts */
	int vec_config;			/* config-change vector (MSI-X), or the shared one */
	int msix_cap, msi_cap;
	uintptr_t msix_table;
	unsigned msix_size;
};

/* reset, ACKNOWLEDGE, DRIVER, negotiate (VERSION_1 | wanted) & offered,
 * FEATURES_OK; the caller sets up queues, then calls virtio_driver_ok. */
void virtio_init(struct vdev *d, struct pci_virtio pci, uint64_t wanted);
/* Interrupts as irq.h's MODE_* says (after virtio_init, before the
 * queues): MSI-X with one vector per queue and one for config changes, the
 * MSI capability's single message, or INTx as the firmware routes it (the
 * handler reads the ISR). irq_init() must have run. */
void virtio_setup_irqs(struct vdev *d, int mode);
void virtio_setup_queue(struct vdev *d, int index, unsigned max_size);
void virtio_driver_ok(struct vdev *d);
uint8_t virtio_status(struct vdev *d);
/* device config space accessors */
uint8_t vcfg8(struct vdev *d, int off);
uint16_t vcfg16(struct vdev *d, int off);
uint32_t vcfg32(struct vdev *d, int off);
uint64_t vcfg64(struct vdev *d, int off);

struct vbuf { void *addr; uint32_t len; int write; /* device-writable */ };
/* Put a chain on the avail ring (not notified yet); returns its head id or
 * -1 if the ring has too few free descriptors. */
int vq_add(struct vq *q, const struct vbuf *bufs, int n);
void vq_kick(struct vq *q);
/* Linux's virtqueue_kick_prepare: whether the chains added since the last
 * call need a notify, as the device asks (VIRTQ_USED_F_NO_NOTIFY, or
 * avail_event under EVENT_IDX); the caller then notifies (vq_kick). */
int vq_kick_prepare(struct vdev *d, struct vq *q);
/* Pop one used entry: returns its head id (and *len), or -1 if none. */
int vq_get(struct vq *q, uint32_t *len);
/* Wait for one used entry, with timeout -> fail. Polling mode polls the
 * used ring; interrupt modes take only entries the device had published
 * when an interrupt on the queue's vector was taken, so a completion the
 * device did not signal is a failure (a lost interrupt). With EVENT_IDX,
 * used_event asks for an interrupt at the first entry not yet announced. */
int vq_wait(struct vdev *d, struct vq *q, uint32_t *len);
/* As vq_wait, but gives up after `cycles` TSC cycles and returns -1. */
int vq_next(struct vdev *d, struct vq *q, uint32_t *len, uint64_t cycles);
/* Ring fields for the suppression checks. */
uint16_t vq_used_idx(struct vq *q);
void vq_set_avail_flags(struct vq *q, uint16_t flags);
void vq_set_used_event(struct vq *q, uint16_t idx);
uint16_t vq_avail_event(struct vq *q);
/* Entries the device has used that the driver has not taken yet. */
static inline unsigned vq_pending(struct vq *q) { return (uint16_t)(vq_used_idx(q) - q->used_idx); }
/* MSI-X vector-control mask bit of table entry `entry` (0 config, 1+ queue). */
void virtio_msix_mask(struct vdev *d, unsigned entry, int masked);
int virtio_msix_pending(struct vdev *d, unsigned entry);
/* Read (and so clear) the ISR status. */
uint8_t virtio_isr(struct vdev *d);
/* Bytes 0xFFE0.. of the ROM: word 0 the parameter, word 1 the mode. */
uint32_t rom_word(int i);

int guest_main(uint32_t param);		/* each guest-*.c: return the exit value */

#endif
