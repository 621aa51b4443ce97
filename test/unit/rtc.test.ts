import { describe, expect, it } from 'vitest';
import { fake, FakeIrq } from '../support/fake-device.js';
import { Rtc } from '../../src/devices/lpc/rtc.js';
import { computeLayout } from '../../src/sys/memory-map.js';



const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
// Thursday 2024-02-29 13:45:07 UTC
const T0 = Date.UTC(2024, 1, 29, 13, 45, 7);

function setup(layout = computeLayout(256 * MiB), settings: Record<string, string> = { 'rtc.use_localtime': 'false' }) {
  const f = fake(settings);
  let up = 1_000_000_000n;
  const rtc = new Rtc(f.ctx, layout, { now: () => T0, uptime: () => up });
  const read = (reg: number): number => { f.outp(0x70, reg); return f.inp(0x71); };
  const write = (reg: number, v: number): void => { f.outp(0x70, reg); f.outp(0x71, v); };
  const advance = (ns: bigint): void => { up += ns; };
  return { f, rtc, read, write, advance };
}

describe('RTC memory size registers (bhyve rtc_init)', () => {
  it('256 MiB: all low memory', () => {
    const { read } = setup(computeLayout(256 * MiB));
    expect([read(0x34), read(0x35)]).toEqual([0x00, 0x0f]); // (256M-16M)/64K = 0x0f00
    expect([read(0x5b), read(0x5c), read(0x5d)]).toEqual([0, 0, 0]);
    expect([read(0x30), read(0x31)]).toEqual([0xff, 0xff]); // KiB above 1 MiB, capped
  });

  it('4 GiB: 3 GiB low, 1 GiB high', () => {
    const layout = computeLayout(4 * GiB);
    expect(layout).toEqual({ lowmem: 3 * GiB, highmem: 1 * GiB });
    const { read } = setup(layout);
    expect([read(0x34), read(0x35)]).toEqual([0x00, 0xbf]); // (3G-16M)/64K = 0xbf00
    expect([read(0x5b), read(0x5c), read(0x5d)]).toEqual([0x00, 0x40, 0x00]); // 1G/64K = 0x4000
  });

  it('8 GiB: 3 GiB low, 5 GiB high', () => {
    const { read } = setup(computeLayout(8 * GiB));
    expect([read(0x34), read(0x35)]).toEqual([0x00, 0xbf]);
    expect([read(0x5b), read(0x5c), read(0x5d)]).toEqual([0x00, 0x40, 0x01]); // 5G/64K = 0x14000
  });

  it('small guests: nothing above 16 MiB', () => {
    const { read } = setup(computeLayout(8 * MiB));
    expect([read(0x34), read(0x35)]).toEqual([0, 0]);
    expect([read(0x30), read(0x31)]).toEqual([0x00, 0x1c]); // 7168 KiB
  });
});

