// bhyve's fwctl (usr.sbin/bhyve/fwctl.c) played by its driver: the
// signature, OP_GET / OP_GET_LEN of hw.ncpu, errors, and hostile sequences.
import { describe, expect, it } from 'vitest';
import { fake } from '../support/fake-device.js';
import { Fwctl, fwctlNodes, FWCTL_IN, FWCTL_OUT, OP_GET, OP_GET_LEN } from '../../src/devices/lpc/fwctl.js';

function setup(ncpu = 4) {
  const f = fake();
  new Fwctl(f.ctx, fwctlNodes(ncpu));
  const sig = () => { f.outp(FWCTL_OUT, 0, 2); return [0, 1, 2, 3].map(() => String.fromCharCode(f.inp(FWCTL_IN))).join(''); };
  const words = (s: string) => {
    const b = Buffer.alloc(Math.ceil((s.length + 1) / 4) * 4);
    b.write(s, 'latin1');
    return Array.from({ length: b.length / 4 }, (_, i) => b.readUInt32LE(i * 4));
  };
  const request = (op: number, txid: number, data: number[], size = 12 + data.length * 4) => {
    for (const w of [size, op, txid, ...data]) f.outp(FWCTL_OUT, w, 4);
  };
  const reply = () => {
    const size = f.inp(FWCTL_IN, 4);
    const out = [size];
    for (let i = 4; i < size; i += 4) out.push(f.inp(FWCTL_IN, 4));
    return out;
  };
  return { f, sig, words, request, reply };
}

describe('fwctl', () => {
  it('gives the signature BHYV after a 16-bit write of 0, again after another', () => {
    const { f, sig } = setup();
    expect(f.inp(FWCTL_IN)).toBe(0xff); // not before the reset write
    expect(sig()).toBe('BHYV');
    expect(f.inp(FWCTL_IN)).toBe(0xff);
    expect(sig()).toBe('BHYV');
  });

  it('answers OP_GET hw.ncpu with a size_t length and the int, OP_GET_LEN with the length', () => {
    const { sig, words, request, reply } = setup(6);
    sig();
    request(OP_GET, 0x77, words('hw.ncpu'));
    expect(reply()).toEqual([28, OP_GET, 0x77, 0, 4, 0, 6]);
    request(OP_GET_LEN, 0x78, words('hw.ncpu'));
    expect(reply()).toEqual([24, OP_GET_LEN, 0x78, 0, 4, 0]);
  });

  it('matches names as strncmp over the bytes sent, as bhyve', () => {
    const { sig, words, request, reply } = setup(2);
    sig();
    request(OP_GET, 1, words('hw.n').slice(0, 1)); // "hw.n" without its NUL
    expect(reply()).toEqual([28, OP_GET, 1, 0, 4, 0, 2]);
  });

  it('returns ENOENT for unknown nodes and operations, E2BIG for names over 80 bytes, no data', () => {
    const { f, sig, words, request, reply } = setup();
    sig();
    request(OP_GET, 2, words('hw.nope'));
    expect(reply()).toEqual([16, OP_GET, 2, 2]);
    request(9, 3, words('hw.ncpu'));
    expect(reply()).toEqual([16, 9, 3, 2]);
    request(OP_GET, 4, new Array(21).fill(0x41414141));
    expect(reply()).toEqual([16, OP_GET, 4, 7]);
    // Back in the request state: reads out of turn give all-ones.
    expect(f.inp(FWCTL_IN, 4)).toBe(0xffffffff);
    request(OP_GET, 5, words('hw.ncpu'));
    expect(reply()[6]).toBe(4);
  });

  it('survives hostile sequences: short sizes, writes to 0x511, odd sizes, resets mid-reply', () => {
    const { f, sig, words, request, reply } = setup(3);
    request(OP_GET, 1, words('hw.ncpu')); // before the signature: dropped
    expect(f.inp(FWCTL_IN, 4)).toBe(0xffffffff);
    sig();
    f.outp(FWCTL_OUT, 4, 4); // size below the header: bhyve exits 4; dropped here
    f.outp(FWCTL_IN, 0x1234, 4); // 0x511 takes no writes
    expect(f.inp(FWCTL_OUT, 2)).toBe(0xffff);
    request(OP_GET, 6, words('hw.ncpu'));
    expect(f.inp(FWCTL_IN, 4)).toBe(28);
    expect(sig()).toBe('BHYV'); // a reset in the middle of a reply
    request(OP_GET, 7, words('hw.ncpu'));
    expect(reply()).toEqual([28, OP_GET, 7, 0, 4, 0, 3]);
    // A header-only request completes at once.
    request(OP_GET_LEN, 8, [], 12);
    expect(reply()).toEqual([24, OP_GET_LEN, 8, 0, 4, 0]);
    for (let i = 0; i < 1000; i++) f.outp(FWCTL_OUT, (i * 2654435761) >>> 0, 4);
    for (let i = 0; i < 1000; i++) f.inp(FWCTL_IN, 4);
    expect(sig()).toBe('BHYV');
  });
});
