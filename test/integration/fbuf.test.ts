// fbuf on bhyve, seen by a real VNC client: fbuf.rom draws a known pattern
// into the framebuffer BAR; Debian's vncsnapshot connects to bhyve's VNC
// server and saves the screen (JPEG, decoded with djpeg); the test compares
// the centre of every 64x64 block with the colour the guest drew there.
// Also: VNC authentication with the right and a wrong password (the guest
// sets its own mode first: the client must see 640x480, not the configured
// 1024x768), and `wait` holding the guest until a client is in. Keys and
// pointer events sent as RFB messages reach the guest, which reads the
// i8042 only after its IRQ 1 / IRQ 12 (also with -K de); the same ROM runs
// on QEMU (bochs-display, -vnc) where vncsnapshot and the same RFB key
// events must give the same picture and scancodes.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PNG } from 'pngjs';
import { BHYVE, bhyveArgs, kvmUnavailable, ROOT, rom, vmName } from '../support/bhyve.js';
import { BHYVECTL, HAVE_QEMU, parseStats, qemuArgs } from '../support/guest-rom.js';
import { desEcb } from '../../src/devices/display/rfb-auth.js';
import { loadVgaFont, VGA_FONT_PATHS } from '../../src/devices/display/vga-font.js';
import { freePort, keysym, rfbConnect } from '../support/rfb-client.js';

const have = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const skip = kvmUnavailable()
  ?? (fs.existsSync(rom('fbuf')) ? undefined : 'fbuf.rom is not built: run scripts/build-guests.sh')
  ?? (have('vncsnapshot') ? undefined : 'vncsnapshot is not installed (apt-get install vncsnapshot)')
  ?? (have('djpeg') ? undefined : 'djpeg is not installed (apt-get install libjpeg-turbo-progs)');
if (skip) console.warn(`skipping fbuf integration tests: ${skip}`);

const COLORS = [0x000000, 0xff0000, 0x00ff00, 0x0000ff, 0xffff00, 0xff00ff, 0x00ffff, 0xffffff];
const BLOCK = 64;

/** fbuf.rom's line of VGA text (row 1, attribute 0x1f: bright white on blue). */
const VGA_LINE = 'bhyve fbuf: VGA text mode, 80x25 {[|]} 0123456789';
const VGA_FONT_MISSING = VGA_FONT_PATHS.some((p) => fs.existsSync(p)) ? undefined : `${VGA_FONT_PATHS[0]} is missing (apt-get install console-setup-linux)`;
const VGA_FONT = VGA_FONT_MISSING ? new Uint8Array(8192) : loadVgaFont();

/** Pixels of VGA_LINE's cells that are not what the font says (fg where the glyph has a dot, bg elsewhere). */
function textRowErrors(isFg: (x: number, y: number) => boolean, isBg: (x: number, y: number) => boolean): string[] {
  const bad: string[] = [];
  for (let i = 0; i < VGA_LINE.length; i++) {
    for (let line = 0; line < 16; line++) {
      const bits = VGA_FONT[VGA_LINE.charCodeAt(i) * 32 + line];
      for (let d = 0; d < 9; d++) {
        const x = i * 9 + d;
        const y = 16 + line;
        const dot = (bits & (0x80 >> Math.min(d, 7))) !== 0;
        if (dot ? !isFg(x, y) : !isBg(x, y)) bad.push(`'${VGA_LINE[i]}' line ${line} dot ${d}`);
      }
    }
  }
  return bad;
}

/** 'a' down and up as keysyms, keypad Enter down and up as QEMU extended key events (XT 0x9c = E0 1C). */
const KEY_EVENTS = Buffer.concat([keysym(true, 0x61), keysym(false, 0x61),
  Buffer.from([255, 0, 0, 1, 0, 0, 0xff, 0x8d, 0, 0, 0, 0x9c, 255, 0, 0, 0, 0, 0, 0xff, 0x8d, 0, 0, 0, 0x9c])]);

/** A vncpasswd(1) file: the password DES-encrypted under VNC's fixed key. */
function vncPasswdFile(file: string, password: string): string {
  const rev = (b: number): number => { let r = 0; for (let i = 0; i < 8; i++) if (b & (1 << i)) r |= 0x80 >> i; return r; };
  const fixed = Buffer.from([23, 82, 107, 6, 35, 78, 88, 7].map(rev));
  const pw = Buffer.alloc(8);
  Buffer.from(password).copy(pw);
  fs.writeFileSync(file, desEcb(fixed, pw), { mode: 0o600 });
  return file;
}

