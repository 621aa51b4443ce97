// The host's offset from UTC at a given time, from libc's localtime_r(3),
// as bhyve's rtc_time() gets local time. Not Date's getTimezoneOffset():
// V8 asks ICU, which maps ~0.35 MiB of its time zone data and code into the
// process at every start for this one number (issue 15). glibc reads TZ,
// else /etc/localtime, on the first call (the RTC's, before the sandbox);
// Node calls tzset(3) when process.env.TZ is assigned.

import { libcFunc } from './libc.js';

// (typed arrays passed as void * are handed to C in place)
const localtimeR = libcFunc('void *localtime_r(void *timep, void *result)');

/** sizeof(struct tm) and offsetof(struct tm, tm_gmtoff), x86-64 glibc. */
const TM_SIZE = 56;
const TM_GMTOFF = 40;

/** Seconds east of UTC of local time at `epochSeconds`, or undefined when
 * libc cannot tell (localtime_r failed). */
export function utcOffsetSeconds(epochSeconds: number): number | undefined {
  const tm = new Uint8Array(TM_SIZE);
  if (localtimeR(BigInt64Array.of(BigInt(Math.floor(epochSeconds))), tm) === null) return undefined;
  return Number(new DataView(tm.buffer).getBigInt64(TM_GMTOFF, true));
}
