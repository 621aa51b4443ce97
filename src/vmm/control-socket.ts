// The control socket of a running VM: a UNIX socket (mode 0600) in the VM's
// runtime directory through which bhyvectl talks to the bhyve that runs it.
// Protocol: one JSON object per line each way. Requests carry
// {"version": 1, "op": "...", ...}; each gets exactly one response
// {"version": 1, "ok": true, "result": ...} or {"version": 1, "ok": false,
// "error": "one line"}. Unknown versions and operations are refused.

import fs from 'node:fs';
import net from 'node:net';

import { VmObjectError } from './runtime-dir.js';

export const CONTROL_PROTOCOL_VERSION = 1;
export const CONTROL_SOCKET_NAME = 'control.sock';
const MAX_REQUEST_BYTES = 64 * 1024;

export type ControlRequest = { version: number; op: string } & Record<string, unknown>;
export type ControlResponse =
  | { version: number; ok: true; result: unknown }
  | { version: number; ok: false; error: string };

/** Operation name -> handler; a handler's exception becomes an error reply. */
export type ControlHandlers = Record<string, (req: ControlRequest) => unknown | Promise<unknown>>;

export class ControlServer {
  private closed = false;

  private constructor(private readonly server: net.Server, readonly path: string) {}

  static async listen(path: string, handlers: ControlHandlers): Promise<ControlServer> {
    // A stale socket of a dead bhyve goes; anything else there is not ours to remove.
    let st: fs.Stats | undefined;
    try { st = fs.lstatSync(path); } catch { st = undefined; }
    if (st && !st.isSocket()) throw new VmObjectError(`cannot create the control socket ${path}: a ${kindOf(st)} is in its place`);
    if (st) fs.rmSync(path, { force: true });
    // allowHalfOpen: a client may send its requests and shut down its side
    // (as `nc -N` does); the replies still owed are written before we end.
    const server = net.createServer({ allowHalfOpen: true }, (sock) => serve(sock, handlers));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // Created with mode 0600 regardless of umask: only the owner may talk.
      const old = process.umask(0o177);
      server.listen(path, () => { process.umask(old); resolve(); });
    });
    server.unref();
    return new ControlServer(server, path);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.server.close();
    fs.rmSync(this.path, { force: true });
  }
}

function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return 'directory';
  if (st.isSymbolicLink()) return 'symbolic link';
  if (st.isFile()) return 'regular file';
  return 'file that is not a socket';
}

// Requests are answered one at a time, in order. A client that sends
// requests but does not read the replies must not make us queue replies
// without bound (100k pipelined requests grew RSS by 265 MB): after a
// write the kernel and the socket's buffer cannot take, the next request
// waits for 'drain', and reading stops while more than MAX_PENDING_BYTES
// of requests wait.
const MAX_PENDING_BYTES = 256 * 1024;

function serve(sock: net.Socket, handlers: ControlHandlers): void {
  let buf = '';
  let busy = false;
  sock.setEncoding('utf8');
  sock.on('error', () => sock.destroy());
  const writable = (): Promise<void> => new Promise((resolve) => {
    const done = (): void => { sock.off('drain', done); sock.off('close', done); resolve(); };
    sock.once('drain', done);
    sock.once('close', done);
  });
  let peerEnded = false;
  const work = async (): Promise<void> => {
    if (busy) return;
    busy = true;
    try {
      for (let nl = buf.indexOf('\n'); nl >= 0 && !sock.destroyed; nl = buf.indexOf('\n')) {
        if (nl > MAX_REQUEST_BYTES) break; // refused below, however it arrived
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const r = await answer(line, handlers);
        if (sock.destroyed) return;
        if (!sock.write(`${JSON.stringify(r)}\n`)) await writable();
        if (buf.length <= MAX_PENDING_BYTES && sock.isPaused()) sock.resume();
      }
      const first = buf.indexOf('\n');
      if ((first < 0 ? buf.length : first) > MAX_REQUEST_BYTES && !sock.destroyed) {
        buf = '';
        reply(sock, { version: CONTROL_PROTOCOL_VERSION, ok: false, error: 'request too long' });
        sock.end();
      }
      // The peer sent its last request: answer what is complete, then end.
      if (peerEnded && !sock.destroyed) sock.end();
    } finally {
      busy = false;
    }
  };
  sock.on('end', () => {
    peerEnded = true;
    void work();
  });
  sock.on('data', (chunk: string) => {
    buf += chunk;
    if (buf.length > MAX_PENDING_BYTES) sock.pause();
    void work();
  });
}

async function answer(line: string, handlers: ControlHandlers): Promise<ControlResponse> {
  const err = (error: string): ControlResponse => ({ version: CONTROL_PROTOCOL_VERSION, ok: false, error });
  let req: ControlRequest;
  try {
    req = JSON.parse(line) as ControlRequest;
  } catch {
    return err('malformed request (not JSON)');
  }
  if (typeof req !== 'object' || req === null) return err('malformed request');
  if (req.version !== CONTROL_PROTOCOL_VERSION) return err(`unsupported protocol version ${String(req.version)} (this bhyve speaks ${CONTROL_PROTOCOL_VERSION})`);
  const h = Object.prototype.hasOwnProperty.call(handlers, req.op) ? handlers[req.op] : undefined;
  if (!h) return err(`unknown operation '${String(req.op)}'`);
  try {
    return { version: CONTROL_PROTOCOL_VERSION, ok: true, result: (await h(req)) ?? null };
  } catch (e) {
    return err((e as Error).message);
  }
}

function reply(sock: net.Socket, r: ControlResponse): void {
  if (!sock.destroyed) sock.write(`${JSON.stringify(r)}\n`);
}

/** Client side: one request, one response. */
export async function controlRequest(path: string, op: string, args: Record<string, unknown> = {}, timeoutMs = 10_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(path);
    let buf = '';
    const timer = setTimeout(() => { sock.destroy(); reject(new Error(`no answer from ${path}`)); }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify({ version: CONTROL_PROTOCOL_VERSION, op, ...args })}\n`));
    sock.on('data', (c: string) => {
      buf += c;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      sock.end();
      let r: ControlResponse;
      try {
        r = JSON.parse(buf.slice(0, nl)) as ControlResponse;
      } catch {
        reject(new Error('malformed response from bhyve'));
        return;
      }
      if (r.ok) resolve(r.result);
      else reject(new Error(r.error));
    });
    sock.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}
