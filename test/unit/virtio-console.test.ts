// virtio-console driven as a guest driver would, with fake host ports; and
// its UNIX-socket backend (main-thread and device-thread halves in one
// thread). No /dev/kvm.

import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import {
  VIRTIO_CONSOLE_DEVICE_ADD, VIRTIO_CONSOLE_DEVICE_READY, VIRTIO_CONSOLE_F_EMERG_WRITE, VIRTIO_CONSOLE_F_MULTIPORT,
  VIRTIO_CONSOLE_PORT_NAME, VIRTIO_CONSOLE_PORT_OPEN, VIRTIO_CONSOLE_PORT_READY, VTCON_MAXQ, VirtioConsole,
  createVirtioConsole, portQueues,
} from '../../src/devices/virtio/virtio-console.js';
import {
  attachConsolePort, consolePortsFromConfig, openConsoleBackend, type ConsolePort,
} from '../../src/devices/virtio/console-backend.js';
import { VIRTIO_F_VERSION_1, VIRTIO_ID_CONSOLE, VIRTQ_DESC_F_NEXT, featureBit } from '../../src/devices/virtio/virtio-constants.js';
import { FakeDriver } from './virtio-driver.js';
import { activateQueues } from './virtio-queues.js';

class FakeConsolePort implements ConsolePort {
  input: number[] = [];
  output: number[] = [];
  isConnected = false;
  gen = 0;
  available(): number { return this.input.length; }
  read(max: number): Uint8Array { return Uint8Array.from(this.input.splice(0, max)); }
  write(bytes: Uint8Array): void { if (this.isConnected) this.output.push(...bytes); }
  connected(): boolean { return this.isConnected; }
  generation(): number { return this.gen; }
  setConnected(v: boolean): void { this.isConnected = v; this.gen++; }
}

const enc = (s: string) => Uint8Array.from(Buffer.from(s));
const dec = (b: Uint8Array | number[]) => Buffer.from(Uint8Array.from(b)).toString();

function ctrl(id: number, event: number, value: number): Uint8Array {
  const m = new Uint8Array(8);
  const dv = new DataView(m.buffer);
  dv.setUint32(0, id, true); dv.setUint16(4, event, true); dv.setUint16(6, value, true);
  return m;
}

describe('virtio-console without MULTIPORT (port 0 only)', () => {
  it('moves bytes both ways on queues 0/1 and drops output while nobody is connected', () => {
    const host = new FakeConsolePort();
    const dev = new VirtioConsole([{ name: 'port1', port: host }]);
    expect(dev.deviceType).toBe(VIRTIO_ID_CONSOLE);
    expect(dev.queueMaxSizes).toHaveLength(VTCON_MAXQ);
    const cfg = new Uint8Array(12);
    dev.readConfig(0, cfg);
    expect(Array.from(cfg)).toEqual([80, 0, 25, 0, 16, 0, 0, 0, 0, 0, 0, 0]);
    const rx = new FakeDriver(16); const tx = new FakeDriver(16);
    const { interrupts } = activateQueues(dev, [rx, tx], featureBit(VIRTIO_F_VERSION_1));
    const t = tx.alloc(64);
    tx.fill(t, enc('dropped'));
    tx.offer(tx.chain([{ addr: t, len: 7 }]));
    dev.queueNotify(1);
    expect(host.output).toEqual([]);
    expect(tx.usedIdx()).toBe(1);
    host.setConnected(true);
    tx.fill(t, enc('hello '));
    const t2 = tx.alloc(16); tx.fill(t2, enc('world\n'));
    tx.offer(tx.chain([{ addr: t, len: 6 }, { addr: t2, len: 6 }]));
    dev.queueNotify(1);
    expect(dec(host.output)).toBe('hello world\n');
    expect(interrupts).toEqual([1, 1]);

    host.input.push(...enc('pong from the host\n'));
    dev.poll(); // no buffers: waits
    expect(host.input.length).toBe(19);
    const b1 = rx.alloc(8); const b2 = rx.alloc(128);
    rx.offer(rx.chain([{ addr: b1, len: 8, write: true }]));
    rx.offer(rx.chain([{ addr: b2, len: 128, write: true }]));
    dev.queueNotify(0);
    expect(rx.usedIdx()).toBe(2);
    expect(rx.usedElem(0).len).toBe(8);
    expect(rx.usedElem(1).len).toBe(11);
    expect(dec(rx.read(b1, 8)) + dec(rx.read(b2, 11))).toBe('pong from the host\n');
  });

  it('EMERG_WRITE sends one byte to port 0', () => {
    const host = new FakeConsolePort();
    host.setConnected(true);
    const dev = new VirtioConsole([{ name: 'a', port: host }]);
    activateQueues(dev, [new FakeDriver(8), new FakeDriver(8)], featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_CONSOLE_F_EMERG_WRITE));
    dev.writeConfig(8, Uint8Array.from([0x41, 0, 0, 0]));
    expect(dec(host.output)).toBe('A');
  });

  it('a hostile chain puts it in needs-reset without throwing', () => {
    const dev = new VirtioConsole([{ name: 'a', port: new FakeConsolePort() }]);
    const tx = new FakeDriver(8);
    const { resets } = activateQueues(dev, [new FakeDriver(8), tx], featureBit(VIRTIO_F_VERSION_1));
    const b = tx.alloc(16);
    tx.setDesc(0, b, 16, VIRTQ_DESC_F_NEXT, 1);
    tx.setDesc(1, b, 16, VIRTQ_DESC_F_NEXT, 0);
    tx.offer(0);
    expect(() => dev.queueNotify(1)).not.toThrow();
    expect(resets[0]).toMatch(/loops/);
  });
});

