/*
 * fwcfg.rom: reads every QEMU fw_cfg item through both the traditional I/O
 * interface (selector 0x510, data 0x511, one byte per inb) and the DMA
 * interface (FWCfgDmaAccess in guest RAM, address written big-endian to
 * 0x514/0x518), and checks that the two agree.
 *
 * Runs on the virtio ROMs' runtime (../virtio/start.S + vlib.c: ring 3 of
 * long mode, IOPL=3, identity-mapped RAM), so the byte loops run natively.
 *
 * Numbered items: signature 0x00, ID 0x01, UUID 0x02, RAM size 0x03,
 * NOGRAPHIC 0x04, NB_CPUS 0x05, BOOT_MENU 0x0e, MAX_CPUS 0x0f and the file
 * directory 0x19, read with fixed lengths (numbered items carry no size).
 * Named files: every entry of the directory, at its size. For each item and
 * file one line
 *     item 0x0005 nb_cpus size 2 io crc32 XXXXXXXX dma crc32 XXXXXXXX OK
 *     file 0x0020 etc/e820 size 40 io crc32 XXXXXXXX dma crc32 XXXXXXXX OK
 * (MISMATCH instead of OK when they differ), then decoded values:
 *     fwcfg: signature 'QEMU'
 *     fwcfg: id 0x00000003 (traditional dma)
 *     fwcfg: dma register 'QEMU CFG'
 *     fwcfg: nb_cpus N / max_cpus N / ram_size BYTES (N MiB) / boot_menu N
 *     fwcfg: uuid 32 hex digits
 *     fwcfg: directory N files
 *     e820 BASE LENGTH type T          (one per etc/e820 entry, hex, 16 digits)
 *     content NAME: 'TEXT'             (files of up to 256 bytes that are text;
 *                                       bytes outside 0x20..0x7e and '\' as \xNN)
 * The DMA side also checks a split read (SELECT|READ of the first half, READ
 * of the rest), SELECT|SKIP then READ, and that a read past the end of a file
 * is zero-filled; each access must complete with control 0.
 * Ends with "fwcfg: N items and M files agree over I/O and DMA" and exit value
 * 0x10 (status 33), or "fwcfg: K mismatches" and 0x01 (status 3). Fatal
 * problems (no DMA bit in the ID, DMA error, oversized file) print FAIL: and
 * end with status 3.
 */
#include "vlib.h"

#define FW_CFG_SEL	0x510
#define FW_CFG_DATA	0x511
#define FW_CFG_DMA_HI	0x514
#define FW_CFG_DMA_LO	0x518

#define FW_CFG_SIGNATURE 0x00
#define FW_CFG_ID	0x01
#define FW_CFG_UUID	0x02
#define FW_CFG_RAM_SIZE	0x03
#define FW_CFG_NOGRAPHIC 0x04
#define FW_CFG_NB_CPUS	0x05
#define FW_CFG_BOOT_MENU 0x0e
#define FW_CFG_MAX_CPUS	0x0f
#define FW_CFG_FILE_DIR	0x19

#define DMA_CTL_ERROR	0x01
#define DMA_CTL_READ	0x02
#define DMA_CTL_SKIP	0x04
#define DMA_CTL_SELECT	0x08

#define MAX_FILE	(2u << 20)	/* bytes per buffer */
#define PAST_END	16		/* zero-filled bytes checked after a file */

struct dma_access {
	uint32_t control;
	uint32_t length;
	uint64_t address;
} __attribute__((packed));

static struct dma_access dma_desc __attribute__((aligned(16)));
static uint8_t *io_buf, *dma_buf, *tmp_buf;
static unsigned mismatches, n_items, n_files;

static uint32_t be32(uint32_t v) { return __builtin_bswap32(v); }
static uint64_t be64(uint64_t v) { return __builtin_bswap64(v); }
static uint16_t be16(uint16_t v) { return (uint16_t)(v << 8 | v >> 8); }

static void io_read(uint16_t sel, uint8_t *buf, uint32_t len)
{
	outw(FW_CFG_SEL, sel);
	for (uint32_t i = 0; i < len; i++)
		buf[i] = inb(FW_CFG_DATA);
}

