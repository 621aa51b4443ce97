// SIGINT, SIGTERM and SIGHUP from the first moment of a bhyve process to
// its end. Node's default action for them kills the process on the spot,
// which during start-up left the VM object (memory file, lock, bhyve.pid)
// behind; and a SIGTERM taken before the vCPU threads were listening was
// lost. bin/bhyve catches them before anything loads (EarlySignals) and
// this router hands them on: kept while nothing can act on them, then to
// whoever runs the VM.

export const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
export type StopSignal = (typeof STOP_SIGNALS)[number];

/** What bin/bhyve sets up before loading anything: the signals received
 * so far, and where to send later ones once set. */
export interface EarlySignals {
  received: StopSignal[];
  deliver?: (sig: StopSignal) => void;
  /** vCPU 0's thread, when bin/bhyve started it before loading anything
   * else (vmm/vcpu-threads.ts adopts it). */
  vcpuThread?: import('node:worker_threads').Worker;
}

export class SignalRouter {
  private readonly pending: StopSignal[] = [];
  private target?: (sig: StopSignal) => void;
  private readonly own: Array<[StopSignal, () => void]> = [];

  /** Takes over the early listeners, or installs its own (oclif, tests). */
  constructor(early?: EarlySignals) {
    if (early) {
      this.pending.push(...early.received.splice(0));
      early.deliver = (sig) => this.deliver(sig);
    } else {
      for (const sig of STOP_SIGNALS) {
        const h = (): void => this.deliver(sig);
        process.on(sig, h);
        this.own.push([sig, h]);
      }
    }
  }

  private deliver(sig: StopSignal): void {
    if (this.target) this.target(sig);
    else this.pending.push(sig);
  }

  /** The first signal received and not yet handed to a handler. */
  get first(): StopSignal | undefined { return this.pending[0]; }

  /** Sends pending and future signals to `fn`, until release(). */
  handleWith(fn: (sig: StopSignal) => void): void {
    this.target = fn;
    for (const sig of this.pending.splice(0)) fn(sig);
  }

  /** Keeps signals pending again (the run is over; the caller exits). */
  release(): void { this.target = undefined; }

  /** Removes listeners this router installed itself. */
  dispose(): void {
    for (const [sig, h] of this.own) process.off(sig, h);
    this.own.length = 0;
  }
}

/** bhyve's status for a run ended by `sig`: 128 + the signal number. */
export function signalStatus(sig: StopSignal): number {
  return 128 + { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 }[sig];
}
