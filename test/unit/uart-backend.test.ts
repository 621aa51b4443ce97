import { describe, expect, it } from 'vitest';
import * as net from 'node:net';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  attachUartStream, openUartBackend, parseTcpPath, restoreTerminal,
} from '../../src/devices/lpc/uart-backend.js';
import { ByteRing } from '../../src/vmm/byte-ring.js';
import type { ByteStream } from '../../src/devices/device.js';
import { Uart16550, REG_DATA, REG_LSR, LSR_RXRDY } from '../../src/devices/lpc/uart.js';

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function until(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function drainStream(s: ByteStream): string {
  let out = '';
  for (let c = s.readByte(); c >= 0; c = s.readByte()) out += String.fromCharCode(c);
  return out;
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port }, () => resolve(sock));
    sock.once('error', reject);
  });
}

function collect(sock: net.Socket): { text: () => string } {
  const chunks: Buffer[] = [];
  sock.on('data', (c: Buffer) => chunks.push(c));
  return { text: () => Buffer.concat(chunks).toString('latin1') };
}

describe('tcp= backend', () => {
  it('parses bhyve tcp syntax', () => {
    expect(parseTcpPath('tcp=127.0.0.1:4444')).toEqual({ host: '127.0.0.1', port: 4444 });
    expect(parseTcpPath('tcp=[::1]:4444')).toEqual({ host: '::1', port: 4444 });
    for (const bad of ['tcp=', 'tcp=1.2.3.4', 'tcp=localhost:80', 'tcp=1.2.3.4:99999', 'tcp=::1:80', 'tcp:1.2.3.4:5']) {
      expect(() => parseTcpPath(bad), bad).toThrow(/invalid TCP address/);
    }
  });

  it('moves bytes both ways between a client and the device-side stream', async () => {
    const port = await freePort();
    let kicks = 0;
    const host = await openUartBackend(`tcp=127.0.0.1:${port}`, () => { kicks++; });
    try {
      expect(host.address).toEqual({ host: '127.0.0.1', port });
      const t = structuredClone(host.transfer); // must survive postMessage
      const stream = attachUartStream(t);
      expect(stream.hasInput()).toBe(false);
      stream.write(Buffer.from('lost')); // no client yet: dropped, as bhyve

      const sock = await connect(port);
      const got = collect(sock);
      sock.write('hello\r');
      await until(() => stream.hasInput() && kicks > 0, 'rx bytes');
      let rx = '';
      await until(() => { rx += drainStream(stream); return rx.length >= 6; }, 'all rx bytes');
      expect(rx).toBe('hello\r');

      stream.write(Buffer.from('world\n'));
      await until(() => got.text().length >= 6, 'tx bytes');
      expect(got.text()).toBe('world\n');

      // The UART model on top of it: guest reads what the client typed.
      const uart = new Uart16550({ setLevel() {}, pulse() {}, signalMsi() {} }, 4, stream, 0x3f8);
      sock.write('Z');
      await until(() => (uart.read(0x3f8 + REG_LSR, 1) & LSR_RXRDY) !== 0, 'LSR.DR');
      expect(uart.read(0x3f8 + REG_DATA, 1)).toBe(0x5a);
      uart.write(0x3f8 + REG_DATA, 1, 0x21);
      await until(() => got.text().endsWith('!'), 'uart tx');
      sock.destroy();
    } finally {
      await host.close();
    }
  });

  /** A tcp= backend with a client that has seen the device's output; the
   * device side on this thread (`sameThread`: the ring's own buffers, as
   * with vCPU 0 on the main thread) or as another thread gets it (a clone). */
  async function withConnectedClient(sameThread: boolean, body: (stream: ByteStream, got: { text: () => string }) => Promise<void>): Promise<void> {
    const port = await freePort();
    const host = await openUartBackend(`tcp=127.0.0.1:${port}`, () => {});
    try {
      const stream = attachUartStream(sameThread ? host.transfer : structuredClone(host.transfer));
      const sock = await connect(port);
      const got = collect(sock);
      await until(() => { stream.write(Buffer.from('.')); return got.text().length > 0; }, 'connected');
      await body(stream, got);
      sock.destroy();
    } finally {
      await host.close();
    }
  }

  it('a device on the pumping thread (vCPU 0 on the main thread) drains its full ring itself: a burst larger than the ring arrives whole, at once', async () => {
    await withConnectedClient(true, async (stream, got) => {
      const before = got.text().length;
      const burst = Buffer.alloc(256 * 1024);
      for (let i = 0; i < burst.length; i++) burst[i] = 0x41 + (i % 26);
      const t0 = Date.now();
      stream.write(burst); // 4x the ring: without the drain it would wait 200 ms and drop the rest
      expect(Date.now() - t0).toBeLessThan(150);
      await until(() => got.text().length >= before + burst.length, 'the whole burst');
      expect(got.text().replace(/^\.+/, '')).toBe(burst.toString('latin1')); // (after the probes' dots)
    });
  });

  it('a device on another thread (a clone of the buffers) waits for the pump instead', async () => {
    await withConnectedClient(false, async (stream) => {
      const t0 = Date.now();
      stream.write(Buffer.alloc(256 * 1024, 0x42)); // this thread's pump cannot run meanwhile: waits, then drops
      expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
    });
  });

  it('takes one client at a time and accepts a new one after a disconnect', async () => {
    const port = await freePort();
    const host = await openUartBackend(`tcp=127.0.0.1:${port}`, () => {});
    try {
      const stream = attachUartStream(host.transfer);
      const a = await connect(port);
      a.write('a');
      await until(() => stream.hasInput(), 'first client data');
      expect(drainStream(stream)).toBe('a');

      const b = await connect(port);
      const bText = collect(b);
      await new Promise<void>((r) => b.once('close', () => r()));
      expect(bText.text()).toBe('Socket already connected\n');

      a.destroy();
      await new Promise((r) => setTimeout(r, 50));
      stream.write(Buffer.from('nobody')); // dropped
      const c = await connect(port);
      const cText = collect(c);
      c.write('c');
      await until(() => stream.hasInput(), 'new client data');
      expect(drainStream(stream)).toBe('c');
      stream.write(Buffer.from('hi c'));
      await until(() => cText.text() === 'hi c', 'tx to new client');
      c.destroy();
    } finally {
      await host.close();
    }
  });

  it('applies backpressure instead of losing input when the guest does not read', async () => {
    const port = await freePort();
    const host = await openUartBackend(`tcp=127.0.0.1:${port}`, () => {});
    try {
      const stream = attachUartStream(host.transfer);
      const sock = await connect(port);
      const big = Buffer.alloc(200_000).map((_, i) => (i * 7) & 0xff);
      sock.write(big);
      let got = 0;
      let bad = -1;
      await until(() => {
        for (let c = stream.readByte(); c >= 0; c = stream.readByte()) {
          if (bad < 0 && c !== big[got]) bad = got;
          got++;
        }
        return got >= big.length;
      }, 'all bytes', 10_000);
      expect(bad).toBe(-1);
      sock.destroy();
    } finally {
      await host.close();
    }
  });

  it('fails with one clear line when the port is in use or the syntax is bad', async () => {
    const s = net.createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as net.AddressInfo).port;
    try {
      await expect(openUartBackend(`tcp=127.0.0.1:${port}`, () => {}))
        .rejects.toThrow(`uart backend 'tcp=127.0.0.1:${port}': cannot listen: address already in use`);
    } finally {
      await new Promise<void>((r) => s.close(() => r()));
    }
    await expect(openUartBackend('tcp=nonsense', () => {})).rejects.toThrow(/^uart backend 'tcp=nonsense': invalid TCP address/);
  });
});

