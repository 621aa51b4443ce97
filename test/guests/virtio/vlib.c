/* vlib.c - see vlib.h. Ring 3, long mode; interrupts only in the modes
 * of irq.h. */
#include "vlib.h"
#include "irq.h"

#define COM1		0x3f8
#define TESTDEV		0xf4

void *memset(void *d, int c, size_t n)
{
	uint8_t *p = d;
	while (n--)
		*p++ = (uint8_t)c;
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	void *dst = d;		/* rep movsb advances d: return where it started */
	__asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) :: "memory");
	return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const uint8_t *x = a, *y = b;
	for (; n; n--, x++, y++)
		if (*x != *y)
			return *x < *y ? -1 : 1;
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

void putchar_(int c)
{
	if (c == '\n')
		putchar_('\r');
	while (!(inb(COM1 + 5) & 0x20))
		;
	outb(COM1, (uint8_t)c);
}

void puts_(const char *s)
{
	while (*s)
		putchar_(*s++);
}

static void putnum(uint64_t v, unsigned base, int width, char pad, int neg)
{
	char buf[24];
	int i = 0;
	do {
		unsigned d = (unsigned)(v % base);
		buf[i++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
		v /= base;
	} while (v);
	if (neg)
		buf[i++] = '-';
	while (i < width)
		buf[i++] = pad;
	while (i)
		putchar_(buf[--i]);
}

/* %[0][width][l|ll|z](d|u|x|s|c|%) */
void vprintf_(const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			putchar_(*fmt);
			continue;
		}
		fmt++;
		char pad = ' ';
		int width = 0, lng = 0;
		if (*fmt == '0')
			pad = '0', fmt++;
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l' || *fmt == 'z')
			lng = 1, fmt++;
		switch (*fmt) {
		case 'd': {
			int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
			putnum(v < 0 ? -(uint64_t)v : (uint64_t)v, 10, width, pad, v < 0);
			break;
		}
		case 'u':
			putnum(lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, width, pad, 0);
			break;
		case 'x':
			putnum(lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, width, pad, 0);
			break;
		case 's': {
			const char *s = va_arg(ap, const char *);
			puts_(s ? s : "(null)");
			break;
		}
		case 'c':
			putchar_(va_arg(ap, int));
			break;
		case '%':
			putchar_('%');
			break;
		default:
			putchar_('?');
		}
	}
}

void printf_(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf_(fmt, ap);
	va_end(ap);
}

void exit_(uint32_t value)
{
	outl(TESTDEV, value);
	for (;;)
		__asm__ volatile("pause");
}

void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	puts_("FAIL: ");
	vprintf_(fmt, ap);
	va_end(ap);
	putchar_('\n');
	exit_(EXIT_FAIL);
}

static uintptr_t heap = 0x400000;

void *alloc(size_t size, size_t align)
{
	heap = (heap + align - 1) & ~(uintptr_t)(align - 1);
	void *p = (void *)heap;
	heap += size;
	memset(p, 0, size);
	return p;
}

static uint32_t crc_table[256];

