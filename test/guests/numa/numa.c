/*
 * numa.rom: read the guest NUMA topology the firmware describes, as an OS
 * does at boot, in ring 3 on the virtio runtime (vlib.c):
 *   - the RSDP in 0xE0000-0xFFFFF, the RSDT, the SRAT and the SLIT (each
 *     checksum checked);
 *   - prints every processor ("numa: cpu apic A domain D"), every memory
 *     range ("numa: memory BASE-END domain D") and the SLIT matrix
 *     ("numa: distance I J N");
 *   - every memory range below 4 GiB holds what is written at its first
 *     and last word (the range is RAM);
 *     numa: N domains, C cpus, M ranges
 * No SRAT: "numa: no SRAT", exit status 5. Failures print "FAIL: ..."
 * and exit 1 (status 3).
 */
#include "vlib.h"

static int sum_ok(uintptr_t a, uint32_t len)
{
	uint8_t s = 0;
	for (uint32_t i = 0; i < len; i++)
		s = (uint8_t)(s + mr8(a + i));
	return s == 0;
}

static uintptr_t find_rsdp(void)
{
	static volatile uint32_t lo = 0x20445352 - 1;	/* "RSD " built at run time */
	for (uintptr_t a = 0xe0000; a < 0x100000; a += 16)
		if (mr32(a) == lo + 1 && mr32(a + 4) == 0x20525450 && sum_ok(a, 20))	/* "PTR " */
			return a;
	return 0;
}

static uintptr_t find_table(uintptr_t rsdt, uint32_t sig)
{
	uint32_t n = (mr32(rsdt + 4) - 36) / 4;
	for (uint32_t i = 0; i < n; i++) {
		uintptr_t t = mr32(rsdt + 36 + 4 * i);
		if (mr32(t) == sig) {
			if (!sum_ok(t, mr32(t + 4)))
				fail("numa: table %x has a bad checksum", sig);
			return t;
		}
	}
	return 0;
}

int guest_main(uint32_t param)
{
	(void)param;
	uintptr_t rsdp = find_rsdp();
	if (!rsdp)
		fail("numa: no RSDP in 0xe0000-0xfffff");
	uintptr_t rsdt = mr32(rsdp + 16);
	if (mr32(rsdt) != 0x54445352 || !sum_ok(rsdt, mr32(rsdt + 4)))	/* "RSDT" */
		fail("numa: bad RSDT at %lx", (uint64_t)rsdt);
	uintptr_t srat = find_table(rsdt, 0x54415253);	/* "SRAT" */
	if (!srat) {
		printf("numa: no SRAT\n");
		return EXIT_NODEV;
	}
	uint32_t len = mr32(srat + 4), cpus = 0, ranges = 0, maxdom = 0;
	printf("numa: SRAT revision %u, %u bytes\n", mr8(srat + 8), len);
	for (uintptr_t e = srat + 48; e < srat + len; e += mr8(e + 1)) {
		uint8_t type = mr8(e), elen = mr8(e + 1);
		if (elen < 2)
			fail("numa: SRAT entry of length %u", elen);
		if (type == 0 && (mr32(e + 4) & 1)) {
			uint32_t dom = mr8(e + 2) | (uint32_t)mr8(e + 9) << 8 | (uint32_t)mr8(e + 10) << 16 | (uint32_t)mr8(e + 11) << 24;
			printf("numa: cpu apic %u domain %u\n", mr8(e + 3), dom);
			cpus++;
			if (dom > maxdom)
				maxdom = dom;
		} else if (type == 1 && (mr32(e + 28) & 1)) {
			uint32_t dom = mr32(e + 2);
			uint64_t base = (uint64_t)mr32(e + 8) | (uint64_t)mr32(e + 12) << 32;
			uint64_t size = (uint64_t)mr32(e + 16) | (uint64_t)mr32(e + 20) << 32;
			printf("numa: memory %lx-%lx domain %u\n", base, base + size - 1, dom);
			ranges++;
			if (dom > maxdom)
				maxdom = dom;
			if (base + size <= 0x100000000ull && size >= 8) {
				/* First and last word of the range; below 1 MiB the
				 * ROM and the tables live, so the first word there is
				 * at 1 MiB. */
				uint64_t first = base < 0x100000 ? 0x100000 : base, last = base + size - 8;
				if (first < last) {
					volatile uint64_t *p = (volatile uint64_t *)(uintptr_t)first, *q = (volatile uint64_t *)(uintptr_t)last;
					uint64_t a = *p, b = *q;
					*p = 0x1234567890abcdefull ^ first;
					*q = 0x1234567890abcdefull ^ last;
					if (*p != (0x1234567890abcdefull ^ first) || *q != (0x1234567890abcdefull ^ last))
						fail("numa: memory of domain %u at %lx-%lx is not RAM", dom, first, last);
					*p = a;
					*q = b;
				}
			}
		}
	}
	uintptr_t slit = find_table(rsdt, 0x54494c53);	/* "SLIT" */
	if (slit) {
		uint32_t n = mr32(slit + 36);
		for (uint32_t i = 0; i < n; i++)
			for (uint32_t j = 0; j < n; j++)
				printf("numa: distance %u %u %u\n", i, j, mr8(slit + 44 + i * n + j));
	} else {
		printf("numa: no SLIT\n");
	}
	printf("numa: %u domains, %u cpus, %u ranges\n", maxdom + 1, cpus, ranges);
	return EXIT_OK;
}
