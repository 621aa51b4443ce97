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
// Three guest modes: polling, MSI-X and INTx (both halt when idle, NAPI-like).
// 256 MiB by default: at 64 MiB the host -> guest phase lasts ~0.2 s, much
// of it the VMM's JIT warming the receive path up (as the disk benches
// found at 128 MiB), not the stream.
// Usage: sudo node bench/virtio-net-tcp.mjs [--mib 256] [--reps 5] [--modes poll,msix,intx] [--no-write]
//          [--only bhyve,bhyveTx,bhyveExit,bhyveB,bhyveOpts,qemu]  (bhyveTx: iothread_tx=true, bhyveExit: iothread=false)
// A/B against another build: BENCH_BHYVE_B=/path/to/other/bin/bhyve adds bhyveB (its defaults);
// BENCH_NET_OPTS=key=val,... adds bhyveOpts (this build with those slot options).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import os from 'node:os';
import { median, mdTable, hostInfo, writeSection, buildGuests, rom, VMMS, ROOT, BENCH_TMP, PARAM_OFFSET, bhyveVmm } from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    mib: { type: 'string', default: '256' },
    reps: { type: 'string', default: '5' },
    only: { type: 'string' },
    modes: { type: 'string', default: 'poll,msix,intx' },
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
// (bin/bhyve runs dist/bundle/: npm run build, not tsc alone)
execFileSync('npm', ['run', '-s', 'build'], { stdio: 'inherit', cwd: ROOT });
await buildGuests();
if (!existsSync(rom('tcp'))) {
  console.error('virtio-net-tcp: build/guests/tcp.rom is not built: install liblwip0 and liblwip-dev (apt-get install liblwip0 liblwip-dev)');
  process.exit(4);
}
const BYTES = MIB << 20;
/** The guest's interrupt modes (the mode word, test/guests/virtio/irq.h). */
const MODES = { poll: { label: 'polling', word: 0 }, msix: { label: 'MSI-X', word: 1 }, intx: { label: 'INTx', word: 3 } };
/** tcp.rom with the parameter (bit 30: no CRC; the integration test checks
 * the data, here both ends only count) and the mode word set, in its last 64 KiB. */
function romFor(mode) {
  const out = join(BENCH_TMP, `tcp-${MIB}-${mode}.rom`);
  copyFileSync(rom('tcp'), out);
  const b = readFileSync(out);
  b.writeUInt32LE(((1 << 30) | (MIB * 1024)) >>> 0, b.length - 0x10000 + PARAM_OFFSET);
  b.writeUInt32LE(MODES[mode].word, b.length - 0x10000 + PARAM_OFFSET + 4);
  writeFileSync(out, b);
  return out;
}

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
  ...(process.env.BENCH_BHYVE_B ? { bhyveB: { label: `bhyve-kvm (${process.env.BENCH_BHYVE_B}), -s virtio-net,tap0`, vmm: bhyveVmm(process.env.BENCH_BHYVE_B, 'B'), extra: ['-s', '3,virtio-net,tap0'], before: true, optional: true } } : {}),
  ...(process.env.BENCH_NET_OPTS ? { bhyveOpts: { label: `${VMMS.bhyve.label}, -s virtio-net,tap0,${process.env.BENCH_NET_OPTS}`, vmm: VMMS.bhyve, extra: ['-s', `3,virtio-net,tap0,${process.env.BENCH_NET_OPTS}`], before: true, optional: true } } : {}),
  qemu: { label: `${VMMS.qemu.label}, virtio-net-pci`, vmm: VMMS.qemu, extra: ['-netdev', 'tap,id=n0,ifname=tap0,script=no,downscript=no', '-device', 'virtio-net-pci,netdev=n0,disable-legacy=on'] },
};
const vmKeys = Object.keys(VM).filter((k) => (opt.only ? opt.only.split(',').includes(k) : !VM[k].optional));
const modes = opt.modes.split(',');
for (const md of modes) if (!MODES[md]) { console.error(`virtio-net-tcp: unknown mode ${md} (poll, msix, intx)`); cleanup(); process.exit(4); }
/** The runs: every VMM in every mode, as "vm/mode". */
const keys = modes.flatMap((md) => vmKeys.map((k) => `${k}/${md}`));
const roms = Object.fromEntries(modes.map((md) => [md, romFor(md)]));
const label = (key) => { const [k, md] = key.split('/'); return `${VM[k].label}, ${MODES[md].label}`; };

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

