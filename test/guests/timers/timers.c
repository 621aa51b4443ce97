/*
 * timers.rom: the platform's timers deliver interrupts, at the rate they
 * were programmed for. Runs on the virtio ROMs' runtime (ring 3 of long
 * mode, ../virtio/start.S, vlib.c, irq.c): every wait halts until an
 * interrupt, and the ring-0 handler (irq.S) stamps each one with the TSC.
 *
 * The TSC is calibrated against the RTC's seconds (the host clock, 1-2 s),
 * so no timer is measured with itself. Then, each routed as the firmware
 * says (MP table I/O interrupt entries for ISA IRQs, else the PC wiring;
 * HPET timers to an I/O APIC input their route capability allows):
 *   hpet      the counter's rate against the TSC; a one-shot timer (one
 *             interrupt, not early); a periodic timer (mean period); FSB
 *             (MSI) delivery when the timer offers it
 *   rtc       periodic interrupt at 64 Hz (the handler reads register C,
 *             which re-arms it); the alarm two seconds ahead
 *   pit       channel 0 as a 100 Hz rate generator on IRQ 0; a mode-0
 *             one-shot (exactly one interrupt)
 *   lapic     the local APIC timer's rate against the TSC, one-shot and
 *             periodic
 * A periodic source's first interrupt is dropped (it may be stale), then
 * 20 intervals are measured from the handler's TSC stamps: the median or
 * the mean must be within 15% of the programmed period (see
 * measure_periodic) and the mean not shorter than 90% of it; one-shots must
 * not come early and must come within 0.5 s. Prints one line per check and "timers: OK" (exit 0x10, status 33);
 * "FAIL: ..." and status 3 otherwise, or 7 when an interrupt never came.
 */
#include "vlib.h"
#include "irq.h"

#define HPET_BASE	0xfed00000ul
#define HPET_CAP	0x000
#define HPET_CFG	0x010
#define HPET_ISR	0x020
#define HPET_COUNTER	0x0f0
#define HPET_TCFG(n)	(0x100 + 0x20 * (n))
#define HPET_TCMP(n)	(0x108 + 0x20 * (n))
#define HPET_TFSB(n)	(0x110 + 0x20 * (n))
#define TCFG_LEVEL	(1u << 1)
#define TCFG_ENB	(1u << 2)
#define TCFG_PERIODIC	(1u << 3)
#define TCAP_PERIODIC	(1u << 4)
#define TCFG_VAL_SET	(1u << 6)
#define TCFG_FSB	(1u << 14)
#define TCAP_FSB	(1u << 15)

#define PERIODS		20

static uint64_t tsc_hz;

static uint64_t us(uint64_t cycles) { return cycles * 1000000 / tsc_hz; }
static uint64_t cycles_of_us(uint64_t u) { return u * tsc_hz / 1000000; }

static uint64_t hpet_r64(unsigned reg) { return *(volatile uint64_t *)(HPET_BASE + reg); }
static void hpet_w64(unsigned reg, uint64_t v) { *(volatile uint64_t *)(HPET_BASE + reg) = v; }

/* Waits for `n` interrupts on vec (counting from 0), or fails. */
static void wait_count(int vec, uint32_t n, const char *what)
{
	uint64_t t0 = rdtsc(), limit = cycles_of_us(10000000);
	while (irq_count[vec] < n) {
		if (rdtsc() - t0 > limit) {
			printf("FAIL: %s: %u of %u interrupts after 10 s\n", what, irq_count[vec], n);
			exit_(EXIT_TIMEOUT);
		}
		irq_halt();
	}
}

/* Drops the first interrupt of a periodic source, then stamps the next
 * PERIODS + 1 (the handler's TSC of each, read after every wake-up) and
 * checks the median interval against `expect_us`: a loaded host delays
 * some ticks (and a late periodic timer drops the periods it missed, as on
 * hardware), which moves the mean but not the median; KVM's PIT makes up
 * for late ticks in bursts (re-injection), which moves the median but not
 * the mean. One of the two must be within 15%, and the mean not faster
 * than 90%. Returns the median in us; *mean_us gets the mean. */
