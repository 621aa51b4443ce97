// The tap backend's two halves on a real non-blocking fd (a FIFO stands in
// for the tap: no root needed): the main thread's waker polls only while the
// device thread has read the fd dry (armed), kicks once and disarms; the
// device thread's port reads frames with read(2), keeps an unconsumed one,
// and re-arms the waker when it finds the fd empty.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { attachNetBackend, startTapWaker, type NetBackendHost } from '../../src/devices/net/net-backend.js';

const O_CLOEXEC = 0o2000000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await sleep(5);
  }
}

let host: NetBackendHost | undefined;
let dir = '';
afterEach(async () => {
  await host?.close();
  host = undefined;
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

function fifo(): { rfd: number; wfd: number } {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'netbe-'));
  const p = path.join(dir, 'fifo');
  execFileSync('mkfifo', [p]);
  const rfd = fs.openSync(p, fs.constants.O_RDWR | fs.constants.O_NONBLOCK | O_CLOEXEC);
  const wfd = fs.openSync(p, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK | O_CLOEXEC);
  return { rfd, wfd };
}

describe('tap backend: waker and device-thread port', () => {
  it('kicks once when data arrives, reads it in the port, re-arms when the fd is dry', async () => {
    const { rfd, wfd } = fifo();
    let kicks = 0;
    host = startTapWaker(rfd, 'fifo', () => { kicks++; });
    const port = attachNetBackend(host.transfer);
    await sleep(50);
    expect(kicks).toBe(0); // armed, nothing to read

    fs.writeSync(wfd, Buffer.from('frame one'));
    await until(() => kicks === 1);
    fs.writeSync(wfd, Buffer.from('!'));
    await sleep(300); // disarmed: no kick per arrival while the device drains
    expect(kicks).toBe(1);

    const f = port.peek();
    expect(Buffer.from(f!).toString()).toBe('frame one!'); // (a FIFO has no frame boundaries)
    expect(port.peek()).toBe(f); // not consumed: the same frame again
    port.consume();
    expect(port.peek()).toBeNull(); // dry: arms the waker
    await sleep(50);
    expect(kicks).toBe(1);

    fs.writeSync(wfd, Buffer.from('frame two'));
    await until(() => kicks === 2);
    expect(Buffer.from(port.peek()!).toString()).toBe('frame two');
    port.consume();
    expect(port.rxErrors).toBe(0);
    fs.closeSync(wfd);
  });

  it('sends a frame gathered from several views with one write', async () => {
    const { rfd, wfd } = fifo();
    host = startTapWaker(wfd, 'fifo', () => undefined);
    const port = attachNetBackend(host.transfer);
    expect(port.send([Buffer.from('head'), Buffer.from('-'), Buffer.from('tail')])).toBe(true);
    const got = Buffer.alloc(64);
    const n = fs.readSync(rfd, got);
    expect(got.subarray(0, n).toString()).toBe('head-tail');
    fs.closeSync(rfd);
  });
});
