#!/usr/bin/env node
// The host side of tcp.rom (test/guests/tcp/tcp.c), run where the tap is
// (inside the network namespace of the test or benchmark):
//   10.0.2.2:5001  reads what the guest sends until it closes, then closes;
//   10.0.2.2:5002  writes --bytes of the pattern to the guest, then closes.
// Serves any number of connections. Prints "ready" once listening, then
// one JSON line per finished connection:
//   {"port":5001,"bytes":B,"crc":"xxxxxxxx","secs":S}   secs: first to last byte
//   {"port":5002,"bytes":B,"crc":"xxxxxxxx","secs":S}   secs: connect to all written
// crc (zlib's CRC-32 of the bytes) only with --crc; "expected" is the
// pattern's CRC over the bytes the guest sent.
// Usage: host-peer.mjs --bytes N [--crc] [--addr 10.0.2.2]
import net from 'node:net';
import zlib from 'node:zlib';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';

export const PATTERN_LEN = 65521;

/** The guest's pattern: bytes x & 0xff of xorshift32 (13, 17, 5) from 0x12345678. */
export function pattern() {
  const p = Buffer.alloc(PATTERN_LEN);
  let x = 0x12345678;
  for (let i = 0; i < PATTERN_LEN; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    p[i] = x & 0xff;
  }
  return p;
}

const CHUNK = 1 << 20;
/** The pattern repeated far enough that any CHUNK of the stream is one slice. */
function repeated() {
  const p = pattern();
  const n = Math.ceil((CHUNK + PATTERN_LEN) / PATTERN_LEN);
  return Buffer.concat(Array(n).fill(p));
}

/** Slices of the first `bytes` bytes of the stream, in order. */
export function* streamSlices(bytes, rep = repeated()) {
  for (let o = 0; o < bytes; o += CHUNK) {
    const s = o % PATTERN_LEN;
    yield rep.subarray(s, s + Math.min(CHUNK, bytes - o));
  }
}

export function patternCrc(bytes) {
  let c = 0;
  for (const s of streamSlices(bytes)) c = zlib.crc32(s, c);
  return c;
}

const hex = (c) => (c >>> 0).toString(16).padStart(8, '0');

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values: opt } = parseArgs({ options: { bytes: { type: 'string' }, crc: { type: 'boolean', default: false }, addr: { type: 'string', default: '10.0.2.2' } } });
  const bytes = Number(opt.bytes);
  if (!(bytes > 0)) { console.error('host-peer: need --bytes N'); process.exit(2); }
  const rep = repeated();
  const expected = opt.crc ? hex(patternCrc(bytes)) : undefined;
  const report = (o) => console.log(JSON.stringify(o));

  const sink = net.createServer((s) => {
    let n = 0; let c = 0; let t0 = null; let t1 = null;
    s.on('data', (b) => {
      t1 = process.hrtime.bigint();
      if (t0 === null) t0 = t1;
      n += b.length;
      if (opt.crc) c = zlib.crc32(b, c);
    });
    s.on('end', () => {
      s.end();
      report({ port: 5001, bytes: n, crc: opt.crc ? hex(c) : undefined, expected, secs: t0 === null ? 0 : Number(t1 - t0) / 1e9 });
    });
    s.on('error', (e) => report({ port: 5001, error: String(e), bytes: n }));
  });
  const source = net.createServer((s) => {
    const t0 = process.hrtime.bigint();
    let c = 0;
    const it = streamSlices(bytes, rep);
    const pump = () => {
      for (;;) {
        const { value, done } = it.next();
        if (done) {
          s.end(() => report({ port: 5002, bytes, crc: opt.crc ? hex(c) : undefined, secs: Number(process.hrtime.bigint() - t0) / 1e9 }));
          return;
        }
        if (opt.crc) c = zlib.crc32(value, c);
        if (!s.write(value)) { s.once('drain', pump); return; }
      }
    };
    s.on('error', (e) => report({ port: 5002, error: String(e) }));
    s.resume(); // the guest sends nothing; take its FIN
    pump();
  });
  let up = 0;
  for (const [srv, port] of [[sink, 5001], [source, 5002]]) {
    srv.listen(port, opt.addr, () => { if (++up === 2) console.log('ready'); });
    srv.on('error', (e) => { console.error(`host-peer: ${port}: ${e.message}`); process.exit(1); });
  }
}
