// Found by the control-socket fuzz target: the 64 KiB limit is on one
// request line, not on what one read of the socket happens to return.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ControlServer } from '../../src/vmm/control-socket.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ctl-pipe-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Writes `payload` in one go and collects reply lines until `want` arrived or the server closed. */
async function session(sockPath: string, payload: string, want: number): Promise<string[]> {
  const sock = net.connect(sockPath);
  sock.setEncoding('utf8');
  let got = '';
  await new Promise<void>((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  const done = new Promise<void>((resolve) => {
    sock.on('data', (d: string) => { got += d; if (got.split('\n').length - 1 >= want) sock.end(); });
    sock.on('close', () => resolve());
  });
  sock.write(payload);
  await done;
  return got.split('\n').filter((l) => l !== '');
}

describe('control socket request size limit', () => {
  it('answers every one of many pipelined short requests, however the reads split them', async () => {
    const p = path.join(dir, 'a.sock');
    const server = await ControlServer.listen(p, { info: () => ({ ok: 1 }) });
    try {
      const line = `${JSON.stringify({ version: 1, op: 'info', pad: 'x'.repeat(480) })}\n`;
      const n = 600; // ~300 KiB in one write: several 64 KiB reads, lines cut across them
      const replies = await session(p, line.repeat(n), n);
      expect(replies.filter((r) => r.includes('request too long'))).toEqual([]);
      expect(replies.length).toBe(n);
    } finally {
      server.close();
    }
  });

  it('still refuses one request line longer than 64 KiB', async () => {
    const p = path.join(dir, 'b.sock');
    const server = await ControlServer.listen(p, { info: () => ({ ok: 1 }) });
    try {
      const replies = await session(p, `${JSON.stringify({ version: 1, op: 'info', pad: 'x'.repeat(70_000) })}\n`, 1);
      expect(replies).toEqual(['{"version":1,"ok":false,"error":"request too long"}']);
    } finally {
      server.close();
    }
  });
});
