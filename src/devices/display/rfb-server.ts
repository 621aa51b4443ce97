// The RFB (VNC) server of fbuf, on bhyve's main thread: it listens on TCP
// (IPv4 or IPv6) or a unix socket, runs one RfbSession per client, and
// every 33 ms (bhyve's 30 Hz refresh), while some client has asked for an
// update, scans the framebuffer once for changed tiles and hands each
// waiting client what changed since its last update. No client or no
// request: no scan, no cost.

import fs from 'node:fs';
import net from 'node:net';
import type { RfbInput } from './rfb-session.js';
import { RfbSession } from './rfb-session.js';
import { DirtyScanner, type Screen } from './rfb-pixels.js';

export const REFRESH_MS = 33;
/** A client that has not finished the handshake by then is dropped. */
export const HANDSHAKE_TIMEOUT_MS = 30_000;

export type RfbListen = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

export interface RfbServerOptions {
  listen: RfbListen;
  password?: string;
  name: string;
  screen(): Screen;
  /** Pages of the framebuffer written since the last call (a bit per 4 KiB
   * page), or undefined when unknown (then every band is compared). */
  dirtyPages?(): Uint8Array | undefined;
  input: RfbInput;
  /** Told about clients that broke the protocol or failed to authenticate. */
  log?(message: string): void;
}

export function describeListen(l: RfbListen): string {
  return l.kind === 'unix' ? l.path : l.host.includes(':') ? `[${l.host}]:${l.port}` : `${l.host}:${l.port}`;
}

export class RfbServer {
  private readonly sessions = new Set<RfbSession>();
  private readonly scanner = new DirtyScanner();
  private timer: NodeJS.Timeout | undefined;
  private resolveFirst!: () => void;
  /** Resolves when the first client has completed the handshake (bhyve's `wait`). */
  readonly firstClient = new Promise<void>((r) => { this.resolveFirst = r; });
  readonly stats = { clients: 0, rejected: 0, scans: 0, updates: 0, bytes: 0 };

  private constructor(private readonly server: net.Server, private readonly o: RfbServerOptions) {
    server.on('connection', (sock) => this.accept(sock));
  }

  static async listen(o: RfbServerOptions): Promise<RfbServer> {
    const server = net.createServer({ noDelay: true });
    if (o.listen.kind === 'unix') removeStaleSocket(o.listen.path);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const done = (): void => { server.off('error', reject); resolve(); };
      if (o.listen.kind === 'unix') server.listen(o.listen.path, done);
      else server.listen({ host: o.listen.host, port: o.listen.port, exclusive: true }, done);
    }).catch((e: NodeJS.ErrnoException) => {
      const why = e.code === 'EADDRINUSE' ? 'address already in use' : e.code === 'EACCES' ? 'permission denied' : e.message;
      throw new Error(`cannot listen on ${describeListen(o.listen)}: ${why}`);
    });
    server.on('error', () => undefined);
    return new RfbServer(server, o);
  }

  /** The bound TCP port (useful with port 0), or undefined for unix sockets. */
  get port(): number | undefined {
    const a = this.server.address();
    return a !== null && typeof a === 'object' ? a.port : undefined;
  }

  get clientCount(): number { return this.sessions.size; }

  private accept(sock: net.Socket): void {
    sock.setNoDelay(true);
    let s: RfbSession | undefined = undefined;
    const handshake = setTimeout(() => s?.end('handshake timed out'), HANDSHAKE_TIMEOUT_MS);
    handshake.unref();
    s = new RfbSession({
      password: this.o.password,
      name: this.o.name,
      screen: () => this.o.screen(),
      input: this.o.input,
      write: (b) => { if (!sock.destroyed) sock.write(b); },
      close: (reason) => {
        if (reason !== undefined) {
          if (reason.startsWith('authentication')) this.stats.rejected++;
          this.o.log?.(`VNC client ${peer(sock)}: ${reason}`);
        }
        sock.end();
        sock.destroySoon();
      },
    });
    const session = s;
    this.sessions.add(session);
    this.stats.clients++;
    sock.on('data', (d) => {
      const wasReady = session.ready;
      session.feed(d);
      if (!wasReady && session.ready) { clearTimeout(handshake); this.resolveFirst(); }
      if (session.pendingRequest) this.startRefresh();
    });
    const gone = (): void => {
      clearTimeout(handshake);
      session.end();
      this.sessions.delete(session);
      this.stats.updates += session.stats.updates;
      this.stats.bytes += session.stats.bytes;
      if (this.sessions.size === 0) this.stopRefresh();
    };
    sock.on('close', gone);
    sock.on('error', gone);
  }

  private startRefresh(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
    this.timer.unref();
    this.refresh();
  }

  private stopRefresh(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One refresh: scan once if any client waits for an update, then serve
   * every client whose request can be answered. */
  refresh(): void {
    let waiting = false;
    for (const s of this.sessions) if (s.ready && s.pendingRequest) waiting = true;
    if (!waiting) return;
    const screen = this.o.screen();
    const tiles = this.scanner.scan(screen, this.o.dirtyPages?.());
    this.stats.scans++;
    for (const s of this.sessions) {
      if (!s.ready) continue;
      s.markDirty(tiles, this.scanner.cols);
      s.update(screen);
    }
  }

  /** Current totals, including clients still connected. */
  totals(): Record<string, number> {
    let updates = this.stats.updates;
    let bytes = this.stats.bytes;
    for (const s of this.sessions) { updates += s.stats.updates; bytes += s.stats.bytes; }
    return {
      'VNC clients connected': this.sessions.size, 'VNC clients accepted': this.stats.clients,
      'VNC clients failing authentication': this.stats.rejected, 'VNC framebuffer scans': this.stats.scans,
      'VNC bands compared': this.scanner.counts.compared, 'VNC bands skipped by the dirty log': this.scanner.counts.skipped,
      'VNC updates sent': updates, 'VNC bytes sent': bytes,
    };
  }

  async close(): Promise<void> {
    this.stopRefresh();
    for (const s of this.sessions) s.end();
    await new Promise<void>((r) => this.server.close(() => r()));
    // A sandboxed bhyve may not remove it (Landlock); the next run replaces it.
    if (this.o.listen.kind === 'unix') try { fs.rmSync(this.o.listen.path, { force: true }); } catch { /* left */ }
  }
}

function peer(sock: net.Socket): string {
  return sock.remoteAddress ? `${sock.remoteAddress}:${sock.remotePort}` : 'on unix socket';
}

/** A socket file left by an earlier run would make listen() fail. */
function removeStaleSocket(path: string): void {
  try {
    if (fs.lstatSync(path).isSocket()) fs.rmSync(path);
  } catch { /* absent */ }
}
