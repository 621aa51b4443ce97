// xhci.rom (test/guests/xhci/xhci.c) drives an xHCI controller and the USB
// tablet behind it as an OS does (reset, port reset, slot, address,
// descriptors, HID report descriptor, a STALL and its recovery, the
// interrupt endpoint), then waits for pointer reports. The test moves the
// pointer as a VNC client (a small RFB client here, over the VNC server's
// unix socket) and checks each report the guest prints against the
// position sent, scaled to the tablet's 0..0x7fff. The same ROM runs on
// our bhyve (-s fbuf,unix=... -s xhci,tablet) and on QEMU (-device
// qemu-xhci -device usb-tablet -vnc unix:...; for MSI nec-usb-xhci, QEMU's
// same xHCI model with an MSI capability), by polling, by MSI and by INTx.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { BHYVE, GUESTS, ROOT, bhyveArgs, kvmUnavailable, vmName } from '../support/bhyve.js';
import { BHYVECTL, HAVE_QEMU, MODE, parseStats, qemuArgs, romWith } from '../support/guest-rom.js';

const skip = kvmUnavailable() ?? (fs.existsSync(path.join(GUESTS, 'xhci.rom')) ? undefined : 'xhci.rom is not built: run scripts/build-guests.sh');
if (skip) console.warn(`skipping xhci guest tests: ${skip}`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xhci-guest-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;

/** A minimal RFB 3.8 client: no authentication, shared session, pointer events. */
export class RfbPointer {
  width = 0;
  height = 0;
  private constructor(private readonly sock: net.Socket) {}

  static async connect(socketPath: string, timeoutMs = 30_000): Promise<RfbPointer> {
    const t0 = Date.now();
    let sock: net.Socket | undefined;
    while (!sock) {
      try {
        sock = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect(socketPath, () => resolve(s));
          s.once('error', reject);
        });
      } catch (e) {
        if (Date.now() - t0 > timeoutMs) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const c = new RfbPointer(sock);
    let buf = Buffer.alloc(0);
    let want: { n: number; resolve: (b: Buffer) => void } | undefined;
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (want && buf.length >= want.n) { const w = want; want = undefined; const out = buf.subarray(0, w.n); buf = buf.subarray(w.n); w.resolve(out); }
    });
    const read = (k: number) => new Promise<Buffer>((resolve) => {
      if (buf.length >= k) { const out = buf.subarray(0, k); buf = buf.subarray(k); resolve(out); } else want = { n: k, resolve };
    });
    const version = (await read(12)).toString('latin1');
    if (!version.startsWith('RFB 003.')) throw new Error(`not an RFB server: ${JSON.stringify(version)}`);
    sock.write('RFB 003.008\n');
    const count = (await read(1))[0];
    const types = await read(count);
    if (!types.includes(1)) throw new Error(`the server wants authentication (types ${[...types]})`);
    sock.write(Buffer.from([1]));
    if ((await read(4)).readUInt32BE(0) !== 0) throw new Error('security handshake failed');
    sock.write(Buffer.from([1])); // ClientInit: shared
    const init = await read(24);
    c.width = init.readUInt16BE(0);
    c.height = init.readUInt16BE(2);
    await read(init.readUInt32BE(20)); // the desktop name
    // SetEncodings: raw and the pointer-type-change pseudo-encoding (-257);
    // QEMU decides between absolute and relative pointer events on it.
    const enc = Buffer.alloc(12);
    enc[0] = 2;
    enc.writeUInt16BE(2, 2);
    enc.writeInt32BE(0, 4);
    enc.writeInt32BE(-257, 8);
    sock.write(enc);
    // Server messages (updates, bells) are read and dropped from here on.
    sock.on('data', () => { buf = Buffer.alloc(0); });
    return c;
  }

  pointer(buttons: number, x: number, y: number): void {
    const m = Buffer.alloc(6);
    m[0] = 5;
    m[1] = buttons;
    m.writeUInt16BE(x, 2);
    m.writeUInt16BE(y, 4);
    this.sock.write(m);
  }

  close(): void { this.sock.destroy(); }
}

