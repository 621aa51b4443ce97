// An I/O thread whose module cannot load (koffi's native module unreadable,
// a missing file: anything thrown while dist/bundle/loader.cjs loads the
// worker's bundle). Its only other signal is the Worker's 'error' event,
// which the device thread never sees (it does not run its event loop while
// the guest runs), so these tests wait without running the event loop, as
// that thread would. The worker is a real bundle stub: the project's
// loader (scripts/bundle-loader.cjs) loading a bundle that throws.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { DeviceContext, DeviceTimer } from '../../src/devices/device.js';
import { PCIM_CMD_MEMEN } from '../../src/devices/pci/config-space.js';
import { BlkIothread } from '../../src/devices/virtio/blk-iothread.js';
import { IOTHREAD_STATE } from '../../src/devices/virtio/iothread-control.js';
import { READER_MIN_BYTES, VirtioBlock } from '../../src/devices/virtio/virtio-blk.js';
import {
  VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
} from '../../src/devices/virtio/virtio-constants.js';
import { VirtioPci } from '../../src/devices/virtio/virtio-pci.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';
import { compiledWorker, IothreadScratch, workerHelper } from '../support/iothread-harness.js';
import { FakeDriver } from './virtio-driver.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const scratch = new IothreadScratch('iot-loadfail-');

/** A bundle directory as scripts/bundle.mjs lays it out (loader.cjs, a
 * stub per worker) whose bundle `name` throws at load. */
function unloadableWorker(name = 'blk-iothread-worker'): URL {
  const dir = scratch.file('bundle');
  fs.mkdirSync(dir);
  fs.copyFileSync(path.join(root, 'scripts/bundle-loader.cjs'), path.join(dir, 'loader.cjs'));
  fs.writeFileSync(path.join(dir, `${name}.cjs`), "throw new Error('cannot load koffi.node: EACCES');\n");
  const stub = path.join(dir, `${name}-stub.cjs`);
  fs.writeFileSync(stub, `module.exports = require('./loader.cjs').load('${name}');\n`);
  return pathToFileURL(stub);
}

/** Waits as the device thread does: without returning to the event loop. */
function waitBlocking(cond: () => boolean, ms = 20_000): boolean {
  const nap = new Int32Array(new SharedArrayBuffer(4));
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    Atomics.wait(nap, 0, 0, 5);
  }
  return true;
}

const blkWorker = compiledWorker('blk-iothread-worker');

describe.skipIf(!blkWorker.present)('virtio-blk iothread reader threads whose module cannot load', () => {
  it('leave every read to the iothread, which still serves them; stop() returns', async () => {
    const { memoryPath, bytes: ram } = scratch.guestRam(4 << 20);
    const image = scratch.file('disk');
    const pattern = Buffer.alloc(2 << 20);
    for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 11 + (i >> 12)) & 0xff;
    fs.writeFileSync(image, pattern);
    const dev = VirtioBlock.open({ path: image });
    scratch.defer(() => dev.close());
    const layout = { size: 16, desc: 0x1000, avail: 0x1100, used: 0x2000 };
    const v = new DataView(ram.buffer, ram.byteOffset, ram.length);
    const t = new BlkIothread({
      helper: workerHelper(memoryPath, 4 << 20), imageFd: dev.file.descriptor, imageSize: dev.file.size, options: { path: image },
      ackedFeatures: 1n << 32n, queueMaxSizes: [16], layouts: [layout], noKick: true,
      readers: 2, readerMinBytes: READER_MIN_BYTES, readerHoldOff: 0, readerWorkerUrl: unloadableWorker('io-pool-worker').href,
    }, blkWorker.url);
    scratch.defer(() => t.stop());
    let avail = 0;
    // Batches of four 256 KiB reads (header, data, status each).
    for (let batch = 0; batch < 5; batch++) {
      for (let i = 0; i < 4; i++) {
        const d = 3 * i;
        const hdr = 0x8000 + 32 * i;
        const status = hdr + 16;
        const data = 0x100000 + i * 0x40000;
        const sector = (batch * 4 + i) * 64;
        v.setUint32(hdr, VIRTIO_BLK_T_IN, true);
        v.setBigUint64(hdr + 8, BigInt(sector), true);
        ram[status] = 0xff;
        const desc = (k: number, addr: number, len: number, flags: number, next: number) => {
          const o = layout.desc + 16 * k;
          v.setBigUint64(o, BigInt(addr), true); v.setUint32(o + 8, len, true); v.setUint16(o + 12, flags, true); v.setUint16(o + 14, next, true);
        };
        desc(d, hdr, 16, 1, d + 1);
        desc(d + 1, data, 0x40000, 3, d + 2);
        desc(d + 2, status, 1, 2, 0);
        v.setUint16(layout.avail + 4 + 2 * (avail % 16), d, true);
        avail = (avail + 1) & 0xffff;
      }
      v.setUint16(layout.avail + 2, avail, true);
      t.notify();
      expect(waitBlocking(() => v.getUint16(layout.used + 2, true) === avail)).toBe(true);
      for (let i = 0; i < 4; i++) {
        expect(ram[0x8000 + 32 * i + 16]).toBe(VIRTIO_BLK_S_OK);
        const off = (batch * 4 + i) * 64 * 512;
        expect(Buffer.from(ram.subarray(0x100000 + i * 0x40000, 0x100000 + (i + 1) * 0x40000)).equals(pattern.subarray(off, off + 0x40000))).toBe(true);
      }
    }
    // Nothing reached a reader; the iothread is fine and stops promptly.
    expect(t.toReaders).toBe(0);
    expect(t.brokenReason()).toBeUndefined();
    const t0 = Date.now();
    t.stop();
    expect(t.state).toBe(IOTHREAD_STATE.STOPPED);
    expect(Date.now() - t0).toBeLessThan(5_000);
  });
});

