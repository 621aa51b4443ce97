// virtio-iommu (virtio spec 1.2/1.3, 5.13; device id 23): the IOMMU the
// guest programs for the functions configured behind it (pci.B.S.F.iommu).
//
// Queue 0 takes requests (ATTACH, DETACH, MAP, UNMAP, PROBE), each one
// chain: the device-readable request, then the device-writable part whose
// last 4 bytes are the tail (status); PROBE's properties precede the tail.
// Queue 1 holds the driver's event buffers; a DMA the mappings refuse is
// reported there as a virtio_iommu_fault (faults that find no buffer wait
// in a short list, then are dropped and counted).
//
// Endpoint ids are PCI requester ids (bus << 8 | devfn), as the ACPI VIOT
// table (firmware/acpi/viot.ts) and QEMU give them. IOVAs are limited to
// 48 bits (input_range), so every address is an exact JS number; pages are
// 4 KiB; the MSI window 0xfee00000-0xfeefffff is each endpoint's reserved
// MSI region (PROBE) and cannot be mapped. Unattached endpoints are in
// bypass only when `bypass` says so (default off: an IOMMU that was asked
// for isolates from the start; BYPASS_CONFIG lets the driver change it).
//
// Every request field is checked and answered with the spec's status
// codes; a request too short to hold a tail, or of unknown type, comes back
// unwritten (used length 0). Mappings per device are bounded (S_NOMEM).

import { ConfigError } from '../../config/tree.js';
import type { PciDeviceModel } from '../pci-device.js';
import { transportOf } from './virtio-iommu-record.js';
import { VIRTIO_ID_IOMMU, featureBit } from '../virtio/virtio-constants.js';
import { VirtioDeviceBase } from '../virtio/virtio-device.js';
import { VirtioPci } from '../virtio/virtio-pci.js';
import { DescriptorChain, type Virtqueue } from '../virtio/virtqueue.js';
import {
  DMA_READ, DMA_WRITE, type DmaFaultError, type DmaMapping, type TranslatedDmaSpace, formatEndpoint, pciEndpointId,
} from './dma-space.js';
import { IommuDomain } from './iommu-domain.js';

// Feature bits (5.13.3).
export const VIRTIO_IOMMU_F_INPUT_RANGE = 0;
export const VIRTIO_IOMMU_F_DOMAIN_RANGE = 1;
export const VIRTIO_IOMMU_F_MAP_UNMAP = 2;
export const VIRTIO_IOMMU_F_BYPASS = 3;
export const VIRTIO_IOMMU_F_PROBE = 4;
export const VIRTIO_IOMMU_F_MMIO = 5;
export const VIRTIO_IOMMU_F_BYPASS_CONFIG = 6;

// Request types and status codes (5.13.6).
export const VIRTIO_IOMMU_T_ATTACH = 1;
export const VIRTIO_IOMMU_T_DETACH = 2;
export const VIRTIO_IOMMU_T_MAP = 3;
export const VIRTIO_IOMMU_T_UNMAP = 4;
export const VIRTIO_IOMMU_T_PROBE = 5;

export const VIRTIO_IOMMU_S_OK = 0;
export const VIRTIO_IOMMU_S_IOERR = 1;
export const VIRTIO_IOMMU_S_UNSUPP = 2;
export const VIRTIO_IOMMU_S_DEVERR = 3;
export const VIRTIO_IOMMU_S_INVAL = 4;
export const VIRTIO_IOMMU_S_RANGE = 5;
export const VIRTIO_IOMMU_S_NOENT = 6;
export const VIRTIO_IOMMU_S_FAULT = 7;
export const VIRTIO_IOMMU_S_NOMEM = 8;

export const VIRTIO_IOMMU_ATTACH_F_BYPASS = 1;
export const VIRTIO_IOMMU_MAP_F_READ = 1;
export const VIRTIO_IOMMU_MAP_F_WRITE = 2;
export const VIRTIO_IOMMU_MAP_F_MMIO = 4;

export const VIRTIO_IOMMU_PROBE_T_RESV_MEM = 1;
export const VIRTIO_IOMMU_RESV_MEM_T_RESERVED = 0;
export const VIRTIO_IOMMU_RESV_MEM_T_MSI = 1;

export const VIRTIO_IOMMU_FAULT_R_UNKNOWN = 0;
export const VIRTIO_IOMMU_FAULT_R_DOMAIN = 1;
export const VIRTIO_IOMMU_FAULT_R_MAPPING = 2;
export const VIRTIO_IOMMU_FAULT_F_READ = 1;
export const VIRTIO_IOMMU_FAULT_F_WRITE = 2;
export const VIRTIO_IOMMU_FAULT_F_ADDRESS = 0x100;
/** sizeof(struct virtio_iommu_fault). */
export const VIRTIO_IOMMU_FAULT_SIZE = 24;

