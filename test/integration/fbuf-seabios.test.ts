// Firmware screens on fbuf: SeaBIOS (Debian's bios.bin, lpc.fwcfg=qemu)
// runs a VGA BIOS from Debian's seabios package (vgabios-isavga.bin, the
// plain VGA build) handed to it as the fw_cfg file "vgaroms/..." (-f), on
// fbuf's vga=on VGA: its text console appears on the VNC screen. With no
// disk SeaBIOS ends at "No bootable device" and retries every 60 s, so the
// screen holds still; Debian's vncsnapshot captures it and tesseract-ocr
// reads it.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { BHYVE, ROOT, kvmUnavailable, vmName } from '../support/bhyve.js';

const SEABIOS = '/usr/share/seabios/bios.bin';
const VGABIOS = '/usr/share/seabios/vgabios-isavga.bin';
const have = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const skip = kvmUnavailable()
  ?? (fs.existsSync(SEABIOS) && fs.existsSync(VGABIOS) ? undefined : `${SEABIOS} or ${VGABIOS} is missing (apt-get install seabios)`)
  ?? (have('vncsnapshot') ? undefined : 'vncsnapshot is not installed (apt-get install vncsnapshot)')
  ?? (have('djpeg') ? undefined : 'djpeg is not installed (apt-get install libjpeg-turbo-progs)')
  ?? (have('tesseract') ? undefined : 'tesseract is not installed (apt-get install tesseract-ocr)');
if (skip) console.warn(`skipping SeaBIOS-on-fbuf tests: ${skip}`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fbuf-seabios-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

describe.skipIf(skip !== undefined)('SeaBIOS on fbuf vga=on with a VGA BIOS from fw_cfg', () => {
  it('shows its boot text on the VNC screen (read back by OCR)', async () => {
    const port = await freePort();
    const log = path.join(tmp, 'debugcon.log');
    const rundir = path.join(ROOT, 'build', 'run');
    fs.mkdirSync(rundir, { recursive: true, mode: 0o700 });
    const child = execa(BHYVE, [
      '-m', '256M', '-s', '0,hostbridge', '-s', '1,lpc', '-s', `2,fbuf,tcp=127.0.0.1:${port},vga=on`,
      '-l', 'com1,stdio', '-l', `bootrom,${SEABIOS},fwcfg=qemu`, '-f', `vgaroms/vgabios-isavga.bin,file=${VGABIOS}`,
      '-o', `lpc.debugcon.path=${log}`, '-o', 'x86.require_ept_rvi=false', vmName('seabios-vga'),
    ], { reject: false, timeout: 120_000, stdin: 'ignore', env: { BHYVE_RUNDIR: rundir } });
    try {
      const t0 = Date.now();
      const text = (): string => (fs.existsSync(log) ? fs.readFileSync(log, 'latin1') : '');
      while (!text().includes('No bootable device')) {
        if (child.exitCode !== null || Date.now() - t0 > 90_000) throw new Error(`SeaBIOS did not get to "No bootable device"; debug console:\n${text()}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      // The VGA BIOS ran from fw_cfg and set text mode 3 on our VGA.
      expect(text()).toContain('Start SeaVGABIOS');
      expect(text()).toContain('set VGA mode 3');
      const shot = path.join(tmp, 'seabios.jpg');
      const s = await execa('vncsnapshot', ['-quality', '100', `127.0.0.1::${port}`, shot], { reject: false, timeout: 30_000, stdin: 'ignore', all: true });
      expect(s.exitCode, s.all).toBe(0);
      const ppm = spawnSync('djpeg', ['-pnm', shot], { maxBuffer: 16 << 20 });
      expect(ppm.status).toBe(0);
      expect(ppm.stdout.toString('latin1', 0, 15)).toMatch(/^P6\s+720\s+400\s/); // 80x25 of 9x16 cells
      fs.writeFileSync(path.join(tmp, 'seabios.ppm'), ppm.stdout);
      const ocr = spawnSync('tesseract', [path.join(tmp, 'seabios.ppm'), '-'], { encoding: 'utf8' });
      expect(ocr.status, ocr.stderr).toBe(0);
      expect(ocr.stdout).toMatch(/SeaBIOS \(version 1\.\d+/);
      expect(ocr.stdout).toMatch(/Booting from Hard Disk/);
      expect(ocr.stdout).toMatch(/No bootable device/);
    } finally {
      child.kill('SIGTERM');
      await child;
    }
  }, 150_000);
});
