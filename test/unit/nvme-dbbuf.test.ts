// NVMe Doorbell Buffer Config (admin 7Ch, OACS bit 8) and the I/O thread
// that owns the I/O queues once the driver sent it, driven as Linux's nvme
// driver does (nvme_dbbuf_set, nvme_dbbuf_update_and_check_event): the
// tails and heads of the I/O queues in the shadow doorbell page, an MMIO
// doorbell only when the value passes the controller's EventIdx. Hostile
// addresses and shadow values end in the spec's status or are ignored.
// The thread tests run the compiled worker (dist/) on guest RAM in a file
// the test maps and the worker maps again; a doorbell write where the
// device registered an ioeventfd signals the eventfd, as KVM does.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { nvmeIothreadWorker } from '../../src/devices/nvme/nvme-iothread.js';
import { dbbufNeedEvent } from '../../src/devices/nvme/nvme-io.js';
import { mmap, PROT_READ, PROT_WRITE } from '../../src/sys/libc.js';
import { type Cqe, Rig, RAM, RAM_SIZE, SLOT } from './nvme-driver.js';
import { until } from '../support/iothread-harness.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nvme-dbbuf-'));
const undo: Array<() => void> = [];
afterAll(() => {
  for (const u of undo.reverse()) { try { u(); } catch { /* best effort */ } }
  fs.rmSync(tmp, { recursive: true, force: true });
});
let n = 0;
function image(size = 4 << 20, fill?: (b: Buffer) => void): string {
  const p = path.join(tmp, `d${n++}.img`);
  const b = Buffer.alloc(size);
  fill?.(b);
  fs.writeFileSync(p, b);
  return p;
}
const rigs: Rig[] = [];
afterEach(() => { for (const r of rigs.splice(0)) r.dev.close(); });
const disk = (p: string, extra: Record<string, string> = {}) => {
  const s: Record<string, string> = { [`pci.0.${SLOT}.0.path`]: p };
  for (const [k, v] of Object.entries(extra)) s[`pci.0.${SLOT}.0.${k}`] = v;
  return s;
};
function rig(settings: Record<string, string>, opts: ConstructorParameters<typeof Rig>[1] = {}): Rig {
  const r = new Rig(settings, opts);
  rigs.push(r);
  return r;
}

/** One I/O queue pair with id 1: a CQ of 4 entries (3 usable, no
 * interrupts) and an SQ of 16, so that the CQ fills first. */
function smallCqPair(r: Rig): void {
  expect(r.admin(0x09, { cdw: { 10: 7, 11: 0x00010001 } }).sc).toBe(0);
  const cq = r.alloc(4096);
  r.admin(0x05, { prp1: cq, cdw: { 10: 1 | (3 << 16), 11: 1 } });
  r.cq[1] = { base: cq, size: 4, head: 0, phase: 1 };
  const sq = r.alloc(4096);
  r.admin(0x01, { prp1: sq, cdw: { 10: 1 | (15 << 16), 11: 1 | (1 << 16) } });
  r.sq[1] = { base: sq, size: 16, tail: 0 };
}

/** The driver's side of Doorbell Buffer Config. */
class Dbbuf {
  readonly dbs: number;
  readonly eis: number;
  constructor(readonly r: Rig) {
    this.dbs = r.alloc(4096);
    this.eis = r.alloc(4096);
  }
  config(): Cqe { return this.r.admin(0x7c, { prp1: this.dbs, prp2: this.eis }); }
  shadow(q: number, cq = false): number { return this.r.dv.getUint32(this.r.off(this.dbs) + 8 * q + (cq ? 4 : 0), true); }
  eventIdx(q: number, cq = false): number { return this.r.dv.getUint32(this.r.off(this.eis) + 8 * q + (cq ? 4 : 0), true); }
  setShadow(q: number, cq: boolean, v: number): void { this.r.dv.setUint32(this.r.off(this.dbs) + 8 * q + (cq ? 4 : 0), v, true); }
  /** nvme_dbbuf_update_and_check_event(): true when the MMIO write is due. */
  update(q: number, cq: boolean, v: number): boolean {
    const old = this.shadow(q, cq);
    this.setShadow(q, cq, v);
    return dbbufNeedEvent(this.eventIdx(q, cq), v, old);
  }
  /** Rings SQ q as Linux does: the shadow, the MMIO doorbell when due. */
  ring(q: number): boolean {
    const due = this.update(q, false, this.r.sq[q].tail);
    if (due) this.r.wr(0x1000 + 8 * q, this.r.sq[q].tail);
    return due;
  }
  /** Takes a completion of CQ q, its head to the shadow (MMIO when due). */
  take(q: number): Cqe | undefined {
    const c = this.r.cq[q];
    const at = this.r.off(c.base + c.head * 16);
    const status = this.r.dv.getUint16(at + 14, true);
    if ((status & 1) !== c.phase) return undefined;
    c.head = (c.head + 1) % c.size;
    if (c.head === 0) c.phase ^= 1;
    if (this.update(q, true, c.head)) this.r.wr(0x1000 + 8 * q + 4, c.head);
    return {
      cdw0: this.r.dv.getUint32(at, true), sqhd: this.r.dv.getUint16(at + 8, true), sqid: this.r.dv.getUint16(at + 10, true),
      cid: this.r.dv.getUint16(at + 12, true), status, phase: status & 1, sc: (status >> 1) & 0xff, sct: (status >> 9) & 7, dnr: (status & 0x8000) !== 0,
    };
  }
}

