// Host backends of virtio devices, opened on the main thread before the
// device thread starts (the UART's equivalent is uart-backend.ts): a tap for
// each virtio-net slot with a `backend`, the port sockets of each
// virtio-console slot. The transfers reach the device thread in
// DeviceHostData.hostPorts, one table per backend kind keyed by the slot's
// config node ("pci.0.3.0"), where DeviceContext.hostPorts hands each
// device factory the transfer of its own kind.

import type { ConfigTree } from '../../config/tree.js';
import { pciNodes } from '../../config/pci-nodes.js';
import { userErrorWithPrefix } from '../../user-error.js';
import { openConsoleBackend, type ConsoleBackendTransfer } from './console-backend.js';
import { openNetBackend, type NetBackendTransfer } from '../net/net-backend.js';
import type { DoorbellTransfer } from '../../sys/doorbell.js';
import type { DisplayInputTransfer } from '../display/display-input.js';
import { openInputBackend, type InputBackendTransfer } from './input-backend.js';

/** The opened backends by kind, each by slot node ("pci.0.3.0");
 * structured-cloneable. */
export interface HostPortTransfers {
  net: Record<string, NetBackendTransfer>;
  console: Record<string, ConsoleBackendTransfer>;
  /** fbuf's VNC input ring (devices/display/fbuf-host.ts opens it). */
  display: Record<string, DisplayInputTransfer>;
  /** virtio-input's evdev devices (input-backend.ts). */
  input?: Record<string, InputBackendTransfer>;
}

/** A device thread's typed view of the transfers (DeviceContext.hostPorts). */
export interface HostPortLookup {
  net(node: string): NetBackendTransfer | undefined;
  console(node: string): ConsoleBackendTransfer | undefined;
  display(node: string): DisplayInputTransfer | undefined;
  input?(node: string): InputBackendTransfer | undefined;
}

export function hostPortLookup(t: HostPortTransfers): HostPortLookup {
  return { net: (node) => t.net[node], console: (node) => t.console[node], display: (node) => t.display[node], input: (node) => t.input?.[node] };
}

export interface HostPorts {
  readonly transfers: HostPortTransfers;
  /** Closes every backend (after the device thread stopped). */
  close(): Promise<void>;
}

/** Opens the host side of every virtio-net / virtio-console slot. `kick`
 * asks the device thread to poll its devices; slirp's thread rings
 * `doorbell` (the device thread's) itself when given. Throws an Error with one line
 * naming the slot when a backend cannot be opened (nothing stays open). */
export async function openHostPorts(config: ConfigTree, kick: () => void, doorbell?: DoorbellTransfer): Promise<HostPorts> {
  const transfers: HostPortTransfers = { net: {}, console: {}, display: {}, input: {} };
  const hosts: Array<{ close(): Promise<void> }> = [];
  const closeAll = async (): Promise<void> => {
    for (const h of hosts.splice(0)) await h.close().catch(() => undefined);
  };
  try {
    for (const { node, where } of pciNodes(config)) {
      const emul = config.get(`${node}.device`);
      if (emul !== 'virtio-net' && emul !== 'e1000' && emul !== 'virtio-console' && emul !== 'virtio-input') continue;
      try {
        if (emul === 'virtio-input') {
          const host = openInputBackend(config, node, kick);
          hosts.push(host);
          transfers.input![node] = host.transfer;
        } else if (emul === 'virtio-net' || emul === 'e1000') {
          const host = await openNetBackend(config, node, kick, doorbell);
          if (host === undefined) continue;
          hosts.push(host);
          transfers.net[node] = host.transfer;
        } else {
          const host = await openConsoleBackend(config, node, kick);
          if (host === undefined) continue;
          hosts.push(host);
          transfers.console[node] = host.transfer;
        }
      } catch (e) {
        throw userErrorWithPrefix(e, `${emul} at pci slot ${where}: `);
      }
    }
  } catch (e) {
    await closeAll();
    throw e;
  }
  return { transfers, close: closeAll };
}
