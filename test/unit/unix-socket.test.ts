// sys/unix-socket.ts: bytes and descriptors (SCM_RIGHTS) across a UNIX
// stream socket, as vfio-user passes eventfds and guest-memory files.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { closeFd, eventfd, eventfdRead, eventfdWrite, EFD_NONBLOCK, EFD_CLOEXEC } from '../../src/sys/eventfd.js';
import {
  closeSocket, pollIn, recvWithFds, sendWithFds, setReceiveTimeout, unixAccept, unixConnect, unixListen, unixSocketPair, MAX_FDS_PER_MESSAGE,
} from '../../src/sys/unix-socket.js';

describe('unix-socket', () => {
  it('carries bytes and eventfds: the received descriptor is the same eventfd', () => {
    const [a, b] = unixSocketPair();
    const efds = [eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)];
    sendWithFds(a, new Uint8Array([1, 2, 3, 4, 5]), efds);
    const r = recvWithFds(b, 5)!;
    expect([...r.data]).toEqual([1, 2, 3, 4, 5]);
    expect(r.fds).toHaveLength(2);
    expect(r.fds).not.toContain(efds[0]);
    // Signalling the received copy is seen on the original.
    expect(eventfdWrite(r.fds[1], 3)).toBe(0);
    expect(eventfdRead(efds[1])).toBe(3n);
    expect(eventfdRead(efds[0])).toBe(0n);
    for (const f of [...efds, ...r.fds]) closeFd(f);
    closeSocket(a); closeSocket(b);
  });

  it('reads a message in two parts, descriptors with the first; EOF is undefined', () => {
    const [a, b] = unixSocketPair();
    const big = new Uint8Array(300_000).map((_, i) => i & 0xff);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'us-'));
    const f = fs.openSync(path.join(tmp, 'x'), 'w+');
    fs.writeSync(f, 'hello');
    // A large message needs the peer to read while we write: send from a pair of calls that fit the buffer.
    sendWithFds(a, big.subarray(0, 100_000), [f]);
    const head = recvWithFds(b, 16)!;
    expect(head.fds).toHaveLength(1);
    const rest = recvWithFds(b, 100_000 - 16)!;
    expect(rest.fds).toHaveLength(0);
    expect(Buffer.compare(Buffer.concat([head.data, rest.data]), big.subarray(0, 100_000))).toBe(0);
    const buf = Buffer.alloc(5);
    fs.readSync(head.fds[0], buf, 0, 5, 0);
    expect(buf.toString()).toBe('hello');
    fs.closeSync(head.fds[0]); fs.closeSync(f);
    closeSocket(a);
    expect(recvWithFds(b, 16)).toBeUndefined();
    closeSocket(b);
    fs.rmSync(tmp, { recursive: true });
  });

  it('refuses more descriptors than one message may carry', () => {
    const [a, b] = unixSocketPair();
    expect(() => sendWithFds(a, new Uint8Array(1), new Array(MAX_FDS_PER_MESSAGE + 1).fill(0))).toThrow(/descriptors/);
    closeSocket(a); closeSocket(b);
  });

  it('listens, connects and accepts on a path; poll sees the data', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'us-'));
    const p = path.join(tmp, 'sock');
    const l = unixListen(p);
    const c = unixConnect(p);
    const s = unixAccept(l);
    expect(pollIn([s], 0)).toBeUndefined();
    sendWithFds(c, new Uint8Array([9]));
    expect(pollIn([s], 1000)![0] & 1).toBe(1);
    expect([...recvWithFds(s, 1)!.data]).toEqual([9]);
    expect(() => unixConnect(path.join(tmp, 'none'))).toThrow(/connect .*none: No such file/);
    for (const f of [l, c, s]) closeSocket(f);
    fs.rmSync(tmp, { recursive: true });
  });
});

describe('unix-socket receive timeout', () => {
  it('a peer that never answers: recv fails with a timeout instead of blocking forever', () => {
    const [a, b] = unixSocketPair();
    setReceiveTimeout(a, 150);
    const t0 = Date.now();
    expect(() => recvWithFds(a, 16)).toThrow(/no answer in time/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(100);
    closeSocket(a); closeSocket(b);
  });
});