describe('nvme: Doorbell Buffer Config (exit path)', () => {
  it('OACS bit 8 is set unless dbbuf=false, which also refuses opcode 7Ch', () => {
    for (const [extra, bit] of [[{}, 1], [{ dbbuf: 'false' }, 0]] as const) {
      const r = rig(disk(image(), extra));
      r.enable();
      const id = r.alloc(4096);
      expect(r.admin(0x06, { prp1: id, cdw: { 10: 1 } }).sc).toBe(0);
      expect((r.dv.getUint16(r.off(id) + 256, true) >> 8) & 1).toBe(bit);
      const d = new Dbbuf(r);
      expect(d.config().sc).toBe(bit ? 0 : 0x01);
    }
  });

  it('hostile buffers: misaligned, outside RAM, one page for both: INVALID FIELD with DNR, nothing changes', () => {
    const r = rig(disk(image()));
    r.enable();
    const page = r.alloc(4096);
    const other = r.alloc(4096);
    for (const [prp1, prp2] of [[page + 8, other], [page, other + 0x800], [0, other], [page, 0x40000000], [page, RAM + RAM_SIZE - 2048], [page, page]]) {
      const c = r.admin(0x7c, { prp1, prp2 });
      expect([c.sc, c.sct, c.dnr], `${prp1.toString(16)} ${prp2.toString(16)}`).toEqual([0x02, 0, true]);
    }
    expect(r.dev.counts.dbbufConfigs).toBe(0);
    // Still the MMIO doorbells: an I/O queue runs from its doorbell value.
    r.ioQueues();
    expect(r.io1(1, 0x00).sc).toBe(0);
    // On an I/O queue 7Ch is no command.
    expect(r.io1(1, 0x7c, { prp1: page, prp2: other }).sc).toBe(0x01);
  });

  it('the I/O SQ tail comes from the shadow doorbell, the EventIdx follows it; a shadow value past the queue is ignored', () => {
    const r = rig(disk(image()));
    r.enable();
    const d = new Dbbuf(r);
    expect(d.config().sc).toBe(0);
    r.ioQueues(16);
    expect([d.shadow(1), d.eventIdx(1)]).toEqual([0, 0]);
    r.put(1, 0x00, { nsid: 1 });
    r.put(1, 0x00, { nsid: 1 });
    expect(d.ring(1)).toBe(true); // EventIdx 0 lies in [0, 2)
    expect(r.dev.counts.ioCommands).toBe(2);
    expect(d.eventIdx(1)).toBe(2);
    // An MMIO value that disagrees with the shadow: the shadow counts.
    r.put(1, 0x00, { nsid: 1 });
    d.setShadow(1, false, 3);
    r.wr(0x1000 + 8, 9);
    expect(r.dev.counts.ioCommands).toBe(3);
    // Past the queue: ignored, nothing runs, and later a good one does.
    d.setShadow(1, false, 1000);
    r.wr(0x1000 + 8, 3);
    expect(r.dev.counts.ioCommands).toBe(3);
    r.put(1, 0x00, { nsid: 1 });
    d.setShadow(1, false, 3);
    d.ring(1);
    expect(r.dev.counts.ioCommands).toBe(4);
    let got = 0;
    while (d.take(1)) got++;
    expect(got).toBe(4);
  });

  it('a full CQ sets its EventIdx to the head it saw, so the driver rings when it frees entries', () => {
    const r = rig(disk(image()));
    r.enable();
    const d = new Dbbuf(r);
    expect(d.config().sc).toBe(0);
    smallCqPair(r);
    for (let i = 0; i < 6; i++) r.put(1, 0x00, { nsid: 1 });
    d.ring(1);
    expect(r.dev.counts.ioCommands).toBe(3);
    expect(d.eventIdx(1, true)).toBe(0);
    const got: Cqe[] = [];
    for (let i = 0; i < 20 && got.length < 6; i++) {
      const c = d.take(1);
      if (c) got.push(c);
    }
    expect(got.length).toBe(6);
    expect(got.every((c) => c.sc === 0)).toBe(true);
  });

  it('a controller reset forgets the buffers: MMIO doorbell values again', () => {
    const r = rig(disk(image()));
    r.enable();
    const d = new Dbbuf(r);
    expect(d.config().sc).toBe(0);
    r.wr(0x14, 0);
    r.enable();
    r.ioQueues();
    d.setShadow(1, false, 40);
    expect(r.io1(1, 0x00).sc).toBe(0);
    expect(r.dev.counts.ioCommands).toBe(1);
  });
});

