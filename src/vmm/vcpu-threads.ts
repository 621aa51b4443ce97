// Starting vCPU threads. A worker_thread needs ~60 ms to boot and load its
// modules, so bhyve starts them as soon as it knows the vCPU count, before
// it loads the rest of the vmm; each waits for its data (vcpu-thread.ts).

import { Worker } from 'node:worker_threads';

export function spawnVcpuThread(): Worker {
  return new Worker(new URL('./vcpu-thread.js', import.meta.url));
}

/** Threads for the `cpus` config value; none when it is not a sane count
 * (the setup then reports the problem and spawns what it needs). */
export function spawnVcpuThreads(cpus: string | undefined): Worker[] {
  const n = Number(cpus ?? '1');
  if (!Number.isInteger(n) || n <= 0 || n > 64) return [];
  return Array.from({ length: n }, spawnVcpuThread);
}
