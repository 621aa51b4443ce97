#!/usr/bin/env node
// virtio-net data path throughput on a real tap (needs root, iproute2 and
// /dev/net/tun; runs inside a network namespace it creates).
//
// Part 1, side by side: virtio-net.rom in bench mode (ROM parameter, see
// test/guests/virtio/guest-net.c) on our bhyve (-s 3,virtio-net,tap0) and on
// QEMU (-netdev tap -device virtio-net-pci,disable-legacy=on), interleaved,
// on the same tap in the namespace:
//   guest TX  the guest (ring 3, polling, 256-entry queue) sends --frames UDP
//             frames of 1514 bytes to 10.0.2.2:9; the host counts them on the
//             tap (statistics/rx_packets, rx_bytes) and times them by polling
//             the counter every ms from its first to its last change;
//   guest RX  a host process floods 10.0.2.15:9 through the tap for --rx-secs
//             (1472-byte payloads, 1514-byte frames); the guest counts what
//             it receives and times first to last frame with its TSC.
// Part 2, in-process: our device model and host path without a guest
// (the vCPU exit to reach them is measured by bench/exit-roundtrip.mjs):
// Usage: node bench/virtio-net.mjs [--frames 200000] [--reps 3] [--rx-secs 2]
//          [--large-frames 20000] [--only bhyve,bhyveTx,bhyveExit,bhyveCopy,bhyvePoll,bhyveNoBatch,bhyveB,bhyveOpts,qemu] [--no-inproc] [--no-write]
// A/B: BENCH_BHYVE_B=/other/build/bin/bhyve adds bhyveB, BENCH_NET_OPTS=key=val,... adds bhyveOpts.
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import {
  median, mdTable, hostInfo, writeSection, buildGuests, patchedRom, VMMS, ROOT, bhyveVmm,
} from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    frames: { type: 'string', default: '200000' },
    'large-frames': { type: 'string', default: '20000' },
    reps: { type: 'string', default: '3' },
    inner: { type: 'boolean', default: false },
    'rx-secs': { type: 'string', default: '2' },
    only: { type: 'string' },
    'no-inproc': { type: 'boolean', default: false },
    'no-write': { type: 'boolean', default: false },
  },
});
const RX_SECS = Number(opt['rx-secs']);
const LABELS = {
  bhyve: VMMS.bhyve.label,
  bhyveTx: `${VMMS.bhyve.label}, iothread_tx=true`,
  bhyveExit: `${VMMS.bhyve.label}, iothread=false`,
  bhyveCopy: `${VMMS.bhyve.label}, zerocopy=false`,
  bhyvePoll: `${VMMS.bhyve.label}, iothread_poll_us=50`,
  bhyveNoBatch: `${VMMS.bhyve.label}, batchio=false`,
  bhyveB: `bhyve-kvm (${process.env.BENCH_BHYVE_B})`,
  bhyveOpts: `${VMMS.bhyve.label}, ${process.env.BENCH_NET_OPTS}`,
  qemu: VMMS.qemu.label,
};
const FRAMES = Number(opt.frames);
/** Frames of 65535 bytes per large-frame TX run (0: no large-frame runs). */
const LARGE_FRAMES = Number(opt['large-frames']);
const REPS = Number(opt.reps);

