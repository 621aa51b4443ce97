// Host side of a UART backend, for bhyve's lpc.comN.path syntax:
//   stdio            this process's stdin/stdout (stdin put in raw mode when
//                    it is a terminal, and always restored)
//   /dev/pts/N, ...  a terminal device
//   tcp=ADDR:PORT    a TCP listener (tcp=[ADDR6]:PORT for IPv6); one client
//                    at a time, as bhyve does
//
// The work is split across the two threads of our architecture:
//   main thread   openUartBackend(): opens the backend, reads it on the event
//                 loop, pushes received bytes into an RX ByteRing and calls
//                 kick() so the device thread polls its devices. Returns a
//                 structured-cloneable UartStreamTransfer (SABs, fd numbers).
//   device thread attachUartStream(transfer): a synchronous ByteStream. RX
//                 bytes come from the ring; TX bytes are written with
//                 fs.writeSync to the fd (stdio, tty) or pushed into a TX ring
//                 that the main thread drains to the TCP client.
// Both halves also work inside one thread (unit tests).

import { UserError, userErrorWithPrefix } from '../../user-error.js';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as tty from 'node:tty';
import type { ByteStream } from '../device.js';
import { ByteRing } from '../../vmm/byte-ring.js';
import { drainRingHere, flushThenDestroy, pumpRingToSocket, RxPump } from '../../vmm/ring-pumps.js';

const RX_RING_BYTES = 64 * 1024;
const TX_RING_BYTES = 64 * 1024;
/** How long a tty write may wait for the device to accept data before the
 * rest is dropped (bhyve drops at once: its tty fd is non-blocking). */
const TTY_WRITE_WAIT_MS = 200;
/** Same for the TCP TX ring (the main thread drains it to the client). */
const TCP_WRITE_WAIT_MS = 200;

/** Everything the device thread needs to rebuild the stream: structured-cloneable. */
export type UartStreamTransfer =
  | {
      kind: 'fd';
      /** RX ring, filled by the main thread. */
      rx: SharedArrayBuffer;
      /** fd the device thread writes TX bytes to. */
      fd: number;
      /** Wait for the fd however long it takes (stdout) instead of dropping
       * output after a bounded wait (a tty nobody reads). */
      waitForever: boolean;
    }
  | {
      kind: 'ring';
      rx: SharedArrayBuffer;
      /** TX ring, drained by the main thread. */
      tx: SharedArrayBuffer;
      /** Int32 flags; [0] = 1 while a peer is connected (TX is dropped otherwise). */
      control: SharedArrayBuffer;
    };

export interface UartBackendHost {
  readonly transfer: UartStreamTransfer;
  /** The bound address of a tcp= backend (useful with port 0). */
  readonly address?: { host: string; port: number };
  close(): Promise<void> | void;
}

class BackendError extends UserError { override readonly name: string = 'BackendError'; }

// ---------------------------------------------------------------- terminal

let stdioInUse = false;
let rawModeSet = false;
let exitHooksInstalled = false;
const RESTORE_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'];

/** Puts stdin back in the mode it had before we made it raw. Safe to call
 * any number of times, from any exit path. */
export function restoreTerminal(): void {
  if (!rawModeSet) return;
  rawModeSet = false;
  try {
    if (process.stdin.isTTY) process.stdin.setRawMode(false);
  } catch {
    // the terminal may already be gone (hangup); nothing more to do
  }
}

function onFatalSignal(sig: NodeJS.Signals): void {
  restoreTerminal();
  // Only when nobody else handles the signal do we restore the default
  // action (die by it). Otherwise the other handler decides (bhyve turns
  // SIGTERM into an ACPI power button press) and the 'exit' hook restores.
  if (process.listenerCount(sig) === 1) {
    process.removeListener(sig, onFatalSignal);
    process.kill(process.pid, sig);
  }
}

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  // 'exit' also runs after an uncaught exception and process.exit().
  process.on('exit', restoreTerminal);
  for (const sig of RESTORE_SIGNALS) process.on(sig, onFatalSignal);
}

function removeExitHooks(): void {
  if (!exitHooksInstalled) return;
  exitHooksInstalled = false;
  process.removeListener('exit', restoreTerminal);
  for (const sig of RESTORE_SIGNALS) process.removeListener(sig, onFatalSignal);
}

// ---------------------------------------------------------------- open

/** Opens the host side of a UART backend. Throws an Error with a one-line
 * message naming the path when the backend cannot be used. */
export async function openUartBackend(path: string, kick: () => void): Promise<UartBackendHost> {
  try {
    if (path === 'stdio') return openStdio(kick);
    if (path.startsWith('tcp')) return await openTcp(path, kick);
    return openTty(path, kick);
  } catch (e) {
    if (e instanceof BackendError) throw e;
    throw userErrorWithPrefix(e, `uart backend '${path}': `);
  }
}

