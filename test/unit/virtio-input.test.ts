// virtio-input (bhyve's pci_virtio_input.c) driven as a guest driver drives
// it, on a fake host evdev: config-space questions answered from the host
// device, host event groups handed over at EV_SYN, status events (LEDs)
// written back, the PCI identity bhyve gives it, and hostile drivers.
import { describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import { initConfig, parseSlotOption } from '../../src/config/bhyve-args.js';
import type { DeviceContext } from '../../src/devices/device.js';
import { buildPlatform } from '../../src/devices/platform.js';
import { findPciDevice, isBuilt, validatePciDevices } from '../../src/devices/registry.js';
import { type EvdevHost, openInputBackend } from '../../src/devices/virtio/input-backend.js';
import {
  VTINPUT_CFG, VTINPUT_MAX_GROUP, VirtioInput,
} from '../../src/devices/virtio/virtio-input.js';
import { VirtioPci } from '../../src/devices/virtio/virtio-pci.js';
import { createQueues, offeredFeatures, type VirtioActivation } from '../../src/devices/virtio/virtio-device.js';
import type { AbsInfo, InputEvent, InputId } from '../../src/sys/evdev.js';
import { computeLayout } from '../../src/sys/memory-map.js';
import { GuestMemory } from '../../src/sys/guest-memory.js';
import { LocalIoBus } from '../../src/vmm/io-bus.js';
import { FakeDriver } from './virtio-driver.js';
import '../support/device-models.js'; // the device models buildPlatform needs

const EV_SYN = 0, EV_KEY = 1, EV_ABS = 3, EV_MSC = 4, EV_LED = 0x11;

class FakeEvdev implements EvdevHost {
  pending: InputEvent[] = [];
  written: InputEvent[] = [];
  devName: string | undefined = 'test evdev';
  ids: InputId | undefined = { bustype: 6, vendor: 0x1234, product: 0x5678, version: 2 };
  propMap = [0x02];
  maps: Record<number, number[]> = { [EV_KEY]: [0, 0, 0, 0x40], [EV_ABS]: [0x03], [EV_LED]: [0x02] };
  axes: Record<number, AbsInfo> = { 0: { value: 5, min: 0, max: 1023, fuzz: 1, flat: 2, res: 10 } };
  refuseWrites = false;
  readEvents(): InputEvent[] { const e = this.pending; this.pending = []; return e; }
  write(ev: InputEvent): boolean { if (this.refuseWrites) return false; this.written.push(ev); return true; }
  name(): Uint8Array | undefined { return this.devName === undefined ? undefined : Buffer.from(this.devName); }
  id(): InputId | undefined { return this.ids; }
  props(out: Uint8Array): boolean { out.fill(0); out.set(this.propMap); return true; }
  bits(type: number, out: Uint8Array): boolean {
    out.fill(0);
    const m = this.maps[type];
    if (m === undefined) return true; // evdev answers with an empty map
    out.set(m.slice(0, out.length));
    return true;
  }
  abs(axis: number): AbsInfo | undefined { return this.axes[axis]; }
  key(code: number, value: number): void { this.pending.push({ type: EV_KEY, code, value }, { type: EV_SYN, code: 0, value: 0 }); }
}

/** The device with both queues laid out by fake drivers. */
function rig(o: { events?: number; status?: number } = {}) {
  const host = new FakeEvdev();
  const dev = new VirtioInput(host);
  const ev = new FakeDriver(o.events ?? 16);
  const st = new FakeDriver(o.status ?? 8);
  dev.ackFeatures(offeredFeatures(dev));
  const q0 = createQueues(ev.mem, [ev.layout], dev.ackedFeatures, dev.queueMaxSizes)[0];
  const q1 = createQueues(st.mem, [null, st.layout], dev.ackedFeatures, dev.queueMaxSizes)[1];
  const interrupts: number[] = [];
  const resets: string[] = [];
  const activation: VirtioActivation = {
    mem: ev.mem, queues: [q0, q1],
    interrupt: { queue: (i) => interrupts.push(i), config: () => undefined },
    needsReset: (r) => { resets.push(r); },
  };
  dev.activate(activation);
  const bufs: number[] = [];
  /** Makes `n` 8-byte event buffers available. */
  const give = (n: number, len = 8): void => {
    for (let i = 0; i < n; i++) {
      const a = ev.alloc(len);
      bufs.push(a);
      ev.offer(ev.chain([{ addr: a, len, write: true }]));
    }
  };
  const eventAt = (k: number): InputEvent => {
    const b = Buffer.from(ev.read(bufs[k], 8));
    return { type: b.readUInt16LE(0), code: b.readUInt16LE(2), value: b.readInt32LE(4) };
  };
  const cfg = (select: number, subsel = 0) => {
    dev.writeConfig(0, Uint8Array.of(select, subsel));
    const all = new Uint8Array(136);
    dev.readConfig(0, all);
    return { size: all[2], u: all.subarray(8), all, dv: new DataView(all.buffer, 8) };
  };
  return { host, dev, ev, st, interrupts, resets, give, eventAt, cfg };
}

describe('virtio-input: config space answered from the host device', () => {
  it('answers ID_NAME, ID_SERIAL, ID_DEVIDS and PROP_BITS', () => {
    const r = rig();
    const name = r.cfg(VTINPUT_CFG.ID_NAME);
    expect(name.size).toBe(10);
    expect(Buffer.from(name.u.subarray(0, 10)).toString()).toBe('test evdev');
    expect(name.all[0]).toBe(VTINPUT_CFG.ID_NAME);
    expect(r.cfg(VTINPUT_CFG.ID_SERIAL).size).toBe(0);
    const ids = r.cfg(VTINPUT_CFG.ID_DEVIDS);
    expect(ids.size).toBe(8);
    expect([ids.dv.getUint16(0, true), ids.dv.getUint16(2, true), ids.dv.getUint16(4, true), ids.dv.getUint16(6, true)]).toEqual([6, 0x1234, 0x5678, 2]);
    const props = r.cfg(VTINPUT_CFG.PROP_BITS);
    expect(props.size).toBe(1);
    expect(props.u[0]).toBe(0x02);
  });

  it('answers EV_BITS up to the last non-zero byte, for the types bhyve knows', () => {
    const r = rig();
    const keys = r.cfg(VTINPUT_CFG.EV_BITS, EV_KEY);
    expect(keys.size).toBe(4);
    expect([...keys.u.subarray(0, 4)]).toEqual([0, 0, 0, 0x40]);
    expect(r.cfg(VTINPUT_CFG.EV_BITS, EV_LED).size).toBe(1);
    // No map (EV_REL), a type bhyve does not ask (EV_SYN, EV_REP): no answer, all zeros.
    for (const t of [2, 0, 0x14, 0xff]) {
      const c = r.cfg(VTINPUT_CFG.EV_BITS, t);
      expect(c.all.every((b) => b === 0), `type ${t}`).toBe(true);
    }
  });

  it('answers ABS_INFO for an axis the device has, not for others', () => {
    const r = rig();
    const x = r.cfg(VTINPUT_CFG.ABS_INFO, 0);
    expect(x.size).toBe(20);
    expect([0, 4, 8, 12, 16].map((o) => x.dv.getInt32(o, true))).toEqual([0, 1023, 1, 2, 10]);
    expect(r.cfg(VTINPUT_CFG.ABS_INFO, 1).size).toBe(0); // in the map but the device has no info
    expect(r.cfg(VTINPUT_CFG.ABS_INFO, 5).size).toBe(0); // not in the map
    expect(r.cfg(VTINPUT_CFG.ABS_INFO, 200).all.every((b) => b === 0)).toBe(true);
  });

  it('asks the host again only after select/subsel change, and ignores writes past them', () => {
    const r = rig();
    expect(r.cfg(VTINPUT_CFG.ID_NAME).size).toBe(10);
    r.host.devName = 'renamed';
    const b = new Uint8Array(1);
    r.dev.readConfig(2, b);
    expect(b[0]).toBe(10); // cached answer
    r.dev.writeConfig(2, Uint8Array.of(99)); // size is read-only
    r.dev.writeConfig(8, Uint8Array.of(1, 2, 3));
    r.dev.writeConfig(-1, Uint8Array.of(1));
    r.dev.readConfig(2, b);
    expect(b[0]).toBe(10);
    expect(r.cfg(VTINPUT_CFG.ID_NAME).size).toBe(7);
    // A device that cannot answer: everything reads as zero.
    r.host.devName = undefined;
    expect(r.cfg(VTINPUT_CFG.ID_NAME).all.every((x) => x === 0)).toBe(true);
    expect(r.cfg(0x42).all.every((x) => x === 0)).toBe(true);
    // Reads past the structure are zero, never a throw.
    const past = new Uint8Array(16);
    r.dev.readConfig(130, past);
    expect(past.every((x) => x === 0)).toBe(true);
  });
});

describe('virtio-input: host events to the guest', () => {
  it('hands over each group at EV_SYN, one 8-byte event per buffer, with an interrupt', () => {
    const r = rig();
    r.give(8);
    r.host.pending.push({ type: EV_KEY, code: 30, value: 1 });
    r.dev.poll();
    expect(r.ev.usedIdx()).toBe(0); // no EV_SYN yet
    r.host.pending.push({ type: EV_SYN, code: 0, value: 0 }, { type: EV_ABS, code: 0, value: -7 });
    r.dev.poll();
    expect(r.ev.usedIdx()).toBe(2);
    expect(r.ev.usedElem(0).len).toBe(8);
    expect(r.eventAt(0)).toEqual({ type: EV_KEY, code: 30, value: 1 });
    expect(r.eventAt(1)).toEqual({ type: EV_SYN, code: 0, value: 0 });
    expect(r.interrupts).toEqual([0]);
    r.host.pending.push({ type: EV_SYN, code: 0, value: 0 });
    r.dev.poll();
    expect(r.eventAt(2)).toEqual({ type: EV_ABS, code: 0, value: -7 });
    expect(r.dev.counters()['events delivered']).toBe(4);
  });

  it('drops a whole group that does not fit in the buffers the guest gave, and goes on with the next', () => {
    const r = rig();
    r.give(3);
    r.host.pending.push({ type: EV_KEY, code: 1, value: 1 }, { type: EV_KEY, code: 2, value: 1 }, { type: EV_KEY, code: 3, value: 1 },
      { type: EV_SYN, code: 0, value: 0 });
    r.dev.poll();
    expect(r.ev.usedIdx()).toBe(0);
    expect(r.dev.counters()['events dropped']).toBe(4);
    r.host.key(30, 1);
    r.dev.poll();
    expect(r.ev.usedIdx()).toBe(2);
    expect(r.eventAt(0)).toEqual({ type: EV_KEY, code: 30, value: 1 });
  });

  it('returns a buffer too short for an event unused and drops the rest of its group', () => {
    const r = rig();
    r.give(1, 4);
    r.give(2);
    r.host.key(30, 1);
    r.dev.poll();
    expect(r.ev.usedIdx()).toBe(1);
    expect(r.ev.usedElem(0).len).toBe(0);
    expect(r.dev.counters()['bad buffers']).toBe(1);
    // A device-readable buffer in the event queue: the same.
    const a = r.ev.alloc(8);
    r.ev.offer(r.ev.chain([{ addr: a, len: 8 }]));
    r.give(2);
    r.host.key(31, 1);
    r.dev.poll();
    expect(r.resets).toEqual([]);
  });

  it('bounds a group that never sees EV_SYN', () => {
    const r = rig();
    r.give(4);
    for (let i = 0; i < VTINPUT_MAX_GROUP * 3 + 5; i++) r.host.pending.push({ type: EV_KEY, code: 30, value: i & 1 });
    r.dev.poll();
    expect(r.dev.counters()['events dropped']).toBe(VTINPUT_MAX_GROUP * 3);
    r.host.pending.push({ type: EV_SYN, code: 0, value: 0 });
    r.dev.poll();
    expect(r.ev.usedIdx()).toBe(0); // 6 events, 4 buffers: dropped whole
  });

  it('takes the events that waited while the driver was not running when it starts', () => {
    const host = new FakeEvdev();
    const dev = new VirtioInput(host);
    host.key(30, 1);
    const ev = new FakeDriver(8);
    const a = ev.alloc(8), b = ev.alloc(8);
    ev.offer(ev.chain([{ addr: a, len: 8, write: true }]));
    ev.offer(ev.chain([{ addr: b, len: 8, write: true }]));
    dev.ackFeatures(offeredFeatures(dev));
    const q0 = createQueues(ev.mem, [ev.layout], dev.ackedFeatures, dev.queueMaxSizes)[0];
    dev.activate({ mem: ev.mem, queues: [q0, null], interrupt: { queue: () => undefined, config: () => undefined }, needsReset: () => undefined });
    expect(ev.usedIdx()).toBe(2);
  });

  it('a broken event ring puts it in DEVICE_NEEDS_RESET without throwing', () => {
    const r = rig();
    r.give(2);
    r.ev.setAvailIdx(1000);
    r.host.key(30, 1);
    expect(() => r.dev.poll()).not.toThrow();
    expect(r.resets).toHaveLength(1);
    r.dev.reset();
    expect(r.dev.activated).toBe(false);
  });
});

describe('virtio-input: status events from the guest', () => {
  it('writes LED events to the host device, skips EV_MSC and short buffers', () => {
    const r = rig();
    const put = (type: number, code: number, value: number, len = 8): void => {
      const a = r.st.alloc(8);
      const b = Buffer.alloc(8);
      b.writeUInt16LE(type, 0); b.writeUInt16LE(code, 2); b.writeInt32LE(value, 4);
      r.st.fill(a, b);
      r.st.offer(r.st.chain([{ addr: a, len }]));
    };
    put(EV_LED, 1, 1);
    put(EV_MSC, 4, 9);
    put(EV_LED, 0, 1, 5);
    put(EV_SYN, 0, 0);
    r.dev.queueNotify(1);
    expect(r.host.written).toEqual([{ type: EV_LED, code: 1, value: 1 }, { type: EV_SYN, code: 0, value: 0 }]);
    expect(r.st.usedIdx()).toBe(4);
    expect(r.st.usedElem(0).len).toBe(0);
    expect(r.interrupts).toEqual([1]);
    expect(r.dev.counters()['bad buffers']).toBe(1);
    r.host.refuseWrites = true;
    put(EV_LED, 1, 0);
    r.dev.queueNotify(1);
    expect(r.dev.counters()['status events refused']).toBe(1);
    // Notifies on the event queue take nothing (bhyve's notify_eventq).
    r.give(2);
    r.dev.queueNotify(0);
    expect(r.ev.usedIdx()).toBe(0);
  });
});

describe('virtio-input: the PCI function and its configuration', () => {
  it('is 1af4:1052 rev 1, subsystem 108e:1100, class 09/80, modern virtio', () => {
    const config = new ConfigTree();
    for (const [k, v] of Object.entries({
      'pci.0.0.0.device': 'hostbridge', 'pci.0.31.0.device': 'lpc', 'pci.0.7.0.device': 'virtio-input', 'pci.0.7.0.path': '/dev/input/event9',
    })) config.set(k, v);
    const io = new LocalIoBus();
    const wake = new SharedArrayBuffer(8);
    const ctx: DeviceContext = {
      io, irq: { setLevel: () => {}, pulse: () => {}, signalMsi: () => {} }, config, mem: new GuestMemory([]),
      machine: { requestExit: () => {}, vcpuCount: 1 }, stream: () => undefined,
      timer: () => ({ armAt: () => {}, cancel: () => {}, now: () => process.hrtime.bigint() }),
      hostPorts: {
        net: () => undefined, console: () => undefined, display: () => undefined,
        input: (node) => (node === 'pci.0.7.0' ? { fd: -1, path: '/dev/input/event9', wake } : undefined),
      },
    };
    const p = buildPlatform(ctx, computeLayout(256 << 20));
    const fn = p.devices.find((d): d is VirtioPci => d instanceof VirtioPci)!;
    expect(fn.device).toBeInstanceOf(VirtioInput);
    expect(fn.cfg.get16(0)).toBe(0x1af4);
    expect(fn.cfg.get16(2)).toBe(0x1052);
    expect(fn.cfg.get8(8)).toBe(1);
    expect(fn.cfg.get8(0x0b)).toBe(0x09);
    expect(fn.cfg.get8(0x0a)).toBe(0x80);
    expect(fn.cfg.get16(0x2c)).toBe(0x108e);
    expect(fn.cfg.get16(0x2e)).toBe(0x1100);
    expect(fn.transport).toBe('modern');
    expect(fn.device.configSize).toBe(136);
  });

  it('parses -s N,virtio-input,PATH as bhyve and refuses what bhyve refuses', () => {
    expect(isBuilt(findPciDevice('virtio-input')!)).toBe(true);
    const c = initConfig();
    parseSlotOption(c, '7,virtio-input,/dev/input/event3');
    expect(c.get('pci.0.7.0.path')).toBe('/dev/input/event3');
    expect(() => parseSlotOption(initConfig(), '7,virtio-input')).toThrow(/missing path/);
    const bare = initConfig();
    bare.set('pci.0.7.0.device', 'virtio-input');
    expect(() => validatePciDevices(bare)).toThrow(/virtio-input at pci slot 0:7:0: missing path/);
    const legacy = initConfig();
    parseSlotOption(legacy, '7,virtio-input,/dev/input/event3,transport=legacy');
    expect(() => validatePciDevices(legacy)).toThrow(/virtio-input has no legacy virtio PCI device id; use transport=modern/);
  });

  it('refuses a host path that is missing or not an event device, naming it', () => {
    const c = new ConfigTree();
    c.set('pci.0.7.0.path', '/nonexistent/event0');
    expect(() => openInputBackend(c, 'pci.0.7.0', () => {})).toThrow(/failed to open \/nonexistent\/event0: no such device/);
    c.set('pci.0.7.0.path', '/dev/null');
    expect(() => openInputBackend(c, 'pci.0.7.0', () => {})).toThrow(/\/dev\/null is no evdev/);
  });
});
