// Fuzz target for virtio-iommu's request parser and domain store
// (src/devices/iommu/): requests on the request queue with every type and
// fields at edge values (domain and endpoint ids known and unknown,
// addresses unaligned, overlapping, straddling the MSI window and the
// 48-bit input range, u64 extremes, unknown flags and reserved bits),
// readable parts cut short or long and split across descriptors, tails
// missing or too small, PROBE buffers of any size; bypass written through
// the config; DMA of the endpoints translated at random (every fault lands
// on the event queue, whose buffers come and go); device resets.
//
// Oracle: a shadow model of the spec (domains, attachments, mappings,
// bypass) written independently of the device: every status code, every
// used length and every translation (or fault) must match it; mapping and
// domain counts must agree; no fault report is lost while buffers wait.
import { DMA_READ, DMA_WRITE, DmaFaultError, TranslatedDmaSpace } from '../../../src/devices/iommu/dma-space.js';
import {
  IOMMU_MAX_MAPPINGS, IOMMU_PENDING_FAULTS, IOMMU_PROBE_SIZE, VirtioIommu,
} from '../../../src/devices/iommu/virtio-iommu.js';
import { featureBit } from '../../../src/devices/virtio/virtio-constants.js';
import { offeredFeatures } from '../../../src/devices/virtio/virtio-device.js';
import { FakeDriver } from '../../unit/virtio-driver.js';
import { activateQueues } from '../../unit/virtio-queues.js';
import { InvariantError, type FuzzInstance, type FuzzTarget } from '../harness.js';
import type { Rng } from '../rng.js';

const ENDPOINTS = [0x18, 0x20, 0x21];
const PAGE = 0x1000;
const INPUT_END = 2 ** 48 - 1;
const MSI = [0xfee00000, 0xfeefffff];
const RAM = [{ gpa: 0, length: 1 << 30 }];

interface ShadowMap { first: number; last: number; gpa: number; access: number }
interface ShadowDomain { bypass: boolean; maps: ShadowMap[]; eps: Set<number> }

/** The spec's rules, stated plainly. */
class Shadow {
  domains = new Map<number, ShadowDomain>();
  attached = new Map<number, number>();
  bypass = false;
  count = 0;
  constructor(readonly features: bigint) {}
  has(bit: number): boolean { return (this.features & featureBit(bit)) !== 0n; }

  attach(domain: number, ep: number, flags: number, reserved: number): number {
    if (reserved !== 0) return 4;
    if (flags & ~(this.has(6) ? 1 : 0)) return 4;
    if (!ENDPOINTS.includes(ep)) return 6;
    const bypass = (flags & 1) !== 0;
    const d = this.domains.get(domain);
    if (d && d.bypass !== bypass) return 4;
    if (this.attached.get(ep) === domain) return 0;
    this.leave(ep);
    const nd = d ?? { bypass, maps: [], eps: new Set<number>() };
    this.domains.set(domain, nd);
    nd.eps.add(ep);
    this.attached.set(ep, domain);
    return 0;
  }

  leave(ep: number): void {
    const old = this.attached.get(ep);
    if (old === undefined) return;
    const d = this.domains.get(old)!;
    d.eps.delete(ep);
    this.attached.delete(ep);
    if (d.eps.size === 0) { this.count -= d.maps.length; this.domains.delete(old); }
  }

  detach(domain: number, ep: number): number {
    if (!ENDPOINTS.includes(ep)) return 6;
    if (!this.domains.has(domain) || this.attached.get(ep) !== domain) return 4;
    this.leave(ep);
    return 0;
  }

  map(domain: number, s: bigint, e: bigint, p: bigint, flags: number): number {
    if (flags & ~(3 | (this.has(5) ? 4 : 0))) return 4;
    const d = this.domains.get(domain);
    if (!d) return 6;
    if (d.bypass || e < s) return 4;
    if (s % 4096n || p % 4096n || (e + 1n) % 4096n) return 5;
    if (e > BigInt(INPUT_END) || p + (e - s) > BigInt(2 ** 52 - 1)) return 5;
    const first = Number(s), last = Number(e);
    if (first <= MSI[1] && last >= MSI[0]) return 5;
    if (this.count >= IOMMU_MAX_MAPPINGS) return 8;
    if (d.maps.some((m) => m.first <= last && first <= m.last)) return 4;
    d.maps.push({ first, last, gpa: Number(p), access: flags & 3 });
    this.count++;
    return 0;
  }

  unmap(domain: number, s: bigint, e: bigint): number {
    const d = this.domains.get(domain);
    if (!d) return 6;
    if (d.bypass || e < s) return 4;
    if (s > BigInt(INPUT_END)) return 0;
    const first = Number(s), last = e > BigInt(INPUT_END) ? INPUT_END : Number(e);
    const hit = d.maps.filter((m) => m.first <= last && first <= m.last);
    if (hit.some((m) => m.first < first || m.last > last)) return 5;
    d.maps = d.maps.filter((m) => !hit.includes(m));
    this.count -= hit.length;
    return 0;
  }

