#!/usr/bin/env node
// PCI 16550 echo throughput: uart.rom (test/guests/uart/uart.c) echoes N
// bytes the host sends on the port's TCP backend, on our bhyve
// (-s 5,uart,tcp=127.0.0.1:PORT) and on QEMU (-device pci-serial on a
// socket chardev), by polling and by INTx (16-byte bursts per THR-empty
// interrupt, received bytes read after a received-data interrupt).
// Timed on the host from the write of the whole buffer to the last echoed
// byte; median of --reps runs, interleaved.
// Usage: node bench/pci-uart.mjs [--bytes 16384] [--reps 3] [--no-write]
import net from 'node:net';
import { spawn, execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ROOT, VMMS, buildGuests, hostInfo, mdTable, median, patchedRom, writeSection } from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    bytes: { type: 'string', default: '16384' },
    reps: { type: 'string', default: '3' },
    'no-write': { type: 'boolean', default: false },
  },
});
const N = Number(opt.bytes);
const REPS = Number(opt.reps);
const MODES = { poll: 0, intx: 3 };

execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { stdio: 'inherit', cwd: fileURLToPath(new URL('..', import.meta.url)) });
await buildGuests();

function romFor(mode) {
  return patchedRom('uart', N, mode);
}

async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

function argvFor(key, romPath, port) {
  const [cmd, args] = VMMS[key].argv(romPath);
  if (key === 'bhyve') return [cmd, [...args.slice(0, -1), '-s', `5,uart,tcp=127.0.0.1:${port}`, args.at(-1)]];
  return [cmd, [...args, '-chardev', `socket,id=c0,host=127.0.0.1,port=${port},server=on,wait=off`, '-device', 'pci-serial,chardev=c0']];
}

/** One run: ms from sending the buffer to the last byte of its echo. */
async function once(key, mode) {
  const port = await freePort();
  const [cmd, args] = argvFor(key, romFor(mode), port);
  const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d.toString('latin1'); });
  child.stderr.on('data', (d) => { out += d.toString('latin1'); });
  const exited = new Promise((r) => child.on('close', (code) => r(code)));
  const data = Buffer.alloc(N);
  for (let i = 0; i < N; i++) data[i] = (i * 7 + 3) & 0xff;
  const deadline = Date.now() + 120_000;
  while (!out.includes('ready to echo') && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 20));
  let ms = null;
  if (out.includes('ready to echo')) {
    ms = await new Promise((resolve) => {
      const sock = net.connect(port, '127.0.0.1');
      let got = 0;
      let t0;
      sock.on('connect', () => { t0 = process.hrtime.bigint(); sock.write(data); });
      sock.on('data', (b) => {
        got += b.length;
        if (got >= N) { resolve(Number(process.hrtime.bigint() - t0) / 1e6); sock.destroy(); }
      });
      sock.on('error', () => resolve(null));
      setTimeout(() => { sock.destroy(); resolve(null); }, 120_000).unref();
    });
  }
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const code = await exited;
  clearTimeout(timer);
  await VMMS[key].cleanup();
  if (ms === null || code !== 33 || !out.includes(`uart: echoed ${N} bytes`)) {
    console.error(`${key} ${mode}: failed (exit ${code}):\n${out.split('\n').slice(-6).join('\n')}`);
    return null;
  }
  return ms;
}

const results = {};
for (const key of ['bhyve', 'qemu']) for (const m of Object.keys(MODES)) results[`${key}/${m}`] = [];
for (let i = 0; i < REPS; i++) {
  for (const [m, mode] of Object.entries(MODES)) {
    for (const key of ['bhyve', 'qemu']) {
      const ms = await once(key, mode);
      if (ms !== null) results[`${key}/${m}`].push(ms);
      console.error(`${key} ${m}: ${ms === null ? 'failed' : `${ms.toFixed(0)} ms`}`);
    }
  }
}
const kbs = (xs) => (xs.length ? (N / 1024) / (median(xs) / 1000) : null);
const f = (v) => (v === null ? '–' : v.toFixed(1));
const rows = [];
for (const key of ['bhyve', 'qemu']) {
  const p = results[`${key}/poll`];
  const x = results[`${key}/intx`];
  rows.push([VMMS[key].label, f(kbs(p)), p.length ? median(p).toFixed(0) : '–', f(kbs(x)), x.length ? median(x).toFixed(0) : '–']);
}
const ratio = (m) => {
  const a = kbs(results[`bhyve/${m}`]);
  const b = kbs(results[`qemu/${m}`]);
  return a !== null && b !== null ? `${(a / b).toFixed(2)}x` : '–';
};
rows.push(['ratio bhyve-kvm / QEMU', ratio('poll'), '', ratio('intx'), '']);
const body = `## PCI uart echo throughput

\`node bench/pci-uart.mjs\` — uart.rom echoes ${N} bytes the host sends on the PCI 16550's TCP backend:
bhyve-kvm \`-s 5,uart,tcp=127.0.0.1:PORT\`, QEMU \`-chardev socket,...,server=on -device pci-serial\`. Polling: the guest
(ring 3) polls LSR; INTx: it takes received bytes after a received-data interrupt and sends 16-byte bursts after a THR-empty
interrupt (the ring-0 handler, interpreted by KVM on kvm_pvm hosts, writes IER = 0). Every register access is a port-I/O exit.
Timed on the host from writing the buffer to receiving its last echoed byte; median of ${REPS} runs.

Host: ${await hostInfo()}

${mdTable(['VMM', 'polling KiB/s', 'polling ms', 'INTx KiB/s', 'INTx ms'], rows)}
`;
console.log(body);
if (!opt['no-write']) console.error(`wrote ${writeSection('pci-uart', body)}`);