/** x86's MSI doorbell window: each endpoint's RESV_MEM MSI region. */
export const MSI_WINDOW_START = 0xfee00000;
export const MSI_WINDOW_END = 0xfeefffff;
/** Page granularity (page_size_mask's lowest bit). */
export const IOMMU_PAGE_SIZE = 0x1000;
/** input_range.end: 48-bit IOVAs. */
export const IOMMU_INPUT_END = 2 ** 48 - 1;
/** Highest guest physical address a mapping may reach (52 bits). */
export const IOMMU_PHYS_END = 2 ** 52 - 1;
/** domain_range. */
export const IOMMU_DOMAIN_START = 0;
export const IOMMU_DOMAIN_END = 0xffffffff;
/** Bytes of properties a PROBE returns (QEMU's probe_size). */
export const IOMMU_PROBE_SIZE = 512;
/** Mappings across all domains; a MAP beyond it gets S_NOMEM. */
export const IOMMU_MAX_MAPPINGS = 1 << 18;
/** Faults kept while the event queue has no buffer. */
export const IOMMU_PENDING_FAULTS = 64;
/** Config space: page_size_mask, input_range, domain_range, probe_size,
 * bypass, reserved[3]. */
export const IOMMU_CONFIG_SIZE = 40;
const CFG_BYPASS = 36;

export const IOMMU_REQUEST_QUEUE_SIZE = 256;
export const IOMMU_EVENT_QUEUE_SIZE = 64;

/** Request sizes without the tail (head included). */
const REQ_ATTACH = 20;
const REQ_DETACH = 20;
const REQ_MAP = 36;
const REQ_UNMAP = 28;
const REQ_PROBE = 72;
/** Largest readable part read (anything longer is ignored). */
const REQ_MAX = REQ_PROBE;
const TAIL = 4;

export interface VirtioIommuOptions {
  /** Initial `bypass` (unattached endpoints reach guest RAM untranslated). */
  bypass?: boolean;
}

export class VirtioIommu extends VirtioDeviceBase {
  readonly deviceType = VIRTIO_ID_IOMMU;
  readonly queueMaxSizes: readonly number[] = [IOMMU_REQUEST_QUEUE_SIZE, IOMMU_EVENT_QUEUE_SIZE];
  protected readonly ownFeatures = featureBit(VIRTIO_IOMMU_F_INPUT_RANGE) | featureBit(VIRTIO_IOMMU_F_DOMAIN_RANGE)
    | featureBit(VIRTIO_IOMMU_F_MAP_UNMAP) | featureBit(VIRTIO_IOMMU_F_PROBE) | featureBit(VIRTIO_IOMMU_F_MMIO)
    | featureBit(VIRTIO_IOMMU_F_BYPASS_CONFIG);
  protected readonly config = new Uint8Array(IOMMU_CONFIG_SIZE);
  private readonly endpoints = new Map<number, TranslatedDmaSpace>();
  private readonly domains = new Map<number, IommuDomain>();
  /** Domain each endpoint is attached to. */
  private readonly attachedTo = new Map<TranslatedDmaSpace, IommuDomain>();
  private mappingTotal = 0;
  private readonly pendingFaults: Uint8Array[] = [];
  private readonly request = new Uint8Array(REQ_MAX);
  private readonly reqView = new DataView(this.request.buffer);
  private readonly eventChain = new DescriptorChain();
  private readonly tail = new Uint8Array(TAIL);
  /** Counters (bhyvectl --get-stats, tests). */
  readonly counts = { requests: 0, faultsReported: 0, faultsDropped: 0, badRequests: 0 };

  constructor(spaces: readonly TranslatedDmaSpace[], opts: VirtioIommuOptions = {}) {
    super();
    const dv = new DataView(this.config.buffer);
    dv.setBigUint64(0, ~BigInt(IOMMU_PAGE_SIZE - 1) & 0xffffffffffffffffn, true);
    dv.setBigUint64(8, 0n, true);
    dv.setBigUint64(16, BigInt(IOMMU_INPUT_END), true);
    dv.setUint32(24, IOMMU_DOMAIN_START, true);
    dv.setUint32(28, IOMMU_DOMAIN_END, true);
    dv.setUint32(32, IOMMU_PROBE_SIZE, true);
    this.config[CFG_BYPASS] = opts.bypass ? 1 : 0;
    for (const s of spaces) {
      this.endpoints.set(s.endpoint, s);
      s.faultSink = (f) => this.reportFault(f);
      s.setUnattached(this.bypass);
    }
  }

