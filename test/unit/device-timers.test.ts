// Device timers: the device side arms deadlines in shared memory, the host
// side sleeps until the earliest and fires; both run in this thread here.
import { describe, expect, it } from 'vitest';
import { createTimerTable, DeviceTimerHost, DeviceTimers } from '../../src/vmm/device-timers.js';

const MS = 1_000_000n;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** Waits for cond (generous: a loaded CI host may run timers late). */
async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await sleep(2);
  }
}

function setup(): { timers: DeviceTimers; host: DeviceTimerHost; fires: () => number } {
  const sab = createTimerTable();
  const timers = new DeviceTimers(sab);
  let fires = 0;
  const host = new DeviceTimerHost(sab, () => { fires++; timers.runExpired(); });
  host.start();
  return { timers, host, fires: () => fires };
}

describe('device timers', () => {
  it('fires a one-shot timer at its deadline, not before', async () => {
    const { timers, host } = setup();
    const hits: bigint[] = [];
    const t = timers.create(() => hits.push(process.hrtime.bigint()));
    const deadline = t.now() + 30n * MS;
    t.armAt(deadline);
    await sleep(10);
    if (process.hrtime.bigint() < deadline) expect(hits).toHaveLength(0);
    await until(() => hits.length > 0);
    expect(hits[0] >= deadline).toBe(true);
    await sleep(40);
    expect(hits).toHaveLength(1); // one-shot
    host.stop();
  });

  it('supports periodic re-arming from the callback and cancellation', async () => {
    const { timers, host } = setup();
    let n = 0;
    const t = timers.create(() => { n++; if (n < 3) t.armAt(t.now() + 5n * MS); });
    t.armAt(t.now() + 5n * MS);
    await until(() => n >= 3);
    await sleep(30);
    expect(n).toBe(3);
    const c = timers.create(() => { throw new Error('cancelled timer fired'); });
    c.armAt(c.now() + 20n * MS);
    c.cancel();
    await sleep(60);
    host.stop();
  });

  it('runs the earliest of several timers first', async () => {
    const { timers, host } = setup();
    const order: string[] = [];
    const a = timers.create(() => order.push('a'));
    const b = timers.create(() => order.push('b'));
    a.armAt(a.now() + 40n * MS);
    b.armAt(b.now() + 10n * MS);
    await until(() => order.length === 2);
    expect(order).toEqual(['b', 'a']);
    host.stop();
  });

  it('runs timers found expired together in deadline order (a late wake-up)', () => {
    const sab = createTimerTable();
    const timers = new DeviceTimers(sab);
    const order: string[] = [];
    const a = timers.create(() => order.push('a'));
    const b = timers.create(() => order.push('b'));
    const c = timers.create(() => { order.push('c'); a.cancel(); });
    const now = process.hrtime.bigint();
    a.armAt(now - 1n * MS);
    b.armAt(now - 3n * MS);
    c.armAt(now - 2n * MS);
    timers.runExpired();
    expect(order).toEqual(['b', 'c']); // c, due before a, cancelled it
  });
});
