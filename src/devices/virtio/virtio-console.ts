// virtio-console (virtio spec 5.3), bhyve's pci_virtio_console.c behind the
// transport-independent VirtioDevice interface.
//
// Up to 16 ports (VTCON_MAXPORTS), each backed by a UNIX socket on the host
// (console-backend.ts). Virtio port ids follow the order the ports were
// configured: the first (`port1=/sock` on the command line, config node
// port.0) is port 0. Queues, as the spec lays them out (bhyve declares all
// 34, VTCON_MAXQ, of 64 entries):
//   0 port 0 receiveq   1 port 0 transmitq
//   2 control receiveq  3 control transmitq   (VIRTIO_CONSOLE_F_MULTIPORT)
//   2+2n port n receiveq, 3+2n port n transmitq (n >= 1, MULTIPORT)
// Config space: cols 80, rows 25 (VIRTIO_CONSOLE_F_SIZE), max_nr_ports 16,
// emerg_wr (VIRTIO_CONSOLE_F_EMERG_WRITE: a byte written there goes to
// port 0).
//
// Without MULTIPORT only port 0 exists (queues 0/1). With it, the control
// protocol: the driver's DEVICE_READY is answered with DEVICE_ADD for each
// port; each PORT_READY with PORT_NAME (the port's `name`) and, when a host
// client is connected, PORT_OPEN; host connects and disconnects are sent as
// PORT_OPEN 1/0; the driver's PORT_OPEN is recorded. Control messages wait
// in a queue while the driver has no control buffers (bhyve drops them).
//
// Data: guest writes on a port's transmitq go to the socket client (dropped
// while none is connected, as bhyve does); host bytes fill the port's
// receiveq when it has buffers (otherwise they wait, and the socket is
// paused while the ring is full).

import type { HostPortLookup } from './host-ports.js';
import type { ConfigTree } from '../../config/tree.js';
import { VIRTIO_ID_CONSOLE, featureBit } from './virtio-constants.js';
import { VirtioDeviceBase, type VirtioActivation } from './virtio-device.js';
import type { Virtqueue } from './virtqueue.js';
import {
  attachConsolePort, consolePortsFromConfig, VTCON_MAXPORTS, type ConsoleBackendTransfer, type ConsolePort,
} from './console-backend.js';
import { ConfigError } from '../../config/tree.js';
import type { PciDeviceModel } from '../pci-device.js';
import { createVirtioPci } from './virtio-pci.js';

export const VIRTIO_CONSOLE_F_SIZE = 0;
export const VIRTIO_CONSOLE_F_MULTIPORT = 1;
export const VIRTIO_CONSOLE_F_EMERG_WRITE = 2;

export const VIRTIO_CONSOLE_DEVICE_READY = 0;
export const VIRTIO_CONSOLE_DEVICE_ADD = 1;
export const VIRTIO_CONSOLE_DEVICE_REMOVE = 2;
export const VIRTIO_CONSOLE_PORT_READY = 3;
export const VIRTIO_CONSOLE_CONSOLE_PORT = 4;
export const VIRTIO_CONSOLE_RESIZE = 5;
export const VIRTIO_CONSOLE_PORT_OPEN = 6;
export const VIRTIO_CONSOLE_PORT_NAME = 7;

/** bhyve's VTCON_RINGSZ and VTCON_MAXQ. */
export const VTCON_RINGSZ = 64;
export const VTCON_MAXQ = VTCON_MAXPORTS * 2 + 2;
export const VTCON_CONFIG_SIZE = 12;
export const VTCON_CTRL_RXQ = 2;
export const VTCON_CTRL_TXQ = 3;
/** sizeof(struct virtio_console_control). */
export const VTCON_CTRL_SIZE = 8;
/** Most bytes moved into one receive buffer per pass. */
const RX_CHUNK = 64 * 1024;
/** Most control messages kept while the driver supplies no buffers. */
const MAX_PENDING_CONTROL = 256;

export interface ConsolePortSpec {
  /** Name announced with PORT_NAME (the text before '=' in port1=/sock). */
  name: string;
  /** The host side; undefined leaves the port unconnected (tests). */
  port?: ConsolePort;
}

