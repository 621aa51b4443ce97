#!/usr/bin/env node
// The device side of a split virtqueue alone (no VM): ns per request for
// pop + pushUsed + needsInterrupt of a 2-descriptor chain (process CPU
// time), on
//   - untranslated rings (no IOMMU: the default path),
//   - rings behind an IOMMU on contiguous guest pages (one view each),
//   - rings behind an IOMMU on scattered guest pages (a view per page).
// It shows what handling scattered rings costs each path (the first two
// must not move). Usage: node bench/virtqueue-ring.mjs [--ops 1000000]
// [--reps 5] [--module dist/devices/virtio/virtqueue.js] (another build of
// virtqueue.js to compare against). Prints a table; writes nothing.
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const { values: opt } = parseArgs({
  options: { ops: { type: 'string', default: '1000000' }, reps: { type: 'string', default: '5' }, module: { type: 'string' } },
});
const OPS = Number(opt.ops);
const REPS = Number(opt.reps);
const root = new URL('../', import.meta.url);
const vqPath = opt.module ? pathToFileURL(resolve(opt.module)).href : new URL('dist/devices/virtio/virtqueue.js', root).href;
const { Virtqueue, DescriptorChain } = await import(vqPath);
const { GuestMemory } = await import(new URL('dist/sys/guest-memory.js', root).href);
const { TranslatedDmaSpace, DMA_READ, DMA_WRITE } = await import(new URL('dist/devices/iommu/dma-space.js', root).href);

const SIZE = 512;
const RAM = 4 << 20;
const IOVA = 0x10000000;

function setup(mode) {
  const bytes = new Uint8Array(RAM);
  const dv = new DataView(bytes.buffer);
  const mem = new GuestMemory([{ gpa: 0, bytes }]);
  // Rings at GPA 0x100000: desc 8 KiB (two pages), avail at 0x2000, used
  // from 0x2800 into the fourth page; buffers at 0x200000.
  const ringGpa = [0x100000, 0x101000, 0x102000, 0x103000];
  let dma;
  let gpaOf = (a) => a;
  let base = 0x100000;
  if (mode !== 'untranslated') {
    // Scattered: the four ring pages in reverse order.
    const pages = mode === 'scattered' ? [0x303000, 0x302000, 0x301000, 0x300000] : ringGpa;
    const maps = [
      ...pages.map((g, i) => ({ iova: IOVA + 0x1000 * i, gpa: g, length: 0x1000, access: DMA_READ | DMA_WRITE })),
      { iova: IOVA + 0x100000, gpa: 0x200000, length: 0x10000, access: DMA_READ | DMA_WRITE },
    ];
    dma = new TranslatedDmaSpace(0x20, [{ gpa: 0, length: RAM }]);
    dma.attach({ lookup: (iova) => maps.find((m) => iova >= m.iova && iova < m.iova + m.length), mappings: () => maps });
    gpaOf = (a) => { const m = maps.find((x) => a >= x.iova && a < x.iova + x.length); return m.gpa + (a - m.iova); };
    base = IOVA;
  }
  const desc = base, avail = base + 0x2000, used = base + 0x2800, buf = base + 0x100000;
  const q = new Virtqueue(mem, { size: SIZE, desc, avail, used }, { dma });
  for (let h = 0; h < SIZE; h += 2) {
    const a = gpaOf(desc + 16 * h);
    dv.setBigUint64(a, BigInt(buf + 64 * h), true); dv.setUint32(a + 8, 16, true); dv.setUint16(a + 12, 1, true); dv.setUint16(a + 14, h + 1, true);
    dv.setBigUint64(a + 16, BigInt(buf + 64 * h + 16), true); dv.setUint32(a + 24, 48, true); dv.setUint16(a + 28, 2, true);
  }
  const availIdxAt = gpaOf(avail + 2);
  const ringAt = [];
  for (let k = 0; k < SIZE; k++) ringAt.push(gpaOf(avail + 4 + 2 * k));
  return { q, dv, availIdxAt, ringAt };
}

function run(mode) {
  const { q, dv, availIdxAt, ringAt } = setup(mode);
  const chain = new DescriptorChain();
  let idx = 0;
  // CPU time, not wall time: the hosts are shared and loaded.
  const t0 = process.cpuUsage();
  for (let n = 0; n < OPS; n++) {
    const head = (n * 2) % SIZE;
    dv.setUint16(ringAt[idx % SIZE], head, true);
    idx = (idx + 1) & 0xffff;
    dv.setUint16(availIdxAt, idx, true);
    q.pop(chain);
    q.pushUsed(chain.head, 48);
    q.needsInterrupt();
  }
  const t = process.cpuUsage(t0);
  return ((t.user + t.system) * 1000) / OPS;
}

const modes = ['untranslated', 'contiguous', 'scattered'];
const results = Object.fromEntries(modes.map((m) => [m, []]));
for (let r = 0; r < REPS; r++) {
  for (const m of modes) {
    try { results[m].push(run(m)); } catch (e) { results[m].refused = e.message; }
  }
}
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
console.log(`virtqueue-ring: ${OPS} requests x ${REPS} runs, ${vqPath.replace(root.href, '')}`);
console.log('| rings | CPU ns per request (median) | min | max |');
console.log('| --- | --- | --- | --- |');
for (const m of modes) {
  const r = results[m];
  if (r.length === 0) console.log(`| ${m} | refused: ${r.refused} | | |`);
  else console.log(`| ${m} | ${median(r).toFixed(1)} | ${Math.min(...r).toFixed(1)} | ${Math.max(...r).toFixed(1)} |`);
}
