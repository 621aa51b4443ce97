import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  createFramebufferFile, FB_SIZE, FramebufferView, REG_HEIGHT, REG_WIDTH,
} from '../../src/devices/display/framebuffer-file.js';
import { screenshotPng, NoFramebufferError } from '../../src/devices/display/screenshot.js';
import { PNG } from 'pngjs';

describe('framebuffer file', () => {
  it('follows the mode the guest set and keeps the last good one for a bad mode', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fbfile-'));
    try {
      const file = path.join(dir, 'framebuffer');
      createFramebufferFile(file);
      expect(fs.statSync(file).size).toBe(FB_SIZE + 8192 + 256 * 1024) // pixels, registers, VGA state and VGA planes;
      const guest = FramebufferView.open(file, true); // the device's side
      const vnc = FramebufferView.open(file, false);
      guest.regs.setUint16(REG_WIDTH, 800, true);
      guest.regs.setUint16(REG_HEIGHT, 600, true);
      expect(vnc.screen()).toMatchObject({ width: 800, height: 600 });
      expect(vnc.screen().pixels.length).toBe(800 * 600 * 4);
      // Hostile modes: too big for the memory, or zero (VGA mode): unchanged.
      guest.regs.setUint16(REG_WIDTH, 0xffff, true);
      guest.regs.setUint16(REG_HEIGHT, 0xffff, true);
      expect(vnc.screen()).toMatchObject({ width: 800, height: 600 });
      guest.regs.setUint16(REG_WIDTH, 0, true);
      guest.regs.setUint16(REG_HEIGHT, 0, true);
      expect(vnc.screen()).toMatchObject({ width: 800, height: 600 });
      // A screenshot of a 2x1 mode: B,G,R,X in memory -> R,G,B in the PNG.
      guest.regs.setUint16(REG_WIDTH, 2, true);
      guest.regs.setUint16(REG_HEIGHT, 1, true);
      guest.pixels.set([0x10, 0x20, 0x30, 0, 0xff, 0, 0, 0]);
      const { png, width, height } = screenshotPng(dir, 'vm');
      expect([width, height]).toEqual([2, 1]);
      const img = PNG.sync.read(png);
      expect([...img.data.subarray(0, 8)]).toEqual([0x30, 0x20, 0x10, 0xff, 0, 0, 0xff, 0xff]);
      guest.close();
      vnc.close();
      fs.rmSync(file);
      expect(() => screenshotPng(dir, 'vm')).toThrow(NoFramebufferError);
      expect(() => screenshotPng(dir, 'vm')).toThrow("VM 'vm' has no framebuffer (start it with -s N,fbuf)");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