/** Receive / transmit queue of virtio port `id`. */
export function portQueues(id: number): { rx: number; tx: number } {
  return id === 0 ? { rx: 0, tx: 1 } : { rx: 2 + 2 * id, tx: 3 + 2 * id };
}

/** The port a queue belongs to: { id, tx } or 'control' / undefined. */
function queuePort(index: number): { id: number; tx: boolean } | 'control' | undefined {
  if (index === 0 || index === 1) return { id: 0, tx: index === 1 };
  if (index === VTCON_CTRL_RXQ || index === VTCON_CTRL_TXQ) return 'control';
  if (index < VTCON_MAXQ) return { id: (index >> 1) - 1, tx: (index & 1) === 1 };
  return undefined;
}

interface PortState {
  readonly name: string;
  readonly host: ConsolePort | undefined;
  /** The driver said PORT_READY. */
  ready: boolean;
  /** The guest has the port open (driver's PORT_OPEN). */
  guestOpen: boolean;
  /** Host connection state last told to the driver. */
  toldOpen: boolean;
  lastGeneration: number;
}

export class VirtioConsole extends VirtioDeviceBase {
  readonly deviceType = VIRTIO_ID_CONSOLE;
  readonly queueMaxSizes: readonly number[] = new Array<number>(VTCON_MAXQ).fill(VTCON_RINGSZ);
  protected readonly ownFeatures = featureBit(VIRTIO_CONSOLE_F_SIZE) | featureBit(VIRTIO_CONSOLE_F_MULTIPORT)
    | featureBit(VIRTIO_CONSOLE_F_EMERG_WRITE);
  protected readonly config = new Uint8Array(VTCON_CONFIG_SIZE);
  private readonly ports: PortState[];
  private activationRef: VirtioActivation | undefined;
  private multiport = false;
  private deviceReady = false;
  private readonly pendingControl: Uint8Array[] = [];

  constructor(ports: readonly ConsolePortSpec[]) {
    super();
    if (ports.length > VTCON_MAXPORTS) throw new Error('vtcon: too many ports');
    this.ports = ports.map((p) => ({
      name: p.name, host: p.port, ready: false, guestOpen: false, toldOpen: false, lastGeneration: p.port?.generation() ?? 0,
    }));
    const dv = new DataView(this.config.buffer);
    dv.setUint16(0, 80, true); // cols
    dv.setUint16(2, 25, true); // rows
    dv.setUint32(4, VTCON_MAXPORTS, true); // max_nr_ports
  }

  get portCount(): number { return this.ports.length; }
  /** Whether the guest opened port `id` (multiport drivers tell us). */
  guestOpened(id: number): boolean { return this.ports[id]?.guestOpen ?? false; }

  activate(activation: VirtioActivation): void {
    super.activate(activation);
    this.activationRef = activation;
    this.multiport = this.hasAcked(VIRTIO_CONSOLE_F_MULTIPORT);
    this.deviceReady = false;
    this.pendingControl.length = 0;
    for (const p of this.ports) {
      p.ready = false;
      p.guestOpen = false;
      p.toldOpen = false;
      p.lastGeneration = p.host?.generation() ?? 0;
    }
  }

  protected onReset(): void {
    this.activationRef = undefined;
    this.deviceReady = false;
    this.multiport = false;
    this.pendingControl.length = 0;
  }

  /** emerg_wr: with VIRTIO_CONSOLE_F_EMERG_WRITE, a write there sends one
   * byte to port 0. */
  writeConfig(offset: number, data: Uint8Array): void {
    if (offset === 8 && data.length >= 1 && this.hasAcked(VIRTIO_CONSOLE_F_EMERG_WRITE)) {
      this.ports[0]?.host?.write(data.subarray(0, 1));
    }
  }

