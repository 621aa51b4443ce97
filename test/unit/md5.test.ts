// firmware/md5.ts against RFC 1321's test suite and node:crypto, across the
// padding boundaries (55, 56, 63, 64 bytes) and multi-block inputs.
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { md5 } from '../../src/firmware/md5.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const ascii = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));

describe('md5', () => {
  it('gives RFC 1321\'s digests', () => {
    expect(hex(md5(ascii('')))).toBe('d41d8cd98f00b204e9800998ecf8427e');
    expect(hex(md5(ascii('a')))).toBe('0cc175b9c0f1b6a831c399e269772661');
    expect(hex(md5(ascii('abc')))).toBe('900150983cd24fb0d6963f7d28e17f72');
    expect(hex(md5(ascii('message digest')))).toBe('f96b697d7cb7938d525a2f31aaf161d0');
    expect(hex(md5(ascii('abcdefghijklmnopqrstuvwxyz')))).toBe('c3fcd3d76192e4007dfb496cca67e13b');
    expect(hex(md5(ascii('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789')))).toBe('d174ab98d277d9f5a5611c2c9f419d9f');
    expect(hex(md5(ascii('1234567890'.repeat(8))))).toBe('57edf4a22be3c955ac49da2e2107b67a');
  });

  it('matches node:crypto for every length up to 300 bytes and for a large input', () => {
    for (let n = 0; n <= 300; n++) {
      const data = new Uint8Array(randomBytes(n));
      expect(hex(md5(data)), `${n} bytes`).toBe(createHash('md5').update(data).digest('hex'));
    }
    const big = new Uint8Array(randomBytes(1 << 20));
    expect(hex(md5(big))).toBe(createHash('md5').update(big).digest('hex'));
  });
});