  /** Current `bypass` config field. */
  get bypass(): boolean { return this.config[CFG_BYPASS] === 1; }
  get domainCount(): number { return this.domains.size; }
  get mappingCount(): number { return this.mappingTotal; }
  get pendingFaultCount(): number { return this.pendingFaults.length; }

  /** The driver may write `bypass` once BYPASS_CONFIG is negotiated. */
  writeConfig(offset: number, data: Uint8Array): void {
    if (!this.hasAcked(VIRTIO_IOMMU_F_BYPASS_CONFIG)) return;
    const i = CFG_BYPASS - offset;
    if (i < 0 || i >= data.length) return;
    const v = data[i] & 1;
    if (v === this.config[CFG_BYPASS]) return;
    this.config[CFG_BYPASS] = v;
    for (const s of this.endpoints.values()) if (!this.attachedTo.has(s)) s.setUnattached(v === 1);
  }

  protected processQueue(index: number, queue: Virtqueue): void {
    if (index === 1) { this.flushFaults(queue); return; }
    const chain = this.scratchChain;
    do {
      while (queue.pop(chain) !== null) {
        queue.pushUsed(chain.head, this.handle(chain));
      }
    } while (queue.enableNotification());
    this.signalUsed(index, queue);
  }

  /** Serves one request chain; returns the used length. */
  handle(chain: DescriptorChain): number {
    this.counts.requests++;
    if (chain.writableLength < TAIL || chain.readableLength < 4) { this.counts.badRequests++; return 0; }
    const req = this.request;
    req.fill(0);
    const got = chain.copyFromReadable(0, req);
    const type = req[0];
    let status: number;
    let propsLen = 0;
    switch (type) {
      case VIRTIO_IOMMU_T_ATTACH: status = got < REQ_ATTACH ? VIRTIO_IOMMU_S_INVAL : this.attach(); break;
      case VIRTIO_IOMMU_T_DETACH: status = got < REQ_DETACH ? VIRTIO_IOMMU_S_INVAL : this.detach(); break;
      case VIRTIO_IOMMU_T_MAP: status = got < REQ_MAP ? VIRTIO_IOMMU_S_INVAL : this.map(); break;
      case VIRTIO_IOMMU_T_UNMAP: status = got < REQ_UNMAP ? VIRTIO_IOMMU_S_INVAL : this.unmap(); break;
      case VIRTIO_IOMMU_T_PROBE: {
        if (!this.hasAcked(VIRTIO_IOMMU_F_PROBE)) { this.counts.badRequests++; return 0; }
        propsLen = chain.writableLength - TAIL;
        status = got < REQ_PROBE ? VIRTIO_IOMMU_S_INVAL : this.probe(chain, propsLen);
        break;
      }
      default:
        this.counts.badRequests++;
        return 0;
    }
    if (status !== VIRTIO_IOMMU_S_OK) this.counts.badRequests++;
    const tail = this.tail;
    tail[0] = status;
    chain.copyToWritable(chain.writableLength - TAIL, tail);
    return propsLen + TAIL;
  }

  // ---- requests (fields at their offsets in this.request) ----

  private u32(off: number): number { return this.reqView.getUint32(off, true); }
  private u64(off: number): bigint { return this.reqView.getBigUint64(off, true); }

  private attach(): number {
    const domainId = this.u32(4);
    const ep = this.endpoints.get(this.u32(8));
    const flags = this.u32(12);
    if (this.u32(16) !== 0) return VIRTIO_IOMMU_S_INVAL;
    const known = this.hasAcked(VIRTIO_IOMMU_F_BYPASS_CONFIG) ? VIRTIO_IOMMU_ATTACH_F_BYPASS : 0;
    if (flags & ~known) return VIRTIO_IOMMU_S_INVAL;
    if (!ep) return VIRTIO_IOMMU_S_NOENT;
    const bypass = (flags & VIRTIO_IOMMU_ATTACH_F_BYPASS) !== 0;
    let domain = this.domains.get(domainId);
    if (domain && domain.bypass !== bypass) return VIRTIO_IOMMU_S_INVAL;
    const old = this.attachedTo.get(ep);
    if (old === domain && domain !== undefined) return VIRTIO_IOMMU_S_OK;
    if (!domain) {
      domain = new IommuDomain(domainId, bypass);
      this.domains.set(domainId, domain);
    }
    if (old) this.leave(ep, old);
    domain.endpoints.add(ep);
    this.attachedTo.set(ep, domain);
    ep.attach(domain, bypass);
    return VIRTIO_IOMMU_S_OK;
  }