  /** 'fault' or the guest-physical address of each byte's page start. */
  translate(ep: number, iova: number, len: number, access: number): Array<[number, number]> | 'fault' {
    const dom = this.attached.get(ep);
    if (dom === undefined) return this.bypass ? [[iova, len]] : 'fault';
    const d = this.domains.get(dom)!;
    if (d.bypass) return [[iova, len]];
    const out: Array<[number, number]> = [];
    for (let at = iova; at < iova + len;) {
      const m = d.maps.find((x) => at >= x.first && at <= x.last);
      if (!m || (m.access & access) !== access) return 'fault';
      const n = Math.min(iova + len, m.last + 1) - at;
      const gpa = m.gpa + at - m.first;
      const prev = out[out.length - 1];
      if (prev && prev[0] + prev[1] === gpa) prev[1] += n; else out.push([gpa, n]);
      at += n;
    }
    return out;
  }
}

class IommuFuzz implements FuzzInstance {
  private readonly req = new FakeDriver(64, 1 << 20);
  private readonly evq = new FakeDriver(16, 1 << 16);
  private readonly spaces = ENDPOINTS.map((ep) => new TranslatedDmaSpace(ep, RAM));
  private readonly dev: VirtioIommu;
  private readonly model: Shadow;
  private used = 0;
  private evOffered = 0;
  private faultsExpected = 0;
  /** Reports made before the last reset. */
  private faultBase = 0;
  private readonly counts = { requests: 0, ok: 0, translations: 0, faults: 0, resets: 0 };
  lastOp?: string;

  constructor(private readonly r: Rng) {
    this.dev = new VirtioIommu(this.spaces, { bypass: r.chance(0.2) });
    const all = offeredFeatures(this.dev);
    const features = r.chance(0.7) ? all : all & BigInt(r.u32()) | featureBit(32);
    activateQueues(this.dev, [this.req, this.evq], features);
    this.model = new Shadow(this.dev.ackedFeatures);
    this.model.bypass = this.dev.bypass;
  }

  // ---- values ----
  private domain(): number { return this.r.chance(0.8) ? this.r.below(3) : this.r.value(32); }
  private endpoint(): number { return this.r.chance(0.8) ? this.r.pick(ENDPOINTS) : this.r.value(32); }
  private addr(): bigint { return BigInt.asUintN(64, this.anyAddr()); }
  private anyAddr(): bigint {
    const r = this.r;
    // Mostly a small window, so that maps, unmaps and DMA meet.
    switch (r.below(10)) {
      case 0: case 7: case 8: case 9: return BigInt(r.below(32) * PAGE);
      case 1: return BigInt(MSI[0] + r.range(-4, 4) * PAGE);
      case 2: return BigInt(INPUT_END + 1) + BigInt(r.range(-8, 8) * PAGE);
      case 3: return BigInt.asUintN(64, BigInt(r.u32()) << 32n | BigInt(r.u32()));
      case 4: return BigInt(r.below(64) * PAGE + r.range(-1, 1));
      default: return BigInt(r.below(1 << 20) * PAGE);
    }
  }
  private length(): bigint { return BigInt(this.r.chance(0.9) ? this.r.range(1, 8) * PAGE : (this.r.value(32) >>> 0) + 1); }

  // ---- requests ----
  private send(body: Uint8Array, writable: number, expectLen: number, expectStatus: number | undefined, what: string): void {
    const r = this.r;
    const d = this.req;
    const rb = d.alloc(Math.max(body.length, 1));
    d.fill(rb, body);
    const wb = d.alloc(Math.max(writable, 1));
    d.fill(wb, new Uint8Array(writable).fill(0xee));
    const bufs = [];
    // The readable part in one or two descriptors.
    if (body.length > 1 && r.chance(0.2)) {
      const cut = r.range(1, body.length - 1);
      bufs.push({ addr: rb, len: cut }, { addr: rb + cut, len: body.length - cut });
    } else if (body.length) bufs.push({ addr: rb, len: body.length });
    if (writable) bufs.push({ addr: wb, len: writable, write: true });
    const indirect = (this.model.features & featureBit(28)) !== 0n && r.chance(0.2);
    d.offer(indirect ? d.indirectChain(bufs) : d.chain(bufs));
    this.dev.queueNotify(0);
    this.counts.requests++;
    if (d.usedIdx() !== ((++this.used) & 0xffff)) throw new InvariantError(`${what}: no used entry (${this.dev.needsResetReason ?? 'device running'})`);
    const len = d.usedElem(this.used - 1).len;
    if (len !== expectLen) throw new InvariantError(`${what}: used length ${len}, the model says ${expectLen}`);
    if (expectStatus === undefined) return;
    const status = d.read(wb + writable - 4, 1)[0];
    if (status !== expectStatus) throw new InvariantError(`${what}: status ${status}, the model says ${expectStatus}`);
    if (status === 0) this.counts.ok++;
    // The heap is a bump allocator: start over before it runs out.
    if (this.used % 512 === 0) (d as unknown as { heap: number }).heap = (d.layout.used + 6 + 8 * d.size + 4095) & ~4095;
  }

