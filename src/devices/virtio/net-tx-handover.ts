// virtio-net's transmit queue handed between the device thread (the
// vCPU's notify exit) and the I/O thread while the driver runs
// (iothread_tx=switch). Which side sends best depends on the direction
// of the traffic and on whether the driver polls (below; measured with
// bench/virtio-net-tcp.mjs): the host's TCP work runs inside each tap
// write, on whichever thread writes.
//
// Transmit notifies exit to the device thread, which either sends at once
// (it owns the queue) or writes the I/O thread's eventfd (the thread owns
// it); while the thread is where the queue belongs (DIRECTION), the device
// thread routes them to that eventfd by KVM_IOEVENTFD instead, so the
// guest's notify no longer stops its vCPU (below). Ownership lives in one shared
// word and moves only at a quiescent point of its owner: the queue drained
// with the driver's notifications on (VirtioNet.transmit ends so) and the
// ring positions (last avail, next used) stored here for the next owner,
// which loads them before it pops. Every popped chain is returned before
// that point, so nothing is lost, sent twice or reordered.
//
// Who serves a chain added around a hand-over:
//   - the device thread releases to the thread: the next notify exits to
//     the device thread, which sees THREAD and forwards it;
//   - the thread releases to the device thread: the next notify exits and
//     the device thread takes the queue (EXIT_IDLE -> EXIT_BUSY). A notify
//     the device thread forwarded just before the release reaches the
//     thread with the queue no longer its own: it takes the queue back
//     (EXIT_IDLE -> THREAD) when chains are pending, else the device
//     thread is serving them (EXIT_BUSY) and drains before it lets go.
//
// The notify route follows the direction, a step behind it, and only the
// device thread changes it (KVM_IOEVENTFD on the VM): it routes the
// notifies to the thread when one exits while the thread owns the queue
// and the direction says thread (NOTIFY_ROUTE); the thread, releasing the
// queue to the exit, asks for them back (WANT_EXIT_ROUTE, a kick) and the
// device thread routes them to the exit at its next poll. Meanwhile every
// wake-up of the thread counts as a forwarded notify (its eventfd then
// carries the transmit notifies), so a chain is served whoever holds the
// queue: the thread takes the queue back from EXIT_IDLE as for a
// forwarded notify; one it had to refuse (EXIT_BUSY) the device thread
// finds pending after its release and forwards; and when the route moves
// back to the exit the device thread forwards once, for a notify that went
// to the eventfd before.
//
// The direction: both sides add the bytes they move to shared counters;
// the owner, at its quiescent point, looks at the last window of traffic
// (at least WINDOW_BYTES both ways) and decides which way the guest's
// traffic goes. Which side should then send depends on the driver:
//   - one that waits on interrupts (MSI-X vectors on its queues): the
//     thread while the guest sends more than it receives (its vCPU runs on
//     while the segments are written), the exit while it receives (its
//     ACKs then stay off the thread that reads the stream, the busier side);
//   - one that polls (its vCPU never idles): the thread while it receives
//     (each ACK written on the exit, with the host's TCP work inside the
//     write, is time its vCPU does not process the stream), the exit while
//     it sends (a flood out: the vCPU has nothing better to do than write,
//     and no hand-off per queueful).

/** Words of the shared block. */
const W = {
  OWNER: 0,
  /** Positions the last owner left the queue at. */
  LAST_AVAIL: 1,
  NEXT_USED: 2,
  /** Bytes sent (either side) and received (the I/O thread), mod 2^32. */
  TX_BYTES: 3,
  RX_BYTES: 4,
  /** The counters at the start of the current window. */
  MARK_TX: 5,
  MARK_RX: 6,
  /** Where the queue should be: TX_THREAD or TX_EXIT. */
  DIRECTION: 7,
  /** Completed hand-overs (diagnostics, tests). */
  HANDOVERS: 8,
  /** Bytes a window needs (WINDOW_BYTES; tests set less). */
  WINDOW: 9,
  /** Bumped by each release: the positions changed hands. */
  GEN: 10,
  /** 1: the thread's while the guest receives more than it sends (a
   * driver that polls); 0: while it sends more (one that waits on
   * interrupts). */
  THREAD_WHEN_RECEIVING: 11,
  /** The device thread forwarded a transmit notify (the I/O thread's
   * eventfd also carries the receive notifies). */
  FORWARDED: 12,
  /** 1: transmit notifies reach the thread's eventfd (KVM_IOEVENTFD),
   * not the exit. Written by the device thread. */
  NOTIFY_ROUTE: 13,
  /** 1: the thread released the queue to the exit and wants the notifies
   * routed back there. */
  WANT_EXIT_ROUTE: 14,
} as const;
const WORDS = 15;

