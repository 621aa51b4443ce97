// DMA address spaces: what the addresses a PCI function puts on the bus
// (its bus-master reads and writes, "IOVAs") reach in guest memory.
//
// Every DMA of a device model, and every mapping a passthrough device's
// DMA needs in VFIO/iommufd/vfio-user, goes through the DmaSpace of the
// function's endpoint (its PCI requester id, bus << 8 | slot << 3 | func):
//
//   - a function with no IOMMU in front of it gets IDENTITY: IOVA = guest
//     physical address, no check beyond guest RAM's bounds. Callers test
//     `identity` once per request and take today's path unchanged.
//   - a function behind the virtio-iommu (pci.B.S.F.iommu=true) gets a
//     TranslatedDmaSpace the IOMMU drives: blocked (no domain, bypass off),
//     bypass (identity), or attached to a domain whose MAP requests are the
//     only IOVAs it may use, with their READ/WRITE permissions. An access
//     outside them is refused (DmaFaultError), reported to the IOMMU (fault
//     event on its event queue) and never reaches memory.
//
// Listeners (passthrough: VFIO_IOMMU_MAP_DMA / IOMMU_IOAS_MAP / vfio-user
// DMA_MAP) see the space as a set of IOVA -> GPA mappings: `listen` replays
// what is mapped now, then reports each map and unmap as it happens. In
// identity and bypass modes the mappings are guest RAM at IOVA = GPA.
//
// `generation` moves whenever a translation handed out earlier may have
// become wrong (unmap, detach, attach elsewhere, bypass turned off), so a
// cached translation (a virtqueue's ring views) is revalidated with one
// number compare.

/** The device reads guest memory (memory -> device). */
export const DMA_READ = 1;
/** The device writes guest memory. */
export const DMA_WRITE = 2;
/** Bit set of DMA_READ / DMA_WRITE. */
export type DmaAccess = number;

/** A stretch of guest physical address space. */
export interface GuestRange {
  gpa: number;
  length: number;
}

/** IOVA [iova, iova+length) -> GPA [gpa, gpa+length), with the accesses
 * the mapping allows. */
export interface DmaMapping {
  iova: number;
  gpa: number;
  length: number;
  access: DmaAccess;
}

/** Why a DMA was refused (virtio-iommu's fault reasons). */
export type DmaFaultReason =
  /** The endpoint is not attached to a domain and not in bypass. */
  | 'unattached'
  /** No mapping covers the address. */
  | 'unmapped'
  /** A mapping covers it but does not allow this access. */
  | 'permission';

/** A DMA the IOMMU refused. By the time it is thrown it has been reported
 * (fault event); the device that tried it enters its error state. */
export class DmaFaultError extends Error {
  constructor(
    readonly endpoint: number,
    readonly iova: number,
    readonly length: number,
    readonly access: DmaAccess,
    readonly reason: DmaFaultReason,
    /** The first address of the access that has no valid translation. */
    readonly faultAddress: number,
  ) {
    super(`IOMMU fault: endpoint ${formatEndpoint(endpoint)} ${accessName(access)} at IOVA `
      + `0x${iova.toString(16)}+0x${length.toString(16)}: ${reason === 'unattached' ? 'endpoint not attached to a domain'
        : reason === 'unmapped' ? `0x${faultAddress.toString(16)} is not mapped` : `mapping at 0x${faultAddress.toString(16)} does not allow ${accessName(access)}`}`);
    this.name = 'DmaFaultError';
  }
}

export function accessName(access: DmaAccess): string {
  return access === DMA_READ ? 'read' : access === DMA_WRITE ? 'write' : 'read/write';
}

/** "B:S.F" of a requester id. */
export function formatEndpoint(endpoint: number): string {
  return `${(endpoint >>> 8) & 0xff}:${(endpoint >>> 3) & 0x1f}.${endpoint & 7}`;
}

/** The requester id of a PCI function (bus << 8 | slot << 3 | func), the
 * endpoint id of virtio-iommu requests and of the VIOT table. */
export function pciEndpointId(bus: number, slot: number, func: number): number {
  return ((bus & 0xff) << 8) | ((slot & 0x1f) << 3) | (func & 7);
}

