// The bounded fuzz run of `npm test`: every target for a short time from a
// fixed seed (FUZZ_SEED and FUZZ_MS change them), plus checks that the
// harness's oracles do catch what they are meant to. The long run is
// `npm run fuzz` (FUZZING.md).
import { describe, expect, it } from 'vitest';
import { formatFinding, runTarget, type FuzzTarget } from './harness.js';
import { knownDefect } from './known.js';
import { TARGETS } from './targets/index.js';
import { FuzzMachine } from './machine.js';
import { VirtioRnd } from '../../src/devices/virtio/virtio-rnd.js';
import { createQueues } from '../../src/devices/virtio/virtio-device.js';
import { installFaultHooks } from './oracle.js';

const SEED = Number(process.env.FUZZ_SEED ?? 1);
const MS = Number(process.env.FUZZ_MS ?? 1500);

describe('fuzz targets (bounded run)', () => {
  for (const t of TARGETS) {
    it(`${t.name}: no crash, hang, out-of-bounds access or broken invariant (seed ${SEED}, ${MS} ms)`, async () => {
      const r = await runTarget(t, { seed: SEED, ops: 10_000_000, timeMs: MS, opBoundMs: 1000 });
      const fresh = r.findings.filter((f) => !knownDefect(f));
      expect(fresh.map(formatFinding), `replay: npm run fuzz -- --target ${t.name} --seed <seed> --ops <op+1>`).toEqual([]);
      expect(r.ops).toBeGreaterThan(t.mainThread ? 10 : 100); // it got going (a loaded host runs fewer)
    }, MS + 60_000);
  }

  it('is reproducible: the same seed drives the same operations', async () => {
    for (const name of ['virtio-net', 'hpet', 'fwcfg']) {
      const t = TARGETS.find((x) => x.name === name)!;
      const a = await runTarget(t, { seed: 7, ops: 3000 });
      const b = await runTarget(t, { seed: 7, ops: 3000 });
      expect(b.stats, name).toEqual(a.stats);
      expect(Object.values(a.stats).some((v) => v > 0), name).toBe(true);
    }
  });
});

describe('fuzz oracles', () => {
  const target = (name: string, step: (m: FuzzMachine) => void): FuzzTarget => ({
    name, surface: 'test', create: (rng) => { const m = new FuzzMachine(rng); return { step: () => step(m) }; },
  });

  it('an exception escaping a guest operation is a crash, a RangeError an out-of-bounds access', async () => {
    let n = 0;
    const r1 = await runTarget(target('t1', () => { if (++n === 5) throw new TypeError('boom'); }), { seed: 1, ops: 10 });
    expect(r1.findings.map((f) => [f.kind, f.seed, f.op])).toEqual([['crash', 1, 4]]);
    const r2 = await runTarget(target('t2', (m) => { new DataView(m.ram.buffer).getUint32(m.ram.length); }), { seed: 3, ops: 1 });
    expect(r2.findings[0].kind).toBe('out-of-bounds');
  });

  it('an operation over the time bound is a hang', async () => {
    const r = await runTarget(target('t3', () => { const end = performance.now() + 30; while (performance.now() < end); }), { seed: 1, ops: 1, opBoundMs: 10 });
    expect(r.findings[0].kind).toBe('hang');
  });

  it('a host bug hidden behind virtio needs-reset is reported', async () => {
    installFaultHooks();
    const r = await runTarget({
      name: 't4', surface: 'test',
      create: (rng) => {
        const m = new FuzzMachine(rng);
        const dev = new VirtioRnd();
        dev.ackFeatures(0n);
        dev.activate({ mem: m.mem, queues: createQueues(m.mem, [{ size: 4, desc: 0x1000, avail: 0x2000, used: 0x3000 }], 0n, [64]), interrupt: { queue: () => {}, config: () => {} }, needsReset: () => {} });
        // A processQueue that fails the way a host bug does.
        (dev as unknown as { processQueue: () => void }).processQueue = () => { new Uint8Array(4).subarray(0, 8)[7].toString(); };
        return { step: () => dev.queueNotify(0) };
      },
    }, { seed: 1, ops: 3, maxFindings: 1 });
    expect(r.findings.map((f) => f.kind)).toEqual(['hidden-fault']);
  });
});