/** OWNER values. */
export const TX_EXIT_IDLE = 0;
/** The device thread is sending right now. */
export const TX_EXIT_BUSY = 1;
export const TX_THREAD = 2;
/** DIRECTION's other value. */
export const TX_EXIT = TX_EXIT_IDLE;

/** Bytes both ways a window needs before the direction is judged again. */
export const WINDOW_BYTES = 256 * 1024;

/** The ring positions a hand-over carries (Virtqueue's). */
export interface TxPositions {
  readonly lastAvailIdx: number;
  readonly usedIdx: number;
  setPositions(lastAvail: number, nextUsed: number): void;
}

export class TxHandover {
  readonly words: Int32Array;
  /** GEN as this side last saw it (its own release, or its last load). */
  private seenGen = 0;

  /** `shared`: the block another side created (structured-cloned to a worker). */
  constructor(readonly buffer: SharedArrayBuffer = new SharedArrayBuffer(WORDS * 4)) {
    this.words = new Int32Array(buffer);
  }

  /** The device thread, before the I/O thread starts: the positions its own
   * queue is at, the queue its own. */
  init(q: TxPositions, threadWhenReceiving: boolean, windowBytes = WINDOW_BYTES): void {
    Atomics.store(this.words, W.WINDOW, windowBytes);
    Atomics.store(this.words, W.THREAD_WHEN_RECEIVING, threadWhenReceiving ? 1 : 0);
    Atomics.store(this.words, W.LAST_AVAIL, q.lastAvailIdx);
    Atomics.store(this.words, W.NEXT_USED, q.usedIdx);
    Atomics.store(this.words, W.DIRECTION, TX_EXIT);
    // The I/O thread loads these at its first take.
    this.seenGen = Atomics.add(this.words, W.GEN, 1) + 1;
    Atomics.store(this.words, W.OWNER, TX_EXIT_IDLE);
  }

  get owner(): number { return Atomics.load(this.words, W.OWNER); }
  /** The way round init() was given: true for a driver that polls. */
  get threadWhenReceiving(): boolean { return Atomics.load(this.words, W.THREAD_WHEN_RECEIVING) === 1; }
  get handovers(): number { return Atomics.load(this.words, W.HANDOVERS); }

  /** The device thread, on a transmit notify exit: true when the queue is
   * its own now (EXIT_BUSY, positions loaded); false when the I/O thread
   * owns it (forward the notify). */
  deviceTake(q: TxPositions): boolean {
    if (Atomics.compareExchange(this.words, W.OWNER, TX_EXIT_IDLE, TX_EXIT_BUSY) !== TX_EXIT_IDLE) return false;
    this.load(q);
    return true;
  }

  /** The device thread, about to write the I/O thread's eventfd for a
   * transmit notify. */
  forwarding(): void { Atomics.store(this.words, W.FORWARDED, 1); }

  /** The I/O thread, on a notify: true when the queue is its own (it was,
   * or it takes it back because the device thread forwarded a notify for
   * chains that still wait, which no one else will serve). A receive
   * notify alone never takes it: the exit would lose the queue to every
   * wake-up that finds a chain the guest is about to notify for. */
  threadTake(q: TxPositions, pending: () => number): boolean {
    const forwarded = Atomics.exchange(this.words, W.FORWARDED, 0) === 1 || this.notifiesToThread;
    const o = Atomics.load(this.words, W.OWNER);
    if (o === TX_THREAD) { this.load(q); return true; }
    if (!forwarded || o !== TX_EXIT_IDLE || pending() === 0) return false;
    if (Atomics.compareExchange(this.words, W.OWNER, TX_EXIT_IDLE, TX_THREAD) !== TX_EXIT_IDLE) return false;
    this.load(q);
    return true;
  }

