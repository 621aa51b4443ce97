// Activation of a multi-queue virtio device for unit tests: one FakeDriver
// (with its own plain-buffer RAM) per queue, null for a queue the driver
// leaves disabled.

import { createQueues, offeredFeatures, type VirtioActivation, type VirtioDevice } from '../../src/devices/virtio/virtio-device.js';
import type { FakeDriver } from './virtio-driver.js';

/** Activates `device` with one FakeDriver per queue (each its own RAM). */
export function activateQueues(device: VirtioDevice, drivers: Array<FakeDriver | null>, features?: bigint) {
  const interrupts: number[] = [];
  const resets: string[] = [];
  device.ackFeatures(features ?? offeredFeatures(device));
  const queues = drivers.map((d, i) => (d === null ? null
    : createQueues(d.mem, drivers.map((x, j) => (j === i && x ? x.layout : null)), device.ackedFeatures, device.queueMaxSizes)[i]));
  const activation: VirtioActivation = {
    mem: (drivers.find((d) => d !== null) as FakeDriver).mem,
    queues,
    interrupt: { queue: (i) => interrupts.push(i), config: () => undefined },
    needsReset: (reason) => { resets.push(reason); },
  };
  device.activate(activation);
  return { interrupts, resets, queues };
}

