// bhyve exits with status 2 when every vCPU is halted with interrupts
// disabled. KVM keeps a halted vCPU inside KVM_RUN, so the main thread
// watches KVM's per-vCPU "blocking" statistic and asks blocked vCPUs to
// report their state.

import type { ExitRequest } from './exit-status.js';
import type { KvmStats } from '../sys/kvm.js';
import { VCPU_REQUEST, VCPU_STATE, type Kicker, type VcpuControl } from './vcpu-control.js';

export const HALT_WATCH_MS = 100;

/** Every 100 ms: kick vCPUs that KVM reports blocked so they look at their
 * own state; when all started vCPUs are halted with interrupts disabled, the
 * run ends with status 2 as bhyve's does. */
export function watchHalts(
  control: VcpuControl, kicker: Kicker, stats: Array<KvmStats | undefined>, claim: (r: ExitRequest) => void,
): void {
  const n = control.vcpuCount;
  let allHalted = control.state(0) === VCPU_STATE.HALTED_IF0;
  for (let i = 0; i < n; i++) {
    const s = control.state(i);
    if (s !== VCPU_STATE.HALTED_IF0 && s !== VCPU_STATE.INACTIVE) allHalted = false;
  }
  if (allHalted) {
    claim({ kind: 'halt', why: 'all vCPUs halted with interrupts disabled' });
    return;
  }
  // APs are asked only once vCPU 0 is halted with interrupts disabled:
  // before that the run cannot end this way, and kicking an AP that shares
  // libuv's pool interrupts them all (ap-pool.ts).
  const bspHalted = control.state(0) === VCPU_STATE.HALTED_IF0;
  for (let i = 0; i < n; i++) {
    const blocking = stats[i]?.read('blocking');
    // Without KVM statistics, look at every vCPU each time.
    if (blocking === undefined || blocking !== 0n) {
      if (i > 0 && !bspHalted) continue;
      control.request(i, VCPU_REQUEST.CHECK_STATE);
      kicker.kick(i);
    } else if (control.state(i) !== VCPU_STATE.RUNNING) {
      control.setState(i, VCPU_STATE.RUNNING);
    }
  }
}