function openStdio(kick: () => void): UartBackendHost {
  if (stdioInUse) throw new BackendError("uart backend 'stdio': stdio is already used by another device");
  stdioInUse = true;
  const rx = ByteRing.create(RX_RING_BYTES);
  const stdin = process.stdin;
  if (stdin.isTTY) {
    // Raw mode: no line editing or echo, ^C goes to the guest (as bhyve's
    // cfmakeraw). Restored on close, on exit, on fatal signals.
    installExitHooks();
    stdin.setRawMode(true);
    rawModeSet = true;
  }
  const pump = new RxPump(rx, kick, () => stdin.pause(), () => stdin.resume());
  const onData = (chunk: Buffer): void => pump.write(chunk);
  // EOF on stdin simply means no more input.
  const onError = (): void => undefined;
  stdin.on('data', onData);
  stdin.on('error', onError);
  stdin.resume();
  let closed = false;
  return {
    transfer: { kind: 'fd', rx: rx.sab, fd: 1, waitForever: true },
    close(): void {
      if (closed) return;
      closed = true;
      stdin.removeListener('data', onData);
      stdin.removeListener('error', onError);
      stdin.pause();
      pump.close();
      rx.close();
      restoreTerminal();
      removeExitHooks();
      stdioInUse = false;
    },
  };
}

function openTty(path: string, kick: () => void): UartBackendHost {
  let fd: number;
  try {
    fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_NOCTTY | fs.constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'no such device (use stdio, tcp=ADDR:PORT or a terminal such as /dev/pts/N)'
      : code === 'EACCES' || code === 'EPERM' ? 'permission denied'
      : code === 'EISDIR' ? 'is a directory, not a terminal'
      : (e as Error).message;
    throw new BackendError(`uart backend '${path}': ${why}`);
  }
  if (!tty.isatty(fd)) {
    // bhyve accepts only terminals here (uart_tty_backend checks isatty).
    fs.closeSync(fd);
    throw new BackendError(`uart backend '${path}': not a terminal (use stdio, tcp=ADDR:PORT or a terminal such as /dev/pts/N)`);
  }
  // Reading: a tty.ReadStream on a second fd of its own (libuv watches it
  // with epoll, may reopen it, and closes it when destroyed); `fd` stays ours,
  // for the device thread's synchronous writes.
  let rfd: number;
  try {
    rfd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NOCTTY | fs.constants.O_NONBLOCK);
  } catch (e) {
    fs.closeSync(fd);
    throw new BackendError(`uart backend '${path}': ${(e as Error).message}`);
  }
  const rs = new tty.ReadStream(rfd);
  // Termios: bhyve does cfmakeraw() + CLOCAL. `stty raw -echo clocal` is the
  // same thing (raw also clears OPOST, so the guest's bytes pass unchanged).
  // The previous settings (stty -g) are put back on close. When stty cannot
  // run, fall back to libuv's raw mode, which is close but keeps ONLCR on
  // output (a guest "\n" reaches the terminal as "\r\n").
  let restore: (() => void) | undefined;
  const sttyOpts = { encoding: 'utf8' as const, stdio: ['ignore', 'pipe', 'ignore'] as ['ignore', 'pipe', 'ignore'], timeout: 5000 };
  try {
    const saved = execFileSync('stty', ['-F', path, '-g'], sttyOpts).trim();
    execFileSync('stty', ['-F', path, 'raw', '-echo', 'clocal'], sttyOpts);
    restore = () => { execFileSync('stty', ['-F', path, saved], sttyOpts); };
  } catch {
    try {
      rs.setRawMode(true);
      restore = () => { rs.setRawMode(false); };
    } catch {
      // leave termios alone if the device refuses; data still flows
    }
  }
  const rx = ByteRing.create(RX_RING_BYTES);
  const pump = new RxPump(rx, kick, () => rs.pause(), () => rs.resume());
  rs.on('data', (chunk: Buffer) => pump.write(chunk));
  rs.on('error', () => undefined); // EIO on hangup: no more input
  let closed = false;
  return {
    transfer: { kind: 'fd', rx: rx.sab, fd, waitForever: false },
    close(): void {
      if (closed) return;
      closed = true;
      pump.close();
      rx.close();
      try { restore?.(); } catch { /* the terminal is gone */ }
      rs.destroy();
      // Call close() only after the device thread has stopped writing.
      try { fs.closeSync(fd); } catch { /* already closed */ }
    },
  };
}

/** Parses bhyve's tcp=ADDR:PORT / tcp=[ADDR6]:PORT. */
export function parseTcpPath(path: string): { host: string; port: number } {
  const bad = (): never => {
    throw new BackendError(`uart backend '${path}': invalid TCP address (use tcp=IPV4:PORT or tcp=[IPV6]:PORT)`);
  };
  const m6 = /^tcp=\[([^\]]+)\]:(\d{1,5})$/.exec(path);
  const m4 = m6 ? null : /^tcp=([^:[\]]+):(\d{1,5})$/.exec(path);
  const m = m6 ?? m4;
  if (m === null) return bad();
  const host = m[1];
  const port = Number(m[2]);
  if (port > 65535) return bad();
  if (m6 && net.isIPv6(host) === false) return bad();
  if (m4 && net.isIPv4(host) === false) return bad();
  return { host, port };
}

