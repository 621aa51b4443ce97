// Where application processors run (src/vmm/ap-pool.ts) and how the pool
// threads that kicks are sent to are found (src/sys/threadpool.ts). No KVM.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigTree } from '../../src/config/tree.js';
import { apModel, poolForAps } from '../../src/vmm/ap-pool.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

function config(settings: Record<string, string>): ConfigTree {
  const t = new ConfigTree();
  for (const [k, v] of Object.entries(settings)) t.set(k, v);
  return t;
}

describe('poolForAps', () => {
  it('is off for one vCPU, for vcpu.ap_model=thread and when an AP is pinned', async () => {
    const warn: string[] = [];
    expect(await poolForAps(config({}), 1, (m) => warn.push(m))).toBeUndefined();
    expect(await poolForAps(config({ 'vcpu.ap_model': 'thread' }), 4, (m) => warn.push(m))).toBeUndefined();
    expect(await poolForAps(config({ 'vcpu.2.cpuset': '0' }), 4, (m) => warn.push(m))).toBeUndefined();
    expect(warn).toEqual([]);
    expect(apModel(config({}))).toBe('pool');
    expect(apModel(config({ 'vcpu.ap_model': 'thread' }))).toBe('thread');
  });

  it('says so and gives the APs threads when the pool is too small for them', async () => {
    const saved = process.env.UV_THREADPOOL_SIZE;
    process.env.UV_THREADPOOL_SIZE = '6';
    try {
      const warn: string[] = [];
      expect(await poolForAps(config({}), 4, (m) => warn.push(m))).toBeUndefined();
      expect(warn).toEqual([expect.stringMatching(/threadpool has 6 threads where 3 application processors need 7: each AP runs on a thread of its own/)]);
    } finally {
      if (saved === undefined) delete process.env.UV_THREADPOOL_SIZE;
      else process.env.UV_THREADPOOL_SIZE = saved;
    }
  });
});

const BUILT = fs.existsSync(path.join(ROOT, 'dist/sys/threadpool.js'));

describe.skipIf(!BUILT)('findPoolThreads (needs npm run build)', () => {
  it('finds the six threads of a six-thread pool, not the main thread', () => {
    // A fresh process, so that the pool's size is the one set here.
    const script = `
      import { findPoolThreads } from './dist/sys/threadpool.js';
      console.log(JSON.stringify({ tids: await findPoolThreads(), pid: process.pid }));
    `;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script],
      { cwd: ROOT, env: { ...process.env, UV_THREADPOOL_SIZE: '6' }, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { tids: number[]; pid: number };
    expect(new Set(out.tids).size).toBe(6);
    expect(out.tids).not.toContain(out.pid);
  });
});
