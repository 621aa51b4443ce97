#!/usr/bin/env node
// virtio-net data path throughput on a real tap (needs root, iproute2 and
// /dev/net/tun; runs inside a network namespace it creates).
//
// Why not guest-to-guest side by side with QEMU: the virtio-net test guest
// (test/guests/virtio/guest-net.c) has no bench mode (its ROM parameter is
// ignored: it does one ARP + one ping and exits), so there is no guest that
// streams frames on either VMM. What this measures instead is our device
// model and host path in-process, the parts a guest's traffic goes through
// on our bhyve (the vCPU exit to reach them is measured by
// bench/exit-roundtrip.mjs):
//   TX  VirtioNet.queueNotify(1) popping chains of a 12-byte header + a
//       1514-byte frame from a 256-entry queue in plain guest memory and
//       writev()ing each frame to the tap (the device thread's work per
//       guest TX notify);
//   RX  the host stack sending UDP datagrams out of the tap (static
//       neighbour for 10.0.2.15), our main-thread reader (poll on the
//       threadpool + non-blocking read drain into the FrameRing) and
//       VirtioNet.poll() copying the frames into 2 KiB receive buffers.
// Figures are frames/s and MB/s of frame bytes, median of --reps runs.
//
// Usage: node bench/virtio-net.mjs [--frames 200000] [--reps 3] [--no-write]
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { median, mdTable, hostInfo, writeSection } from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    frames: { type: 'string', default: '200000' },
    reps: { type: 'string', default: '3' },
    inner: { type: 'boolean', default: false },
    'no-write': { type: 'boolean', default: false },
  },
});
const FRAMES = Number(opt.frames);
const REPS = Number(opt.reps);

if (!opt.inner) {
  if (process.getuid?.() !== 0) { console.error('virtio-net bench: needs root (network namespace and tap)'); process.exit(4); }
  execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { stdio: 'inherit', cwd: fileURLToPath(new URL('..', import.meta.url)) });
  const ns = `vnbench${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    const sh = (c) => execFileSync('ip', ['netns', 'exec', ns, 'sh', '-c', c]);
    sh('ip tuntap add dev tap0 mode tap && ip addr add 10.0.2.2/24 dev tap0 && ip link set tap0 up && ip link set lo up'
      + ' && ip neigh add 10.0.2.15 lladdr 52:54:00:12:34:56 dev tap0 nud permanent && sysctl -qw net.ipv6.conf.all.disable_ipv6=1');
    const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, fileURLToPath(import.meta.url), '--inner',
      '--frames', String(FRAMES), '--reps', String(REPS)], { encoding: 'utf8' });
    if (r.status !== 0) { console.error(r.stdout, r.stderr); process.exit(4); }
    const res = JSON.parse(r.stdout.trim().split('\n').pop());
    const host = await hostInfo();
    const rows = [
      ['TX: chain -> writev(tap)', res.tx.fps.toFixed(0), res.tx.mbs.toFixed(1)],
      ['RX: tap -> reader -> FrameRing -> rx buffers', res.rx.fps.toFixed(0), res.rx.mbs.toFixed(1)],
      ['RX limit: host UDP send into the tap', res.send.fps.toFixed(0), res.send.mbs.toFixed(1)],
    ];
    const table = mdTable(['path (1514-byte frames)', 'frames/s', 'MB/s'], rows);
    console.log(table);
    const body = `## virtio-net data path (bench/virtio-net.mjs)

${host}

In-process, on a tap in a network namespace; median of ${REPS} runs of ${FRAMES} frames.
No side-by-side QEMU figure: the virtio-net test guest has no bench mode (it
does one ARP and one ping), so neither VMM can be driven with guest traffic;
these are the per-frame costs of our device model and host path.

${table}
`;
    if (!opt['no-write']) console.log(`written to ${writeSection('virtio-net', body)}`);
  } finally {
    spawnSync('ip', ['netns', 'del', ns]);
  }
  process.exit(0);
}

// ---------------------------------------------------------------- inner
const dist = (p) => new URL(`../dist/${p}`, import.meta.url).href;
const { GuestMemory } = await import(dist('vmm/guest-memory.js'));
const { openTap } = await import(dist('vmm/libc-tap.js'));
const { VirtioNet, VIRTIO_NET_F_MAC } = await import(dist('devices/virtio/virtio-net.js'));
const { attachNetBackend, startTapReader } = await import(dist('devices/virtio/net-backend.js'));
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
  const bytes = new Uint8Array(8 << 20);
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

const tap = openTap('tap0');
const hostMac = execFileSync('cat', ['/sys/class/net/tap0/address'], { encoding: 'utf8' }).trim();

function benchTx() {
  const { dev, bytes, tx } = device(attachNetBackend({ kind: 'tap', fd: tap.fd, ifname: 'tap0', rx: new SharedArrayBuffer(32 + 1024) }));
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
const FLOOD = `const d=require('dgram').createSocket('udp4');const p=Buffer.alloc(1472);let n=0;
const end=Date.now()+Number(process.argv[1])*1000;d.bind(0,'10.0.2.2',()=>{const go=()=>{
for(let i=0;i<64;i++)d.send(p,9,'10.0.2.15',()=>{n++});if(Date.now()<end)setImmediate(go);else setTimeout(()=>{console.log(n);process.exit(0)},200)};go()});`;

async function benchRx(secs) {
  const reader = startTapReader(tap.fd, 'tap0', () => undefined);
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

const txs = []; const rxs = []; const sends = [];
for (let i = 0; i < REPS; i++) txs.push(benchTx());
for (let i = 0; i < REPS; i++) {
  // startTapReader closes the fd it was given: use a fresh attachment each run.
  const r = await benchRx(Math.max(1, Math.round(FRAMES / 100000)));
  rxs.push(r.rx); sends.push(r.send);
  if (i < REPS - 1) Object.assign(tap, openTap('tap0'));
}
const med = (a, k) => median(a.map((x) => x[k]));
console.log(JSON.stringify({
  tx: { fps: med(txs, 'fps'), mbs: med(txs, 'mbs') },
  rx: { fps: med(rxs, 'fps'), mbs: med(rxs, 'mbs') },
  send: { fps: med(sends, 'fps'), mbs: med(sends, 'mbs') },
}));
process.exit(0);
