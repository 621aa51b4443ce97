// One vCPU's life: set up, wait for go, KVM_RUN until stop, each exit
// handled right here on the thread that took it (an exit round trip stays
// one kernel call). vCPU 0 also owns every device model (device-host.ts);
// other vCPUs forward device accesses to it through their mailbox.
//
// It runs on a worker thread of its own (vcpu-thread.ts), or, for vCPU 0
// with vcpu.bsp_model=main, on the main thread (main-thread-vcpu.ts): there
// the loop hands the thread back to the event loop whenever the loop waker
// (sys/loop-waker.ts) says the loop has work, and resumes after one turn.

import { ForwardingIoBus, Mailbox } from './ap-mailbox.js';
import { DeviceHost } from './device-host.js';
import { errorLine } from '../user-error.js';
import { dispatchExit, ExitCounters, type ExitContext } from './exit-dispatch.js';
import type { ExitRequest } from './exit-status.js';
import type { IoBus } from './io-bus.js';
import { EXIT, KVM_RUN_OFF, MP_STATE, RUN_DEBUG } from '../sys/kvm-abi.js';
import { Vcpu } from '../sys/kvm.js';
import { EAGAIN, EINTR, gettid, pinThisThread, strerror } from '../sys/libc.js';
import { VCPU_REQUEST, VCPU_STATE, VcpuControl } from './vcpu-control.js';
import { Doorbell } from '../sys/doorbell.js';
import { checkRunState, serveVcpuRequests } from './vcpu-requests.js';
import { applyVcpuState, realModeEntry } from './vcpu-state.js';
import type { VcpuThreadData, VcpuThreadMessage } from './vcpu-thread-data.js';
import { confineThisThread } from './sandbox/sandbox.js';
import { trace, traceMemory, traceModules } from './startup-trace.js';
import { LoopWaker } from '../sys/loop-waker.js';

/** How often vCPU 0 on the main thread looks at its debugger hold (-G). */
const DEBUG_HOLD_POLL_MS = 2;

/** Where the vCPU runs. A worker thread blocks in Atomics.wait and KVM_RUN
 * as long as it likes; the main thread must come back to its event loop. */
export type VcpuHome =
  | { kind: 'worker' }
  | {
    kind: 'main';
    /** Calls `resume` after one turn of the event loop. */
    yieldLoop(resume: () => void): void;
    /** The device host, once built (the APs on the pool use its bus). */
    hostBuilt(host: DeviceHost): void;
    /** The loop waker, once started (the APs on the pool kick through it). */
    wakerStarted(waker: LoopWaker): void;
  };

