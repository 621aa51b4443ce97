// e1000.rom (test/guests/e1000/e1000.c) drives an 82545EM as Linux's e1000
// does, taking its interrupts by INTx (LSC through ICS, then RXT0): the same
// ROM on our bhyve (-s e1000) and on QEMU (-device e1000, QEMU's 82540EM)
//   - over a tap in a network namespace the test makes (10.0.2.2/24 on
//     the host side): ARP and an ICMP echo with the host;
//   - over user-mode networking (bhyve's slirp backend, QEMU's -netdev
//     user): a DHCP lease, a TCP connection to a port of this host
//     (10.0.2.2 inside) that exchanges a line each way, and a connection
//     from this host through hostfwd to the guest's port 8080.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BHYVE, GUESTS, ROOT, bhyveArgs, kvmUnavailable, runBhyve, vmName } from '../support/bhyve.js';
import { HAVE_QEMU, MODE, qemuArgs, romWith } from '../support/guest-rom.js';
import { NO_TAP_NETNS } from '../support/probes.js';

const built = fs.existsSync(path.join(GUESTS, 'e1000.rom')) ? undefined : 'e1000.rom is not built: run scripts/build-guests.sh';
const skip = kvmUnavailable() ?? built;
const haveSlirp = ['/usr/lib/x86_64-linux-gnu/libslirp.so.0', '/lib/x86_64-linux-gnu/libslirp.so.0'].some((p) => fs.existsSync(p));
const skipSlirp = skip ?? (haveSlirp ? undefined : 'libslirp0 is not installed (apt-get install libslirp0)');
const skipTap = skip ?? NO_TAP_NETNS;
for (const [what, why] of [['e1000 guest', skip], ['e1000 over slirp', skipSlirp], ['e1000 over a tap', skipTap]]) {
  if (why) console.warn(`skipping ${what} tests: ${why}`);
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'e1000-guest-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe.skipIf(skipTap !== undefined)('e1000.rom over a tap in a network namespace', () => {
  const ns = `e1k${process.pid}`;
  const inNs = (cmd: string): string => execFileSync('ip', ['netns', 'exec', ns, 'sh', '-c', cmd], { encoding: 'utf8' });
  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', ns]);
    inNs('ip tuntap add dev tap0 mode tap && ip addr add 10.0.2.2/24 dev tap0 && ip link set tap0 up'
      + ' && sysctl -qw net.ipv6.conf.all.disable_ipv6=1');
  });
  afterAll(() => { spawnSync('ip', ['netns', 'del', ns]); });

  const expectPing = (out: string, hostMac: string): void => {
    expect(out).toMatch(/e1000: 100[ef], eeprom checksum OK, mac /);
    expect(out).toContain('e1000: phy id 0141, link up\r\n');
    expect(out).toMatch(/e1000: LSC interrupt, ICR [0-9a-f]*[4-7]\r\n/);
    expect(out).toContain(`e1000: 10.0.2.2 is at ${hostMac}\r\n`);
    expect(out).toContain('e1000: ping reply from 10.0.2.2 OK\r\n');
    expect(out).toMatch(/e1000: interrupts: intx vector [0-9a-f]+ \d+ \(\d+ spurious\), causes [0-9a-f]*8[0-9a-f]\r\n/);
  };

  it('bhyve -s e1000,tap0: EEPROM MAC from net_genmac, LSC and RX interrupts by INTx, ARP and ping', async () => {
    fs.mkdirSync(path.join(ROOT, 'build', 'run'), { recursive: true, mode: 0o700 });
    const name = vmName('e1k');
    const r = await execa('ip', ['netns', 'exec', ns, BHYVE, ...bhyveArgs(romWith(tmp, 'e1000', MODE.INTX), name, { extra: ['-s', '3,e1000,tap0'] })], {
      reject: false, timeout: 90_000, stdin: 'ignore', stripFinalNewline: false, env: { BHYVE_RUNDIR: path.join(ROOT, 'build', 'run') },
    });
    const out = `${r.stdout}${r.stderr}`;
    expect(r.exitCode, out).toBe(33);
    expect(out).toContain('pci 00:03.0 8086:100f class 020000 ethernet');
    const d = createHash('md5').update(`3-0-${name}`).digest();
    const mac = ['00', 'a0', '98', ...[0, 1, 2].map((i) => d[i].toString(16).padStart(2, '0'))].join(':');
    expect(out).toContain(`e1000: 100f, eeprom checksum OK, mac ${mac}\r\n`);
    expectPing(out, inNs('cat /sys/class/net/tap0/address').trim());
  }, 120_000);

  it.skipIf(!HAVE_QEMU)('QEMU -device e1000 on the same tap: the same exchange', async () => {
    const r = await execa('ip', ['netns', 'exec', ns, 'qemu-system-x86_64', ...qemuArgs(romWith(tmp, 'e1000', MODE.INTX), [
      '-netdev', 'tap,id=n0,ifname=tap0,script=no,downscript=no', '-device', 'e1000,netdev=n0',
    ])], { reject: false, timeout: 90_000, stdin: 'ignore', encoding: 'latin1', stripFinalNewline: false });
    const out = `${r.stdout}${r.stderr}`;
    expect(r.exitCode, out).toBe(33);
    expectPing(out, inNs('cat /sys/class/net/tap0/address').trim());
  }, 120_000);
});

/** A port on 127.0.0.1 nobody listens on (for hostfwd). */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const p = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

/** The host side of the slirp exchange: a server the guest connects to
 * (reads a line, answers one), then a client of the guest's port 8080
 * through hostfwd, started once the guest says it listens. */
