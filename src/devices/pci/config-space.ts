// The configuration space of one PCI function, modelled on bhyve's
// pi_cfgdata plus the rules pci_emul.c applies to guest writes.
//
// The space is a byte array with two masks beside it:
//   - wmask: which bits a guest write may change (everything else is
//     read-only and keeps its value);
//   - w1cmask: which bits a guest clears by writing 1 (status-style bits).
// The device model itself writes through set8/16/32, which ignore the masks.
//
// Size: 256 bytes (conventional) or 4096 bytes (PCI Express extended space,
// for a later ECAM window). With a 256-byte space, guest reads past 0xff
// return all-ones, except the extended-capability header at 0x100, which
// reads as 0 ("no extended capabilities"), as bhyve's pci_cfgrw() does.
//
// Differences from bhyve, on purpose: bhyve lets a guest overwrite any
// header byte that is not a BAR, a capability, or command/status (vendor
// and class ids included). We keep header identification fields read-only,
// as hardware does; the device-specific area 0x40-0xff stays writable unless
// a capability claims it (capability id/next bytes are always read-only).

// Standard header offsets (sys/dev/pci/pcireg.h names in comments).
export const PCIR_VENDOR = 0x00;
export const PCIR_DEVICE = 0x02;
export const PCIR_COMMAND = 0x04;
export const PCIR_STATUS = 0x06;
export const PCIR_REVID = 0x08;
export const PCIR_PROGIF = 0x09;
export const PCIR_SUBCLASS = 0x0a;
export const PCIR_CLASS = 0x0b;
export const PCIR_CACHELNSZ = 0x0c;
export const PCIR_LATTIMER = 0x0d;
export const PCIR_HDRTYPE = 0x0e;
export const PCIR_BIST = 0x0f;
export const PCIR_BAR0 = 0x10;
export const PCIR_SUBVEND_0 = 0x2c;
export const PCIR_SUBDEV_0 = 0x2e;
export const PCIR_BIOS = 0x30;
export const PCIR_CAP_PTR = 0x34;
export const PCIR_INTLINE = 0x3c;
export const PCIR_INTPIN = 0x3d;

export const PCIM_CMD_PORTEN = 0x0001;
export const PCIM_CMD_MEMEN = 0x0002;
export const PCIM_CMD_BUSMASTEREN = 0x0004;
export const PCIM_CMD_INTxDIS = 0x0400;
export const PCIM_STATUS_CAPPRESENT = 0x0010;
export const PCIM_HDRTYPE_NORMAL = 0x00;
export const PCIM_HDRTYPE_BRIDGE = 0x01;
export const PCIM_MFDEV = 0x80;

export const PCIC_BRIDGE = 0x06;
export const PCIS_BRIDGE_HOST = 0x00;
export const PCIS_BRIDGE_ISA = 0x01;

export const PCIY_MSI = 0x05;
export const PCIY_EXPRESS = 0x10;
export const PCIY_MSIX = 0x11;

export const PCI_REGMAX = 0xff;
export const PCI_CONFIG_SIZE = 256;
export const PCIE_CONFIG_SIZE = 4096;
/** First capability offset, as bhyve's CAP_START_OFFSET. */
export const CAP_START_OFFSET = 0x40;

/** Command register bits a guest may write: bhyve's pci_emul_cmdsts_write
 * treats 0xfffff880 of the command/status dword as read-only. Status bits
 * are all read-only (bhyve never sets the write-1-to-clear ones). */
export const COMMAND_WRITABLE = 0x077f;

/** Types of a base address register; the table is an extension point for
 * the BAR engineer (sizing, decoding and registration are not done here). */
export type PciBarType = 'none' | 'io' | 'mem32' | 'mem64' | 'mem64-hi' | 'rom';

export interface PciBar {
  type: PciBarType;
  /** Size in bytes, a power of two (0 for 'none'). */
  size: number;
  /** Guest address currently programmed (0 when unassigned). */
  addr: number;
}