async function openTcp(path: string, kick: () => void): Promise<UartBackendHost> {
  const { host, port } = parseTcpPath(path);
  const rx = ByteRing.create(RX_RING_BYTES);
  const tx = ByteRing.create(TX_RING_BYTES);
  const control = new SharedArrayBuffer(16);
  const flags = new Int32Array(control);
  // (in an object so TypeScript does not narrow it across the callbacks)
  const st: { client: net.Socket | null } = { client: null };
  let closed = false;

  const pump = new RxPump(rx, kick, () => st.client?.pause(), () => st.client?.resume());

  const server = net.createServer({ noDelay: true }, (sock) => {
    if (st.client !== null || closed) {
      // As bhyve: one client at a time; tell the newcomer and hang up.
      sock.on('error', () => undefined);
      sock.end('Socket already connected\n');
      return;
    }
    st.client = sock;
    tx.discard(); // nothing queued before the connection is for this client
    Atomics.store(flags, 0, 1);
    sock.on('data', (chunk: Buffer) => pump.write(chunk));
    sock.on('error', () => undefined);
    sock.on('close', () => {
      if (st.client !== sock) return;
      st.client = null;
      Atomics.store(flags, 0, 0);
      pump.clear();
      tx.discard();
    });
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException): void => {
      const why =
        e.code === 'EADDRINUSE' ? 'address already in use'
        : e.code === 'EADDRNOTAVAIL' ? 'address not available on this host'
        : e.code === 'EACCES' ? 'permission denied (ports below 1024 need privileges)'
        : e.message;
      reject(new BackendError(`uart backend '${path}': cannot listen: ${why}`));
    };
    server.once('error', onError);
    server.listen({ host, port, backlog: 1, exclusive: true }, () => {
      server.removeListener('error', onError);
      resolve();
    });
  });
  server.on('error', () => undefined);
  const bound = server.address() as net.AddressInfo;

  // TX: drain the ring to the client on the event loop, without polling.
  const txLoop = pumpRingToSocket(tx, () => st.client, () => closed);

  return {
    transfer: { kind: 'ring', rx: rx.sab, tx: tx.sab, control },
    address: { host: bound.address, port: bound.port },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      Atomics.store(flags, 0, 0);
      pump.close();
      rx.close();
      // What the guest wrote last is sent before the client goes: the ring
      // may not have been drained yet (with vCPU 0 on the main thread, the
      // pump runs only between the guest's runs).
      const rest = tx.read();
      tx.close();
      const c = st.client;
      st.client = null;
      if (c) flushThenDestroy(c, rest);
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await txLoop;
    },
  };
}

// ---------------------------------------------------------------- device thread

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/** Writes all of `bytes` to a possibly non-blocking fd, retrying on EAGAIN
 * with short sleeps. Gives up (drops the rest) after `maxWaitMs` without
 * progress unless `maxWaitMs` is Infinity. */
function writeAllSync(fd: number, bytes: Uint8Array, maxWaitMs: number): void {
  let off = 0;
  let waited = 0;
  while (off < bytes.length) {
    try {
      const n = fs.writeSync(fd, bytes, off, bytes.length - off);
      off += n;
      waited = 0;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EAGAIN' && code !== 'EWOULDBLOCK' && code !== 'EINTR') return; // EIO, EPIPE...: drop
      if (code === 'EINTR') continue;
      if (waited >= maxWaitMs) return;
      Atomics.wait(sleepCell, 0, 0, 1);
      waited += 1;
    }
  }
}

/** Rebuilds the device-side ByteStream from a transfer (device thread). */
export function attachUartStream(t: UartStreamTransfer): ByteStream {
  const rx = ByteRing.from(t.rx);
  const readByte = (): number => rx.pop();
  const hasInput = (): boolean => rx.available() > 0;
  if (t.kind === 'fd') {
    const fd = t.fd;
    const wait = t.waitForever ? Infinity : TTY_WRITE_WAIT_MS;
    return {
      readByte,
      hasInput,
      write(bytes: Uint8Array): void {
        writeAllSync(fd, bytes, wait);
      },
    };
  }
  const tx = ByteRing.from(t.tx);
  const flags = new Int32Array(t.control);
  return {
    readByte,
    hasInput,
    write(bytes: Uint8Array): void {
      // No client connected: dropped, as bhyve does.
      if (Atomics.load(flags, 0) === 0 || tx.isClosed()) return;
      let off = 0;
      while (off < bytes.length) {
        off += tx.push(bytes.subarray(off));
        if (off < bytes.length && !drainRingHere(t.tx) && !tx.waitForSpaceSync(TCP_WRITE_WAIT_MS)) return;
      }
    },
  };
}
