// Starting and retiring vCPU threads. A worker_thread needs ~60 ms to boot
// and load its modules, so bhyve starts them as soon as it knows the vCPU
// count, before it loads the rest of the vmm; each waits for its data
// (vcpu-thread.ts).
//
// A thread must not be terminated while it is still loading: Node 20 aborts
// the whole process (FATAL ERROR ... napi_throw) when a worker is stopped
// during koffi's native module initialisation. Each thread says 'loaded'
// once its modules are in, and retireVcpuThread waits for that.

import { Worker } from 'node:worker_threads';

const loaded = new WeakMap<Worker, Promise<void>>();

/** A vCPU thread's young generation: 2 MiB (V8 lets it grow to 16 MiB of
 * 64). After start-up a vCPU thread allocates little and briefly (exit
 * handling, device requests), so the smaller nursery costs no measurable
 * time and keeps ~1.5 MiB per thread off the RSS (BENCHMARKS.md, "Launch"). */
const VCPU_YOUNG_GENERATION_MB = 2;

export function spawnVcpuThread(): Worker {
  return adoptVcpuThread(new Worker(new URL('./vcpu-thread.js', import.meta.url), {
    resourceLimits: { maxYoungGenerationSizeMb: VCPU_YOUNG_GENERATION_MB },
  }));
}

/** Takes a vCPU thread started elsewhere: bin/bhyve starts vCPU 0's before
 * the rest of bhyve loads, with the same file and limits as above. Call it
 * in the same turn of the event loop as the Worker was made in (before any
 * of its messages can arrive). */
export function adoptVcpuThread(w: Worker): Worker {
  loaded.set(w, new Promise<void>((resolve) => {
    const onMessage = (m: { type?: string }): void => {
      if (m?.type === 'loaded') { w.off('message', onMessage); resolve(); }
    };
    w.on('message', onMessage);
    // A thread that failed or ended has nothing left to load.
    w.once('error', () => resolve());
    w.once('exit', () => resolve());
  }));
  return w;
}

/** Threads for the `cpus` config value; none when it is not a sane count
 * (the setup then reports the problem and spawns what it needs). */
export function spawnVcpuThreads(cpus: string | undefined): Worker[] {
  const n = Number(cpus ?? '1');
  if (!Number.isInteger(n) || n <= 0 || n > 64) return [];
  return Array.from({ length: n }, spawnVcpuThread);
}

/** Stops a vCPU thread, once it is safe to: after it has loaded. The
 * process stays alive until then (the worker holds a reference). */
export function retireVcpuThread(w: Worker): Promise<void> {
  const ready = loaded.get(w) ?? Promise.resolve();
  return ready.then(async () => { await w.terminate(); });
}