  /** Host input or connection changes may have arrived. */
  poll(): void {
    if (!this.activated || this.needsResetReason !== undefined) return;
    try {
      if (this.multiport && this.deviceReady) this.announceConnectionChanges();
      const n = this.multiport ? this.ports.length : Math.min(1, this.ports.length);
      for (let id = 0; id < n; id++) {
        const host = this.ports[id].host;
        if (host && host.available() > 0) this.queueNotify(portQueues(id).rx);
      }
      if (this.pendingControl.length > 0) this.flushControl();
    } catch (e) {
      this.fail(e);
    }
  }

  protected processQueue(index: number, queue: Virtqueue): void {
    const qp = queuePort(index);
    if (qp === undefined) return;
    if (qp === 'control') {
      if (!this.multiport) return;
      if (index === VTCON_CTRL_TXQ) this.controlTx(queue);
      else this.flushControl();
      return;
    }
    if (qp.id > 0 && !this.multiport) return;
    const port = this.ports[qp.id];
    if (qp.tx) this.portTx(index, queue, port);
    else this.portRx(index, queue, port);
  }

  private queue(index: number): Virtqueue | null {
    return this.activationRef?.queues[index] ?? null;
  }

  private signal(index: number, queue: Virtqueue): void {
    if (queue.needsInterrupt()) this.activationRef?.interrupt.queue(index);
  }

  // ---- data ----

  /** Guest -> host: each chain's readable bytes go to the port's client. */
  private portTx(index: number, queue: Virtqueue, port: PortState | undefined): void {
    const chain = this.scratchChain;
    let done = 0;
    do {
      while (queue.pop(chain) !== null) {
        const host = port?.host;
        if (host && chain.readableLength > 0) {
          const bytes = chain.readable.length === 1 ? chain.readable[0] : new Uint8Array(chain.readableLength);
          if (chain.readable.length !== 1) chain.copyFromReadable(0, bytes);
          host.write(bytes);
        }
        queue.pushUsed(chain.head, 0);
        done++;
      }
    } while (queue.enableNotification());
    if (done > 0) this.signal(index, queue);
  }

  /** Host -> guest: fills the port's receive buffers with waiting bytes. */
  private portRx(index: number, queue: Virtqueue, port: PortState | undefined): void {
    const host = port?.host;
    if (!host) return;
    const chain = this.scratchChain;
    let done = 0;
    while (host.available() > 0) {
      if (queue.pop(chain) === null) {
        if (!queue.enableNotification()) break;
        continue;
      }
      const bytes = host.read(Math.min(chain.writableLength, RX_CHUNK));
      chain.copyToWritable(0, bytes);
      queue.pushUsed(chain.head, bytes.length);
      done++;
    }
    queue.enableNotification();
    if (done > 0) this.signal(index, queue);
  }

  // ---- control (MULTIPORT) ----

  private sendControl(id: number, event: number, value: number, payload?: Uint8Array): void {
    const msg = new Uint8Array(VTCON_CTRL_SIZE + (payload?.length ?? 0));
    const dv = new DataView(msg.buffer);
    dv.setUint32(0, id, true);
    dv.setUint16(4, event, true);
    dv.setUint16(6, value, true);
    if (payload) msg.set(payload, VTCON_CTRL_SIZE);
    if (this.pendingControl.length < MAX_PENDING_CONTROL) this.pendingControl.push(msg);
    this.flushControl();
  }

  /** Moves queued control messages into the control receiveq. */
  private flushControl(): void {
    const queue = this.queue(VTCON_CTRL_RXQ);
    if (!queue || this.pendingControl.length === 0) return;
    const chain = this.scratchChain;
    let done = 0;
    while (this.pendingControl.length > 0) {
      if (queue.pop(chain) === null) {
        if (!queue.enableNotification()) break;
        continue;
      }
      const msg = this.pendingControl.shift()!;
      const n = chain.copyToWritable(0, msg);
      queue.pushUsed(chain.head, n);
      done++;
    }
    if (done > 0) this.signal(VTCON_CTRL_RXQ, queue);
  }