if (!opt.inner) {
  if (process.getuid?.() !== 0) { console.error('virtio-net bench: needs root (network namespace and tap)'); process.exit(4); }
  // (bin/bhyve runs dist/bundle/: npm run build, not tsc alone)
  execFileSync('npm', ['run', '-s', 'build'], { stdio: 'inherit', cwd: fileURLToPath(new URL('..', import.meta.url)) });
  await buildGuests();
  const ns = `vnbench${process.pid}`;
  const cleanup = () => spawnSync('ip', ['netns', 'del', ns]);
  // the namespace (and with it the tap) goes away even on ^C or a kill
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => { cleanup(); process.exit(4); });
  execFileSync('ip', ['netns', 'add', ns]);
  let res;
  try {
    const sh = (c) => execFileSync('ip', ['netns', 'exec', ns, 'sh', '-c', c]);
    // MTU 65521 (a tap's largest): the large-frame runs put a 65521-byte IPv4 packet in one 65535-byte frame
    sh('ip tuntap add dev tap0 mode tap && ip addr add 10.0.2.2/24 dev tap0 && ip link set tap0 mtu 65521 up && ip link set lo up'
      + ' && sysctl -qw net.ipv6.conf.all.disable_ipv6=1');
    const args = [fileURLToPath(import.meta.url), '--inner', '--frames', String(FRAMES), '--large-frames', String(LARGE_FRAMES), '--reps', String(REPS), '--rx-secs', String(RX_SECS)];
    if (opt.only) args.push('--only', opt.only);
    if (opt['no-inproc']) args.push('--no-inproc');
    const load0 = os.loadavg()[0];
    const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, ...args],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 30 * 60_000, killSignal: 'SIGKILL' });
    if (r.status !== 0) { console.error(r.stdout, r.error ?? ''); process.exitCode = 4; }
    else res = { ...JSON.parse(r.stdout.trim().split('\n').pop()), load: `${load0.toFixed(1)} / ${os.loadavg()[0].toFixed(1)}` };
  } finally {
    cleanup();
  }
  if (!res) process.exit(4);
  const host = await hostInfo();
  const f0 = (v) => (v === null || v === undefined ? '–' : v.toFixed(0));
  const f1 = (v) => (v === null || v === undefined ? '–' : v.toFixed(1));
  const vrows = [];
  for (const [key, v] of Object.entries(res.vmms)) {
    if (v.failed) continue;
    vrows.push([LABELS[key], f0(v.tx.fps), f1(v.tx.mbs), f0(v.tx.guestFps), f0(v.rx.fps), f1(v.rx.mbs), `${(100 * v.rx.frac).toFixed(0)}%`]);
  }
  const b = res.vmms.bhyve; const q = res.vmms.qemu;
  if (b && q && !b.failed && !q.failed) {
    const x = (a, c) => `${(a / c).toFixed(2)}x`;
    vrows.push(['ratio bhyve-kvm / QEMU', x(b.tx.fps, q.tx.fps), x(b.tx.mbs, q.tx.mbs), x(b.tx.guestFps, q.tx.guestFps), x(b.rx.fps, q.rx.fps), x(b.rx.mbs, q.rx.mbs), '']);
  }
  vrows.push(['host UDP send into the tap (RX offered load)', '', '', '', f0(res.send.fps), f1(res.send.mbs), '']);
  const vtable = mdTable(['VMM (1514-byte frames)', 'guest TX frames/s (host count)', 'guest TX MB/s', 'guest TX frames/s (guest TSC)',
    'guest RX frames/s', 'guest RX MB/s', 'RX frames received of sent'], vrows);
  const notes = Object.entries(res.vmms).filter(([, v]) => v.failed).map(([k, v]) => `${LABELS[k]}: skipped, the run failed (${v.failed}).`);
  console.log(vtable);
  // Large frames: bulk throughput, what a TCP stream with segmentation
  // offloads would put on the wire.
  const lrows = [];
  for (const [key, v] of Object.entries(res.vmms)) {
    if (v.failed || !v.large) continue;
    lrows.push([LABELS[key], f0(v.large.tx.fps), f1(v.large.tx.mbs), f0(v.large.rx.fps), f1(v.large.rx.mbs), `${(100 * v.large.rx.frac).toFixed(0)}%`]);
  }
  if (b?.large && q?.large && !b.failed && !q.failed) {
    const x = (a, c) => `${(a / c).toFixed(2)}x`;
    lrows.push(['ratio bhyve-kvm / QEMU', x(b.large.tx.fps, q.large.tx.fps), x(b.large.tx.mbs, q.large.tx.mbs), x(b.large.rx.fps, q.large.rx.fps), x(b.large.rx.mbs, q.large.rx.mbs), '']);
  }
  if (res.sendLarge?.fps) lrows.push(['host UDP send into the tap (RX offered load)', '', '', f0(res.sendLarge.fps), f1(res.sendLarge.mbs), '']);
  const ltable = lrows.length ? mdTable(['VMM (65535-byte frames)', 'guest TX frames/s (host count)', 'guest TX MB/s',
    'guest RX frames/s', 'guest RX MB/s', 'RX frames received of sent'], lrows) : '';
  if (ltable) console.log(ltable);
  for (const n of notes) console.log(n);
  let inproc = '';
  if (res.inproc) {
    const p = res.inproc;
    const rows = [
      ['TX: chain -> writev(tap)', p.tx.fps.toFixed(0), p.tx.mbs.toFixed(1)],
      ['RX: tap -> read(2) in the device -> rx buffers', p.rx.fps.toFixed(0), p.rx.mbs.toFixed(1)],
      ['RX limit: host UDP send into the tap', p.send.fps.toFixed(0), p.send.mbs.toFixed(1)],
    ];
    const table = mdTable(['path (1514-byte frames)', 'frames/s', 'MB/s'], rows);
    console.log(table);
    inproc = `
### Our device model alone, in-process

No guest and no vCPU: \`VirtioNet.queueNotify(1)\` popping 12-byte header +
1514-byte frame chains from a 256-entry queue in a mapping, as the VMM's
guest RAM is, and writev()ing them to the tap, a queueful per call into the
native library (TX); the host stack sending UDP out of the tap and
\`VirtioNet.poll()\` reading it into 2 KiB receive buffers, up to 16 frames
per call (RX). Median of ${REPS}
runs of ${FRAMES} frames.

${table}
`;
  }
  const x2 = (a, c) => (a && c ? `${(a / c).toFixed(2)}x` : '–');
  const bl = res.vmms.bhyve; const ql = res.vmms.qemu;
  const ok = bl && ql && !bl.failed && !ql.failed;
  const closing = ok ? `In this run, bhyve-kvm with its defaults against QEMU: 1514-byte frames
TX ${x2(bl.tx.fps, ql.tx.fps)}, RX ${x2(bl.rx.fps, ql.rx.fps)}${bl.large && ql.large ? `; 65535-byte frames TX
${x2(bl.large.tx.mbs, ql.large.tx.mbs)}, RX ${x2(bl.large.rx.mbs, ql.large.rx.mbs)} (MB/s)` : ''}.` : 'bhyve-kvm or QEMU failed in this run: no ratios.';
  const body = `## virtio-net throughput (bench/virtio-net.mjs)

Host: ${host}; load average ${res.load ?? '–'} (1 min, at the start and at the end of the runs)

\`sudo node bench/virtio-net.mjs\` — virtio-net.rom in bench mode on a tap
(10.0.2.2/24, MTU 65521) in a network namespace the script creates; each VMM
runs under \`ip netns exec\`. bhyve-kvm: \`-s 3,virtio-net,tap0\` (its
defaults: the receive queue on the I/O thread, \`iothread=true\`), also with
\`iothread_tx=true\` (both queues on the I/O thread, no notify exits) and with
\`iothread=false\` (both queues on vCPU 0's thread, every notify an exit)
and with \`zerocopy=false\` (frames read into a bounce buffer and copied,
as before, also into buffers that hold 64 KiB) and with \`batchio=false\`
(a foreign call per frame written or read, where the default makes one per
queueful written and one per 16 frames read);
QEMU: \`-netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device
virtio-net-pci,netdev=n0,disable-legacy=on\`. The guest driver runs in ring 3
of long mode, polls the used rings (no interrupts) with 256-entry queues, and
kicks only when the device has not set NO_NOTIFY. Runs interleaved (each
VMM's runs follow each other's), median of ${REPS}.

- guest TX: after ARP, the guest sends ${FRAMES} UDP frames of 1514 bytes
  (10.0.2.15 -> 10.0.2.2:9) as fast as the transmit queue takes them. The host
  counts them on the tap (\`statistics/rx_packets\`, \`rx_bytes\`; every frame
  arrived in every run unless noted) and times them by polling the counter
  every ms from its first to its last change; the guest's own TSC figure
  (first buffer queued to last buffer returned) is the cross-check.
- guest RX: a node process in the namespace floods 10.0.2.15:9 through the tap
  for ${RX_SECS} s (1472-byte UDP payloads, 1514-byte frames; static neighbour
  entry for the guest); the guest counts the frames it receives and times
  first to last with its TSC (calibrated against the RTC). What the VMM does
  not take in time is dropped at the tap's queue, hence the last column.
- large frames: the same with 65535-byte frames (65521-byte IPv4 packets, the
  largest a tap carries; ${LARGE_FRAMES} frames sent, 65493-byte UDP payloads
  received, 68 KiB guest buffers).

TCP between guest and host is measured in the next section
(bench/virtio-net-tcp.mjs), with Debian's lwIP as the test guest's stack. Bulk
TCP over virtio-net without offloads is frames of the MTU each way (data one
way, ACKs the other), which the 1514-byte rows bound; with the segmentation
offloads neither VMM offers here, a stream is 64 KiB frames, which the
large-frame rows bound.

The host is shared and has 2 CPUs (vCPU thread, VMM's other threads, the
flood sender and, while this ran, other engineers' builds and tests compete
for them), so single runs vary by 2x and more; the runs' own figures are
printed on stderr.

${vtable}
${ltable ? `\n${ltable}\n` : ''}${notes.map((n) => `\n${n}`).join('')}

${closing}

Where it stands: receiving on the I/O thread (an ioeventfd on the receive
notify address and the tap in one \`poll(2)\`) takes the per-frame notify
exit off guest RX: the bench driver hands buffers back one at a time and,
with receive notifications on while a frame waits (as QEMU and bhyve do),
kicks for each. Transmitting on it as well (\`iothread_tx=true\`) has measured
slower here: the guest keeps one CPU busy polling, and every queueful waits
for the I/O thread to be scheduled on the other, shared one, while with the
notify exit the vCPU's own thread sends at once. The default,
\`iothread_tx=poll\`, gives this polling driver (INTx disabled, no MSI-X)
\`switch\`, which keeps the queue on the exit while the guest sends more
than it receives, as here.
With MSI-X the I/O thread's queue interrupts go by irqfd, straight into
KVM (\`irqfd=true\`; this bench's guest polls and takes none, the interrupt
guest test checks the path). Large frames are read straight into the
guest's 68 KiB buffers (\`zerocopy=true\`: one \`read(2)\` into the chain
after its 12-byte header, where QEMU reads into its own buffer and copies),
which the \`zerocopy=false\` row compares; 2 KiB buffers cannot hold the
largest frame a tap may deliver and keep the bounce buffer.
Whichever thread sends, the frames of one notify leave by one call into a
small native library (\`batchio=true\`, native/net-batch.c): a
\`writev(2)\` per frame as before, without koffi's and N-API's glue around
each, which cost a frame more than the system call (~0.25 us of a
1514-byte frame's ~3 us); the \`batchio=false\` row is the old path.
${inproc}`;
  if (!opt['no-write']) console.log(`written to ${writeSection('virtio-net', body)}`);
  process.exit(0);
}

