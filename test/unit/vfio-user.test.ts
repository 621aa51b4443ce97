// The vfio-user protocol (devices/vfio-user/): the codec, a client and a
// server joined in-process and over a socket pair, the test DMA engine,
// and what a hostile peer's messages get (error replies, not crashes).
import { describe, expect, it } from 'vitest';
import { crc32 } from 'node:zlib';
import { VfioUserClient } from '../../src/devices/vfio-user/client.js';
import { Endpoint, SocketWire, VfioUserError } from '../../src/devices/vfio-user/endpoint.js';
import * as P from '../../src/devices/vfio-user/protocol.js';
import { VfioUserServer } from '../../src/devices/vfio-user/server.js';
import { REG, STATUS, TEST_DMA_ID, TestDmaDevice } from '../../src/devices/vfio-user/test-dma-device.js';
import { closeFd, eventfd, eventfdRead, EFD_CLOEXEC, EFD_NONBLOCK } from '../../src/sys/eventfd.js';
import { IRQ_SET_FLAG, PCI_IRQ, REGION_INFO_FLAG } from '../../src/sys/vfio-abi.js';
import { unixSocketPair } from '../../src/sys/unix-socket.js';
import { loopbackClient } from '../support/vfio-user-loopback.js';

const u32 = (v: number) => { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, v, true); return b; };
const rd32 = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);

/** Guest memory of a test: a flat array at address 0. */
function flatMemory(size: number) {
  const bytes = new Uint8Array(size);
  return {
    bytes,
    read: (a: number, n: number) => { if (a + n > size) throw new RangeError('out'); return bytes.slice(a, a + n); },
    write: (a: number, d: Uint8Array) => { if (a + d.length > size) throw new RangeError('out'); bytes.set(d, a); },
  };
}

describe('vfio-user codec', () => {
  it('header round trip and checks', () => {
    const m = P.encodeMessage(7, P.CMD.REGION_READ, P.FLAG.REPLY | P.FLAG.ERROR, new Uint8Array([1, 2]), 22);
    const h = P.decodeHeader(m);
    expect(h).toEqual({ id: 7, command: 9, size: 18, flags: 0x21, error: 22 });
    const bad = m.slice(); new DataView(bad.buffer).setUint32(4, 8, true);
    expect(() => P.decodeHeader(bad)).toThrow(/smaller than its header/);
    new DataView(bad.buffer).setUint32(4, 64 << 20, true);
    expect(() => P.decodeHeader(bad)).toThrow(/exceeds/);
    const t = m.slice(); t[8] = 0x7;
    expect(() => P.decodeHeader(t)).toThrow(/message type 7/);
  });

  it('VERSION carries JSON capabilities; bad JSON is a protocol error', () => {
    const v = P.decodeVersion(P.encodeVersion({ major: 0, minor: 1, capabilities: { max_msg_fds: 8, pgsizes: 4096 } }));
    expect(v).toEqual({ major: 0, minor: 1, capabilities: { max_msg_fds: 8, pgsizes: 4096 } });
    expect(P.decodeVersion(new Uint8Array([0, 0, 1, 0]))).toEqual({ major: 0, minor: 1, capabilities: {} });
    const bad = (s: string) => { const j = Buffer.from(s + '\0'); const b = new Uint8Array(4 + j.length); b.set(j, 4); return b; };
    expect(() => P.decodeVersion(bad('{"capabilities":'))).toThrow(/not JSON/);
    expect(() => P.decodeVersion(bad('[1]'))).toThrow(/not an object/);
    expect(() => P.decodeVersion(bad('{"capabilities":{"max_msg_fds":-1}}'))).toThrow(/max_msg_fds/);
  });

  it('region info with a sparse mmap capability; a bad chain is refused', () => {
    const r = { index: 0, flags: 7, size: 0x4000, offset: 0x1000, sparse: [{ offset: 0, size: 0x1000 }, { offset: 0x3000, size: 0x1000 }] };
    const b = P.encodeRegionInfo(r, 256);
    expect(P.decodeRegionInfo(b)).toEqual({ ...r, flags: 7 | 8, argsz: 32 + 16 + 32 });
    // argsz too small: the fixed part, saying how much is needed.
    const short = P.encodeRegionInfo(r, 32);
    expect(short.length).toBe(32);
    expect(P.decodeRegionInfo(short).argsz).toBe(80);
    const loop = b.slice(); new DataView(loop.buffer).setUint32(32 + 4, 32, true);
    expect(() => P.decodeRegionInfo(loop)).toThrow(/outside the reply/);
    const beyond = b.slice(); new DataView(beyond.buffer).setBigUint64(32 + 16 + 16 + 8, 0x2000n, true);
    expect(() => P.decodeRegionInfo(beyond)).toThrow(/beyond the region/);
  });

  it('region and DMA accesses check their data length', () => {
    const a = P.encodeRegionAccess({ offset: 8, region: 2, count: 4, data: u32(5) });
    expect(P.decodeRegionAccess(a, true)).toMatchObject({ offset: 8, region: 2, count: 4 });
    expect(() => P.decodeRegionAccess(a.subarray(0, 18), true)).toThrow(/carries 2/);
    const d = P.encodeDmaAccess({ address: 2 ** 40, count: 3, data: new Uint8Array(3) });
    expect(P.decodeDmaAccess(d, true)).toMatchObject({ address: 2 ** 40, count: 3 });
    const huge = P.encodeDmaAccess({ address: 0, count: 0 }); new DataView(huge.buffer).setBigUint64(8, 1n << 40n, true);
    expect(() => P.decodeDmaAccess(huge, false)).toThrow(/exceeds/);
    const far = P.encodeDmaAccess({ address: 0, count: 1 }); new DataView(far.buffer).setBigUint64(0, 1n << 60n, true);
    expect(() => P.decodeDmaAccess(far, false)).toThrow(/beyond 2\^53/);
  });
});