interface Report { buttons: number; x: number; y: number; bytes: number; }
interface PointerRun { status: number; out: string; reports: Report[]; width: number; height: number; stats: Map<string, number>; latencyMs: number[]; }

/** The positions and RFB button masks sent; the tablet reports left 1, right 2, middle 4. */
const MOVES = [
  { buttons: 0, fx: 0.25, fy: 0.5, want: 0 },
  { buttons: 1, fx: 0.5, fy: 0.25, want: 1 },
  { buttons: 4, fx: 0.75, fy: 0.75, want: 2 },
];

async function waitFor(get: () => string, text: string | RegExp, ended: Promise<unknown>, ms = 90_000): Promise<void> {
  const t0 = Date.now();
  let done = false;
  void ended.then(() => { done = true; });
  while (!(typeof text === 'string' ? get().includes(text) : text.test(get()))) {
    if (done) throw new Error(`the guest ended before '${text}':\n${get()}`);
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for '${text}':\n${get()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Starts `argv`, waits for the guest's "ready", moves the VNC pointer
 * three times (each after the previous report), and collects the reports;
 * `held` runs while a MODE_HOLD guest waits at its end. */
export async function pointerRun(argv: string[], sock: string, o: { env?: Record<string, string>; held?: () => Promise<Map<string, number>> } = {}): Promise<PointerRun> {
  const child: ResultPromise = execa(argv[0], argv.slice(1), {
    reject: false, timeout: 180_000, stdin: 'pipe', env: o.env, encoding: 'latin1', stripFinalNewline: false,
  });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
  child.stderr!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
  const ended = (async () => { await child; })();
  const reports: Report[] = [];
  const latencyMs: number[] = [];
  let width = 0, height = 0;
  let stats = new Map<string, number>();
  try {
    await waitFor(() => out, 'xhci: ready for pointer events', ended);
    const vnc = await RfbPointer.connect(sock);
    width = vnc.width; height = vnc.height;
    for (const [i, m] of MOVES.entries()) {
      const t0 = process.hrtime.bigint();
      vnc.pointer(m.buttons, Math.round(m.fx * width), Math.round(m.fy * height));
      await waitFor(() => out, `xhci: report ${i + 1}:`, ended, 60_000);
      latencyMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    vnc.close();
    if (o.held) {
      await waitFor(() => out, 'hold: waiting', ended);
      stats = await o.held();
      child.stdin!.write('q');
    }
  } finally {
    if (!o.held) child.stdin!.end();
  }
  const r = await child;
  for (const m of out.matchAll(/xhci: report \d+: buttons ([0-9a-f]+) x (\d+) y (\d+) \((\d+) bytes\)/g)) {
    reports.push({ buttons: parseInt(m[1], 16), x: Number(m[2]), y: Number(m[3]), bytes: Number(m[4]) });
  }
  return { status: r.exitCode ?? -1, out, reports, width, height, stats, latencyMs };
}

/** Each report matches the move: buttons, and X/Y within a step of 0x8000 * x / width. */
function checkReports(r: PointerRun): void {
  expect(r.reports.length, r.out).toBe(3);
  for (const [i, m] of MOVES.entries()) {
    const rep = r.reports[i];
    const x = Math.round(m.fx * r.width), y = Math.round(m.fy * r.height);
    expect(rep.buttons & 7).toBe(m.want);
    expect(Math.abs(rep.x - (0x8000 * x) / r.width)).toBeLessThanOrEqual(0x8000 / r.width + 64);
    expect(Math.abs(rep.y - (0x8000 * y) / r.height)).toBeLessThanOrEqual(0x8000 / r.height + 64);
  }
}

function common(raw: string): void {
  // QEMU logs the unknown descriptor request on stderr, maybe inside a guest line.
  const out = raw.replace(/usb_desc_get_descriptor: [^\n]*\n/g, '');
  expect(out).toContain('xhci: protocol USB 3.0 on ports 1-4');
  expect(out).toContain('xhci: protocol USB 2.0 on ports 5-8');
  expect(out).toMatch(/xhci: slot \d+ addressed \(slot state 2, USB address \d+\)/);
  expect(out).toMatch(/report descriptor 74 bytes, endpoint 81 interrupt IN, 8 bytes/);
  expect(out).toContain('logical maximum 32767');
  expect(out).toContain('xhci: unknown descriptor STALLs; endpoint 0 back after Reset Endpoint + Set TR Dequeue');
  expect(out).toMatch(/xhci: endpoint 1 IN configured \(endpoint ID 3, interval \d+\), slot state 3/);
}

const XHCI = 'xhci@pci.0.4.0';

describe.skipIf(skip !== undefined)('xhci.rom: the USB tablet on bhyve and QEMU, moved over VNC', () => {
  for (const [label, mode] of [['polling', MODE.POLL], ['MSI', MODE.MSI], ['INTx', MODE.INTX]] as const) {
    it(`bhyve, ${label}`, async () => {
      const name = vmName(`xhci-${label}`);
      const sock = path.join(tmp, `b${n++}.sock`);
      const rundir = path.join(ROOT, 'build', 'run');
      fs.mkdirSync(rundir, { recursive: true, mode: 0o700 });
      const env = { BHYVE_RUNDIR: rundir };
      const args = bhyveArgs(romWith(tmp, 'xhci', mode | MODE.HOLD), name, {
        mem: '128M', extra: ['-s', `3,fbuf,unix=${sock},w=800,h=600`, '-s', '4,xhci,tablet'],
      });
      const held = async () => parseStats((await execa(BHYVECTL, [`--vm=${name}`, '--get-stats'], { reject: false, env, stdin: 'ignore' })).stdout);
      const r = await pointerRun([BHYVE, ...args], sock, { env, held });
      expect(r.status, r.out).toBe(33);
      common(r.out);
      expect(r.out).toContain('xhci: 8086:1e31 at 00:04.0, xHCI 1.00, 64 slots, 8 ports, 1 interrupters, 32-byte contexts');
      expect(r.out).toContain('xhci: port 1: connected, high speed, enabled after reset');
      expect(r.out).toContain('xhci: device: USB 3.00, vendor fb5d product 0001, max packet 8, 1 configuration(s)');
      expect(r.out).toContain("xhci: product 'HID Tablet'");
      expect(r.out).toContain('xhci: report descriptor crc 60649f6d');
      expect([r.width, r.height]).toEqual([800, 600]);
      checkReports(r);
      for (const rep of r.reports) expect(rep.bytes).toBe(6);
      expect(r.stats.get(`${XHCI} tablet reports`)).toBe(3);
      expect(r.stats.get(`${XHCI} hostSystemErrors`)).toBe(0);
      expect(r.stats.get(`${XHCI} trbErrors`)).toBe(0);
      expect(r.stats.get(`${XHCI} stalls`)).toBe(1);
      if (mode === MODE.MSI) {
        expect(r.stats.get(`${XHCI} msi messages`)).toBeGreaterThan(0);
        expect(r.out).toMatch(/xhci: interrupts: msi vector [0-9a-f]+ [1-9]\d*, \d+ events/);
      }
      if (mode === MODE.INTX) expect(r.stats.get(`${XHCI} intx assertions`)).toBeGreaterThan(0);
    }, 240_000);

    it.skipIf(!HAVE_QEMU)(`QEMU (-device ${mode === MODE.MSI ? 'nec-usb-xhci,msi=on,msix=off' : 'qemu-xhci'} -device usb-tablet), ${label}`, async () => {
      const sock = path.join(tmp, `q${n++}.sock`);
      const ctrl = mode === MODE.MSI ? 'nec-usb-xhci,msi=on,msix=off' : 'qemu-xhci';
      const argv = ['qemu-system-x86_64', ...qemuArgs(romWith(tmp, 'xhci', mode), ['-device', ctrl, '-device', 'usb-tablet', '-vnc', `unix:${sock}`])];
      const r = await pointerRun(argv, sock);
      expect(r.status, r.out).toBe(33);
      common(r.out);
      expect(r.out).toContain("xhci: product 'QEMU USB Tablet'");
      checkReports(r);
    }, 240_000);
  }
});
