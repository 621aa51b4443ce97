/*
 * hda.rom: drive the first High Definition Audio controller (class 04/03:
 * bhyve's hda 8086:27d8, QEMU's intel-hda 8086:2668) and its codec as an
 * OS does, in ring 3 on the virtio runtime (vlib.c, irq.c):
 *   - controller reset (CRST 0 then 1), the codecs from STATESTS;
 *   - CORB and RIRB (the largest size offered), commands by CORB write
 *     pointer, responses taken from the RIRB;
 *   - codec enumeration: root node, audio function group, every widget's
 *     capabilities; the first audio output converter and an output pin
 *     whose connection list holds it;
 *   - the converter set to 48 kHz, 16-bit, stereo on stream tag 1, its
 *     amplifier (and the pin's) unmuted at 0 dB, the pin's output on;
 *   - the first output stream descriptor reset (SRST), a BDL of 4 entries
 *     with IOC over a known PCM buffer of N bytes (the parameter's low 24
 *     bits; 0 = 16384), the DMA position buffer, RUN; the stream is stopped
 *     after the 8th IOC (two laps of the cyclic buffer):
 *       hda: played N bytes, crc XXXXXXXX, 8 IOC in 2 laps
 *     byte i of the buffer is (i * 31 + (i >> 8) * 7 + 1) & 0xff;
 *   - parameter bit 29: then records N bytes on the first input stream from
 *     the first audio input converter and checks them against the pattern
 *     of the host's rec= file: byte i is (i * 13 + (i >> 8) * 5 + 7) & 0xff
 *     (the file repeats it: the device may run on into the next lap);
 *   - parameter bit 30: hostile descriptors on the second output stream
 *     (a BDL outside RAM, an entry of length 0): each must leave RUN at 0
 *     and set DESE;
 *   - parameter bit 31 (bench): SECONDS = bits 0-7; plays a 64 KiB cyclic
 *     buffer of 16 IOC entries for that many seconds of 48 kHz stereo and
 *     prints the time it took, then the cost of WALCLK reads ("bench:").
 * Interrupt mode (mode word, irq.h): MODE_INTX: the function's INTx pin,
 * routed as the firmware says; the ring-0 handler writes INTCTL = 0 (the
 * level drops), ring 3 looks at INTSTS, clears RIRBSTS / SDSTS and writes
 * INTCTL back. Responses and IOCs are taken only after an interrupt
 * announced them. MODE_POLL polls RIRBWP and SDSTS.
 *   hda: interrupts: intx vector V N
 * Failures print "FAIL: ..." (status 3); no controller: status 5.
 */
#include "vlib.h"
#include "irq.h"

#define GCAP		0x00
#define GCTL		0x08
#define STATESTS	0x0e
#define INTCTL		0x20
#define INTSTS		0x24
#define WALCLK		0x30
#define CORBLBASE	0x40
#define CORBUBASE	0x44
#define CORBWP		0x48
#define CORBRP		0x4a
#define CORBCTL		0x4c
#define CORBSIZE	0x4e
#define RIRBLBASE	0x50
#define RIRBUBASE	0x54
#define RIRBWP		0x58
#define RINTCNT		0x5a
#define RIRBCTL		0x5c
#define RIRBSTS		0x5d
#define RIRBSIZE	0x5e
#define DPLBASE		0x70
#define DPUBASE		0x74
#define SD_CTL		0x00
#define SD_STS		0x03
#define SD_LPIB		0x04
#define SD_CBL		0x08
#define SD_LVI		0x0c
#define SD_FMT		0x12
#define SD_BDPL		0x18
#define SD_BDPU		0x1c

#define GIE		0x80000000u
#define CIE		0x40000000u
#define BCIS		0x04
#define DESE		0x10
#define RUN		0x02
#define SRST		0x01
#define IOCE		0x04
#define FEIE		0x08
#define DEIE		0x10