describe('vfio-user client and server (test DMA engine)', () => {
  it('describes the device: info, regions (BAR 4 mmap-able with a file), irqs, config space', () => {
    const { client } = loopbackClient(new TestDmaDevice());
    expect(client.serverCaps).toMatchObject({ max_msg_fds: 16, pgsizes: 4096 });
    expect(client.deviceInfo()).toEqual({ flags: 3, numRegions: 9, numIrqs: 5 });
    const bar0 = client.regionInfo(0);
    expect(bar0).toMatchObject({ index: 0, size: 4096, flags: REGION_INFO_FLAG.READ | REGION_INFO_FLAG.WRITE });
    expect(bar0.fd).toBeUndefined();
    const bar4 = client.regionInfo(4);
    expect(bar4.flags & REGION_INFO_FLAG.MMAP).toBeTruthy();
    expect(bar4.fd).toBeGreaterThan(2);
    closeFd(bar4.fd!);
    expect(client.regionInfo(1)).toMatchObject({ size: 0, flags: 0 });
    expect(client.irqInfo(PCI_IRQ.MSIX)).toMatchObject({ count: 2 });
    const cfg = client.regionRead(7, 0, 256);
    expect(rd32(cfg)).toBe(0x00f01b36);
    expect(cfg[0x34]).toBe(0x40);
    expect(rd32(client.regionRead(0, REG.ID, 4))).toBe(TEST_DMA_ID);
  });

  it('copies by DMA_READ/DMA_WRITE messages and signals the MSI-X eventfd', () => {
    const mem = flatMemory(1 << 20);
    const { client, server } = loopbackClient(new TestDmaDevice(), mem);
    client.dmaMap({ flags: P.DMA_FLAG.READ | P.DMA_FLAG.WRITE, offset: 0, address: 0, size: 1 << 20 });
    const efds = [eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)];
    client.setIrqs({ flags: IRQ_SET_FLAG.DATA_EVENTFD | IRQ_SET_FLAG.ACTION_TRIGGER, index: PCI_IRQ.MSIX, start: 0, count: 2 }, efds);
    for (let i = 0; i < 3000; i++) mem.bytes[0x1000 + i] = (i * 7) & 0xff;
    const w = (off: number, v: number) => client.regionWrite(0, off, u32(v));
    w(REG.SRC, 0x1000); w(REG.DST, 0x9000); w(REG.LEN, 3000); w(REG.VECTOR, 1); w(REG.DOORBELL, 1);
    expect(Buffer.compare(mem.bytes.subarray(0x9000, 0x9000 + 3000), mem.bytes.subarray(0x1000, 0x1000 + 3000))).toBe(0);
    expect(rd32(client.regionRead(0, REG.STATUS, 4))).toBe(STATUS.DONE);
    expect(eventfdRead(efds[1])).toBe(1n);
    expect(eventfdRead(efds[0])).toBe(0n);
    expect(client.dmaServed).toMatchObject({ reads: 1, writes: 1, bytes: 6000 });
    expect(server.stats.dmaMessages).toBe(2);
    // The completion record in BAR 4.
    const rec = client.regionRead(4, 0, 12);
    expect([rd32(rec), rd32(rec.subarray(4)), rd32(rec.subarray(8))]).toEqual([1, 3000, crc32(mem.bytes.subarray(0x1000, 0x1000 + 3000))]);
    for (const f of efds) closeFd(f);
  });

  it('a copy outside the DMA windows is asked of the client, which refuses it: error status, fault address, memory untouched', () => {
    const mem = flatMemory(1 << 20);
    // The client allows what it mapped (as its DMA space would).
    const asked: number[] = [];
    let limit = 0x8000;
    const guarded = {
      read: (a: number, n: number) => { asked.push(a); if (a + n > limit) throw new RangeError('not mapped'); return mem.read(a, n); },
      write: (a: number, d: Uint8Array) => { asked.push(a); if (a + d.length > limit) throw new RangeError('not mapped'); mem.write(a, d); },
    };
    const { client } = loopbackClient(new TestDmaDevice(), guarded);
    client.dmaMap({ flags: P.DMA_FLAG.READ | P.DMA_FLAG.WRITE, offset: 0, address: 0, size: 0x8000 });
    mem.bytes.fill(0x55, 0x9000, 0xa000);
    const w = (off: number, v: number) => client.regionWrite(0, off, u32(v));
    w(REG.SRC, 0x1000); w(REG.DST, 0x9000); w(REG.LEN, 16); w(REG.DOORBELL, 1);
    expect(rd32(client.regionRead(0, REG.STATUS, 4))).toBe(STATUS.ERROR);
    expect(rd32(client.regionRead(0, REG.FAULT, 4))).toBe(0x9000);
    expect(mem.bytes[0x9000]).toBe(0x55);
    // The mapping goes away: reads fail too.
    client.dmaUnmap(0, 0x8000);
    limit = 0;
    w(REG.STATUS, 3); w(REG.DST, 0x2000); w(REG.DOORBELL, 1);
    expect(rd32(client.regionRead(0, REG.STATUS, 4))).toBe(STATUS.ERROR);
    expect(rd32(client.regionRead(0, REG.FAULT, 4))).toBe(0x1000);
    expect(() => client.dmaUnmap(0, 0x8000)).toThrow(VfioUserError);
    expect(client.dmaServed.faults).toBe(2);
    expect(asked).toEqual([0x1000, 0x9000, 0x1000]);
  });

  it('answers hostile requests with errors and keeps serving', () => {
    const { client } = loopbackClient(new TestDmaDevice());
    const ep = client.endpoint;
    const errno = (f: () => unknown) => { try { f(); } catch (e) { return (e as VfioUserError).errno; } return 0; };
    expect(errno(() => client.regionRead(0, 4090, 8))).toBe(22);
    expect(errno(() => client.regionRead(9, 0, 4))).toBe(22);
    expect(errno(() => client.regionRead(1, 0, 4))).toBe(22);
    expect(errno(() => client.regionInfo(200))).toBe(22);
    expect(errno(() => ep.call(P.CMD.REGION_WRITE, P.encodeRegionAccess({ offset: 0, region: 0, count: 8 })))).toBe(22);
    expect(errno(() => ep.call(P.CMD.DMA_MAP, new Uint8Array(3)))).toBe(22);
    expect(errno(() => client.dmaMap({ flags: 3, offset: 0, address: 0x1000, size: 0 }))).toBe(22);
    client.dmaMap({ flags: 3, offset: 0, address: 0x1000, size: 0x1000 });
    expect(errno(() => client.dmaMap({ flags: 3, offset: 0, address: 0x1800, size: 0x1000 }))).toBe(17);
    expect(errno(() => client.setIrqs({ flags: IRQ_SET_FLAG.DATA_EVENTFD | IRQ_SET_FLAG.ACTION_TRIGGER, index: PCI_IRQ.MSIX, start: 1, count: 5 }))).toBe(22);
    expect(errno(() => client.setIrqs({ flags: IRQ_SET_FLAG.DATA_EVENTFD | IRQ_SET_FLAG.DATA_BOOL | IRQ_SET_FLAG.ACTION_TRIGGER, index: 2, start: 0, count: 1 }))).toBe(22);
    expect(errno(() => client.setIrqs({ flags: IRQ_SET_FLAG.DATA_NONE | IRQ_SET_FLAG.ACTION_TRIGGER, index: 9, start: 0, count: 1 }))).toBe(22);
    expect(errno(() => ep.call(99))).toBe(95);
    expect(rd32(client.regionRead(0, 0, 4))).toBe(TEST_DMA_ID);
  });

  it('refuses commands before VERSION', () => {
    const [a, b] = unixSocketPair();
    const server = new VfioUserServer(new TestDmaDevice());
    const sep = server.connect(new SocketWire(b));
    const raw = new Endpoint(new SocketWire(a), () => ({}));
    // The server reads our command from the socket buffer when we ask it to serve one.
    const wire = raw.wire as SocketWire;
    wire.send(P.encodeMessage(1, P.CMD.DEVICE_GET_INFO, 0, new Uint8Array(16)), []);
    expect(sep.serveOne()).toBe(true);
    const reply = wire.receive()!;
    expect(reply.flags & P.FLAG.ERROR).toBeTruthy();
    expect(reply.error).toBe(22);
    server.disconnect();
    raw.close();
  });

  it('over a socket pair: DMA through the mapped file the client sent, eventfds by SCM_RIGHTS', async () => {
    const { memfd } = await import('../../src/sys/memfd.js');
    const { mmap, PROT_READ, PROT_WRITE } = await import('../../src/sys/libc.js');
    const [a, b] = unixSocketPair();
    const dev = new TestDmaDevice();
    const server = new VfioUserServer(dev);
    const sep = server.connect(new SocketWire(b));
    const client = new VfioUserClient(new SocketWire(a));
    // Each client call needs the server to serve one message first: queue
    // the request, let the server answer it, then read the reply.
    const step = <T>(f: () => T): T => {
      const orig = client.endpoint.wire.receive.bind(client.endpoint.wire);
      (client.endpoint.wire as SocketWire).receive = () => { sep.serveOne(); return orig(); };
      try { return f(); } finally { (client.endpoint.wire as SocketWire).receive = orig; }
    };
    step(() => client.negotiate());
    const ram = memfd('guest', 1 << 20);
    const view = mmap(1 << 20, PROT_READ | PROT_WRITE, ram, 0, 'test ram');
    step(() => client.dmaMap({ flags: 3, offset: 0x10000, address: 0x100000, size: 0x10000 }, ram));
    expect(server.stats.dmaMapped).toBe(1);
    // A window past the end of the file would fault when touched: refused.
    expect(() => step(() => client.dmaMap({ flags: 3, offset: 0xf0000, address: 0x900000, size: 0x20000 }, ram))).toThrow(/errno 22/);
    expect(server.stats.dmaMapped).toBe(1);
    const efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    step(() => client.setIrqs({ flags: IRQ_SET_FLAG.DATA_EVENTFD | IRQ_SET_FLAG.ACTION_TRIGGER, index: PCI_IRQ.MSIX, start: 0, count: 1 }, [efd]));
    view.bytes.set(Buffer.from('hello, device'), 0x10000 + 0x100);
    const w = (off: number, v: number) => step(() => client.regionWrite(0, off, u32(v)));
    w(REG.SRC, 0x100100); w(REG.DST, 0x100800); w(REG.LEN, 13); w(REG.DOORBELL, 1);
    expect(Buffer.from(view.bytes.subarray(0x10800, 0x10800 + 13)).toString()).toBe('hello, device');
    expect(server.stats.dmaMessages).toBe(0);
    expect(eventfdRead(efd)).toBe(1n);
    closeFd(efd);
    view.unmap();
    closeFd(ram);
    server.disconnect();
    client.close();
  });
});
