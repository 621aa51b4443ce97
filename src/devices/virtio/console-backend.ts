// Host side of virtio-console ports: one UNIX stream socket server per port
// (bhyve's pci_vtcon_sock_add), one connection at a time (a second client is
// closed at once, as bhyve does).
//
//   main thread   openConsoleBackend(): listens on each `port.N.path` of the
//                 slot, reads the connected client into an RX ByteRing
//                 (pausing the socket while the ring is full) and kicks the
//                 device thread; drains a TX ByteRing to the client; flags
//                 connection changes in a small Int32 control block (and
//                 kicks, so the device can tell a multiport driver).
//   device thread attachConsolePort(transfer): a ConsolePort.
// Bytes the guest writes while no client is connected are dropped (bhyve's
// pci_vtcon_sock_tx does the same).

import { UserError } from '../../user-error.js';
import * as fs from 'node:fs';
import * as net from 'node:net';
import type { ConfigTree } from '../../config/tree.js';
import { ByteRing } from '../../vmm/byte-ring.js';
import { drainRingHere, flushThenDestroy, pumpRingToSocket, RxPump } from '../../vmm/ring-pumps.js';

const RX_RING_BYTES = 64 * 1024;
const TX_RING_BYTES = 64 * 1024;
/** How long a guest write may wait for room in the TX ring before the rest
 * is dropped (the main thread drains it to the client). */
const TX_WAIT_MS = 200;
/** bhyve's VTCON_MAXPORTS. */
export const VTCON_MAXPORTS = 16;

/** Control words: [0] 1 while a client is connected, [1] bumped on every
 * connect and disconnect. */
const CONNECTED = 0;
const GENERATION = 1;

export interface ConsolePortTransfer {
  rx: SharedArrayBuffer;
  tx: SharedArrayBuffer;
  control: SharedArrayBuffer;
}

/** Per-port transfers of one virtio-console slot, by port number N of
 * `port.N` (structured-cloneable). */
export interface ConsoleBackendTransfer {
  kind: 'console';
  ports: Record<number, ConsolePortTransfer>;
}

export interface ConsoleBackendHost {
  readonly transfer: ConsoleBackendTransfer;
  close(): Promise<void>;
}

/** The device thread's view of one port. Tests provide fakes. */
export interface ConsolePort {
  /** Bytes from the host waiting for the guest. */
  available(): number;
  /** Removes up to `max` waiting bytes. */
  read(max: number): Uint8Array;
  /** Sends guest bytes to the host (dropped while nobody is connected). */
  write(bytes: Uint8Array): void;
  connected(): boolean;
  /** Changes whenever a client connects or disconnects. */
  generation(): number;
}

export class ConsoleBackendError extends UserError { override readonly name: string = 'ConsoleBackendError'; }

/** The configured ports of a virtio-console slot, in port-number order:
 * bhyve numbers the virtio ports in the order they were given, so the
 * first (`port1=...` on the command line, port.0) is virtio port 0. */
export function consolePortsFromConfig(config: ConfigTree, node: string): Array<{ n: number; name: string; path: string }> {
  const ports = config.getNode(`${node}.port`);
  if (!ports) return [];
  const out: Array<{ n: number; name: string; path: string }> = [];
  for (const [k, v] of ports) {
    if (!(v instanceof Map) || !/^(0|[1-9][0-9]*)$/.test(k)) continue;
    const n = Number(k);
    const path = config.get(`${node}.port.${k}.path`);
    const portName = config.get(`${node}.port.${k}.name`) ?? k;
    if (path === undefined || path === '') throw new ConsoleBackendError(`vtcon: port ${portName} requires a path`);
    // sun_path holds 107 bytes: a longer path would be cut short silently.
    if (Buffer.byteLength(path) > 107) {
      throw new ConsoleBackendError(`vtcon: port ${portName}: socket path ${path} is ${Buffer.byteLength(path)} bytes, more than a UNIX socket path holds (107)`);
    }
    out.push({ n, name: config.get(`${node}.port.${k}.name`) ?? '', path });
  }
  out.sort((a, b) => a.n - b.n);
  if (out.length > VTCON_MAXPORTS) throw new ConsoleBackendError('vtcon: too many ports');
  return out;
}

/** Opens every port socket of the virtio-console slot `node` (main thread);
 * undefined when it has no ports. */