#define FMT_48K_16_2	0x0011
#define TAG		1

static uintptr_t bar;
static int bdf, irqmode, vec = -1, cad;
static uint32_t irq_seen, intctl;
static volatile uint32_t *corb;
static volatile uint32_t *rirb;
static unsigned corb_n, rirb_n, corb_wp, rirb_rp;
static volatile uint32_t *dpib;
static unsigned iss, oss;
static uint32_t responses, iocs;
static int quiet;
#define say(...) do { if (!quiet) printf(__VA_ARGS__); } while (0)

static uint8_t r8(int o) { return mr8(bar + o); }
static uint16_t r16(int o) { return mr16(bar + o); }
static uint32_t r32(int o) { return mr32(bar + o); }
static void w8(int o, uint8_t v) { mw8(bar + o, v); }
static void w16(int o, uint16_t v) { mw16(bar + o, v); }
static void w32(int o, uint32_t v) { mw32(bar + o, v); }
static int sd(unsigned idx) { return 0x80 + 0x20 * (int)idx; }

static void wait_bits(int off, uint32_t mask, uint32_t want, const char *what)
{
	uint64_t t0 = rdtsc();
	while ((r32(off) & mask) != want)
		if (rdtsc() - t0 > poll_timeout_cycles)
			fail("hda: %s (register %x reads %x)", what, off, r32(off));
}

/* Waits for an interrupt (INTx) and reports INTSTS; the handler wrote
 * INTCTL = 0, the caller clears the sources and calls irq_done(). */
static uint32_t irq_wait(const char *what)
{
	if (!irq_wait_change(&irq_count[vec], irq_seen, poll_timeout_cycles))
		fail("hda: no interrupt for %s (INTSTS %x, RIRBWP %x, SDSTS %x)", what, r32(INTSTS), r16(RIRBWP),
		    r8(sd(iss) + SD_STS));
	irq_seen = irq_count[vec];
	return r32(INTSTS);
}

static void irq_done(void) { w32(INTCTL, intctl); }

/* One verb through the CORB; its response from the RIRB. */
static uint32_t command(int nid, uint32_t verb)
{
	uint32_t v = ((uint32_t)cad << 28) | ((uint32_t)nid << 20) | verb;
	corb_wp = (corb_wp + 1) % corb_n;
	corb[corb_wp] = v;
	barrier();
	w16(CORBWP, (uint16_t)corb_wp);
	unsigned want = (rirb_rp + 1) % rirb_n;
	if (vec >= 0) {
		for (;;) {
			uint32_t s = irq_wait("a codec response");
			uint8_t rs = r8(RIRBSTS);
			w8(RIRBSTS, rs & 0x05);
			irq_done();
			if ((s & CIE) && (r16(RIRBWP) & 0xff) == want)
				break;
		}
	} else {
		uint64_t t0 = rdtsc();
		while ((r16(RIRBWP) & 0xff) != want)
			if (rdtsc() - t0 > poll_timeout_cycles)
				fail("hda: no response to %x (RIRBWP %x, CORBRP %x)", v, r16(RIRBWP), r16(CORBRP));
		w8(RIRBSTS, 0x05);
	}
	rirb_rp = want;
	uint32_t resp = rirb[2 * rirb_rp], ex = rirb[2 * rirb_rp + 1];
	if ((ex & 0xf) != (uint32_t)cad || (ex & 0x10))
		fail("hda: response to %x from codec %x (ex %x)", v, ex & 0xf, ex);
	responses++;
	return resp;
}

static uint32_t param(int nid, int p) { return command(nid, 0xf0000 | (uint32_t)p); }
static uint32_t verb12(int nid, uint32_t verb, uint32_t payload) { return command(nid, (verb << 8) | payload); }
static uint32_t verb4(int nid, uint32_t verb, uint32_t payload) { return command(nid, (verb << 16) | payload); }

