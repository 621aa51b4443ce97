// sys/net-batch.ts (native/net-batch.c) alone, and virtio-net's transmit
// through it: a driver's chains in guest RAM that is a mapping of this
// process (as the VMM's is), frames out of a packet socket pair (one read,
// one frame, as a tap). Needs the library `npm run build` compiles.
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { BATCH_FRAMES, BATCH_IOVECS, FrameBatch, FrameReads, NET_BATCH_PATH, READ_FRAMES } from '../../src/sys/net-batch.js';
import { anonymousMapping, type Mapping } from '../../src/sys/libc.js';
import { packetPair } from '../../src/sys/packet-pair.js';
import { readFd, writeFd } from '../../src/sys/tap.js';
import { fdNetPort, TAP_READ_BYTES } from '../../src/devices/net/net-backend.js';
import { VirtioNet, VIRTIO_NET_F_MAC } from '../../src/devices/virtio/virtio-net.js';
import { VIRTIO_F_VERSION_1, featureBit } from '../../src/devices/virtio/virtio-constants.js';
import { FakeDriver } from './virtio-driver.js';
import { activateQueues } from './virtio-queues.js';

const BUILT = fs.existsSync(NET_BATCH_PATH);
const EMSGSIZE = 90;
const EAGAIN = 11;
const MAC = Uint8Array.from([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

const cleanups: Array<() => void> = [];
afterEach(() => { while (cleanups.length) cleanups.pop()!(); });

function pair(buf?: number): [number, number] {
  const p = packetPair(buf);
  cleanups.push(() => { fs.closeSync(p[0]); fs.closeSync(p[1]); });
  return p;
}

function mapping(size: number): Mapping {
  const m = anonymousMapping(size, 'test RAM');
  cleanups.push(() => m.unmap());
  return m;
}

function frame(len: number, seed: number): Uint8Array {
  const f = new Uint8Array(len);
  for (let i = 0; i < len; i++) f[i] = (i * 13 + seed) & 0xff;
  return f;
}

/** Every frame waiting at `fd`, in order. */
function drain(fd: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  const buf = new Uint8Array(1 << 17);
  for (let n; (n = readFd(fd, buf)) > 0;) out.push(buf.slice(0, n));
  return out;
}

describe.skipIf(!BUILT)('frame batches (needs dist/native/net-batch.so: npm run build)', () => {
  it('writes each queued frame whole and in order, gathered from pieces anywhere in a mapping', () => {
    const [vm, host] = pair();
    const ram = mapping(1 << 16).bytes;
    const a = frame(60, 1);
    ram.set(a, 100);
    // b in three pieces, the first not at a page or buffer boundary
    const b = frame(1514, 2);
    ram.set(b.subarray(0, 500), 2005);
    ram.set(b.subarray(500, 1000), 8192);
    ram.set(b.subarray(1000), 30000);
    const batch = FrameBatch.for(vm)!;
    expect(batch.add([ram.subarray(100, 160)])).toBe(true);
    expect(batch.add([ram.subarray(2005, 2505), ram.subarray(8192, 8692), ram.subarray(30000, 30514)])).toBe(true);
    expect(batch.frames).toBe(2);
    expect(batch.flush()).toBe(2);
    expect(Array.from(batch.results.subarray(0, 2))).toEqual([60, 1514]);
    expect(batch.flushes).toBe(1);
    expect(batch.frames).toBe(0);
    expect(drain(host)).toEqual([a, b]);
  });

  it('reports a frame the fd refuses as -errno and still writes the frames after it', () => {
    const [vm, host] = pair(16384);
    const ram = mapping(1 << 20).bytes;
    const big = 1 << 18; // more than the socket's buffer: EMSGSIZE
    ram.set(frame(100, 3), 0);
    ram.set(frame(100, 4), 200);
    const batch = FrameBatch.for(vm)!;
    batch.add([ram.subarray(0, 100)]);
    batch.add([ram.subarray(4096, 4096 + big)]);
    batch.add([ram.subarray(200, 300)]);
    batch.flush();
    expect(Array.from(batch.results.subarray(0, 3))).toEqual([100, -EMSGSIZE, 100]);
    expect(batch.errors).toBe(1);
    expect(drain(host)).toEqual([frame(100, 3), frame(100, 4)]);
  });

  it('takes only views of its own mappings, and no more frames or pieces than it has room for', () => {
    const [vm] = pair();
    const ram = mapping(1 << 16).bytes;
    const batch = FrameBatch.for(vm)!;
    expect(batch.add([new Uint8Array(64)])).toBe(false); // not a mapping: the caller sends it
    expect(batch.frames).toBe(0);
    expect(batch.full(BATCH_IOVECS + 1)).toBe(true);
    for (let i = 0; i < BATCH_FRAMES; i++) expect(batch.add([ram.subarray(0, 64)])).toBe(true);
    expect(batch.full(1)).toBe(true);
    expect(batch.add([ram.subarray(0, 64)])).toBe(false);
    expect(batch.flush()).toBe(BATCH_FRAMES);
  });
});

describe.skipIf(!BUILT)('virtio-net transmit by batch (needs dist/native/net-batch.so: npm run build)', () => {
  /** A driver whose transmit queue lives in a mapping; the device's
   * backend is one end of a packet socket pair. */
  function setup(batchIo?: boolean, socketBuffer = 4 << 20) {
    const [vm, host] = pair(socketBuffer);
    const ram = mapping(4 << 20).bytes;
    const tx = new FakeDriver(1024, 0, { bytes: ram, base: 0x100000 });
    const rx = new FakeDriver(16);
    const port = fdNetPort(vm);
    const dev = new VirtioNet({ mac: MAC, batchIo }, port);
    const a = activateQueues(dev, [rx, tx], featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_NET_F_MAC));
    /** Queues `f` behind a 12-byte header, split over `pieces` descriptors. */
    const offer = (f: Uint8Array, pieces = 1): void => {
      const h = tx.alloc(12);
      const bufs = [{ addr: h, len: 12 }];
      const step = Math.ceil(f.length / pieces);
      for (let at = 0; at < f.length; at += step) {
        const p = f.subarray(at, at + step);
        const addr = tx.alloc(p.length);
        tx.fill(addr, p);
        bufs.push({ addr, len: p.length });
      }
      tx.offer(tx.chain(bufs));
    };
    return { host, port, dev, tx, offer, ...a };
  }

  it('sends a queue of frames by one call per batch, in order, every chain returned', () => {
    const { host, dev, tx, offer, interrupts } = setup();
    const frames = Array.from({ length: 300 }, (_, i) => frame(60 + (i * 37) % 1455, i));
    frames.forEach((f, i) => offer(f, 1 + (i % 3)));
    dev.queueNotify(1);
    expect(drain(host)).toEqual(frames);
    expect(tx.usedIdx()).toBe(300);
    const ids = Array.from({ length: 300 }, (_, i) => tx.usedElem(i).id);
    expect(new Set(ids).size).toBe(300);
    expect(dev.stats.txFrames).toBe(300);
    expect(dev.stats.txBytes).toBe(frames.reduce((n, f) => n + f.length, 0));
    expect(dev.stats.txBatches).toBe(2); // 256, then 44
    expect(interrupts).toEqual([1]);
  });

  it('with batchio=false sends the same frames one call each', () => {
    const { host, dev, tx, offer } = setup(false);
    const frames = Array.from({ length: 20 }, (_, i) => frame(100 + i, i));
    for (const f of frames) offer(f, 2);
    dev.queueNotify(1);
    expect(drain(host)).toEqual(frames);
    expect(tx.usedIdx()).toBe(20);
    expect(dev.stats.txBatches).toBe(0);
  });

  it('a ring that breaks after batched frames: the device needs a reset and nothing batched is sent, then or later', () => {
    const { host, port, dev, tx, offer, resets } = setup();
    offer(frame(100, 1));
    offer(frame(100, 2));
    const h = tx.alloc(12);
    tx.offer(tx.chain([{ addr: h, len: 12 }, { addr: 0x7000_0000, len: 100 }])); // not guest RAM
    dev.queueNotify(1);
    expect(resets).toHaveLength(1);
    expect(drain(host)).toEqual([]);
    expect(port.txBatch!.frames).toBe(0);
    expect(tx.usedIdx()).toBe(0);
  });

  it('drops nonsensical chains and frames the host refuses, returns every chain, keeps the others in order', () => {
    const { host, dev, tx, offer } = setup(true, 16384);
    const good = [frame(100, 1), frame(200, 2), frame(300, 3)];
    offer(good[0]);
    offer(frame(5, 9)); // shorter than an Ethernet header
    offer(good[1], 2);
    offer(frame(65535, 8)); // more than the socket's buffer: EMSGSIZE
    offer(good[2]);
    dev.queueNotify(1);
    expect(drain(host)).toEqual(good);
    expect(tx.usedIdx()).toBe(5);
    expect(dev.stats.txFrames).toBe(3);
    expect(dev.stats.txDropped).toBe(2);
  });
});

describe.skipIf(!BUILT)('frames read by one call (needs dist/native/net-batch.so: npm run build)', () => {
  const sent = (n: number, from = 0) => Array.from({ length: n }, (_, i) => frame(60 + ((i + from) * 97) % 1455, i + from));

  it('reads what the fd holds, up to READ_FRAMES a call, each frame whole and in order', () => {
    const [vm, host] = pair();
    const frames = sent(READ_FRAMES + 4);
    for (const f of frames) expect(writeFd(host, f)).toBe(f.length);
    const reads = FrameReads.for(vm, 2048)!;
    expect(reads.take()).toBeNull();
    expect(reads.fill()).toBe(READ_FRAMES);
    expect(reads.fill()).toBe(READ_FRAMES); // nothing taken yet: no read
    expect(reads.calls).toBe(1);
    const got: Uint8Array[] = [];
    for (let f; (f = reads.take()) !== null;) got.push(f.slice());
    expect(reads.fill()).toBe(4);
    for (let f; (f = reads.take()) !== null;) got.push(f.slice());
    expect(got).toEqual(frames);
    expect(reads.fill()).toBe(-EAGAIN);
    expect(reads.left).toBe(0);
  });

  it('a port reads ahead only when every frame read was consumed; holds while any waits; says when it read dry', () => {
    const [vm, host] = pair();
    let dry = 0;
    const port = fdNetPort(vm, () => { dry++; });
    expect(port.peek()).toBeNull();
    expect(dry).toBe(1);
    const frames = sent(READ_FRAMES + 3);
    for (const f of frames) writeFd(host, f);
    const got: Uint8Array[] = [];
    const f0 = port.peek()!;
    expect(port.peek()).toBe(f0); // the same frame until consume()
    expect(port.holding).toBe(true);
    // frames read ahead go first: no read straight into a guest buffer
    expect(port.readInto!([new Uint8Array(TAP_READ_BYTES)])).toBe(-1);
    for (let f; (f = port.peek()) !== null;) { got.push(f.slice()); port.consume(); }
    expect(got).toEqual(frames);
    expect(port.holding).toBe(false);
    expect(dry).toBe(2);
    // frames read ahead and never delivered go when another thread takes
    // the fd over (dropHeld), and what comes after is read afresh
    for (const f of frames.slice(0, 3)) writeFd(host, f);
    expect(port.peek()).toEqual(frames[0]);
    port.dropHeld!();
    expect(port.holding).toBe(false);
    expect(port.peek()).toBeNull();
    writeFd(host, frames[5]);
    expect(port.peek()).toEqual(frames[5]);
    port.consume();
    // with none read ahead, readInto reads the next frame itself
    writeFd(host, frames[0]);
    const into = new Uint8Array(TAP_READ_BYTES);
    expect(port.readInto!([into])).toBe(frames[0].length);
    expect(into.subarray(0, frames[0].length)).toEqual(frames[0]);
  });

  it('virtio-net receives the same frames into the driver\'s buffers with batchio on and off', () => {
    for (const batchIo of [true, false]) {
      const [vm, host] = pair();
      const rx = new FakeDriver(64, 1 << 20);
      const tx = new FakeDriver(16);
      const dev = new VirtioNet({ mac: MAC, batchIo }, fdNetPort(vm, () => {}, false, batchIo));
      activateQueues(dev, [rx, tx], featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_NET_F_MAC));
      const bufs = Array.from({ length: 40 }, () => rx.alloc(2048));
      for (const b of bufs) rx.offer(rx.chain([{ addr: b, len: 2048, write: true }]));
      const frames = sent(40, batchIo ? 0 : 7);
      for (const f of frames) writeFd(host, f);
      dev.poll();
      expect(rx.usedIdx()).toBe(40);
      const got = Array.from({ length: 40 }, (_, i) => {
        const e = rx.usedElem(i);
        return rx.read(bufs[e.id] ?? bufs[i], e.len).subarray(12);
      });
      expect(got).toEqual(frames);
      expect(dev.stats.rxFrames).toBe(40);
    }
  });
});