/** Told about each change of a space's mappings. Called synchronously on
 * the device thread, before the request that caused it completes, so a
 * mirror (VFIO DMA_MAP) is in place before the driver can use it and gone
 * before an unmap is acknowledged. */
export interface DmaMapListener {
  map(m: DmaMapping): void;
  unmap(iova: number, length: number): void;
}

export interface DmaSpace {
  /** Requester id of the function (pciEndpointId). */
  readonly endpoint: number;
  /** True while IOVA = GPA (no IOMMU in front, or bypass). */
  readonly identity: boolean;
  /** Moves when an earlier translation may no longer hold. */
  readonly generation: number;
  /** Guest physical ranges behind IOVA [iova, iova+length) for `access`,
   * appended to `out` (adjacent pieces merged); throws DmaFaultError (after
   * reporting it) when any byte has no translation allowing it. Guest RAM
   * bounds are the caller's check (GuestMemory). */
  translate(iova: number, length: number, access: DmaAccess, out?: GuestRange[]): GuestRange[];
  /** Replays the current mappings, then reports changes until the returned
   * function is called. */
  listen(listener: DmaMapListener): () => void;
}

/** No IOMMU: a device's addresses are guest physical addresses. */
export class IdentityDmaSpace implements DmaSpace {
  readonly identity = true;
  readonly generation = 0;
  constructor(readonly endpoint: number, private readonly ram: readonly GuestRange[]) {}

  translate(iova: number, length: number, _access: DmaAccess, out: GuestRange[] = []): GuestRange[] {
    out.push({ gpa: iova, length });
    return out;
  }

  listen(listener: DmaMapListener): () => void {
    for (const r of this.ram) listener.map({ iova: r.gpa, gpa: r.gpa, length: r.length, access: DMA_READ | DMA_WRITE });
    return () => {};
  }
}

/** How the IOMMU tells the space what to do with a DMA; the space asks
 * `lookup` for the mapping at an IOVA. */
export interface DmaDomainView {
  /** The mapping containing `iova`, or undefined. */
  lookup(iova: number): DmaMapping | undefined;
  /** Every mapping, in IOVA order (for listeners joining). */
  mappings(): Iterable<DmaMapping>;
}

/** What a TranslatedDmaSpace reports a refused access to. */
export type DmaFaultSink = (fault: DmaFaultError) => void;

/**
 * An endpoint behind the emulated IOMMU. The IOMMU moves it between
 * blocked (the start, with bypass off), bypass and attached to a domain,
 * and forwards its domain's map and unmap to it (mapped/unmapped).
 */
export class TranslatedDmaSpace implements DmaSpace {
  private mode: 'blocked' | 'bypass' | 'domain' = 'blocked';
  private domain: DmaDomainView | undefined;
  private gen = 1;
  private readonly listeners = new Set<DmaMapListener>();
  /** Set by the IOMMU that owns the endpoint. */
  faultSink: DmaFaultSink | undefined;
  /** Faults refused so far (diagnostics, tests). */
  faults = 0;

  constructor(readonly endpoint: number, private readonly ram: readonly GuestRange[]) {}

  get identity(): boolean { return this.mode === 'bypass'; }
  get generation(): number { return this.gen; }
  /** The domain view it is attached to, if any. */
  get attachedDomain(): DmaDomainView | undefined { return this.mode === 'domain' ? this.domain : undefined; }
  get state(): 'blocked' | 'bypass' | 'domain' { return this.mode; }

  translate(iova: number, length: number, access: DmaAccess, out: GuestRange[] = []): GuestRange[] {
    if (this.mode === 'bypass') {
      out.push({ gpa: iova, length });
      return out;
    }
    if (!Number.isSafeInteger(iova) || !Number.isSafeInteger(length) || iova < 0 || length <= 0) {
      throw this.fault(iova, length, access, 'unmapped', iova);
    }
    if (this.mode === 'blocked' || this.domain === undefined) throw this.fault(iova, length, access, 'unattached', iova);
    const start = out.length;
    let at = iova;
    const end = iova + length;
    while (at < end) {
      const m = this.domain.lookup(at);
      if (m === undefined) { out.length = start; throw this.fault(iova, length, access, 'unmapped', at); }
      if ((m.access & access) !== access) { out.length = start; throw this.fault(iova, length, access, 'permission', at); }
      const n = Math.min(end, m.iova + m.length) - at;
      const gpa = m.gpa + (at - m.iova);
      const last = out.length > start ? out[out.length - 1] : undefined;
      if (last !== undefined && last.gpa + last.length === gpa) last.length += n;
      else out.push({ gpa, length: n });
      at += n;
    }
    return out;
  }