/** BAR 0-5 plus the expansion ROM (index 6), as bhyve's PCI_ROM_IDX. */
export const PCI_BAR_COUNT = 6;
export const PCI_ROM_IDX = 6;

export function emptyBarTable(): PciBar[] {
  return Array.from({ length: PCI_BAR_COUNT + 1 }, () => ({ type: 'none' as PciBarType, size: 0, addr: 0 }));
}

export interface PciIdentity {
  vendor: number;
  device: number;
  revision?: number;
  classCode: number;
  subclass: number;
  progIf?: number;
  subVendor?: number;
  subDevice?: number;
  headerType?: number;
}

export interface PciCapability {
  id: number;
  offset: number;
  /** Length in bytes as given (the space used is rounded up to 4). */
  length: number;
}

export class PciConfigSpace {
  readonly bytes: Uint8Array;
  readonly wmask: Uint8Array;
  readonly w1cmask: Uint8Array;
  private readonly caps: PciCapability[] = [];
  /** Last byte used by capabilities (bhyve's pi_capend), 0 when none. */
  private capEnd = 0;

  constructor(readonly size: number = PCI_CONFIG_SIZE) {
    if (size !== PCI_CONFIG_SIZE && size !== PCIE_CONFIG_SIZE) {
      throw new RangeError(`PCI config space size must be ${PCI_CONFIG_SIZE} or ${PCIE_CONFIG_SIZE}, not ${size}`);
    }
    this.bytes = new Uint8Array(size);
    this.wmask = new Uint8Array(size);
    this.w1cmask = new Uint8Array(size);
    // Type 0 header defaults: command (partly), cache line size, latency
    // timer and interrupt line are guest-writable; the device-specific
    // area is writable storage until a capability claims part of it.
    this.setWritable(PCIR_COMMAND, 2, COMMAND_WRITABLE);
    this.wmask[PCIR_CACHELNSZ] = 0xff;
    this.wmask[PCIR_LATTIMER] = 0xff;
    this.wmask[PCIR_INTLINE] = 0xff;
    this.wmask.fill(0xff, CAP_START_OFFSET, PCI_CONFIG_SIZE);
    // bhyve's pci_emul_init: legacy interrupts disabled until routed.
    this.bytes[PCIR_INTLINE] = 0xff;
    this.bytes[PCIR_INTPIN] = 0;
  }

  // ---- device-side access (no masks) ----

  get8(off: number): number { return this.bytes[off]; }
  get16(off: number): number { return this.bytes[off] | (this.bytes[off + 1] << 8); }
  get32(off: number): number { return (this.get16(off) | (this.get16(off + 2) << 16)) >>> 0; }
  set8(off: number, v: number): void { this.bytes[off] = v & 0xff; }
  set16(off: number, v: number): void { this.set8(off, v); this.set8(off + 1, v >>> 8); }
  set32(off: number, v: number): void { this.set16(off, v); this.set16(off + 2, v >>> 16); }

  /** Reads `size` bytes little-endian (device side, no range policy). */
  getN(off: number, size: number): number {
    return size === 1 ? this.get8(off) : size === 2 ? this.get16(off) : this.get32(off);
  }

  setN(off: number, size: number, v: number): void {
    if (size === 1) this.set8(off, v);
    else if (size === 2) this.set16(off, v);
    else this.set32(off, v);
  }

  /** Sets the guest-writable bits of a 1/2/4-byte field. */
  setWritable(off: number, size: number, mask: number): void {
    for (let i = 0; i < size; i++) this.wmask[off + i] = (mask >>> (8 * i)) & 0xff;
  }

  /** Marks a byte range read-only for the guest. */
  setReadOnly(off: number, length: number): void {
    this.wmask.fill(0, off, off + length);
    this.w1cmask.fill(0, off, off + length);
  }

  /** Sets write-1-to-clear bits of a 1/2/4-byte field. */
  setW1C(off: number, size: number, mask: number): void {
    for (let i = 0; i < size; i++) {
      const m = (mask >>> (8 * i)) & 0xff;
      this.w1cmask[off + i] = m;
      this.wmask[off + i] &= ~m;
    }
  }