static unsigned ring_size(uint8_t sz, unsigned *code)
{
	if (sz & 0x40) { *code = 2; return 256; }
	if (sz & 0x20) { *code = 1; return 16; }
	*code = 0;
	return 2;
}

static void controller_up(void)
{
	w32(GCTL, 0);
	wait_bits(GCTL, 1, 0, "CRST does not enter reset");
	w32(GCTL, 1);
	wait_bits(GCTL, 1, 1, "CRST does not leave reset");
	uint64_t t0 = rdtsc();
	while (!r16(STATESTS))
		if (rdtsc() - t0 > poll_timeout_cycles)
			fail("hda: no codec in STATESTS");
	uint16_t st = r16(STATESTS);
	while (!(st & (1u << cad)))
		cad++;
	say("hda: codecs in STATESTS %x, using address %d\n", st, cad);
	w16(STATESTS, st);

	unsigned code;
	w8(CORBCTL, 0);
	wait_bits(CORBCTL, 2, 0, "CORB does not stop");
	corb_n = ring_size(r8(CORBSIZE), &code);
	w8(CORBSIZE, (uint8_t)code);
	corb = alloc(4 * corb_n, 128);
	w32(CORBLBASE, (uint32_t)(uintptr_t)corb);
	w32(CORBUBASE, 0);
	w16(CORBRP, 0x8000);
	w16(CORBRP, 0);
	w16(CORBWP, 0);
	corb_wp = 0;
	w8(CORBCTL, 2);
	wait_bits(CORBCTL, 2, 2, "CORB does not run");

	w8(RIRBCTL, 0);
	rirb_n = ring_size(r8(RIRBSIZE), &code);
	w8(RIRBSIZE, (uint8_t)code);
	rirb = alloc(8 * rirb_n, 128);
	w32(RIRBLBASE, (uint32_t)(uintptr_t)rirb);
	w32(RIRBUBASE, 0);
	w16(RIRBWP, 0x8000);
	rirb_rp = 0;
	w16(RINTCNT, 1);
	w8(RIRBCTL, 3);	/* DMA on; RINTFL counts responses (QEMU holds the CORB until it is cleared) */
	say("hda: CORB %u entries, RIRB %u entries\n", corb_n, rirb_n);
	intctl = vec >= 0 ? (GIE | CIE | (1u << iss)) : 0;
	w32(INTCTL, intctl);
}

static int dac = -1, pin = -1, adc = -1, inpin = -1;
static uint32_t dac_caps, pin_caps, adc_caps, fg_amp_out, fg_amp_in;

static const char *wtype(uint32_t caps)
{
	static const char *n[] = { "audio output", "audio input", "mixer", "selector", "pin complex", "power",
		"volume knob", "beep" };
	unsigned t = (caps >> 20) & 0xf;
	return t < 8 ? n[t] : "vendor";
}

static int conn_has(int nid, int target)
{
	uint32_t len = param(nid, 0x0e);
	int longform = (len >> 7) & 1;
	unsigned n = len & 0x7f;
	for (unsigned i = 0; i < n; i += longform ? 2 : 4) {
		uint32_t e = verb12(nid, 0xf02, i);
		for (unsigned k = 0; k < (longform ? 2u : 4u) && i + k < n; k++) {
			int c = longform ? (int)((e >> (16 * k)) & 0x7fff) : (int)((e >> (8 * k)) & 0x7f);
			if (c == target)
				return 1;
		}
	}
	return 0;
}

