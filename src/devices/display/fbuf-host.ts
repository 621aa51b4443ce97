// The main thread's half of fbuf: the framebuffer file in the VM's
// directory, the VNC server that shows it, and `wait`. Opened by the run
// before the vCPUs start (as the UART and virtio host backends are); the
// device thread maps the same file (fbuf.ts).

import fs from 'node:fs';
import type { ConfigTree } from '../../config/tree.js';
import { configuredPciFunctions } from '../platform.js';
import { fbufNode, parseFbufOptions } from './fbuf-options.js';
import { createFramebufferFile, framebufferPath, FramebufferView } from './framebuffer-file.js';
import { RfbServer } from './rfb-server.js';
import type { RfbInput } from './rfb-session.js';

export interface DisplayHost {
  readonly framebufferPath: string;
  readonly server: RfbServer;
  /** Resolves when the guest may start: at once, or with `wait` when the
   * first VNC client has completed its handshake. */
  readonly ready: Promise<void>;
  readonly wait: boolean;
  /** The VNC server's counters under the device's name (bhyvectl --get-stats). */
  stats(): Record<string, Record<string, number>>;
  close(): Promise<void>;
}

/** Opens the display of the fbuf slot, if the config has one. Errors are
 * one line naming fbuf (bad option, address in use). */
export async function openDisplay(config: ConfigTree, vmDir: string, vmName: string, input: RfbInput,
  log: (m: string) => void): Promise<DisplayHost | undefined> {
  const node = fbufNode(config, configuredPciFunctions({ config }));
  const file = framebufferPath(vmDir);
  if (node === undefined) {
    fs.rmSync(file, { force: true }); // an earlier run's screen is not this VM's
    return undefined;
  }
  const o = parseFbufOptions(config, node);
  createFramebufferFile(file);
  const view = FramebufferView.open(file, false);
  let server: RfbServer;
  try {
    server = await RfbServer.listen({
      listen: o.listen, password: o.password, name: vmName, input, log,
      screen: () => view.screen(),
    });
  } catch (e) {
    view.close();
    throw new Error(`fbuf: ${(e as Error).message}`);
  }
  return {
    framebufferPath: file,
    server,
    wait: o.wait,
    ready: o.wait ? server.firstClient : Promise.resolve(),
    stats: () => ({ [`fbuf@${node}`]: server.totals() }),
    async close() {
      await server.close();
      view.close();
    },
  };
}