describe('an I/O thread whose module cannot load', () => {
  it('is FAILED with the reason in its control block, without the device thread running its event loop', () => {
    const image = scratch.file('disk');
    fs.writeFileSync(image, Buffer.alloc(1 << 16));
    const t = new BlkIothread({
      helper: workerHelper('', 0), imageFd: -1, imageSize: 1 << 16, options: { path: image },
      ackedFeatures: 0n, queueMaxSizes: [16], layouts: [null], noKick: true,
    }, unloadableWorker());
    scratch.defer(() => t.stop());
    expect(waitBlocking(() => !t.starting)).toBe(true);
    expect(t.state).toBe(IOTHREAD_STATE.FAILED);
    expect(t.failedToStart).toBe(true);
    expect(t.startError()).toMatch(/blk-iothread-worker: could not load: cannot load koffi\.node: EACCES/);
    // Not a needs-reset: the device thread serves the queue itself.
    expect(t.brokenReason()).toBeUndefined();
  });

  it('virtio-blk takes its queue back on the transport\'s timer: the ioeventfd goes and the waiting request is served', () => {
    const image = scratch.file('disk');
    const pattern = Buffer.alloc(1 << 16);
    for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 13 + 7) & 0xff;
    fs.writeFileSync(image, pattern);
    const dev = VirtioBlock.open({ path: image, iothread: true });
    (dev as unknown as { iothreadWorkerUrl: URL }).iothreadWorkerUrl = unloadableWorker();
    scratch.defer(() => dev.close());

    const log: string[] = [];
    // The device thread's timers (the main thread kicks it when one is due).
    const timers: Array<{ fire: () => void; armed: bigint | undefined }> = [];
    const timer = (fire: () => void): DeviceTimer => {
      const t = { fire, armed: undefined as bigint | undefined };
      timers.push(t);
      return { armAt: (d) => { t.armed = d; }, cancel: () => { t.armed = undefined; }, now: () => process.hrtime.bigint() };
    };
    const runDueTimers = (): void => {
      for (const t of timers) if (t.armed !== undefined && t.armed <= process.hrtime.bigint()) { t.armed = undefined; t.fire(); }
    };
    const drv = new FakeDriver(16);
    const ctx: DeviceContext = {
      io: new LocalIoBus(), mem: drv.mem, config: undefined as never, stream: () => undefined, timer,
      irq: { setLevel: () => {}, pulse: () => {}, signalMsi: () => {} },
      machine: { requestExit: () => {}, vcpuCount: 1 },
      kvm: {
        ioeventfd: (fd, addr, deassign = false) => { log.push(`${deassign ? 'deassign' : 'assign'} 0x${addr.toString(16)}`); return true; },
        helper: workerHelper('', 0),
      },
    };
    const fn = new VirtioPci(ctx, dev, { emulation: 'virtio-blk', classCode: 0x01, subclass: 0, transport: 'modern' });
    fn.setBarAddress(4, 0xc0000000);
    fn.commandChanged(0, PCIM_CMD_MEMEN);
    const w = (off: number, size: 1 | 2 | 4, v: number) => fn.modernWrite(off, size, v);
    const S = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
    w(0x14, 1, S);
    w(0x08, 4, 1);
    w(0x0c, 4, 1); // VIRTIO_F_VERSION_1
    w(0x14, 1, S | VIRTIO_CONFIG_S_FEATURES_OK);
    w(0x16, 2, 0);
    w(0x18, 2, drv.layout.size);
    w(0x20, 4, drv.layout.desc);
    w(0x28, 4, drv.layout.avail);
    w(0x30, 4, drv.layout.used);
    w(0x1c, 2, 1);
    w(0x14, 1, S | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
    expect(log).toEqual(['assign 0xc0003000']);
    expect(dev.iothread).toBeDefined();

    // The guest reads sector 1; its notify goes to the ioeventfd (no exit).
    const hdr = drv.alloc(16);
    drv.view.setUint32(drv.off(hdr), VIRTIO_BLK_T_IN, true);
    drv.view.setBigUint64(drv.off(hdr) + 8, 1n, true);
    const data = drv.alloc(512);
    const status = drv.alloc(1);
    drv.bytes[drv.off(status)] = 0xff;
    drv.offer(drv.chain([{ addr: hdr, len: 16 }, { addr: data, len: 512, write: true }, { addr: status, len: 1, write: true }]));

    // Only the timers reach this thread; nothing rings it.
    expect(waitBlocking(() => { runDueTimers(); return dev.iothread === undefined; })).toBe(true);
    expect(log).toEqual(['assign 0xc0003000', 'deassign 0xc0003000']);
    expect(drv.usedIdx()).toBe(1);
    expect(drv.bytes[drv.off(status)]).toBe(VIRTIO_BLK_S_OK);
    expect(Buffer.from(drv.read(data, 512))).toEqual(pattern.subarray(512, 1024));
    expect(timers.every((t) => t.armed === undefined)).toBe(true);
    // Later notifies exit to this thread and are served here.
    expect(dev.counters()['requests served on the device thread']).toBe(1);
  });
});
