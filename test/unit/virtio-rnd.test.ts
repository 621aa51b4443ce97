import { describe, expect, it } from 'vitest';
import { VTRND_MAX_PER_REQUEST, VirtioRnd } from '../../src/devices/virtio/virtio-rnd.js';
import { VIRTIO_F_VERSION_1, VIRTIO_ID_RNG, VIRTQ_DESC_F_NEXT, hasFeature } from '../../src/devices/virtio/virtio-constants.js';
import { FakeDriver, activate } from './virtio-driver.js';

describe('virtio-rnd', () => {
  it('fills writable buffers with entropy and reports the length', () => {
    const dev = new VirtioRnd();
    expect(dev.deviceType).toBe(VIRTIO_ID_RNG);
    expect(hasFeature(dev.deviceFeatures, VIRTIO_F_VERSION_1)).toBe(true);
    expect(dev.configSize).toBe(0);
    const d = new FakeDriver(16);
    const { interrupts } = activate(dev, d);
    const a = d.alloc(64); const b = d.alloc(4096); const c = d.alloc(32);
    d.offer(d.chain([{ addr: a, len: 64, write: true }]));
    d.offer(d.indirectChain([{ addr: b, len: 4096, write: true }, { addr: c, len: 32, write: true }]));
    dev.queueNotify(0);
    expect(d.usedIdx()).toBe(2);
    expect(d.usedElem(0).len).toBe(64);
    expect(d.usedElem(1).len).toBe(4128);
    const distinct = new Set(d.read(b, 4096));
    expect(distinct.size).toBeGreaterThan(200);
    expect(d.read(a, 64).some((x) => x !== 0)).toBe(true);
    expect(interrupts).toEqual([0]);
    expect(dev.bytesProvided).toBe(4192);
  });

  it('caps one request and ignores readable buffers', () => {
    const dev = new VirtioRnd();
    const d = new FakeDriver(16, 1 << 20);
    activate(dev, d);
    const r = d.alloc(16); const w = d.alloc(VTRND_MAX_PER_REQUEST + 4096);
    d.offer(d.chain([{ addr: r, len: 16 }, { addr: w, len: VTRND_MAX_PER_REQUEST + 4096, write: true }]));
    dev.queueNotify(0);
    expect(d.usedElem(0).len).toBe(VTRND_MAX_PER_REQUEST);
    expect(d.read(r, 16).every((x) => x === 0)).toBe(true);
    expect(d.read(w + VTRND_MAX_PER_REQUEST, 4096).every((x) => x === 0)).toBe(true);
  });

  it('a descriptor loop puts it in needs-reset without throwing', () => {
    const dev = new VirtioRnd();
    const d = new FakeDriver(8);
    const { resets } = activate(dev, d);
    const w = d.alloc(16);
    d.setDesc(0, w, 16, VIRTQ_DESC_F_NEXT, 0);
    d.offer(0);
    expect(() => dev.queueNotify(0)).not.toThrow();
    expect(resets).toHaveLength(1);
    expect(dev.needsResetReason).toMatch(/loops/);
  });
});
