// Shared state between the main thread and the vCPU threads, and the "kick"
// that interrupts a vCPU blocked in KVM_RUN.
//
// A kick sets kvm_run.immediate_exit on the target vCPU and sends it SIGUSR2
// with tgkill. The signal makes a blocked KVM_RUN return EINTR; immediate_exit
// covers the window where the target is between two KVM_RUN calls. The
// process-wide SIGUSR2 handler does nothing and is never reset, so a kick
// is harmless on any thread at any time (sys/kick-signal.ts).
// Requests are written before the kick and read after the target clears
// immediate_exit, so none is lost.

import { kickThread } from '../sys/kick-signal.js';

/** Header words of the control block. */
const STOP = 0;
const EXIT_CLAIMED = 1;
// Word 2 is unused (the device thread's requests are in sys/doorbell.ts).
const GO = 3;
const HEADER_WORDS = 8;
/** Per-vCPU words. */
const TID = 0;
const STATE = 1;
const CHECK = 2;
/** Nonzero: the debugger holds this vCPU out of the guest (gdb-stub.ts). */
const DEBUG_HOLD = 3;
const VCPU_WORDS = 4;

/** What the halt watchdog last learned about a vCPU. */
export const VCPU_STATE = {
  STARTING: 0,
  RUNNING: 1,
  /** Halted with interrupts disabled: only NMI/INIT/SMI could wake it. */
  HALTED_IF0: 2,
  /** An AP still waiting for INIT/SIPI. */
  INACTIVE: 3,
} as const;

/** Per-vCPU requests: look at your run state (halt watchdog); serve the
 * messages waiting on your request port (bhyvectl and friends). */
export const VCPU_REQUEST = { CHECK_STATE: 1, MESSAGES: 2 } as const;


export class VcpuControl {
  readonly words: Int32Array;

  constructor(readonly sab: SharedArrayBuffer, readonly vcpuCount: number) {
    this.words = new Int32Array(sab);
  }

  static create(vcpuCount: number): VcpuControl {
    return new VcpuControl(new SharedArrayBuffer(4 * (HEADER_WORDS + VCPU_WORDS * vcpuCount)), vcpuCount);
  }

  get stopped(): boolean { return Atomics.load(this.words, STOP) !== 0; }
  stop(): void {
    Atomics.store(this.words, STOP, 1);
    Atomics.notify(this.words, GO);
    for (let i = 0; i < this.vcpuCount; i++) Atomics.notify(this.words, this.at(i, DEBUG_HOLD));
  }

  /** True for exactly one caller: the one whose exit request wins. */
  claimExit(): boolean { return Atomics.compareExchange(this.words, EXIT_CLAIMED, 0, 1) === 0; }

  /** Lets the vCPU threads start running the guest. */
  go(): void { Atomics.store(this.words, GO, 1); Atomics.notify(this.words, GO); }
  waitGo(): void { while (Atomics.load(this.words, GO) === 0 && !this.stopped) Atomics.wait(this.words, GO, 0, 1000); }
  /** waitGo for the main thread, which must not block. */
  async goAsync(): Promise<void> {
    while (Atomics.load(this.words, GO) === 0 && !this.stopped) {
      const w = Atomics.waitAsync(this.words, GO, 0, 1000);
      if (w.async) await w.value;
    }
  }


  private at(id: number, word: number): number { return HEADER_WORDS + VCPU_WORDS * id + word; }

  setTid(id: number, tid: number): void { Atomics.store(this.words, this.at(id, TID), tid); }
  tid(id: number): number { return Atomics.load(this.words, this.at(id, TID)); }

  setState(id: number, state: number): void { Atomics.store(this.words, this.at(id, STATE), state); }
  state(id: number): number { return Atomics.load(this.words, this.at(id, STATE)); }

  /** Asks vCPU `id` to do something at its next kick (VCPU_REQUEST bits). */
  request(id: number, bits: number): void {
    Atomics.or(this.words, this.at(id, CHECK), bits);
    // A vCPU parked by the debugger waits on its hold word, not in KVM_RUN.
    Atomics.notify(this.words, this.at(id, DEBUG_HOLD));
  }
  takeRequests(id: number): number { return Atomics.exchange(this.words, this.at(id, CHECK), 0); }

  /** The debugger's hold on vCPU `id` (the caller kicks it out of KVM_RUN). */
  setDebugHold(id: number, held: boolean): void {
    Atomics.store(this.words, this.at(id, DEBUG_HOLD), held ? 1 : 0);
    Atomics.notify(this.words, this.at(id, DEBUG_HOLD));
  }
  debugHeld(id: number): boolean { return Atomics.load(this.words, this.at(id, DEBUG_HOLD)) !== 0; }
  /** Sleeps while held, until a request, a release or the stop arrives. */
  waitDebugHold(id: number, ms: number): void { Atomics.wait(this.words, this.at(id, DEBUG_HOLD), 1, ms); }
}

/** Something with a kvm_run page whose immediate_exit can be set; `kick`
 * when the vCPU has no thread of its own to signal (ap-pool.ts). */
export interface KickTarget { immediateExit: boolean; kick?(): void }

export class Kicker {
  constructor(private readonly control: VcpuControl, private readonly targets: ReadonlyMap<number, KickTarget>) {}

  kick(id: number): void {
    const t = this.targets.get(id);
    if (t?.kick) { t.kick(); return; }
    if (!t) return;
    // Before the vCPU's thread has started its run (no tid yet: the control
    // socket is up while vCPU threads still build their devices) the flag
    // alone keeps the kick: the first KVM_RUN returns at once and the thread
    // serves what was asked.
    t.immediateExit = true;
    const tid = this.control.tid(id);
    if (tid !== 0) kickThread(tid);
  }

  kickAll(): void {
    for (const id of this.targets.keys()) this.kick(id);
  }
}
