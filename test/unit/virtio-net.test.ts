// virtio-net and its frame ring, driven as a guest driver would (descriptor
// chains in plain-buffer guest RAM, notify, used-ring checks) with a fake
// backend. No /dev/kvm, no tap.

import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import {
  VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VirtioNet, createVirtioNet,
  formatMac, netGenMac, netOptionsFromConfig, parseMac, parseMtu,
} from '../../src/devices/virtio/virtio-net.js';
import { tapNameOf, type NetPort } from '../../src/devices/net/net-backend.js';
import {
  VIRTIO_F_VERSION_1, VIRTIO_ID_NET, VIRTIO_RING_F_EVENT_IDX, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_NEXT,
  featureBit, hasFeature,
} from '../../src/devices/virtio/virtio-constants.js';
import { FakeDriver } from './virtio-driver.js';
import { activateQueues } from './virtio-queues.js';

class FakePort implements NetPort {
  rx: Uint8Array[] = [];
  sent: Uint8Array[] = [];
  peek(): Uint8Array | null { return this.rx[0] ?? null; }
  consume(): void { this.rx.shift(); }
  send(views: Uint8Array[]): boolean {
    this.sent.push(Buffer.concat(views.map((v) => Buffer.from(v))));
    return true;
  }
}

/** A backend that can also read a frame straight into the guest's buffers. */
class DirectPort extends FakePort {
  peeks = 0;
  direct: Uint8Array[][] = [];
  peek(): Uint8Array | null { this.peeks++; return super.peek(); }
  readInto(views: Uint8Array[]): number {
    const f = this.rx.shift();
    if (!f) return 0;
    this.direct.push([...views]);
    let at = 0;
    for (const v of views) { const n = Math.min(v.length, f.length - at); v.set(f.subarray(at, at + n)); at += n; }
    return f.length;
  }
}