  private detach(): number {
    const domain = this.domains.get(this.u32(4));
    const ep = this.endpoints.get(this.u32(8));
    if (!ep) return VIRTIO_IOMMU_S_NOENT;
    if (!domain || this.attachedTo.get(ep) !== domain) return VIRTIO_IOMMU_S_INVAL;
    this.leave(ep, domain);
    ep.setUnattached(this.bypass);
    return VIRTIO_IOMMU_S_OK;
  }

  /** Takes `ep` out of `domain`; a domain left empty ceases to exist. */
  private leave(ep: TranslatedDmaSpace, domain: IommuDomain): void {
    domain.endpoints.delete(ep);
    this.attachedTo.delete(ep);
    if (domain.endpoints.size === 0) {
      this.mappingTotal -= domain.mappingCount;
      this.domains.delete(domain.id);
    }
  }

  private map(): number {
    const domain = this.domains.get(this.u32(4));
    const virtStart = this.u64(8);
    const virtEnd = this.u64(16);
    const physStart = this.u64(24);
    const flags = this.u32(32);
    const known = VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE
      | (this.hasAcked(VIRTIO_IOMMU_F_MMIO) ? VIRTIO_IOMMU_MAP_F_MMIO : 0);
    if ((flags & ~known) >>> 0) return VIRTIO_IOMMU_S_INVAL;
    if (!domain) return VIRTIO_IOMMU_S_NOENT;
    if (domain.bypass) return VIRTIO_IOMMU_S_INVAL;
    if (virtEnd < virtStart) return VIRTIO_IOMMU_S_INVAL;
    const page = BigInt(IOMMU_PAGE_SIZE - 1);
    if ((virtStart & page) || (physStart & page) || ((virtEnd + 1n) & page)) return VIRTIO_IOMMU_S_RANGE;
    if (virtEnd > BigInt(IOMMU_INPUT_END)) return VIRTIO_IOMMU_S_RANGE;
    const length = Number(virtEnd - virtStart) + 1;
    if (physStart + BigInt(length) - 1n > BigInt(IOMMU_PHYS_END)) return VIRTIO_IOMMU_S_RANGE;
    const iova = Number(virtStart);
    // The MSI doorbells are reserved (PROBE's RESV_MEM MSI region).
    if (iova <= MSI_WINDOW_END && iova + length - 1 >= MSI_WINDOW_START) return VIRTIO_IOMMU_S_RANGE;
    if (this.mappingTotal >= IOMMU_MAX_MAPPINGS) return VIRTIO_IOMMU_S_NOMEM;
    const access = (flags & VIRTIO_IOMMU_MAP_F_READ ? DMA_READ : 0) | (flags & VIRTIO_IOMMU_MAP_F_WRITE ? DMA_WRITE : 0);
    const m: DmaMapping = { iova, gpa: Number(physStart), length, access };
    if (domain.map(m) !== 'ok') return VIRTIO_IOMMU_S_INVAL;
    this.mappingTotal++;
    return VIRTIO_IOMMU_S_OK;
  }

  private unmap(): number {
    const domain = this.domains.get(this.u32(4));
    const virtStart = this.u64(8);
    const virtEnd = this.u64(16);
    if (!domain) return VIRTIO_IOMMU_S_NOENT;
    if (domain.bypass) return VIRTIO_IOMMU_S_INVAL;
    if (virtEnd < virtStart) return VIRTIO_IOMMU_S_INVAL;
    // Nothing is mapped above input_range: clamp, the rest unmaps nothing.
    if (virtStart > BigInt(IOMMU_INPUT_END)) return VIRTIO_IOMMU_S_OK;
    const last = virtEnd > BigInt(IOMMU_INPUT_END) ? IOMMU_INPUT_END : Number(virtEnd);
    const removed: DmaMapping[] = [];
    if (domain.unmap(Number(virtStart), last, removed) === 'split') return VIRTIO_IOMMU_S_RANGE;
    this.mappingTotal -= removed.length;
    return VIRTIO_IOMMU_S_OK;
  }

