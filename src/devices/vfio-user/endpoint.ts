// One side of a vfio-user connection: sends commands and waits for their
// replies, and answers the commands the peer sends. Both directions share
// the socket (no twin socket): while a call waits for its reply, commands
// from the peer are served in between (the server's DMA_READ/WRITE while
// the client waits for the REGION_WRITE that started the DMA), as the
// spec's "Command Concurrency" allows. Everything is synchronous: the
// client runs on the device thread, the server in its own process.
//
// The wire is a socket (SocketWire, descriptors by SCM_RIGHTS) or, for
// unit tests and the in-process comparison, a loopback pair that hands
// messages straight to the other endpoint.

import { closeFd } from '../../sys/eventfd.js';
import { libcFunc } from '../../sys/libc.js';
import { closeSocket, recvWithFds, sendWithFds } from '../../sys/unix-socket.js';
import {
  COMMAND_NAMES, decodeHeader, encodeMessage, FLAG, HEADER_SIZE, isReply, type Message, ProtocolError,
} from './protocol.js';

/** A command the peer answered with the error bit (errno in `errno`). */
export class VfioUserError extends Error {
  constructor(readonly command: number, readonly errno: number, detail?: string) {
    super(`vfio-user ${COMMAND_NAMES[command] ?? `command ${command}`} failed${errno ? `: errno ${errno}` : ''}${detail ? ` (${detail})` : ''}`);
  }
}

/** The connection is gone (peer closed, or a protocol violation closed it). */
export class VfioUserDisconnected extends Error {}

/** Moves whole messages. */
export interface Wire {
  send(message: Uint8Array, fds: readonly number[]): void;
  /** The next message (blocking); undefined when the peer closed. */
  receive(): Message | undefined;
  close(): void;
}

/** A connected UNIX stream socket. */
export class SocketWire implements Wire {
  constructor(readonly fd: number) {}

  send(message: Uint8Array, fds: readonly number[]): void {
    sendWithFds(this.fd, message, fds);
  }

  receive(): Message | undefined {
    const h = recvWithFds(this.fd, HEADER_SIZE);
    if (!h) return undefined;
    let header;
    try {
      header = decodeHeader(h.data);
    } catch (e) {
      for (const f of h.fds) closeFd(f);
      throw e;
    }
    let payload: Uint8Array = new Uint8Array(0);
    if (header.size > HEADER_SIZE) {
      const body = recvWithFds(this.fd, header.size - HEADER_SIZE);
      if (!body) throw new VfioUserDisconnected('peer closed in the middle of a message');
      // Descriptors belong with the header; any later ones are a peer's mistake.
      for (const f of body.fds) closeFd(f);
      payload = body.data;
    }
    return { ...header, payload, fds: h.fds };
  }

  close(): void {
    closeSocket(this.fd);
  }
}

const dupFn = libcFunc('int dup(int fd)');

/** Two endpoints' wires joined in-process: a message sent on one is
 * received on the other; descriptors are duplicated as SCM_RIGHTS would. */