static void enumerate(void)
{
	uint32_t vendor = param(0, 0x00);
	uint32_t rev = param(0, 0x02);
	uint32_t sub = param(0, 0x04);
	say("hda: codec %d: vendor %08x revision %08x, function groups %u from NID %u\n", cad, vendor, rev, sub & 0xff,
	    (sub >> 16) & 0xff);
	for (unsigned g = (sub >> 16) & 0xff, gn = 0; gn < (sub & 0xff); g++, gn++) {
		uint32_t type = param((int)g, 0x05);
		if ((type & 0xff) != 1)
			continue;
		uint32_t ws = param((int)g, 0x04);
		fg_amp_out = param((int)g, 0x12);
		fg_amp_in = param((int)g, 0x0d);
		uint32_t pcm = param((int)g, 0x0a);
		say("hda: audio function group NID %u: widgets %u from NID %u, PCM %08x, subsystem %08x\n", g, ws & 0xff,
		    (ws >> 16) & 0xff, pcm, verb12((int)g, 0xf20, 0));
		for (unsigned w = (ws >> 16) & 0xff, wn = 0; wn < (ws & 0xff); w++, wn++) {
			uint32_t caps = param((int)w, 0x09);
			uint32_t t = (caps >> 20) & 0xf;
			uint32_t pc = t == 4 ? param((int)w, 0x0c) : 0;
			say("hda:   NID %u: %s, caps %08x%s%s\n", w, wtype(caps), caps, t == 4 && (pc & 0x10) ? ", output pin" : "",
			    t == 4 && (pc & 0x20) ? ", input pin" : "");
			if (t == 0 && dac < 0) {
				dac = (int)w;
				dac_caps = caps;
			}
			if (t == 4 && (pc & 0x10) && pin < 0 && dac >= 0 && (caps & 0x100) && conn_has((int)w, dac)) {
				pin = (int)w;
				pin_caps = caps;
			}
			if (t == 1 && adc < 0) {
				adc = (int)w;
				adc_caps = caps;
			}
			if (t == 4 && (pc & 0x20) && inpin < 0)
				inpin = (int)w;
		}
	}
	if (dac < 0 || pin < 0)
		fail("hda: no audio output converter and output pin (dac %d pin %d)", dac, pin);
	say("hda: output path: converter NID %d -> pin NID %d (default config %08x, sense %08x)\n", dac, pin,
	    verb12(pin, 0xf1c, 0), verb12(pin, 0xf09, 0));
}

/* Output amplifier of `nid` unmuted at 0 dB (its offset), both sides. */
static void amp_on(int nid, uint32_t caps)
{
	if (!(caps & 0x4))
		return;
	uint32_t ac = (caps & 0x8) ? param(nid, 0x12) : fg_amp_out;
	uint32_t gain = ac & 0x7f;
	verb4(nid, 0x3, 0xb000 | gain);
	uint32_t l = verb4(nid, 0xb, 0xa000), r = verb4(nid, 0xb, 0x8000);
	if ((l & 0xff) != gain || (r & 0xff) != gain)
		fail("hda: amplifier of NID %d reads %x/%x after setting gain %x unmuted", nid, l, r, gain);
}

static void path_on(void)
{
	verb4(dac, 0x2, FMT_48K_16_2);
	verb12(dac, 0x706, TAG << 4);
	uint32_t fmt = verb4(dac, 0xa, 0), sc = verb12(dac, 0xf06, 0);
	if (fmt != FMT_48K_16_2 || sc != TAG << 4)
		fail("hda: converter reads format %x stream %x", fmt, sc);
	amp_on(dac, dac_caps);
	amp_on(pin, pin_caps);
	verb12(pin, 0x707, 0x40);
	say("hda: converter: 48 kHz 16-bit stereo on stream %d, amplifiers at 0 dB\n", TAG);
}

static void stream_reset(int s)
{
	w8(s + SD_CTL, SRST);
	wait_bits(s + SD_CTL, SRST, SRST, "SRST does not enter reset");
	w8(s + SD_CTL, 0);
	wait_bits(s + SD_CTL, SRST, 0, "SRST does not leave reset");
}

struct bdle { uint32_t lo, hi, len, ioc; };