// ---------------------------------------------------------------- inner
const dist = (p) => new URL(`../dist/${p}`, import.meta.url).href;
const { GuestMemory } = await import(dist('sys/guest-memory.js'));
const { openTap } = await import(dist('sys/tap.js'));
const { anonymousMapping } = await import(dist('sys/libc.js'));
const { VirtioNet, VIRTIO_NET_F_MAC } = await import(dist('devices/virtio/virtio-net.js'));
const { attachNetBackend, startTapWaker } = await import(dist('devices/net/net-backend.js'));
const { createQueues } = await import(dist('devices/virtio/virtio-device.js'));
const dgram = await import('node:dgram');

const QS = 256;
const BUF = 2048;
/** A split queue in plain memory that the bench refills as a driver would. */
function makeQueue(mem, bytes, base, write) {
  const dv = new DataView(bytes.buffer);
  const desc = base; const avail = desc + 16 * QS; const used = (avail + 6 + 2 * QS + 4095) & ~4095;
  const bufs = (used + 6 + 8 * QS + 4095) & ~4095;
  for (let i = 0; i < QS; i++) {
    dv.setBigUint64(desc + 16 * i, BigInt(bufs + BUF * i), true);
    dv.setUint32(desc + 16 * i + 8, write ? BUF : 12 + 1514, true);
    dv.setUint16(desc + 16 * i + 12, write ? 2 : 0, true);
  }
  let availIdx = 0; let seenUsed = 0; let started = false;
  return {
    layout: { size: QS, desc, avail, used }, bufs,
    /** Offers every descriptor (first call) or those the device gave back. */
    refill() {
      let n = 0;
      if (!started) {
        started = true;
        for (let i = 0; i < QS; i++) dv.setUint16(avail + 4 + 2 * i, i, true);
        availIdx = QS; n = QS;
      } else {
        const u = dv.getUint16(used + 2, true);
        for (; seenUsed !== u; seenUsed = (seenUsed + 1) & 0xffff, n++) {
          const id = dv.getUint32(used + 4 + 8 * (seenUsed % QS), true);
          dv.setUint16(avail + 4 + 2 * (availIdx % QS), id, true);
          availIdx = (availIdx + 1) & 0xffff;
        }
      }
      dv.setUint16(avail + 2, availIdx, true);
      return n;
    },
    usedIdx: () => dv.getUint16(used + 2, true),
  };
}