/** Decodes vncsnapshot's JPEG to {width, height, rgb}. */
function readJpeg(file: string): { width: number; height: number; rgb: Buffer } {
  const r = spawnSync('djpeg', ['-pnm', file], { maxBuffer: 64 * 1024 * 1024 });
  expect(r.status).toBe(0);
  const head = /^P6\s+(\d+)\s+(\d+)\s+255\s/.exec(r.stdout.toString('latin1', 0, 40))!;
  return { width: Number(head[1]), height: Number(head[2]), rgb: r.stdout.subarray(head[0].length) };
}

/** Block centres whose colour is off by more than JPEG's error (a list, empty when all match). */
function patternErrors(img: { width: number; height: number; rgb: Buffer }): string[] {
  const bad: string[] = [];
  for (let by = 0; by * BLOCK + BLOCK / 2 < img.height; by++) {
    for (let bx = 0; bx * BLOCK + BLOCK / 2 < img.width; bx++) {
      const x = bx * BLOCK + BLOCK / 2;
      const y = by * BLOCK + BLOCK / 2;
      const p = (y * img.width + x) * 3;
      const c = COLORS[(bx + 2 * by) % 8];
      const want = [c >> 16, (c >> 8) & 0xff, c & 0xff];
      const got = [img.rgb[p], img.rgb[p + 1], img.rgb[p + 2]];
      if (want.some((v, i) => Math.abs(v - got[i]) > 24)) bad.push(`block ${bx},${by}: want ${want} got ${got}`);
    }
  }
  return bad;
}

/** fbuf.rom with its parameter word set (0: keep the mode; else w << 16 | h). */
function romWithMode(dir: string, w = 0, h = 0): string {
  const b = fs.readFileSync(rom('fbuf'));
  b.writeUInt32LE(((w << 16) | h) >>> 0, 0xffe0);
  const out = path.join(dir, `fbuf-${w}x${h}.rom`);
  fs.writeFileSync(out, b);
  return out;
}

