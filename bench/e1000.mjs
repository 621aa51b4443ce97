#!/usr/bin/env node
// e1000 and slirp throughput against QEMU's e1000 and user networking, the
// same guest on both (needs root, iproute2 and /dev/net/tun: everything
// runs in a network namespace this script creates, with tap0 10.0.2.2/24
// and its own loopback).
//
// e1000.rom in bench mode (parameter 2 | N << 8, test/guests/e1000/
// e1000.c): after ARP for 10.0.2.2 the guest (ring 3, polling, 32-entry
// ring, TDT written every 8 frames as Linux's xmit_more does) sends N UDP
// frames of 1514 bytes to 10.0.2.2:9.
//   tap    bhyve -s 3,e1000,tap0 / QEMU -netdev tap -device e1000: the host
//          counts the frames on tap0 (statistics/rx_packets) and times them
//          by polling the counter every ms from its first to its last
//          change;
//   slirp  bhyve -s 3,e1000,slirp,open / QEMU -netdev user -device e1000:
//          libslirp hands each datagram to a UDP socket of the host, which
//          this script binds on 127.0.0.1:9 and times from the first
//          datagram to the last.
// The guest's own TSC figure (first descriptor to the last one done) is
// printed beside. Runs interleaved, median of --reps.
// Usage: sudo node bench/e1000.mjs [--frames 60000] [--slirp-frames 20000] [--reps 3] [--no-write]
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { buildGuests, hostInfo, mdTable, median, patchedRom, writeSection, ROOT } from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    frames: { type: 'string', default: '60000' },
    'slirp-frames': { type: 'string', default: '20000' },
    reps: { type: 'string', default: '3' },
    inner: { type: 'boolean', default: false },
    paths: { type: 'string', default: 'tap,slirp' },
    'no-write': { type: 'boolean', default: false },
  },
});
const NOTE = `
Where user networking stands: each frame from the guest crosses a packet
socket to the slirp thread (bhyve's helper process does the same), which
takes it with a recv and a slirp_input through koffi while frames keep
coming (libslirp's own poll set gets a turn every 2 ms); QEMU calls
slirp_input from its device model in C, on the thread that runs the NIC.
On this 2-CPU host the vCPU thread, the slirp thread and QEMU's peers
compete for the same cores. Calling libslirp from the device thread would
save the socket hop, but libslirp's callbacks (send_packet and the poll
callbacks) are JavaScript functions registered on the slirp thread, and
koffi runs a callback that arrives on another thread by queueing it to the
registering thread's event loop, which a thread blocked in poll(2) or
KVM_RUN never turns: so libslirp stays on one thread of its own. The tap
figures for QEMU: its guest finishes its descriptors well before the frames
reach the tap (its host count runs behind its guest TSC figure).
`;
const FRAMES = Number(opt.frames);
const SFRAMES = Number(opt['slirp-frames']);
const REPS = Number(opt.reps);

