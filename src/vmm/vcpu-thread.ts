// One vCPU thread: KVM_RUN in a loop, each exit handled right here on the
// thread that took it (an exit round trip stays one kernel call). vCPU 0's
// thread also owns every device model (device-host.ts); other vCPUs forward
// device accesses to it through their mailbox.

import { parentPort } from 'node:worker_threads';
import { ForwardingIoBus, Mailbox } from './ap-mailbox.js';
import { DeviceHost, loadDeviceModels, preloadDeviceModels } from './device-host.js';
import { errorLine } from '../user-error.js';
import { dispatchExit, ExitCounters, type ExitContext } from './exit-dispatch.js';
import type { ExitRequest } from './exit-status.js';
import type { IoBus } from './io-bus.js';
import { EXIT, KVM_RUN_OFF, MP_STATE, RUN_DEBUG } from '../sys/kvm-abi.js';
import { Vcpu } from '../sys/kvm.js';
import { EAGAIN, EINTR, gettid, pinThisThread, preloadLibc, strerror } from '../sys/libc.js';
import { VCPU_REQUEST, VCPU_STATE, VcpuControl } from './vcpu-control.js';
import { Doorbell } from '../sys/doorbell.js';
import { checkRunState, serveVcpuRequests } from './vcpu-requests.js';
import { applyVcpuState, realModeEntry } from './vcpu-state.js';
import type { DeviceModelsHint, VcpuThreadData, VcpuThreadMessage } from './vcpu-thread-data.js';
import { confineThisThread } from './sandbox/sandbox.js';
import { trace, traceMemory, traceModules } from './startup-trace.js';

// The thread is started before the VM exists, so that loading this module
// overlaps the main thread's setup; its data arrives in the first message.
// 'loaded' tells the main thread that terminating us is now safe
// (vcpu-threads.ts). (A callback, not a top-level await: the bundle is a
// CommonJS script, scripts/bundle.mjs.)
trace('vcpu: modules in');
preloadLibc();
preloadDeviceModels(process.argv.slice(2));
parentPort!.postMessage({ type: 'loaded' } satisfies VcpuThreadMessage);
// vCPU 0 loads its devices' models first (the devices are built at once),
// from the config the main thread sends ahead of the data when it can
// (DeviceModelsHint): then they load while it creates the VM.
let modelsLoading: Promise<void> | undefined;
const onMessage = (m: VcpuThreadData | DeviceModelsHint): void => {
  if ('type' in m) {
    if (m.type === 'models' && !modelsLoading) {
      modelsLoading = loadDeviceModels(m.config);
      modelsLoading.catch(() => undefined); // loaded (and reported) again with the data
    }
    return;
  }
  parentPort!.off('message', onMessage);
  const d = m;
  if (!d.deviceHost) { runVcpuThread(d); return; }
  // Loaded once: models the hint loaded are not loaded again.
  const host = d.deviceHost;
  void (modelsLoading ?? Promise.resolve()).catch(() => undefined)
    .then(() => loadDeviceModels(host.config)).then(() => runVcpuThread(d));
};
parentPort!.on('message', onMessage);

/** The rest of the thread's life: set up, wait for go, KVM_RUN until stop. */
function runVcpuThread(d: VcpuThreadData): void {
  trace(`vcpu ${d.id}: data`);
  const control = new VcpuControl(d.controlSab, d.vcpuCount);
  const vcpu = new Vcpu(d.vcpuFd, d.mmapSize, d.id);
  const counters = new ExitCounters();

  function post(msg: VcpuThreadMessage): void {
    parentPort!.postMessage(msg);
  }

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

  function runLoop(): void {
    control.setState(d.id, VCPU_STATE.RUNNING);
    for (;;) {
      if (control.stopped) return;
      if (control.debugHeld(d.id)) { parkForDebugger(); continue; }
      const r = vcpu.enter();
      if (r < 0) {
        if (r === -EINTR || r === -EAGAIN) {
          vcpu.immediateExit = false;
          onKick();
          if (sleepPending) enterSleep();
          continue;
        }
        requestExit({ kind: 'error', message: `KVM_RUN failed on vCPU ${d.id}: ${strerror(-r)}` });
        return;
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
      return;
    }
  }

  trace(`vcpu ${d.id}: set up`);
  // This thread's part of the sandbox, now that its devices are open.
  if (d.sandbox) {
    host?.prepareForSandbox();
    const problems = confineThisThread(d.sandbox);
    if (problems.length) requestExit({ kind: 'error', message: `cannot sandbox vCPU ${d.id}: ${problems.join('; ')} (-o security.sandbox=false runs without)` });
  }
  trace(`vcpu ${d.id}: ready`);
  post({ type: 'ready', id: d.id });
  control.waitGo();
  try {
    trace(`vcpu ${d.id}: go`);
    traceMemory(`vcpu ${d.id}: go`);
    traceModules(`vcpu ${d.id}: go`);
    runLoop();
  } catch (e) {
    requestExit({ kind: 'error', message: `vCPU ${d.id}: ${errorLine(e)}` });
    if (process.env.BHYVE_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
  }
  host?.close();
  post({ type: 'stopped', id: d.id, exitCounts: Array.from(counters.counts) });
}
