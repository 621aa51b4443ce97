// uart.rom (test/guests/uart/uart.c) drives a PCI 16550 as an OS does:
// finds it by class 07/00, programs it (divisor, FIFO, scratch, loopback),
// then echoes what the host sends on the port, by polling and by INTx
// (bytes taken and sent only after an interrupt). The same ROM runs on our
// bhyve (-s 5,uart,tcp=...) and on QEMU (-device pci-serial on a TCP
// chardev); the host sends a known buffer and must get it back byte for
// byte, and both guests print the same CRC.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BHYVE, GUESTS, bhyveArgs, kvmUnavailable, runBhyve, vmName } from '../support/bhyve.js';
import { HAVE_QEMU, MODE, qemuArgs, romWith, runInteractive, stat } from '../support/guest-rom.js';

const skip = kvmUnavailable() ?? (fs.existsSync(path.join(GUESTS, 'uart.rom')) ? undefined : 'uart.rom is not built: run scripts/build-guests.sh');
if (skip) console.warn(`skipping PCI uart guest tests: ${skip}`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pci-uart-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const N = 4096;
const DATA = Buffer.alloc(N);
for (let i = 0; i < N; i++) DATA[i] = (i * 7 + 3) & 0xff;
const CRC = 'uart: echoed 4096 bytes, crc 5e4e1995';

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

interface EchoRun { status: number; out: string; echoed: Buffer; stats: Map<string, number> }

/** Runs argv; at the guest's "ready to echo" connects to the port's TCP
 * backend, sends DATA and collects the echo (runInteractive). */
async function runEcho(argv: string[], port: number, vm?: string): Promise<EchoRun> {
  let echoed = Buffer.alloc(0);
  const r = await runInteractive(argv, {
    ready: 'ready to echo', vm,
    whenReady: () => new Promise<void>((resolve) => {
      const sock = net.connect(port, '127.0.0.1');
      sock.on('error', () => resolve());
      sock.on('data', (b: Buffer) => { echoed = Buffer.concat([echoed, b]); if (echoed.length >= N) { sock.destroy(); resolve(); } });
      sock.on('close', () => resolve());
      sock.on('connect', () => sock.write(DATA));
    }),
  });
  return { ...r, echoed };
}

describe.skipIf(skip !== undefined)('uart.rom on bhyve and QEMU', () => {
  for (const [label, mode] of [['polling', MODE.POLL], ['INTx', MODE.INTX]] as const) {
    it(`bhyve (-s 5,uart,tcp=...), ${label}`, async () => {
      const port = await freePort();
      const vm = vmName(`uart-${label}`);
      const r = await runEcho([BHYVE, ...bhyveArgs(romWith(tmp, 'uart', mode | MODE.HOLD), vm, {
        extra: ['-s', `5,uart,tcp=127.0.0.1:${port}`],
      })], port, vm);
      expect(r.status, r.out).toBe(33);
      expect(r.out).toContain('uart: 00:05.0 131f:2000 class 070000, INTA');
      expect(r.out).toContain('uart: 115200 8N1, FIFO on, scratch and loopback OK');
      expect(r.echoed.equals(DATA), r.out).toBe(true);
      expect(r.out).toContain(CRC);
      const intx = stat(r.stats, 'uart@pci.0.5.0', 'intx assertions');
      if (mode === MODE.INTX) {
        expect(r.out).toMatch(/uart: interrupts: intx vector [0-9a-f]+ [1-9]\d* /);
        expect(r.out).toContain('from the MP table');
        expect(intx).toBeGreaterThan(1);
      } else {
        expect(intx).toBe(0);
      }
    }, 180_000);

    it.skipIf(!HAVE_QEMU)(`QEMU (-device pci-serial), ${label}`, async () => {
      const port = await freePort();
      const r = await runEcho(['qemu-system-x86_64', ...qemuArgs(romWith(tmp, 'uart', mode), [
        '-chardev', `socket,id=c0,host=127.0.0.1,port=${port},server=on,wait=off`, '-device', 'pci-serial,chardev=c0',
      ])], port);
      expect(r.status, r.out).toBe(33);
      expect(r.out).toMatch(/uart: 00:[0-9a-f]{2}\.0 1b36:0002 class 0700/);
      expect(r.echoed.equals(DATA), r.out).toBe(true);
      expect(r.out).toContain(CRC);
      if (mode === MODE.INTX) expect(r.out).toMatch(/uart: interrupts: intx vector [0-9a-f]+ [1-9]\d* /);
    }, 180_000);
  }

  it('a missing backend ends the start with one line naming the slot', async () => {
    const r = await runBhyve(bhyveArgs(path.join(GUESTS, 'uart.rom'), vmName('uart-bad'), {
      extra: ['-s', '5,uart,/nonexistent/tty'],
    }), { timeout: 60_000 });
    expect(r.exitCode).toBe(4);
    const lines = String(r.stderr).trim().split('\n').filter((l) => !l.includes('warning:'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("uart at pci slot 0:5:0: uart backend '/nonexistent/tty': no such device");
  }, 90_000);
});