  private request(): void {
    const r = this.r;
    const type = r.chance(0.95) ? r.range(1, 5) : r.value(8);
    const sizes: Record<number, number> = { 1: 20, 2: 20, 3: 36, 4: 28, 5: 72 };
    const full = sizes[type] ?? r.range(4, 80);
    const n = r.chance(0.85) ? full : r.chance(0.5) ? r.range(0, full) : full + r.range(1, 16);
    const body = new Uint8Array(n);
    const b = new Uint8Array(80);
    const bv = new DataView(b.buffer);
    b[0] = type;
    let writable = r.chance(0.9) ? 4 : r.range(n === 0 ? 1 : 0, 8);
    const dom = this.domain();
    let expect: () => number;
    let fields = '';
    switch (type) {
      case 1: {
        const ep = this.endpoint();
        const flags = r.chance(0.8) ? 0 : r.chance(0.5) ? 1 : r.value(32);
        const reserved = r.chance(0.9) ? 0 : r.value(32);
        bv.setUint32(4, dom, true); bv.setUint32(8, ep, true); bv.setUint32(12, flags, true); bv.setUint32(16, reserved, true);
        expect = () => this.model.attach(dom, ep, flags, reserved);
        break;
      }
      case 2: {
        const ep = this.endpoint();
        bv.setUint32(4, dom, true); bv.setUint32(8, ep, true);
        expect = () => this.model.detach(dom, ep);
        break;
      }
      case 3: {
        const s = this.addr();
        const e = r.chance(0.9) ? BigInt.asUintN(64, s + this.length() - 1n) : this.addr();
        const p = r.chance(0.9) ? BigInt(r.below(1 << 18) * PAGE) : this.addr();
        const flags = r.chance(0.9) ? r.range(0, 3) : r.chance(0.5) ? 4 | r.range(0, 3) : r.value(32);
        bv.setUint32(4, dom, true); bv.setBigUint64(8, s, true); bv.setBigUint64(16, e, true); bv.setBigUint64(24, p, true); bv.setUint32(32, flags, true);
        expect = () => this.model.map(dom, s, e, p, flags);
        fields = ` domain ${dom} 0x${s.toString(16)}-0x${e.toString(16)} -> 0x${p.toString(16)} flags ${flags}`;
        break;
      }
      case 4: {
        const s = this.addr();
        const e = r.chance(0.8) ? BigInt.asUintN(64, s + this.length() - 1n) : this.addr();
        bv.setUint32(4, dom, true); bv.setBigUint64(8, s, true); bv.setBigUint64(16, e, true);
        expect = () => this.model.unmap(dom, s, e);
        fields = ` domain ${dom} 0x${s.toString(16)}-0x${e.toString(16)}`;
        break;
      }
      case 5: {
        const ep = this.endpoint();
        bv.setUint32(4, ep, true);
        writable = r.chance(0.8) ? IOMMU_PROBE_SIZE + 4 : r.range(n === 0 ? 1 : 0, 1024);
        expect = () => (!ENDPOINTS.includes(ep) ? 6 : writable - 4 < IOMMU_PROBE_SIZE ? 4 : 0);
        break;
      }
      default:
        expect = () => -1;
    }
    body.set(b.subarray(0, Math.min(n, 80)));
    if (n > 80) body.fill(0, 80);
    const known = type >= 1 && type <= 5 && (type !== 5 || this.model.has(4));
    if (writable < 4 || n < 4 || !known) {
      this.lastOp = `request type ${type}, ${n} + ${writable} bytes: unwritten`;
      this.send(body, writable, 0, undefined, this.lastOp);
      return;
    }
    const status = n < full ? 4 : expect();
    this.lastOp = `request type ${type}${fields}, ${n} + ${writable} bytes, status ${status}`;
    this.send(body, writable, type === 5 ? writable : 4, status, this.lastOp);
  }

