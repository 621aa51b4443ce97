#!/usr/bin/env node
// virtio-net's device model alone, CPU time per frame (no guest, no vCPU,
// no tap): what the data path costs in JavaScript and the read/write calls.
//   TX: VirtioNet.queueNotify(1) on 1514-byte chains (12-byte header +
//       frame in one buffer) from a 256-entry queue in plain memory, the
//       frames written to /dev/null (and to a no-op port);
//   RX: frames written into a packet socket pair, VirtioNet.poll() reading
//       them into the receive queue: 1514-byte frames into 2 KiB buffers,
//       65535-byte frames into 68 KiB buffers, with zerocopy on and off.
// Usage: node bench/virtio-net-device.mjs (after npm run build). Prints one
// line per case (median of 3 rounds); not written to BENCHMARKS.md.
import fs from 'node:fs';

const dist = (p) => new URL(`../dist/${p}`, import.meta.url).href;
const { GuestMemory } = await import(dist('sys/guest-memory.js'));
const { VirtioNet, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF } = await import(dist('devices/virtio/virtio-net.js'));
const { createQueues } = await import(dist('devices/virtio/virtio-device.js'));
const { fdNetPort } = await import(dist('devices/net/net-backend.js'));
const { packetPair } = await import(dist('sys/packet-pair.js'));
const { writeFd } = await import(dist('sys/tap.js'));

const QS = 256;
const MAC = Uint8Array.from([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
const FEATURES = (1n << 32n) | (1n << BigInt(VIRTIO_NET_F_MAC)) | (1n << BigInt(VIRTIO_NET_F_MRG_RXBUF));

/** A split queue in plain memory, refilled as a driver would. */
function makeQueue(bytes, base, buflen, write, fill) {
  const dv = new DataView(bytes.buffer);
  const desc = base; const avail = desc + 16 * QS; const used = (avail + 6 + 2 * QS + 4095) & ~4095;
  const bufs = (used + 6 + 8 * QS + 4095) & ~4095;
  for (let i = 0; i < QS; i++) {
    dv.setBigUint64(desc + 16 * i, BigInt(bufs + buflen * i), true);
    dv.setUint32(desc + 16 * i + 8, write ? buflen : fill, true);
    dv.setUint16(desc + 16 * i + 12, write ? 2 : 0, true);
  }
  let availIdx = 0; let seenUsed = 0; let started = false;
  return {
    layout: { size: QS, desc, avail, used },
    refill() {
      if (!started) {
        started = true;
        for (let i = 0; i < QS; i++) dv.setUint16(avail + 4 + 2 * i, i, true);
        availIdx = QS;
      } else {
        const u = dv.getUint16(used + 2, true);
        for (; seenUsed !== u; seenUsed = (seenUsed + 1) & 0xffff) {
          dv.setUint16(avail + 4 + 2 * (availIdx % QS), dv.getUint32(used + 4 + 8 * (seenUsed % QS), true), true);
          availIdx = (availIdx + 1) & 0xffff;
        }
      }
      dv.setUint16(avail + 2, availIdx, true);
    },
  };
}

function device(opts, port, bytes, layouts) {
  const mem = new GuestMemory([{ gpa: 0, bytes }]);
  const dev = new VirtioNet({ mac: MAC, ...opts }, port);
  dev.ackFeatures(FEATURES);
  const queues = createQueues(mem, layouts, dev.ackedFeatures, dev.queueMaxSizes);
  dev.activate({ mem, queues, interrupt: { queue() {}, config() {} }, needsReset(r) { throw new Error(r); } });
  return dev;
}

const cpuNs = (c) => (c.user + c.system) * 1000;

function tx(sink) {
  const nul = fs.openSync('/dev/null', 'w');
  const bytes = new Uint8Array(QS * 2048 + (1 << 20));
  const q = makeQueue(bytes, 0x10000, 2048, false, 12 + 1514);
  const port = { peek: () => null, consume() {}, send: sink === 'noop' ? () => true : (v) => writeFd(nul, v[0]) >= 0 };
  const dev = device({}, port, bytes, [null, q.layout]);
  const N = 200000;
  const c0 = process.cpuUsage();
  while (dev.stats.txFrames < N) { q.refill(); dev.queueNotify(1); }
  const ns = cpuNs(process.cpuUsage(c0)) / N;
  fs.closeSync(nul);
  return ns;
}

function rx(size, buflen, zeroCopy) {
  const [vm, host] = packetPair();
  const bytes = new Uint8Array(QS * buflen + (1 << 20));
  const q = makeQueue(bytes, 0x10000, buflen, true, 0);
  const dev = device({ zeroCopy }, fdNetPort(vm), bytes, [q.layout, null]);
  q.refill();
  const frame = Buffer.alloc(size, 7);
  const N = size > 10000 ? 10000 : 100000; const B = size > 10000 ? 2 : 32;
  let cpu = 0;
  while (dev.stats.rxFrames < N) {
    for (let i = 0; i < B; i++) fs.writeSync(host, frame);
    const c0 = process.cpuUsage();
    dev.poll();
    cpu += cpuNs(process.cpuUsage(c0));
    q.refill();
  }
  fs.closeSync(vm); fs.closeSync(host);
  return cpu / dev.stats.rxFrames;
}

const cases = [
  ['TX 1514-byte frames to /dev/null', () => tx('devnull')],
  ['TX 1514-byte frames, no-op port', () => tx('noop')],
  ['RX 1514-byte frames into 2 KiB buffers', () => rx(1514, 2048, true)],
  ['RX 65535-byte frames into 68 KiB buffers, zerocopy=true', () => rx(65535, 69632, true)],
  ['RX 65535-byte frames into 68 KiB buffers, zerocopy=false', () => rx(65535, 69632, false)],
];
const results = cases.map(() => []);
for (let round = 0; round < 3; round++) cases.forEach(([, run], i) => results[i].push(run()));
cases.forEach(([label], i) => {
  const v = results[i].sort((a, b) => a - b);
  console.log(`${label}: ${v[1].toFixed(0)} ns CPU per frame (runs ${v.map((x) => x.toFixed(0)).join(', ')})`);
});