  private probe(chain: DescriptorChain, propsLen: number): number {
    const ep = this.endpoints.get(this.u32(4));
    if (!ep) return VIRTIO_IOMMU_S_NOENT;
    if (propsLen < IOMMU_PROBE_SIZE) return VIRTIO_IOMMU_S_INVAL;
    const props = new Uint8Array(propsLen);
    const dv = new DataView(props.buffer);
    // struct virtio_iommu_probe_resv_mem: head (type, length), subtype,
    // reserved[3], start, end.
    dv.setUint16(0, VIRTIO_IOMMU_PROBE_T_RESV_MEM, true);
    dv.setUint16(2, 20, true);
    props[4] = VIRTIO_IOMMU_RESV_MEM_T_MSI;
    dv.setBigUint64(8, BigInt(MSI_WINDOW_START), true);
    dv.setBigUint64(16, BigInt(MSI_WINDOW_END), true);
    chain.copyToWritable(0, props);
    return VIRTIO_IOMMU_S_OK;
  }

  // ---- faults ----

  /** A DMA of an endpoint was refused: report it on the event queue. */
  private reportFault(f: DmaFaultError): void {
    const ev = new Uint8Array(VIRTIO_IOMMU_FAULT_SIZE);
    const dv = new DataView(ev.buffer);
    ev[0] = f.reason === 'unattached' ? VIRTIO_IOMMU_FAULT_R_DOMAIN : VIRTIO_IOMMU_FAULT_R_MAPPING;
    const flags = (f.access & DMA_READ ? VIRTIO_IOMMU_FAULT_F_READ : 0) | (f.access & DMA_WRITE ? VIRTIO_IOMMU_FAULT_F_WRITE : 0)
      | (Number.isSafeInteger(f.faultAddress) && f.faultAddress >= 0 ? VIRTIO_IOMMU_FAULT_F_ADDRESS : 0);
    dv.setUint32(4, flags, true);
    dv.setUint32(8, f.endpoint, true);
    if (flags & VIRTIO_IOMMU_FAULT_F_ADDRESS) dv.setBigUint64(16, BigInt(f.faultAddress), true);
    if (this.pendingFaults.length >= IOMMU_PENDING_FAULTS) { this.counts.faultsDropped++; return; }
    this.pendingFaults.push(ev);
    const q = this.eventQueue();
    if (q) {
      try {
        this.flushFaults(q);
      } catch (e) {
        this.fail(e);
      }
    }
  }

  private eventQueue(): Virtqueue | undefined {
    if (!this.activated || this.needsResetReason !== undefined) return undefined;
    return this.queues?.[1] ?? undefined;
  }

  /** Writes waiting faults into the driver's event buffers. */
  private flushFaults(queue: Virtqueue): void {
    let pushed = false;
    const chain = this.eventChain;
    while (this.pendingFaults.length > 0 && queue.pop(chain) !== null) {
      pushed = true;
      if (chain.writableLength < VIRTIO_IOMMU_FAULT_SIZE) {
        // Too small for a report: hand it back unwritten.
        queue.pushUsed(chain.head, 0);
        continue;
      }
      const ev = this.pendingFaults.shift()!;
      chain.copyToWritable(0, ev);
      queue.pushUsed(chain.head, ev.length);
      this.counts.faultsReported++;
    }
    if (pushed) this.signalUsed(1, queue);
  }

  protected onReset(): void {
    // Reset: no endpoint is attached to any domain; bypass keeps its value.
    for (const [ep] of this.attachedTo) ep.setUnattached(this.bypass);
    this.attachedTo.clear();
    this.domains.clear();
    this.mappingTotal = 0;
    this.pendingFaults.length = 0;
  }

  counters(): Record<string, number> {
    return {
      'iommu requests': this.counts.requests, 'iommu requests refused': this.counts.badRequests,
      'iommu faults reported': this.counts.faultsReported, 'iommu faults dropped': this.counts.faultsDropped,
    };
  }

  /** Endpoint ids it manages, for messages. */
  describeEndpoints(): string {
    return [...this.endpoints.keys()].map(formatEndpoint).join(', ');
  }
}

/** PCI class QEMU gives virtio-iommu-pci (PCI_CLASS_OTHERS). */
const PCIC_OTHER = 0xff;

/** The emulation of its record (virtio-iommu-record.ts). */
export const virtioIommuModel: PciDeviceModel = {
  create: (ctx, s, chipset) => {
    const transport = transportOf(ctx.config.get(`${s.node}.transport`), s.node);
    const spaces = chipset.dma?.translatedEndpoints() ?? [];
    if (chipset.dma) chipset.dma.iommuEndpoint = pciEndpointId(s.bus, s.slot, s.func);
    const dev = new VirtioIommu(spaces, { bypass: ctx.config.getBool(`${s.node}.bypass`, false) });
    return new VirtioPci(ctx, dev, { emulation: 'virtio-iommu', classCode: PCIC_OTHER, subclass: 0, msix: chipset.msix, transport });
  },
};