describe('virtio-console with MULTIPORT', () => {
  it('announces ports, names them, reports host connections and routes port 1 to queues 4/5', () => {
    const p0 = new FakeConsolePort(); const p1 = new FakeConsolePort();
    p1.setConnected(true);
    const dev = new VirtioConsole([{ name: 'port1', port: p0 }, { name: 'org.example.agent', port: p1 }]);
    const drivers: Array<FakeDriver | null> = new Array(VTCON_MAXQ).fill(null);
    for (const i of [0, 1, 2, 3, 4, 5]) drivers[i] = new FakeDriver(16);
    const { interrupts } = activateQueues(dev, drivers, featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_CONSOLE_F_MULTIPORT));
    const crx = drivers[2]!; const ctx = drivers[3]!;
    const cbufs = Array.from({ length: 8 }, () => crx.alloc(64));
    for (const b of cbufs) crx.offer(crx.chain([{ addr: b, len: 64, write: true }]));
    dev.queueNotify(2);
    const received = (): Array<[number, number, number, string]> => Array.from({ length: crx.usedIdx() }, (_, n) => {
      const e = crx.usedElem(n);
      const m = crx.read(cbufs[e.id], e.len);
      const dv = new DataView(m.buffer);
      return [dv.getUint32(0, true), dv.getUint16(4, true), dv.getUint16(6, true), dec(m.subarray(8))];
    });
    const send = (m: Uint8Array): void => {
      const a = ctx.alloc(8); ctx.fill(a, m);
      ctx.offer(ctx.chain([{ addr: a, len: 8 }]));
      dev.queueNotify(3);
    };
    send(ctrl(0xffffffff, VIRTIO_CONSOLE_DEVICE_READY, 1));
    expect(received()).toEqual([[0, VIRTIO_CONSOLE_DEVICE_ADD, 1, ''], [1, VIRTIO_CONSOLE_DEVICE_ADD, 1, '']]);
    send(ctrl(0, VIRTIO_CONSOLE_PORT_READY, 1));
    send(ctrl(1, VIRTIO_CONSOLE_PORT_READY, 1));
    expect(received().slice(2)).toEqual([
      [0, VIRTIO_CONSOLE_PORT_NAME, 1, 'port1'],
      [1, VIRTIO_CONSOLE_PORT_NAME, 1, 'org.example.agent'],
      [1, VIRTIO_CONSOLE_PORT_OPEN, 1, ''],
    ]);
    send(ctrl(1, VIRTIO_CONSOLE_PORT_OPEN, 1));
    expect(dev.guestOpened(1)).toBe(true);
    p0.setConnected(true);
    p1.setConnected(false);
    dev.poll();
    expect(received().slice(5)).toEqual([[0, VIRTIO_CONSOLE_PORT_OPEN, 1, ''], [1, VIRTIO_CONSOLE_PORT_OPEN, 0, '']]);
    expect(interrupts).toContain(2);
    // Port 1 data uses queues 4 (receive) and 5 (transmit).
    expect(portQueues(1)).toEqual({ rx: 4, tx: 5 });
    p1.setConnected(true);
    const t = drivers[5]!;
    const a = t.alloc(8); t.fill(a, enc('agent'));
    t.offer(t.chain([{ addr: a, len: 5 }]));
    dev.queueNotify(5);
    expect(dec(p1.output)).toBe('agent');
    expect(p0.output).toEqual([]);
  });

  it('keeps control messages until the driver supplies buffers', () => {
    const dev = new VirtioConsole([{ name: 'x', port: new FakeConsolePort() }]);
    const drivers: Array<FakeDriver | null> = new Array(VTCON_MAXQ).fill(null);
    for (const i of [0, 1, 2, 3]) drivers[i] = new FakeDriver(16);
    activateQueues(dev, drivers, featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_CONSOLE_F_MULTIPORT));
    const ctx = drivers[3]!; const crx = drivers[2]!;
    const a = ctx.alloc(8); ctx.fill(a, ctrl(0, VIRTIO_CONSOLE_DEVICE_READY, 1));
    ctx.offer(ctx.chain([{ addr: a, len: 8 }]));
    dev.queueNotify(3);
    expect(crx.usedIdx()).toBe(0);
    const b = crx.alloc(64);
    crx.offer(crx.chain([{ addr: b, len: 64, write: true }]));
    dev.queueNotify(2);
    expect(crx.usedIdx()).toBe(1);
    expect(new DataView(crx.read(b, 8).buffer).getUint16(4, true)).toBe(VIRTIO_CONSOLE_DEVICE_ADD);
  });
});

