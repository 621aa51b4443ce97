// The main thread's half of fbuf: the framebuffer file in the VM's
// directory, the VNC server that shows it, and `wait`. Opened by the run
// before the vCPUs start (as the UART and virtio host backends are); the
// device thread maps the same file (fbuf.ts).

import fs from 'node:fs';
import type { ConfigTree } from '../../config/tree.js';
import { UserError } from '../../user-error.js';
import { pciNodes } from '../../config/pci-nodes.js';
import { fbufNode, parseFbufOptions } from './fbuf-options.js';
import { createFramebufferFile, FB_SIZE, framebufferPath, FramebufferView } from './framebuffer-file.js';
import { nativeBuffer } from '../../sys/libc.js';
import { RfbServer } from './rfb-server.js';
import type { RfbInput } from './rfb-session.js';
import { ByteRing } from '../../vmm/byte-ring.js';
import { keyOf } from './ps2-keymap.js';
import { loadKeyboardLayout } from './kbd-layout.js';

import { INPUT_KEY, INPUT_POINTER, INPUT_RECORD, type DisplayInputTransfer } from './display-input.js';
export type { DisplayInputTransfer } from './display-input.js';

const INPUT_RING_BYTES = 4096;

export interface DisplayHost {
  readonly framebufferPath: string;
  readonly server: RfbServer;
  /** Resolves when the guest may start: at once, or with `wait` when the
   * first VNC client has completed its handshake. */
  readonly ready: Promise<void>;
  readonly wait: boolean;
  /** For VcpuThreadData.hostPorts, by the fbuf slot's node. */
  readonly transfers: Record<string, DisplayInputTransfer>;
  /** The VNC server's counters under the device's name (bhyvectl --get-stats). */
  stats(): Record<string, Record<string, number>>;
  close(): Promise<void>;
}

/** Opens the display of the fbuf slot, if the config has one. Errors are
 * one line naming fbuf (bad option, address in use). */
/** KVM_GET_DIRTY_LOG of a memory slot into a bitmap from nativeBuffer(). */
export type DirtyLogReader = (slot: number, bitmap: { address: bigint; bytes: Uint8Array }) => boolean;

export async function openDisplay(config: ConfigTree, vmDir: string, vmName: string, kick: () => void,
  log: (m: string) => void, dirtyLog?: DirtyLogReader): Promise<DisplayHost | undefined> {
  const node = fbufNode(config, pciNodes(config));
  const file = framebufferPath(vmDir);
  if (node === undefined) {
    fs.rmSync(file, { force: true }); // an earlier run's screen is not this VM's
    return undefined;
  }
  const o = parseFbufOptions(config, node);
  const layoutName = config.get('keyboard.layout');
  const layout = layoutName === undefined ? undefined : loadKeyboardLayout(layoutName);
  createFramebufferFile(file);
  const view = FramebufferView.open(file, false);
  const ring = ByteRing.create(INPUT_RING_BYTES);
  const bitmap = nativeBuffer(FB_SIZE / 4096 / 8);
  let lastSlot: number | undefined;
  let lastGeneration = -1;
  let lastVgaGeneration: number | undefined;
  const noPages = new Uint8Array(bitmap.bytes.length);
  let keysDropped = 0;
  let pointerDropped = 0;
  const input: RfbInput = {
    key: (down, keysym, scancode) => {
      const key = keyOf(keysym, scancode, layout);
      if (key === 0) { keysDropped++; return; }
      if (ring.free() < INPUT_RECORD) { keysDropped++; return; } // the guest is not reading its keyboard
      ring.push(Uint8Array.of(INPUT_KEY, down ? 1 : 0, key, 0, 0, 0));
      kick();
    },
    pointer: (buttons, x, y) => {
      if (ring.free() < INPUT_RECORD) { pointerDropped++; return; }
      ring.push(Uint8Array.of(INPUT_POINTER, buttons, x & 0xff, x >> 8, y & 0xff, y >> 8));
      kick();
    },
  };
  let server: RfbServer;
  try {
    server = await RfbServer.listen({
      listen: o.listen, password: o.password, name: vmName, input, log,
      // With vga=on the VGA's memory writes wait in KVM's coalesced MMIO
      // ring until vCPU 0 next leaves the guest: ring it, so a guest idling
      // in the kernel's HLT shows its last writes by the next refresh.
      screen: () => { if (view.showsVga) kick(); return view.screen(); },
      dirtyPages: dirtyLog && (() => {
        // The VGA's screen is drawn by us, not written by the guest into
        // the framebuffer: compare it all when it was drawn anew, nothing
        // when the VGA did not change.
        const vga = view.drawnVgaGeneration;
        if (vga !== undefined) {
          lastSlot = undefined;
          if (vga === lastVgaGeneration) return noPages;
          lastVgaGeneration = vga;
          return undefined;
        }
        lastVgaGeneration = undefined;
        // A new mapping (BAR moved or re-enabled) starts a new log: compare
        // everything once.
        const slot = view.slot;
        const generation = view.mapGeneration;
        const known = slot !== undefined && slot === lastSlot && generation === lastGeneration;
        lastSlot = slot;
        lastGeneration = generation;
        if (slot === undefined || !dirtyLog(slot, bitmap)) return undefined;
        return known ? bitmap.bytes : undefined;
      }),
    });
  } catch (e) {
    view.close();
    throw new UserError(`fbuf: ${(e as Error).message}`);
  }
  return {
    framebufferPath: file,
    server,
    wait: o.wait,
    ready: o.wait ? server.firstClient : Promise.resolve(),
    transfers: { [node]: { kind: 'fbuf-input', input: ring.sab } },
    stats: () => ({ [`fbuf@${node}`]: { ...server.totals(), 'VNC keys not delivered': keysDropped, 'VNC pointer events not delivered': pointerDropped } }),
    async close() {
      await server.close();
      view.close();
    },
  };
}
