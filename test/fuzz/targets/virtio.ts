// Fuzz targets for the virtio devices behind the virtio PCI transport:
// virtio-blk, virtio-net, virtio-rnd, virtio-console. A structure-aware
// guest driver probes the function through PCI config space, negotiates
// (mostly) sensible features over the modern or the legacy interface, lays
// out queues, and then makes descriptor chains available and notifies:
// chains a real driver builds, mutated into what a hostile one builds
// (looping NEXT, out-of-table NEXT, wild and straddling addresses, huge and
// zero lengths, readable-after-writable, nested and malformed indirect
// tables, avail idx far ahead, heads out of range). Between chains it
// pokes every register (common config, ISR, device config, notify, legacy
// BAR, MSI-X table and PBA, config space including BARs, MSI, MSI-X and the
// virtio capabilities), scribbles over the rings, resets, and plays the
// host side (frames arriving for virtio-net, bytes and client connects for
// virtio-console).
//
// Invariants after every operation, per active queue: the device never
// holds more chains than the queue size (avail consumed minus used
// returned is within 0..size); while DEVICE_NEEDS_RESET is set, no queue
// moves; a device that asked for a reset has DEVICE_NEEDS_RESET in its
// status; frames handed to the network backend are within Ethernet bounds.

import * as fs from 'node:fs';
import { PciBus } from '../../../src/devices/pci/pci-bus.js';
import { PirqRouter } from '../../../src/devices/pci/pirq.js';
import { IntxRouter } from '../../../src/devices/pci/intx.js';
import { PciResourceAllocator } from '../../../src/devices/pci/bar-alloc.js';
import { assignPciBars } from '../../../src/devices/pci/pci-emul.js';
import {
  VirtioPci, VIRTIO_LEGACY_BAR, VIRTIO_MODERN_BAR, VIRTIO_MSIX_BAR, MODERN_NOTIFY_OFF, MODERN_ISR_OFF, MODERN_DEVICE_OFF,
  type VirtioPciTransport,
} from '../../../src/devices/virtio/virtio-pci.js';
import { VirtioBlock } from '../../../src/devices/virtio/virtio-blk.js';
import { VirtioNet, VTNET_MAX_PKT_LEN } from '../../../src/devices/virtio/virtio-net.js';
import { VirtioRnd } from '../../../src/devices/virtio/virtio-rnd.js';
import { VirtioConsole } from '../../../src/devices/virtio/virtio-console.js';
import { VirtioInput } from '../../../src/devices/virtio/virtio-input.js';
import type { EvdevHost } from '../../../src/devices/virtio/input-backend.js';
import type { AbsInfo, InputEvent, InputId } from '../../../src/sys/evdev.js';
import type { ConsolePort } from '../../../src/devices/virtio/console-backend.js';
import type { NetPort } from '../../../src/devices/net/net-backend.js';
import type { VirtioDevice } from '../../../src/devices/virtio/virtio-device.js';
import type { Virtqueue } from '../../../src/devices/virtio/virtqueue.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
} from '../../../src/devices/virtio/virtio-constants.js';
import { FuzzMachine, FUZZ_LAYOUT, RAM_SIZE, RAM_SPLIT } from '../machine.js';
import { InvariantError, type FuzzInstance, type FuzzTarget } from '../harness.js';
import { installFaultHooks } from '../oracle.js';
import { scratchPath } from '../scratch.js';
import type { Rng } from '../rng.js';

export type VirtioKind = 'blk' | 'net' | 'rnd' | 'console' | 'input';

const SLOT = 4;
/** Rings of queue q live in [q*RING_SLOT, (q+1)*RING_SLOT); buffers above HEAP. */
const RING_SLOT = 0x8000;
const HEAP = 0x140000;

let imageSeq = 0;
/** A small sparse disk image per instance (removed at close). */
function makeImage(): string {
  const p = scratchPath(`disk${imageSeq++}.img`);
  fs.writeFileSync(p, Buffer.alloc(0));
  fs.truncateSync(p, 1 << 20);
  return p;
}

/** The host end of a virtio-net backend: frames queued by the fuzzer. */
class FakeNetPort implements NetPort {
  readonly frames: Uint8Array[] = [];
  sent = 0;
  badSend: string | undefined;
  peek(): Uint8Array | null { return this.frames[0] ?? null; }
  consume(): void { this.frames.shift(); }
  send(views: Uint8Array[]): boolean {
    let n = 0;
    for (const v of views) {
      n += v.length;
      // Touch every byte: a view onto freed or foreign memory would throw.
      if (v.length) void (v[0] + v[v.length - 1]);
    }
    if (n < 14 || n > VTNET_MAX_PKT_LEN) this.badSend = `frame of ${n} bytes handed to the backend`;
    this.sent++;
    return (this.sent & 7) !== 0;
  }
}