static uint64_t measure_periodic(int vec, uint64_t expect_us, const char *what, uint64_t *mean_us)
{
	static uint64_t stamp[PERIODS + 2];
	uint64_t iv[PERIODS];
	int n = 0;
	wait_count(vec, 1, what);
	irq_reset(vec);
	uint64_t t0 = rdtsc(), limit = cycles_of_us(10000000);
	uint32_t seen = 0;
	while (seen < PERIODS + 1) {
		if (rdtsc() - t0 > limit) {
			printf("FAIL: %s: %u of %u interrupts after 10 s\n", what, seen, PERIODS + 1);
			exit_(EXIT_TIMEOUT);
		}
		irq_halt();
		uint32_t c = irq_count[vec];
		if (c == seen)
			continue;
		stamp[c < PERIODS + 1 ? c : PERIODS + 1] = irq_last_tsc[vec];
		if (c == seen + 1 && seen > 0 && n < PERIODS)
			iv[n++] = stamp[c] - stamp[seen];
		seen = c;
	}
	if (n < PERIODS / 2)
		fail("%s: only %d intervals seen one interrupt at a time", what, n);
	for (int i = 1; i < n; i++)			/* insertion sort */
		for (int j = i; j > 0 && iv[j - 1] > iv[j]; j--) {
			uint64_t t = iv[j];
			iv[j] = iv[j - 1];
			iv[j - 1] = t;
		}
	uint64_t median = us(iv[n / 2]);
	*mean_us = us(irq_last_tsc[vec] - irq_first_tsc[vec]) / (irq_count[vec] - 1);
	int median_ok = median * 100 >= expect_us * 85 && median * 100 <= expect_us * 115;
	int mean_ok = *mean_us * 100 >= expect_us * 85 && *mean_us * 100 <= expect_us * 115;
	if (!median_ok && !mean_ok)
		fail("%s: median period %lu us, mean %lu us, programmed %lu us", what, median, *mean_us, expect_us);
	/* A timer that fires twice per period halves the median. The mean may
	 * legitimately run fast: KVM's in-kernel PIT reinjects ticks the guest
	 * missed while its vCPU was descheduled (as QEMU's lost_tick_policy=delay
	 * does), so on a loaded host a backlog from before the window lands in it. */
	if (median * 100 < expect_us * 90)
		fail("%s: median period %lu us, programmed %lu us: too fast", what, median, expect_us);
	return median;
}

/* A one-shot armed at TSC t0 for `delay_us`: one interrupt, not early, and
 * no second one within another 2 x delay_us. Returns the latency in us. */
static uint64_t check_one_shot(int vec, uint64_t t0, uint64_t delay_us, const char *what)
{
	wait_count(vec, 1, what);
	uint64_t after = us(irq_first_tsc[vec] - t0);
	if (after * 100 < delay_us * 95)
		fail("%s: interrupt after %lu us, armed for %lu us", what, after, delay_us);
	if (after > delay_us + 500000)
		fail("%s: interrupt only after %lu us, armed for %lu us", what, after, delay_us);
	irq_sleep(cycles_of_us(2 * delay_us));
	if (irq_count[vec] != 1)
		fail("%s: %u interrupts from a one-shot", what, irq_count[vec]);
	return after;
}