export async function openConsoleBackend(config: ConfigTree, node: string, kick: () => void): Promise<ConsoleBackendHost | undefined> {
  const ports = consolePortsFromConfig(config, node);
  if (ports.length === 0) return undefined;
  const hosts: Array<{ n: number; close(): Promise<void>; transfer: ConsolePortTransfer }> = [];
  try {
    for (const p of ports) {
      hosts.push({ n: p.n, ...(await openPortSocket(p.name, p.path, kick)) });
    }
  } catch (e) {
    for (const h of hosts) await h.close();
    throw e;
  }
  const transfer: ConsoleBackendTransfer = { kind: 'console', ports: {} };
  for (const h of hosts) transfer.ports[h.n] = h.transfer;
  return {
    transfer,
    async close(): Promise<void> {
      for (const h of hosts) await h.close();
    },
  };
}

async function openPortSocket(name: string, path: string, kick: () => void): Promise<{ transfer: ConsolePortTransfer; close(): Promise<void> }> {
  const rx = ByteRing.create(RX_RING_BYTES);
  const tx = ByteRing.create(TX_RING_BYTES);
  const control = new SharedArrayBuffer(16);
  const flags = new Int32Array(control);
  const st: { client: net.Socket | null } = { client: null };
  let closed = false;
  const pump = new RxPump(rx, kick, () => st.client?.pause(), () => st.client?.resume());

  const server = net.createServer((sock) => {
    if (st.client !== null || closed) {
      sock.on('error', () => undefined);
      sock.destroy();
      return;
    }
    st.client = sock;
    tx.discard();
    Atomics.store(flags, CONNECTED, 1);
    Atomics.add(flags, GENERATION, 1);
    kick();
    sock.on('data', (chunk: Buffer) => pump.write(chunk));
    sock.on('error', () => undefined);
    sock.on('close', () => {
      if (st.client !== sock) return;
      st.client = null;
      pump.clear();
      Atomics.store(flags, CONNECTED, 0);
      Atomics.add(flags, GENERATION, 1);
      tx.discard();
      kick();
    });
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException): void => {
      const why = e.code === 'EADDRINUSE' ? `${path} already exists (remove the stale socket or choose another path)`
        : e.code === 'EACCES' ? `permission denied creating ${path}`
          : e.code === 'ENOENT' ? `directory of ${path} does not exist`
            : e.message;
      reject(new ConsoleBackendError(`cannot create port ${name}: ${why}`));
    };
    server.once('error', onError);
    server.listen({ path, backlog: 1 }, () => {
      server.removeListener('error', onError);
      resolve();
    });
  });
  server.on('error', () => undefined);

  const txLoop = pumpRingToSocket(tx, () => st.client, () => closed);

  return {
    transfer: { rx: rx.sab, tx: tx.sab, control },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      Atomics.store(flags, CONNECTED, 0);
      pump.close();
      rx.close();
      // The guest's last bytes go out before the client does (the pump may
      // not have drained them: vcpu-runner.ts, on the main thread).
      const rest = tx.read();
      tx.close();
      const c = st.client;
      st.client = null;
      if (c) flushThenDestroy(c, rest);
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await txLoop.catch(() => undefined);
      try { fs.unlinkSync(path); } catch { /* node removed it already */ }
    },
  };
}

/** The device thread's ConsolePort for one port's transfer. */
export function attachConsolePort(t: ConsolePortTransfer): ConsolePort {
  const rx = ByteRing.from(t.rx);
  const tx = ByteRing.from(t.tx);
  const flags = new Int32Array(t.control);
  return {
    available: () => rx.available(),
    read: (max: number) => rx.read(max),
    connected: () => Atomics.load(flags, CONNECTED) !== 0,
    generation: () => Atomics.load(flags, GENERATION),
    write(bytes: Uint8Array): void {
      if (Atomics.load(flags, CONNECTED) === 0 || tx.isClosed()) return;
      let off = 0;
      let waited = 0;
      while (off < bytes.length) {
        const n = tx.push(bytes.subarray(off));
        off += n;
        if (off >= bytes.length) break;
        if (n === 0) {
          if (drainRingHere(t.tx)) continue;
          if (waited >= TX_WAIT_MS || Atomics.load(flags, CONNECTED) === 0) return;
          tx.waitForSpaceSync(10);
          waited += 10;
        }
      }
    },
  };
}
