// virtio-net.rom on our bhyve with a tap backend inside a network namespace
// the test creates (tap0 with 10.0.2.2/24, as the QEMU side-by-side test in
// test/unit/virtio-guest.test.ts sets it up): the guest (10.0.2.15) resolves
// the host by ARP and gets an ICMP echo reply, then exits 33. Also: the
// default MAC is bhyve's net_genmac, and a tap bhyve cannot open is one
// clear error with status 4.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import { execFileSync, spawnSync } from 'node:child_process';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { BHYVE, ROOT, bhyveArgs, installedCopy, kvmUnavailable, rom, runBhyve, vmName } from '../support/bhyve.js';
import { NO_TAP_NETNS } from '../support/probes.js';
import { MODE, romWith } from '../support/guest-rom.js';

const skip = kvmUnavailable()
  ?? (!fs.existsSync(rom('virtio-net')) ? 'virtio test guests are not built: run scripts/build-guests.sh' : NO_TAP_NETNS);
if (skip) console.warn(`skipping virtio-net integration tests: ${skip}`);

describe.skipIf(skip !== undefined)('virtio-net on bhyve with a tap in a network namespace', () => {
  const ns = `vnet${process.pid}`;
  const inNs = (cmd: string): string => execFileSync('ip', ['netns', 'exec', ns, 'sh', '-c', cmd], { encoding: 'utf8' });
  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', ns]);
    inNs('ip tuntap add dev tap0 mode tap && ip addr add 10.0.2.2/24 dev tap0 && ip link set tap0 up'
      + ' && sysctl -qw net.ipv6.conf.all.disable_ipv6=1');
  });
  afterAll(() => {
    spawnSync('ip', ['netns', 'del', ns]);
  });

  const runInNs = (args: string[], timeout = 60_000) => execa('ip', ['netns', 'exec', ns, BHYVE, ...args], {
    reject: false, timeout, stdin: 'ignore', stripFinalNewline: false,
    env: { BHYVE_RUNDIR: path.join(ROOT, 'build', 'run') },
  });

  it('ARP and ping with the host over tap0; default MAC from net_genmac', async () => {
    fs.mkdirSync(path.join(ROOT, 'build', 'run'), { recursive: true });
    const name = vmName('vnet');
    const r = await runInNs(bhyveArgs(rom('virtio-net'), name, { extra: ['-s', '3,virtio-net,tap0'] }));
    const hostMac = inNs('cat /sys/class/net/tap0/address').trim();
    const d = createHash('md5').update(`3-0-${name}`).digest();
    const mac = ['00', 'a0', '98', ...[0, 1, 2].map((i) => d[i].toString(16).padStart(2, '0'))].join(':');
    expect(r.stdout, `${r.stdout}${r.stderr}`).toMatch(/pci 00:03\.0 1af4:10(00|41) class 020000 virtio-net\r\n/);
    expect(r.stdout).toContain(`virtio-net: mac ${mac}\r\n`);
    expect(r.stdout).toContain(`virtio-net: 10.0.2.2 is at ${hostMac}\r\n`);
    expect(r.stdout).toContain('virtio-net: ping reply from 10.0.2.2 OK\r\n');
    expect(r.exitCode).toBe(33);
  });

  // iothread_tx=switch with an MSI-X driver: the transmit notifies exit
  // and would be forwarded to the thread once it had the queue.
  for (const [label, opts, mode] of [['', '', 0], [', iothread_tx=switch, MSI-X', ',iothread_tx=switch', MODE.MSIX]] as const) {
    it(`an I/O thread whose bundle cannot load: the device thread serves the queues (ARP and ping)${label}`, async () => {
      // What an unreadable koffi.node or a missing file does: the worker's
      // bundle throws while loader.cjs loads it, before any code of ours can
      // ring the device thread; the guest's notifies go to the ioeventfd.
      const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bhyve-netload-'));
      try {
        const { bhyve, rundir } = installedCopy(tmp, 'net-iothread-worker');
        const image = mode === 0 ? rom('virtio-net') : romWith(tmp, 'virtio-net', mode);
        const r = await execa('ip', ['netns', 'exec', ns, bhyve,
          ...bhyveArgs(image, vmName('vnetlf'), { extra: ['-s', `3,virtio-net,tap0,iothread=true${opts}`] })], {
          reject: false, timeout: 60_000, stdin: 'ignore', env: { BHYVE_RUNDIR: rundir },
        });
        expect(r.stdout, `${r.stdout}${r.stderr}`).toContain('virtio-net: ping reply from 10.0.2.2 OK');
        expect(r.exitCode).toBe(33);
        expect(r.stderr).toMatch(/virtio-net: I\/O thread could not start \(net-iothread-worker: could not load: cannot load koffi\.node: EACCES\)/);
      } finally {
        fs.rmSync(tmp, { recursive: true, force: true });
      }
    });
  }

  it('mac= and a /dev/ path backend; a tap created by bhyve goes away with it', async () => {
    fs.mkdirSync(path.join(ROOT, 'build', 'run'), { recursive: true });
    const child = execa('ip', ['netns', 'exec', ns, BHYVE, ...bhyveArgs(rom('virtio-net'), vmName('vnet'), {
      extra: ['-s', '5,virtio-net,/dev/tap9,mac=52:54:00:12:34:56,mtu=1400'],
    })], { reject: false, timeout: 60_000, stdin: 'ignore', stripFinalNewline: false, env: { BHYVE_RUNDIR: path.join(ROOT, 'build', 'run') } });
    let out = '';
    child.stdout!.on('data', (b: Buffer) => { out += b.toString('latin1'); });
    const end = Date.now() + 30_000;
    while (!out.includes('virtio-net: mtu') && Date.now() < end && child.exitCode === null) await new Promise((r) => setTimeout(r, 50));
    // tap9 is down and unaddressed: the guest would wait for ARP replies in
    // vain; while it does, bhyve's tap is there, then SIGTERM ends bhyve
    // (128 + 15: the guest never enabled ACPI).
    const during = inNs('ip -o link show | grep -c tap9 || true').trim();
    child.kill('SIGTERM');
    const r = await child;
    expect(out, `${out}${r.stderr}`).toContain('virtio-net: mac 52:54:00:12:34:56\r\n');
    expect(out).toContain('virtio-net: mtu 1400\r\n');
    const m = out.match(/device features ([0-9a-f]+)/);
    expect(m).not.toBeNull();
    const f = BigInt(`0x${m![1]}`);
    for (const bit of [3n, 5n, 15n, 16n, 32n]) expect((f >> bit) & 1n, `feature bit ${bit}`).toBe(1n);
    expect(during).toBe('1');
    expect(r.exitCode).toBe(143);
    expect(inNs('ip -o link show | grep -c tap9 || true').trim()).toBe('0');
  }, 60_000);

  it('an unsupported backend or a bad MAC is one line and status 4', async () => {
    const a = await runBhyve(bhyveArgs(rom('virtio-net'), vmName('vnet'), { extra: ['-s', '3,virtio-net,netgraph,path=a:,peerhook=b'] }));
    expect(a.exitCode).toBe(4);
    expect(a.stderr.trim().split('\n').filter((l) => !l.includes('warning'))).toEqual([
      "bhyve: virtio-net at pci slot 0:3:0: net backend 'netgraph': netgraph is not available on Linux (use a tap interface, tapN, or slirp)",
    ]);
    const b = await runBhyve(bhyveArgs(rom('virtio-net'), vmName('vnet'), { extra: ['-s', '3,virtio-net,mac=01:02:03:04:05:06'] }));
    expect(b.exitCode).toBe(4);
    expect(b.stderr).toMatch(/virtio-net at pci slot 0:3:0: Invalid MAC 01:02:03:04:05:06/);
  });
});
