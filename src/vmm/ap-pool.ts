// Application processors without a thread or V8 isolate of their own
// (vcpu.ap_mode=pool, the default). A worker thread per vCPU costs ~14 MiB
// and ~60 ms or more to boot (its isolate and every module), which made a
// 16-vCPU guest wait seconds for its APs. Here each AP's KVM_RUN is a koffi
// async call on libuv's threadpool (bin/bhyve sizes the pool from -c): the
// call blocks a pool thread while the AP is in the guest, and the exit comes
// back to the main thread's event loop, which handles it as a vCPU thread
// would (exit-dispatch.ts) and issues the next KVM_RUN. With vCPU 0 on the
// main thread (vcpu.bsp_model=main, the default) the APs call the devices'
// bus directly, and their KVM_RUN goes through the loop waker's lw_kvm_run,
// which ends vCPU 0's KVM_RUN as the AP's returns (main-thread-vcpu.ts);
// with vCPU 0 on a worker, device accesses go to it through the AP's
// mailbox (ForwardingIoBus: the main thread waits the few microseconds
// vCPU 0 takes to answer).
//
// What it costs: an AP exit takes a pool hand-off there and back
// (BENCHMARKS.md), which is why vCPU 0 (all the device models) is not on
// the pool: its exits stay one kernel call. APs rarely exit once notifies
// go through ioeventfds and interrupts through irqfds. A kick cannot know
// which pool thread runs an AP, so it sets the AP's immediate_exit and
// signals every pool thread (sys/threadpool.ts): the other APs leave
// KVM_RUN with EINTR and go back in. vcpu.N.cpuset cannot pin a pool
// thread: with a cpuset for an AP, or a pool too small for the APs, runVm
// gives the APs threads of their own.

import type { MessagePort } from 'node:worker_threads';
import { ForwardingIoBus, Mailbox } from './ap-mailbox.js';
import { dispatchExit, ExitCounters, type ExitContext } from './exit-dispatch.js';
import type { IoBus } from './io-bus.js';
import type { ExitRequest } from './exit-status.js';
import type { Vcpu } from '../sys/kvm.js';
import { EXIT, KVM, KVM_RUN_OFF, RUN_DEBUG } from '../sys/kvm-abi.js';
import { EAGAIN, EINTR, ioctlRawAsync, strerror } from '../sys/libc.js';
import { kickThread } from '../sys/kick-signal.js';
import { errorLine } from '../user-error.js';
import type { ConfigTree } from '../config/tree.js';
import { findPoolThreads, releaseAtExit, threadpoolSize } from '../sys/threadpool.js';
import { checkRunState, serveVcpuRequests } from './vcpu-requests.js';
import { VCPU_REQUEST, VCPU_STATE, type KickTarget, type VcpuControl } from './vcpu-control.js';

/** How often a stopping pool kicks APs that have not left KVM_RUN yet. */
const STOP_RETRY_MS = 50;

export interface ApPoolSetup {
  control: VcpuControl;
  /** Every vCPU (index = id); the pool runs ids 1..n-1. */
  vcpus: readonly Vcpu[];
  /** One mailbox per vCPU (vcpu-thread-data.ts' DeviceHostData.mailboxes). */
  mailboxes: readonly SharedArrayBuffer[];
  /** Rings vCPU 0's thread (the device host) to serve a mailbox. */
  ringDeviceThread: () => void;
  /** The devices' bus, when vCPU 0 runs on this (the main) thread: the APs
   * call it directly instead of going through their mailboxes. */
  deviceBus?: IoBus;
  /** How an AP's KVM_RUN is issued on the pool (default: koffi's async
   * ioctl); vCPU 0 on this thread passes one that kicks it as the call
   * returns (main-thread-vcpu.ts). */
  kvmRunAsync?: (vcpuFd: number, done: (r: number) => void) => void;
  strictIo: boolean;
  /** The vCPU's end of its request channel (VcpuRequester.portFor). */
  requestPort: (id: number) => MessagePort;
  /** libuv's pool threads (findPoolThreads). */
  poolThreads: readonly number[];
  /** An AP ended the run (claims the exit first, as a vCPU thread does). */
  exit: (req: ExitRequest) => void;
  /** An AP took KVM_EXIT_DEBUG (-G); it already holds itself. */
  debugExit?: (id: number, exception: number, dr6: bigint) => void;
}

