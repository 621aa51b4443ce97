// The machine as built, for firmware tests: the real platform assembled
// from a config tree on a fake device context (no KVM), and what it hands
// the firmware (Platform.asBuilt).
import { buildPlatform } from '../../src/devices/platform.js';
import { computeLayout } from '../../src/sys/memory-map.js';
import type { BuiltMachine } from '../../src/firmware/index.js';
import { fake } from './fake-device.js';
import './device-models.js'; // the device models buildPlatform needs

export function builtMachine(settings: Record<string, string>, o: { mem?: number; ncpu?: number } = {}): BuiltMachine {
  const f = fake(settings);
  const ctx = { ...f.ctx, machine: { ...f.ctx.machine, vcpuCount: o.ncpu ?? 1 } };
  return buildPlatform(ctx, computeLayout(o.mem ?? 512 * 1024 * 1024), { hostname: 'h' }).asBuilt;
}