describe('RTC time registers', () => {
  it('reads the host time in BCD, 24-hour, UTC with use_localtime=false', () => {
    const { read } = setup();
    expect(read(0x00)).toBe(0x07);
    expect(read(0x02)).toBe(0x45);
    expect(read(0x04)).toBe(0x13);
    expect(read(0x06)).toBe(0x05); // Thursday: day of week 5 (Sunday = 1)
    expect(read(0x07)).toBe(0x29);
    expect(read(0x08)).toBe(0x02);
    expect(read(0x09)).toBe(0x24);
    expect(read(0x32)).toBe(0x20);
  });

  it('resets register A to 0x26 with UIP clear, VRT set, 24-hour BCD mode and no interrupt flags', () => {
    const { read, write } = setup();
    expect(read(0x0a)).toBe(0x26);
    expect(read(0x0b)).toBe(0x02);
    expect(read(0x0c)).toBe(0x00);
    expect(read(0x0d)).toBe(0x80);
    write(0x0a, 0xa6); // UIP is not writable
    expect(read(0x0a)).toBe(0x26);
    write(0x0d, 0x00); // D is read-only
    expect(read(0x0d)).toBe(0x80);
  });

  it('sets UIP for the 244 us before each update, not while halted or in divider reset', () => {
    const { read, write, advance } = setup();
    const hold = 244_140n; // 8 / 32768 s
    advance(1_000_000_000n - hold - 1n);
    expect(read(0x0a)).toBe(0x26);
    expect(read(0x00)).toBe(0x07);
    advance(1n);
    expect(read(0x0a)).toBe(0xa6);
    expect(read(0x00)).toBe(0x07); // the update has not happened yet
    advance(hold - 1n);
    expect(read(0x0a)).toBe(0xa6);
    advance(1n); // the second boundary: update done, UIP falls
    expect(read(0x0a)).toBe(0x26);
    expect(read(0x00)).toBe(0x08);
    advance(1_000_000_000n - 1000n);
    expect(read(0x0a)).toBe(0xa6);
    write(0x0b, 0x82); // SET: no updates, no UIP
    expect(read(0x0a)).toBe(0x26);
    write(0x0b, 0x02);
    write(0x0a, 0x70); // divider in reset
    expect(read(0x0a)).toBe(0x70);
  });

  it('honours binary mode and 12-hour mode of register B', () => {
    const { read, write } = setup();
    write(0x0b, 0x06); // binary, 24h
    expect(read(0x04)).toBe(13);
    expect(read(0x00)).toBe(7);
    expect(read(0x09)).toBe(24);
    write(0x0b, 0x00); // BCD, 12h
    expect(read(0x04)).toBe(0x81); // 1 PM
    write(0x0b, 0x04); // binary, 12h
    expect(read(0x04)).toBe(0x81);
  });

  it('advances with the monotonic clock', () => {
    const { read, advance } = setup();
    advance(999_000_000n);
    expect(read(0x00)).toBe(0x07);
    advance(2_000_000n);
    expect(read(0x00)).toBe(0x08);
    advance(60_000_000_000n);
    expect(read(0x00)).toBe(0x08);
    expect(read(0x02)).toBe(0x46);
  });

  it('lets the guest set the time with register B SET', () => {
    const { rtc, read, write, advance } = setup();
    write(0x0b, 0x82); // SET, 24h BCD
    write(0x09, 0x99);
    write(0x08, 0x12);
    write(0x07, 0x31);
    write(0x04, 0x23);
    write(0x02, 0x59);
    write(0x00, 0x58);
    write(0x32, 0x19);
    advance(5_000_000_000n); // frozen while SET
    expect(read(0x00)).toBe(0x58);
    write(0x0b, 0x02);
    expect(rtc.getTime()).toBe(Date.UTC(1999, 11, 31, 23, 59, 58) / 1000);
    advance(3_000_000_000n);
    expect(read(0x00)).toBe(0x01);
    expect(read(0x09)).toBe(0x00);
    expect(read(0x32)).toBe(0x20);
  });

  it('stops the clock on invalid fields', () => {
    const { rtc, write } = setup();
    write(0x0b, 0x82);
    write(0x07, 0x31);
    write(0x08, 0x02); // 31 February
    write(0x0b, 0x02);
    expect(rtc.getTime()).toBe(-1);
  });

  // In a zone away from UTC (the host's may well be UTC, where local time
  // and UTC cannot be told apart): 13:45:07 UTC on 29 February 2024.
  it.each([
    ['Asia/Kolkata', 5 * 3600 + 30 * 60, [0x19, 0x15, 0x29]], // 19:15:07 the same day
    ['America/St_Johns', -(3 * 3600 + 30 * 60), [0x10, 0x15, 0x29]], // 10:15:07, UTC-3:30 in winter
    ['Pacific/Kiritimati', 14 * 3600, [0x03, 0x45, 0x01]], // 03:45:07 on 1 March
  ] as const)('uses local time by default (rtc.use_localtime=true): %s', (zone, offset, [hh, mm, day]) => {
    const saved = process.env.TZ;
    process.env.TZ = zone;
    try {
      const { rtc, read } = setup(computeLayout(256 * MiB), {});
      expect(rtc.getTime()).toBe(T0 / 1000 + offset);
      expect([read(0x04), read(0x02), read(0x00), read(0x07)]).toEqual([hh, mm, 0x07, day]);
    } finally {
      if (saved === undefined) delete process.env.TZ; else process.env.TZ = saved;
    }
  });
});

describe('RTC NVRAM and index port', () => {
  it('stores NVRAM bytes, masks the NMI bit of the index, reads the index as 0xff', () => {
    const { f, rtc, read, write } = setup();
    write(0x40, 0x5a);
    expect(read(0x40)).toBe(0x5a);
    f.outp(0x70, 0x80 | 0x40);
    expect(f.inp(0x71)).toBe(0x5a);
    expect(f.inp(0x70)).toBe(0xff);
    rtc.nvramWrite(0x7f, 0x11);
    expect(read(0x7f)).toBe(0x11);
    expect(() => rtc.nvramWrite(0x00, 1)).toThrow(RangeError);
  });
});