/** How often a held AP looks at its requests and its hold (-G). */
const DEBUG_HOLD_POLL_MS = 2;

interface Ap {
  readonly id: number;
  readonly vcpu: Vcpu;
  readonly ctx: ExitContext;
  readonly counters: ExitCounters;
  readonly port: MessagePort;
  inKvmRun: boolean;
  done: boolean;
}

export class ApPool {
  private readonly aps: Ap[];
  private remaining: number;
  private resolveStopped!: () => void;
  private retry: NodeJS.Timeout | undefined;
  private started = false;
  private broadcastPending = false;
  /** Unregisters the exit release start() registered. */
  private unhookExit: () => void = () => {};
  private readonly kvmRunAsync: (vcpuFd: number, done: (r: number) => void) => void;
  /** Resolves once every AP has left KVM_RUN for good. */
  readonly stopped = new Promise<void>((r) => { this.resolveStopped = r; });

  constructor(private readonly s: ApPoolSetup) {
    this.kvmRunAsync = s.kvmRunAsync ?? ((fd, done) => ioctlRawAsync(fd, KVM.RUN, 0, done));
    this.aps = s.vcpus.slice(1).map((vcpu, i) => {
      const id = i + 1;
      const bus = s.deviceBus
        ?? new ForwardingIoBus(new Mailbox(s.mailboxes[id] as SharedArrayBuffer), s.ringDeviceThread, () => s.control.stopped);
      return {
        id, vcpu, counters: new ExitCounters(), port: s.requestPort(id), inKvmRun: false, done: false,
        ctx: { vcpuId: id, run: vcpu.runView, bus, strictIo: s.strictIo, rip: () => Number(vcpu.getRegs().rip) },
      };
    });
    this.remaining = this.aps.length;
    if (this.remaining === 0) this.resolveStopped();
  }

  /** The APs' kick targets, for the Kicker. */
  targets(): Array<[number, KickTarget]> {
    return this.aps.map((ap) => [ap.id, {
      set immediateExit(v: boolean) { ap.vcpu.immediateExit = v; },
      kick: () => this.kick(ap),
    }]);
  }

  /** Every AP enters the guest (after control.go()). */
  start(): void {
    this.started = true;
    // An exit while APs run (an uncaught exception) must not wait for
    // their KVM_RUN calls on the pool threads (sys/threadpool.ts): out they
    // come, and the callbacks that would enter again never run.
    this.unhookExit = releaseAtExit(() => {
      for (const ap of this.aps) if (!ap.done) ap.vcpu.immediateExit = true;
      for (const tid of this.s.poolThreads) kickThread(tid);
    });
    for (const ap of this.aps) {
      this.s.control.setState(ap.id, VCPU_STATE.RUNNING);
      this.enter(ap);
    }
  }

  /** Called once the run is over: keeps kicking until every AP is out. */
  stop(): void {
    if (!this.started) { for (const ap of this.aps) this.finish(ap); return; }
    if (this.retry || this.remaining === 0) return;
    this.retry = setInterval(() => { for (const ap of this.aps) if (!ap.done) this.kick(ap); }, STOP_RETRY_MS);
  }

  private kick(ap: Ap): void {
    ap.vcpu.immediateExit = true;
    if (!ap.inKvmRun || this.broadcastPending) return; // immediate_exit is seen at the next entry
    // Kicks made together (kickAll, the halt watchdog) share one broadcast.
    this.broadcastPending = true;
    queueMicrotask(() => {
      this.broadcastPending = false;
      for (const tid of this.s.poolThreads) kickThread(tid);
    });
  }

