// BHYVE_TRACE_STARTUP=1: one stderr line per start-up milestone, in ms since
// the process began (every thread measures from the same origin).
import { isMainThread } from 'node:worker_threads';

const on = process.env.BHYVE_TRACE_STARTUP === '1';
const origin = Number(process.env.BHYVE_TRACE_T0 ?? performance.timeOrigin);
if (on && isMainThread) process.env.BHYVE_TRACE_T0 = String(performance.timeOrigin);

export function trace(what: string): void {
  if (!on) return;
  const ms = performance.timeOrigin + performance.now() - origin;
  process.stderr.write(`trace ${ms.toFixed(1)} ${what}\n`);
}