// ---- the I/O thread ----

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const workerJs = path.join(root, 'dist/devices/nvme/nvme-iothread-worker.js');
const haveWorker = fs.existsSync(workerJs);

/** A rig whose guest RAM is a file the worker maps too, with KVM's
 * ioeventfds, and a doorbell the worker can ring (nobody answers it). */
function threadRig(settings: Record<string, string>): Rig {
  const size = RAM + RAM_SIZE;
  const memoryPath = path.join(tmp, `mem${n++}`);
  fs.writeFileSync(memoryPath, Buffer.alloc(0));
  fs.truncateSync(memoryPath, size);
  const fd = fs.openSync(memoryPath, 'r+');
  const map = mmap(size, PROT_READ | PROT_WRITE, fd, 0, 'test RAM');
  fs.closeSync(fd);
  undo.push(() => map.unmap());
  const runPath = path.join(tmp, `run${n++}`);
  fs.writeFileSync(runPath, Buffer.alloc(4096));
  const runFd = fs.openSync(runPath, 'r+');
  undo.push(() => fs.closeSync(runFd));
  nvmeIothreadWorker.url = new URL(`file://${workerJs}`);
  return rig({ [`pci.0.${SLOT}.0.iothread`]: 'true', ...settings }, {
    ram: map.bytes,
    helper: { memoryPath, layout: { lowmem: size, highmem: 0 }, doorbell: { sab: new SharedArrayBuffer(8), vcpuFd: runFd, mmapSize: 4096 } },
  });
}

/** Waits for a completion on CQ q (the thread posts it). */
async function next(d: Dbbuf, q: number): Promise<Cqe> {
  let c: Cqe | undefined;
  await until(() => (c = d.take(q)) !== undefined, `a completion on CQ ${q}`);
  return c!;
}