  /** Fills the identification fields of the header. */
  setIdentity(id: PciIdentity): void {
    this.set16(PCIR_VENDOR, id.vendor);
    this.set16(PCIR_DEVICE, id.device);
    this.set8(PCIR_REVID, id.revision ?? 0);
    this.set8(PCIR_PROGIF, id.progIf ?? 0);
    this.set8(PCIR_SUBCLASS, id.subclass);
    this.set8(PCIR_CLASS, id.classCode);
    this.set16(PCIR_SUBVEND_0, id.subVendor ?? 0);
    this.set16(PCIR_SUBDEV_0, id.subDevice ?? 0);
    this.set8(PCIR_HDRTYPE, id.headerType ?? PCIM_HDRTYPE_NORMAL);
  }

  // ---- capabilities ----

  /**
   * Appends a capability to the list (bhyve's pci_emul_add_capability):
   * the first one goes at 0x40, the next after the previous one rounded to
   * a dword. `data` holds the whole structure including the id and next
   * bytes (their values are overwritten). The id and next bytes are
   * read-only; the rest follows `writable` (a per-byte mask the length of
   * data, default: all writable, as bhyve's capability writes are).
   * Returns the capability's offset.
   */
  addCapability(id: number, data: Uint8Array, writable?: Uint8Array): number {
    if (data.length < 2) throw new RangeError('a PCI capability is at least 2 bytes');
    const realLen = (data.length + 3) & ~3;
    const hasCaps = (this.get16(PCIR_STATUS) & PCIM_STATUS_CAPPRESENT) !== 0;
    const off = hasCaps ? this.capEnd + 1 : CAP_START_OFFSET;
    if (off + realLen > PCI_REGMAX + 1) {
      throw new RangeError(`no room for PCI capability 0x${id.toString(16)} (${data.length} bytes at 0x${off.toString(16)})`);
    }
    if (!hasCaps) {
      this.set8(PCIR_CAP_PTR, off);
      this.set16(PCIR_STATUS, this.get16(PCIR_STATUS) | PCIM_STATUS_CAPPRESENT);
    } else {
      const prev = this.caps[this.caps.length - 1];
      this.set8(prev.offset + 1, off);
    }
    this.bytes.set(data, off);
    this.set8(off, id);
    this.set8(off + 1, 0);
    for (let i = 0; i < realLen; i++) {
      this.wmask[off + i] = i < 2 || i >= data.length ? 0 : (writable ? writable[i] : 0xff);
    }
    this.caps.push({ id, offset: off, length: data.length });
    this.capEnd = off + realLen - 1;
    return off;
  }

  capabilities(): readonly PciCapability[] {
    return this.caps;
  }

  findCapability(id: number): PciCapability | undefined {
    return this.caps.find((c) => c.id === id);
  }

  /** The capability containing a config offset, if any. */
  capabilityAt(off: number): PciCapability | undefined {
    return this.caps.find((c) => off >= c.offset && off < c.offset + ((c.length + 3) & ~3));
  }

  // ---- guest-side access ----

  /** A guest read of 1, 2 or 4 bytes; the caller has checked alignment. */
  guestRead(off: number, size: number): number {
    if (off + size > this.size) {
      // Past a conventional space: the extended capability header at 0x100
      // reads as 0 (no extended capabilities), the rest as all-ones.
      if (this.size === PCI_CONFIG_SIZE && off >= PCI_CONFIG_SIZE && off + size <= PCI_CONFIG_SIZE + 4) return 0;
      return size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
    }
    return this.getN(off, size);
  }

  /** A guest write of 1, 2 or 4 bytes through the masks. */
  guestWrite(off: number, size: number, value: number): void {
    if (off + size > this.size) return;
    for (let i = 0; i < size; i++) {
      const o = off + i;
      const v = (value >>> (8 * i)) & 0xff;
      const w = this.wmask[o];
      const c = this.w1cmask[o];
      let b = this.bytes[o];
      b = (b & ~w) | (v & w);
      b &= ~(v & c);
      this.bytes[o] = b;
    }
  }
}
