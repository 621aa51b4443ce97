// The device thread's doorbell. vCPU 0's thread runs every device model
// (vmm/device-host.ts) between its KVM_RUN calls; any other thread (the
// main thread with host input, timers and signals, the other vCPUs with a
// forwarded port access, a device's helper worker) rings this doorbell to
// have it leave KVM_RUN and look at its work.
//
// Ringing ORs request bits into a shared word, sets immediate_exit on vCPU
// 0's kvm_run page (covering the window between two KVM_RUN calls) and
// sends the thread SIGUSR2 (tgkill), which makes a blocked KVM_RUN return
// EINTR. The bits are written before the kick and taken after vCPU 0 clears
// immediate_exit, so no request is lost. Before vCPU 0's thread has
// answered (told its thread id), ringing only records the bits.

import { Vcpu } from './kvm.js';
import { kickThread } from './kick-signal.js';

/** What the device thread is asked to do, as bits. */
export const DEVICE_REQUEST = {
  /** Host input may have arrived, or a helper finished work: poll the devices. */
  POLL: 1,
  /** SIGTERM: press the ACPI power button. */
  POWER_BUTTON: 2,
  /** A device timer expired (vmm/device-timers.ts). */
  TIMERS: 4,
} as const;

const REQUESTS = 0;
const TID = 1;
const WORDS = 2;

/** Structured-cloneable: what a thread needs to ring the doorbell. */
export interface DoorbellTransfer {
  readonly sab: SharedArrayBuffer;
  /** vCPU 0's fd and kvm_run size, to map its kvm_run page here. */
  readonly vcpuFd: number;
  readonly mmapSize: number;
}

/** Something with a kvm_run page whose immediate_exit can be set. */
export interface RunPage { immediateExit: boolean }

export class Doorbell {
  private readonly words: Int32Array;

  private constructor(readonly transfer: DoorbellTransfer, private readonly bsp: RunPage) {
    this.words = new Int32Array(transfer.sab);
  }

  /** The doorbell of vCPU 0 (`bsp`, already mapped in this thread). */
  static create(bsp: Vcpu): Doorbell {
    return new Doorbell({ sab: new SharedArrayBuffer(4 * WORDS), vcpuFd: bsp.fd, mmapSize: bsp.run.length }, bsp);
  }

  /** The same doorbell in another thread (maps vCPU 0's kvm_run page, or
   * uses `bsp` when this thread has it already). */
  static attach(t: DoorbellTransfer, bsp?: RunPage): Doorbell {
    return new Doorbell(t, bsp ?? new Vcpu(t.vcpuFd, t.mmapSize, 0));
  }

  /** Asks the device thread to serve `requests` (DEVICE_REQUEST bits; 0:
   * only wake it, e.g. for its mailboxes). */
  ring(requests = 0): void {
    if (requests) Atomics.or(this.words, REQUESTS, requests);
    const tid = Atomics.load(this.words, TID);
    if (tid === 0) return;
    this.bsp.immediateExit = true;
    kickThread(tid);
  }

  // ---- vCPU 0's side ----

  /** Called by vCPU 0's thread with its thread id: rings reach it from now. */
  answerOn(tid: number): void {
    Atomics.store(this.words, TID, tid);
  }

  /** The requests rung since the last call (vCPU 0's thread). */
  take(): number {
    return Atomics.exchange(this.words, REQUESTS, 0);
  }
}