/** utime + stime of a process (all its threads), in seconds. */
function cpuSecs(pid) {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch { return NaN; }
}

/** One VM run: its guest's output, and the peer's reports of its two connections. */
function runOnce(key) {
  const [k, md] = key.split('/');
  const v = VM[k];
  const [cmd, args] = v.vmm.argv(roms[md]);
  // bhyve: the slot goes before the VM name (its last argument); QEMU: anywhere
  const full = v.before ? [...args.slice(0, -1), ...v.extra, args[args.length - 1]] : [...args, ...v.extra];
  reports = [];
  const c0 = hostCounters();
  return new Promise((resolve) => {
    const [c, a] = inNs(cmd, full);
    const child = spawn(c, a, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let out = ''; let err = '';
    const timer = setTimeout(() => { try { process.kill(-child.pid, 'SIGKILL'); } catch { child.kill('SIGKILL'); } err += '\ntimed out'; }, 300_000);
    // the VMM's CPU time (all threads, the vCPU's guest time included) at
    // each phase's start and end, as the guest's lines announce them
    const cpu = {};
    const marks = [['s0', 'tcp: connected to 10.0.2.2:5001'], ['s1', 'tcp: sent '], ['r0', 'tcp: connected to 10.0.2.2:5002'], ['r1', 'tcp: received ']];
    child.stdout.on('data', (d) => {
      out += d.toString('latin1');
      for (const [m, text] of marks) if (cpu[m] === undefined && out.includes(text)) cpu[m] = cpuSecs(child.pid);
    });
    child.stderr.on('data', (d) => { err += d; });
    child.on('close', async (code) => {
      clearTimeout(timer);
      await v.vmm.cleanup();
      for (let i = 0; i < 40 && reports.length < 2; i++) await new Promise((r) => setTimeout(r, 50));
      const c1 = hostCounters();
      resolve({ code, out, err, reports, retrans: c1.retrans - c0.retrans, dropped: c1.dropped - c0.dropped,
        cpuTx: cpu.s1 - cpu.s0, cpuRx: cpu.r1 - cpu.r0 });
    });
  });
}

function parse(r) {
  const num = (re) => { const m = r.out.match(re); return m ? m.slice(1).map(Number) : null; };
  const hz = num(/bench: tsc_hz (\d+)/);
  const sent = num(/tcp: sent (\d+) bytes in (\d+) cycles/);
  const got = num(/tcp: received (\d+) bytes in (\d+) cycles/);
  const sink = r.reports.find((x) => x.port === 5001);
  const irq = num(/tcp: interrupts: \S+ rx vector [0-9a-f]+ (\d+), (\d+) halts, (\d+) ended/);
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
    // the VMM's CPU milliseconds per MiB in each phase (connection to the
    // guest's report, its close included; a polling guest's vCPU counts in full)
    cpuTx: (r.cpuTx * 1000) / MIB, cpuRx: (r.cpuRx * 1000) / MIB,
    // interrupt mode: halts the tick ended with a frame already in the ring
    late: irq ? irq[2] : null, halts: irq ? irq[1] : null,
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
      console.error(`virtio-net-tcp: ${k} run ${i + 1}: guest->host ${p.tx.toFixed(1)} MB/s (host clock ${p.txHost.toFixed(1)}), host->guest ${p.rx.toFixed(1)} MB/s; VMM CPU ${p.cpuTx.toFixed(1)} / ${p.cpuRx.toFixed(1)} ms per MiB; host retransmits ${p.retrans}, tap drops ${p.dropped}${p.halts !== null ? `, ${p.late} of ${p.halts} halts ended late` : ''}`);
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
  const irqRuns = r.ok.filter((p) => p.halts !== null);
  m[k] = { tx: med(r.ok, 'tx'), txHost: med(r.ok, 'txHost'), rx: med(r.ok, 'rx'), retrans: med(r.ok, 'retrans'), dropped: med(r.ok, 'dropped'),
    late: irqRuns.length ? `${med(irqRuns, 'late').toFixed(0)} of ${med(irqRuns, 'halts').toFixed(0)}` : '' };
  rows.push([label(k), m[k].tx.toFixed(1), m[k].txHost.toFixed(1), m[k].rx.toFixed(1), m[k].retrans.toFixed(0), m[k].dropped.toFixed(0), m[k].late]);
}
const x = (a, b) => `${(a / b).toFixed(2)}x`;
const ratios = [];
for (const md of modes) {
  const b = m[`bhyve/${md}`]; const q = m[`qemu/${md}`];
  if (b && q) {
    rows.push([`ratio bhyve-kvm / QEMU, ${MODES[md].label}`, x(b.tx, q.tx), x(b.txHost, q.txHost), x(b.rx, q.rx), '', '', '']);
    ratios.push(`${MODES[md].label}: guest -> host ${x(b.tx, q.tx)}, host -> guest ${x(b.rx, q.rx)}`);
  }
}
const table = mdTable(['VMM, guest mode', 'guest -> host MB/s (guest TSC)', 'guest -> host MB/s (host clock)', 'host -> guest MB/s',
  'host TCP retransmits per run', 'frames the tap dropped per run', 'halts ended by the tick with a frame waiting'], rows);
const notes = keys.filter((k) => res[k].failed).map((k) => `${label(k)}: skipped, the run failed (${res[k].failed}).`);
console.log(table);
for (const n of notes) console.log(n);
const host = await hostInfo();
// every run's figures, so the spread on a shared host is on record
const spread = keys.filter((k) => !res[k].failed).map((k) => `- ${label(k)}: guest -> host ${res[k].ok.map((p) => p.tx.toFixed(1)).join(', ')};`
  + ` host -> guest ${res[k].ok.map((p) => p.rx.toFixed(1)).join(', ')} MB/s`).join('\n');
const closing = ratios.length
  ? `In this run, bhyve-kvm with its defaults against QEMU: ${ratios.join('; ')}.`
  : 'bhyve-kvm or QEMU failed in this run: no ratios.';
const body = `### TCP throughput with lwIP (bench/virtio-net-tcp.mjs)

Host: ${host}; load average ${load0.toFixed(1)} / ${load1.toFixed(1)} (1 min, at the start and at the end of the runs)

\`sudo node bench/virtio-net-tcp.mjs\` — tcp.rom: Debian's lwIP 2.1.3
(\`liblwip.so.0\` of the liblwip0 package, unmodified, loaded and relocated
into the ROM at build time by scripts/lwip-image.mjs) as the guest's TCP/IP
stack, its raw API driven from one loop in ring 3 over the same virtio-net
driver as virtio-net.rom (256-entry queues, 2 KiB buffers, no offloads
negotiated, kicks unless NO_NOTIFY). Three guest modes: polling (the loop
spins on the used rings and takes no interrupts: INTx disabled, MSI and
MSI-X off, VIRTQ_AVAIL_F_NO_INTERRUPT set), MSI-X (a round that finds nothing to do turns
receive interrupts on, checks the ring once more and halts until an
interrupt, as Linux's NAPI; transmit completions are polled), and INTx (the
same on the legacy interrupt line, the ISR read at each). lwIP as Debian
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
test/integration/tcp-guest.test.ts. Per run (both directions), the host's
TCP retransmissions (\`RetransSegs\`), the frames the tap dropped because the
VMM had not read them (\`tx_dropped\`) and, with MSI-X, how many of the
guest's halts the ~100 Hz timer tick ended while a received frame was
already in the ring (its interrupt late or lost; each costs up to 10 ms).
Runs interleaved, median of ${REPS}; the host is shared (2 CPUs), so single
runs vary.

What bounds it: a 64 KiB window (host -> guest) or send buffer (guest ->
host) lets each direction have at most 64 KiB unacknowledged, so a stream
moves 64 KiB per round trip: guest's kick or poll -> VMM -> tap -> host TCP
-> tap -> VMM -> guest's ring (and, with MSI-X, its interrupt). These rows
measure that round trip under load, each hop a thread the host's two CPUs
must schedule, more than the data path's bandwidth (the UDP rows above
bound that). A polling guest also keeps one of those two CPUs busy while
it waits; halting (MSI-X) gives it to the VMM's threads and the host's
stack, which can make the interrupt mode the faster one here.

${table}
${notes.map((n) => `\n${n}`).join('')}
Every run (MB/s, in order):

${spread}

${closing}

Before the virtio-net I/O thread raised its queue interrupts by irqfd (13:24
UTC, load 14-17, median of 3, same script): MSI-X guest -> host 0.68x,
host -> guest 1.26x, with 299 of 1935 halts ended by the tick with a frame
waiting (QEMU 359 of 3210); polling 1.14x and 1.82x.
`;
if (!opt['no-write']) console.log(`written to ${writeSection('virtio-net-tcp', body)}`);
process.exit(0);
