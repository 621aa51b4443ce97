// Queue interrupts from an I/O thread straight into KVM: per offloaded
// queue an eventfd wired by KVM_IRQFD to a GSI routed as the MSI the
// guest programmed for the queue's MSI-X vector, so an interrupt the I/O
// thread raises costs it one write(2) and no exit or kick of vCPU 0.
//
// The transport (virtio-pci.ts, on the device thread) owns the wires and
// keeps them in step with the guest: the MSI-X table entry (route), the
// vector's mask or the function mask (a masked vector's irqfd is detached:
// the signals stay counted in the eventfd, the PBA shows them pending, and
// unmasking sends one message, as PCI asks), the queue's vector
// (queue_msix_vector) and whether MSI-X is in use at all. A queue whose
// interrupts cannot go that way (MSI, INTx, MSI-X disabled, no vector) is
// "not live": the I/O thread then falls back to asking the device thread
// (a bit in its control block and a kick), which raises it through the
// transport's interrupt state as before.
//
// Handing over without losing an interrupt: the device thread clears a
// queue's live bit and bumps GEN before it detaches and drains the eventfd
// (what it finds there it raises through the fallback path); the I/O
// thread reads GEN, then the live bit, writes the eventfd, and reads GEN
// again: if it moved, its write may have come after the drain, so it takes
// the fallback path too (a spurious interrupt at worst, which virtio
// drivers tolerate).

import type { KvmDoorbells, MsiIrqfd } from '../device.js';
import { closeFd, eventfd, eventfdRead, eventfdWrite, EFD_CLOEXEC, EFD_NONBLOCK } from '../../sys/eventfd.js';

const W = {
  /** Bit per queue: its interrupts go by irqfd. */
  LIVE: 0,
  /** Bumped on each change of LIVE. */
  GEN: 1,
  /** Messages the I/O thread sent by irqfd (stats). */
  SENT: 2,
} as const;
const WORDS = 4;

/** What an I/O thread gets (structured-clonable). */
export interface QueueIrqfdChannel {
  control: SharedArrayBuffer;
  /** The eventfd of each queue, undefined for queues without one. */
  fds: Array<number | undefined>;
}

/** What the transport tells the wires about the guest's interrupt set-up. */
export interface MsixState {
  /** MSI-X is in use (enabled, MSI not). */
  msixActive(): boolean;
  /** The queue's MSI-X vector, or undefined for none (NO_VECTOR, out of range). */
  vectorOf(queue: number): number | undefined;
  /** The vector's table entry; masked includes the function mask. */
  entry(vector: number): { address: number; data: number; masked: boolean };
  /** Raises MSI-X vector `v` (sets its pending bit while it is masked). */
  raiseVector(vector: number): void;
  /** Raises the queue's interrupt however the transport is set up now. */
  raiseQueue(queue: number): void;
}

class Wire {
  live = false;
  vector = -1;
  constructor(readonly fd: number, readonly irqfd: MsiIrqfd) {}
  /** Consumes what was signalled while detached; true when anything was. */
  drain(): boolean { return eventfdRead(this.fd) > 0n; }
}

/** The transport's side: one wire per queue it was asked for. */
export class QueueIrqfds {
  private readonly control = new SharedArrayBuffer(WORDS * 4);
  private readonly words = new Int32Array(this.control);
  private readonly wires: Array<Wire | undefined>;
  private closed = false;

  /** Undefined when KVM offers no irqfd (the I/O thread then kicks). */
  static open(kvm: Pick<KvmDoorbells, 'msiIrqfd'>, queues: ReadonlyArray<boolean>, state: MsixState): QueueIrqfds | undefined {
    if (!kvm.msiIrqfd || !queues.some((q) => q)) return undefined;
    const wires: Array<Wire | undefined> = [];
    try {
      for (const want of queues) {
        if (!want) { wires.push(undefined); continue; }
        const fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        let irqfd: MsiIrqfd | undefined;
        try { irqfd = kvm.msiIrqfd(fd); } catch { irqfd = undefined; }
        if (!irqfd) { closeFd(fd); throw new Error('no irqfd'); }
        wires.push(new Wire(fd, irqfd));
      }
    } catch {
      for (const w of wires) if (w) { w.irqfd.close(); closeFd(w.fd); }
      return undefined;
    }
    const q = new QueueIrqfds(wires, state);
    q.sync();
    return q;
  }

  private constructor(wires: Array<Wire | undefined>, private readonly state: MsixState) {
    this.wires = wires;
  }

  get channel(): QueueIrqfdChannel {
    return { control: this.control, fds: this.wires.map((w) => w?.fd) };
  }

  /** Queues whose interrupts go by irqfd now, a bit per queue. */
  get liveMask(): number { return Atomics.load(this.words, W.LIVE); }
  /** Messages the I/O thread sent through them. */
  get sent(): number { return Atomics.load(this.words, W.SENT); }

  /** Brings every wire in step with the guest's MSI-X set-up; called after
   * any change to it (table entry, masks, enables, a queue's vector). */
  sync(): void {
    if (this.closed) return;
    const active = this.state.msixActive();
    this.wires.forEach((w, q) => {
      if (!w) return;
      const v = active ? this.state.vectorOf(q) : undefined;
      if (v === undefined) {
        if (!w.live) return;
        w.live = false;
        this.publish();
        w.irqfd.detach();
        if (w.drain()) this.state.raiseQueue(q);
        return;
      }
      const e = this.state.entry(v);
      w.irqfd.route(e.address, e.data);
      w.vector = v;
      if (!w.live) { w.live = true; this.publish(); }
      if (e.masked) {
        w.irqfd.detach();
        if (w.drain()) this.state.raiseVector(v); // pending bit
      } else {
        // What came while detached is sent once, then KVM takes over.
        if (w.drain()) this.state.raiseVector(v);
        w.irqfd.attach();
      }
    });
  }

  /** Before a PBA read: masked vectors' signals become pending bits. */
  collectPending(): void {
    for (const w of this.wires) {
      if (w?.live && this.state.entry(w.vector).masked && w.drain()) this.state.raiseVector(w.vector);
    }
  }

  private publish(): void {
    let mask = 0;
    this.wires.forEach((w, q) => { if (w?.live) mask |= 1 << q; });
    Atomics.store(this.words, W.LIVE, mask);
    Atomics.add(this.words, W.GEN, 1);
  }

  /** After the I/O thread has stopped: the fds are no longer written. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    Atomics.store(this.words, W.LIVE, 0);
    Atomics.add(this.words, W.GEN, 1);
    for (const w of this.wires) {
      if (!w) continue;
      w.irqfd.close();
      closeFd(w.fd);
    }
  }
}

/** The I/O thread's side: a queue interrupt goes by irqfd while its queue
 * is live, else (and in the hand-over race, see top) through `fallback`. */
export function queueInterruptSender(channel: QueueIrqfdChannel | undefined, fallback: (queue: number) => void): (queue: number) => void {
  if (!channel) return fallback;
  const w = new Int32Array(channel.control);
  const fds = channel.fds;
  return (q) => {
    const fd = fds[q];
    if (fd !== undefined) {
      const gen = Atomics.load(w, W.GEN);
      if (Atomics.load(w, W.LIVE) & (1 << q)) {
        eventfdWrite(fd);
        Atomics.add(w, W.SENT, 1);
        if (Atomics.load(w, W.GEN) === gen) return;
      }
    }
    fallback(q);
  };
}