/* One DMA access; select < 0: continue at the current item and offset. */
static void dma_op(int select, uint32_t ctl, void *buf, uint32_t len)
{
	volatile struct dma_access *d = &dma_desc;
	if (select >= 0)
		ctl |= DMA_CTL_SELECT | (uint32_t)select << 16;
	d->control = be32(ctl);
	d->length = be32(len);
	d->address = be64((uintptr_t)buf);
	barrier();
	outl(FW_CFG_DMA_HI, 0);
	outl(FW_CFG_DMA_LO, be32((uint32_t)(uintptr_t)d));	/* starts the transfer */
	barrier();
	uint32_t c;
	uint64_t t0 = rdtsc();
	while ((c = be32(d->control)) & ~DMA_CTL_ERROR) {
		if (rdtsc() - t0 > 20000000000ull)
			fail("fwcfg: DMA access to item 0x%04x never completed (control 0x%08x)", select, c);
		__asm__ volatile("pause");
	}
	if (c)
		fail("fwcfg: DMA access (select 0x%x, control 0x%x, length %u) ended with control 0x%08x",
		     select, ctl, len, c);
}

static void dma_read(uint16_t sel, uint8_t *buf, uint32_t len)
{
	dma_op(sel, DMA_CTL_READ, buf, len);
}

/* Both interfaces: io_buf and dma_buf hold the item; prints the line. */
static int read_both(const char *kind, uint16_t sel, const char *name, uint32_t len)
{
	if (len > MAX_FILE - PAST_END)
		fail("fwcfg: %s %s is %u bytes, more than this guest's %u-byte buffers", kind, name, len, MAX_FILE - PAST_END);
	memset(io_buf, 0xa5, len);
	memset(dma_buf, 0x5a, len + PAST_END);
	io_read(sel, io_buf, len);
	dma_read(sel, dma_buf, len + PAST_END);
	uint32_t ci = crc32(0, io_buf, len), cd = crc32(0, dma_buf, len);
	int ok = ci == cd && !memcmp(io_buf, dma_buf, len);
	for (unsigned i = 0; i < PAST_END; i++)
		if (dma_buf[len + i]) {
			printf("fwcfg: %s %s: DMA read past the end gave 0x%02x at +%u, not 0\n", kind, name, dma_buf[len + i], i);
			ok = 0;
		}
	if (len >= 2) {
		/* split read: the second access continues where the first ended */
		uint32_t h = len / 2;
		memset(tmp_buf, 0x33, len);
		dma_op(sel, DMA_CTL_READ, tmp_buf, h);
		dma_op(-1, DMA_CTL_READ, tmp_buf + h, len - h);
		if (memcmp(tmp_buf, dma_buf, len)) {
			printf("fwcfg: %s %s: split DMA read differs\n", kind, name);
			ok = 0;
		}
		/* skip the first half, read the rest */
		memset(tmp_buf, 0x44, len);
		dma_op(sel, DMA_CTL_SKIP, tmp_buf, h);
		dma_op(-1, DMA_CTL_READ, tmp_buf + h, len - h);
		for (uint32_t i = 0; i < h; i++)
			if (tmp_buf[i] != 0x44) {
				printf("fwcfg: %s %s: DMA skip wrote to memory\n", kind, name);
				ok = 0;
				break;
			}
		if (memcmp(tmp_buf + h, dma_buf + h, len - h)) {
			printf("fwcfg: %s %s: DMA read after skip differs\n", kind, name);
			ok = 0;
		}
	}
	printf("%s 0x%04x %s size %u io crc32 %08x dma crc32 %08x %s\n", kind, sel, name, len, ci, cd,
	       ok ? "OK" : "MISMATCH");
	if (!ok)
		mismatches++;
	return ok;
}

static uint32_t le32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }
static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static int streq(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

static void print_escaped(const uint8_t *p, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
			putchar_(p[i]);
		else
			printf("\\x%02x", p[i]);
	}
}

/* Small text: printable ASCII, tabs/newlines, NULs only at the end. */
static int is_text(const uint8_t *p, uint32_t n)
{
	if (n == 0 || n > 256)
		return 0;
	while (n && p[n - 1] == 0)
		n--;
	if (n == 0)
		return 0;
	for (uint32_t i = 0; i < n; i++)
		if (!((p[i] >= 0x20 && p[i] < 0x7f) || p[i] == '\n' || p[i] == '\t' || p[i] == '\r'))
			return 0;
	return 1;
}

struct item { uint16_t sel; const char *name; uint32_t len; };
static const struct item items[] = {
	{ FW_CFG_SIGNATURE, "signature", 4 },
	{ FW_CFG_ID, "id", 4 },
	{ FW_CFG_UUID, "uuid", 16 },
	{ FW_CFG_RAM_SIZE, "ram_size", 8 },
	{ FW_CFG_NOGRAPHIC, "nographic", 2 },
	{ FW_CFG_NB_CPUS, "nb_cpus", 2 },
	{ FW_CFG_BOOT_MENU, "boot_menu", 2 },
	{ FW_CFG_MAX_CPUS, "max_cpus", 2 },
};