uint32_t crc32(uint32_t crc, const void *buf, size_t n)
{
	if (!crc_table[1]) {
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t c = i;
			for (int k = 0; k < 8; k++)
				c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
			crc_table[i] = c;
		}
	}
	const uint8_t *p = buf;
	crc = ~crc;
	while (n--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static uint8_t rtc_sec(void)
{
	outb(0x70, 0x00);
	return inb(0x71);
}

/* The TSC at the next change of the RTC's seconds. The edge lies between
 * the last read of the old second and the first read of the new one; *gap
 * is that window, in TSC cycles. */
static uint64_t rtc_edge(uint64_t *gap)
{
	uint8_t s = rtc_sec();
	uint64_t before = rdtsc(), after;
	for (;;) {
		uint8_t n = rtc_sec();
		after = rdtsc();
		if (n != s)
			break;
		before = after;
	}
	*gap = after - before;
	return before + (after - before) / 2;
}

/* TSC cycles per RTC second. On a loaded host the vCPU can be descheduled
 * just as a second turns over, which moves an edge by tens of ms; a
 * measurement whose edges are not pinned to within 0.1% is taken again
 * (the best of five is kept). */
uint64_t tsc_hz_from_rtc(void)
{
	uint64_t best = 0, best_gap = ~0ull, gap0, gap1;
	for (int i = 0; i < 5; i++) {
		uint64_t t0 = rtc_edge(&gap0);
		uint64_t t1 = rtc_edge(&gap1);
		uint64_t hz = t1 - t0, gap = gap0 + gap1;
		if (gap < best_gap) {
			best = hz;
			best_gap = gap;
		}
		if (gap * 1000 < hz)
			break;
	}
	return best;
}

/* ~10 s at 3 GHz; the bench sets it from the calibrated TSC */
uint64_t poll_timeout_cycles = 30000000000ull;

/* ---- PCI ---- */

static void pci_addr(int bdf, int off)
{
	outl(0xcf8, 0x80000000u | ((uint32_t)bdf << 8) | (off & 0xfc));
}
uint32_t pci_r32(int bdf, int off) { pci_addr(bdf, off); return inl(0xcfc); }
uint16_t pci_r16(int bdf, int off) { pci_addr(bdf, off); return inw(0xcfc + (off & 2)); }
uint8_t pci_r8(int bdf, int off) { pci_addr(bdf, off); return inb(0xcfc + (off & 3)); }
void pci_w32(int bdf, int off, uint32_t v) { pci_addr(bdf, off); outl(0xcfc, v); }
void pci_w16(int bdf, int off, uint16_t v) { pci_addr(bdf, off); outw(0xcfc + (off & 2), v); }
void pci_w8(int bdf, int off, uint8_t v) { pci_addr(bdf, off); outb(0xcfc + (off & 3), v); }

uint32_t rom_word(int i) { return *(volatile uint32_t *)(0xffffffe0ul + 4ul * (unsigned)i); }

int pci_find_cap(int bdf, int id)
{
	if (!(pci_r16(bdf, 6) & 0x10))
		return 0;
	for (int cap = pci_r8(bdf, 0x34) & 0xfc, guard = 0; cap && guard < 48; guard++) {
		if (pci_r8(bdf, cap) == id)
			return cap;
		cap = pci_r8(bdf, cap + 1) & 0xfc;
	}
	return 0;
}

int pci_find(int reg, int shift, uint32_t value)
{
	for (int dev = 0; dev < 32; dev++)
		for (int fn = 0; fn < 8; fn++) {
			int b = BDF(0, dev, fn);
			if (pci_r16(b, 0) == 0xffff) {
				if (fn == 0)
					break;
				continue;
			}
			if ((pci_r32(b, reg) >> shift) == value)
				return b;
			if (fn == 0 && !(pci_r8(b, 0x0e) & 0x80))
				break;	/* not a multi-function device */
		}
	return -1;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
uint64_t xorshift(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

void disk_pattern(uint8_t *buf, uint64_t disk_off, uint64_t len)
{
	uint64_t *w = (uint64_t *)buf;
	for (uint64_t i = 0; i < len / 8; i++) {
		uint64_t x = (disk_off / 8 + i + 1) * 0x9E3779B97F4A7C15ull;
		x ^= x >> 31;
		w[i] = x * 0xBF58476D1CE4E5B9ull;
	}
}

const char *virtio_type_name(int type)
{
	switch (type) {
	case VIRTIO_ID_NET: return "virtio-net";
	case VIRTIO_ID_BLOCK: return "virtio-blk";
	case VIRTIO_ID_CONSOLE: return "virtio-console";
	case VIRTIO_ID_RNG: return "virtio-rnd";
	case VIRTIO_ID_INPUT: return "virtio-input";
	case 8: return "virtio-scsi";
	case 9: return "virtio-9p";
	case VIRTIO_ID_IOMMU: return "virtio-iommu";
	default: return "virtio";
	}
}

static int virtio_type(int bdf, uint16_t vendor, uint16_t device)
{
	if (vendor != 0x1af4)
		return -1;
	if (device >= 0x1040 && device <= 0x107f)
		return device - 0x1040;
	if (device >= 0x1000 && device <= 0x103f)	/* transitional */
		return pci_r16(bdf, 0x2e);		/* subsystem ID = type */
	return -1;
}

struct bar { int bdf, reg, is64; uint64_t addr, size; };

/* Size one memory BAR (decoding must be off). Returns 0 for I/O or absent. */
static int bar_probe(int bdf, int reg, struct bar *b)
{
	uint32_t lo = pci_r32(bdf, reg);
	if (lo & 1)
		return 0;
	b->bdf = bdf;
	b->reg = reg;
	b->is64 = ((lo >> 1) & 3) == 2;
	uint32_t hi = b->is64 ? pci_r32(bdf, reg + 4) : 0;
	pci_w32(bdf, reg, 0xffffffff);
	uint32_t mlo = pci_r32(bdf, reg) & ~0xfu;
	pci_w32(bdf, reg, lo);
	uint32_t mhi = 0xffffffff;
	if (b->is64) {
		pci_w32(bdf, reg + 4, 0xffffffff);
		mhi = pci_r32(bdf, reg + 4);
		pci_w32(bdf, reg + 4, hi);
	}
	uint64_t mask = ((uint64_t)mhi << 32) | mlo;
	if (!mlo && !(b->is64 && mhi))
		return 0;
	b->size = ~mask + 1;
	b->addr = ((uint64_t)hi << 32) | (lo & ~0xfu);
	return 1;
}

#define HOLE_BASE	0xC0000000ull
#define HOLE_LIMIT	0xFEC00000ull	/* below IOAPIC / LAPIC / ROM */

static int bar_usable(const struct bar *b)
{
	return b->addr >= 0x100000 && b->addr + b->size <= HOLE_LIMIT;
}

static const char *class_name(uint32_t cls)
{
	switch (cls >> 8) {
	case 0x0600: return "host bridge";
	case 0x0601: return "ISA bridge";
	case 0x0101: return "IDE";
	case 0x0300: return "VGA";
	case 0x0200: return "ethernet";
	case 0x0680: return "bridge";
	default: return "";
	}
}

int pci_scan(struct pci_virtio *out, int max)
{
	static struct bar bars[64];
	int nbars = 0, n = 0;
	uint64_t cursor = HOLE_BASE;

	for (int dev = 0; dev < 32; dev++) {
		for (int fn = 0; fn < 8; fn++) {
			int bdf = BDF(0, dev, fn);
			uint32_t id = pci_r32(bdf, 0);
			if ((id & 0xffff) == 0xffff) {
				if (fn == 0)
					break;
				continue;
			}
			uint16_t vendor = id & 0xffff, device = id >> 16;
			uint32_t cls = pci_r32(bdf, 8) >> 8;
			uint8_t htype = pci_r8(bdf, 0x0e);
			int type = virtio_type(bdf, vendor, device);
			printf("pci 00:%02x.%u %04x:%04x class %06x %s\n", dev, fn, vendor, device, cls,
			    type >= 0 ? virtio_type_name(type) : class_name(cls));
			if ((htype & 0x7f) == 0) {
				uint16_t cmd = pci_r16(bdf, 4);
				pci_w16(bdf, 4, cmd & ~3);	/* decoding off while sizing */
				for (int reg = 0x10; reg < 0x28 && nbars < 64; reg += 4) {
					struct bar *b = &bars[nbars];
					if (!bar_probe(bdf, reg, b))
						continue;
					if (bar_usable(b) && b->addr + b->size > cursor)
						cursor = b->addr + b->size;
					nbars++;
					if (b->is64)
						reg += 4;
				}
				pci_w16(bdf, 4, cmd);
			}
			if (type >= 0 && n < max) {
				out[n].bdf = bdf;
				out[n].vendor = vendor;
				out[n].device = device;
				out[n].type = type;
				n++;
			}
			if (fn == 0 && !(htype & 0x80))
				break;
		}
	}
	/* Give every memory BAR without a usable address one in the hole above
	 * the ones that have (firmware- or VMM-assigned), then enable memory
	 * decoding and bus mastering of every function with memory BARs. */
	for (int i = 0; i < nbars; i++) {
		struct bar *b = &bars[i];
		if (!bar_usable(b)) {
			uint64_t a = (cursor + b->size - 1) & ~(b->size - 1);
			if (a + b->size > HOLE_LIMIT)
				fail("pci: no room for BAR %x of 00:%02x.%u (size %lx)", b->reg, b->bdf >> 3, b->bdf & 7, b->size);
			uint16_t cmd = pci_r16(b->bdf, 4);
			pci_w16(b->bdf, 4, cmd & ~3);
			pci_w32(b->bdf, b->reg, (uint32_t)a);
			if (b->is64)
				pci_w32(b->bdf, b->reg + 4, 0);
			pci_w16(b->bdf, 4, cmd);
			printf("pci 00:%02x.%u BAR%u: assigned %lx size %lx%s\n", b->bdf >> 3, b->bdf & 7,
			    (b->reg - 0x10) / 4, a, b->size, b->addr ? " (was above the hole)" : "");
			b->addr = a;
			cursor = a + b->size;
		} else {
			printf("pci 00:%02x.%u BAR%u: at %lx size %lx (already assigned)\n", b->bdf >> 3, b->bdf & 7,
			    (b->reg - 0x10) / 4, b->addr, b->size);
		}
		pci_w16(b->bdf, 4, pci_r16(b->bdf, 4) | 0x6);	/* memory, bus master */
	}
	return n;
}

struct pci_virtio pci_find_virtio(int type)
{
	static struct pci_virtio devs[32];
	int n = pci_scan(devs, 32);
	for (int i = 0; i < n; i++)
		if (devs[i].type == type)
			return devs[i];
	printf("FAIL: no %s device on PCI bus 0\n", virtio_type_name(type));
	exit_(EXIT_NODEV);
}

/* ---- virtio modern transport ---- */

#define COMMON_DFSELECT		0x00
#define COMMON_DF		0x04
#define COMMON_GFSELECT		0x08
#define COMMON_GF		0x0c
#define COMMON_MSIX		0x10
#define COMMON_NUMQ		0x12
#define COMMON_STATUS		0x14
#define COMMON_CFGGEN		0x15
#define COMMON_Q_SELECT		0x16
#define COMMON_Q_SIZE		0x18
#define COMMON_Q_MSIX		0x1a
#define COMMON_Q_ENABLE		0x1c
#define COMMON_Q_NOFF		0x1e
#define COMMON_Q_DESCLO		0x20
#define COMMON_Q_DESCHI		0x24
#define COMMON_Q_AVAILLO	0x28
#define COMMON_Q_AVAILHI	0x2c
#define COMMON_Q_USEDLO		0x30
#define COMMON_Q_USEDHI		0x34

#define S_ACK		1
#define S_DRIVER	2
#define S_DRIVER_OK	4
#define S_FEATURES_OK	8
#define S_NEEDS_RESET	64
#define S_FAILED	128

uintptr_t pci_bar_addr(int bdf, int bar)
{
	int reg = 0x10 + 4 * bar;
	uint32_t lo = pci_r32(bdf, reg);
	if (lo & 1)
		return 0;
	uint64_t a = lo & ~0xfu;
	if (((lo >> 1) & 3) == 2)
		a |= (uint64_t)pci_r32(bdf, reg + 4) << 32;
	return (uintptr_t)a;
}

uint8_t virtio_status(struct vdev *d) { return mr8(d->common + COMMON_STATUS); }

void virtio_init(struct vdev *d, struct pci_virtio pci, uint64_t wanted)
{
	const char *name = virtio_type_name(pci.type);
	memset(d, 0, sizeof(*d));
	d->pci = pci;
	int bdf = pci.bdf;
	if (!(pci_r16(bdf, 6) & 0x10))
		fail("%s: no capability list", name);
	for (int cap = pci_r8(bdf, 0x34) & 0xfc, guard = 0; cap && guard < 48; guard++) {
		uint8_t id = pci_r8(bdf, cap);
		uint8_t next = pci_r8(bdf, cap + 1);
		if (id == 0x09) {
			uint8_t cfg = pci_r8(bdf, cap + 3), bar = pci_r8(bdf, cap + 4);
			uint32_t off = pci_r32(bdf, cap + 8), len = pci_r32(bdf, cap + 12);
			uintptr_t a = bar < 6 ? (pci_bar_addr(bdf, bar) + off) : 0;
			printf("%s: cap %02x vendor cfg_type %u bar %u offset %x length %x\n", name, cap, cfg, bar, off, len);
			if (cfg == 1 && !d->common)
				d->common = a;
			else if (cfg == 2 && !d->notify) {
				d->notify = a;
				d->notify_mult = pci_r32(bdf, cap + 16);
			} else if (cfg == 3 && !d->isr)
				d->isr = a;
			else if (cfg == 4 && !d->devcfg)
				d->devcfg = a;
		} else {
			printf("%s: cap %02x id %02x\n", name, cap, id);
		}
		cap = next & 0xfc;
	}
	if (!d->common || !d->notify || !d->isr)
		fail("%s: missing virtio-pci modern capabilities (common %lx notify %lx isr %lx)", name,
		    (uint64_t)d->common, (uint64_t)d->notify, (uint64_t)d->isr);
	if (d->common >= 0x100000000ull)
		fail("%s: common cfg above 4 GiB", name);

	uintptr_t c = d->common;
	mw8(c + COMMON_STATUS, 0);			/* reset */
	uint64_t t0 = rdtsc();
	while (mr8(c + COMMON_STATUS) != 0)
		if (rdtsc() - t0 > poll_timeout_cycles)
			fail("%s: reset did not complete", name);
	mw8(c + COMMON_STATUS, S_ACK);
	mw8(c + COMMON_STATUS, S_ACK | S_DRIVER);
	mw32(c + COMMON_DFSELECT, 0);
	uint64_t offered = mr32(c + COMMON_DF);
	mw32(c + COMMON_DFSELECT, 1);
	offered |= (uint64_t)mr32(c + COMMON_DF) << 32;
	wanted |= 1ull << VIRTIO_F_VERSION_1;
	if (!(offered & (1ull << VIRTIO_F_VERSION_1)))
		fail("%s: device does not offer VIRTIO_F_VERSION_1 (features %lx)", name, offered);
	d->features = offered & wanted;
	mw32(c + COMMON_GFSELECT, 0);
	mw32(c + COMMON_GF, (uint32_t)d->features);
	mw32(c + COMMON_GFSELECT, 1);
	mw32(c + COMMON_GF, (uint32_t)(d->features >> 32));
	mw8(c + COMMON_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
	uint8_t st = mr8(c + COMMON_STATUS);
	if (!(st & S_FEATURES_OK))
		fail("%s: device refused FEATURES_OK (status %x)", name, st);
	printf("%s: device features %lx, driver features %lx, %u queues\n", name, offered, d->features,
	    mr16(c + COMMON_NUMQ));
}

static void msix_entry(struct vdev *d, unsigned entry, int vec)
{
	uintptr_t e = d->msix_table + 16 * entry;
	uint64_t a = msi_address();
	mw32(e + 0, (uint32_t)a);
	mw32(e + 4, (uint32_t)(a >> 32));
	mw32(e + 8, msi_data(vec));
	mw32(e + 12, 0);			/* unmasked */
}

void virtio_msix_mask(struct vdev *d, unsigned entry, int masked)
{
	mw32(d->msix_table + 16 * entry + 12, masked ? 1 : 0);
}

int virtio_msix_pending(struct vdev *d, unsigned entry)
{
	int bdf = d->pci.bdf;
	uint32_t pba = pci_r32(bdf, d->msix_cap + 8);
	uintptr_t a = pci_bar_addr(bdf, pba & 7) + (pba & ~7u);
	return (mr32(a + 4 * (entry / 32)) >> (entry % 32)) & 1;
}

uint8_t virtio_isr(struct vdev *d) { return mr8(d->isr); }

void virtio_setup_irqs(struct vdev *d, int mode)
{
	const char *name = virtio_type_name(d->pci.type);
	int bdf = d->pci.bdf;
	d->irq_mode = mode;
	d->vec_config = -1;
	if (mode == MODE_POLL) {
		/* no interrupts at all: INTx disabled (MSI and MSI-X stay off) */
		pci_w16(bdf, 4, pci_r16(bdf, 4) | 0x400);
		return;
	}
	d->msix_cap = pci_find_cap(bdf, 0x11);
	d->msi_cap = pci_find_cap(bdf, 0x05);
	uint16_t cmd = pci_r16(bdf, 4);
	d->vec_config = irq_alloc_vector();
	if (mode == MODE_MSIX) {
		if (!d->msix_cap)
			fail("%s: no MSI-X capability", name);
		int cap = d->msix_cap;
		uint16_t ctrl = pci_r16(bdf, cap + 2);
		uint32_t tab = pci_r32(bdf, cap + 4);
		d->msix_size = (ctrl & 0x7ff) + 1u;
		d->msix_table = pci_bar_addr(bdf, tab & 7) + (tab & ~7u);
		/* enabled with the function masked while the table is written */
		pci_w16(bdf, cap + 2, ctrl | 0x8000 | 0x4000);
		msix_entry(d, 0, d->vec_config);
		pci_w16(bdf, cap + 2, (ctrl | 0x8000) & ~0x4000);
		mw16(d->common + COMMON_MSIX, 0);
		if (mr16(d->common + COMMON_MSIX) != 0)
			fail("%s: config MSI-X vector refused", name);
		printf("%s: MSI-X, %u table entries at %lx, config vector %x\n", name, d->msix_size, (uint64_t)d->msix_table,
		    d->vec_config);
	} else if (mode == MODE_MSI) {
		if (!d->msi_cap)
			fail("%s: no MSI capability (QEMU's virtio-pci has none; bhyve -W gives one)", name);
		if (d->msix_cap && (pci_r16(bdf, d->msix_cap + 2) & 0x8000))
			fail("%s: MSI-X is enabled", name);
		int cap = d->msi_cap;
		uint16_t ctrl = pci_r16(bdf, cap + 2);
		uint64_t a = msi_address();
		pci_w32(bdf, cap + 4, (uint32_t)a);
		int data = cap + 8;
		if (ctrl & 0x80) {
			pci_w32(bdf, cap + 8, (uint32_t)(a >> 32));
			data = cap + 12;
		}
		pci_w16(bdf, data, (uint16_t)msi_data(d->vec_config));
		pci_w16(bdf, cap + 2, (uint16_t)((ctrl & ~0x70) | 1));	/* one message, enabled */
		printf("%s: MSI (%s), one message, vector %x\n", name, ctrl & 0x80 ? "64-bit" : "32-bit", d->vec_config);
	} else if (mode == MODE_INTX) {
		struct intx_route r;
		if (!pci_intx_route(bdf, &r))
			fail("%s: no INTx route for 00:%02x.%u", name, bdf >> 3, bdf & 7);
		pci_w16(bdf, 4, cmd & ~0x400);		/* INTx not disabled */
		irq_set_ack(d->vec_config, IRQ_ACK_MMIO8, d->isr, 0);
		ioapic_route(r.pin, d->vec_config, r.level, r.active_low);
		printf("%s: INT%c -> I/O APIC pin %d (%s, %s%s), vector %x, from the %s\n", name, 'A' + pci_r8(bdf, 0x3d) - 1,
		    r.pin, r.level ? "level" : "edge", r.active_low ? "active low" : "active high",
		    r.isa_irq >= 0 ? ", via an ISA IRQ" : "", d->vec_config, r.source);
	} else {
		fail("%s: unknown interrupt mode %d", name, mode);
	}
}

void virtio_setup_queue(struct vdev *d, int index, unsigned max_size)
{
	uintptr_t c = d->common;
	struct vq *q = &d->vq[index];
	mw16(c + COMMON_Q_SELECT, (uint16_t)index);
	unsigned size = mr16(c + COMMON_Q_SIZE);
	if (!size)
		fail("%s: queue %d not available", virtio_type_name(d->pci.type), index);
	while (size > max_size)
		size >>= 1;
	q->index = index;
	q->size = size;
	/* one zeroed block: descriptors, avail ring, then (4 KiB aligned) used ring */
	size_t avail_off = 16 * size;
	size_t used_off = (avail_off + 6 + 2 * size + 4095) & ~4095ul;
	uint8_t *mem = alloc(used_off + 6 + 8 * size, 4096);
	q->desc = (struct vring_desc *)mem;
	q->avail = (volatile uint16_t *)(mem + avail_off);
	q->used = mem + used_off;
	q->chain_n = alloc(2 * size, 2);
	for (unsigned i = 0; i < size; i++)
		q->desc[i].next = (uint16_t)(i + 1);
	q->free_head = 0;
	q->num_free = size;
	/* polling: VRING_AVAIL_F_NO_INTERRUPT */
	q->avail[0] = d->irq_mode == MODE_POLL ? VRING_AVAIL_F_NO_INTERRUPT : 0;
	mw16(c + COMMON_Q_SIZE, (uint16_t)size);
	uint16_t entry = VIRTIO_MSI_NO_VECTOR;
	q->vec = d->vec_config;
	if (d->irq_mode == MODE_MSIX) {
		entry = (uint16_t)(1 + index);
		if (entry < d->msix_size) {
			q->vec = irq_alloc_vector();
			msix_entry(d, entry, q->vec);
		} else if (d->msix_size >= 2 && d->msix_size - 2 < 3) {
			/* A small table (QEMU's virtio-input has 2 entries): the
			 * queues past it share the last one, as Linux's
			 * shared-vector fallback does. */
			entry = (uint16_t)(d->msix_size - 1);
			q->vec = d->vq[entry - 1].vec;
			printf("%s: queue %d shares MSI-X entry %u (vector %x)\n", virtio_type_name(d->pci.type), index, entry, q->vec);
		} else {
			fail("%s: MSI-X table of %u entries has none for queue %d", virtio_type_name(d->pci.type), d->msix_size, index);
		}
	}
	mw16(c + COMMON_Q_MSIX, entry);
	if (mr16(c + COMMON_Q_MSIX) != entry)
		fail("%s: queue %d refused MSI-X vector %u (reads %x)", virtio_type_name(d->pci.type), index, entry, mr16(c + COMMON_Q_MSIX));
	q->dma_off = d->dma_off;
	uint64_t da = (uintptr_t)q->desc + q->dma_off, aa = (uintptr_t)q->avail + q->dma_off, ua = (uintptr_t)q->used + q->dma_off;
	mw32(c + COMMON_Q_DESCLO, (uint32_t)da);
	mw32(c + COMMON_Q_DESCHI, (uint32_t)(da >> 32));
	mw32(c + COMMON_Q_AVAILLO, (uint32_t)aa);
	mw32(c + COMMON_Q_AVAILHI, (uint32_t)(aa >> 32));
	mw32(c + COMMON_Q_USEDLO, (uint32_t)ua);
	mw32(c + COMMON_Q_USEDHI, (uint32_t)(ua >> 32));
	q->notify = d->notify + (uintptr_t)mr16(c + COMMON_Q_NOFF) * d->notify_mult;
	mw16(c + COMMON_Q_ENABLE, 1);
	if (mr16(c + COMMON_Q_ENABLE) != 1)
		fail("%s: queue %d did not enable", virtio_type_name(d->pci.type), index);
}

void virtio_driver_ok(struct vdev *d)
{
	mw8(d->common + COMMON_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
	uint8_t st = virtio_status(d);
	if (st & (S_NEEDS_RESET | S_FAILED))
		fail("%s: device status %x after DRIVER_OK", virtio_type_name(d->pci.type), st);
}

static uint32_t cfg_read(struct vdev *d, int off, int width)
{
	if (!d->devcfg)
		fail("%s: no device config capability", virtio_type_name(d->pci.type));
	uintptr_t a = d->devcfg + off;
	return width == 1 ? mr8(a) : width == 2 ? mr16(a) : mr32(a);
}
uint8_t vcfg8(struct vdev *d, int off) { return (uint8_t)cfg_read(d, off, 1); }
uint16_t vcfg16(struct vdev *d, int off) { return (uint16_t)cfg_read(d, off, 2); }
uint32_t vcfg32(struct vdev *d, int off) { return cfg_read(d, off, 4); }
uint64_t vcfg64(struct vdev *d, int off)
{
	uint8_t gen;
	uint64_t v;
	do {
		gen = mr8(d->common + COMMON_CFGGEN);
		v = cfg_read(d, off, 4) | (uint64_t)cfg_read(d, off + 4, 4) << 32;
	} while (gen != mr8(d->common + COMMON_CFGGEN));
	return v;
}

int vq_add(struct vq *q, const struct vbuf *bufs, int n)
{
	if (n <= 0 || (unsigned)n > q->num_free)
		return -1;
	uint16_t head = q->free_head, i = head, last = head;
	for (int k = 0; k < n; k++) {
		struct vring_desc *dsc = &q->desc[i];
		dsc->addr = (uint64_t)(uintptr_t)bufs[k].addr + q->dma_off;
		dsc->len = bufs[k].len;
		dsc->flags = (uint16_t)((bufs[k].write ? VRING_DESC_F_WRITE : 0) | (k + 1 < n ? VRING_DESC_F_NEXT : 0));
		last = i;
		i = dsc->next;
	}
	q->free_head = q->desc[last].next;
	q->num_free -= (unsigned)n;
	q->chain_n[head] = (uint16_t)n;
	q->avail[2 + (q->avail_idx & (q->size - 1))] = head;
	barrier();
	q->avail_idx++;
	q->avail[1] = q->avail_idx;
	barrier();
	return head;
}

void vq_kick(struct vq *q)
{
	barrier();
	mw16(q->notify, (uint16_t)q->index);
}

int vq_kick_prepare(struct vdev *d, struct vq *q)
{
	uint16_t old = q->kicked_idx, now = q->avail_idx;
	q->kicked_idx = now;
	/* the new avail idx before the device's fields are read */
	__asm__ volatile("mfence" ::: "memory");
	if (d->features & (1ull << VIRTIO_F_EVENT_IDX)) {
		uint16_t event = vq_avail_event(q);
		return (uint16_t)(now - event - 1) < (uint16_t)(now - old);
	}
	return !(*(volatile uint16_t *)q->used & VRING_USED_F_NO_NOTIFY);
}

int vq_get(struct vq *q, uint32_t *len)
{
	uint16_t idx = *(volatile uint16_t *)(q->used + 2);
	if (idx == q->used_idx)
		return -1;
	barrier();
	volatile struct vring_used_elem *e =
	    (volatile struct vring_used_elem *)(q->used + 4) + (q->used_idx & (q->size - 1));
	uint32_t id = e->id;
	if (len)
		*len = e->len;
	q->used_idx++;
	if (id >= q->size || !q->chain_n[id])
		fail("virtqueue %d: used id %u is not a chain head", q->index, id);
	/* return the chain to the free list */
	uint16_t last = (uint16_t)id;
	for (unsigned k = 1; k < q->chain_n[id]; k++)
		last = q->desc[last].next;
	q->desc[last].next = q->free_head;
	q->free_head = (uint16_t)id;
	q->num_free += q->chain_n[id];
	q->chain_n[id] = 0;
	return (int)id;
}

uint16_t vq_used_idx(struct vq *q) { return *(volatile uint16_t *)(q->used + 2); }
void vq_set_avail_flags(struct vq *q, uint16_t flags) { q->avail[0] = flags; barrier(); }
void vq_set_used_event(struct vq *q, uint16_t idx) { q->avail[2 + q->size] = idx; __asm__ volatile("mfence" ::: "memory"); }
uint16_t vq_avail_event(struct vq *q) { return *(volatile uint16_t *)(q->used + 4 + 8 * q->size); }

/* An interrupt on the queue's vector was taken: every entry the device
 * has published by now is announced ("covered"). With EVENT_IDX, ask for an
 * interrupt when the next entry is published; one published before the
 * device could see that request gets none, so it is covered too. */
static void vq_took_interrupt(struct vdev *d, struct vq *q)
{
	q->covered = vq_used_idx(q);
	if (!(d->features & (1ull << VIRTIO_F_EVENT_IDX)))
		return;
	for (;;) {
		vq_set_used_event(q, q->covered);
		uint16_t now = vq_used_idx(q);
		if (now == q->covered)
			return;
		q->covered = now;
	}
}

int vq_next(struct vdev *d, struct vq *q, uint32_t *len, uint64_t cycles)
{
	uint64_t t0 = rdtsc();
	if (d->irq_mode == MODE_POLL) {
		for (;;) {
			int id = vq_get(q, len);
			if (id >= 0 || rdtsc() - t0 > cycles)
				return id;
			__asm__ volatile("pause");
		}
	}
	volatile uint32_t *count = &irq_count[q->vec];
	for (;;) {
		if (*count != q->irq_seen) {
			q->irq_seen = *count;
			vq_took_interrupt(d, q);
		}
		if ((int16_t)(q->covered - q->used_idx) > 0)
			return vq_get(q, len);
		uint64_t spent = rdtsc() - t0;
		if (spent > cycles || !irq_wait_change(count, q->irq_seen, cycles - spent))
			return -1;
	}
}


int vq_wait(struct vdev *d, struct vq *q, uint32_t *len)
{
	int id = vq_next(d, q, len, poll_timeout_cycles);
	if (id >= 0)
		return id;
	if (d->irq_mode != MODE_POLL && vq_pending(q))
		printf("FAIL: %s: queue %d: no interrupt on vector %x for %u used entries (avail %u, used %u, status %x)\n",
		    virtio_type_name(d->pci.type), q->index, q->vec, vq_pending(q), q->avail_idx, q->used_idx, virtio_status(d));
	else
		printf("FAIL: %s: queue %d: no used entry (avail %u, used %u, status %x)\n",
		    virtio_type_name(d->pci.type), q->index, q->avail_idx, q->used_idx, virtio_status(d));
	exit_(EXIT_TIMEOUT);
}
