// What the main thread hands each vCPU thread (structured-cloneable), and
// the messages a vCPU thread sends back.

import type { UartStreamTransfer } from '../devices/lpc/uart-backend.js';
import type { HostPortTransfer } from '../devices/virtio/host-ports.js';
import type { ExitRequest } from './exit-status.js';
import type { MemoryLayout } from '../sys/memory-map.js';
import type { SandboxPlan } from './sandbox/sandbox.js';

import type { MessagePort } from 'node:worker_threads';

export interface VcpuThreadData {
  id: number;
  vcpuCount: number;
  vcpuFd: number;
  /** vCPU 0's fd, so that other vCPUs can kick the device thread. */
  bspFd: number;
  vmFd: number;
  mmapSize: number;
  controlSab: SharedArrayBuffer;
  /** One mailbox per vCPU (index 0 unused). */
  mailboxes: SharedArrayBuffer[];
  memoryPath: string;
  /** The device thread maps 0xC0000-0xFFFFF itself (chipset shadowing). */
  legacyWindow: boolean;
  /** The boot ROM file, for device mappings of it (BIOS alias). */
  bootromPath?: string;
  layout: MemoryLayout;
  /** The config tree as [path, raw value] pairs. */
  config: Array<[string, string]>;
  /** Host streams prepared by the main thread, by backend key ("lpc.com1"). */
  streams: Record<string, UartStreamTransfer>;
  /** virtio-net taps and virtio-console sockets opened by the main thread,
   * by slot node ("pci.0.3.0"); see devices/virtio/host-ports.ts. */
  hostPorts?: Record<string, HostPortTransfer>;
  strictIo: boolean;
  /** `-f name,...` fw_cfg user files (for lpc.fwcfg=qemu). */
  fwcfgFiles: Array<{ name: string; data: Uint8Array }>;
  /** Deadlines of device timers (device-timers.ts). */
  timerSab: SharedArrayBuffer;
  /** Where the main thread posts requests only this vCPU can serve. */
  requestPort: MessagePort;
  /** Host CPUs this vCPU's thread is pinned to, if any. */
  cpuset?: number[];
  /** Applied by the thread before it reports ready (sandbox/sandbox.ts). */
  sandbox?: SandboxPlan;
}

export type VcpuThreadMessage =
  | { type: 'loaded' }
  | { type: 'ready'; id: number }
  | { type: 'exit'; request: ExitRequest }
  | { type: 'stopped'; id: number; exitCounts: number[] };