function device(port) {
  // a mapping, as guest RAM is (frames go out by their host addresses)
  const bytes = anonymousMapping(8 << 20, 'bench RAM').bytes;
  const mem = new GuestMemory([{ gpa: 0, bytes }]);
  const rx = makeQueue(mem, bytes, 0x10000, true);
  const tx = makeQueue(mem, bytes, 0x200000, false);
  const dev = new VirtioNet({ mac: Uint8Array.from([0x52, 0x54, 0, 0x12, 0x34, 0x56]) }, port);
  dev.ackFeatures((1n << 32n) | (1n << BigInt(VIRTIO_NET_F_MAC)));
  const queues = [0, 1].map((i) => createQueues(mem, [i === 0 ? rx.layout : null, i === 1 ? tx.layout : null], dev.ackedFeatures, dev.queueMaxSizes)[i]);
  dev.activate({ mem, queues, interrupt: { queue() {}, config() {} }, needsReset(r) { throw new Error(r); } });
  return { dev, bytes, rx, tx };
}

/** A UDP/IPv4 frame 10.0.2.15 -> 10.0.2.2 of 1514 bytes. */
function fillFrames(bytes, tx, hostMac) {
  const f = Buffer.alloc(1514);
  Buffer.from(hostMac.split(':').map((h) => parseInt(h, 16))).copy(f, 0);
  Buffer.from([0x52, 0x54, 0, 0x12, 0x34, 0x56]).copy(f, 6);
  f.writeUInt16BE(0x0800, 12);
  f[14] = 0x45; f.writeUInt16BE(1500, 16); f[22] = 64; f[23] = 17;
  Buffer.from([10, 0, 2, 15]).copy(f, 26); Buffer.from([10, 0, 2, 2]).copy(f, 30);
  let s = 0; for (let i = 14; i < 34; i += 2) s += f.readUInt16BE(i); while (s >> 16) s = (s & 0xffff) + (s >> 16);
  f.writeUInt16BE(~s & 0xffff, 24);
  f.writeUInt16BE(40000, 34); f.writeUInt16BE(9, 36); f.writeUInt16BE(1480, 38);
  for (let i = 0; i < QS; i++) bytes.set(f, tx.bufs + BUF * i + 12);
}