export function loopbackWires(): [LoopbackWire, LoopbackWire] {
  const a = new LoopbackWire();
  const b = new LoopbackWire();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

export class LoopbackWire implements Wire {
  peer!: LoopbackWire;
  private readonly queue: Message[] = [];
  private closed = false;
  /** Set to the endpoint on the other side: a receive with nothing queued
   * lets it serve what we sent (there is no second thread to do it). */
  peerEndpoint: Endpoint | undefined;

  send(message: Uint8Array, fds: readonly number[]): void {
    if (this.closed || this.peer.closed) throw new VfioUserDisconnected('loopback closed');
    const h = decodeHeader(message);
    this.peer.queue.push({ ...h, payload: message.slice(HEADER_SIZE), fds: fds.map((f) => dupFn(f) as number) });
  }

  receive(): Message | undefined {
    while (this.queue.length === 0) {
      if (this.closed || this.peer.closed || !this.peerEndpoint) return undefined;
      if (!this.peerEndpoint.serveOne()) return undefined;
    }
    return this.queue.shift();
  }

  close(): void {
    this.closed = true;
  }
}

/** What an endpoint answers a command with. Throw VfioUserError for an
 * error reply. Descriptors in `fds` are sent and stay the handler's. */
export interface Reply {
  payload?: Uint8Array;
  fds?: number[];
}

export type CommandHandler = (m: Message) => Reply;

export class Endpoint {
  private nextId = 1;
  /** Messages moved, for stats. */
  readonly counts = { sent: 0, received: 0, served: 0 };

  constructor(readonly wire: Wire, private readonly handler: CommandHandler) {}

  /**
   * Sends a command and returns the reply's payload and descriptors.
   * Commands from the peer that arrive first are served. Throws
   * VfioUserError for an error reply, VfioUserDisconnected when the
   * peer is gone.
   */
  call(command: number, payload: Uint8Array = new Uint8Array(0), fds: readonly number[] = []): Message {
    const id = this.nextId;
    this.nextId = (this.nextId + 1) & 0xffff;
    this.sendMessage(encodeMessage(id, command, FLAG.COMMAND, payload), fds);
    for (;;) {
      const m = this.receiveMessage();
      if (!isReply(m)) {
        this.serve(m);
        continue;
      }
      if (m.id !== id || m.command !== command) {
        for (const f of m.fds) closeFd(f);
        throw this.violation(`reply ${m.id}/${COMMAND_NAMES[m.command] ?? m.command} to command ${id}/${COMMAND_NAMES[command]}`);
      }
      if (m.flags & FLAG.ERROR) {
        for (const f of m.fds) closeFd(f);
        throw new VfioUserError(command, m.error);
      }
      return m;
    }
  }

  /** Receives one message and serves it (a command); false when the peer
   * closed. A reply nobody waits for is a protocol violation. */
  serveOne(): boolean {
    let m: Message;
    try {
      m = this.receiveMessage();
    } catch (e) {
      if (e instanceof VfioUserDisconnected) return false;
      throw e;
    }
    if (isReply(m)) {
      for (const f of m.fds) closeFd(f);
      throw this.violation(`unexpected reply ${m.id}/${COMMAND_NAMES[m.command] ?? m.command}`);
    }
    this.serve(m);
    return true;
  }

  close(): void {
    this.wire.close();
  }

  private serve(m: Message): void {
    this.counts.served++;
    let r: Reply;
    try {
      r = this.handler(m);
    } catch (e) {
      if (!(m.flags & FLAG.NO_REPLY)) {
        const errno = e instanceof VfioUserError ? e.errno : e instanceof ProtocolError ? 22 /* EINVAL */ : 5 /* EIO */;
        this.sendMessage(encodeMessage(m.id, m.command, FLAG.REPLY | FLAG.ERROR, new Uint8Array(0), errno), []);
      }
      if (!(e instanceof VfioUserError) && !(e instanceof ProtocolError)) throw e;
      return;
    }
    if (!(m.flags & FLAG.NO_REPLY)) this.sendMessage(encodeMessage(m.id, m.command, FLAG.REPLY, r.payload), r.fds ?? []);
  }

  private sendMessage(bytes: Uint8Array, fds: readonly number[]): void {
    try {
      this.wire.send(bytes, fds);
    } catch (e) {
      if (e instanceof VfioUserDisconnected) throw e;
      throw new VfioUserDisconnected(`vfio-user: send failed: ${(e as Error).message}`);
    }
    this.counts.sent++;
  }

  private receiveMessage(): Message {
    let m: Message | undefined;
    try {
      m = this.wire.receive();
    } catch (e) {
      if (e instanceof VfioUserDisconnected) throw e;
      throw new VfioUserDisconnected(`vfio-user: ${(e as Error).message}`);
    }
    if (!m) throw new VfioUserDisconnected('vfio-user: the peer closed the connection');
    this.counts.received++;
    return m;
  }

  private violation(what: string): VfioUserDisconnected {
    this.wire.close();
    return new VfioUserDisconnected(`vfio-user protocol violation: ${what}`);
  }
}
