// Memory sizes as bhyve(8) -m and bhyveload(8) -m take them, following
// libvmmapi's vm_parse_memsize(): a plain number below 1 MiB is a count of
// MiB (so "-m 512" is 512 MiB), a larger plain number is bytes; otherwise
// expand_number(3): a number with a K, M, G, T, P or E suffix (any case,
// optionally followed by B), in powers of 1024. Numbers may be decimal, 0x
// hex or 0-prefixed octal, as strtoul(3) with base 0 reads them.

import { UsageError } from './errors.js';

const MB = 1024n * 1024n;
const SHIFTS: Record<string, bigint> = { k: 10n, m: 20n, g: 30n, t: 40n, p: 50n, e: 60n };

/** Reads a leading unsigned integer as strtoul(s, &end, 0) does; null when none. */
function strtoul0(s: string): { value: bigint; rest: string } | null {
  const m = /^[+]?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)/.exec(s);
  if (!m) return null;
  const digits = m[1];
  let value: bigint;
  if (/^0[xX]/.test(digits)) value = BigInt(digits);
  else if (digits.length > 1 && digits[0] === '0') value = BigInt('0o' + digits.slice(1));
  else value = BigInt(digits);
  return { value, rest: s.slice(m[0].length) };
}

/**
 * Parses a memory size into bytes. Throws a UsageError (exit status 64, as
 * bhyve's errx(EX_USAGE, "invalid memsize '%s'")) for anything else.
 */
export function parseMemorySize(s: string): number {
  const bad = (): UsageError => new UsageError(
    `invalid memsize '${s}' (use a number with an optional K, M, G or T suffix, e.g. 512M or 2G)`);
  const num = strtoul0(s);
  if (!num) throw bad();
  let bytes: bigint;
  if (num.rest === '') {
    bytes = num.value < MB ? num.value * MB : num.value;
  } else {
    const unit = num.rest[0].toLowerCase();
    const after = num.rest.slice(1);
    if (unit === 'b' && after === '') {
      bytes = num.value;
    } else {
      const shift = SHIFTS[unit];
      if (shift === undefined || !(after === '' || after === 'b' || after === 'B')) throw bad();
      bytes = num.value << shift;
    }
  }
  if (bytes === 0n || bytes > BigInt(Number.MAX_SAFE_INTEGER)) throw bad();
  return Number(bytes);
}