/* Programs stream descriptor `s`: `n` entries of `len` over `buf`. */
static void stream_setup(int s, struct bdle *bdl, uint8_t *buf, unsigned n, uint32_t len)
{
	stream_reset(s);
	for (unsigned i = 0; i < n; i++) {
		bdl[i].lo = (uint32_t)(uintptr_t)(buf + i * len);
		bdl[i].hi = 0;
		bdl[i].len = len;
		bdl[i].ioc = 1;
	}
	w32(s + SD_BDPL, (uint32_t)(uintptr_t)bdl);
	w32(s + SD_BDPU, 0);
	w32(s + SD_CBL, n * len);
	w16(s + SD_LVI, (uint16_t)(n - 1));
	w16(s + SD_FMT, FMT_48K_16_2);
	/* The tag in SDCTL bits 23:20, by a dword write that leaves SDSTS alone. */
	w32(s + SD_CTL, (r32(s + SD_CTL) & 0x000fffff) | (TAG << 20));
}

static void stream_run(int s, int on)
{
	w8(s + SD_CTL, (uint8_t)(on ? (RUN | IOCE | FEIE | DEIE) : 0));
}

/* Waits for the next IOC of stream index `idx`. */
static void wait_ioc(int s, unsigned idx)
{
	if (vec >= 0) {
		for (;;) {
			uint32_t st = irq_wait("an IOC");
			uint8_t ss = r8(s + SD_STS);
			if (ss & (DESE | 0x08))
				fail("hda: stream error (SDSTS %x)", ss);
			w8(s + SD_STS, ss & BCIS);
			irq_done();
			if ((st & (1u << idx)) && (ss & BCIS))
				break;
		}
	} else {
		uint64_t t0 = rdtsc();
		while (!(r8(s + SD_STS) & BCIS))
			if (rdtsc() - t0 > poll_timeout_cycles)
				fail("hda: no IOC (LPIB %x)", r32(s + SD_LPIB));
		w8(s + SD_STS, BCIS);
	}
	iocs++;
}

static void hostile(void)
{
	if (oss < 2) {
		say("hda: hostile: only one output stream\n");
		return;
	}
	int s = sd(iss + 1);
	struct bdle *bdl = alloc(2 * sizeof(struct bdle), 128);
	uint8_t *buf = alloc(512, 128);
	/* A BDL outside guest RAM (3.5 GiB is the PCI hole). */
	stream_setup(s, bdl, buf, 2, 256);
	w32(s + SD_BDPL, 0xe0000000u);
	stream_run(s, 1);
	printf("hda: hostile: BDL outside RAM: RUN %u DESE %u\n", (r8(s + SD_CTL) & RUN) >> 1, (r8(s + SD_STS) & DESE) >> 4);
	w8(s + SD_STS, DESE);
	/* An entry of length 0. */
	stream_setup(s, bdl, buf, 2, 256);
	bdl[1].len = 0;
	w32(s + SD_CBL, 256);
	stream_run(s, 1);
	printf("hda: hostile: entry of length 0: RUN %u DESE %u\n", (r8(s + SD_CTL) & RUN) >> 1, (r8(s + SD_STS) & DESE) >> 4);
	w8(s + SD_STS, DESE);
	stream_run(s, 0);
	irq_done();
}

/* Records N bytes on the first input stream (tag 2) from the codec's first
 * audio input converter and checks them against the pattern the host's
 * rec= file holds: byte i is (i * 13 + (i >> 8) * 5 + 7) & 0xff. */