/** The host end of a virtio-console port. */
/** A host evdev whose answers and events the fuzzer makes up. */
class FakeEvdev implements EvdevHost {
  pending: InputEvent[] = [];
  written = 0;
  constructor(private readonly rng: Rng) {}
  readEvents(): InputEvent[] { const e = this.pending; this.pending = []; return e; }
  write(ev: InputEvent): boolean {
    if (![ev.type, ev.code].every((v) => Number.isInteger(v) && v >= 0 && v <= 0xffff) || !Number.isInteger(ev.value)) {
      throw new RangeError(`evdev write of a malformed event ${JSON.stringify(ev)}`);
    }
    this.written++;
    return this.rng.chance(0.9);
  }
  name(): Uint8Array | undefined { return this.rng.chance(0.9) ? this.rng.bytes(this.rng.range(0, 200)) : undefined; }
  id(): InputId | undefined {
    const r = this.rng;
    return r.chance(0.9) ? { bustype: r.value(16), vendor: r.value(16), product: r.value(16), version: r.value(16) } : undefined;
  }
  props(out: Uint8Array): boolean { return this.fill(out); }
  bits(_type: number, out: Uint8Array): boolean { return this.fill(out); }
  abs(_axis: number): AbsInfo | undefined {
    const r = this.rng;
    const v = (): number => r.u32() | 0;
    return r.chance(0.8) ? { value: v(), min: v(), max: v(), fuzz: v(), flat: v(), res: v() } : undefined;
  }
  private fill(out: Uint8Array): boolean {
    out.fill(0);
    if (this.rng.chance(0.1)) return false;
    for (let i = 0; i < out.length; i++) if (this.rng.chance(0.3)) out[i] = this.rng.value(8);
    return true;
  }
  /** Events arriving: mostly complete groups, sometimes long runs without EV_SYN. */
  arrive(): void {
    const r = this.rng;
    const n = r.chance(0.9) ? r.range(1, 12) : r.range(1, 3000);
    for (let i = 0; i < n && this.pending.length < 10000; i++) {
      const syn = r.chance(n > 100 ? 0.001 : 0.3);
      this.pending.push({ type: syn ? 0 : r.chance(0.9) ? r.pick([1, 2, 3, 4, 0x11]) : r.value(16), code: r.value(16), value: r.u32() | 0 });
    }
  }
}

class FakeConsolePort implements ConsolePort {
  private buf: Uint8Array[] = [];
  private avail = 0;
  gen = 0;
  open = false;
  written = 0;
  push(b: Uint8Array): void { if (this.avail < 1 << 20) { this.buf.push(b); this.avail += b.length; } }
  available(): number { return this.avail; }
  read(max: number): Uint8Array {
    if (!Number.isInteger(max) || max < 0) throw new RangeError(`read(${max})`);
    const out = new Uint8Array(Math.min(max, this.avail));
    let o = 0;
    while (o < out.length) {
      const b = this.buf[0];
      const n = Math.min(b.length, out.length - o);
      out.set(b.subarray(0, n), o);
      o += n;
      if (n === b.length) this.buf.shift(); else this.buf[0] = b.subarray(n);
    }
    this.avail -= out.length;
    return out;
  }
  write(bytes: Uint8Array): void { this.written += bytes.length; }
  connected(): boolean { return this.open; }
  generation(): number { return this.gen; }
}

interface DriverQueue {
  index: number;
  size: number;
  desc: number;
  avail: number;
  used: number;
  availIdx: number;
  nextDesc: number;
}

class VirtioFuzz implements FuzzInstance {
  readonly m: FuzzMachine;
  readonly fn: VirtioPci;
  readonly device: VirtioDevice;
  private readonly rng: Rng;
  private readonly netPort?: FakeNetPort;
  private readonly consolePorts: FakeConsolePort[] = [];
  private readonly evdev?: FakeEvdev;
  private readonly imagePath?: string;
  /** Use the modern interface (else legacy) for this driver session. */
  private modern = true;
  private queues: DriverQueue[] = [];
  /** Queue positions when DEVICE_NEEDS_RESET was first seen, by queue object. */
  private frozen: Map<Virtqueue, [number, number]> | undefined;

