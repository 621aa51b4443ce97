// VcpuRequester (vmm/vcpu-requests.ts): a reply the vCPU thread posted before
// the VM stopped answers its request even when the requester closes before
// the reply's port event is handled (the vCPU's exit message and its thread's
// end can be handled first: bhyvectl --inject-nmi on a guest whose NMI
// handler ends the run got "VM stopped").
import { describe, expect, it } from 'vitest';
import { receiveMessageOnPort, type MessagePort } from 'node:worker_threads';

import { Kicker, VcpuControl } from '../../src/vmm/vcpu-control.js';
import { VcpuRequester, serveVcpuRequests } from '../../src/vmm/vcpu-requests.js';
import type { Vcpu } from '../../src/sys/kvm.js';

function requester(): VcpuRequester {
  const control = VcpuControl.create(1);
  return new VcpuRequester(1, control, new Kicker(control, new Map([[0, { kick: () => undefined }]])));
}

describe('Kicker', () => {
  it('a kick before the vCPU\'s thread has a tid still sets immediate_exit (the control socket is up while vCPU threads set up)', () => {
    const control = VcpuControl.create(2);
    const t0 = { immediateExit: false };
    const t1 = { immediateExit: false };
    const kicker = new Kicker(control, new Map([[0, t0], [1, t1]]));
    kicker.kick(1);
    expect(t1.immediateExit).toBe(true);
    expect(t0.immediateExit).toBe(false);
  });
});

describe('VcpuRequester', () => {
  it('a reply posted before close() answers its request', async () => {
    const r = requester();
    const port: MessagePort = r.portFor(0);
    const answer = r.request(0, { op: 'nmi' });
    // The vCPU's side, synchronously: take the request, do it, reply.
    let nmis = 0;
    serveVcpuRequests(port, { nmi: () => { nmis++; } } as unknown as Vcpu, new Float64Array(64));
    expect(nmis).toBe(1);
    r.close(); // before the event loop could deliver the reply
    await expect(answer).resolves.toBeNull();
    port.close();
  });

  it('a request nobody answered is rejected with "VM stopped"', async () => {
    const r = requester();
    const port = r.portFor(0);
    const answer = r.request(0, { op: 'get-state' });
    expect(receiveMessageOnPort(port)).toBeDefined(); // taken, never answered
    r.close();
    await expect(answer).rejects.toThrow('VM stopped');
    port.close();
  });
});