/** The rest of the vCPU's life: set up, wait for go, KVM_RUN until stop. */
export function runVcpu(d: VcpuThreadData, post: (msg: VcpuThreadMessage) => void, home: VcpuHome = { kind: 'worker' }): void {
  trace(`vcpu ${d.id}: data`);
  const control = new VcpuControl(d.controlSab, d.vcpuCount);
  const vcpu = new Vcpu(d.vcpuFd, d.mmapSize, d.id);
  const counters = new ExitCounters();

  function requestExit(req: ExitRequest): void {
    if (control.claimExit()) post({ type: 'exit', request: req });
    control.stop();
  }

  control.setTid(d.id, gettid());
  if (d.cpuset && d.cpuset.length) pinThisThread(d.cpuset);

  // vCPU 0's thread runs every device model and answers the doorbell; the
  // others forward device accesses to it and ring.
  const doorbell = Doorbell.attach(d.doorbell, d.id === 0 ? vcpu : undefined);
  if (d.id === 0) doorbell.answerOn(gettid());
  // ACPI S3 on the boot vCPU (this thread runs the devices): asleep it waits
  // in KVM_RUN as after INIT, running no guest code while kicks still serve
  // the devices; it wakes in real mode at the waking vector. The request comes
  // from inside the guest's PM1a_CNT write: the vCPU sleeps once that I/O is
  // complete (KVM finishes it on the next KVM_RUN, here one that returns at
  // once through immediate_exit), or KVM would finish it over the new state.
  let sleepPending = false;
  const bsp = {
    sleep: () => { sleepPending = true; },
    wake: (vector: number) => {
      vcpu.setMpState(MP_STATE.RUNNABLE);
      applyVcpuState(vcpu, realModeEntry(vector));
    },
  };

  function enterSleep(): void {
    sleepPending = false;
    vcpu.immediateExit = true;
    vcpu.enter(); // completes the pending I/O, returns EINTR
    vcpu.immediateExit = false;
    vcpu.setMpState(MP_STATE.INIT_RECEIVED);
    onKick(); // a kick that came meanwhile
  }
  const host = d.deviceHost ? new DeviceHost(d.deviceHost, d.vcpuCount, doorbell, requestExit, vcpu.run, bsp) : undefined;
  if (host && home.kind === 'main') home.hostBuilt(host);
  const bus: IoBus = host?.bus
    ?? new ForwardingIoBus(new Mailbox(d.mailbox!), () => doorbell.ring(), () => control.stopped);

  const exitCtx: ExitContext = {
    vcpuId: d.id,
    run: vcpu.runView,
    bus,
    strictIo: d.strictIo,
    rip: () => Number(vcpu.getRegs().rip),
  };

  /** Work that arrives by kick: device-thread requests and the halt check. */
  function onKick(): void {
    // Device requests are for vCPU 0 alone: other vCPUs must not take them.
    if (host) host.serve(doorbell.take());
    const requests = control.takeRequests(d.id);
    if (requests & VCPU_REQUEST.MESSAGES) serveVcpuRequests(d.requestPort, vcpu, counters.counts, host);
    if (requests & VCPU_REQUEST.CHECK_STATE) checkRunState(vcpu, control, d.id);
  }

  /** Held by the debugger (-G): out of the guest, still serving requests
   * (registers, guest-debug flags) and, on vCPU 0, the devices. */
  function parkForDebugger(): void {
    while (control.debugHeld(d.id) && !control.stopped) {
      onKick();
      control.waitDebugHold(d.id, 50);
    }
    onKick();
  }

  /** On the main thread: the loop waker, from go on. */
  let waker: LoopWaker | undefined;

  /** KVM_RUN until the run ends ('stopped'), or, on the main thread, until
   * the event loop has work ('yield') or the debugger holds the vCPU. */
  function runLoop(): 'stopped' | 'yield' | 'held' {
    for (;;) {
      if (control.stopped) return 'stopped';
      if (control.debugHeld(d.id)) {
        if (waker) return 'held';
        parkForDebugger();
        continue;
      }
      const r = vcpu.enter();
      if (r < 0) {
        if (r === -EINTR || r === -EAGAIN) {
          vcpu.immediateExit = false;
          onKick();
          if (sleepPending) enterSleep();
          if (waker?.fired()) return 'yield';
          continue;
        }
        requestExit({ kind: 'error', message: `KVM_RUN failed on vCPU ${d.id}: ${strerror(-r)}` });
        return 'stopped';
      }
      const reason = vcpu.exitReason;
      counters.add(reason);
      if (reason === EXIT.DEBUG) {
        const exception = vcpu.runView.getUint32(KVM_RUN_OFF.exit + RUN_DEBUG.exception, true);
        control.setDebugHold(d.id, true);
        const dr6 = `0x${vcpu.runView.getBigUint64(KVM_RUN_OFF.exit + RUN_DEBUG.dr6, true).toString(16)}`;
        post({ type: 'debug', id: d.id, exception, dr6 });
        continue;
      }
      const action = dispatchExit(reason, exitCtx);
      if (sleepPending) enterSleep();
      if (action === 'continue' || action === 'halted') continue;
      requestExit(action);
      return 'stopped';
    }
  }

  trace(`vcpu ${d.id}: set up`);
  // This thread's part of the sandbox, now that its devices are open (on
  // the main thread, enterSandbox confines it with the rest).
  if (d.sandbox) {
    host?.prepareForSandbox();
    const problems = home.kind === 'worker' ? confineThisThread(d.sandbox) : [];
    if (problems.length) requestExit({ kind: 'error', message: `cannot sandbox vCPU ${d.id}: ${problems.join('; ')} (-o security.sandbox=false runs without)` });
  }
  trace(`vcpu ${d.id}: ready`);
  post({ type: 'ready', id: d.id });

  function failed(e: unknown): void {
    requestExit({ kind: 'error', message: `vCPU ${d.id}: ${errorLine(e)}` });
    if (process.env.BHYVE_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
  }

  function finish(): void {
    waker?.stop();
    host?.close();
    post({ type: 'stopped', id: d.id, exitCounts: Array.from(counters.counts) });
  }

  function started(): void {
    trace(`vcpu ${d.id}: go`);
    traceMemory(`vcpu ${d.id}: go`);
    traceModules(`vcpu ${d.id}: go`);
    control.setState(d.id, VCPU_STATE.RUNNING);
  }

  if (home.kind === 'worker') {
    control.waitGo();
    try {
      started();
      runLoop();
    } catch (e) {
      failed(e);
    }
    finish();
    return;
  }

  // On the main thread: a slice of the run per turn of the event loop.
  // Each slice starts with what the turn may have rung (the doorbell's
  // immediate_exit is cleared before its bits are taken, so a ring that
  // comes meanwhile still ends the next KVM_RUN), then arms the waker.
  const main = home;
  const slice = (): void => {
    try {
      if (!control.stopped) {
        vcpu.immediateExit = false;
        onKick();
        if (sleepPending) enterSleep();
        if (!waker!.arm()) { main.yieldLoop(slice); return; }
        const r = runLoop();
        if (r === 'yield') { main.yieldLoop(slice); return; }
        // Not straight from the timer: a slice run inside Node's timer
        // callback would block the timers due with it (an AP's own hold
        // poll), and the waker, armed meanwhile, sees no timer in libuv's
        // heap (Node re-arms its one uv timer only after its callback).
        if (r === 'held') { setTimeout(() => main.yieldLoop(slice), DEBUG_HOLD_POLL_MS); return; }
      }
    } catch (e) {
      failed(e);
    }
    finish();
  };
  void control.goAsync().then(() => {
    if (control.stopped) { finish(); return; }
    try {
      started();
      waker = LoopWaker.start(vcpu.run);
      main.wakerStarted(waker);
    } catch (e) {
      failed(e);
      finish();
      return;
    }
    slice();
  });
}
