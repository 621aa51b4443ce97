// bhyvectl --screenshot: the guest's screen as a PNG, read from the VM's
// framebuffer file (framebuffer-file.ts) in the mode the guest set. Works
// while bhyve runs and after it stopped (the last frame), until the VM is
// destroyed. pngjs does the encoding.

import fs from 'node:fs';
import { PNG } from 'pngjs';
import { framebufferPath, FramebufferView } from './framebuffer-file.js';

export class NoFramebufferError extends Error {}

/** The screen of the VM whose directory is `vmDir`, as PNG bytes. */
export function screenshotPng(vmDir: string, vmName: string): { png: Buffer; width: number; height: number } {
  const file = framebufferPath(vmDir);
  if (!fs.existsSync(file)) throw new NoFramebufferError(`VM '${vmName}' has no framebuffer (start it with -s N,fbuf)`);
  const view = FramebufferView.open(file, false);
  try {
    const s = view.screen();
    if (s.width === 0 || s.height === 0) throw new NoFramebufferError(`VM '${vmName}' has not set a display mode`);
    const png = new PNG({ width: s.width, height: s.height, colorType: 2, inputColorType: 6, inputHasAlpha: true });
    // B, G, R, X in the framebuffer; R, G, B, A for pngjs.
    const d = png.data;
    for (let i = 0; i < s.width * s.height * 4; i += 4) {
      d[i] = s.pixels[i + 2];
      d[i + 1] = s.pixels[i + 1];
      d[i + 2] = s.pixels[i];
      d[i + 3] = 0xff;
    }
    return { png: PNG.sync.write(png, { colorType: 2 }), width: s.width, height: s.height };
  } finally {
    view.close();
  }
}