async function hostSide(run: (serverPort: number, fwdPort: number, onOutput: (s: string) => void) => Promise<{ status: number; out: string }>):
Promise<{ status: number; out: string; fromGuest: string; fwdReply: string }> {
  let fromGuest = '';
  const server = net.createServer((c) => {
    c.on('data', (b) => {
      fromGuest += b.toString();
      if (fromGuest.includes('\n')) c.end('hello from the host\n');
    });
    c.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const serverPort = (server.address() as net.AddressInfo).port;
  const fwdPort = await freePort();
  let fwdReply = '';
  let started = false;
  const onOutput = (s: string): void => {
    if (started || !s.includes('e1000: listening on 8080')) return;
    started = true;
    const c = net.connect(fwdPort, '127.0.0.1', () => c.write('ping through hostfwd\n'));
    c.on('data', (b) => { fwdReply += b.toString(); });
    c.on('error', () => undefined);
  };
  try {
    const r = await run(serverPort, fwdPort, onOutput);
    return { ...r, fromGuest, fwdReply };
  } finally {
    server.close();
  }
}

describe.skipIf(skipSlirp !== undefined)('e1000.rom over user-mode networking', () => {
  const expectSlirp = (r: { status: number; out: string; fromGuest: string; fwdReply: string }): void => {
    expect(r.status, r.out).toBe(33);
    expect(r.out).toContain('e1000: dhcp lease ip 10.0.2.15 router 10.0.2.2 dns 10.0.2.3\r\n');
    expect(r.out).toMatch(/e1000: tcp connected to 10\.0\.2\.2:\d+\r\n/);
    expect(r.out).toContain("e1000: tcp received 'hello from the host'\r\n");
    expect(r.out).toContain("e1000: tcp 8080 received 'ping through hostfwd'\r\n");
    expect(r.out).toContain('e1000: slirp OK\r\n');
    expect(r.fromGuest).toBe('hello from the e1000 guest\n');
    expect(r.fwdReply).toBe('e1000 guest got: ping through hostfwd\n');
  };

  it('bhyve -s e1000,slirp,open,hostfwd=...: DHCP, a TCP connection out to the host, one in through hostfwd (sandboxed)', async () => {
    const r = await hostSide(async (serverPort, fwdPort, onOutput) => {
      const name = vmName('e1ks');
      const child = runBhyve(bhyveArgs(romWith(tmp, 'e1000', MODE.INTX, 1 | (serverPort << 16)), name, {
        extra: ['-s', `3,e1000,slirp,open,hostfwd=tcp:127.0.0.1:${fwdPort}-:8080`],
      }), { timeout: 90_000 });
      let out = '';
      child.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); onOutput(out); });
      const res = await child;
      return { status: res.exitCode ?? -1, out: `${out}${res.stderr}` };
    });
    expectSlirp(r);
  }, 120_000);

  it.skipIf(!HAVE_QEMU)('QEMU -device e1000 with -netdev user,hostfwd=...: the same exchange', async () => {
    const r = await hostSide(async (serverPort, fwdPort, onOutput) => {
      const child = execa('qemu-system-x86_64', qemuArgs(romWith(tmp, 'e1000', MODE.INTX, 1 | (serverPort << 16)), [
        '-netdev', `user,id=n0,hostfwd=tcp:127.0.0.1:${fwdPort}-:8080`, '-device', 'e1000,netdev=n0',
      ]), { reject: false, timeout: 90_000, stdin: 'ignore', encoding: 'latin1', stripFinalNewline: false });
      let out = '';
      child.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); onOutput(out); });
      const res = await child;
      return { status: res.exitCode ?? -1, out: `${out}${res.stderr}` };
    });
    expectSlirp(r);
  }, 120_000);

  it('virtio-net on slirp (restricted, as by default): ARP and a ping of 10.0.2.2, answered by libslirp', async () => {
    const r = await runBhyve(bhyveArgs(path.join(GUESTS, 'virtio-net.rom'), vmName('vns'), { extra: ['-s', '3,virtio-net,slirp'] }), { timeout: 60_000 });
    expect(r.exitCode, `${r.stdout}${r.stderr}`).toBe(33);
    expect(r.stdout).toContain('virtio-net: 10.0.2.2 is at 52:55:0a:00:02:02\r\n');
    expect(r.stdout).toContain('virtio-net: ping reply from 10.0.2.2 OK\r\n');
  }, 90_000);

  it('a hostfwd port in use, or a malformed rule, is one line and status 4', async () => {
    const busy = net.createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
    const port = (busy.address() as net.AddressInfo).port;
    try {
      const a = await runBhyve(bhyveArgs(romWith(tmp, 'e1000', MODE.POLL, 1), vmName('e1ks'), {
        extra: ['-s', `3,e1000,slirp,hostfwd=tcp:127.0.0.1:${port}-:22`],
      }));
      expect(a.exitCode).toBe(4);
      expect(a.stderr.split('\n').filter((l) => l.startsWith('bhyve:') && !l.includes('warning'))).toEqual([
        `bhyve: e1000 at pci slot 0:3:0: net backend 'slirp': Unable to add hostfwd rule 'tcp:127.0.0.1:${port}-:22': Address already in use`,
      ]);
    } finally {
      busy.close();
    }
    const b = await runBhyve(bhyveArgs(romWith(tmp, 'e1000', MODE.POLL, 1), vmName('e1ks'), { extra: ['-s', '3,virtio-net,slirp,hostfwd=tcp:22'] }));
    expect(b.exitCode).toBe(4);
    expect(b.stderr).toContain("Unable to parse hostfwd rule 'tcp:22'");
  }, 60_000);
});