static void record(uint32_t total)
{
	if (adc < 0 || !iss)
		fail("hda: no audio input converter or input stream (adc %d, %u input streams)", adc, iss);
	if (inpin >= 0 && !conn_has(adc, inpin))
		fail("hda: input converter NID %d does not take pin NID %d", adc, inpin);
	verb4(adc, 0x2, FMT_48K_16_2);
	verb12(adc, 0x706, 2 << 4);
	if (adc_caps & 0x2) {
		uint32_t ac = (adc_caps & 0x8) ? param(adc, 0x0d) : fg_amp_in;
		verb4(adc, 0x3, 0x7000 | (ac & 0x7f));	/* input amp, both sides, index 0, unmuted */
	}
	if (inpin >= 0)
		verb12(inpin, 0x707, 0x20);
	const unsigned n = 4;
	uint32_t len = total / n;
	uint8_t *buf = alloc(total, 128);
	memset(buf, 0xee, total);
	struct bdle *bdl = alloc(n * sizeof(struct bdle), 128);
	int s = sd(0);
	stream_setup(s, bdl, buf, n, len);
	w32(s + SD_CTL, (r32(s + SD_CTL) & 0x000fffff) | (2u << 20));
	intctl |= 1u;
	if (vec >= 0)
		w32(INTCTL, intctl);
	stream_run(s, 1);
	if (!(r8(s + SD_CTL) & RUN))
		fail("hda: the input stream does not run (SDSTS %x)", r8(s + SD_STS));
	uint32_t before = iocs;
	for (unsigned i = 0; i < n; i++)
		wait_ioc(s, 0);
	stream_run(s, 0);
	for (uint32_t i = 0; i < total; i++)
		if (buf[i] != (uint8_t)(i * 13 + (i >> 8) * 5 + 7))
			fail("hda: recorded byte %u is %x, the file has %x", i, buf[i], (uint8_t)(i * 13 + (i >> 8) * 5 + 7));
	printf("hda: recorded %u bytes from converter NID %d, crc %08x, %u IOC, as the file holds\n", total, adc,
	    crc32(0, buf, total), iocs - before);
}

static void bench(unsigned seconds)
{
	int s = sd(iss);
	const unsigned n = 16, len = 4096;
	struct bdle *bdl = alloc(n * sizeof(struct bdle), 128);
	uint8_t *buf = alloc(n * len, 128);
	for (unsigned i = 0; i < n * len; i++)
		buf[i] = (uint8_t)(i * 31 + (i >> 8) * 7 + 1);
	uint64_t hz = tsc_hz_from_rtc();
	printf("bench: tsc_hz %lu\n", hz);
	uint32_t bytes = seconds * 48000 * 4;
	unsigned laps = (bytes + len - 1) / len;
	stream_setup(s, bdl, buf, n, len);
	printf("bench: playing %u s\n", seconds);
	uint64_t t0 = rdtsc();
	stream_run(s, 1);
	for (unsigned i = 0; i < laps; i++)
		wait_ioc(s, iss);
	uint64_t dt = rdtsc() - t0;
	stream_run(s, 0);
	printf("bench: played %u bytes (%u ms of 48 kHz stereo) in %lu ms\n", laps * len, laps * len / 192, dt * 1000 / hz);
	const unsigned reads = 2000;
	t0 = rdtsc();
	uint32_t x = 0;
	for (unsigned i = 0; i < reads; i++)
		x ^= r32(WALCLK);
	dt = rdtsc() - t0;
	printf("bench: %u WALCLK reads, %lu ns each (%x)\n", reads, dt * 1000000000 / hz / reads, x & 0);
}