  constructor(readonly kind: VirtioKind, rng: Rng) {
    installFaultHooks();
    this.rng = rng;
    const m = new FuzzMachine(rng);
    this.m = m;
    const pci = new PciBus();
    pci.register(m.ctx);
    pci.registerEcam(m.ctx);
    let device: VirtioDevice;
    let classCode = 0xff;
    switch (kind) {
      case 'blk':
        this.imagePath = makeImage();
        device = VirtioBlock.open({
          path: this.imagePath, readOnly: rng.chance(0.2), sectorSize: rng.pick([512, 512, 4096]),
          nodelete: rng.chance(0.2), queueSize: rng.pick([128, 128, 64, 4]),
        });
        classCode = 0x01;
        break;
      case 'net':
        this.netPort = new FakeNetPort();
        device = new VirtioNet({ mac: Uint8Array.of(0, 0xa0, 0x98, 1, 2, 3), mtu: rng.chance(0.5) ? rng.range(46, 65535) : undefined }, this.netPort);
        classCode = 0x02;
        break;
      case 'rnd':
        device = new VirtioRnd();
        classCode = 0x10;
        break;
      case 'console': {
        const n = rng.range(0, 4);
        for (let i = 0; i < n; i++) this.consolePorts.push(new FakeConsolePort());
        device = new VirtioConsole(this.consolePorts.map((p, i) => ({ name: i === 0 && rng.chance(0.3) ? '' : `port${i}`, port: p })));
        classCode = 0x07;
        break;
      }
      case 'input':
        this.evdev = new FakeEvdev(rng);
        device = new VirtioInput(this.evdev);
        classCode = 0x09;
        break;
    }
    this.device = device;
    // virtio-input has no legacy PCI id: modern only, as its record builds it.
    const transport: VirtioPciTransport = kind === 'input' ? 'modern' : rng.pick(['transitional', 'transitional', 'modern', 'legacy']);
    this.fn = new VirtioPci(m.ctx, device, { emulation: `virtio-${kind}`, classCode, subclass: 0, msix: rng.chance(0.8), transport });
    pci.attach(0, SLOT, 0, this.fn);
    assignPciBars(pci.functions(), new PciResourceAllocator(FUZZ_LAYOUT));
    new IntxRouter(m.irq, new PirqRouter(m.irq), false).routeAll(pci);
    // The guest turns on decoding and bus mastering, as firmware does.
    m.cfgWrite(0, SLOT, 0, 0x04, 2, 0x0007);
    this.modern = transport !== 'legacy' && (transport === 'modern' || rng.chance(0.7));
    this.init();
  }

  // ---- transport access ----

  private get modernBase(): number | undefined { return this.fn.barRegisteredAt(VIRTIO_MODERN_BAR); }
  private get legacyBase(): number | undefined { return this.fn.barRegisteredAt(VIRTIO_LEGACY_BAR); }

  private common(off: number, size: 1 | 2 | 4, value?: number): number {
    const b = this.modernBase;
    if (b === undefined) return 0xffffffff;
    if (value === undefined) return this.m.mmioRead(b + off, size);
    this.m.mmioWrite(b + off, size, value);
    return 0;
  }

  private legacy(off: number, size: 1 | 2 | 4, value?: number): number {
    const b = this.legacyBase;
    if (b === undefined) return 0xffffffff;
    if (value === undefined) return this.m.inp(b + off, size);
    this.m.outp(b + off, size, value);
    return 0;
  }

  private setStatus(v: number): void {
    if (this.modern) this.common(0x14, 1, v); else this.legacy(0x12, 1, v);
  }

  private notify(q: number): void {
    const r = this.rng;
    if (this.modern) {
      const b = this.modernBase;
      if (b !== undefined) this.m.mmioWrite(b + MODERN_NOTIFY_OFF + 4 * q, r.pick([2, 4, 2]), q);
    } else {
      this.legacy(0x10, 2, q);
    }
  }

  // ---- driver initialisation ----

