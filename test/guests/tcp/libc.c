/*
 * libc.c - the C library and pthread calls Debian's liblwip.so.0 imports
 * (nm -D --undefined-only), for tcp.rom's single thread in ring 3.
 * scripts/lwip-image.mjs binds the library's imports to these by name at
 * build time; one it does not find here fails the build.
 *
 * Real: malloc/calloc/free (size classes with free lists, 16-byte aligned
 * as glibc's), memmove, strncmp, strncpy, strtol, rand, clock_gettime (the
 * TSC), __ctype_b_loc (ASCII), __errno_location, the _chk variants, printf.
 * Mutexes are no-ops and pthread_self is one thread: only one thread runs,
 * and the raw API is used from it alone. Calls a single-threaded polling
 * stack must never make (blocking on a condition variable, starting a
 * thread, the tap/serial/file helpers of the Unix port) end the guest with
 * "FAIL: lwip called NAME" instead of pretending to work.
 * (memcpy, memcmp, strlen come from vlib.c.)
 */
#include "vlib.h"
#include "tcp.h"

/* ---- memory: blocks of 16 << k bytes (k < NCLASS), a 16-byte header
 * holding k; freed blocks go on their class's list. The heap lies above
 * the lwIP image (tcp.h). */
#define NCLASS	20			/* up to 8 MiB */
struct blk { struct blk *next; uint64_t cls; };
static struct blk *freelist[NCLASS];
static uintptr_t brk_ = HEAP_START;
static uint64_t heap_in_use, heap_peak;

void *malloc(size_t n)
{
	unsigned k = 0;
	while (((size_t)16 << k) < n + 16)
		if (++k == NCLASS)
			return NULL;
	struct blk *b = freelist[k];
	if (b) {
		freelist[k] = b->next;
	} else {
		if (brk_ + ((size_t)16 << k) > HEAP_END)
			return NULL;
		b = (struct blk *)brk_;
		brk_ += (size_t)16 << k;
		b->cls = k;
	}
	heap_in_use += (size_t)16 << k;
	if (heap_in_use > heap_peak)
		heap_peak = heap_in_use;
	return (uint8_t *)b + 16;
}

void free(void *p)
{
	if (!p)
		return;
	struct blk *b = (struct blk *)((uint8_t *)p - 16);
	if (b->cls >= NCLASS || (uintptr_t)b < HEAP_START || (uintptr_t)b >= brk_)
		fail("lwip: free(%lx) of a block malloc did not return", (uint64_t)(uintptr_t)p);
	heap_in_use -= (size_t)16 << b->cls;
	b->next = freelist[b->cls];
	freelist[b->cls] = b;
}

void *calloc(size_t n, size_t size)
{
	if (size && n > (size_t)-1 / size)
		return NULL;
	void *p = malloc(n * size);
	if (p)
		memset(p, 0, n * size);
	return p;
}

uint64_t heap_peak_bytes(void) { return heap_peak; }

void *memmove(void *d, const void *s, size_t n)
{
	if ((uintptr_t)d - (uintptr_t)s >= n)	/* no overlap with d above s */
		return memcpy(d, s, n);
	uint8_t *dd = d;
	const uint8_t *ss = s;
	while (n--)
		dd[n] = ss[n];
	return d;
}

void *__memcpy_chk(void *d, const void *s, size_t n, size_t dlen)
{
	if (n > dlen)
		fail("lwip: __memcpy_chk: %lu bytes into %lu", (uint64_t)n, (uint64_t)dlen);
	return memcpy(d, s, n);
}

int strncmp(const char *a, const char *b, size_t n)
{
	for (; n; n--, a++, b++) {
		if (*a != *b)
			return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
		if (!*a)
			break;
	}
	return 0;
}

char *strncpy(char *d, const char *s, size_t n)
{
	size_t i = 0;
	for (; i < n && s[i]; i++)
		d[i] = s[i];
	for (; i < n; i++)
		d[i] = 0;
	return d;
}

long strtol(const char *s, char **end, int base)
{
	while (*s == ' ' || (*s >= '\t' && *s <= '\r'))
		s++;
	int neg = *s == '-';
	if (*s == '-' || *s == '+')
		s++;
	if ((base == 0 || base == 16) && s[0] == '0' && (s[1] | 0x20) == 'x')
		s += 2, base = 16;
	else if (base == 0)
		base = s[0] == '0' ? 8 : 10;
	long v = 0;
	for (;; s++) {
		int c = *s, d = c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'z' ? (c | 0x20) - 'a' + 10 : 99;
		if (d >= base)
			break;
		v = v * base + d;
	}
	if (end)
		*end = (char *)s;
	return neg ? -v : v;
}

/* glibc's <ctype.h> tables: __ctype_b_loc() points at entry 0 of a table
 * indexed -128..255 with these bits (bits/ctype.h, little endian). */