int guest_main(uint32_t prm)
{
	uint32_t mode = rom_word(1);
	irqmode = (int)(mode & 0xf);
	int is_bench = (prm >> 31) & 1;
	quiet = is_bench;
	if (irqmode != MODE_POLL || (mode & MODE_HOLD))
		irq_init();
	if (irqmode != MODE_POLL && irqmode != MODE_INTX)
		fail("hda: interrupt mode %d not supported (bhyve's hda has INTx only)", irqmode);
	struct pci_virtio none[1];
	pci_scan(none, 0);
	bdf = pci_find(0x08, 16, 0x0403);
	if (bdf < 0) {
		printf("FAIL: no HD Audio controller (class 04/03) on bus 0\n");
		return EXIT_NODEV;
	}
	pci_w16(bdf, 4, (uint16_t)((pci_r16(bdf, 4) | 0x6) & ~0x400));
	bar = pci_r32(bdf, 0x10) & ~0xfu;
	uint16_t gcap = r16(GCAP);
	iss = (gcap >> 8) & 0xf;
	oss = (gcap >> 12) & 0xf;
	printf("hda: %04x:%04x at 00:%02x.%u class %06x, HDA %u.%u, %u input and %u output streams%s, INT%c\n",
	    pci_r16(bdf, 0), pci_r16(bdf, 2), bdf >> 3, bdf & 7, pci_r32(bdf, 8) >> 8, r8(0x03), r8(0x02), iss, oss,
	    gcap & 1 ? ", 64-bit" : "", 'A' + pci_r8(bdf, 0x3d) - 1);
	if (!oss)
		fail("hda: no output stream");
	if (irqmode == MODE_INTX) {
		struct intx_route r;
		if (!pci_intx_route(bdf, &r))
			fail("hda: no INTx route");
		vec = irq_alloc_vector();
		/* The handler writes INTCTL = 0: the level drops until ring 3
		 * has looked and writes it back. */
		irq_set_ack(vec, IRQ_ACK_MMIO32W, bar + INTCTL, 0);
		ioapic_route(r.pin, vec, r.level, r.active_low);
		say("hda: INT%c -> I/O APIC pin %d (%s), vector %x, from the %s\n", 'A' + pci_r8(bdf, 0x3d) - 1, r.pin,
		    r.level ? "level" : "edge", vec, r.source);
		irq_seen = irq_count[vec];
	}
	controller_up();
	enumerate();
	path_on();
	dpib = alloc(8 * 16, 128);
	w32(DPUBASE, 0);
	w32(DPLBASE, (uint32_t)(uintptr_t)dpib | 1);

	if (is_bench) {
		bench(prm & 0xff ? prm & 0xff : 2);
		return EXIT_OK;
	}

	uint32_t total = prm & 0xffffff;
	if (!total)
		total = 16384;
	total &= ~15u;
	const unsigned n = 4;
	uint32_t len = total / n;
	uint8_t *buf = alloc(total, 128);
	for (uint32_t i = 0; i < total; i++)
		buf[i] = (uint8_t)(i * 31 + (i >> 8) * 7 + 1);
	uint32_t crc = crc32(0, buf, total);
	struct bdle *bdl = alloc(n * sizeof(struct bdle), 128);
	int s = sd(iss);
	stream_setup(s, bdl, buf, n, len);
	printf("hda: output stream %u: %u BDL entries of %u bytes with IOC, cyclic buffer %u bytes\n", iss, n, len, total);
	stream_run(s, 1);
	if (!(r8(s + SD_CTL) & RUN))
		fail("hda: the stream does not run (SDSTS %x)", r8(s + SD_STS));
	/* Two laps: a device that plays behind its DMA (QEMU's audio
	 * backends) has surely played the first when the second ends. */
	const unsigned laps = 2;
	uint32_t pos[4];
	for (unsigned i = 0; i < n * laps; i++) {
		wait_ioc(s, iss);
		if (i < n)
			pos[i] = dpib[2 * iss];
	}
	stream_run(s, 0);
	uint32_t lpib = r32(s + SD_LPIB);
	printf("hda: played %u bytes, crc %08x, %u IOC in %u laps\n", total, crc, iocs, laps);
	say("hda: position buffer at the IOCs: %x %x %x %x, LPIB after stop %x\n", pos[0], pos[1], pos[2], pos[3], lpib);
	if (prm & 0x40000000u)
		hostile();
	if (prm & 0x20000000u)
		record(total);
	if (vec >= 0)
		printf("hda: interrupts: intx vector %x %u (%u responses, %u IOC)\n", vec, irq_count[vec], responses, iocs);
	if (mode & MODE_HOLD)
		irq_hold_com1();
	return EXIT_OK;
}