  private enter(ap: Ap): void {
    if (this.s.control.stopped) { this.finish(ap); return; }
    if (this.s.control.debugHeld(ap.id)) {
      // Held by the debugger: out of the guest, still serving requests.
      this.serve(ap);
      setTimeout(() => this.enter(ap), DEBUG_HOLD_POLL_MS);
      return;
    }
    ap.inKvmRun = true;
    this.kvmRunAsync(ap.vcpu.fd, (r) => {
      ap.inKvmRun = false;
      let again = false;
      try {
        again = this.afterRun(ap, r);
      } catch (e) {
        this.s.exit({ kind: 'error', message: `vCPU ${ap.id}: ${errorLine(e)}` });
      }
      if (again) this.enter(ap);
      else this.finish(ap);
    });
  }

  /** What a vCPU thread's run loop does after one KVM_RUN: true to go on. */
  private afterRun(ap: Ap, r: number): boolean {
    if (this.s.control.stopped) return false;
    if (r < 0) {
      if (r !== -EINTR && r !== -EAGAIN) {
        this.s.exit({ kind: 'error', message: `KVM_RUN failed on vCPU ${ap.id}: ${strerror(-r)}` });
        return false;
      }
      ap.vcpu.immediateExit = false;
      this.serve(ap);
      return true;
    }
    const reason = ap.vcpu.exitReason;
    ap.counters.add(reason);
    if (reason === EXIT.DEBUG) {
      this.s.control.setDebugHold(ap.id, true);
      const v = ap.vcpu.runView;
      this.s.debugExit?.(ap.id, v.getUint32(KVM_RUN_OFF.exit + RUN_DEBUG.exception, true), v.getBigUint64(KVM_RUN_OFF.exit + RUN_DEBUG.dr6, true));
      return true;
    }
    const action = dispatchExit(reason, ap.ctx);
    if (action === 'continue' || action === 'halted') return true;
    this.s.exit(action);
    return false;
  }

  /** Work that arrives by kick: bhyvectl/debugger requests, the halt check. */
  private serve(ap: Ap): void {
    const requests = this.s.control.takeRequests(ap.id);
    if (requests & VCPU_REQUEST.MESSAGES) serveVcpuRequests(ap.port, ap.vcpu, ap.counters.counts);
    if (requests & VCPU_REQUEST.CHECK_STATE) checkRunState(ap.vcpu, this.s.control, ap.id);
  }

  private finish(ap: Ap): void {
    if (ap.done) return;
    ap.done = true;
    if (--this.remaining === 0) {
      if (this.retry) clearInterval(this.retry);
      this.unhookExit();
      this.resolveStopped();
    }
  }
}

/** libuv's threads left to Node and the device backends besides the APs. */
const POOL_RESERVE = 4;

/** The pool threads the APs of `config` will run on, or undefined when they
 * get threads of their own: vcpu.ap_model=thread, a cpuset for an AP, or a
 * pool too small (then `warn` says why). */
export async function poolForAps(config: ConfigTree, ncpus: number, warn: (m: string) => void): Promise<number[] | undefined> {
  if (ncpus < 2 || apModel(config) !== 'pool') return undefined;
  for (let i = 1; i < ncpus; i++) if (config.get(`vcpu.${i}.cpuset`) !== undefined) return undefined;
  const size = threadpoolSize();
  const needed = ncpus - 1 + POOL_RESERVE;
  const tids = size >= needed ? await findPoolThreads(size) : [];
  if (tids.length >= needed && tids.length === size) return tids;
  warn(`libuv's threadpool has ${tids.length || size} threads where ${ncpus - 1} application processors need ${needed}: `
    + `each AP runs on a thread of its own (UV_THREADPOOL_SIZE=${needed} or more fixes this)`);
  return undefined;
}

export const AP_MODELS = ['pool', 'thread'] as const;

/** vcpu.ap_model: where application processors run (default pool). */
export function apModel(config: ConfigTree): (typeof AP_MODELS)[number] {
  return config.get('vcpu.ap_model') === 'thread' ? 'thread' : 'pool';
}
