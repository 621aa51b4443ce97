// Requests from the main thread that only a vCPU's own thread can serve:
// KVM's vCPU ioctls wait for the vCPU mutex, which KVM_RUN holds, so the
// main thread posts the request on the vCPU's port and kicks it; the vCPU
// thread takes it synchronously (receiveMessageOnPort) between two KVM_RUNs.

import { MessageChannel, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { EXIT_NAMES, MP_STATE, RFLAGS_IF } from '../sys/kvm-abi.js';
import type { Vcpu } from '../sys/kvm.js';
import { Kicker, VCPU_REQUEST, VCPU_STATE, type VcpuControl } from './vcpu-control.js';
import { applyVcpuState, readVcpuState, type VcpuStateUpdate } from './vcpu-state.js';

export type VcpuRequestBody =
  | { op: 'get-state' }
  | { op: 'set-state'; update: VcpuStateUpdate }
  | { op: 'nmi' }
  /** KVM_SET_GUEST_DEBUG (GUESTDBG bits), for the gdb stub. */
  | { op: 'set-guest-debug'; control: number; debugregs?: string[] }
  | { op: 'exit-counts' }
  /** vCPU 0 only (it runs the devices): DeviceHost.deviceStats(). */
  | { op: 'device-stats' }
  /** vCPU 0 only: DeviceHost.wakeup(), true when the guest was in S3. */
  | { op: 'wakeup' };

type Envelope = { seq: number; body: VcpuRequestBody };
type Reply = { seq: number; ok: true; result: unknown } | { seq: number; ok: false; error: string };

/** What vCPU 0's thread answers for its devices (DeviceHost). */
export interface DeviceRequests {
  deviceStats(): Record<string, Record<string, number>>;
  wakeup(): boolean;
}

/** vCPU-thread side: serves every request waiting on `port`. */
export function serveVcpuRequests(port: MessagePort, vcpu: Vcpu, exitCounts: Float64Array, devices?: DeviceRequests): void {
  for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) {
    const { seq, body } = m.message as Envelope;
    let reply: Reply;
    try {
      reply = { seq, ok: true, result: perform(body, vcpu, exitCounts, devices) };
    } catch (e) {
      reply = { seq, ok: false, error: (e as Error).message };
    }
    port.postMessage(reply);
  }
}

/** VCPU_REQUEST.CHECK_STATE, on the vCPU's side: what the halt watchdog
 * (halt-watch.ts) needs to know about this vCPU's run state. */
export function checkRunState(vcpu: Vcpu, control: VcpuControl, id: number): void {
  const mp = vcpu.getMpState();
  let state: number = VCPU_STATE.RUNNING;
  if (mp === MP_STATE.UNINITIALIZED || mp === MP_STATE.INIT_RECEIVED) state = VCPU_STATE.INACTIVE;
  else if (mp === MP_STATE.HALTED && (vcpu.getRegs().rflags & BigInt(RFLAGS_IF)) === 0n) state = VCPU_STATE.HALTED_IF0;
  control.setState(id, state);
}

function perform(body: VcpuRequestBody, vcpu: Vcpu, exitCounts: Float64Array, devices?: DeviceRequests): unknown {
  switch (body.op) {
    case 'get-state': return readVcpuState(vcpu);
    case 'set-state': applyVcpuState(vcpu, body.update); return readVcpuState(vcpu);
    case 'nmi': vcpu.nmi(); return null;
    case 'set-guest-debug': vcpu.setGuestDebug(body.control, (body.debugregs ?? []).map((x) => BigInt(x))); return null;
    case 'exit-counts': {
      const out: Record<string, number> = {};
      exitCounts.forEach((n, reason) => { if (n) out[EXIT_NAMES[reason] ?? `EXIT_${reason}`] = n; });
      return out;
    }
    case 'device-stats': return devices?.deviceStats() ?? {};
    case 'wakeup': return devices?.wakeup() ?? false;
  }
}

/** Main-thread side: one port pair per vCPU. */
export class VcpuRequester {
  private readonly channels: MessageChannel[];
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  constructor(count: number, private readonly control: VcpuControl, private readonly kicker: Kicker) {
    this.channels = Array.from({ length: count }, () => new MessageChannel());
    for (const ch of this.channels) {
      ch.port1.on('message', (r: Reply) => this.deliver(r));
      ch.port1.unref();
    }
  }

  private deliver(r: Reply): void {
    const p = this.pending.get(r.seq);
    if (!p) return;
    this.pending.delete(r.seq);
    if (r.ok) p.resolve(r.result);
    else p.reject(new Error(r.error));
  }

  /** The port to hand (transfer) to vCPU `id`'s thread. */
  portFor(id: number): MessagePort { return this.channels[id].port2; }

  request(id: number, body: VcpuRequestBody, timeoutMs = 5000): Promise<unknown> {
    if (id < 0 || id >= this.channels.length) return Promise.reject(new Error(`no vCPU ${id}`));
    const seq = ++this.seq;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        reject(new Error(`vCPU ${id} did not answer`));
      }, timeoutMs);
      this.pending.set(seq, {
        resolve: (v) => { clearTimeout(timer); resolve(v); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      this.channels[id].port1.postMessage({ seq, body } satisfies Envelope);
      this.control.request(id, VCPU_REQUEST.MESSAGES);
      this.kicker.kick(id);
    });
  }

  close(): void {
    // Replies a vCPU posted before the VM stopped are answers, not "VM
    // stopped": the port's event may still be queued behind the thread's
    // exit (bhyvectl --inject-nmi, whose NMI ends the guest at once).
    for (const ch of this.channels) {
      for (let m = receiveMessageOnPort(ch.port1); m; m = receiveMessageOnPort(ch.port1)) this.deliver(m.message as Reply);
    }
    for (const ch of this.channels) ch.port1.close();
    for (const p of this.pending.values()) p.reject(new Error('VM stopped'));
    this.pending.clear();
  }
}