if (!opt.inner) {
  if (process.getuid?.() !== 0) { console.error('e1000 bench: needs root (network namespace and tap)'); process.exit(4); }
  execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { stdio: 'inherit', cwd: ROOT });
  await buildGuests();
  const ns = `e1kbench${process.pid}`;
  const cleanup = () => spawnSync('ip', ['netns', 'del', ns]);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => { cleanup(); process.exit(4); });
  execFileSync('ip', ['netns', 'add', ns]);
  let res;
  try {
    execFileSync('ip', ['netns', 'exec', ns, 'sh', '-c', 'ip tuntap add dev tap0 mode tap && ip addr add 10.0.2.2/24 dev tap0'
      + ' && ip link set tap0 up && ip link set lo up && sysctl -qw net.ipv6.conf.all.disable_ipv6=1']);
    const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, fileURLToPath(import.meta.url), '--inner',
      '--frames', String(FRAMES), '--slirp-frames', String(SFRAMES), '--reps', String(REPS), '--paths', opt.paths],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 30 * 60_000, killSignal: 'SIGKILL' });
    if (r.status !== 0) { console.error(r.stdout, r.error ?? ''); process.exitCode = 4; } else res = JSON.parse(r.stdout.trim().split('\n').pop());
  } finally {
    cleanup();
  }
  if (!res) process.exit(4);
  const host = await hostInfo();
  const f0 = (v) => (v === null || v === undefined ? '–' : v.toFixed(0));
  const f1 = (v) => (v === null || v === undefined ? '–' : v.toFixed(1));
  const rows = [];
  const ratio = (a, b) => (a && b ? `${(a / b).toFixed(2)}x` : '–');
  for (const path of opt.paths.split(',')) {
    const b = res[path].bhyve;
    const q = res[path].qemu;
    const label = path === 'tap' ? 'e1000 on a tap' : 'e1000 on user networking (slirp / -netdev user)';
    rows.push([`${label}: bhyve-kvm`, f0(b.fps), f1(b.mbs), f0(b.guestFps), `${(100 * b.frac).toFixed(0)}%`]);
    rows.push([`${label}: QEMU`, f0(q.fps), f1(q.mbs), f0(q.guestFps), `${(100 * q.frac).toFixed(0)}%`]);
    rows.push([`${label}: ratio bhyve-kvm / QEMU`, ratio(b.fps, q.fps), ratio(b.mbs, q.mbs), ratio(b.guestFps, q.guestFps), '']);
  }
  const table = mdTable(['guest TX, 1514-byte UDP frames', 'frames/s (host count)', 'MB/s', 'frames/s (guest TSC)', 'frames arrived'], rows);
  console.log(table);
  const body = `## e1000 and slirp throughput (bench/e1000.mjs)

Host: ${host}

\`sudo node bench/e1000.mjs\` — e1000.rom in bench mode, the same ROM on both
VMMs, each under \`ip netns exec\` in a namespace the script creates. The
guest driver (ring 3, polling, a 32-entry ring of legacy descriptors,
TDT written every 8 frames as Linux's xmit_more does) sends ${FRAMES} (tap) or
${SFRAMES} (user networking) UDP frames of 1514 bytes to 10.0.2.2:9 after
ARP.

- tap: bhyve-kvm \`-s 3,e1000,tap0\`, QEMU \`-netdev tap,ifname=tap0,...
  -device e1000\`; the host counts the frames on tap0 and times them by
  polling the counter every ms from its first to its last change.
- user networking: bhyve-kvm \`-s 3,e1000,slirp,open\` (libslirp on its own
  thread), QEMU \`-netdev user -device e1000\` (the same libslirp, in its
  main loop); libslirp sends each datagram from a host UDP socket to
  127.0.0.1:9, where the script counts and times them. Datagrams the
  backend cannot take in time are dropped (last column).

The guest's TSC figure (first descriptor queued to the last one done) is the
cross-check. Median of ${REPS} interleaved runs; the host is shared and has 2
CPUs, so single runs vary.

${table}
${NOTE}`;
  if (!opt['no-write']) console.log(`written to ${writeSection('e1000', body)}`);
  process.exit(0);
}

// ---------------------------------------------------------------- inner
const BHYVE = `${ROOT}/bin/bhyve`;
const romFor = (n) => patchedRom('e1000', (2 | (n << 8)) >>> 0);
function argv(vmm, path, romPath) {
  if (vmm === 'bhyve') {
    return [process.execPath, [BHYVE, '-c', '1', '-m', '256M', '-s', '0,hostbridge', '-s', '31,lpc',
      '-s', `3,e1000,${path === 'tap' ? 'tap0' : 'slirp,open'}`, '-l', 'com1,stdio', '-l', 'pc-testdev', '-l', `bootrom,${romPath}`,
      '-o', 'x86.require_ept_rvi=false', `e1kbench${process.pid}`]];
  }
  return ['qemu-system-x86_64', ['-accel', 'kvm', '-machine', 'pc', '-m', '256M', '-smp', '1', '-nodefaults', '-display', 'none',
    '-monitor', 'none', '-serial', 'stdio', '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-no-reboot', '-bios', romPath,
    '-netdev', path === 'tap' ? 'tap,id=n0,ifname=tap0,script=no,downscript=no' : 'user,id=n0', '-device', 'e1000,netdev=n0']];
}