describe('virtio-console configuration and socket backend', () => {
  it('numbers ports in the order given (port1= is virtio port 0)', () => {
    const c = new ConfigTree();
    c.set('pci.0.4.0.port.0.name', 'port1'); c.set('pci.0.4.0.port.0.path', '/a');
    c.set('pci.0.4.0.port.1.name', 'port2'); c.set('pci.0.4.0.port.1.path', '/b');
    expect(consolePortsFromConfig(c, 'pci.0.4.0').map((p) => p.name)).toEqual(['port1', 'port2']);
    expect(createVirtioConsole({ config: c }, 'pci.0.4.0').portCount).toBe(2);
    expect(() => createVirtioConsole({ config: c, hostPorts: { console: () => undefined } }, 'pci.0.4.0')).toThrow(/not opened/);
    c.set('pci.0.4.0.port.2.name', 'port3');
    expect(() => consolePortsFromConfig(c, 'pci.0.4.0')).toThrow(/port port3 requires a path/);
  });

  it('listens on the port path, one client at a time, bytes both ways', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vcon-unit-'));
    const sock = path.join(dir, 's');
    const c = new ConfigTree();
    c.set('pci.0.4.0.port.0.name', 'port1'); c.set('pci.0.4.0.port.0.path', sock);
    let kicks = 0;
    const host = await openConsoleBackend(c, 'pci.0.4.0', () => { kicks++; });
    try {
      const port = attachConsolePort(host!.transfer.ports[0]);
      expect(port.connected()).toBe(false);
      port.write(enc('lost')); // nobody connected: dropped
      const client = net.connect(sock);
      let got = '';
      client.on('data', (d) => { got += d.toString(); });
      await new Promise<void>((r) => client.once('connect', () => r()));
      for (let i = 0; i < 200 && !port.connected(); i++) await new Promise((r) => setTimeout(r, 5));
      expect(port.connected()).toBe(true);
      const g = port.generation();
      client.write('from host');
      for (let i = 0; i < 200 && port.available() < 9; i++) await new Promise((r) => setTimeout(r, 5));
      expect(dec(port.read(100))).toBe('from host');
      expect(kicks).toBeGreaterThan(0);
      port.write(enc('from guest'));
      for (let i = 0; i < 200 && got.length < 10; i++) await new Promise((r) => setTimeout(r, 5));
      expect(got).toBe('from guest');
      client.destroy();
      for (let i = 0; i < 200 && port.connected(); i++) await new Promise((r) => setTimeout(r, 5));
      expect(port.connected()).toBe(false);
      expect(port.generation()).not.toBe(g);
    } finally {
      await host!.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
    expect(fs.existsSync(sock)).toBe(false);
  });
});