int guest_main(uint32_t param)
{
	(void)param;
	printf("fwcfg test\n");
	io_buf = alloc(MAX_FILE, 4096);
	dma_buf = alloc(MAX_FILE, 4096);
	tmp_buf = alloc(MAX_FILE, 4096);

	/* The signature and ID through I/O first: DMA is only there if ID says so. */
	uint8_t sig[4], idb[4];
	io_read(FW_CFG_SIGNATURE, sig, 4);
	if (memcmp(sig, "QEMU", 4)) {
		printf("fwcfg: signature ");
		print_escaped(sig, 4);
		printf("\n");
		fail("fwcfg: no QEMU fw_cfg at port 0x510");
	}
	io_read(FW_CFG_ID, idb, 4);
	uint32_t id = le32(idb);
	printf("fwcfg: id 0x%08x (%s%s)\n", id, id & 1 ? "traditional" : "", id & 2 ? " dma" : "");
	if (!(id & 2))
		fail("fwcfg: the ID has no DMA bit (0x%x)", id);
	uint32_t r0 = inl(FW_CFG_DMA_HI), r1 = inl(FW_CFG_DMA_LO);
	uint8_t reg[8];
	for (int i = 0; i < 4; i++) {
		reg[i] = (uint8_t)(r0 >> (8 * i));
		reg[4 + i] = (uint8_t)(r1 >> (8 * i));
	}
	printf("fwcfg: dma register '");
	print_escaped(reg, 8);
	printf("'\n");
	if (memcmp(reg, "QEMU CFG", 8))
		fail("fwcfg: the DMA register does not read 'QEMU CFG'");

	/* Numbered items */
	for (unsigned i = 0; i < sizeof(items) / sizeof(items[0]); i++) {
		const struct item *it = &items[i];
		read_both("item", it->sel, it->name, it->len);
		n_items++;
		const uint8_t *p = io_buf;
		switch (it->sel) {
		case FW_CFG_SIGNATURE:
			printf("fwcfg: signature '");
			print_escaped(p, 4);
			printf("'\n");
			break;
		case FW_CFG_UUID:
			printf("fwcfg: uuid ");
			for (int k = 0; k < 16; k++)
				printf("%02x", p[k]);
			printf("\n");
			break;
		case FW_CFG_RAM_SIZE:
			printf("fwcfg: ram_size %lu (%lu MiB)\n", le64(p), le64(p) >> 20);
			break;
		case FW_CFG_NOGRAPHIC:
			printf("fwcfg: nographic %u\n", le16(p));
			break;
		case FW_CFG_NB_CPUS:
			printf("fwcfg: nb_cpus %u\n", le16(p));
			break;
		case FW_CFG_BOOT_MENU:
			printf("fwcfg: boot_menu %u\n", le16(p));
			break;
		case FW_CFG_MAX_CPUS:
			printf("fwcfg: max_cpus %u\n", le16(p));
			break;
		}
	}

	/* The file directory: count (BE32), then {size BE32, select BE16, reserved, name[56]} */
	uint8_t cnt[4];
	io_read(FW_CFG_FILE_DIR, cnt, 4);
	uint32_t count = be32(le32(cnt));
	if (count > 4096)
		fail("fwcfg: directory claims %u files", count);
	uint32_t dirlen = 4 + 64 * count;
	read_both("item", FW_CFG_FILE_DIR, "file_dir", dirlen);
	n_items++;
	uint8_t *dir = alloc(dirlen, 16);
	memcpy(dir, io_buf, dirlen);
	printf("fwcfg: directory %u files\n", count);

	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *e = dir + 4 + 64 * i;
		uint32_t size = be32(le32(e));
		uint16_t sel = be16(le16(e + 4));
		char name[57];
		memcpy(name, e + 8, 56);
		name[56] = 0;
		read_both("file", sel, name, size);
		n_files++;
		if (streq(name, "etc/e820")) {
			for (uint32_t off = 0; off + 20 <= size; off += 20)
				printf("e820 %016lx %016lx type %u\n", le64(io_buf + off), le64(io_buf + off + 8),
				       le32(io_buf + off + 16));
		}
		if (is_text(io_buf, size)) {
			printf("content %s: '", name);
			print_escaped(io_buf, size);
			printf("'\n");
		}
	}

	if (mismatches) {
		printf("fwcfg: %u mismatches\n", mismatches);
		return EXIT_FAIL;
	}
	printf("fwcfg: %u items and %u files agree over I/O and DMA\n", n_items, n_files);
	return EXIT_OK;
}
