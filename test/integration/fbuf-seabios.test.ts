// Firmware screens and keys on fbuf: SeaBIOS (Debian's bios.bin,
// lpc.fwcfg=qemu) runs a VGA BIOS from Debian's seabios package
// (vgabios-isavga.bin, the plain VGA build) handed to it as the fw_cfg file
// "vgaroms/..." (-f), on fbuf's vga=on VGA: its text console appears on the
// VNC screen. With no disk SeaBIOS ends at "No bootable device" and retries
// every 60 s, so the screen holds still; Debian's vncsnapshot captures it
// and tesseract-ocr reads it. With its boot menu enabled (fw_cfg
// etc/show-boot-menu), ESC sent by a VNC client reaches SeaBIOS through the
// PS/2 keyboard (its IRQ 1 handler, scancode set 1 translation) and opens
// the menu. The same is done on QEMU (-vga std, its VNC server).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { BHYVE, ROOT, kvmUnavailable, vmName } from '../support/bhyve.js';
import { HAVE_QEMU } from '../support/probes.js';
import { freePort, keysym, rfbConnect } from '../support/rfb-client.js';

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

/** A little-endian integer fw_cfg file (SeaBIOS's romfile_loadint). */
function intFile(name: string, value: number): string {
  const p = path.join(tmp, name);
  const b = Buffer.alloc(2);
  b.writeUInt16LE(value);
  fs.writeFileSync(p, b);
  return p;
}

interface Firmware { port: number; log(): string; child: ResultPromise }

/** SeaBIOS with its boot menu on (10 s to press ESC), no disk, debug console to a file. */
async function start(kind: 'bhyve' | 'qemu', tag: string): Promise<Firmware> {
  const port = await freePort(kind === 'qemu' ? 5900 : 0);
  const log = path.join(tmp, `${tag}-debugcon.log`);
  let child: ResultPromise;
  if (kind === 'bhyve') {
    const rundir = path.join(ROOT, 'build', 'run');
    fs.mkdirSync(rundir, { recursive: true, mode: 0o700 });
    child = execa(BHYVE, [
      '-m', '256M', '-s', '0,hostbridge', '-s', '1,lpc', '-s', `2,fbuf,tcp=127.0.0.1:${port},vga=on`,
      '-l', 'com1,stdio', '-l', `bootrom,${SEABIOS},fwcfg=qemu`, '-f', `vgaroms/vgabios-isavga.bin,file=${VGABIOS}`,
      '-f', `etc/show-boot-menu,file=${intFile('menu', 1)}`, '-f', `etc/boot-menu-wait,file=${intFile('wait', 10_000)}`,
      '-o', `lpc.debugcon.path=${log}`, '-o', 'x86.require_ept_rvi=false', vmName(tag),
    ], { reject: false, timeout: 150_000, stdin: 'ignore', env: { BHYVE_RUNDIR: rundir } });
  } else {
    child = execa('qemu-system-x86_64', [
      '-accel', 'kvm', '-accel', 'tcg', '-machine', 'pc', '-m', '256M', '-nodefaults', '-display', 'none', '-monitor', 'none',
      '-vga', 'std', '-vnc', `127.0.0.1:${port - 5900}`, '-bios', SEABIOS, '-boot', 'menu=on,splash-time=10000',
      '-chardev', `file,id=dbg,path=${log}`, '-device', 'isa-debugcon,iobase=0x402,chardev=dbg',
    ], { reject: false, timeout: 150_000, stdin: 'ignore' });
  }
  return { port, child, log: () => (fs.existsSync(log) ? fs.readFileSync(log, 'latin1') : '') };
}

/** Waits for `text` on SeaBIOS's debug console; `poke` runs every 5 s
 * meanwhile (a key sent before SeaBIOS reads the keyboard is lost on a
 * loaded host, so a key that should move SeaBIOS on is sent again). */
async function untilLogged(fw: Firmware, text: string, poke?: () => void): Promise<void> {
  const t0 = Date.now();
  let poked = t0;
  while (!fw.log().includes(text)) {
    if (fw.child.exitCode !== null || Date.now() - t0 > 100_000) throw new Error(`no "${text}" from SeaBIOS; debug console:\n${fw.log()}`);
    if (poke && Date.now() - poked > 5000) { poke(); poked = Date.now(); }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The VNC screen as vncsnapshot sees it, read by tesseract; checks the size. */
async function screenText(port: number, tag: string, size: RegExp): Promise<string> {
  const shot = path.join(tmp, `${tag}.jpg`);
  const s = await execa('vncsnapshot', ['-quality', '100', `127.0.0.1::${port}`, shot], { reject: false, timeout: 30_000, stdin: 'ignore', all: true });
  expect(s.exitCode, s.all).toBe(0);
  const ppm = spawnSync('djpeg', ['-pnm', shot], { maxBuffer: 16 << 20 });
  expect(ppm.status).toBe(0);
  expect(ppm.stdout.toString('latin1', 0, 15)).toMatch(size);
  fs.writeFileSync(path.join(tmp, `${tag}.ppm`), ppm.stdout);
  const ocr = spawnSync('tesseract', [path.join(tmp, `${tag}.ppm`), '-'], { encoding: 'utf8' });
  expect(ocr.status, ocr.stderr).toBe(0);
  return ocr.stdout;
}

/** Boot text on screen, ESC through VNC opens the boot menu, ESC leaves it, then "No bootable device". */
async function bootMenuByVnc(kind: 'bhyve' | 'qemu'): Promise<void> {
  const fw = await start(kind, `seabios-${kind}`);
  try {
    await untilLogged(fw, 'Press ESC for boot menu.');
    if (kind === 'bhyve') {
      // The VGA BIOS ran from fw_cfg and set text mode 3 on our VGA.
      expect(fw.log()).toContain('Start SeaVGABIOS');
      expect(fw.log()).toContain('set VGA mode 3');
    }
    const c = await rfbConnect(fw.port);
    c.sock.write(Buffer.concat([keysym(true, 0xff1b), keysym(false, 0xff1b)]));
    await untilLogged(fw, 'Select boot device');
    const menu = await screenText(fw.port, `${kind}-menu`, /^P6\s+720\s+400\s/); // 80x25 of 9x16 cells
    expect(menu).toMatch(/SeaBIOS \(version 1\.\d+/);
    expect(menu).toMatch(/Select boot device/);
    // ESC again leaves the menu; SeaBIOS goes on to find no disk.
    const esc = (): void => { c.sock.write(Buffer.concat([keysym(true, 0xff1b), keysym(false, 0xff1b)])); };
    esc();
    await untilLogged(fw, 'No bootable device', esc);
    c.sock.destroy();
    const end = await screenText(fw.port, `${kind}-end`, /^P6\s+720\s+400\s/);
    expect(end).toMatch(/No bootable device/);
  } finally {
    fw.child.kill('SIGTERM');
    await fw.child;
  }
}

describe.skipIf(skip !== undefined)('SeaBIOS on fbuf vga=on with a VGA BIOS from fw_cfg, and on QEMU', () => {
  it('bhyve: the boot text is on the VNC screen, ESC from a VNC client opens the boot menu (read back by OCR)', async () => {
    await bootMenuByVnc('bhyve');
  }, 180_000);

  it.skipIf(!HAVE_QEMU)('QEMU (-vga std, -vnc): the same screens and the same key', async () => {
    await bootMenuByVnc('qemu');
  }, 180_000);
});