const MAC = Uint8Array.from([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
const V1 = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_NET_F_MAC) | featureBit(VIRTIO_NET_F_STATUS);
const V1_MRG = V1 | featureBit(VIRTIO_NET_F_MRG_RXBUF);

function frame(len: number, seed = 1): Uint8Array {
  const f = new Uint8Array(len);
  for (let i = 0; i < len; i++) f[i] = (i * 7 + seed) & 0xff;
  return f;
}

function setup(features: bigint, mtu?: number) {
  const port = new FakePort();
  const dev = new VirtioNet({ mac: MAC, mtu }, port);
  const rx = new FakeDriver(16, 1 << 20);
  const tx = new FakeDriver(16, 1 << 20);
  const a = activateQueues(dev, [rx, tx], features);
  return { port, dev, rx, tx, ...a };
}

describe('virtio-net configuration', () => {
  it('derives the default MAC as bhyve net_genmac does', () => {
    const d = createHash('md5').update('3-0-vm0').digest();
    expect(Array.from(netGenMac(3, 0, 'vm0'))).toEqual([0x00, 0xa0, 0x98, d[0], d[1], d[2]]);
    const c = new ConfigTree();
    c.set('name', 'vm0');
    c.set('pci.0.3.0.device', 'virtio-net');
    expect(formatMac(netOptionsFromConfig(c, 'pci.0.3.0', 3, 0).mac)).toBe(formatMac(netGenMac(3, 0, 'vm0')));
    c.set('pci.0.3.0.mac', '52:54:0:12:34:56');
    expect(formatMac(netOptionsFromConfig(c, 'pci.0.3.0', 3, 0).mac)).toBe('52:54:00:12:34:56');
  });

  it('refuses bad MAC addresses and MTUs with one line', () => {
    expect(() => parseMac('01:00:5e:00:00:01')).toThrow(/Invalid MAC.*multicast/);
    expect(() => parseMac('00:00:00:00:00:00')).toThrow(/Invalid MAC.*zero/);
    expect(() => parseMac('52:54:00:12:34')).toThrow(/Invalid MAC/);
    expect(() => parseMac('52:54:00:12:34:zz')).toThrow(/Invalid MAC/);
    expect(parseMtu('9000')).toBe(9000);
    expect(parseMtu('0x5dc')).toBe(1500);
    expect(() => parseMtu('45')).toThrow(/Invalid MTU/);
    expect(() => parseMtu('65536')).toThrow(/Invalid MTU/);
    expect(() => parseMtu('12abc')).toThrow(/Invalid MTU/);
  });

  it('iothread_refill_us: default 20, 0 to 10000, anything else refused with one line', () => {
    const c = new ConfigTree();
    c.set('name', 'vm0');
    expect(netOptionsFromConfig(c, 'pci.0.3.0', 3, 0).iothreadRefillUs).toBe(20);
    c.set('pci.0.3.0.iothread_refill_us', '0');
    expect(netOptionsFromConfig(c, 'pci.0.3.0', 3, 0).iothreadRefillUs).toBe(0);
    c.set('pci.0.3.0.iothread_refill_us', '10000');
    expect(netOptionsFromConfig(c, 'pci.0.3.0', 3, 0).iothreadRefillUs).toBe(10000);
    for (const bad of ['10001', '-1', '5us', '']) {
      c.set('pci.0.3.0.iothread_refill_us', bad);
      expect(() => netOptionsFromConfig(c, 'pci.0.3.0', 3, 0)).toThrow(/^Invalid iothread_refill_us .* \(0 to 10000 microseconds\)$/);
    }
  });

  it('batchio: on by default, a bool, anything else refused with one line', () => {
    const c = new ConfigTree();
    c.set('name', 'vm0');
    expect(netOptionsFromConfig(c, 'pci.0.3.0', 3, 0).batchIo).toBe(true);
    c.set('pci.0.3.0.batchio', 'off');
    expect(netOptionsFromConfig(c, 'pci.0.3.0', 3, 0).batchIo).toBe(false);
    c.set('pci.0.3.0.batchio', 'sometimes');
    expect(() => netOptionsFromConfig(c, 'pci.0.3.0', 3, 0)).toThrow(/batchio/);
  });

  it('names tap interfaces and refuses FreeBSD-only backends', () => {
    expect(tapNameOf('tap0')).toBe('tap0');
    expect(tapNameOf('vmnet3')).toBe('vmnet3');
    expect(tapNameOf('/dev/tap7')).toBe('tap7');
    expect(() => tapNameOf('netgraph,path=x:,peerhook=y')).toThrow(/not available on Linux/);
    expect(() => tapNameOf('vale0:1')).toThrow(/not available on Linux/);
    expect(() => tapNameOf('/dev/net/tun')).toThrow(/name the tap/);
    expect(() => tapNameOf('eth0')).toThrow(/unknown backend/);
  });

  it('offers MAC, STATUS, MRG_RXBUF, and MTU only with mtu=; config space as bhyve lays it out', () => {
    const a = new VirtioNet({ mac: MAC }, undefined);
    expect(a.deviceType).toBe(VIRTIO_ID_NET);
    expect(a.queueMaxSizes).toEqual([1024, 1024]);
    for (const b of [VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_F_VERSION_1]) {
      expect(hasFeature(a.deviceFeatures, b)).toBe(true);
    }
    expect(hasFeature(a.deviceFeatures, VIRTIO_NET_F_MTU)).toBe(false);
    const cfg = new Uint8Array(12);
    a.readConfig(0, cfg);
    expect(Array.from(cfg)).toEqual([0x52, 0x54, 0, 0x12, 0x34, 0x56, 1, 0, 1, 0, 0xdc, 0x05]);
    const b = new VirtioNet({ mac: MAC, mtu: 9000 }, undefined);
    expect(hasFeature(b.deviceFeatures, VIRTIO_NET_F_MTU)).toBe(true);
    b.readConfig(10, cfg.subarray(0, 2));
    expect(cfg[0] | (cfg[1] << 8)).toBe(9000);
    // A driver may program the MAC; other fields are read-only.
    b.writeConfig(4, Uint8Array.from([0xaa, 0xbb, 0xcc, 0xdd]));
    expect(formatMac(b.mac)).toBe('52:54:00:12:aa:bb');
  });

  it('iothread_tx: poll by default; true, false, auto, switch and poll accepted, anything else refused', () => {
    const c = new ConfigTree();
    c.set('name', 'vm0');
    expect(netOptionsFromConfig(c, 'pci.0.3.0', 3, 0).iothreadTx).toBe('poll');
    for (const [v, want] of [['true', true], ['off', false], ['AUTO', 'auto'], ['Switch', 'switch'], ['poll', 'poll']] as const) {
      c.set('pci.0.3.0.iothread_tx', v);
      expect(netOptionsFromConfig(c, 'pci.0.3.0', 3, 0).iothreadTx).toBe(want);
    }
    c.set('pci.0.3.0.iothread_tx', 'sometimes');
    expect(() => netOptionsFromConfig(c, 'pci.0.3.0', 3, 0)).toThrow(/iothread_tx .*auto, switch or poll\)/);
  });

  it('builds from the config without a backend (ctx without host ports)', () => {
    const c = new ConfigTree();
    c.set('pci.0.5.0.backend', 'tap0');
    expect(createVirtioNet({ config: c }, 'pci.0.5.0', 5, 0)).toBeInstanceOf(VirtioNet);
    expect(() => createVirtioNet({ config: c, hostPorts: { net: () => undefined } }, 'pci.0.5.0', 5, 0)).toThrow(/not opened/);
  });
});

