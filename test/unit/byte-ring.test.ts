import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Worker } from 'node:worker_threads';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import ts from 'typescript';
import { ByteRing } from '../../src/vmm/byte-ring.js';

// Workers run plain JS: compile byte-ring.ts (no imports) to an .mjs once.
let dir = '';
let ringUrl = '';
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'byte-ring-'));
  const src = readFileSync(new URL('../../src/vmm/byte-ring.ts', import.meta.url), 'utf8');
  const out = ts.transpileModule(src, {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  }).outputText;
  const file = join(dir, 'byte-ring.mjs');
  writeFileSync(file, out);
  ringUrl = pathToFileURL(file).href;
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function runWorker(body: string, workerData: unknown): Promise<unknown> {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    import(${JSON.stringify(ringUrl)}).then(async ({ ByteRing }) => {
      ${body}
    }).catch((e) => { parentPort.postMessage({ error: String(e && e.stack || e) }); });
  `;
  return new Promise((resolve, reject) => {
    const w = new Worker(code, { eval: true, workerData });
    w.once('message', (m: { error?: string }) => {
      if (m && typeof m === 'object' && 'error' in m && m.error) reject(new Error(m.error));
      else resolve(m);
    });
    w.once('error', reject);
  });
}

/** Deterministic byte i of a test stream. */
const byteAt = (i: number): number => (i * 131 + (i >>> 8) * 7 + 13) & 0xff;

describe('ByteRing in one thread', () => {
  it('rounds capacity up to a power of two and counts bytes', () => {
    const r = ByteRing.create(100);
    expect(r.capacity).toBe(128);
    expect(r.available()).toBe(0);
    expect(r.free()).toBe(128);
    expect(r.pop()).toBe(-1);
    expect(r.push(new Uint8Array([1, 2, 3]))).toBe(3);
    expect(r.available()).toBe(3);
    expect(r.free()).toBe(125);
    expect([r.pop(), r.pop(), r.pop(), r.pop()]).toEqual([1, 2, 3, -1]);
  });

  it('accepts only what fits and wraps around', () => {
    const r = ByteRing.create(8);
    expect(r.push(new Uint8Array(10).map((_, i) => i))).toBe(8);
    expect(r.push(new Uint8Array([99]))).toBe(0);
    expect(r.pushByte(99)).toBe(false);
    expect(Array.from(r.read(5))).toEqual([0, 1, 2, 3, 4]);
    expect(r.push(new Uint8Array([10, 11, 12, 13, 14]))).toBe(5);
    expect(Array.from(r.read())).toEqual([5, 6, 7, 10, 11, 12, 13, 14]);
    expect(r.pushByte(7)).toBe(true);
    expect(r.pop()).toBe(7);
  });

  it('keeps working when the 32-bit counters wrap', () => {
    const r = ByteRing.create(16);
    const ctl = new Int32Array(r.sab, 0, 2);
    ctl[0] = 0x7ffffff8; // head
    ctl[1] = 0x7ffffff8; // tail
    const seq = new Uint8Array(40).map((_, i) => byteAt(i));
    const got: number[] = [];
    let off = 0;
    while (got.length < seq.length) {
      off += r.push(seq.subarray(off, Math.min(seq.length, off + 5)));
      for (let k = 0; k < 3; k++) {
        const c = r.pop();
        if (c >= 0) got.push(c);
      }
      got.push(...r.read(2));
    }
    expect(got).toEqual(Array.from(seq));
    expect(ctl[0]).toBeLessThan(0); // went past 2^31
    expect(r.available()).toBe(0);
  });

  it('from() attaches to the same storage; rejects foreign buffers', () => {
    const a = ByteRing.create(32);
    const b = ByteRing.from(a.sab);
    a.push(Buffer.from('xy'));
    expect(b.available()).toBe(2);
    expect(b.pop()).toBe(0x78);
    expect(a.available()).toBe(1);
    expect(() => ByteRing.from(new SharedArrayBuffer(35))).toThrow(RangeError);
    expect(() => ByteRing.from(new SharedArrayBuffer(16))).toThrow(RangeError);
    expect(() => ByteRing.create(0)).toThrow(RangeError);
  });

  it('waitForData resolves on push and on close', async () => {
    const r = ByteRing.create(16);
    const p = r.waitForData();
    let done = false;
    void p.then(() => { done = true; });
    await new Promise((res) => setTimeout(res, 20));
    expect(done).toBe(false);
    r.push(new Uint8Array([1]));
    await p;
    expect(r.pop()).toBe(1);
    const q = r.waitAsync();
    r.close();
    await q;
    expect(r.isClosed()).toBe(true);
  });

  it('waitForSpace resolves when the consumer makes room', async () => {
    const r = ByteRing.create(4);
    r.push(new Uint8Array(4));
    const p = r.waitForSpace();
    setTimeout(() => r.pop(), 10);
    await p;
    expect(r.free()).toBe(1);
  });

  it('sync waits time out', () => {
    const r = ByteRing.create(4);
    const t0 = Date.now();
    expect(r.waitForDataSync(30)).toBe(false);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(25);
    r.push(new Uint8Array(4));
    expect(r.waitForSpaceSync(10)).toBe(false);
    expect(r.waitForDataSync(1000)).toBe(true);
  });
});

describe('ByteRing across threads', () => {
  const TOTAL = 300_000;

  it('worker produces (sync waits), main thread consumes (waitAsync)', async () => {
    const ring = ByteRing.create(1024);
    const done = runWorker(`
      const ring = ByteRing.from(workerData.sab);
      const total = workerData.total;
      const byteAt = (i) => (i * 131 + (i >>> 8) * 7 + 13) & 0xff;
      const chunk = new Uint8Array(333);
      let i = 0;
      while (i < total) {
        const n = Math.min(chunk.length, total - i);
        for (let k = 0; k < n; k++) chunk[k] = byteAt(i + k);
        let off = 0;
        while (off < n) {
          off += ring.push(chunk.subarray(off, n));
          if (off < n) ring.waitForSpaceSync(5000);
        }
        i += n;
      }
      ring.close();
      parentPort.postMessage({ sent: i });
    `, { sab: ring.sab, total: TOTAL });
    let received = 0;
    let bad = -1;
    for (;;) {
      await ring.waitForData();
      const bytes = ring.read();
      for (let k = 0; k < bytes.length; k++) {
        if (bad < 0 && bytes[k] !== byteAt(received + k)) bad = received + k;
      }
      received += bytes.length;
      if (bytes.length === 0 && ring.isClosed()) break;
    }
    expect(await done).toEqual({ sent: TOTAL });
    expect(bad).toBe(-1);
    expect(received).toBe(TOTAL);
  });

  it('main thread produces (waitForSpace), worker consumes byte by byte (pop)', async () => {
    const ring = ByteRing.create(256);
    const done = runWorker(`
      const ring = ByteRing.from(workerData.sab);
      const byteAt = (i) => (i * 131 + (i >>> 8) * 7 + 13) & 0xff;
      let n = 0, bad = -1;
      for (;;) {
        const c = ring.pop();
        if (c < 0) {
          if (ring.isClosed() && ring.available() === 0) break;
          ring.waitForDataSync(5000);
          continue;
        }
        if (bad < 0 && c !== byteAt(n)) bad = n;
        n++;
      }
      parentPort.postMessage({ n, bad });
    `, { sab: ring.sab });
    const buf = new Uint8Array(TOTAL).map((_, i) => byteAt(i));
    let off = 0;
    while (off < buf.length) {
      off += ring.push(buf.subarray(off, Math.min(buf.length, off + 1000)));
      if (off < buf.length && ring.free() === 0) await ring.waitForSpace();
    }
    ring.close();
    expect(await done).toEqual({ n: TOTAL, bad: -1 });
  });
});
