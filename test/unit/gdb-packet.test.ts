// The GDB remote protocol's framing (src/vmm/gdb-packet.ts) and the stub's
// linear-to-physical walk (translate() in src/vmm/gdb-stub.ts).
import { describe, expect, it } from 'vitest';
import { checksum, decodePayload, encodePacket, PACKET_SIZE, PacketReader, regFromHex, regHex } from '../../src/vmm/gdb-packet.js';
import { translate } from '../../src/vmm/gdb-stub.js';

const frame = (body: string, cs?: number): Buffer =>
  Buffer.from(`$${body}#${(cs ?? checksum(Buffer.from(body, 'latin1'))).toString(16).padStart(2, '0')}`, 'latin1');

describe('gdb packet framing', () => {
  it('checksums modulo 256 and frames a packet', () => {
    expect(checksum(Buffer.from('OK'))).toBe(0x9a);
    expect(encodePacket('OK').toString()).toBe('$OK#9a');
    expect(encodePacket('').toString()).toBe('$#00');
    // Packets as gdb sends them.
    const ev = new PacketReader().feed(Buffer.from('$g#67$?#3f$c#63'));
    expect(ev.map((e) => e.kind === 'packet' && e.payload.toString())).toEqual(['g', '?', 'c']);
  });

  it('reads packets split anywhere, acks, naks and the 0x03 interrupt', () => {
    const r = new PacketReader();
    const all = Buffer.concat([Buffer.from('+'), frame('g'), Buffer.from([0x03]), Buffer.from('-'), frame('m100020,4')]);
    const events = [];
    for (const b of all) events.push(...r.feed(Buffer.from([b])));
    expect(events.map((e) => e.kind)).toEqual(['ack', 'packet', 'interrupt', 'nak', 'packet']);
    expect(events.filter((e) => e.kind === 'packet').map((e) => e.kind === 'packet' && e.payload.toString())).toEqual(['g', 'm100020,4']);
  });

  it('escapes # $ } * and undoes the escapes', () => {
    const raw = 'a#b$c}d*e';
    const wire = encodePacket(raw);
    expect(wire.toString('latin1')).toBe(`$a}\x03b}\x04c}]d}\x0ae#${checksum(wire.subarray(1, wire.length - 3)).toString(16).padStart(2, '0')}`);
    const ev = new PacketReader().feed(wire);
    expect(ev).toHaveLength(1);
    expect(ev[0].kind === 'packet' && ev[0].payload.toString('latin1')).toBe(raw);
  });

  it('expands run-length encoding: X*n repeats X n-29 more times', () => {
    expect(decodePayload(Buffer.from('0* ', 'latin1'))).toEqual(Buffer.from('0000')); // ' ' = 32: 3 more
    expect(decodePayload(Buffer.from('ab*"', 'latin1'))).toEqual(Buffer.from('abbbbbb')); // '"' = 34: 5 more
    const ev = new PacketReader().feed(frame('x* '));
    expect(ev[0].kind === 'packet' && ev[0].payload.toString()).toBe('xxxx');
  });

  it('reports malformed packets and recovers for the next one', () => {
    const r = new PacketReader();
    const cases: Array<[Buffer, string]> = [
      [frame('g', 0x00), 'checksum mismatch'],
      [Buffer.from('$g#zz'), 'bad checksum digit'],
      [Buffer.from('$g#6z'), 'bad checksum digit'],
      [frame('abc}'), 'escape at the end of the packet'],
      [frame('*!'), 'run-length code with nothing to repeat'],
      [frame('a*'), 'run-length code at the end of the packet'],
      [frame('a*\x1d'), 'bad run-length count 0'],
      [Buffer.from('$abc$'), 'packet restarted before its end'],
    ];
    for (const [bytes, why] of cases) {
      const ev = r.feed(bytes);
      expect(ev, why).toContainEqual({ kind: 'bad', why });
      // The reader is back in step: the next good packet comes through.
      const next = r.feed(Buffer.concat([Buffer.from('#00'), frame('?')])).filter((e) => e.kind === 'packet');
      expect(next.at(-1)?.kind === 'packet' && next.at(-1)!.payload.toString()).toBe('?');
    }
  });

  it('refuses a packet longer than PacketSize without growing without bound', () => {
    const r = new PacketReader();
    const huge = Buffer.alloc(PACKET_SIZE * 4, 0x61);
    const ev = r.feed(Buffer.concat([Buffer.from('$'), huge, Buffer.from(`#${checksum(huge).toString(16).padStart(2, '0')}`)]));
    expect(ev).toEqual([{ kind: 'bad', why: 'packet too long' }]);
    expect(decodePayload(Buffer.from(`a${'*~'.repeat(100)}`, 'latin1'))).toBe('packet too long');
    expect(r.feed(frame('g'))).toHaveLength(1);
  });

  it('skips noise between packets', () => {
    const ev = new PacketReader().feed(Buffer.concat([Buffer.from('garbage\r\n'), frame('c')]));
    expect(ev.map((e) => e.kind)).toEqual(['packet']);
  });

  it('encodes registers little-endian', () => {
    expect(regHex(0x100020n, 8)).toBe('2000100000000000');
    expect(regHex(0x202n, 4)).toBe('02020000');
    expect(regFromHex('2000100000000000')).toBe(0x100020n);
  });
});

