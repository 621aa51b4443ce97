// bhyve's own device models served over vfio-user (vmm/served-pci-model.ts),
// passed through by passthru in process: the model's identity and BARs as
// the guest sees them, its MSI-X vectors reaching the guest's messages,
// INTx re-signalled after unmask while held, DMA windows as its memory.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import type { DeviceContext } from '../../src/devices/device.js';
import { PciBus } from '../../src/devices/pci/pci-bus.js';
import { identityDmaSpace } from '../../src/devices/passthru/dma-window.js';
import { PassthruFunction } from '../../src/devices/passthru/passthru-function.js';
import { VfioUserBackend } from '../../src/devices/passthru/vfio-user-backend.js';
import { eventfd, eventfdRead, EFD_CLOEXEC, EFD_NONBLOCK, closeFd } from '../../src/sys/eventfd.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { IRQ_SET_FLAG, PCI_IRQ } from '../../src/sys/vfio-abi.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';
import { ServedPciModel } from '../../src/vmm/served-pci-model.js';
import { loopbackClient } from '../support/vfio-user-loopback.js';
import '../support/device-models.js'; // the device models buildPlatform needs

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'served-model-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function disk(): string {
  const p = path.join(tmp, `d${Math.random().toString(16).slice(2)}.img`);
  fs.writeFileSync(p, '');
  fs.truncateSync(p, 1 << 20);
  return p;
}

describe('a bhyve device model served over vfio-user', () => {
  it('virtio-blk: identity, BARs and capabilities as bhyve builds them', () => {
    const model = new ServedPciModel(`virtio-blk,${disk()}`);
    const { client } = loopbackClient(model);
    const cfg = client.regionRead(7, 0, 256);
    const dv = new DataView(cfg.buffer, cfg.byteOffset, cfg.byteLength);
    expect(dv.getUint16(0, true)).toBe(0x1af4);
    expect(dv.getUint16(2, true)).toBe(0x1001);
    expect(cfg[0x3d]).toBe(1); // INTA
    expect(client.regionInfo(0).size).toBeGreaterThan(0); // legacy I/O BAR
    expect(client.irqInfo(PCI_IRQ.MSIX).count).toBe(model.fn.msixVectorCount);
    // Region reads reach the model's registers: the legacy BAR's host features.
    const hf = client.regionRead(0, 0, 4);
    expect(new DataView(hf.buffer, hf.byteOffset, 4).getUint32(0, true)).not.toBe(0xffffffff);
    // A BAR write from the client does not move the model's BARs.
    client.regionWrite(7, 0x10, Uint8Array.of(0, 0, 0, 0));
    expect(model.fn.barAddress(0)).toBe(0x1000);
  });

  it('an MSI-X vector of the model signals the eventfd the client gave it', () => {
    const model = new ServedPciModel(`virtio-blk,${disk()}`);
    const { client } = loopbackClient(model);
    const n = model.fn.msixVectorCount;
    const fds = Array.from({ length: n }, () => eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    client.setIrqs({ flags: IRQ_SET_FLAG.DATA_EVENTFD | IRQ_SET_FLAG.ACTION_TRIGGER, index: PCI_IRQ.MSIX, start: 0, count: n }, fds);
    expect(model.fn.msixEnabledNow()).toBe(true);
    expect(model.fn.generateMsix(1)).toBe(true);
    expect(eventfdRead(fds[1])).toBe(1n);
    expect(eventfdRead(fds[0])).toBe(0n);
    // The client takes them away: the model's MSI-X is off again.
    client.setIrqs({ flags: IRQ_SET_FLAG.DATA_NONE | IRQ_SET_FLAG.ACTION_TRIGGER, index: PCI_IRQ.MSIX, start: 0, count: 0 });
    expect(model.fn.msixEnabledNow()).toBe(false);
    for (const f of fds) closeFd(f);
  });

  it('INTx: signalled on assert, again on unmask while still asserted', () => {
    const model = new ServedPciModel(`virtio-blk,${disk()}`);
    const { client } = loopbackClient(model);
    const fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    client.setIrqs({ flags: IRQ_SET_FLAG.DATA_EVENTFD | IRQ_SET_FLAG.ACTION_TRIGGER, index: PCI_IRQ.INTX, start: 0, count: 1 }, [fd]);
    model.fn.intxAssert();
    expect(eventfdRead(fd)).toBe(1n);
    client.setIrqs({ flags: IRQ_SET_FLAG.DATA_NONE | IRQ_SET_FLAG.ACTION_UNMASK, index: PCI_IRQ.INTX, start: 0, count: 1 });
    expect(eventfdRead(fd)).toBe(1n);
    model.fn.intxDeassert();
    client.setIrqs({ flags: IRQ_SET_FLAG.DATA_NONE | IRQ_SET_FLAG.ACTION_UNMASK, index: PCI_IRQ.INTX, start: 0, count: 1 });
    expect(eventfdRead(fd)).toBe(0n);
    closeFd(fd);
  });

  it('passed through: the guest sees the model, its MSI-X message arrives; unknown or unservable emulations are refused', () => {
    const model = new ServedPciModel(`virtio-blk,${disk()}`);
    const io = new LocalIoBus();
    const msis: Array<[number, number]> = [];
    const mem = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(1 << 20) }]);
    const ctx = {
      io, config: new ConfigTree(), mem, irq: { setLevel: () => {}, pulse: () => {}, signalMsi: (a: number, d: number) => { msis.push([a, d]); } },
      machine: { requestExit: () => {}, vcpuCount: 1 }, stream: () => undefined,
    } as unknown as DeviceContext;
    const { client } = loopbackClient(model);
    const fn = new PassthruFunction(ctx, new VfioUserBackend('vfio-user test', client, identityDmaSpace(mem.ranges()), mem));
    const bus = new PciBus();
    bus.attach(0, 4, 0, fn);
    expect(bus.configRead(0, 4, 0, 0, 4)).toBe(0x10011af4);
    const cap = fn.caps.find((c) => c.id === 0x11)!;
    const tbl = bus.configRead(0, 4, 0, cap.offset + 4, 4);
    const bar = tbl & 7;
    bus.configWrite(0, 4, 0, 0x10 + 4 * bar, 4, 0xc0000000);
    bus.configWrite(0, 4, 0, 0x04, 2, 0x6);
    const base = 0xc0000000 + (tbl & ~7);
    const w32 = (a: number, v: number) => io.mmioWrite(a, Uint8Array.of(v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, v >>> 24));
    w32(base + 16, 0xfee00000); w32(base + 24, 0x77); w32(base + 28, 0);
    bus.configWrite(0, 4, 0, cap.offset + 2, 2, 0x8000);
    // The model raises vector 1: the guest gets its message.
    expect(model.fn.generateMsix(1)).toBe(true);
    fn.poll();
    expect(msis).toEqual([[0xfee00000, 0x77]]);
    expect(() => new ServedPciModel('nosuch')).toThrow(/unknown device "nosuch"/);
    expect(() => new ServedPciModel('passthru,vfio-user=/x')).toThrow(/cannot serve "passthru"/);
  });
});