let tap; // opened after the VMM runs: a (single-queue) tap takes one reader
let hostMac;

function benchTx() {
  const { dev, bytes, tx } = device(attachNetBackend({ kind: 'tap', fd: tap.fd, ifname: 'tap0', wake: new SharedArrayBuffer(8) }));
  fillFrames(bytes, tx, hostMac);
  let sent = 0;
  const t0 = process.hrtime.bigint();
  while (sent < FRAMES) {
    if (dev.needsResetReason) throw new Error(dev.needsResetReason);
    tx.refill();
    dev.queueNotify(1);
    sent = dev.stats.txFrames + dev.stats.txDropped;
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return { fps: dev.stats.txFrames / s, mbs: dev.stats.txBytes / s / 1e6, dropped: dev.stats.txDropped };
}

/** A UDP flood 10.0.2.2 -> 10.0.2.15:9 (1472-byte payloads: 1514-byte
 * frames) from a child process for `secs` seconds; prints datagrams sent. */
const FLOOD = `const d=require('dgram').createSocket('udp4');const p=Buffer.alloc(Number(process.argv[2]??1472));let n=0;
const end=Date.now()+Number(process.argv[1])*1000;d.bind(0,'10.0.2.2',()=>{const go=()=>{
for(let i=0;i<64;i++)d.send(p,9,'10.0.2.15',()=>{n++});if(Date.now()<end)setImmediate(go);else setTimeout(()=>{console.log(n);process.exit(0)},200)};go()});`;

async function benchRx(secs) {
  const reader = startTapWaker(tap.fd, 'tap0', () => undefined);
  const { dev, rx } = device(attachNetBackend(reader.transfer));
  rx.refill();
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, ['-e', FLOOD, String(secs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (b) => { out += b; });
  const exited = new Promise((r) => child.on('exit', r));
  // The device side, interleaved on this thread (on bhyve it is the device thread).
  let first = 0n; let last = 0n; let done = false;
  void exited.then(() => { done = true; });
  while (!done) {
    const before = dev.stats.rxFrames;
    dev.poll();
    rx.refill();
    if (dev.stats.rxFrames !== before) {
      last = process.hrtime.bigint();
      if (first === 0n) first = last;
      await new Promise((r) => setImmediate(r));
    } else {
      await new Promise((r) => setTimeout(r, 1));
    }
  }
  const s = Number(last - first) / 1e9;
  const sent = Number(out.trim());
  await reader.close().catch(() => undefined);
  return { rx: { fps: dev.stats.rxFrames / s, mbs: dev.stats.rxBytes / s / 1e6 }, send: { fps: sent / secs, mbs: (sent * 1514) / secs / 1e6 } };
}

// ------------------------------------------------- guests on both VMMs
const stat = (k) => Number(readFileSync(`/sys/class/net/tap0/statistics/${k}`, 'utf8'));
const bhyveNet = (slot, base = VMMS.bhyve) => ({ ...base, argv(rp) {
  const [cmd, args] = base.argv.call(this, rp);
  return [cmd, [...args.slice(0, -1), '-s', slot, args[args.length - 1]]];
} });
const withNet = {
  bhyve: bhyveNet('3,virtio-net,tap0'),
  // the I/O thread serving both queues, and none (every notify an exit)
  bhyveTx: bhyveNet('3,virtio-net,tap0,iothread_tx=true'),
  bhyveExit: bhyveNet('3,virtio-net,tap0,iothread=false'),
  // receive through a bounce buffer even into 64 KiB buffers
  bhyveCopy: bhyveNet('3,virtio-net,tap0,zerocopy=false'),
  // the I/O thread polls for receive buffers while a frame waits
  bhyvePoll: bhyveNet('3,virtio-net,tap0,iothread_poll_us=50'),
  // one foreign call per frame, as before frame batches
  bhyveNoBatch: bhyveNet('3,virtio-net,tap0,batchio=false'),
  // A/B: another build's bin/bhyve (BENCH_BHYVE_B), this build with other slot options (BENCH_NET_OPTS)
  ...(process.env.BENCH_BHYVE_B ? { bhyveB: bhyveNet('3,virtio-net,tap0', bhyveVmm(process.env.BENCH_BHYVE_B)) } : {}),
  ...(process.env.BENCH_NET_OPTS ? { bhyveOpts: bhyveNet(`3,virtio-net,tap0,${process.env.BENCH_NET_OPTS}`) } : {}),
  qemu: { ...VMMS.qemu, argv(rp) {
    const [cmd, args] = VMMS.qemu.argv(rp);
    return [cmd, [...args, '-netdev', 'tap,id=n0,ifname=tap0,script=no,downscript=no', '-device', 'virtio-net-pci,netdev=n0,disable-legacy=on']];
  } },
};
const MAXF = 0x0fffffff;
if (!(FRAMES >= 1 && FRAMES <= MAXF && LARGE_FRAMES >= 0 && LARGE_FRAMES <= MAXF && REPS >= 1 && RX_SECS > 0 && RX_SECS <= 60)) {
  console.error(`virtio-net: need 1 <= --frames <= ${MAXF}, --reps >= 1, 0 < --rx-secs <= 60`);
  process.exit(4);
}
const LARGE = 1 << 29;
const roms = {
  small: { tx: patchedRom('virtio-net', FRAMES), rx: patchedRom('virtio-net', ((1 << 28) | MAXF) >>> 0), frames: FRAMES, payload: 1472, frame: 1514 },
  large: { tx: patchedRom('virtio-net', (LARGE | LARGE_FRAMES) >>> 0), rx: patchedRom('virtio-net', (LARGE | (1 << 28) | MAXF) >>> 0), frames: LARGE_FRAMES, payload: 65493, frame: 65535 },
};

/** Run a VMM on a ROM inside this namespace; onLine(line, child) sees each
 * line of the guest's COM1 output. Killed after timeoutMs. */
function runGuest(vmm, romPath, onLine, timeoutMs = 120_000) {
  const [cmd, args] = vmm.argv(romPath);
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let out = ''; let err = ''; let partial = '';
    const timer = setTimeout(() => { try { process.kill(-child.pid, 'SIGKILL'); } catch { child.kill('SIGKILL'); } err += '\ntimed out'; }, timeoutMs);
    child.stdout.on('data', (d) => {
      const t = d.toString('latin1'); out += t; partial += t;
      let k;
      while ((k = partial.indexOf('\n')) >= 0) { onLine(partial.slice(0, k).replace(/\r$/, '')); partial = partial.slice(k + 1); }
    });
    child.stderr.on('data', (d) => { err += d; });
    child.on('error', (e) => { err += String(e); });
    child.on('close', async (code) => { clearTimeout(timer); await vmm.cleanup(); resolve({ code, out, err }); });
  });
}
const why = (r) => {
  const last = r.out.split(/\r?\n/).filter((l) => l.trim()).pop() ?? '';
  const e = r.err.split('\n').map((x) => x.trim()).filter((x) => x && !/warning/i.test(x)).pop() ?? '';
  return `exit status ${r.code}, expected 33${e ? `: ${e}` : ''}${last ? `; guest's last line: "${last.trim()}"` : ''}`;
};
const num = (out, re) => { const m = out.match(re); return m ? m.slice(1).map(Number) : null; };

