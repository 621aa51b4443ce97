// Retiring vCPU threads that are still loading. Node 20 aborts the process
// (FATAL ERROR ... napi_throw, status 134) when a worker is terminated during
// koffi's native initialisation; bhyve hit that when it refused to start
// (e.g. "VM is already running") right after spawning its threads.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');
const MODULE = path.join(ROOT, 'dist/vmm/vcpu-threads.js');
const skip = fs.existsSync(MODULE) ? undefined : 'dist/ is not built: run npm run build';

// Spawns two threads, waits DELAY ms, retires them and lets the process end.
const SCRIPT = `
import { spawnVcpuThreads, retireVcpuThread } from ${JSON.stringify(MODULE)};
const t = spawnVcpuThreads('2');
const delay = Number(process.argv[1]);
if (delay) await new Promise((r) => setTimeout(r, delay));
for (const w of t) void retireVcpuThread(w);
process.exitCode = 4;
`;

describe.skipIf(skip !== undefined)(`retireVcpuThread${skip ? ` (skipped: ${skip})` : ''}`, () => {
  // The load takes ~60-100 ms here; the delays walk across it.
  it.each([0, 30, 60, 75, 90, 105, 120, 200])('after %i ms: the process ends with its own status, no abort', (delay) => {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', SCRIPT, String(delay)], { encoding: 'utf8', timeout: 20_000 });
    expect(r.stderr).toBe('');
    expect(r.signal).toBeNull();
    expect(r.status).toBe(4);
  });
});
