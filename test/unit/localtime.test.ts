// The host's UTC offset for the RTC (src/sys/localtime.ts) comes from
// libc's localtime_r, as bhyve's rtc_time(), not from V8's ICU: a POSIX TZ
// string that ICU does not read (it gives UTC) tells the two apart.
import { afterEach, describe, expect, it } from 'vitest';

import { utcOffsetSeconds } from '../../src/sys/localtime.js';

const saved = process.env.TZ;
afterEach(() => {
  if (saved === undefined) delete process.env.TZ; else process.env.TZ = saved;
});

describe('utcOffsetSeconds', () => {
  it('follows a POSIX TZ string through libc (ICU would say UTC)', () => {
    process.env.TZ = 'XYZ-3:15';
    expect(new Date(0).getTimezoneOffset()).toBe(0); // what ICU makes of it
    expect(utcOffsetSeconds(0)).toBe(3 * 3600 + 15 * 60);
  });

  it('reads zone files, daylight saving time included', () => {
    process.env.TZ = 'Europe/Paris';
    expect(utcOffsetSeconds(Date.UTC(2024, 0, 15) / 1000)).toBe(3600);
    expect(utcOffsetSeconds(Date.UTC(2024, 6, 15) / 1000)).toBe(7200);
    process.env.TZ = 'UTC';
    expect(utcOffsetSeconds(Date.UTC(2024, 6, 15) / 1000)).toBe(0);
  });
});
