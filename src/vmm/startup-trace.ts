// BHYVE_TRACE_STARTUP=1: one stderr line per start-up milestone, in ms since
// the process began (every thread measures from the same origin), and the
// CPU time the calling thread has used so far (its schedstat; host load
// moves the first figure, much less the second).
import { readFileSync } from 'node:fs';
import { getHeapSpaceStatistics } from 'node:v8';
import { isMainThread } from 'node:worker_threads';

const on = process.env.BHYVE_TRACE_STARTUP === '1';
// (The global `performance` loads perf_hooks: touched only when tracing.)
const origin = on ? Number(process.env.BHYVE_TRACE_T0 ?? performance.timeOrigin) : 0;
if (on && isMainThread) process.env.BHYVE_TRACE_T0 = String(performance.timeOrigin);

/** CPU ms of the calling thread, or NaN where /proc cannot be read (sandbox). */
function threadCpuMs(): number {
  try {
    return Number(readFileSync('/proc/thread-self/schedstat', 'latin1').split(' ')[0]) / 1e6;
  } catch {
    return NaN;
  }
}

export function trace(what: string): void {
  if (!on) return;
  const ms = performance.timeOrigin + performance.now() - origin;
  process.stderr.write(`trace ${ms.toFixed(1)} cpu ${threadCpuMs().toFixed(1)} ${what}\n`);
}

/** BHYVE_TRACE_STARTUP=1: the process's resident memory by kind and this
 * thread's V8 heap, in MiB. */
export function traceMemory(what: string): void {
  if (!on) return;
  try {
    const status = readFileSync('/proc/self/status', 'latin1');
    const kb = (k: string): string => ((Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN)) / 1024).toFixed(1);
    const m = process.memoryUsage();
    const mb = (n: number): string => (n / 1048576).toFixed(1);
    trace(`${what}: rss ${kb('VmRSS')} (anon ${kb('RssAnon')} file ${kb('RssFile')} shmem ${kb('RssShmem')}), ` +
      `this thread's heap ${mb(m.heapUsed)}/${mb(m.heapTotal)} (${getHeapSpaceStatistics().filter((sp) => sp.space_size > 0)
        .map((sp) => `${sp.space_name.replace(/_space$/, '')} ${mb(sp.space_used_size)}/${mb(sp.physical_space_size)}`).join(', ')}), ` +
      `external ${mb(m.external)}, array buffers ${mb(m.arrayBuffers)}`);
  } catch {
    trace(`${what}: memory not readable here (sandbox)`);
  }
}

/** BHYVE_TRACE_STARTUP=1: the public Node modules this thread has loaded
 * (what start-up costs in Node's own modules; scripts/bundle.mjs loads the
 * heavier ones on first use). */
export function traceModules(what: string): void {
  if (!on) return;
  const loaded = (process as unknown as { moduleLoadList: string[] }).moduleLoadList
    .filter((m) => /^NativeModule [a-z_]+$/.test(m)).map((m) => m.slice('NativeModule '.length));
  trace(`${what}: Node modules ${loaded.join(' ')}`);
}
