// A small PCI DMA engine served over vfio-user, the device the passthrough
// tests hand to a guest (test/guests/dmatest): the guest writes a source
// address, a destination address and a length into BAR 0, rings the
// doorbell, and the device copies through the client's memory (its mapped
// files, or DMA_READ/DMA_WRITE messages), records the completion in the
// mmap-able BAR 4 page, and raises MSI-X vector VECTOR (else MSI, else
// INTx, whichever the client set an eventfd for).
//
// BAR 0 (4 KiB, registers, 32-bit accesses):
//   0x00 ID "DMA1" (0x31414d44)     0x04 STATUS: 1 done, 2 error (write 1 to clear)
//   0x08 SRC low   0x0c SRC high    0x10 DST low   0x14 DST high
//   0x18 LEN (at most 1 MiB)        0x1c DOORBELL (any write starts a copy)
//   0x20 COPIES done                0x24 VECTOR (MSI-X entry to raise)
//   0x28 FAULT address low          0x2c FAULT high (the DMA refused)
// BAR 2 (4 KiB): the MSI-X table (2 entries) at 0, the PBA at 0x800.
// BAR 4 (4 KiB, mmap-able memfd): completion record: +0 COPIES, +4 last LEN,
//   +8 CRC-32 of the data copied.

import { crc32 } from 'node:zlib';
import { memfd } from '../../sys/memfd.js';
import { mmap, PROT_READ, PROT_WRITE, type Mapping } from '../../sys/libc.js';
import { IRQ_INFO_FLAG, PCI_IRQ, PCI_REGION, REGION_INFO_FLAG } from '../../sys/vfio-abi.js';
import { DmaFault, type DeviceServices, type ServedDevice, type ServedRegion } from './server.js';

export const TEST_DMA_VENDOR = 0x1b36;
export const TEST_DMA_DEVICE = 0x00f0;
export const TEST_DMA_ID = 0x31414d44;
export const REG = { ID: 0x00, STATUS: 0x04, SRC: 0x08, DST: 0x10, LEN: 0x18, DOORBELL: 0x1c, COPIES: 0x20, VECTOR: 0x24, FAULT: 0x28 } as const;
export const STATUS = { DONE: 1, ERROR: 2 } as const;
export const MAX_COPY = 1024 * 1024;
export const MSIX_VECTORS = 2;
const PAGE = 4096;

/** Byte-wise access to a plain memory region. */
function memoryRegion(bytes: Uint8Array, flags = REGION_INFO_FLAG.READ | REGION_INFO_FLAG.WRITE): ServedRegion {
  return {
    size: bytes.length,
    flags,
    read: (off, data) => data.set(bytes.subarray(off, off + data.length)),
    write: (off, data) => bytes.set(data, off),
  };
}

export class TestDmaDevice implements ServedDevice {
  readonly regions: Array<ServedRegion | undefined> = [];
  readonly irqs = [
    { count: 1, flags: IRQ_INFO_FLAG.EVENTFD | IRQ_INFO_FLAG.MASKABLE | IRQ_INFO_FLAG.AUTOMASKED }, // INTx
    { count: 1, flags: IRQ_INFO_FLAG.EVENTFD | IRQ_INFO_FLAG.NORESIZE }, // MSI
    { count: MSIX_VECTORS, flags: IRQ_INFO_FLAG.EVENTFD | IRQ_INFO_FLAG.NORESIZE }, // MSI-X
    { count: 0, flags: 0 }, // ERR
    { count: 0, flags: 0 }, // REQ
  ];
  private readonly config = new Uint8Array(256);
  private readonly regs = new Uint32Array(PAGE / 4);
  private readonly msix = new Uint8Array(PAGE);
  private readonly sharedFd: number;
  private readonly shared: Mapping;
  private services: DeviceServices | undefined;
  private intxAsserted = false;
  /** Copies that ended in a DMA fault. */
  faults = 0;

  constructor() {
    this.sharedFd = memfd('bhyve-test-dma-bar4', PAGE);
    this.shared = mmap(PAGE, PROT_READ | PROT_WRITE, this.sharedFd, 0, 'test DMA BAR 4');
    this.buildConfig();
    const bar0: ServedRegion = {
      size: PAGE,
      flags: REGION_INFO_FLAG.READ | REGION_INFO_FLAG.WRITE,
      read: (off, data) => this.regRead(off, data),
      write: (off, data) => this.regWrite(off, data),
    };
    this.regions[PCI_REGION.BAR0] = bar0;
    this.regions[2] = memoryRegion(this.msix);
    this.regions[4] = { ...memoryRegion(this.shared.bytes), file: { fd: this.sharedFd, offset: 0 } };
    this.regions[PCI_REGION.CONFIG] = {
      size: this.config.length,
      flags: REGION_INFO_FLAG.READ | REGION_INFO_FLAG.WRITE,
      read: (off, data) => data.set(this.config.subarray(off, off + data.length)),
      // The client virtualises BARs and capabilities; what it forwards (the
      // command register, scratch bytes) is kept as a device would.
      write: (off, data) => { if (off >= 0x04 && off + data.length <= 0x06) this.config.set(data, off); else if (off >= 0x60) this.config.set(data, off); },
    };
    this.reset();
  }

