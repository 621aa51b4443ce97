// The checksum helpers every firmware table uses (ACPI, SMBIOS, MP table):
// byteSum reads four bytes a round (src/firmware/bytes.ts says why), so
// check it against the plain sum at every length and alignment, and that
// checksumFor leaves out the byte it is for only when it lies in the range.
import { describe, expect, it } from 'vitest';

import { byteSum, checksumFor, fixChecksum } from '../../src/firmware/bytes.js';

function plainSum(b: Uint8Array, start: number, length: number): number {
  let s = 0;
  for (let i = start; i < start + length; i++) s += b[i];
  return s & 0xff;
}

describe('firmware byte sums', () => {
  const bytes = Uint8Array.from({ length: 300 }, (_, i) => (i * 151 + 7) & 0xff);

  it('byteSum is the sum modulo 256 for every start and length', () => {
    for (let start = 0; start < 9; start++) {
      for (let length = 0; length <= bytes.length - start; length += length < 20 ? 1 : 37) {
        expect(byteSum(bytes, start, length), `${start}+${length}`).toBe(plainSum(bytes, start, length));
      }
    }
    expect(byteSum(bytes)).toBe(plainSum(bytes, 0, bytes.length));
  });

  it('fixChecksum makes the range sum to zero wherever the checksum byte lies in it', () => {
    for (const [at, start, length] of [[9, 0, 36], [0, 0, 17], [20, 3, 18], [299, 250, 50]]) {
      const b = bytes.slice();
      fixChecksum(b, at, start, length);
      expect(byteSum(b, start, length), `${at} in ${start}+${length}`).toBe(0);
    }
  });

  it('checksumFor counts every byte of the range when the checksum byte lies outside it', () => {
    expect(checksumFor(bytes, 10, 20, 5)).toBe((0x100 - plainSum(bytes, 10, 20)) & 0xff);
    expect(checksumFor(bytes, 10, 20, 30)).toBe((0x100 - plainSum(bytes, 10, 20)) & 0xff);
    expect(checksumFor(bytes, 10, 20, 29)).toBe((0x100 - ((plainSum(bytes, 10, 20) - bytes[29]) & 0xff)) & 0xff);
  });
});