static void hpet(void)
{
	uint64_t cap = hpet_r64(HPET_CAP);
	uint32_t period_fs = (uint32_t)(cap >> 32);
	int ntimers = (int)((cap >> 8) & 0x1f) + 1;
	if (!period_fs || period_fs > 100000000)
		fail("hpet: capabilities %lx", cap);
	uint64_t hz = 1000000000000000ull / period_fs;
	hpet_w64(HPET_CFG, 0);
	hpet_w64(HPET_COUNTER, 0);
	hpet_w64(HPET_CFG, 1);					/* counter on, no legacy routing */
	uint64_t t0 = rdtsc(), c0 = hpet_r64(HPET_COUNTER);
	irq_sleep(cycles_of_us(200000));
	uint64_t t1 = rdtsc(), c1 = hpet_r64(HPET_COUNTER);
	uint64_t measured = (c1 - c0) * tsc_hz / (t1 - t0);
	printf("hpet: %d timers, counter %lu Hz (period %u fs), measured %lu Hz\n", ntimers, hz, period_fs, measured);
	if (measured * 100 < hz * 95 || measured * 100 > hz * 105)
		fail("hpet: the counter runs at %lu Hz, its period says %lu Hz", measured, hz);

	/* Timer n's interrupt: the highest I/O APIC input of 16 and up its
	 * route capability allows (bhyve: 20-23); where there is none (QEMU
	 * allows input 2 only, which KVM's GSI routing leaves unconnected), the
	 * legacy replacement route: timer 0 on IRQ 0, timer 1 on IRQ 8. */
	int pins = ioapic_pins(), route[2], legacy = 0;
	for (int n = 0; n < 2; n++) {
		uint32_t allowed = (uint32_t)(hpet_r64(HPET_TCFG(n)) >> 32);
		route[n] = -1;
		for (int p = pins - 1; p >= 16; p--)
			if ((allowed & (1u << p)) && (n == 0 || p != route[0])) {
				route[n] = p;
				break;
			}
		if (route[n] < 0)
			legacy = 1;
	}
	if (legacy && !(cap & (1u << 15)))
		fail("hpet: no I/O APIC input above 15 and no legacy replacement route");
	const char *how = legacy ? "legacy replacement" : "I/O APIC route";
	int pin[2];
	for (int n = 0; n < 2; n++) {
		struct intx_route r;
		if (legacy) {
			if (!isa_irq_route(n == 0 ? 0 : 8, &r))
				fail("hpet: no route for IRQ %d", n == 0 ? 0 : 8);
			pin[n] = r.pin;
		} else {
			pin[n] = route[n];
		}
	}
	uint64_t rt0 = legacy ? 0 : (uint64_t)route[0] << 9, rt1 = legacy ? 0 : (uint64_t)route[1] << 9;
	if (legacy)
		hpet_w64(HPET_CFG, 3);				/* counter on, legacy replacement */

	/* one-shot, edge, on timer 1 */
	int vec = irq_alloc_vector();
	ioapic_route(pin[1], vec, 0, 0);
	uint64_t delay = 50000;
	t0 = rdtsc();
	hpet_w64(HPET_TCMP(1), hpet_r64(HPET_COUNTER) + hz * delay / 1000000);
	hpet_w64(HPET_TCFG(1), TCFG_ENB | rt1);
	uint64_t after = check_one_shot(vec, t0, delay, "hpet one-shot");
	hpet_w64(HPET_TCFG(1), 0);
	ioapic_mask(pin[1], 1);
	printf("hpet: one-shot timer 1 on pin %d (%s): 1 interrupt after %lu us (armed for %lu us)\n", pin[1], how, after, delay);

	/* periodic, edge, on timer 0 */
	if (!(hpet_r64(HPET_TCFG(0)) & TCAP_PERIODIC))
		fail("hpet: timer 0 is not periodic-capable");
	vec = irq_alloc_vector();
	ioapic_route(pin[0], vec, 0, 0);
	uint64_t period = 10000, ticks = hz * period / 1000000;
	hpet_w64(HPET_TCFG(0), TCFG_ENB | TCFG_PERIODIC | TCFG_VAL_SET | rt0);
	hpet_w64(HPET_TCMP(0), hpet_r64(HPET_COUNTER) + ticks);
	hpet_w64(HPET_TCMP(0), ticks);
	uint64_t mean, median = measure_periodic(vec, period, "hpet periodic", &mean);
	hpet_w64(HPET_TCFG(0), 0);
	ioapic_mask(pin[0], 1);
	printf("hpet: periodic timer 0 on pin %d (%s): %u interrupts, median period %lu us, mean %lu us (programmed %lu us)\n",
	    pin[0], how, PERIODS, median, mean, period);
	hpet_w64(HPET_CFG, 1);					/* legacy replacement off */

	/* FSB (MSI) delivery, one-shot, on timer 2 */
	if (ntimers > 2 && (hpet_r64(HPET_TCFG(2)) & TCAP_FSB)) {
		vec = irq_alloc_vector();
		hpet_w64(HPET_TFSB(2), (uint64_t)msi_address() << 32 | msi_data(vec));
		t0 = rdtsc();
		hpet_w64(HPET_TCMP(2), hpet_r64(HPET_COUNTER) + hz * delay / 1000000);
		hpet_w64(HPET_TCFG(2), TCFG_ENB | TCFG_FSB);
		after = check_one_shot(vec, t0, delay, "hpet FSB one-shot");
		hpet_w64(HPET_TCFG(2), 0);
		printf("hpet: FSB (MSI) one-shot timer 2: 1 interrupt after %lu us (armed for %lu us)\n", after, delay);
	} else {
		printf("hpet: timer 2 offers no FSB delivery\n");
	}
	hpet_w64(HPET_CFG, 0);
}

