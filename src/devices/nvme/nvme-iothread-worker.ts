// NVMe's I/O thread body (see nvme-iothread.ts): map guest RAM, adopt the
// image fd, take the queues from the table, then serve every I/O SQ whose
// shadow tail moved, block in read() on the doorbell eventfd, and again.

import { workerData } from 'node:worker_threads';
import { eventfdRead } from '../../sys/eventfd.js';
import { libcFunc, preloadLibc } from '../../sys/libc.js';
import { AdaptivePoll, PREEMPTED_NS } from '../virtio/adaptive-poll.js';
import { BlockFile } from '../block/block-backend.js';
import { deviceThreadKick, IOTHREAD_STATE, IothreadWorkerControl, mapWorkerGuestMemory } from '../virtio/iothread-control.js';
import { queueInterruptSender } from '../virtio/queue-irqfd.js';
import { NvmeIoEngine, writeCompletion } from './nvme-io.js';
import { NIOT, QT, STAT_KEYS, dbbufSlot, type NvmeIothreadData } from './nvme-iothread.js';
import { fileStore } from './nvme-store.js';

// koffi is initialised while this worker counts as loading (iothread-control.ts).
preloadLibc();
const PREEMPTED_MS = PREEMPTED_NS / 1e6;
/** Between looks at the shadow tails while spinning: a thread waiting for
 * this CPU (perhaps the vCPU that is to submit the next command) runs first. */
const schedYield = libcFunc('int sched_yield()');
const d = workerData as NvmeIothreadData;
const ctl = new IothreadWorkerControl(d.control);
const w = ctl.words;

interface Sq { qid: number; base: number; size: number; head: number; cqid: number; }

/** The queue index just behind SQ `s`'s head. */
const behind = (s: Sq): number => (s.head + s.size - 1) % s.size;
interface Cq { qid: number; base: number; size: number; head: number; tail: number; phase: number; intr: boolean; posted: boolean; since: number; }

const ERRORS = STAT_KEYS.indexOf('errors');
/** Completions posted this long ago get their interrupt before the pass ends. */
const SIGNAL_AFTER_MS = 0.05;
const INTERRUPTS = STAT_KEYS.indexOf('interrupts');