  private translate(): void {
    const r = this.r;
    const i = r.below(this.spaces.length);
    const space = this.spaces[i];
    const iova = Number(r.chance(0.7) ? BigInt(r.below(32) * PAGE + r.below(PAGE)) : this.addr() & ((1n << 52n) - 1n));
    const len = r.chance(0.9) ? r.range(1, 3 * PAGE) : (r.value(32) >>> 0) + 1;
    const access = r.pick([DMA_READ, DMA_WRITE, DMA_READ | DMA_WRITE]);
    const want = this.model.translate(ENDPOINTS[i], iova, len, access);
    this.lastOp = `translate endpoint ${ENDPOINTS[i].toString(16)} 0x${iova.toString(16)}+0x${len.toString(16)} access ${access}`;
    this.counts.translations++;
    let got: Array<[number, number]> | 'fault';
    try {
      got = space.translate(iova, len, access).map((g) => [g.gpa, g.length]);
    } catch (e) {
      if (!(e instanceof DmaFaultError)) throw e;
      got = 'fault';
      this.counts.faults++;
      this.faultsExpected++;
    }
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      throw new InvariantError(`${this.lastOp}: ${JSON.stringify(got)}, the model says ${JSON.stringify(want)}`);
    }
  }

  private eventBuffers(): void {
    const r = this.r;
    const n = r.range(1, 4);
    for (let k = 0; k < n && this.evOffered - this.evq.usedIdx() < 16; k++) {
      const size = r.chance(0.9) ? 24 : r.range(1, 64);
      const a = this.evq.alloc(64);
      this.evq.offer(this.evq.chain([{ addr: a, len: size, write: true }]));
      this.evOffered++;
      if (this.evOffered % 256 === 0) (this.evq as unknown as { heap: number }).heap = (this.evq.layout.used + 6 + 8 * 16 + 4095) & ~4095;
    }
    this.lastOp = `${n} event buffers`;
    this.dev.queueNotify(1);
  }

  step(): void {
    const r = this.r;
    switch (r.weighted([60, 30, 5, 3, 2])) {
      case 0: this.request(); break;
      case 1: this.translate(); break;
      case 2: this.eventBuffers(); break;
      case 3: {
        const v = r.chance(0.9) ? r.below(2) : r.value(8);
        this.lastOp = `config bypass <- ${v}`;
        this.dev.writeConfig(36, Uint8Array.of(v));
        if (this.model.has(6)) this.model.bypass = (v & 1) === 1;
        break;
      }
      default: {
        this.lastOp = 'device reset';
        this.counts.resets++;
        this.dev.reset();
        // The queues start over: a fresh driver state.
        this.resetDrivers();
        const bypass = this.model.bypass;
        Object.assign(this.model, new Shadow(this.model.features));
        this.model.bypass = bypass;
        break;
      }
    }
  }

  private resetDrivers(): void {
    for (const d of [this.req, this.evq]) {
      d.bytes.fill(0);
      d.availIdx = 0;
      (d as unknown as { nextDesc: number }).nextDesc = 0;
      (d as unknown as { heap: number }).heap = (d.layout.used + 6 + 8 * d.size + 4095) & ~4095;
    }
    this.used = 0;
    this.evOffered = 0;
    this.faultsExpected = 0;
    this.faultBase = this.dev.counts.faultsReported + this.dev.counts.faultsDropped;
    activateQueues(this.dev, [this.req, this.evq], this.model.features);
  }

  check(): void {
    if (this.dev.mappingCount !== this.model.count) throw new InvariantError(`${this.dev.mappingCount} mappings, the model has ${this.model.count}`);
    if (this.dev.domainCount !== this.model.domains.size) throw new InvariantError(`${this.dev.domainCount} domains, the model has ${this.model.domains.size}`);
    if (this.dev.bypass !== this.model.bypass) throw new InvariantError(`bypass ${this.dev.bypass}, the model says ${this.model.bypass}`);
    if (this.dev.pendingFaultCount > IOMMU_PENDING_FAULTS) throw new InvariantError(`${this.dev.pendingFaultCount} faults pending`);
    if (this.dev.needsResetReason !== undefined) throw new InvariantError(`well-formed queues, yet needs-reset: ${this.dev.needsResetReason}`);
    // Every refused access is reported once: delivered, waiting or dropped.
    const c = this.dev.counts;
    const accounted = c.faultsReported + c.faultsDropped - this.faultBase + this.dev.pendingFaultCount;
    if (accounted !== this.faultsExpected) throw new InvariantError(`${this.faultsExpected} refused accesses, ${accounted} fault reports`);
  }

  stats(): Record<string, number> { return { ...this.counts }; }
}

export const VIRTIO_IOMMU_TARGET: FuzzTarget = {
  name: 'virtio-iommu',
  surface: 'virtio-iommu requests (ATTACH/DETACH/MAP/UNMAP/PROBE, malformed framing), bypass, endpoint DMA translations and fault reports, checked against a shadow model of the spec',
  create: (rng) => new IommuFuzz(rng),
  instanceOps: 5000,
};
