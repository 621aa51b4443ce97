// Device timers: the device side arms deadlines in shared memory, the host
// side sleeps until the earliest and fires; both run in this thread here.
import { describe, expect, it } from 'vitest';
import { createTimerTable, DeviceTimerHost, DeviceTimers } from '../../src/vmm/device-timers.js';

const MS = 1_000_000n;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

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
    expect(hits).toHaveLength(0);
    await sleep(80);
    expect(hits).toHaveLength(1);
    expect(hits[0] >= deadline).toBe(true);
    host.stop();
  });

  it('supports periodic re-arming from the callback and cancellation', async () => {
    const { timers, host } = setup();
    let n = 0;
    const t = timers.create(() => { n++; if (n < 3) t.armAt(t.now() + 5n * MS); });
    t.armAt(t.now() + 5n * MS);
    await sleep(150);
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
    await sleep(120);
    expect(order).toEqual(['b', 'a']);
    host.stop();
  });
});