describe('device paths', () => {
  it('rejects a missing device and a file that is not a terminal', async () => {
    await expect(openUartBackend('/dev/no-such-tty-here', () => {}))
      .rejects.toThrow(/^uart backend '\/dev\/no-such-tty-here': no such device/);
    const dir = mkdtempSync(join(tmpdir(), 'uart-'));
    try {
      const f = join(dir, 'plain');
      writeFileSync(f, '');
      await expect(openUartBackend(f, () => {})).rejects.toThrow(/not a terminal/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const havePython = spawnSync('python3', ['-c', 'import pty'], { stdio: 'ignore' }).status === 0;
  it.skipIf(!havePython)('talks to a pty slave in raw mode', async () => {
    // A helper that owns the pty master: prints the slave name, sends what
    // it reads on stdin to the master and echoes the master to stdout.
    const py = `
import os, pty, sys, select
m, s = pty.openpty()
sys.stdout.write(os.ttyname(s) + "\\n"); sys.stdout.flush()
while True:
    r, _, _ = select.select([m, 0], [], [])
    if 0 in r:
        d = os.read(0, 1024)
        if not d: break
        os.write(m, d)
    if m in r:
        try: d = os.read(m, 1024)
        except OSError: break
        os.write(1, d)
`;
    const child = spawn('python3', ['-c', py], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => { out += c.toString('latin1'); });
    try {
      await until(() => out.includes('\n'), 'pty name');
      const name = out.slice(0, out.indexOf('\n'));
      out = '';
      const stty = (): string => spawnSync('stty', ['-F', name, '-g'], { encoding: 'utf8' }).stdout.trim();
      const before = stty();
      let kicks = 0;
      const host = await openUartBackend(name, () => { kicks++; });
      try {
        expect(host.transfer.kind).toBe('fd');
        const stream = attachUartStream(structuredClone(host.transfer));
        // raw mode: no echo, no line buffering, \n not translated
        stream.write(Buffer.from('guest\n'));
        await until(() => out === 'guest\n', 'tx through pty, unchanged (no ONLCR)');
        child.stdin.write('x'); // no newline: only arrives if the tty is raw
        await until(() => stream.hasInput(), 'rx through pty');
        expect(kicks).toBeGreaterThan(0);
        expect(drainStream(stream)).toBe('x');
      } finally {
        await host.close();
      }
      if (before !== '') expect(stty()).toBe(before); // termios restored
    } finally {
      child.kill();
    }
  });
});

describe('fd streams and stdio', () => {
  it('writes synchronously to the fd and reads from the rx ring', () => {
    const dir = mkdtempSync(join(tmpdir(), 'uart-'));
    try {
      const f = join(dir, 'out');
      const fd = openSync(f, 'w');
      const rx = ByteRing.create(16);
      const s = attachUartStream({ kind: 'fd', rx: rx.sab, fd, waitForever: true });
      s.write(Buffer.from('abc'));
      closeSync(fd);
      expect(readFileSync(f, 'latin1')).toBe('abc');
      expect(s.hasInput()).toBe(false);
      rx.push(Buffer.from('q'));
      expect(s.hasInput()).toBe(true);
      expect(s.readByte()).toBe(0x71);
      expect(s.readByte()).toBe(-1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('opens stdio once at a time; restoreTerminal is idempotent', async () => {
    const host = await openUartBackend('stdio', () => {});
    try {
      expect(host.transfer).toMatchObject({ kind: 'fd', fd: 1 });
      await expect(openUartBackend('stdio', () => {})).rejects.toThrow(/stdio is already used/);
    } finally {
      await host.close();
    }
    restoreTerminal();
    restoreTerminal();
    const again = await openUartBackend('stdio', () => {});
    await again.close();
  });
});