  /** The owner, with the queue drained and notifications on: judges the
   * direction and releases the queue to the side it belongs to (the device
   * thread always lets go of EXIT_BUSY). `canThread`: the I/O thread is up.
   * Returns the new owner. */
  release(q: TxPositions, self: typeof TX_EXIT_BUSY | typeof TX_THREAD, canThread: boolean): number {
    const dir = this.direction(canThread);
    const to = dir === TX_THREAD ? TX_THREAD : TX_EXIT_IDLE;
    if (self === TX_THREAD && to === TX_THREAD) return TX_THREAD;
    // Plain stores: only the owner writes these, and OWNER's store below
    // publishes them (the next owner reads them after its own atomic
    // operation on OWNER: a release/acquire pair). An Atomics.store is an
    // xchg, a full fence, and the exit that keeps the queue (a guest
    // flooding out) releases once per batch.
    const w = this.words;
    w[W.LAST_AVAIL] = q.lastAvailIdx;
    w[W.NEXT_USED] = q.usedIdx;
    this.seenGen = (w[W.GEN] = (w[W.GEN] + 1) | 0);
    if ((self === TX_THREAD) !== (to === TX_THREAD)) w[W.HANDOVERS] = (w[W.HANDOVERS] + 1) | 0;
    Atomics.store(w, W.OWNER, to);
    return to;
  }

  /** Whether transmit notifies reach the thread's eventfd. */
  get notifiesToThread(): boolean { return Atomics.load(this.words, W.NOTIFY_ROUTE) === 1; }

  /** The device thread, forwarding a notify: whether the notifies should
   * go to the thread's eventfd now (the thread has the queue where it
   * belongs, and they do not yet). */
  shouldRouteToThread(): boolean {
    return !this.notifiesToThread && Atomics.load(this.words, W.OWNER) === TX_THREAD
      && Atomics.load(this.words, W.DIRECTION) === TX_THREAD;
  }

  /** The device thread, after it changed the route. */
  setNotifiesToThread(on: boolean): void {
    if (!on) Atomics.store(this.words, W.WANT_EXIT_ROUTE, 0);
    Atomics.store(this.words, W.NOTIFY_ROUTE, on ? 1 : 0);
  }

  /** The thread, having released the queue to the exit: true when the
   * device thread must be asked (kicked) to route the notifies back. */
  requestExitRoute(): boolean {
    return this.notifiesToThread && Atomics.compareExchange(this.words, W.WANT_EXIT_ROUTE, 0, 1) === 0;
  }

  /** The device thread: whether the thread asked for the exit route and
   * the direction still says exit (the request is used up either way). */
  takeExitRouteRequest(): boolean {
    return Atomics.exchange(this.words, W.WANT_EXIT_ROUTE, 0) === 1 && Atomics.load(this.words, W.DIRECTION) !== TX_THREAD;
  }

  /** The owner, for what it sent (only the owner sends). Each counter has
   * one writer (TX_BYTES the owner, RX_BYTES the I/O thread), so a plain
   * add; the owner's direction() may read RX_BYTES a frame behind, which a
   * 256 KiB window does not notice. */
  addTx(bytes: number): void { if (bytes > 0) this.words[W.TX_BYTES] = (this.words[W.TX_BYTES] + bytes) | 0; }
  addRx(bytes: number): void { if (bytes > 0) this.words[W.RX_BYTES] = (this.words[W.RX_BYTES] + bytes) | 0; }

  /** The owner only: a new direction once a window is full. */
  private direction(canThread: boolean): number {
    const tx = (Atomics.load(this.words, W.TX_BYTES) - Atomics.load(this.words, W.MARK_TX)) >>> 0;
    const rx = (Atomics.load(this.words, W.RX_BYTES) - Atomics.load(this.words, W.MARK_RX)) >>> 0;
    if (tx + rx >= Atomics.load(this.words, W.WINDOW)) {
      Atomics.add(this.words, W.MARK_TX, tx);
      Atomics.add(this.words, W.MARK_RX, rx);
      const sending = tx > rx;
      const thread = Atomics.load(this.words, W.THREAD_WHEN_RECEIVING) === 1 ? !sending : sending;
      Atomics.store(this.words, W.DIRECTION, thread ? TX_THREAD : TX_EXIT);
    }
    return canThread ? Atomics.load(this.words, W.DIRECTION) : TX_EXIT;
  }

  /** Takes the positions the last owner left, when another side released
   * since this one last had them (setPositions also forgets the interrupt
   * suppression state, so not on every take). */
  private load(q: TxPositions): void {
    const g = Atomics.load(this.words, W.GEN);
    if (g === this.seenGen) return;
    this.seenGen = g;
    q.setPositions(Atomics.load(this.words, W.LAST_AVAIL), Atomics.load(this.words, W.NEXT_USED));
  }
}