async function guestTx(vmm, size) {
  const { tx: txRom, frames: FRAMES } = roms[size];
  // ARP is a packet or two between polls; bulk frames come faster, except
  // large frames, which may come a few per ms
  const burst = size === 'large' ? 2 : 8;
  const p0 = stat('rx_packets'); const b0 = stat('rx_bytes');
  // the frames are counted from the guest's first bulk frame on: a change of
  // more than a handful (ARP) of packets between two polls
  let last = p0; let tFirst = null; let pFirst = 0; let tLast = null; let pLast = 0;
  const poll = setInterval(() => {
    const p = stat('rx_packets'); const t = process.hrtime.bigint();
    if (p !== last) {
      if (tFirst === null && p - last > burst) { tFirst = t; pFirst = p; }
      else if (tFirst !== null) { tLast = t; pLast = p; }
      last = p;
    }
  }, 1);
  const r = await runGuest(vmm, txRom, () => {});
  clearInterval(poll);
  const g = num(r.out, /bench: tx (\d+) frames (\d+) bytes (\d+) cycles/);
  const hz = num(r.out, /bench: tsc_hz (\d+)/);
  if (r.code !== 33 || !g || !hz || tFirst === null || tLast === null) return { failed: why(r) };
  const frames = stat('rx_packets') - p0; const bytes = stat('rx_bytes') - b0;
  const s = Number(tLast - tFirst) / 1e9;
  const fps = (pLast - pFirst) / s;
  return { fps, mbs: fps * (bytes / frames) / 1e6, guestFps: g[0] / (g[2] / hz[0]), frames, lost: FRAMES - (frames - 1) };
}

