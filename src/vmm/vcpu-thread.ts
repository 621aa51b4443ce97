// One vCPU thread: KVM_RUN in a loop, each exit handled right here on the
// thread that took it (an exit round trip stays one kernel call). vCPU 0's
// thread also owns every device model; other vCPUs forward device accesses
// to it through their mailbox.

import fs from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { ConfigTree } from '../config/tree.js';
import type { ByteStream, Device, DeviceContext, InterruptSink, KvmDoorbells, MachineControl } from '../devices/device.js';
import { attachUartStream } from '../devices/lpc/uart-backend.js';
import { buildPlatform, type Platform } from '../devices/platform.js';
import { ForwardingIoBus, Mailbox } from './ap-mailbox.js';
import { DeviceMemoryMap } from './device-memory-map.js';
import { DeviceTimers } from './device-timers.js';
import { dispatchExit, ExitCounters, type ExitContext } from './exit-dispatch.js';
import type { ExitRequest } from './exit-status.js';
import { GuestMemory } from './guest-memory.js';
import { mapGuestRam, ramRegions } from './guest-ram.js';
import { LocalIoBus, type IoBus } from './io-bus.js';
import { CAP, MP_STATE, RFLAGS_IF } from './kvm-abi.js';
import { Vcpu, Vm } from './kvm.js';
import { EAGAIN, EINTR, gettid, pinThisThread, strerror } from './libc.js';
import { DEVICE_REQUEST, Kicker, VCPU_REQUEST, VCPU_STATE, VcpuControl } from './vcpu-control.js';
import { serveVcpuRequests } from './vcpu-requests.js';
import type { VcpuThreadData, VcpuThreadMessage } from './vcpu-thread-data.js';

// The thread is started before the VM exists, so that loading this module
// overlaps the main thread's setup; its data arrives in the first message.
const d = await new Promise<VcpuThreadData>((resolve) => parentPort!.once('message', resolve));
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

// Kicking vCPU 0 needs its kvm_run page mapped in this thread as well.
const bspRun = d.id === 0 ? vcpu : new Vcpu(d.bspFd, d.mmapSize, 0);
const kicker = new Kicker(control, new Map([[0, bspRun]]));

let bus: IoBus;
let devices: Device[] = [];
let platform: Platform | undefined;
let timers: DeviceTimers | undefined;
let mailboxes: Mailbox[] = [];
let localBus: LocalIoBus | undefined;

if (d.id === 0) {
  const vm = new Vm(null, d.vmFd);
  const memFd = fs.openSync(d.memoryPath, 'r+');
  const ram = mapGuestRam(memFd, d.layout);
  fs.closeSync(memFd);
  const regions = ramRegions(ram);
  const irq: InterruptSink = {
    setLevel: (gsi, high) => vm.irqLine(gsi, high),
    pulse: (gsi) => { vm.irqLine(gsi, true); vm.irqLine(gsi, false); },
    signalMsi: (address, data) => vm.signalMsi(address, data),
  };
  const machine: MachineControl = { requestExit, vcpuCount: d.vcpuCount };
  const streams = new Map<string, ByteStream>();
  timers = new DeviceTimers(d.timerSab);
  localBus = new LocalIoBus();
  const config = ConfigTree.fromJSON(d.config);
  // The VARS file's KVM slot belongs to this thread (bootvars.ts maps and
  // unmaps it as the CFI flash enters and leaves read-array mode).
  const bootvarsPath = d.bootromPath !== undefined ? config.get('lpc.bootvars') : undefined;
  const ctx: DeviceContext = {
    io: localBus,
    irq,
    mem: new GuestMemory(regions),
    config,
    machine,
    timer: (callback) => timers!.create(callback),
    hostPort: (key: string) => d.hostPorts?.[key],
    kvm: kvmDoorbells(vm),
    memoryMap: d.legacyWindow || bootvarsPath !== undefined ? new DeviceMemoryMap(vm, ram[0].map, d.bootromPath, bootvarsPath) : undefined,
    stream(key: string): ByteStream | undefined {
      const t = d.streams[key];
      if (!t) return undefined;
      let s = streams.get(key);
      if (!s) { s = attachUartStream(t); streams.set(key, s); }
      return s;
    },
  };
  try {
    platform = buildPlatform(ctx, d.layout, { fwcfgFiles: d.fwcfgFiles });
    devices = platform.devices;
  } catch (e) {
    // A device that cannot start (missing image, bad option) is the user's
    // to fix: one line, no vCPU prefix.
    requestExit({ kind: 'error', message: (e as Error).message });
  }
  mailboxes = d.mailboxes.map((sab) => new Mailbox(sab));
  bus = localBus;
} else {
  bus = new ForwardingIoBus(new Mailbox(d.mailboxes[d.id]), () => kicker.kick(0), () => control.stopped);
}

