// Every fuzz target, by name.
import type { FuzzTarget } from '../harness.js';
import { virtioTarget } from './virtio.js';

export const TARGETS: readonly FuzzTarget[] = [
  virtioTarget('blk'),
  virtioTarget('net'),
  virtioTarget('rnd'),
  virtioTarget('console'),
];

export function targetByName(name: string): FuzzTarget | undefined {
  return TARGETS.find((t) => t.name === name);
}