  private controlTx(queue: Virtqueue): void {
    const chain = this.scratchChain;
    const msg = new Uint8Array(VTCON_CTRL_SIZE);
    const dv = new DataView(msg.buffer);
    const events: Array<[number, number, number]> = [];
    let done = 0;
    do {
      while (queue.pop(chain) !== null) {
        if (chain.copyFromReadable(0, msg) === VTCON_CTRL_SIZE) {
          events.push([dv.getUint32(0, true), dv.getUint16(4, true), dv.getUint16(6, true)]);
        }
        queue.pushUsed(chain.head, 0);
        done++;
      }
    } while (queue.enableNotification());
    if (done > 0) this.signal(VTCON_CTRL_TXQ, queue);
    // Answer after the chains are back (answers go to the other queue).
    for (const [id, event, value] of events) this.controlEvent(id, event, value);
  }

  private controlEvent(id: number, event: number, value: number): void {
    switch (event) {
      case VIRTIO_CONSOLE_DEVICE_READY:
        if (value !== 1) return;
        this.deviceReady = true;
        for (let i = 0; i < this.ports.length; i++) this.sendControl(i, VIRTIO_CONSOLE_DEVICE_ADD, 1);
        return;
      case VIRTIO_CONSOLE_PORT_READY: {
        const p = this.ports[id];
        if (!p || value !== 1) return;
        p.ready = true;
        if (p.name.length > 0) this.sendControl(id, VIRTIO_CONSOLE_PORT_NAME, 1, Buffer.from(p.name, 'utf8'));
        const open = p.host?.connected() ?? false;
        p.lastGeneration = p.host?.generation() ?? 0;
        p.toldOpen = open;
        if (open) this.sendControl(id, VIRTIO_CONSOLE_PORT_OPEN, 1);
        return;
      }
      case VIRTIO_CONSOLE_PORT_OPEN: {
        const p = this.ports[id];
        if (p) p.guestOpen = value !== 0;
        return;
      }
      default:
        return; // anything else from the driver has no meaning for us
    }
  }

  /** Tells a multiport driver about host clients connecting or leaving. */
  private announceConnectionChanges(): void {
    this.ports.forEach((p, id) => {
      if (!p.ready || !p.host) return;
      const g = p.host.generation();
      if (g === p.lastGeneration) return;
      p.lastGeneration = g;
      const open = p.host.connected();
      if (open !== p.toldOpen || open) {
        p.toldOpen = open;
        this.sendControl(id, VIRTIO_CONSOLE_PORT_OPEN, open ? 1 : 0);
      }
    });
  }
}

/** Port specs of the virtio-console slot `node` with their host sides
 * attached by `attach` (given the port number N of port.N). */
export function consoleSpecsFromConfig(
  config: ConfigTree, node: string, attach: (n: number) => ConsolePort | undefined,
): ConsolePortSpec[] {
  return consolePortsFromConfig(config, node).map((p) => ({ name: p.name, port: attach(p.n) }));
}

/** Builds the virtio-console model of slot `node` on the device thread,
 * with the port sockets the main thread opened for it (ctx.hostPorts). */
export function createVirtioConsole(ctx: { config: ConfigTree; hostPorts?: Pick<HostPortLookup, 'console'> }, node: string): VirtioConsole {
  const t = ctx.hostPorts?.console(node);
  if (ctx.hostPorts && consolePortsFromConfig(ctx.config, node).length > 0 && (t === undefined || t.kind !== 'console')) {
    throw new ConfigError(`virtio-console at ${node}: its port sockets were not opened`);
  }
  return new VirtioConsole(consoleSpecsFromConfig(ctx.config, node, (n) => {
    const pt = t?.ports[n];
    return pt ? attachConsolePort(pt) : undefined;
  }));
}

/** PCI class bhyve gives virtio-console (PCIC_SIMPLECOMM). */
const PCIC_SIMPLECOMM = 0x07;

/** The emulation of its record (virtio-console-record.ts). */
export const virtioConsoleModel: PciDeviceModel = {
  create: (ctx, s, chipset) => createVirtioPci(ctx, s, chipset, 'virtio-console', PCIC_SIMPLECOMM,
    () => createVirtioConsole(ctx, s.node)),
};