describe('gdb stub page walk', () => {
  // Guest-physical memory as a sparse map of 8-byte words.
  const mem = new Map<bigint, bigint>();
  const read = (gpa: bigint, bytes: 4 | 8): bigint | undefined => {
    const v = mem.get(gpa);
    if (v === undefined) return 0n; // not present
    return bytes === 4 ? v & 0xffffffffn : v;
  };
  const ctl = (o: { cr0?: bigint; cr3: bigint; cr4?: bigint; efer?: bigint }) => ({
    control: { cr0: `0x${(o.cr0 ?? 0x80000011n).toString(16)}`, cr2: '0x0', cr3: `0x${o.cr3.toString(16)}`,
      cr4: `0x${(o.cr4 ?? 0n).toString(16)}`, cr8: '0x0', efer: `0x${(o.efer ?? 0n).toString(16)}`, apic_base: '0x0' },
  });

  it('is the identity without paging', () => {
    expect(translate(0x123456n, ctl({ cr0: 0x11n, cr3: 0n }), read)).toBe(0x123456n);
  });

  it('walks 4-level long-mode tables, 4 KiB, 2 MiB and 1 GiB pages', () => {
    mem.clear();
    const lin = 0xffff800000201234n;
    const i4 = (lin >> 39n) & 0x1ffn, i3 = (lin >> 30n) & 0x1ffn, i2 = (lin >> 21n) & 0x1ffn, i1 = (lin >> 12n) & 0x1ffn;
    mem.set(0x1000n + i4 * 8n, 0x2003n);
    mem.set(0x2000n + i3 * 8n, 0x3003n);
    mem.set(0x3000n + i2 * 8n, 0x4003n);
    mem.set(0x4000n + i1 * 8n, 0x8000000000567003n); // NX bit set: not part of the address
    const st = ctl({ cr3: 0x1000n, cr4: 0x20n, efer: 0x500n });
    expect(translate(lin, st, read)).toBe(0x567234n);
    mem.set(0x3000n + i2 * 8n, 0x40000083n); // 2 MiB page at 1 GiB
    expect(translate(lin, st, read)).toBe(0x40001234n);
    mem.set(0x2000n + i3 * 8n, 0x80000083n); // 1 GiB page at 2 GiB
    expect(translate(lin, st, read)).toBe(0x80201234n);
    mem.set(0x2000n + i3 * 8n, 0x80000082n); // not present
    expect(translate(lin, st, read)).toBeUndefined();
  });

  it('walks 32-bit tables with 4 MiB pages and PAE tables', () => {
    mem.clear();
    mem.set(0x1000n + 1n * 4n, 0x2003n);
    mem.set(0x2000n + 2n * 4n, 0x9003n);
    expect(translate(0x00402abcn, ctl({ cr3: 0x1000n }), read)).toBe(0x9abcn);
    mem.set(0x1000n + 1n * 4n, 0x00c00083n); // PSE 4 MiB page
    expect(translate(0x00402abcn, ctl({ cr3: 0x1000n, cr4: 0x10n }), read)).toBe(0x00c02abcn);
    expect(translate(0x00802abcn, ctl({ cr3: 0x1000n }), read)).toBeUndefined();
    mem.clear();
    mem.set(0x1000n + 1n * 8n, 0x2001n); // PDPTE 1
    mem.set(0x2000n + 3n * 8n, 0x3003n); // PDE 3
    mem.set(0x3000n + 4n * 8n, 0x7003n); // PTE 4
    expect(translate(0x40604123n, ctl({ cr3: 0x1000n, cr4: 0x20n }), read)).toBe(0x7123n);
  });
});