async function guestRx(vmm, size) {
  const { rx: rxRom, payload } = roms[size];
  let sender = null; let sent = '';
  const r = await runGuest(vmm, rxRom, (line) => {
    const m = line.match(/^virtio-net: mac ([0-9a-f:]{17})/);
    if (m) execFileSync('ip', ['neigh', 'replace', '10.0.2.15', 'lladdr', m[1], 'dev', 'tap0', 'nud', 'permanent']);
    if (line.startsWith('bench: rx ready') && !sender) {
      sender = spawn(process.execPath, ['-e', FLOOD, String(RX_SECS), String(payload)], { stdio: ['ignore', 'pipe', 'inherit'] });
      sender.stdout.on('data', (b) => { sent += b; });
      sender.exited = new Promise((res) => sender.on('exit', res));
    }
  });
  if (sender) await sender.exited;
  const g = num(r.out, /bench: rx (\d+) frames (\d+) bytes (\d+) cycles/);
  const hz = num(r.out, /bench: tsc_hz (\d+)/);
  if (r.code !== 33 || !g || !hz) return { failed: why(r) };
  const s = g[2] / hz[0]; const n = Number(sent.trim());
  return { fps: g[0] / s, mbs: g[1] / s / 1e6, frac: n ? Math.min(1, g[0] / n) : 0, send: { fps: n / RX_SECS, mbs: (n * roms[size].frame) / RX_SECS / 1e6 } };
}

