// What the main thread hands each vCPU thread (structured-cloneable), and
// the messages a vCPU thread sends back.

import type { UartStreamTransfer } from '../devices/lpc/uart-backend.js';
import type { HostPortTransfers } from '../devices/virtio/host-ports.js';
import type { DoorbellTransfer } from '../sys/doorbell.js';
import type { ExitRequest } from './exit-status.js';
import type { MemoryLayout } from '../sys/memory-map.js';
import type { SandboxPlan } from './sandbox/sandbox.js';

import type { MessagePort } from 'node:worker_threads';

/** What every vCPU thread gets. */
export interface VcpuThreadData {
  id: number;
  vcpuCount: number;
  vcpuFd: number;
  mmapSize: number;
  controlSab: SharedArrayBuffer;
  /** The device thread's doorbell (vCPU 0's kvm_run page and request word). */
  doorbell: DoorbellTransfer;
  /** This vCPU's mailbox for device accesses forwarded to vCPU 0's thread
   * (vCPUs other than 0). */
  mailbox?: SharedArrayBuffer;
  strictIo: boolean;
  /** Where the main thread posts requests only this vCPU can serve. */
  requestPort: MessagePort;
  /** Host CPUs this vCPU's thread is pinned to, if any. */
  cpuset?: number[];
  /** Applied by the thread before it reports ready (sandbox/sandbox.ts). */
  sandbox?: SandboxPlan;
  /** vCPU 0 only: its thread runs every device model (device-host.ts). */
  deviceHost?: DeviceHostData;
}

/** What the device host on vCPU 0's thread gets besides its vCPU's data. */
export interface DeviceHostData {
  vmFd: number;
  /** One mailbox per vCPU (index 0 unused), served on every ring. */
  mailboxes: SharedArrayBuffer[];
  memoryPath: string;
  /** The fbuf framebuffer file (devices/display/framebuffer-file.ts), when configured. */
  framebufferPath?: string;
  /** The device thread maps 0xC0000-0xFFFFF itself (chipset shadowing). */
  legacyWindow: boolean;
  /** The boot ROM file, for device mappings of it (BIOS alias). */
  bootromPath?: string;
  layout: MemoryLayout;
  /** The config tree as [path, raw value] pairs. */
  config: Array<[string, string]>;
  /** Host streams prepared by the main thread, by backend key ("lpc.com1"). */
  streams: Record<string, UartStreamTransfer>;
  /** virtio-net taps and virtio-console sockets opened by the main thread
   * (devices/virtio/host-ports.ts). */
  hostPorts: HostPortTransfers;
  /** `-f name,...` fw_cfg user files (for lpc.fwcfg=qemu). */
  fwcfgFiles: Array<{ name: string; data: Uint8Array }>;
  /** Deadlines of device timers (device-timers.ts). */
  timerSab: SharedArrayBuffer;
  /** The SMBIOS image createMachine's fit check built (firmware
   * smbiosImage(), same config, layout and host name): written as is. */
  smbios?: Uint8Array;
}

/** vCPU 0's thread, before its VcpuThreadData: the config, as soon as the
 * command line is checked, so that the thread loads the models of the
 * devices it names while the main thread creates the VM. */
export interface DeviceModelsHint {
  type: 'models';
  config: Array<[string, string]>;
}

export type VcpuThreadMessage =
  | { type: 'loaded' }
  | { type: 'ready'; id: number }
  | { type: 'exit'; request: ExitRequest }
  /** KVM_EXIT_DEBUG (breakpoint or single step): the vCPU holds itself for the debugger. */
  | { type: 'debug'; id: number; exception: number; dr6: string }
  | { type: 'stopped'; id: number; exitCounts: number[] };
