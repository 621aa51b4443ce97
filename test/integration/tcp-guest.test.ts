// tcp.rom (test/guests/tcp/: Debian's lwIP 2.1.3 in a ring-3 guest over
// virtio-net) on our bhyve (-s virtio-net,tap0) and on QEMU (-netdev tap,
// virtio-net-pci), each on a tap with 10.0.2.2/24 in a network namespace
// the test creates, against test/guests/tcp/host-peer.mjs there: the guest
// sends 4 MiB of its pattern to 10.0.2.2:5001 and receives 4 MiB from
// 10.0.2.2:5002. Both ends' CRC-32s must equal the pattern's, both ways.
// Polling, and MSI-X (the guest halts when idle and is woken by receive
// interrupts, as Linux's NAPI: receive interrupts on only while idle).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BHYVE, ROOT, bhyveArgs, kvmUnavailable, rom, vmName } from '../support/bhyve.js';
import { HAVE_QEMU, MODE, romWith, runQemu } from '../support/guest-rom.js';
import { NO_TAP_NETNS } from '../support/probes.js';
import { patternCrc } from '../guests/tcp/host-peer.mjs';

const KIB = 4096;
const BYTES = KIB * 1024;
const PEER = path.join(ROOT, 'test/guests/tcp/host-peer.mjs');

const skip = kvmUnavailable()
  ?? (!fs.existsSync(rom('tcp')) ? 'tcp.rom is not built: install liblwip0 and liblwip-dev and run scripts/build-guests.sh' : NO_TAP_NETNS);
if (skip) console.warn(`skipping tcp.rom (lwIP) tests: ${skip}`);

interface PeerReport { port: number; bytes: number; crc?: string; expected?: string; error?: string }

describe.skipIf(skip !== undefined)('tcp.rom: TCP with lwIP over virtio-net and a tap, bhyve and QEMU', () => {
  const ns = `vtcp${process.pid}`;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tcp-guest-'));
  let peer: ChildProcess;
  let reports: PeerReport[] = [];
  const expected = (patternCrc(BYTES) >>> 0).toString(16).padStart(8, '0');

  beforeAll(async () => {
    execFileSync('ip', ['netns', 'add', ns]);
    execFileSync('ip', ['netns', 'exec', ns, 'sh', '-c', 'ip tuntap add dev tap0 mode tap && ip addr add 10.0.2.2/24 dev tap0'
      + ' && ip link set tap0 up && ip link set lo up && sysctl -qw net.ipv6.conf.all.disable_ipv6=1']);
    peer = spawn('ip', ['netns', 'exec', ns, process.execPath, PEER, '--bytes', String(BYTES), '--crc'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let buf = '';
    await new Promise<void>((resolve, reject) => {
      peer.on('exit', (c) => reject(new Error(`host-peer.mjs exited with ${c}`)));
      peer.stdout!.on('data', (b: Buffer) => {
        buf += b.toString();
        let k;
        while ((k = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, k);
          buf = buf.slice(k + 1);
          if (line === 'ready') resolve();
          else reports.push(JSON.parse(line) as PeerReport);
        }
      });
    });
  });
  afterAll(() => {
    peer?.kill();
    spawnSync('ip', ['netns', 'del', ns]);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  /** The peer's reports of both connections (they may trail the VMM's exit). */
  async function peerReports(): Promise<void> {
    for (let i = 0; i < 100 && reports.length < 2; i++) await new Promise((r) => setTimeout(r, 50));
  }

  /** The guest's two transfers against the peer's reports of them. */
  function check(status: number, out: string, mode: number): void {
    expect(out, out).toContain(`tcp test: lwIP 2.1.3 (liblwip.so.0 at 1000000), 4096 KiB, send, receive, CRC, ${mode === MODE.MSIX ? 'msix' : 'poll'}`);
    expect(status, out).toBe(33);
    const sent = out.match(/tcp: sent (\d+) bytes in \d+ cycles, crc ([0-9a-f]{8})/);
    const got = out.match(/tcp: received (\d+) bytes in \d+ cycles, crc ([0-9a-f]{8})/);
    expect(sent, out).not.toBeNull();
    expect(got, out).not.toBeNull();
    const sink = reports.find((r) => r.port === 5001);
    const source = reports.find((r) => r.port === 5002);
    // guest -> host: what the host received is the pattern, as the guest sent it
    expect(sink).toMatchObject({ bytes: BYTES, crc: expected, expected });
    expect(Number(sent![1])).toBe(BYTES);
    expect(sent![2]).toBe(expected);
    // host -> guest: what the guest received is what the host sent
    expect(source).toMatchObject({ bytes: BYTES, crc: expected });
    expect(Number(got![1])).toBe(BYTES);
    expect(got![2]).toBe(expected);
    if (mode === MODE.MSIX) expect(out).toMatch(/tcp: interrupts: msix rx vector [0-9a-f]+ [1-9]\d*, \d+ halts/);
    else expect(out).not.toContain('tcp: interrupts');
    expect(out).toContain('tcp: OK');
  }

  // iothread_tx=switch: the transmit queue changes hands between the exit
  // and the I/O thread when the stream turns round (MSI-X: the thread's
  // while the guest sends; polling: while it receives); false keeps it on
  // the exit throughout. The default (poll) is switch for the polling
  // guest (no interrupt can reach it: INTx disabled, no MSI or MSI-X) and
  // false for the MSI-X one.
  for (const [label, mode, opts] of [
    ['polling', MODE.POLL, ''], ['MSI-X', MODE.MSIX, ''],
    ['polling', MODE.POLL, ',iothread_tx=false'], ['MSI-X', MODE.MSIX, ',iothread_tx=switch'],
  ] as const) {
    it(`bhyve: -s virtio-net,tap0${opts}, ${label}`, async () => {
      reports = [];
      const rundir = path.join(ROOT, 'build', 'run');
      fs.mkdirSync(rundir, { recursive: true, mode: 0o700 });
      const args = bhyveArgs(romWith(tmp, 'tcp', mode, KIB), vmName('tcp'), { mem: '128M', extra: ['-s', `3,virtio-net,tap0${opts}`] });
      const r = await execa('ip', ['netns', 'exec', ns, BHYVE, ...args], {
        reject: false, timeout: 120_000, stdin: 'ignore', encoding: 'latin1', env: { BHYVE_RUNDIR: rundir },
      });
      await peerReports();
      check(r.exitCode ?? -1, `${r.stdout}${r.stderr}`, mode);
    }, 150_000);

    // QEMU once per guest mode.
    if (opts === '') {
      it.skipIf(!HAVE_QEMU)(`QEMU: -netdev tap -device virtio-net-pci, ${label}`, async () => {
        reports = [];
        const r = await runQemu(romWith(tmp, 'tcp', mode, KIB),
          ['-netdev', 'tap,id=n0,ifname=tap0,script=no,downscript=no', '-device', 'virtio-net-pci,netdev=n0,disable-legacy=on'],
          ['ip', 'netns', 'exec', ns], 120_000);
        await peerReports();
        check(r.status, r.out, mode);
      }, 150_000);
    }
  }
});