  /** Reset and bring the device up as a driver does, with random deviations. */
  private init(): void {
    const r = this.rng;
    this.queues = [];
    this.frozen = undefined;
    const legacyOk = this.legacyBase !== undefined;
    const modernOk = this.modernBase !== undefined;
    if (!legacyOk && !modernOk) return;
    this.modern = modernOk && (!legacyOk || r.chance(0.7));
    this.setStatus(0);
    this.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
    this.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    const nq = this.device.queueMaxSizes.length;
    if (this.fn.useMsix && r.chance(0.7)) this.enableMsix();
    if (this.modern) {
      this.common(0x00, 4, 0);
      const lo = this.common(0x04, 4);
      this.common(0x00, 4, 1);
      const hi = this.common(0x04, 4);
      let want = lo;
      let wantHi = hi;
      if (r.chance(0.3)) want &= r.u32();
      if (r.chance(0.1)) wantHi = r.u32();
      if (r.chance(0.05)) want = r.u32();
      this.common(0x08, 4, 0); this.common(0x0c, 4, want);
      this.common(0x08, 4, 1); this.common(0x0c, 4, wantHi);
      this.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
      if (this.fn.useMsix) this.common(0x10, 2, r.chance(0.8) ? 0 : r.value(16));
      const count = r.chance(0.7) ? nq : r.range(0, nq);
      for (let q = 0; q < count; q++) {
        if (nq > 4 && r.chance(0.5) && q > 3) continue;
        this.common(0x16, 2, q);
        const max = this.common(0x18, 2);
        let size = max;
        if (r.chance(0.3)) size = 1 << r.below(Math.max(1, Math.log2(Math.max(1, max)) + 1));
        if (r.chance(0.05)) size = r.value(16);
        if (size > 0x800) size = 0x800 > max ? max : 0x800; // keep rings inside their slot
        this.common(0x18, 2, size);
        const actual = this.common(0x18, 2);
        const base = q * RING_SLOT;
        let desc = base, avail = base + 16 * actual, used = (avail + 6 + 2 * actual + 3) & ~3;
        if (r.chance(0.05)) desc = this.m.address();
        if (r.chance(0.05)) used = this.m.address();
        if (r.chance(0.02)) avail = RAM_SIZE - 4;
        this.common(0x20, 4, desc >>> 0); this.common(0x24, 4, Math.floor(desc / 2 ** 32) >>> 0);
        this.common(0x28, 4, avail >>> 0); this.common(0x2c, 4, Math.floor(avail / 2 ** 32) >>> 0);
        this.common(0x30, 4, used >>> 0); this.common(0x34, 4, Math.floor(used / 2 ** 32) >>> 0);
        if (this.fn.useMsix) this.common(0x1a, 2, r.chance(0.8) ? (q + 1) % (nq + 1) : r.value(16));
        this.common(0x1c, 2, r.chance(0.97) ? 1 : r.value(16));
        this.queues.push({ index: q, size: actual, desc, avail, used, availIdx: 0, nextDesc: 0 });
        this.m.ram.fill(0, base, Math.min(RAM_SIZE, base + RING_SLOT));
      }
      if (r.chance(0.97)) this.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
    } else {
      const f = this.legacy(0x00, 4);
      this.legacy(0x04, 4, r.chance(0.8) ? f : r.u32());
      const msixOn = this.fn.useMsix && this.fn.msixEnabledNow();
      if (msixOn) this.legacy(0x14, 2, 0);
      const count = r.chance(0.7) ? nq : r.range(0, nq);
      for (let q = 0; q < count; q++) {
        if (nq > 4 && r.chance(0.5) && q > 3) continue;
        this.legacy(0x0e, 2, q);
        const size = this.legacy(0x0c, 2);
        const base = q * RING_SLOT;
        // Legacy rings: PFN-aligned; net's 1024-entry rings need 28 KiB.
        const pfn = r.chance(0.97) ? base / 4096 : r.u32();
        this.legacy(0x08, 4, pfn);
        if (msixOn) this.legacy(0x16, 2, (q + 1) % (nq + 1));
        const desc = pfn * 4096;
        const avail = desc + 16 * size;
        const used = Math.ceil((avail + 6 + 2 * size) / 4096) * 4096;
        this.queues.push({ index: q, size, desc, avail, used, availIdx: 0, nextDesc: 0 });
        if (base + RING_SLOT <= RAM_SIZE) this.m.ram.fill(0, base, base + RING_SLOT);
      }
      this.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_DRIVER_OK);
    }
  }

  private msixCap(): number | undefined {
    let p = this.m.cfgRead(0, SLOT, 0, 0x34, 1);
    for (let n = 0; n < 48 && p >= 0x40 && p < 0x100; n++) {
      if (this.m.cfgRead(0, SLOT, 0, p, 1) === 0x11) return p;
      p = this.m.cfgRead(0, SLOT, 0, p + 1, 1);
    }
    return undefined;
  }

  /** Programs the MSI-X table and enables MSI-X (sometimes masked). */
  private enableMsix(): void {
    const r = this.rng;
    const cap = this.msixCap();
    const bar = this.fn.barRegisteredAt(VIRTIO_MSIX_BAR);
    if (cap === undefined) return;
    if (bar !== undefined) {
      for (let v = 0; v < this.fn.msixVectorCount; v++) {
        this.m.mmioWrite(bar + 16 * v, 4, 0xfee00000);
        this.m.mmioWrite(bar + 16 * v + 4, 4, 0);
        this.m.mmioWrite(bar + 16 * v + 8, 4, 0x30 + v);
        this.m.mmioWrite(bar + 16 * v + 12, 4, r.chance(0.9) ? 0 : 1);
      }
    }
    this.m.cfgWrite(0, SLOT, 0, cap + 2, 2, r.chance(0.9) ? 0x8000 : 0xc000);
  }

  // ---- chains ----

  private buffer(len: number): number {
    const r = this.rng;
    if (r.chance(0.1)) return RAM_SPLIT - r.below(Math.min(len, 4096) + 1); // straddles the region split
    return HEAP + r.below(RAM_SIZE - HEAP - Math.min(len, RAM_SIZE - HEAP));
  }

  /** This chain is hostile (set per submit): mutations are applied. */
  private evil = false;

  private len(): number {
    const r = this.rng;
    if (!this.evil) return r.chance(0.9) ? r.range(1, 600) : r.range(1, 65536);
    switch (r.below(12)) {
      case 0: return 0;
      case 1: return r.pick([0xffffffff, 0x80000000, 0x7fffffff, 0x100000, RAM_SIZE]);
      case 2: return r.range(1, 65536);
      default: return r.range(1, 600);
    }
  }

  /** Buffers of one request as the device kind expects them. */
  private request(q: number): Array<{ len: number; write: boolean; data?: Uint8Array }> {
    const r = this.rng;
    const bufs: Array<{ len: number; write: boolean; data?: Uint8Array }> = [];
    switch (this.kind) {
      case 'blk': {
        const hdr = new Uint8Array(16);
        const dv = new DataView(hdr.buffer);
        const type = r.pick([0, 1, 4, 8, 11, 13, 0, 1, this.evil ? r.u32() : 0]);
        dv.setUint32(0, type, true);
        dv.setUint32(4, this.evil && r.chance(0.3) ? r.u32() : 0, true);
        const sector = !this.evil || r.chance(0.5) ? r.below(2048 + 16) : r.chance(0.5) ? 2 ** 53 - r.below(4) : r.u32() * 2 ** 21 + r.u32() % 2 ** 21;
        dv.setBigUint64(8, BigInt(Math.min(sector, Number.MAX_SAFE_INTEGER)), true);
        bufs.push({ len: !this.evil || r.chance(0.8) ? 16 : r.range(1, 32), write: false, data: hdr });
        if (type === 11 || type === 13) {
          // DISCARD / WRITE_ZEROES: one (or, hostile, several) 16-byte segment.
          const n = this.evil ? r.range(0, 3) : 1;
          for (let i = 0; i < n; i++) {
            const d = new Uint8Array(16); const v = new DataView(d.buffer);
            v.setBigUint64(0, BigInt(this.evil && r.chance(0.3) ? r.u32() * 4096 : r.below(2100)), true);
            v.setUint32(8, this.evil ? r.value(32) : r.range(1, 64), true);
            v.setUint32(12, this.evil ? r.value(32) : r.below(2), true);
            bufs.push({ len: this.evil && r.chance(0.3) ? this.len() : 16, write: false, data: d });
          }
        } else {
          const segs = type === 4 ? 0 : type === 8 ? 1 : r.range(1, this.evil ? 8 : 3);
          const inDir = type !== 1;
          for (let i = 0; i < segs; i++) {
            const l = type === 8 ? (this.evil ? this.len() : 20) : !this.evil || r.chance(0.7) ? 512 * r.range(1, 16) : this.len();
            bufs.push({ len: l, write: this.evil && r.chance(0.1) ? !inDir : inDir });
          }
        }
        bufs.push({ len: !this.evil || r.chance(0.8) ? 1 : this.len(), write: !this.evil || r.chance(0.8) });
        break;
      }
      case 'net': {
        if (q === 0) {
          const n = r.range(1, 3);
          for (let i = 0; i < n; i++) bufs.push({ len: r.chance(0.7) ? r.pick([1526, 2048, 65562, 12, 10]) : this.len(), write: true });
        } else {
          bufs.push({ len: r.pick([12, 10, 12]), write: false, data: new Uint8Array(12) });
          const n = r.range(0, 3);
          for (let i = 0; i < n; i++) bufs.push({ len: r.chance(0.8) ? r.range(14, 1514) : this.len(), write: false });
        }
        break;
      }
      case 'rnd': {
        const n = r.range(1, 3);
        for (let i = 0; i < n; i++) bufs.push({ len: this.len(), write: r.chance(0.9) });
        break;
      }
      case 'input': {
        if (q === 0) {
          bufs.push({ len: !this.evil || r.chance(0.7) ? 8 : this.len(), write: !this.evil || r.chance(0.8) });
        } else {
          bufs.push({ len: !this.evil || r.chance(0.7) ? 8 : this.len(), write: this.evil && r.chance(0.2), data: r.bytes(8) });
        }
        break;
      }
      case 'console': {
        const tx = q % 2 === 1;
        if (q === 3) {
          const msg = new Uint8Array(8);
          const dv = new DataView(msg.buffer);
          dv.setUint32(0, r.chance(0.8) ? r.below(5) : r.u32(), true);
          dv.setUint16(4, r.chance(0.9) ? r.below(8) : r.value(16), true);
          dv.setUint16(6, r.chance(0.8) ? 1 : r.value(16), true);
          bufs.push({ len: r.chance(0.9) ? 8 : r.range(1, 16), write: false, data: msg });
        } else {
          const n = r.range(1, 2);
          for (let i = 0; i < n; i++) bufs.push({ len: r.chance(0.8) ? r.range(1, 256) : this.len(), write: !tx });
        }
        break;
      }
    }
    if (this.evil && r.chance(0.1)) r.pick(bufs).write = !r.pick(bufs).write; // readable after writable
    return bufs;
  }

  private writeDesc(table: number, i: number, addr: number, len: number, flags: number, next: number): void {
    const o = table + 16 * i;
    if (o < 0 || o + 16 > RAM_SIZE) return;
    const dv = new DataView(this.m.ram.buffer, this.m.ram.byteOffset + o, 16);
    dv.setUint32(0, addr >>> 0, true);
    dv.setUint32(4, Math.floor(addr / 2 ** 32) >>> 0, true);
    dv.setUint32(8, len >>> 0, true);
    dv.setUint16(12, flags, true);
    dv.setUint16(14, next & 0xffff, true);
  }

  private w16(gpa: number, v: number): void {
    if (gpa >= 0 && gpa + 2 <= RAM_SIZE) { this.m.ram[gpa] = v & 0xff; this.m.ram[gpa + 1] = (v >>> 8) & 0xff; }
  }

  private r16(gpa: number): number {
    return gpa >= 0 && gpa + 2 <= RAM_SIZE ? this.m.ram[gpa] | (this.m.ram[gpa + 1] << 8) : 0;
  }

  /** Builds one chain (direct or indirect, mutated), makes it available
   * and notifies. */
  private submit(): void {
    const r = this.rng;
    if (this.queues.length === 0) { this.init(); return; }
    const dq = r.pick(this.queues);
    this.evil = r.chance(0.25);
    const evil = this.evil;
    const bufs = this.request(dq.index);
    const placed = bufs.map((b) => {
      const addr = evil && r.chance(0.15) ? this.m.address() : this.buffer(b.len);
      if (b.data && addr >= 0 && addr + b.data.length <= RAM_SIZE) this.m.ram.set(b.data.subarray(0, Math.min(b.data.length, b.len)), addr);
      return { addr, len: b.len, write: b.write };
    });
    const indirect = r.chance(0.2);
    const count = placed.length;
    let head: number;
    if (indirect) {
      const table = !evil || r.chance(0.8) ? this.buffer(16 * count) & ~0xf : this.m.address();
      placed.forEach((b, k) => {
        const last = k === count - 1;
        let flags = (b.write ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT);
        let next = last ? 0 : k + 1;
        if (evil && r.chance(0.08)) next = r.below(count + 2);
        if (evil && r.chance(0.04)) flags |= VIRTQ_DESC_F_INDIRECT;
        this.writeDesc(table, k, b.addr, b.len, flags, next);
      });
      head = dq.nextDesc;
      dq.nextDesc = (dq.nextDesc + 1) % dq.size;
      let tlen = 16 * count;
      if (evil && r.chance(0.2)) tlen = r.pick([0, 8, 17, 16 * 70000, 0xfffffff0, r.u32()]);
      this.writeDesc(dq.desc, head, table, tlen, VIRTQ_DESC_F_INDIRECT | (evil && r.chance(0.08) ? VIRTQ_DESC_F_NEXT : 0), 0);
    } else {
      const idx = placed.map(() => { const i = dq.nextDesc; dq.nextDesc = (dq.nextDesc + 1) % dq.size; return i; });
      placed.forEach((b, k) => {
        const last = k === count - 1;
        let next = last ? 0 : idx[k + 1];
        let flags = (b.write ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT);
        if (evil && r.chance(0.08)) { next = idx[r.below(k + 1)]; flags |= VIRTQ_DESC_F_NEXT; } // a loop
        if (evil && r.chance(0.04)) next = r.value(16);
        this.writeDesc(dq.desc, idx[k], b.addr, b.len, flags, next);
      });
      head = idx[0];
    }
    if (evil && r.chance(0.04)) head = r.value(16);
    this.w16(dq.avail + 4 + 2 * (dq.availIdx % dq.size), head);
    dq.availIdx = (dq.availIdx + (evil && r.chance(0.04) ? r.value(16) : 1)) & 0xffff;
    this.w16(dq.avail + 2, dq.availIdx);
    if (r.chance(0.9)) this.notify(r.chance(0.98) ? dq.index : r.value(16));
  }

  /** Reads the used ring and re-arms interrupts (used_event / flags). */
  private consume(): void {
    const r = this.rng;
    for (const dq of this.queues) {
      const usedIdx = this.r16(dq.used + 2);
      if (r.chance(0.5)) this.w16(dq.avail + 4 + 2 * dq.size, usedIdx); // used_event
      if (r.chance(0.1)) this.w16(dq.avail, r.below(2)); // NO_INTERRUPT
    }
    if (this.modern) this.common(MODERN_ISR_OFF, 1); else this.legacy(0x13, 1);
  }

  // ---- unstructured pokes ----

  private poke(): void {
    const r = this.rng;
    const m = this.m;
    const what = r.below(6);
    const write = r.chance(0.6);
    if (what === 0 && this.modernBase !== undefined) {
      const off = r.pick([r.below(0x40), MODERN_ISR_OFF + r.below(4), MODERN_DEVICE_OFF + r.below(0x40), MODERN_NOTIFY_OFF + r.below(0x100), r.below(0x4000)]);
      const size = m.mmioSize();
      if (write) m.mmioWrite(this.modernBase + off, size, r.value(), r.value()); else m.mmioRead(this.modernBase + off, size);
    } else if (what === 1 && this.legacyBase !== undefined) {
      const off = r.below(0x60);
      const size = r.size();
      if (write) m.outp(this.legacyBase + off, size, r.value()); else m.inp(this.legacyBase + off, size);
    } else if (what === 2 && this.fn.barRegisteredAt(VIRTIO_MSIX_BAR) !== undefined) {
      const b = this.fn.barRegisteredAt(VIRTIO_MSIX_BAR)!;
      const off = r.chance(0.8) ? r.below(0x100) : r.below(0x2000);
      const size = m.mmioSize();
      if (write) m.mmioWrite(b + off, size, r.value(), r.value()); else m.mmioRead(b + off, size);
    } else if (what === 3) {
      // Config space, through 0xcf8/0xcfc or ECAM; BAR writes move BARs.
      const off = r.chance(0.3) ? 0x10 + 4 * r.below(6) : r.chance(0.5) ? 0x40 + r.below(0x60) : r.below(0x1000);
      const size = r.size();
      const v = r.chance(0.2) ? 0xffffffff : r.value();
      if (r.chance(0.5)) {
        if (write) m.cfgWrite(0, SLOT, r.chance(0.95) ? 0 : r.below(8), off & 0xff, size, v); else m.cfgRead(0, SLOT, 0, off & 0xff, size);
      } else {
        const a = 0xe0000000 + (SLOT << 15) + off;
        if (write) m.mmioWrite(a, m.mmioSize(), v); else m.mmioRead(a, m.mmioSize());
      }
      // Put decoding back on most of the time so the driver can go on.
      if (r.chance(0.5)) m.cfgWrite(0, SLOT, 0, 0x04, 2, 0x0007);
    } else if (what === 4) {
      this.setStatus(r.value(8));
    } else {
      // The pci_cfg_data window of the VIRTIO_PCI_CAP_PCI_CFG capability.
      let p = m.cfgRead(0, SLOT, 0, 0x34, 1);
      for (let n = 0; n < 48 && p >= 0x40 && p < 0x100; n++) {
        if (m.cfgRead(0, SLOT, 0, p, 1) === 0x09 && m.cfgRead(0, SLOT, 0, p + 3, 1) === 5) {
          m.cfgWrite(0, SLOT, 0, p + 4, 1, r.chance(0.9) ? 4 : r.value(8));
          m.cfgWrite(0, SLOT, 0, p + 8, 4, r.chance(0.8) ? r.below(0x40) : r.value());
          m.cfgWrite(0, SLOT, 0, p + 12, 4, r.pick([1, 2, 4, 4, r.value()]));
          if (write) m.cfgWrite(0, SLOT, 0, p + 16, r.size(), r.value()); else m.cfgRead(0, SLOT, 0, p + 16, r.size());
          break;
        }
        p = m.cfgRead(0, SLOT, 0, p + 1, 1);
      }
    }
  }

  /** The host side: frames or bytes arriving, clients coming and going. */
  private host(): void {
    const r = this.rng;
    if (this.netPort) {
      if (this.netPort.frames.length < 64) {
        const n = r.chance(0.9) ? r.range(14, 1514) : r.pick([0, 1, 65535, VTNET_MAX_PKT_LEN, r.range(1515, 70000)]);
        this.netPort.frames.push(r.bytes(n));
      }
    }
    if (this.consolePorts.length > 0) {
      const p = r.pick(this.consolePorts);
      if (r.chance(0.2)) { p.open = !p.open; p.gen++; }
      if (r.chance(0.8)) p.push(r.bytes(r.chance(0.9) ? r.range(1, 200) : r.range(1, 200000)));
    }
    if (this.evdev) this.evdev.arrive();
    this.fn.poll();
  }

  step(): void {
    const r = this.rng;
    // A driver resets a device that needs it (or that it failed to start).
    const st = this.fn.deviceStatus;
    if ((st & VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET || !(st & VIRTIO_CONFIG_S_DRIVER_OK)) && r.chance(0.3)) { this.init(); return; }
    switch (r.weighted([40, 6, 5, 18, 7, 8, 2, 2])) {
      case 0: this.submit(); break;
      case 1: this.consume(); break;
      case 2: { const dq = this.queues.length ? r.pick(this.queues) : undefined; this.notify(dq && r.chance(0.9) ? dq.index : r.value(16)); break; }
      case 3: this.poke(); break;
      case 4: this.host(); break;
      case 5: this.m.scribble(); break;
      case 6: this.init(); break;
      default: {
        // Scribble the rings themselves.
        if (this.queues.length === 0) break;
        const dq = r.pick(this.queues);
        const at = r.pick([dq.desc + r.below(16 * dq.size), dq.avail + r.below(6 + 2 * dq.size), dq.used + r.below(6 + 8 * dq.size)]);
        if (at >= 0 && at + 2 <= RAM_SIZE) this.w16(at, r.value(16));
      }
    }
  }

  check(): void {
    const st = this.fn.deviceStatus;
    const active = (this.fn as unknown as { activeQueues: Array<Virtqueue | null> }).activeQueues;
    if (this.device.needsResetReason !== undefined && !(st & VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET) && st !== 0) {
      throw new InvariantError(`device asked for a reset (${this.device.needsResetReason}) but status 0x${st.toString(16)} lacks DEVICE_NEEDS_RESET`);
    }
    active.forEach((q, i) => {
      if (!q) return;
      const held = (q.lastAvailIdx - q.usedIdx) & 0xffff;
      if (held > q.size) throw new InvariantError(`queue ${i}: device holds ${held} chains, more than the queue size ${q.size}`);
    });
    if (st & VIRTIO_CONFIG_S_DEVICE_NEEDS_RESET) {
      if (!this.frozen) this.resets++;
      // The device ignores its queues until reset: none of them moves. (A
      // driver that clears and sets DRIVER_OK again gets new queue objects,
      // which the transport does not serve either.)
      this.frozen ??= new Map();
      for (const q of active) {
        if (!q) continue;
        const was = this.frozen.get(q);
        if (was && (was[0] !== q.lastAvailIdx || was[1] !== q.usedIdx)) {
          throw new InvariantError(`queue ${q.index} moved while DEVICE_NEEDS_RESET was set (${was} -> ${q.lastAvailIdx},${q.usedIdx})`);
        }
        this.frozen.set(q, [q.lastAvailIdx, q.usedIdx]);
      }
    } else {
      this.frozen = undefined;
    }
    if (this.netPort?.badSend) throw new InvariantError(this.netPort.badSend);
  }

  private resets = 0;

  stats(): Record<string, number> {
    const s: Record<string, number> = { 'needs-reset entered': this.resets };
    const d = this.device as unknown as Record<string, unknown>;
    const ds = d.stats as Record<string, number> | undefined;
    if (ds && typeof ds === 'object') for (const [k, v] of Object.entries(ds)) if (typeof v === 'number') s[k] = v;
    if (this.device instanceof VirtioRnd) s['entropy bytes'] = this.device.bytesProvided;
    for (const p of this.consolePorts) s['console bytes to host'] = (s['console bytes to host'] ?? 0) + p.written;
    if (this.device instanceof VirtioInput) {
      for (const [k, v] of Object.entries(this.device.counters())) s[k] = v;
      s['status events to host'] = this.evdev!.written;
    }
    const c = this.fn.stats();
    s['msi-x messages'] = c['msi-x messages'];
    s['msi messages'] = c['msi messages'];
    s['intx assertions'] = c['intx assertions'];
    s['notifies'] = c['queue notifies by exit'];
    return s;
  }

  close(): void {
    this.fn.close();
    if (this.imagePath) fs.rmSync(this.imagePath, { force: true });
  }
}

export function virtioTarget(kind: VirtioKind): FuzzTarget {
  const what: Record<VirtioKind, string> = {
    blk: 'virtio-blk requests (IN/OUT/FLUSH/GET_ID/DISCARD/WRITE_ZEROES) on a 1 MiB image',
    net: 'virtio-net TX frames and RX buffers with host frames arriving',
    rnd: 'virtio-rnd entropy requests',
    console: 'virtio-console ports and the MULTIPORT control queues with host clients',
    input: 'virtio-input event and status queues, config selects answered by a made-up evdev, host event groups of any size',
  };
  return {
    name: `virtio-${kind}`,
    surface: `${what[kind]}; virtio-pci transport (modern, legacy, MSI-X, MSI, INTx), config space, virtqueues`,
    create: (rng) => new VirtioFuzz(kind, rng),
    instanceOps: 5000,
  };
}
