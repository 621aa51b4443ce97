// The device side of passthru: what pci_passthru.c asks of the host device,
// in VFIO's terms (regions by index, interrupts by index and eventfds,
// reset), so the same passthrough code drives a device served over
// vfio-user (vfio-user-backend.ts) and a host device opened through
// VFIO/iommufd (vfio-backend.ts).

import type { Mapping } from '../../sys/libc.js';
import type { MmapArea } from '../vfio-user/protocol.js';

export interface BackendRegion {
  index: number;
  size: number;
  readable: boolean;
  writable: boolean;
  /** The region can be mapped into this process: a file, its offset and
   * the parts that may be mapped (relative to the region). */
  mmap?: { fd: number; offset: number; areas: MmapArea[] };
}

export interface PassthruBackend {
  /** How the device was named ("vfio-user /run/dma.sock"), for messages. */
  readonly name: string;
  /** Whether the device takes a reset (VFIO_DEVICE_FLAGS_RESET). */
  readonly canReset: boolean;
  region(index: number): BackendRegion;
  /** Interrupts of a VFIO irq index (INTX, MSI, MSIX). */
  irqCount(index: number): number;
  read(index: number, offset: number, length: number): Uint8Array;
  write(index: number, offset: number, data: Uint8Array): void;
  /** The eventfds the device signals for irq `index`, from sub-index 0
   * (empty: that kind of interrupt off). */
  setIrqEventfds(index: number, fds: readonly number[]): void;
  /** INTx: the eventfd whose signal unmasks the (automasked) line. */
  setIntxUnmaskFd(fd: number): void;
  reset(): void;
  /** Maps `length` bytes of region `index` (one with `mmap`) into this
   * process; absent: the function maps `mmap.fd` at `mmap.offset` itself. */
  mmapRegion?(index: number, length: number): Mapping;
  close(): void;
  stats?(): Record<string, number>;
}
