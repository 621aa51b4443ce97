// Faults a device model caught and turned into a guest-visible error state
// (virtio's DEVICE_NEEDS_RESET). That is right for a guest's protocol
// violation, but a catch-all also swallows host bugs: an out-of-bounds
// typed-array access, a TypeError. The fuzzer wraps the catch points and
// records every caught error that is not a documented guest error; the
// harness reports them as findings ("hidden-fault").

import { VirtioDeviceBase } from '../../src/devices/virtio/virtio-device.js';
import { VirtioPci } from '../../src/devices/virtio/virtio-pci.js';
import { VirtqueueError } from '../../src/devices/virtio/virtqueue.js';
import { GuestMemoryError } from '../../src/sys/guest-memory.js';

export const hiddenFaults: Error[] = [];

/** Errors a guest may legitimately cause. */
export function isGuestError(e: unknown): boolean {
  return e instanceof VirtqueueError || e instanceof GuestMemoryError;
}

// Messages V8 and Node give host bugs; the transport catches errors and
// keeps only their message.
const HOST_BUG = /out of bounds|outside the bounds|out of range|Invalid typed array|Invalid array length|Cannot read prop|Cannot set prop|is not a function|is not iterable|is not defined|Maximum call stack|Cannot convert|Cannot mix BigInt/i;

let installed = false;

/** Wraps VirtioDeviceBase.fail and VirtioPci.needsReset (once). */
export function installFaultHooks(): void {
  if (installed) return;
  installed = true;
  const base = VirtioDeviceBase.prototype as unknown as { fail(e: unknown): void };
  const fail = base.fail;
  base.fail = function (this: unknown, e: unknown) {
    if (!isGuestError(e)) hiddenFaults.push(e instanceof Error ? e : new Error(String(e)));
    return fail.call(this, e);
  };
  const pci = VirtioPci.prototype;
  const needsReset = pci.needsReset;
  pci.needsReset = function (this: VirtioPci, reason: string) {
    if (HOST_BUG.test(reason)) hiddenFaults.push(new Error(`needs-reset for a host bug: ${reason}`));
    return needsReset.call(this, reason);
  };
}