/** Starts bhyve; `out` accumulates its output; `until(text)` waits for a line. */
function start(romPath: string, fbuf: string, extra: string[] = []) {
  const rundir = path.join(ROOT, 'build', 'run');
  fs.mkdirSync(rundir, { recursive: true });
  const name = vmName('fbuf');
  const child = execa(BHYVE, bhyveArgs(romPath, name, { mem: '128M', extra: ['-s', `2,fbuf,${fbuf}`, ...extra] }), {
    reject: false, timeout: 90_000, stdin: 'pipe', env: { BHYVE_RUNDIR: rundir }, encoding: 'latin1', stripFinalNewline: false,
  });
  const run = { child, out: '', name, env: { BHYVE_RUNDIR: rundir } };
  child.stdout!.on('data', (b: Buffer) => { run.out += b.toString('latin1'); });
  child.stderr!.on('data', (b: Buffer) => { run.out += b.toString('latin1'); });
  const until = async (text: string, ms = 60_000): Promise<void> => {
    const t0 = Date.now();
    while (!run.out.includes(text)) {
      if (child.exitCode !== null || Date.now() - t0 > ms) throw new Error(`no "${text}" from bhyve; output:\n${run.out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  return { run, until };
}

async function snapshot(port: number, file: string, passwd?: string, encodings?: string) {
  return execa('vncsnapshot', [...(passwd ? ['-passwd', passwd] : []), ...(encodings ? ['-encodings', encodings] : []),
    '-quality', '100', `127.0.0.1::${port}`, file], {
    reject: false, timeout: 30_000, stdin: 'ignore', all: true,
  });
}

describe.skipIf(skip !== undefined)('fbuf and its VNC server on bhyve', () => {
  let tmp = '';
  beforeAll(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fbuf-int-')); });
  afterAll(() => { if (tmp) fs.rmSync(tmp, { recursive: true, force: true }); });

  it('a VNC client sees the pattern the guest drew', async () => {
    const port = await freePort();
    const { run, until } = start(romWithMode(tmp), `tcp=127.0.0.1:${port},w=800,h=600`);
    await until('fbuf: waiting');
    expect(run.out).toContain('fbuf: drew 800x600');
    const shot = path.join(tmp, 'screen.jpg');
    const s = await snapshot(port, shot);
    expect(s.exitCode, s.all).toBe(0);
    const img = readJpeg(shot);
    expect([img.width, img.height]).toEqual([800, 600]);
    expect(patternErrors(img)).toEqual([]);
    // The same through the Zlib encoding (vncsnapshot prefers Raw on one host).
    const zshot = path.join(tmp, 'screen-zlib.jpg');
    const z = await snapshot(port, zshot, undefined, 'zlib');
    expect(z.exitCode, z.all).toBe(0);
    expect(patternErrors(readJpeg(zshot))).toEqual([]);
    // bhyvectl --screenshot: lossless, so every pixel must match.
    const png = path.join(tmp, 'screen.png');
    const ctl = await execa(BHYVECTL, [`--vm=${run.name}`, `--screenshot=${png}`], { reject: false, env: run.env, stdin: 'ignore' });
    expect(ctl.exitCode, ctl.stderr).toBe(0);
    const pic = PNG.sync.read(fs.readFileSync(png));
    expect([pic.width, pic.height]).toEqual([800, 600]);
    let wrong = 0;
    for (let y = 0; y < 600; y++) {
      for (let x = 0; x < 800; x++) {
        const c = COLORS[(Math.floor(x / BLOCK) + 2 * Math.floor(y / BLOCK)) % 8];
        const p = (y * 800 + x) * 4;
        if (pic.data[p] !== c >> 16 || pic.data[p + 1] !== ((c >> 8) & 0xff) || pic.data[p + 2] !== (c & 0xff)) wrong++;
      }
    }
    expect(wrong).toBe(0);
    // --get-stats: the device's mode and the VNC server's counters.
    const st = parseStats((await execa(BHYVECTL, [`--vm=${run.name}`, '--get-stats'], { reject: false, env: run.env, stdin: 'ignore' })).stdout);
    expect(st.get('fbuf@pci.0.2.0 width')).toBe(800);
    expect(st.get('fbuf@pci.0.2.0 height')).toBe(600);
    expect(st.get('fbuf@pci.0.2.0 framebuffer address')).toBeGreaterThan(0);
    expect(st.get('fbuf@pci.0.2.0 VNC clients accepted')).toBe(2);
    expect(st.get('fbuf@pci.0.2.0 VNC updates sent')).toBeGreaterThanOrEqual(1);
    run.child.stdin!.write('q');
    const r = await run.child;
    expect(r.exitCode, run.out).toBe(33);
    expect(run.out).toContain('fbuf: OK');
  });

  it('password=: the right password gets the screen (in the mode the guest set), a wrong one is refused', async () => {
    const port = await freePort();
    const { run, until } = start(romWithMode(tmp, 640, 480), `tcp=127.0.0.1:${port},password=s3cret`);
    await until('fbuf: waiting');
    const wrong = await snapshot(port, path.join(tmp, 'no.jpg'), vncPasswdFile(path.join(tmp, 'bad.pw'), 'nope'));
    expect(wrong.exitCode).not.toBe(0);
    expect(wrong.all).toMatch(/authentication failed/i);
    expect(fs.existsSync(path.join(tmp, 'no.jpg'))).toBe(false);
    const shot = path.join(tmp, 'pw.jpg');
    const right = await snapshot(port, shot, vncPasswdFile(path.join(tmp, 'good.pw'), 's3cret'));
    expect(right.exitCode, right.all).toBe(0);
    const img = readJpeg(shot);
    expect([img.width, img.height]).toEqual([640, 480]);
    expect(patternErrors(img)).toEqual([]);
    run.child.stdin!.write('q');
    expect((await run.child).exitCode, run.out).toBe(33);
    expect(run.out).toMatch(/VNC client .*authentication failed: invalid password/);
  });

  it('keys and pointer events from a VNC client reach the guest as PS/2 scancodes (set 1) and mouse packets, by IRQ 1 and 12', async () => {
    const port = await freePort();
    const { run, until } = start(romWithMode(tmp), `tcp=127.0.0.1:${port},w=640,h=480`);
    await until('fbuf: waiting');
    const c = await rfbConnect(port);
    // 'a' down and up as keysyms, then keypad Enter (E0 1C) as QEMU extended key events.
    c.sock.write(KEY_EVENTS);
    await until('kbd: 9c');
    const bytes = [...run.out.matchAll(/kbd: ([0-9a-f]{2})/g)].map((m) => m[1]);
    expect(bytes).toEqual(['1e', '9e', 'e0', '1c', 'e0', '9c']);
    // Pointer: a position, then left button down 10 right and 5 up, then
    // released 10 left and 10 down: two relative packets.
    const ptr = (b: number, x: number, y: number): Buffer => Buffer.from([5, b, x >> 8, x & 0xff, y >> 8, y & 0xff]);
    c.sock.write(Buffer.concat([ptr(0, 100, 100), ptr(1, 110, 95), ptr(0, 100, 105)]));
    const mouseBytes = (): string[] => [...run.out.matchAll(/mouse: ([0-9a-f]{2})/g)].map((m) => m[1]);
    for (let i = 0; i < 200 && mouseBytes().length < 7; i++) await new Promise((r) => setTimeout(r, 50));
    const mouse = mouseBytes();
    expect(mouse).toEqual(['fa', '09', '0a', '05', '38', 'f6', 'f6']);
    // An idle screen with a client waiting for an update: after the first
    // full update, KVM's dirty log of the framebuffer says nothing changed
    // and the scans compare nothing.
    const before = c.got().length;
    c.sock.write(Buffer.from([3, 0, 0, 0, 0, 0, 2, 128, 1, 224])); // full 640x480
    await c.until(before + 4 + 12 + 640 * 480 * 4);
    c.sock.write(Buffer.from([3, 1, 0, 0, 0, 0, 2, 128, 1, 224]));
    await new Promise((r) => setTimeout(r, 1500));
    expect(c.got().length).toBe(before + 4 + 12 + 640 * 480 * 4); // nothing more was sent
    const st = parseStats((await execa(BHYVECTL, [`--vm=${run.name}`, '--get-stats'], { reject: false, env: run.env, stdin: 'ignore' })).stdout);
    expect(st.get('fbuf@pci.0.2.0 VNC bands skipped by the dirty log')).toBeGreaterThan(15 * 20);
    expect(st.get('fbuf@pci.0.2.0 VNC bands compared')).toBeLessThanOrEqual(2 * 15);
    c.sock.destroy();
    run.child.stdin!.write('q');
    expect((await run.child).exitCode, run.out).toBe(33);
    // Bytes were read only after interrupts: every key byte came with one.
    const irqs = /fbuf: interrupts: keyboard (\d+), mouse (\d+)/.exec(run.out);
    expect(irqs, run.out).not.toBeNull();
    expect(Number(irqs![1])).toBeGreaterThanOrEqual(1);
    expect(Number(irqs![2])).toBeGreaterThanOrEqual(1);
  });

  it('-K de: keysyms typed on a German keyboard reach the guest as the keys that type them there', async () => {
    const port = await freePort();
    const { run, until } = start(romWithMode(tmp), `tcp=127.0.0.1:${port},w=640,h=480`, ['-K', 'de']);
    await until('fbuf: waiting');
    const c = await rfbConnect(port);
    // y, z, @ (AltGr+Q on a German keyboard; the client sends AltGr itself).
    c.sock.write(Buffer.concat([0x79, 0x7a, 0x40].flatMap((k) => [keysym(true, k), keysym(false, k)])));
    await until('kbd: 90');
    const bytes = [...run.out.matchAll(/kbd: ([0-9a-f]{2})/g)].map((m) => m[1]);
    expect(bytes).toEqual(['2c', 'ac', '15', '95', '10', '90']);
    c.sock.destroy();
    run.child.stdin!.write('q');
    expect((await run.child).exitCode, run.out).toBe(33);
  });

  it.skipIf(!HAVE_QEMU)('the same guest on QEMU (bochs-display, -vnc): the pattern over VNC, keys by IRQ 1 as the same scancodes', async () => {
    const port = await freePort(5900);
    const qemu = execa('qemu-system-x86_64', qemuArgs(romWithMode(tmp), ['-device', 'bochs-display', '-vnc', `127.0.0.1:${port - 5900}`]),
      { reject: false, timeout: 90_000, stdin: 'pipe', encoding: 'latin1', stripFinalNewline: false });
    let out = '';
    qemu.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
    qemu.stderr!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
    const until = async (text: string): Promise<void> => {
      const t0 = Date.now();
      while (!out.includes(text)) {
        if (qemu.exitCode !== null || Date.now() - t0 > 60_000) throw new Error(`no "${text}" from QEMU; output:\n${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    await until('fbuf: waiting');
    expect(out).toContain('fbuf: drew 1024x768');
    const shot = path.join(tmp, 'qemu.jpg');
    const s = await snapshot(port, shot);
    expect(s.exitCode, s.all).toBe(0);
    const img = readJpeg(shot);
    expect([img.width, img.height]).toEqual([1024, 768]);
    expect(patternErrors(img)).toEqual([]);
    const c = await rfbConnect(port);
    c.sock.write(Buffer.from([2, 0, 0, 1, 0xff, 0xff, 0xfe, 0xfe])); // SetEncodings: QEMU ExtendedKeyEvent
    await new Promise((r) => setTimeout(r, 300));
    c.sock.write(KEY_EVENTS);
    await until('kbd: 9c');
    const bytes = [...out.matchAll(/kbd: ([0-9a-f]{2})/g)].map((m) => m[1]);
    expect(bytes).toEqual(['1e', '9e', 'e0', '1c', 'e0', '9c']);
    c.sock.destroy();
    qemu.stdin!.write('q');
    expect((await qemu).exitCode, out).toBe(33);
    expect(out).toMatch(/fbuf: interrupts: keyboard [1-9]\d*, mouse \d+/);
  });

  it.skipIf(VGA_FONT_MISSING !== undefined)('vga=on: the text the guest writes to 0xB8000 is drawn with the VGA font, over VNC and in --screenshot', async () => {
    const port = await freePort();
    const { run, until } = start(romWithMode(tmp), `tcp=127.0.0.1:${port},vga=on`);
    await until('fbuf: waiting');
    // bhyvectl --screenshot: lossless, so every pixel of the text row must match the font.
    const png = path.join(tmp, 'vga.png');
    const ctl = await execa(BHYVECTL, [`--vm=${run.name}`, `--screenshot=${png}`], { reject: false, env: run.env, stdin: 'ignore' });
    expect(ctl.exitCode, ctl.stderr).toBe(0);
    const pic = PNG.sync.read(fs.readFileSync(png));
    expect([pic.width, pic.height]).toEqual([720, 400]);
    const rgbAt = (x: number, y: number): number => { const p = (y * 720 + x) * 4; return (pic.data[p] << 16) | (pic.data[p + 1] << 8) | pic.data[p + 2]; };
    expect(textRowErrors((x, y) => rgbAt(x, y) === 0xffffff, (x, y) => rgbAt(x, y) === 0x0000a8)).toEqual([]);
    // vncsnapshot (JPEG): bright pixels where the glyphs are, blue around them.
    const shot = path.join(tmp, 'vga.jpg');
    const s = await snapshot(port, shot);
    expect(s.exitCode, s.all).toBe(0);
    const img = readJpeg(shot);
    expect([img.width, img.height]).toEqual([720, 400]);
    const at = (x: number, y: number): number[] => { const p = (y * 720 + x) * 3; return [img.rgb[p], img.rgb[p + 1], img.rgb[p + 2]]; };
    const bad = textRowErrors((x, y) => at(x, y)[0] > 128, (x, y) => at(x, y)[0] < 128 && at(x, y)[2] > 100);
    expect(bad.length, bad.slice(0, 5).join('; ')).toBeLessThan(VGA_LINE.length * 144 * 0.02);
    const st = parseStats((await execa(BHYVECTL, [`--vm=${run.name}`, '--get-stats'], { reject: false, env: run.env, stdin: 'ignore' })).stdout);
    expect(st.get('fbuf@pci.0.2.0 VGA shown')).toBe(1);
    expect(st.get('fbuf@pci.0.2.0 VGA memory writes')).toBe(2 * VGA_LINE.length);
    // The writes came through KVM's coalesced MMIO ring, not one exit each.
    expect(st.get('fbuf@pci.0.2.0 VGA memory writes coalesced by KVM')).toBe(1);
    expect(st.get('vm exits due to MMIO')).toBeLessThan(VGA_LINE.length);
    run.child.stdin!.write('q');
    expect((await run.child).exitCode, run.out).toBe(33);
  });

  it('wait: the guest starts only when a VNC client is in (a wrong password does not start it)', async () => {
    const port = await freePort();
    const { run, until } = start(romWithMode(tmp), `tcp=127.0.0.1:${port},w=640,h=480,wait,password=letmein`);
    // Up and listening, but no guest code has run.
    await new Promise((r) => setTimeout(r, 3000));
    expect(run.child.exitCode).toBeNull();
    expect(run.out).not.toContain('fbuf test');
    const wrong = await snapshot(port, path.join(tmp, 'wait-no.jpg'), vncPasswdFile(path.join(tmp, 'wait-bad.pw'), 'guess'));
    expect(wrong.exitCode).not.toBe(0);
    await new Promise((r) => setTimeout(r, 1000));
    expect(run.out).not.toContain('fbuf test');
    const shot = path.join(tmp, 'wait.jpg');
    const s = await snapshot(port, shot, vncPasswdFile(path.join(tmp, 'wait-good.pw'), 'letmein'));
    expect(s.exitCode, s.all).toBe(0);
    await until('fbuf: waiting');
    run.child.stdin!.write('q');
    expect((await run.child).exitCode, run.out).toBe(33);
  });
});