describe('virtio-net data path', () => {
  it('TX strips the 12-byte header, gathers the chain and interrupts once per batch', () => {
    const { port, dev, tx, interrupts } = setup(V1);
    const h = tx.alloc(12); const p1 = tx.alloc(20); const p2 = tx.alloc(60);
    tx.fill(p1, frame(20)); tx.fill(p2, frame(60, 20));
    tx.offer(tx.chain([{ addr: h, len: 12 }, { addr: p1, len: 20 }, { addr: p2, len: 60 }]));
    const q = tx.alloc(12 + 42); tx.fill(q + 12, frame(42, 9));
    tx.offer(tx.chain([{ addr: q, len: 54 }]));
    dev.queueNotify(1);
    expect(port.sent.map((s) => s.length)).toEqual([80, 42]);
    // every byte of both descriptors, in chain order, and nothing of the header
    expect(Array.from(port.sent[0])).toEqual([...frame(20), ...frame(60, 20)]);
    expect(Array.from(port.sent[1])).toEqual(Array.from(frame(42, 9)));
    expect(tx.usedIdx()).toBe(2);
    expect(tx.usedElem(0)).toEqual({ id: 0, len: 0 });
    expect(interrupts).toEqual([1]);
    expect(dev.stats.txFrames).toBe(2);
  });

  it('TX drops chains too short for a header and an Ethernet header but returns them', () => {
    const { port, dev, tx } = setup(V1);
    const a = tx.alloc(16);
    tx.offer(tx.chain([{ addr: a, len: 16 }]));
    dev.queueNotify(1);
    expect(port.sent).toHaveLength(0);
    expect(tx.usedIdx()).toBe(1);
    expect(dev.stats.txDropped).toBe(1);
  });

  it('RX without MRG_RXBUF: one buffer per frame, num_buffers 1, waits for buffers', () => {
    const { port, dev, rx, interrupts } = setup(V1);
    port.rx.push(frame(100), frame(1514, 3));
    dev.poll(); // no buffers yet: frames stay with the backend
    expect(port.rx).toHaveLength(2);
    expect(rx.usedIdx()).toBe(0);
    const bufs = [rx.alloc(2048), rx.alloc(2048)];
    for (const b of bufs) rx.offer(rx.chain([{ addr: b, len: 2048, write: true }]));
    dev.queueNotify(0); // the driver added buffers
    expect(port.rx).toHaveLength(0);
    expect(rx.usedIdx()).toBe(2);
    expect(rx.usedElem(0).len).toBe(112);
    expect(rx.usedElem(1).len).toBe(1526);
    const hdr = rx.read(bufs[0], 12);
    expect(Array.from(hdr)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    expect(Array.from(rx.read(bufs[1] + 12, 1514))).toEqual(Array.from(frame(1514, 3)));
    expect(interrupts).toEqual([0]);
  });

  it('RX reads straight into a chain that holds the largest frame (zerocopy), else through the bounce buffer', () => {
    for (const zeroCopy of [true, false]) {
      const port = new DirectPort();
      const dev = new VirtioNet({ mac: MAC, zeroCopy }, port);
      const rx = new FakeDriver(16, 1 << 20);
      const tx = new FakeDriver(16, 1 << 20);
      const { interrupts } = activateQueues(dev, [rx, tx], V1_MRG);
      // Two large chains (two descriptors each: 12 + 65600 bytes need both), then a small one.
      const big = [0, 1].map(() => [rx.alloc(40000), rx.alloc(30000)]);
      for (const [a, b] of big) rx.offer(rx.chain([{ addr: a, len: 40000, write: true }, { addr: b, len: 30000, write: true }]));
      const small = rx.alloc(2048);
      rx.offer(rx.chain([{ addr: small, len: 2048, write: true }]));
      port.rx.push(frame(50000, 4), frame(60, 5), frame(1000, 6));
      dev.poll();
      expect(rx.usedIdx()).toBe(3);
      expect(rx.usedElem(0).len).toBe(12 + 50000);
      expect(Array.from(rx.read(big[0][0], 12))).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
      const got = Buffer.concat([rx.read(big[0][0] + 12, 40000 - 12), rx.read(big[0][1], 50000 - (40000 - 12))]);
      expect(got.equals(Buffer.from(frame(50000, 4)))).toBe(true);
      expect(rx.usedElem(1).len).toBe(12 + 60);
      expect(Array.from(rx.read(big[1][0] + 12, 60))).toEqual(Array.from(frame(60, 5)));
      expect(rx.usedElem(2).len).toBe(12 + 1000);
      expect(Array.from(rx.read(small + 12, 1000))).toEqual(Array.from(frame(1000, 6)));
      expect(interrupts).toEqual([0]);
      if (zeroCopy) {
        // The first two went straight into guest RAM; the third, for the
        // small buffer, through peek().
        expect(port.direct).toHaveLength(2);
        expect(port.direct[0][0].buffer).toBe(rx.bytes.buffer);
        expect(port.direct[0].reduce((n, v) => n + v.length, 0)).toBe(65600);
        expect(port.peeks).toBeGreaterThan(0);
      } else {
        expect(port.direct).toHaveLength(0);
      }
      expect(dev.stats.rxFrames).toBe(3);
    }
  });

  it('RX asks for buffer notifications only while a frame waits for buffers (as QEMU and bhyve)', () => {
    const { port, dev, rx } = setup(V1);
    const NO_NOTIFY = 1;
    const bufs = [rx.alloc(2048), rx.alloc(2048)];
    for (const b of bufs) rx.offer(rx.chain([{ addr: b, len: 2048, write: true }]));
    dev.queueNotify(0); // buffers on hand, no frames: no kicks wanted
    expect(rx.usedFlags() & NO_NOTIFY).toBe(NO_NOTIFY);
    port.rx.push(frame(100, 1));
    dev.poll(); // one frame in, one buffer left: still not wanted
    expect(rx.usedIdx()).toBe(1);
    expect(rx.usedFlags() & NO_NOTIFY).toBe(NO_NOTIFY);
    port.rx.push(frame(100, 2), frame(100, 3));
    dev.poll(); // the second frame finds no buffer: now the driver must kick
    expect(rx.usedIdx()).toBe(2);
    expect(port.rx).toHaveLength(1);
    expect(rx.usedFlags() & NO_NOTIFY).toBe(0);
    const b = rx.alloc(2048);
    rx.offer(rx.chain([{ addr: b, len: 2048, write: true }]));
    dev.queueNotify(0);
    expect(port.rx).toHaveLength(0);
    expect(rx.usedIdx()).toBe(3);
    expect(Array.from(rx.read(b + 12, 100))).toEqual(Array.from(frame(100, 3)));
    expect(rx.usedFlags() & NO_NOTIFY).toBe(NO_NOTIFY);
  });

  it('RX with MRG_RXBUF spreads a frame over several buffers and sets num_buffers', () => {
    const { port, dev, rx } = setup(V1_MRG);
    const bufs = Array.from({ length: 6 }, () => rx.alloc(256));
    for (const b of bufs) rx.offer(rx.chain([{ addr: b, len: 256, write: true }]));
    port.rx.push(frame(1000, 5), frame(60, 6));
    dev.poll();
    expect(rx.usedIdx()).toBe(5);
    expect([0, 1, 2, 3, 4].map((i) => rx.usedElem(i).len)).toEqual([256, 256, 256, 244, 72]);
    expect(rx.read(bufs[0] + 10, 2)[0]).toBe(4); // num_buffers
    expect(rx.read(bufs[4] + 10, 2)[0]).toBe(1);
    const got = Buffer.concat([rx.read(bufs[0] + 12, 244), rx.read(bufs[1], 256), rx.read(bufs[2], 256), rx.read(bufs[3], 244)]);
    expect(Buffer.compare(got, Buffer.from(frame(1000, 5)))).toBe(0);
  });

  it('RX with MRG_RXBUF keeps buffers popped for a frame that did not fit yet', () => {
    const { port, dev, rx } = setup(V1_MRG);
    const b1 = rx.alloc(512);
    rx.offer(rx.chain([{ addr: b1, len: 512, write: true }]));
    port.rx.push(frame(1000));
    dev.poll();
    expect(rx.usedIdx()).toBe(0);
    expect(port.rx).toHaveLength(1);
    const b2 = rx.alloc(1024);
    rx.offer(rx.chain([{ addr: b2, len: 1024, write: true }]));
    dev.queueNotify(0);
    expect(rx.usedIdx()).toBe(2);
    expect(rx.usedElem(0)).toEqual({ id: 0, len: 512 });
    expect(rx.usedElem(1)).toEqual({ id: 1, len: 500 });
    expect(rx.read(b1 + 10, 1)[0]).toBe(2);
  });

  it('RX drops a frame larger than a non-mergeable buffer and returns the buffer empty', () => {
    const { port, dev, rx } = setup(V1);
    const b = rx.alloc(128);
    rx.offer(rx.chain([{ addr: b, len: 128, write: true }]));
    port.rx.push(frame(200));
    dev.poll();
    expect(rx.usedElem(0).len).toBe(0);
    expect(port.rx).toHaveLength(0);
    expect(dev.stats.rxDropped).toBe(1);
  });

  it('honours interrupt suppression (NO_INTERRUPT, then used_event with EVENT_IDX)', () => {
    const a = setup(V1);
    a.rx.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
    for (let i = 0; i < 4; i++) a.rx.offer(a.rx.chain([{ addr: a.rx.alloc(2048), len: 2048, write: true }]));
    a.port.rx.push(frame(64), frame(64));
    a.dev.poll();
    expect(a.rx.usedIdx()).toBe(2);
    expect(a.interrupts).toEqual([]);

    const b = setup(V1 | featureBit(VIRTIO_RING_F_EVENT_IDX));
    for (let i = 0; i < 8; i++) b.rx.offer(b.rx.chain([{ addr: b.rx.alloc(2048), len: 2048, write: true }]));
    b.rx.setUsedEvent(2); // interrupt when used idx passes 2
    b.port.rx.push(frame(64)); b.dev.poll();
    expect(b.interrupts).toEqual([0]); // first signal after activation
    b.port.rx.push(frame(64)); b.dev.poll();
    expect(b.interrupts).toEqual([0]); // idx 2: not past used_event yet
    b.port.rx.push(frame(64)); b.dev.poll();
    expect(b.interrupts).toEqual([0, 0]); // idx 3 crossed used_event 2
    expect(b.rx.availEvent()).toBe(3);
  });

  it('hostile chains put the device in needs-reset, never throw', () => {
    const a = setup(V1);
    const w = a.tx.alloc(64);
    a.tx.setDesc(0, w, 64, VIRTQ_DESC_F_NEXT, 0); // loops
    a.tx.offer(0);
    expect(() => a.dev.queueNotify(1)).not.toThrow();
    expect(a.resets[0]).toMatch(/loops/);
    expect(a.dev.needsResetReason).toBeDefined();

    const b = setup(V1);
    b.rx.setDesc(0, 0xfff000000, 2048, 2, 0); // out of guest RAM, writable
    b.rx.offer(0);
    b.port.rx.push(frame(64));
    expect(() => b.dev.poll()).not.toThrow();
    expect(b.resets[0]).toMatch(/not in guest RAM/);
    b.dev.reset();
    expect(b.dev.needsResetReason).toBeUndefined();

    const c = setup(V1);
    c.rx.setAvailIdx(100); // ran ahead of the queue size
    c.port.rx.push(frame(64));
    expect(() => c.dev.poll()).not.toThrow();
    expect(c.resets[0]).toMatch(/ahead/);

    const d = setup(V1);
    d.tx.setDesc(0, d.tx.alloc(16), 0, 0, 0); // zero length
    d.tx.offer(0);
    d.dev.queueNotify(1);
    expect(d.resets[0]).toMatch(/zero-length/);
  });
});