const exitCtx: ExitContext = {
  vcpuId: d.id,
  run: vcpu.runView,
  bus,
  strictIo: d.strictIo,
  rip: () => Number(vcpu.getRegs().rip),
};

/** DeviceContext.kvm: ioeventfds on this VM, and what a device's helper
 * thread (virtio-blk iothread) needs to map RAM and kick this thread. */
function kvmDoorbells(vm: Vm): KvmDoorbells | undefined {
  if (!vm.checkExtension(CAP.IOEVENTFD)) return undefined;
  const anyLength = vm.checkExtension(CAP.IOEVENTFD_ANY_LENGTH) !== 0;
  return {
    ioeventfd(fd: number, addr: number, deassign = false): boolean {
      try {
        vm.ioeventfd({ fd, addr, len: anyLength ? 0 : 2, deassign });
        return true;
      } catch {
        return false;
      }
    },
    helper: {
      memoryPath: d.memoryPath, layout: d.layout, controlSab: d.controlSab, vcpuCount: d.vcpuCount,
      bspFd: d.bspFd, mmapSize: d.mmapSize,
    },
  };
}

/** Work that arrives by kick: device-thread requests and the halt check. */
function onKick(): void {
  if (d.id === 0) {
    for (const m of mailboxes) m.serve(localBus!);
    const req = control.takeDeviceRequests();
    // Before the guest enables ACPI, bhyve has no SIGTERM handler: it dies.
    if (req & DEVICE_REQUEST.POWER_BUTTON && !platform!.pm.pressPowerButton()) {
      requestExit({ kind: 'signal', signal: 'SIGTERM' });
    }
    if (req & DEVICE_REQUEST.TIMERS) timers!.runExpired();
    if (req & DEVICE_REQUEST.POLL) for (const dev of devices) dev.poll?.();
  }
  const requests = control.takeRequests(d.id);
  if (requests & VCPU_REQUEST.MESSAGES) serveVcpuRequests(d.requestPort, vcpu, counters.counts);
  if (requests & VCPU_REQUEST.CHECK_STATE) {
    const mp = vcpu.getMpState();
    let state: number = VCPU_STATE.RUNNING;
    if (mp === MP_STATE.UNINITIALIZED || mp === MP_STATE.INIT_RECEIVED) state = VCPU_STATE.INACTIVE;
    else if (mp === MP_STATE.HALTED && (vcpu.getRegs().rflags & BigInt(RFLAGS_IF)) === 0n) state = VCPU_STATE.HALTED_IF0;
    control.setState(d.id, state);
  }
}

function runLoop(): void {
  control.setState(d.id, VCPU_STATE.RUNNING);
  for (;;) {
    if (control.stopped) return;
    const r = vcpu.enter();
    if (r < 0) {
      if (r === -EINTR || r === -EAGAIN) {
        vcpu.immediateExit = false;
        onKick();
        continue;
      }
      requestExit({ kind: 'error', message: `KVM_RUN failed on vCPU ${d.id}: ${strerror(-r)}` });
      return;
    }
    const reason = vcpu.exitReason;
    counters.add(reason);
    const action = dispatchExit(reason, exitCtx);
    if (action === 'continue' || action === 'halted') continue;
    requestExit(action);
    return;
  }
}

post({ type: 'ready', id: d.id });
control.waitGo();
try {
  runLoop();
} catch (e) {
  requestExit({ kind: 'error', message: `vCPU ${d.id}: ${(e as Error).message}` });
  if (process.env.BHYVE_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
}
for (const dev of devices) {
  try { dev.close?.(); } catch { /* releasing host resources is best effort at exit */ }
}
post({ type: 'stopped', id: d.id, exitCounts: Array.from(counters.counts) });
