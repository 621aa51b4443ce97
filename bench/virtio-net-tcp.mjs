#!/usr/bin/env node
// TCP bulk throughput between a guest and the host over virtio-net on a tap
// (needs root, iproute2, /dev/net/tun, and tcp.rom: liblwip0 + liblwip-dev).
//
// tcp.rom (test/guests/tcp/: Debian's lwIP 2.1.3, unmodified, as the
// guest's TCP/IP stack, driving virtio-net from ring 3 by polling) on our
// bhyve (-s 3,virtio-net,tap0, its defaults) and on QEMU (-netdev tap
// -device virtio-net-pci,disable-legacy=on), interleaved, on one tap
// (10.0.2.2/24, MTU 1500) in a network namespace the script creates, against
// test/guests/tcp/host-peer.mjs there. Each run: the guest sends --mib MiB
// to 10.0.2.2:5001, then receives --mib MiB from 10.0.2.2:5002.
// Usage: sudo node bench/virtio-net-tcp.mjs [--mib 64] [--reps 5] [--no-write]
//          [--only bhyve,bhyveTx,bhyveExit,qemu]  (bhyveTx: iothread_tx=true, bhyveExit: iothread=false)
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import os from 'node:os';
import { median, mdTable, hostInfo, writeSection, buildGuests, patchedRom, rom, VMMS, ROOT } from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    mib: { type: 'string', default: '64' },
    reps: { type: 'string', default: '5' },
    only: { type: 'string' },
    'no-write': { type: 'boolean', default: false },
  },
});
const MIB = Number(opt.mib);
const REPS = Number(opt.reps);
if (!(Number.isInteger(MIB) && MIB >= 1 && MIB <= 1024 && Number.isInteger(REPS) && REPS >= 1)) {
  console.error('virtio-net-tcp: need 1 <= --mib <= 1024 and --reps >= 1');
  process.exit(4);
}
if (process.getuid?.() !== 0) { console.error('virtio-net-tcp: needs root (network namespace and tap)'); process.exit(4); }
execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { stdio: 'inherit', cwd: ROOT });
await buildGuests();
if (!existsSync(rom('tcp'))) {
  console.error('virtio-net-tcp: build/guests/tcp.rom is not built: install liblwip0 and liblwip-dev (apt-get install liblwip0 liblwip-dev)');
  process.exit(4);
}
const BYTES = MIB << 20;
// bit 30: no CRC (the integration test checks the data; here both ends only count)
const ROM = patchedRom('tcp', ((1 << 30) | (MIB * 1024)) >>> 0);

const ns = `vntcp${process.pid}`;
const inNs = (cmd, args) => ['ip', ['netns', 'exec', ns, cmd, ...args]];
const cleanup = () => spawnSync('ip', ['netns', 'del', ns]);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => { cleanup(); process.exit(4); });
execFileSync('ip', ['netns', 'add', ns]);

const VM = {
  bhyve: { label: `${VMMS.bhyve.label}, -s virtio-net,tap0`, vmm: VMMS.bhyve, extra: ['-s', '3,virtio-net,tap0'], before: true },
  // for comparison, only with --only: both queues on the I/O thread; none (every notify an exit)
  bhyveTx: { label: `${VMMS.bhyve.label}, -s virtio-net,tap0,iothread_tx=true`, vmm: VMMS.bhyve, extra: ['-s', '3,virtio-net,tap0,iothread_tx=true'], before: true, optional: true },
  bhyveExit: { label: `${VMMS.bhyve.label}, -s virtio-net,tap0,iothread=false`, vmm: VMMS.bhyve, extra: ['-s', '3,virtio-net,tap0,iothread=false'], before: true, optional: true },
  qemu: { label: `${VMMS.qemu.label}, virtio-net-pci`, vmm: VMMS.qemu, extra: ['-netdev', 'tap,id=n0,ifname=tap0,script=no,downscript=no', '-device', 'virtio-net-pci,netdev=n0,disable-legacy=on'] },
};
const keys = Object.keys(VM).filter((k) => (opt.only ? opt.only.split(',').includes(k) : !VM[k].optional));

/** Reports of host-peer.mjs, one per finished connection. */
let reports = [];
let peer;

/** The host's TCP retransmissions and the frames the tap dropped because
 * the VMM did not read them in time, in the namespace. */
function hostCounters() {
  const t = execFileSync('ip', ['netns', 'exec', ns, 'sh', '-c', 'cat /proc/net/snmp /sys/class/net/tap0/statistics/tx_dropped'], { encoding: 'utf8' });
  const tcp = t.split('\n').filter((l) => l.startsWith('Tcp:'));
  const retrans = Number(tcp[1].split(' ')[tcp[0].split(' ').indexOf('RetransSegs')]);
  return { retrans, dropped: Number(t.trim().split('\n').pop()) };
}