#define C_UPPER	0x100
#define C_LOWER	0x200
#define C_ALPHA	0x400
#define C_DIGIT	0x800
#define C_XDIGIT 0x1000
#define C_SPACE	0x2000
#define C_PRINT	0x4000
#define C_GRAPH	0x8000
#define C_BLANK	0x1
#define C_CNTRL	0x2
#define C_PUNCT	0x4
#define C_ALNUM	0x8
static unsigned short ctype_table[384];
static const unsigned short *ctype_ptr;

const unsigned short **__ctype_b_loc(void)
{
	if (!ctype_ptr) {
		for (int c = 0; c < 128; c++) {
			unsigned short f = 0;
			int up = c >= 'A' && c <= 'Z', lo = c >= 'a' && c <= 'z', dig = c >= '0' && c <= '9';
			if (up)
				f |= C_UPPER | C_ALPHA | C_ALNUM;
			if (lo)
				f |= C_LOWER | C_ALPHA | C_ALNUM;
			if (dig)
				f |= C_DIGIT | C_ALNUM;
			if (dig || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))
				f |= C_XDIGIT;
			if (c == ' ' || (c >= '\t' && c <= '\r'))
				f |= C_SPACE;
			if (c == ' ' || c == '\t')
				f |= C_BLANK;
			if (c < 32 || c == 127)
				f |= C_CNTRL;
			if (c >= 32 && c < 127)
				f |= C_PRINT;
			if (c > 32 && c < 127)
				f |= C_GRAPH;
			if (c > 32 && c < 127 && !up && !lo && !dig)
				f |= C_PUNCT;
			ctype_table[128 + c] = f;
		}
		ctype_ptr = ctype_table + 128;
	}
	return &ctype_ptr;
}

static int errno_;
int *__errno_location(void) { return &errno_; }

static uint32_t rand_state;
void libc_seed(uint32_t seed) { rand_state = seed ? seed : 1; }
int rand(void)
{
	rand_state ^= rand_state << 13;
	rand_state ^= rand_state >> 17;
	rand_state ^= rand_state << 5;
	return (int)(rand_state & 0x7fffffff);
}

/* CLOCK_MONOTONIC (and any other clock) from the TSC, once calibrated */
static uint64_t tsc0, tsc_hz = 1;
void libc_set_tsc_hz(uint64_t hz) { tsc_hz = hz; tsc0 = rdtsc(); }
struct timespec_ { int64_t tv_sec, tv_nsec; };
int clock_gettime(int clk, struct timespec_ *ts)
{
	(void)clk;
	uint64_t t = rdtsc() - tsc0;
	ts->tv_sec = (int64_t)(t / tsc_hz);
	ts->tv_nsec = (int64_t)((t % tsc_hz) * 1000000000ull / tsc_hz);
	return 0;
}

/* lwIP's diagnostics (LWIP_PLATFORM_DIAG/ASSERT print with printf); its
 * assertions end in abort(). */
int __printf_chk(int flag, const char *fmt, ...)
{
	(void)flag;
	va_list ap;
	va_start(ap, fmt);
	vprintf_(fmt, ap);
	va_end(ap);
	return 0;
}
int fflush(void *f) { (void)f; return 0; }
void abort(void) { fail("lwip: abort()"); }
void exit(int status) { fail("lwip: exit(%d)", status); }
void __stack_chk_fail(void) { fail("lwip: stack protector: the stack was overwritten"); }
int getpid(void) { return 1; }

/* One thread: locks always succeed at once. */
int pthread_mutex_init(void *m, const void *a) { (void)m; (void)a; return 0; }
int pthread_mutex_destroy(void *m) { (void)m; return 0; }
int pthread_mutex_lock(void *m) { (void)m; return 0; }
int pthread_mutex_unlock(void *m) { (void)m; return 0; }
unsigned long pthread_self(void) { return 1; }
int pthread_cond_init(void *c, const void *a) { (void)c; (void)a; return 0; }
int pthread_cond_destroy(void *c) { (void)c; return 0; }
int pthread_cond_broadcast(void *c) { (void)c; return 0; }
int pthread_condattr_init(void *a) { (void)a; return 0; }
int pthread_condattr_destroy(void *a) { (void)a; return 0; }
int pthread_condattr_setclock(void *a, int c) { (void)a; (void)c; return 0; }

/* What a single-threaded polling guest never calls: waiting for another
 * thread (the sequential and socket APIs, the tcpip thread), and the Unix
 * port's tap, serial, file and process helpers. */
#define NOT_HERE(name) void name(void) { fail("lwip called " #name "()"); }
NOT_HERE(pthread_cond_wait)
NOT_HERE(pthread_cond_timedwait)
NOT_HERE(pthread_create)
NOT_HERE(__snprintf_chk)
NOT_HERE(__fdelt_chk)
NOT_HERE(open)
NOT_HERE(read)
NOT_HERE(write)
NOT_HERE(ioctl)
NOT_HERE(fcntl)
NOT_HERE(select)
NOT_HERE(sigaction)
NOT_HERE(getenv)
NOT_HERE(perror)
NOT_HERE(system)
NOT_HERE(tcflush)
NOT_HERE(tcgetattr)
NOT_HERE(tcsetattr)