describe.skipIf(!haveWorker)('nvme: the I/O thread', () => {
  it('takes the I/O queues after Doorbell Buffer Config: doorbells by eventfd, no exit; reads and writes reach the image; EventIdx follows', async () => {
    const img = image(4 << 20, (b) => { for (let i = 0; i < b.length; i++) b[i] = (i * 7 + (i >> 9)) & 0xff; });
    const r = threadRig(disk(img));
    r.enable();
    const d = new Dbbuf(r);
    expect(d.config().sc).toBe(0);
    r.ioQueues(16);
    expect(r.dev.stats()['iothread starts']).toBe(1);
    // Its doorbells (SQ tail and CQ head of each I/O queue) go to the eventfd.
    expect(r.ioeventfds.has(r.bar0 + 0x1000 + 8)).toBe(true);
    expect(r.ioeventfds.has(r.bar0 + 0x1000 + 12)).toBe(true);
    expect(r.ioeventfds.has(r.bar0 + 0x1000)).toBe(false); // admin SQ
    const buf = r.alloc(8192);
    r.put(1, 0x02, { nsid: 1, prp1: buf, prp2: buf + 4096, cdw: { 10: 8, 12: 15 } }); // 16 sectors from 8
    d.ring(1);
    const c = await next(d, 1);
    expect([c.sc, c.sqid]).toEqual([0, 1]);
    const want = fs.readFileSync(img).subarray(8 * 512, 24 * 512);
    expect(Buffer.from(r.bytes.subarray(r.off(buf), r.off(buf) + 8192)).equals(want)).toBe(true);
    // Once it sleeps, the driver's next tail past 1 must ring (while it
    // spins the entry is one behind the head: no ring needed).
    await until(() => d.eventIdx(1) === 1, 'EventIdx 1');
    // A write of a pattern, then a flush, in one batch.
    const out = r.alloc(4096);
    r.bytes.fill(0xa5, r.off(out), r.off(out) + 4096);
    r.put(1, 0x01, { nsid: 1, prp1: out, cdw: { 10: 100, 12: 7 } });
    r.put(1, 0x00, { nsid: 1 });
    d.ring(1);
    expect((await next(d, 1)).sc).toBe(0);
    expect((await next(d, 1)).sc).toBe(0);
    expect(fs.readFileSync(img).subarray(100 * 512, 108 * 512).every((b) => b === 0xa5)).toBe(true);
    await until(() => r.dev.stats().flushes === 1, 'the thread\'s counts');
    const s = r.dev.stats();
    expect(s).toMatchObject({ ioSqDoorbellExits: 0, 'iothread running': 1, reads: 1, writes: 1, flushes: 1, errors: 0 });
    expect(s['iothread wake-ups']).toBeGreaterThan(0);
  });

  it('hostile: a shadow tail past the queue is ignored, a command outside RAM fails, the thread serves on', async () => {
    const r = threadRig(disk(image()));
    r.enable();
    const d = new Dbbuf(r);
    expect(d.config().sc).toBe(0);
    r.ioQueues(16);
    d.setShadow(1, false, 0xffff);
    r.wr(0x1000 + 8, 0);
    await new Promise((res) => setTimeout(res, 50));
    expect(r.dev.counts.ioCommands).toBe(0);
    d.setShadow(1, false, 0);
    r.put(1, 0x02, { nsid: 1, prp1: 0x7ff00000, cdw: { 12: 0 } }); // data outside RAM
    r.put(1, 0x02, { nsid: 1, prp1: r.alloc(4096), cdw: { 10: 0xffffff, 12: 0 } }); // past the namespace
    r.put(1, 0x00, { nsid: 7 });
    r.put(1, 0x00, { nsid: 1 });
    d.ring(1);
    const sc = [];
    for (let i = 0; i < 4; i++) sc.push((await next(d, 1)).sc);
    expect(sc).toEqual([0x04, 0x80, 0x0b, 0x00]);
    await until(() => r.dev.counts.errors === 3, 'three errors counted');
  });

  it('a full CQ waits for the driver\'s head update, which wakes it through the CQ doorbell\'s eventfd', async () => {
    const r = threadRig(disk(image()));
    r.enable();
    const d = new Dbbuf(r);
    expect(d.config().sc).toBe(0);
    smallCqPair(r);
    const buf = r.alloc(8 * 4096);
    for (let i = 0; i < 8; i++) r.put(1, 0x02, { nsid: 1, prp1: buf + 4096 * i, cdw: { 10: i, 12: 0 } });
    d.ring(1);
    // Three entries, then it waits (the fourth slot would make the CQ look empty).
    await until(() => r.dev.stats()['iothread cq stalls'] > 0, 'a stall');
    expect(d.eventIdx(1, true)).toBe(0);
    const at = (i: number) => r.dv.getUint16(r.off(r.cq[1].base + 16 * i + 14), true) & 1;
    expect([0, 1, 2, 3].map(at)).toEqual([1, 1, 1, 0]);
    const got: Cqe[] = [];
    for (let i = 0; i < 8; i++) got.push(await next(d, 1));
    expect(got.map((c) => c.sc)).toEqual(Array(8).fill(0));
  });

  it('admin commands pause it: a second queue pair created and deleted while it runs; interrupts it cannot send by irqfd come back to the device thread', async () => {
    const r = threadRig(disk(image()));
    r.msix([0x30, 0x31, 0x32]);
    r.enable();
    const d = new Dbbuf(r);
    expect(d.config().sc).toBe(0);
    r.ioQueues(16, 1);
    r.put(1, 0x00, { nsid: 1 });
    d.ring(1);
    expect((await next(d, 1)).sc).toBe(0);
    // No irqfd here: the thread kicked the device thread for the vector.
    await until(() => { r.dev.poll(); return r.irq.msis.some(([, v]) => v === 0x31); }, 'MSI-X vector 1');
    const cq = r.alloc(4096);
    expect(r.admin(0x05, { prp1: cq, cdw: { 10: 2 | (15 << 16), 11: 1 | 2 | (2 << 16) } }).sc).toBe(0);
    r.cq[2] = { base: cq, size: 16, head: 0, phase: 1 };
    const sq = r.alloc(4096);
    expect(r.admin(0x01, { prp1: sq, cdw: { 10: 2 | (15 << 16), 11: 1 | (2 << 16) } }).sc).toBe(0);
    r.sq[2] = { base: sq, size: 16, tail: 0 };
    r.put(2, 0x00, { nsid: 1 });
    r.put(1, 0x00, { nsid: 1 });
    d.ring(2);
    d.ring(1);
    expect((await next(d, 2)).sqid).toBe(2);
    expect((await next(d, 1)).sqid).toBe(1);
    await until(() => { r.dev.poll(); return r.irq.msis.some(([, v]) => v === 0x32); }, 'MSI-X vector 2');
    expect(r.admin(0x00, { cdw: { 10: 2 } }).sc).toBe(0); // delete SQ 2
    expect(r.admin(0x04, { cdw: { 10: 2 } }).sc).toBe(0); // delete CQ 2
    r.put(1, 0x00, { nsid: 1 });
    d.ring(1);
    expect((await next(d, 1)).sc).toBe(0);
    expect(r.dev.stats()['iothread starts']).toBe(1);
  });

  it('a controller reset while it runs stops it and gives the doorbells back; the queues of the next enable run in exits until Doorbell Buffer Config', async () => {
    const r = threadRig(disk(image()));
    r.enable();
    const d = new Dbbuf(r);
    expect(d.config().sc).toBe(0);
    r.ioQueues(64);
    // Commands in flight when CC.EN goes to 0.
    for (let i = 0; i < 40; i++) r.put(1, 0x02, { nsid: 1, prp1: r.alloc(4096), cdw: { 10: i * 8, 12: 7 } });
    d.ring(1);
    r.wr(0x14, 0);
    expect(r.rd(0x1c) & 1).toBe(0);
    expect(r.ioeventfds.size).toBe(0);
    expect(r.dev.stats()['iothread running']).toBe(0);
    r.enable();
    r.ioQueues(16);
    expect(r.io1(1, 0x00).sc).toBe(0); // in its exit
    expect(r.dev.stats()['iothread starts']).toBe(1);
    // Again with the buffers: a new thread.
    const d2 = new Dbbuf(r);
    expect(d2.config().sc).toBe(0);
    expect(r.dev.stats()['iothread starts']).toBe(2);
    // It wrote the queue's tail as it has it into the shadow page.
    expect([d2.shadow(1), d2.eventIdx(1)]).toEqual([1, 1]);
    r.put(1, 0x00, { nsid: 1 });
    expect(d2.ring(1)).toBe(true);
    expect((await next(d2, 1)).sc).toBe(0);
    expect(r.dev.stats().ioSqDoorbellExits).toBe(1); // only the one before the buffers
  });

  it('a thread whose module cannot load: the device thread notices, takes the queues back and serves what was rung meanwhile', async () => {
    const r = threadRig(disk(image()));
    const bad = path.join(tmp, 'bad-worker.mjs');
    fs.writeFileSync(bad, "throw new Error('cannot load this module');\n");
    nvmeIothreadWorker.url = new URL(`file://${bad}`);
    r.enable();
    const d = new Dbbuf(r);
    expect(d.config().sc).toBe(0);
    r.ioQueues(16);
    expect(r.dev.stats()['iothread starts']).toBe(1);
    r.put(1, 0x00, { nsid: 1 });
    d.ring(1); // to the eventfd: nobody reads it
    // What the start watch's timer does (the rig has no timers): poll.
    let c: Cqe | undefined;
    await until(() => { r.dev.poll(); return (c = d.take(1)) !== undefined; }, 'the completion from the exit path');
    expect(c!.sc).toBe(0);
    expect(r.ioeventfds.size).toBe(0);
    expect(r.dev.stats()['iothread running']).toBe(0);
    // From now on its doorbells exit, and it is not started again until a reset.
    r.put(1, 0x00, { nsid: 1 });
    d.ring(1);
    expect(d.take(1)?.sc).toBe(0);
    expect(r.dev.stats()).toMatchObject({ 'iothread starts': 1, ioSqDoorbellExits: 1 });
  });

  it('iothread=false keeps the I/O queues in the exits with the buffers on', () => {
    const r = threadRig(disk(image(), { iothread: 'false' }));
    r.enable();
    const d = new Dbbuf(r);
    expect(d.config().sc).toBe(0);
    r.ioQueues(16);
    expect(r.ioeventfds.size).toBe(0);
    r.put(1, 0x00, { nsid: 1 });
    d.ring(1);
    expect(d.take(1)?.sc).toBe(0);
    expect(r.dev.stats()).toMatchObject({ 'iothread starts': 0, ioSqDoorbellExits: 1 });
  });
});