  listen(listener: DmaMapListener): () => void {
    for (const m of this.current()) listener.map(m);
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }

  // ---- driven by the IOMMU ----

  /** Bypass on (identity) or off (blocked) while not attached. */
  setUnattached(bypass: boolean): void {
    this.switchTo(bypass ? 'bypass' : 'blocked', undefined);
  }

  /** Attached to a domain (bypass: a bypass domain). */
  attach(domain: DmaDomainView, bypass = false): void {
    this.switchTo(bypass ? 'bypass' : 'domain', bypass ? undefined : domain);
  }

  /** A MAP in its domain. */
  mapped(m: DmaMapping): void {
    if (this.mode !== 'domain') return;
    for (const l of this.listeners) l.map(m);
  }

  /** An UNMAP in its domain: earlier translations may now be wrong. */
  unmapped(iova: number, length: number): void {
    if (this.mode !== 'domain') return;
    this.gen++;
    for (const l of this.listeners) l.unmap(iova, length);
  }

  private switchTo(mode: 'blocked' | 'bypass' | 'domain', domain: DmaDomainView | undefined): void {
    if (mode === this.mode && domain === this.domain) return;
    const before = this.current();
    this.mode = mode;
    this.domain = domain;
    this.gen++;
    if (this.listeners.size === 0) return;
    for (const m of before) for (const l of this.listeners) l.unmap(m.iova, m.length);
    for (const m of this.current()) for (const l of this.listeners) l.map(m);
  }

  private current(): DmaMapping[] {
    if (this.mode === 'bypass') return this.ram.map((r) => ({ iova: r.gpa, gpa: r.gpa, length: r.length, access: DMA_READ | DMA_WRITE }));
    if (this.mode === 'domain' && this.domain) return [...this.domain.mappings()];
    return [];
  }

  private fault(iova: number, length: number, access: DmaAccess, reason: DmaFaultReason, at: number): DmaFaultError {
    const f = new DmaFaultError(this.endpoint, iova, length, access, reason, at);
    this.faults++;
    try {
      this.faultSink?.(f);
    } catch {
      // Reporting must not turn a refused DMA into a VMM failure.
    }
    return f;
  }
}

/**
 * The machine's DMA spaces, one per PCI function, made before any device
 * (devices ask for theirs in create(); the IOMMU, wherever its slot is,
 * takes the translated ones over when it is created).
 */
export class DmaSpaces {
  private readonly translated = new Map<number, TranslatedDmaSpace>();
  private readonly identities = new Map<number, IdentityDmaSpace>();
  /** Requester id of the IOMMU that took the translated endpoints, once
   * it exists (for the ACPI VIOT table). */
  iommuEndpoint: number | undefined;

  /** `behind`: endpoints the configuration put behind the IOMMU. */
  constructor(private readonly ram: readonly GuestRange[], behind: Iterable<number> = []) {
    for (const ep of behind) this.translated.set(ep, new TranslatedDmaSpace(ep, ram));
  }

  /** The space of a function: translated when it is behind the IOMMU. */
  forEndpoint(endpoint: number): DmaSpace {
    const t = this.translated.get(endpoint);
    if (t) return t;
    let id = this.identities.get(endpoint);
    if (!id) { id = new IdentityDmaSpace(endpoint, this.ram); this.identities.set(endpoint, id); }
    return id;
  }

  /** The endpoints behind the IOMMU, in requester-id order. */
  translatedEndpoints(): TranslatedDmaSpace[] {
    return [...this.translated.values()].sort((a, b) => a.endpoint - b.endpoint);
  }

  /** True when `endpoint` is behind the IOMMU. */
  isTranslated(endpoint: number): boolean {
    return this.translated.has(endpoint);
  }
}