static uint8_t cmos(int reg)
{
	outb(0x70, (uint8_t)reg);
	return inb(0x71);
}

static void cmos_w(int reg, uint8_t v)
{
	outb(0x70, (uint8_t)reg);
	outb(0x71, v);
}

static void rtc(void)
{
	struct intx_route r;
	if (!isa_irq_route(8, &r))
		fail("rtc: no route for IRQ 8");
	int vec = irq_alloc_vector();
	/* The handler reads register C: without that the RTC raises no more. */
	irq_set_ack(vec, IRQ_ACK_PORT, 0x0c | 0x70ull << 16 | 0x71ull << 32, 0);
	uint8_t b = cmos(0x0b);
	cmos(0x0c);
	ioapic_route(r.pin, vec, r.level, r.active_low);

	cmos_w(0x0a, 0x20 | 10);				/* 32.768 kHz base, rate 10: 64 Hz */
	cmos_w(0x0b, (b & ~0x70) | 0x40);			/* PIE only */
	uint64_t mean, median = measure_periodic(vec, 15625, "rtc periodic", &mean);
	cmos_w(0x0b, b & ~0x70);
	uint32_t cbits = irq_ack_bits[vec];
	if ((cbits & 0xc0) != 0xc0)
		fail("rtc: register C read %x in the periodic interrupt, not IRQF|PF", cbits);
	printf("rtc: periodic 64 Hz on pin %d (%s): %u interrupts, median period %lu us, mean %lu us (expected 15625 us), register C %x\n",
	    r.pin, r.source, PERIODS, median, mean, cbits);

	/* Alarm two seconds ahead; minutes and hours "don't care" (0xc0). */
	irq_sleep(cycles_of_us(100000));
	irq_reset(vec);
	cmos(0x0c);
	while (cmos(0x0a) & 0x80)				/* update in progress */
		;
	int bcd = !(b & 0x04);
	uint8_t s = cmos(0x00);
	int sec = bcd ? (s >> 4) * 10 + (s & 15) : s;
	int at = (sec + 2) % 60;
	cmos_w(0x01, (uint8_t)(bcd ? (at / 10) << 4 | at % 10 : at));
	cmos_w(0x03, 0xc0);
	cmos_w(0x05, 0xc0);
	uint64_t t0 = rdtsc();
	cmos_w(0x0b, (b & ~0x70) | 0x20);			/* AIE only */
	wait_count(vec, 1, "rtc alarm");
	uint64_t after = us(irq_first_tsc[vec] - t0);
	cmos_w(0x0b, b & ~0x70);
	ioapic_mask(r.pin, 1);
	cbits = irq_ack_bits[vec];
	if ((cbits & 0xa0) != 0xa0)
		fail("rtc: register C read %x in the alarm interrupt, not IRQF|AF", cbits);
	if (after < 900000 || after > 2600000)
		fail("rtc: alarm two seconds ahead came after %lu us", after);
	printf("rtc: alarm at second %d: interrupt after %lu ms, register C %x\n", at, after / 1000, cbits);
}

static void pit(void)
{
	struct intx_route r;
	if (!isa_irq_route(0, &r))
		fail("pit: no route for IRQ 0");
	int vec = irq_alloc_vector();
	outb(0x43, 0x34);					/* channel 0, lo/hi, mode 2 */
	outb(0x40, 11932 & 0xff);				/* 1193182 Hz / 11932: 100 Hz */
	outb(0x40, 11932 >> 8);
	ioapic_route(r.pin, vec, r.level, r.active_low);
	uint64_t mean, median = measure_periodic(vec, 10000, "pit rate generator", &mean);
	printf("pit: channel 0 rate generator 100 Hz on IRQ 0 -> pin %d (%s): %u interrupts, median period %lu us, mean %lu us (expected 10000 us)\n",
	    r.pin, r.source, PERIODS, median, mean);
	/* mode 0: one interrupt when the count runs out (20 ms). First stop
	 * the rate generator (a control word alone does not: the new mode
	 * starts with the next count) and let its last ticks drain: KVM's PIT
	 * re-injects ticks the guest was late to acknowledge. */
	outb(0x43, 0x30);
	outb(0x40, 1);
	outb(0x40, 0);
	for (int i = 0; i < 50; i++) {
		uint32_t c = irq_count[vec];
		irq_sleep(cycles_of_us(30000));
		if (irq_count[vec] == c)
			break;
	}
	irq_reset(vec);
	outb(0x43, 0x30);
	uint64_t t0 = rdtsc();
	outb(0x40, 23864 & 0xff);
	outb(0x40, 23864 >> 8);
	uint64_t after = check_one_shot(vec, t0, 20000, "pit mode 0");
	ioapic_mask(r.pin, 1);
	printf("pit: channel 0 mode 0: 1 interrupt after %lu us (armed for 20000 us)\n", after);
}