const tapPackets = () => Number(readFileSync('/sys/class/net/tap0/statistics/rx_packets', 'utf8'));

async function runOnce(vmm, path) {
  const n = path === 'tap' ? FRAMES : SFRAMES;
  const [cmd, args] = argv(vmm, path, romFor(n));
  let count = 0;
  let first = 0n;
  let last = 0n;
  let sock;
  let timer;
  if (path === 'slirp') {
    sock = dgram.createSocket('udp4');
    sock.on('message', () => { const t = process.hrtime.bigint(); if (!count) first = t; last = t; count++; });
    await new Promise((r) => sock.bind(9, '127.0.0.1', r));
    sock.setRecvBufferSize(32 << 20);
  } else {
    // The guest's ARP comes first, then 1-2 s of TSC calibration: the
    // clock starts at the first frame after the ARP.
    const base = tapPackets() + 1;
    let seen = base;
    timer = setInterval(() => {
      const p = tapPackets();
      if (p > seen) { const t = process.hrtime.bigint(); if (seen === base) first = t; last = t; seen = p; count = p - base; }
    }, 1);
  }
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, BHYVE_RUNDIR: `${ROOT}/build/run` } });
  let out = '';
  child.stdout.on('data', (b) => { out += b.toString('latin1'); });
  child.stderr.on('data', (b) => { out += b.toString('latin1'); });
  const status = await new Promise((r) => { const k = setTimeout(() => child.kill('SIGKILL'), 180_000); child.on('close', (c) => { clearTimeout(k); r(c); }); });
  await new Promise((r) => setTimeout(r, 200));
  if (timer) clearInterval(timer);
  sock?.close();
  if (vmm === 'bhyve') spawnSync(`${ROOT}/bin/bhyvectl`, ['--destroy', `--vm=e1kbench${process.pid}`]);
  const hz = Number(/bench: tsc_hz (\d+)/.exec(out)?.[1]);
  const cyc = Number(/bench: tx \d+ frames \d+ bytes (\d+) cycles/.exec(out)?.[1]);
  if (status !== 33 || !hz || !cyc) throw new Error(`${vmm} ${path}: status ${status}\n${out.slice(-2000)}`);
  // Frames the tap counted include the guest's ARP.
  const frames = Math.min(count, n);
  const secs = Number(last - first) / 1e9;
  return { fps: secs > 0 ? frames / secs : null, mbs: secs > 0 ? (frames * 1514) / secs / 1e6 : null, guestFps: n / (cyc / hz), frac: frames / n };
}

const res = { tap: { bhyve: [], qemu: [] }, slirp: { bhyve: [], qemu: [] } };
for (let i = 0; i < REPS; i++) {
  for (const path of opt.paths.split(',')) {
    for (const vmm of ['bhyve', 'qemu']) {
      const r = await runOnce(vmm, path);
      process.stderr.write(`${path} ${vmm}: ${JSON.stringify(r)}\n`);
      res[path][vmm].push(r);
    }
  }
}
const med = (xs, k) => median(xs.map((x) => x[k]).filter((v) => v !== null));
const out = {};
for (const path of opt.paths.split(',')) {
  out[path] = {};
  for (const vmm of ['bhyve', 'qemu']) {
    const xs = res[path][vmm];
    out[path][vmm] = { fps: med(xs, 'fps'), mbs: med(xs, 'mbs'), guestFps: med(xs, 'guestFps'), frac: med(xs, 'frac') };
  }
}
console.log(JSON.stringify(out));
