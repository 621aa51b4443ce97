// Issue 9 defect 6: a control-socket client that pipelines requests and
// never reads the replies must not make bhyve queue replies without bound
// (backpressure); when it reads at last, every reply arrives, in order.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { ControlServer } from '../../src/vmm/control-socket.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'control-socket-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('control socket', () => {
  it('stops answering while the client does not read, and answers everything in order later', async () => {
    let answered = 0;
    const big = 'x'.repeat(1000);
    const server = await ControlServer.listen(path.join(tmp, 'c.sock'), {
      ping: (req) => { answered++; return { n: req.n, big }; },
    });
    const N = 100_000;
    const sock = net.connect(path.join(tmp, 'c.sock'));
    await new Promise<void>((r) => sock.once('connect', () => r()));
    sock.pause(); // a client that does not read
    let text = '';
    for (let i = 0; i < N; i++) text += `{"version":1,"op":"ping","n":${i}}\n`;
    sock.write(text);
    await new Promise((r) => setTimeout(r, 1500));
    // Replies are ~1 KB: unbounded queuing would have answered all 100k
    // (100 MB queued); with backpressure only what the socket buffers hold.
    expect(answered).toBeGreaterThan(0);
    expect(answered).toBeLessThan(N / 10);
    const before = answered;
    await new Promise((r) => setTimeout(r, 500));
    expect(answered).toBe(before); // stalled, not creeping on

    // Now read everything: all replies, in order.
    let got = 0;
    let buf = '';
    let inOrder = true;
    sock.setEncoding('utf8');
    await new Promise<void>((resolve) => {
      sock.on('data', (c: string) => {
        buf += c;
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const r = JSON.parse(buf.slice(0, nl)) as { ok: boolean; result: { n: number } };
          buf = buf.slice(nl + 1);
          if (!r.ok || r.result.n !== got) inOrder = false;
          got++;
          if (got === N) resolve();
        }
      });
      sock.resume();
    });
    expect(inOrder).toBe(true);
    expect(answered).toBe(N);
    sock.destroy();
    server.close();
  }, 60_000);

  it('still refuses one over-long request line', async () => {
    const server = await ControlServer.listen(path.join(tmp, 'd.sock'), { ping: () => 1 });
    const sock = net.connect(path.join(tmp, 'd.sock'));
    let out = '';
    sock.setEncoding('utf8');
    sock.on('data', (c: string) => { out += c; });
    sock.write('x'.repeat(100 * 1024));
    await new Promise<void>((r) => sock.once('close', () => r()));
    expect(out).toBe('{"version":1,"ok":false,"error":"request too long"}\n');
    server.close();
  });

  it('refuses an over-long line also when its newline came with it (found by the control-socket fuzz target)', async () => {
    const server = await ControlServer.listen(path.join(tmp, 'e.sock'), { info: () => 1 });
    const sock = net.connect(path.join(tmp, 'e.sock'));
    let out = '';
    sock.setEncoding('utf8');
    sock.on('data', (c: string) => { out += c; });
    sock.write(`{"version":1,"op":"info","pad":"${'x'.repeat(70_000)}"}\n`);
    await new Promise<void>((r) => sock.once('close', () => r()));
    expect(out).toBe('{"version":1,"ok":false,"error":"request too long"}\n');
    server.close();
  });
  it('answers every request of a client that half-closes after pipelining them (found by the control-socket fuzz target)', async () => {
    const server = await ControlServer.listen(path.join(tmp, 'f.sock'), { info: () => ({ pad: 'y'.repeat(2000) }) });
    const sock = net.connect(path.join(tmp, 'f.sock'));
    let out = '';
    sock.setEncoding('utf8');
    sock.on('data', (c: string) => { out += c; });
    await new Promise<void>((r) => sock.once('connect', () => r()));
    sock.end('{"version":1,"op":"info"}\n'.repeat(400)); // requests, then FIN
    await new Promise<void>((r) => sock.once('close', () => r()));
    const replies = out.split('\n').filter((l) => l !== '');
    expect(replies.length).toBe(400);
    expect(replies.every((l) => JSON.parse(l).ok === true)).toBe(true);
    server.close();
  });
});