static void lapic_timer(void)
{
	/* The LAPIC timer is the runtime's watchdog tick: while it is tested,
	 * the RTC's periodic interrupt (16 Hz) wakes the waits instead. */
	struct intx_route r;
	isa_irq_route(8, &r);
	int wd = irq_alloc_vector();
	irq_set_ack(wd, IRQ_ACK_PORT, 0x0c | 0x70ull << 16 | 0x71ull << 32, 0);
	ioapic_route(r.pin, wd, r.level, r.active_low);
	uint8_t b = cmos(0x0b);
	cmos_w(0x0a, 0x20 | 12);
	cmos_w(0x0b, (b & ~0x70) | 0x40);
	cmos(0x0c);
	irq_tick(0);
	lapic_write(LAPIC_TDCR, 0x3);				/* divide by 16 */
	lapic_write(LAPIC_LVT_TIMER, 1u << 16);		/* masked, one-shot */
	lapic_write(LAPIC_TMICT, 0xffffffffu);
	uint64_t t0 = rdtsc();
	uint32_t c0 = lapic_read(LAPIC_TMCCT);
	while (rdtsc() - t0 < cycles_of_us(50000))
		;
	uint32_t c1 = lapic_read(LAPIC_TMCCT);
	uint64_t t1 = rdtsc();
	uint64_t hz = (uint64_t)(c0 - c1) * tsc_hz / (t1 - t0);
	lapic_write(LAPIC_TMICT, 0);
	printf("lapic: timer counts at %lu Hz (divide by 16)\n", hz);
	if (!hz)
		fail("lapic: the timer does not count");
	int vec = irq_alloc_vector();
	lapic_write(LAPIC_LVT_TIMER, (uint32_t)vec);		/* one-shot */
	t0 = rdtsc();
	lapic_write(LAPIC_TMICT, (uint32_t)(hz * 20000 / 1000000));
	uint64_t after = check_one_shot(vec, t0, 20000, "lapic one-shot");
	printf("lapic: one-shot: 1 interrupt after %lu us (armed for 20000 us)\n", after);
	vec = irq_alloc_vector();
	lapic_write(LAPIC_LVT_TIMER, (1u << 17) | (uint32_t)vec);
	lapic_write(LAPIC_TMICT, (uint32_t)(hz * 10000 / 1000000));
	uint64_t mean, median = measure_periodic(vec, 10000, "lapic periodic", &mean);
	lapic_write(LAPIC_TMICT, 0);
	printf("lapic: periodic: %u interrupts, median period %lu us, mean %lu us (programmed 10000 us)\n", PERIODS, median, mean);
	irq_tick(1);
	cmos_w(0x0b, b & ~0x70);
	ioapic_mask(r.pin, 1);
}

int guest_main(uint32_t param)
{
	(void)param;
	printf("timers test\n");
	irq_init();
	tsc_hz = tsc_hz_from_rtc();
	poll_timeout_cycles = tsc_hz * 10;
	printf("timers: tsc %lu Hz (against the RTC)\n", tsc_hz);
	mptable_present();
	/* The PIT runs from reset (channel 0, 18.2 Hz) and QEMU's HPET may only
	 * use input 2, IRQ 0's: stop it (mode 0 runs out once, then stays). */
	outb(0x43, 0x30);
	outb(0x40, 1);
	outb(0x40, 0);
	hpet();
	rtc();
	pit();
	lapic_timer();
	printf("timers: OK\n");
	return EXIT_OK;
}