function main(): void {
  const kick = deviceThreadKick(d.helper, d.noKick);
  const mem = mapWorkerGuestMemory(d.helper);
  const store = fileStore(new BlockFile(d.blockOptions, { fd: d.imageFd, size: d.imageSize }), d.nodelete);
  const io = new NvmeIoEngine({ mem, store, sectorSize: d.sectorSize, dsm: d.dsm, deallocate: store.canDelete });
  const stats = new Float64Array(d.stats);
  const table = new Float64Array(d.table);
  const raise = queueInterruptSender(d.irqfds, (q) => { Atomics.or(w, NIOT.IRQ, 1 << q); kick(); });
  if (!ctl.take()) return;

  let sqs: Sq[] = [];
  const cqs: Array<Cq | undefined> = [];
  // The shadow doorbells and EventIdx entries, as 32-bit words (the
  // driver's stores and ours are 32-bit; exchange is a full barrier).
  let shadow: Int32Array | undefined;
  let eventIdx: Int32Array | undefined;
  let loaded = false;

  const words = (gpa: number): Int32Array => {
    const b = mem.slice(gpa, 4096);
    return new Int32Array(b.buffer, b.byteOffset, 1024);
  };
  const load = (): void => {
    sqs = [];
    cqs.length = 0;
    for (let q = 1; q <= d.maxQueues; q++) {
      const o = q * QT.STRIDE;
      if (table[o + QT.CQ_VALID]) {
        cqs[q] = {
          qid: q, base: table[o + QT.CQ_BASE], size: table[o + QT.CQ_SIZE], head: table[o + QT.CQ_HEAD], tail: table[o + QT.CQ_TAIL],
          phase: table[o + QT.CQ_PHASE], intr: table[o + QT.CQ_INTR] !== 0, posted: false, since: 0,
        };
      }
      if (table[o + QT.SQ_VALID]) {
        sqs.push({ qid: q, base: table[o + QT.SQ_BASE], size: table[o + QT.SQ_SIZE], head: table[o + QT.SQ_HEAD], cqid: table[o + QT.SQ_CQID] });
      }
    }
    const s = dbbufSlot(d.maxQueues);
    shadow = words(table[s]);
    eventIdx = words(table[s + 1]);
    loaded = true;
  };
  const save = (): void => {
    if (!loaded) return;
    for (const s of sqs) table[s.qid * QT.STRIDE + QT.SQ_HEAD] = s.head;
    for (const c of cqs) {
      if (!c) continue;
      const o = c.qid * QT.STRIDE;
      table[o + QT.CQ_HEAD] = c.head;
      table[o + QT.CQ_TAIL] = c.tail;
      table[o + QT.CQ_PHASE] = c.phase;
    }
  };
  /** A shadow doorbell's value, or -1 when it is not a valid index (the
   * doorbell write is ignored, as an MMIO one past the queue is). */
  const shadowValue = (qid: number, cq: boolean, size: number): number => {
    const v = Atomics.load(shadow!, 2 * qid + (cq ? 1 : 0)) >>> 0;
    return v < size ? v : -1;
  };
  const setEventIdx = (qid: number, cq: boolean, value: number): void => {
    Atomics.exchange(eventIdx!, 2 * qid + (cq ? 1 : 0), value);
  };
  /** Whether CQ `c` has no room, after the driver's latest head; a full
   * one asks the driver to ring at its next head update. */
  const cqFull = (c: Cq): boolean => {
    const h = shadowValue(c.qid, true, c.size);
    if (h >= 0) c.head = h;
    if ((c.tail + 1) % c.size !== c.head) return false;
    setEventIdx(c.qid, true, c.head);
    const again = shadowValue(c.qid, true, c.size);
    if (again >= 0) c.head = again;
    if ((c.tail + 1) % c.size !== c.head) return false;
    ctl.add(NIOT.STALLS, 1);
    return true;
  };
  const signal = (c: Cq): void => {
    c.posted = false;
    if (c.intr) { raise(c.qid); stats[INTERRUPTS]++; }
  };
  const interrupts = (): void => {
    for (const c of cqs) if (c?.posted) signal(c);
  };
  /** Runs SQ `s` up to its shadow tail; true when the driver added more
   * after the EventIdx was set (another pass). */
  const serve = (s: Sq): boolean => {
    const c = cqs[s.cqid];
    if (!c) return false;
    let tail = shadowValue(s.qid, false, s.size);
    if (tail < 0) return false;
    for (let n = 0; s.head !== tail && n < s.size; n++) {
      if (cqFull(c)) return false;
      io.fetch(s.base + s.head * 64);
      s.head = (s.head + 1) % s.size;
      let status: number;
      try {
        status = io.execute();
      } catch {
        status = 0x06; // INTERNAL_DEVICE_ERROR (a queue entry outside RAM ends in the catch below)
      }
      writeCompletion(mem, c.base + c.tail * 16, io.cdw0, s.head, s.qid, io.cid, status, c.phase);
      if (status & 0x7ff) stats[ERRORS]++;
      c.tail++;
      if (c.tail >= c.size) { c.tail = 0; c.phase ^= 1; }
      // The vector once per pass, or sooner when entries have waited for
      // it (a long batch: an interrupt-driven driver refills meanwhile).
      if (!c.posted) { c.posted = true; c.since = performance.now(); } else if (performance.now() - c.since > SIGNAL_AFTER_MS) signal(c);
      if (s.head === tail) {
        const t = shadowValue(s.qid, false, s.size);
        if (t >= 0) tail = t;
      }
    }
    // While it works the driver need not ring: the entry just behind the
    // head (nvme_dbbuf_need_event stays false until a tail passes it,
    // which the queue's head keeps it from). armAll() before it sleeps.
    setEventIdx(s.qid, false, behind(s));
    tail = shadowValue(s.qid, false, s.size);
    return tail >= 0 && tail !== s.head;
  };
  /** Whether SQ `s` has entries and its CQ room (no side effects). */
  const ready = (s: Sq): boolean => {
    const t = shadowValue(s.qid, false, s.size);
    if (t < 0 || t === s.head) return false;
    const c = cqs[s.cqid];
    if (!c) return false;
    const h = shadowValue(c.qid, true, c.size);
    return (c.tail + 1) % c.size !== (h >= 0 ? h : c.head);
  };
  const anyReady = (): boolean => { for (const s of sqs) if (ready(s)) return true; return false; };
  /** Before it sleeps: each SQ's EventIdx at its head, so the driver's
   * next tail rings; true when a tail moved meanwhile (serve again). */
  const armAll = (): boolean => {
    for (const s of sqs) setEventIdx(s.qid, false, s.head);
    return anyReady();
  };
  const poll = new AdaptivePoll(Math.max(0, Math.round((d.pollUs ?? 0) * 1000)), d.pollHoldOff);
  /** Spins up to the poll window for new commands, the doorbells still
   * quiet (serve() left the EventIdx entries behind the heads). */
  const spin = (): boolean => {
    const start = performance.now();
    const end = start + poll.windowNs / 1e6;
    let found = false;
    let last = start;
    for (;;) {
      if (anyReady()) { found = true; break; }
      schedYield();
      const now = performance.now();
      if (now - last > PREEMPTED_MS) { poll.preempted(); break; }
      last = now;
      if (now >= end || !ctl.running || Atomics.load(w, NIOT.PAUSE)) break;
    }
    if (found) poll.observe((performance.now() - start) * 1e6);
    return found;
  };
  const syncStats = (): void => {
    const c = io.counts;
    for (let i = 0; i < ERRORS; i++) stats[i] = c[STAT_KEYS[i] as keyof typeof c];
  };

  const buf = new Uint8Array(8);
  for (;;) {
    if (Atomics.load(w, NIOT.PAUSE)) {
      save();
      loaded = false;
      Atomics.store(w, NIOT.PAUSED, 1);
      Atomics.notify(w, NIOT.PAUSED);
      while (Atomics.load(w, NIOT.PAUSE) && ctl.running) Atomics.wait(w, NIOT.PAUSE, 1, 50);
      Atomics.store(w, NIOT.PAUSED, 0);
      if (!ctl.running) break;
      continue; // PAUSE again before anything is touched
    }
    if (!loaded) load();
    let more = true;
    while (more && !Atomics.load(w, NIOT.PAUSE) && ctl.running) {
      more = false;
      for (const s of sqs) if (serve(s)) more = true;
      interrupts();
    }
    syncStats();
    if (Atomics.load(w, NIOT.PAUSE)) continue;
    // Adaptive polling: stay on the queues while commands keep coming.
    let spun = 0;
    if (poll.windowNs > 0 && ctl.running) {
      const window = poll.windowNs;
      if (spin()) { ctl.add(NIOT.POLL_HITS, 1); continue; }
      spun = window;
    }
    if (armAll()) continue;
    const t0 = performance.now();
    const n = eventfdRead(d.notifyFd, buf);
    if (!ctl.running) break;
    poll.observe((performance.now() - t0) * 1e6 + spun);
    if (n < 0n) {
      ctl.fail(`I/O thread: read of the doorbell eventfd failed (errno ${-n})`);
      kick();
      break;
    }
    ctl.add(NIOT.WAKEUPS, 1);
  }
  save();
  ctl.finish(IOTHREAD_STATE.STOPPED);
}

try {
  main();
} catch (e) {
  // FAILED before the queues were taken (the device thread serves them),
  // else STOPPED with the reason (the controller's fatal status).
  ctl.crashed(`I/O thread: ${(e as Error).message}`);
  try { deviceThreadKick(d.helper, d.noKick)(); } catch { /* no doorbell to ring */ }
}