/** One VM run: its guest's output, and the peer's reports of its two connections. */
function runOnce(key) {
  const v = VM[key];
  const [cmd, args] = v.vmm.argv(ROM);
  // bhyve: the slot goes before the VM name (its last argument); QEMU: anywhere
  const full = v.before ? [...args.slice(0, -1), ...v.extra, args[args.length - 1]] : [...args, ...v.extra];
  reports = [];
  const c0 = hostCounters();
  return new Promise((resolve) => {
    const [c, a] = inNs(cmd, full);
    const child = spawn(c, a, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let out = ''; let err = '';
    const timer = setTimeout(() => { try { process.kill(-child.pid, 'SIGKILL'); } catch { child.kill('SIGKILL'); } err += '\ntimed out'; }, 300_000);
    child.stdout.on('data', (d) => { out += d.toString('latin1'); });
    child.stderr.on('data', (d) => { err += d; });
    child.on('close', async (code) => {
      clearTimeout(timer);
      await v.vmm.cleanup();
      for (let i = 0; i < 40 && reports.length < 2; i++) await new Promise((r) => setTimeout(r, 50));
      const c1 = hostCounters();
      resolve({ code, out, err, reports, retrans: c1.retrans - c0.retrans, dropped: c1.dropped - c0.dropped });
    });
  });
}

function parse(r) {
  const num = (re) => { const m = r.out.match(re); return m ? m.slice(1).map(Number) : null; };
  const hz = num(/bench: tsc_hz (\d+)/);
  const sent = num(/tcp: sent (\d+) bytes in (\d+) cycles/);
  const got = num(/tcp: received (\d+) bytes in (\d+) cycles/);
  const sink = r.reports.find((x) => x.port === 5001);
  if (r.code !== 33 || !hz || !sent || !got || !sink || sink.bytes !== BYTES || sent[0] !== BYTES || got[0] !== BYTES) {
    const last = r.out.split(/\r?\n/).filter((l) => l.trim()).pop() ?? '';
    const e = r.err.split('\n').map((x) => x.trim()).filter((x) => x && !/warning/i.test(x)).pop() ?? '';
    return { failed: `exit status ${r.code}, expected 33${e ? `: ${e}` : ''}${last ? `; guest's last line: "${last.trim()}"` : ''}` };
  }
  return {
    tx: BYTES / (sent[1] / hz[0]) / 1e6, // guest -> host: connection up to the last byte acknowledged (guest TSC)
    txHost: BYTES / sink.secs / 1e6, // the same, first to last byte at the host
    rx: BYTES / (got[1] / hz[0]) / 1e6, // host -> guest: first to last byte (guest TSC)
    retrans: r.retrans, dropped: r.dropped,
  };
}

let res;
const load0 = os.loadavg()[0];
try {
  execFileSync('ip', ['netns', 'exec', ns, 'sh', '-c', 'ip tuntap add dev tap0 mode tap && ip addr add 10.0.2.2/24 dev tap0'
    + ' && ip link set tap0 up && ip link set lo up && sysctl -qw net.ipv6.conf.all.disable_ipv6=1']);
  const [pc, pa] = inNs(process.execPath, [join(ROOT, 'test/guests/tcp/host-peer.mjs'), '--bytes', String(BYTES)]);
  peer = spawn(pc, pa, { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((resolve, reject) => {
    let buf = '';
    peer.on('exit', (c) => reject(new Error(`host-peer.mjs exited with ${c}`)));
    peer.stdout.on('data', (b) => {
      buf += b;
      let k;
      while ((k = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, k); buf = buf.slice(k + 1);
        if (line === 'ready') resolve();
        else reports.push(JSON.parse(line));
      }
    });
  });
  const runs = Object.fromEntries(keys.map((k) => [k, { ok: [], failed: null }]));
  for (let i = 0; i < REPS; i++) {
    for (const k of keys) {
      if (runs[k].failed) continue;
      const p = parse(await runOnce(k));
      if (p.failed) { runs[k].failed = p.failed; console.error(`virtio-net-tcp: ${k}: ${p.failed}`); continue; }
      runs[k].ok.push(p);
      console.error(`virtio-net-tcp: ${k} run ${i + 1}: guest->host ${p.tx.toFixed(1)} MB/s (host clock ${p.txHost.toFixed(1)}), host->guest ${p.rx.toFixed(1)} MB/s; host retransmits ${p.retrans}, tap drops ${p.dropped}`);
    }
  }
  res = runs;
} finally {
  peer?.kill();
  cleanup();
}
const load1 = os.loadavg()[0];

const med = (l, f) => median(l.map((x) => x[f]));
const rows = [];
const m = {};
for (const k of keys) {
  const r = res[k];
  if (r.failed) continue;
  m[k] = { tx: med(r.ok, 'tx'), txHost: med(r.ok, 'txHost'), rx: med(r.ok, 'rx'), retrans: med(r.ok, 'retrans'), dropped: med(r.ok, 'dropped') };
  rows.push([VM[k].label, m[k].tx.toFixed(1), m[k].txHost.toFixed(1), m[k].rx.toFixed(1), m[k].retrans.toFixed(0), m[k].dropped.toFixed(0)]);
}
const x = (a, b) => `${(a / b).toFixed(2)}x`;
if (m.bhyve && m.qemu) rows.push(['ratio bhyve-kvm / QEMU', x(m.bhyve.tx, m.qemu.tx), x(m.bhyve.txHost, m.qemu.txHost), x(m.bhyve.rx, m.qemu.rx), '', '']);
const table = mdTable(['VMM', 'guest -> host MB/s (guest TSC)', 'guest -> host MB/s (host clock)', 'host -> guest MB/s',
  'host TCP retransmits per run', 'frames the tap dropped per run'], rows);
const notes = keys.filter((k) => res[k].failed).map((k) => `${VM[k].label}: skipped, the run failed (${res[k].failed}).`);
console.log(table);
for (const n of notes) console.log(n);
const host = await hostInfo();
// every run's figures, so the spread on a shared host is on record
const spread = keys.filter((k) => !res[k].failed).map((k) => `- ${VM[k].label}: guest -> host ${res[k].ok.map((p) => p.tx.toFixed(1)).join(', ')};`
  + ` host -> guest ${res[k].ok.map((p) => p.rx.toFixed(1)).join(', ')} MB/s`).join('\n');
const closing = m.bhyve && m.qemu
  ? `In this run, bhyve-kvm with its defaults against QEMU: guest -> host ${x(m.bhyve.tx, m.qemu.tx)}, host -> guest ${x(m.bhyve.rx, m.qemu.rx)}.`
  : 'bhyve-kvm or QEMU failed in this run: no ratios.';
const body = `### TCP throughput with lwIP (bench/virtio-net-tcp.mjs)

Host: ${host}; load average ${load0.toFixed(1)} / ${load1.toFixed(1)} (1 min, at the start and at the end of the runs)

\`sudo node bench/virtio-net-tcp.mjs\` — tcp.rom: Debian's lwIP 2.1.3
(\`liblwip.so.0\` of the liblwip0 package, unmodified, loaded and relocated
into the ROM at build time by scripts/lwip-image.mjs) as the guest's TCP/IP
stack, its raw API driven from one polling loop in ring 3 over the same
virtio-net driver as virtio-net.rom (256-entry queues, no interrupts, 2 KiB
buffers, no offloads negotiated, kicks unless NO_NOTIFY). lwIP as Debian
builds it: MSS 1460, a 64 KiB window (scale 1) and send buffer, checksums in
software. The host end is a node \`net\` server (test/guests/tcp/host-peer.mjs)
on the tap (10.0.2.2/24, MTU 1500) in a network namespace the script
creates; each VMM runs under \`ip netns exec\`: bhyve-kvm \`-s
3,virtio-net,tap0\` (defaults), QEMU \`-netdev tap,...,script=no -device
virtio-net-pci,netdev=n0,disable-legacy=on\`. Each run sends ${MIB} MiB from the
guest to 10.0.2.2:5001 (timed from the connection to the last byte
acknowledged, guest TSC; and first to last byte at the host), then receives
${MIB} MiB from 10.0.2.2:5002 (first to last byte, guest TSC). Byte counts are
checked here; the data itself (CRC-32 both ways) by
test/integration/tcp-guest.test.ts. The last two columns count, per run
(both directions), the host's TCP retransmissions (\`RetransSegs\`) and the
frames the tap dropped because the VMM had not read them (\`tx_dropped\`).
Runs interleaved, median of ${REPS}; the host is shared (2 CPUs), so single
runs vary.

What bounds it: a 64 KiB window (host -> guest) or send buffer (guest ->
host) lets each direction have at most 64 KiB unacknowledged, so a stream
moves 64 KiB per round trip: guest's kick or poll -> VMM -> tap -> host TCP
-> tap -> VMM -> guest's ring. These rows measure that round trip under
load, each hop a thread the host's two CPUs must schedule, more than the
data path's bandwidth (the UDP rows above bound that).

${table}
${notes.map((n) => `\n${n}`).join('')}
Every run (MB/s, in order):

${spread}

${closing}
`;
if (!opt['no-write']) console.log(`written to ${writeSection('virtio-net-tcp', body)}`);
process.exit(0);