const active = Object.entries(withNet).filter(([k]) => !opt.only || opt.only.split(',').includes(k))
  .map(([key, vmm]) => ({ key, vmm, small: { tx: [], rx: [] }, large: { tx: [], rx: [] }, failed: null }));
const sizes = LARGE_FRAMES > 0 ? ['small', 'large'] : ['small'];
const sends = { small: [], large: [] };
for (let i = 0; i < REPS; i++) {
  for (const a of active) {
    for (const size of sizes) {
      if (a.failed) continue;
      const t = await guestTx(a.vmm, size);
      if (t.failed) { a.failed = `guest TX (${size} frames): ${t.failed}`; console.error(`virtio-net: ${a.key}: ${a.failed}`); continue; }
      const x = await guestRx(a.vmm, size);
      if (x.failed) { a.failed = `guest RX (${size} frames): ${x.failed}`; console.error(`virtio-net: ${a.key}: ${a.failed}`); continue; }
      a[size].tx.push(t); a[size].rx.push(x); sends[size].push(x.send);
      console.error(`virtio-net: ${a.key} ${size} frames, run ${i + 1}: TX ${t.fps.toFixed(0)} frames/s ${t.mbs.toFixed(1)} MB/s (guest TSC ${t.guestFps.toFixed(0)}/s, ${t.frames} frames on the tap), `
        + `RX ${x.fps.toFixed(0)} frames/s ${x.mbs.toFixed(1)} MB/s (${(100 * x.frac).toFixed(0)}% of ${x.send.fps.toFixed(0)} sent/s)`);
    }
  }
}
const med = (a, k) => median(a.map((x) => x[k]));
const summary = (r) => ({
  tx: { fps: med(r.tx, 'fps'), mbs: med(r.tx, 'mbs'), guestFps: med(r.tx, 'guestFps') },
  rx: { fps: med(r.rx, 'fps'), mbs: med(r.rx, 'mbs'), frac: med(r.rx, 'frac') },
});
const vmms = {};
for (const a of active) {
  vmms[a.key] = a.failed ? { failed: a.failed } : { ...summary(a.small), large: LARGE_FRAMES > 0 ? summary(a.large) : undefined };
}
const sendOf = (l) => (l.length ? { fps: med(l, 'fps'), mbs: med(l, 'mbs') } : { fps: null, mbs: null });
const send = sendOf(sends.small);
const sendLarge = sendOf(sends.large);
if (opt['no-inproc']) {
  console.log(JSON.stringify({ vmms, send, sendLarge }));
  process.exit(0);
}

// ---------------------------------------------- in-process device model
execFileSync('ip', ['neigh', 'replace', '10.0.2.15', 'lladdr', '52:54:00:12:34:56', 'dev', 'tap0', 'nud', 'permanent']);
tap = openTap('tap0');
hostMac = readFileSync('/sys/class/net/tap0/address', 'utf8').trim();
const txs = []; const rxs = []; const ipSends = [];
for (let i = 0; i < REPS; i++) txs.push(benchTx());
for (let i = 0; i < REPS; i++) {
  // startTapWaker closes the fd it was given: use a fresh attachment each run.
  const r = await benchRx(Math.max(1, Math.round(FRAMES / 100000)));
  rxs.push(r.rx); ipSends.push(r.send);
  if (i < REPS - 1) Object.assign(tap, openTap('tap0'));
}
console.log(JSON.stringify({ vmms, send, sendLarge, inproc: {
  tx: { fps: med(txs, 'fps'), mbs: med(txs, 'mbs') },
  rx: { fps: med(rxs, 'fps'), mbs: med(rxs, 'mbs') },
  send: { fps: med(ipSends, 'fps'), mbs: med(ipSends, 'mbs') },
} }));
process.exit(0);