  private buildConfig(): void {
    const c = new DataView(this.config.buffer);
    c.setUint16(0x00, TEST_DMA_VENDOR, true);
    c.setUint16(0x02, TEST_DMA_DEVICE, true);
    c.setUint16(0x06, 0x0010, true); // capabilities list
    c.setUint8(0x08, 1); // revision
    c.setUint8(0x0a, 0x80); // other system peripheral
    c.setUint8(0x0b, 0x08);
    c.setUint32(0x10, 0x0, true); // BAR0 mem32
    c.setUint32(0x18, 0x0, true); // BAR2 mem32
    c.setUint32(0x20, 0xc, true); // BAR4 mem64 prefetchable
    c.setUint16(0x2c, TEST_DMA_VENDOR, true);
    c.setUint16(0x2e, 0x0001, true);
    c.setUint8(0x34, 0x40);
    c.setUint8(0x3d, 1); // INTA#
    // MSI-X at 0x40: 2 entries, table BAR 2 + 0, PBA BAR 2 + 0x800.
    c.setUint8(0x40, 0x11);
    c.setUint8(0x41, 0x50);
    c.setUint16(0x42, MSIX_VECTORS - 1, true);
    c.setUint32(0x44, 2, true);
    c.setUint32(0x48, 0x800 | 2, true);
    // MSI at 0x50: 64-bit, one message.
    c.setUint8(0x50, 0x05);
    c.setUint8(0x51, 0x58);
    c.setUint16(0x52, 0x0080, true);
    // Power management at 0x58 (a capability the guest must not drive the device's state through).
    c.setUint8(0x58, 0x01);
    c.setUint8(0x59, 0x00);
    c.setUint16(0x5a, 0x0003, true);
  }

  attach(services: DeviceServices): void {
    this.services = services;
  }

  reset(): void {
    this.regs.fill(0);
    this.regs[REG.ID / 4] = TEST_DMA_ID;
    this.msix.fill(0);
    this.shared.bytes.fill(0);
    this.intxAsserted = false;
  }

  intxUnmasked(): void {
    // Level-triggered: still asserted after the unmask means signal again.
    if (this.intxAsserted) this.services?.trigger(PCI_IRQ.INTX, 0);
  }

  private regRead(off: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      const o = off + i;
      data[i] = (this.regs[o >> 2] >>> (8 * (o & 3))) & 0xff;
    }
  }

  private regWrite(off: number, data: Uint8Array): void {
    if ((off & 3) !== 0 || data.length !== 4) return; // 32-bit registers only
    const v = new DataView(data.buffer, data.byteOffset, 4).getUint32(0, true);
    switch (off) {
      case REG.STATUS:
        this.regs[REG.STATUS / 4] &= ~v;
        if ((this.regs[REG.STATUS / 4] & (STATUS.DONE | STATUS.ERROR)) === 0) this.intxAsserted = false;
        return;
      case REG.DOORBELL:
        this.copy();
        return;
      case REG.ID: case REG.COPIES: case REG.FAULT: case REG.FAULT + 4:
        return;
      default:
        if (off < 0x30) this.regs[off >> 2] = v;
    }
  }

  private copy(): void {
    const r = this.regs;
    const src = r[REG.SRC / 4 + 1] * 0x100000000 + r[REG.SRC / 4];
    const dst = r[REG.DST / 4 + 1] * 0x100000000 + r[REG.DST / 4];
    const len = r[REG.LEN / 4];
    let status: number = STATUS.DONE;
    try {
      if (len > MAX_COPY || !this.services) throw new DmaFault(src, len, false);
      const data = this.services.dma.read(src, len);
      this.services.dma.write(dst, data);
      r[REG.COPIES / 4]++;
      const rec = new DataView(this.shared.bytes.buffer, this.shared.bytes.byteOffset, 16);
      rec.setUint32(0, r[REG.COPIES / 4], true);
      rec.setUint32(4, len, true);
      rec.setUint32(8, crc32(data), true);
    } catch (e) {
      if (!(e instanceof DmaFault)) throw e;
      this.faults++;
      status = STATUS.ERROR;
      r[REG.FAULT / 4] = e.address % 0x100000000;
      r[REG.FAULT / 4 + 1] = Math.floor(e.address / 0x100000000);
    }
    r[REG.STATUS / 4] |= status;
    this.interrupt();
  }

  private interrupt(): void {
    const s = this.services;
    if (!s) return;
    const vec = this.regs[REG.VECTOR / 4];
    if (vec < MSIX_VECTORS && s.trigger(PCI_IRQ.MSIX, vec)) return;
    if (s.trigger(PCI_IRQ.MSI, 0)) return;
    this.intxAsserted = true;
    s.trigger(PCI_IRQ.INTX, 0);
  }
}
