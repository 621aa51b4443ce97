// The VMM's two threads' code caches come from a real start-up
// (scripts/train-code-cache.mjs): the build runs bin/bhyve on a ROM that
// ends at once, each thread writes the cache of what it compiled as it ends
// (BHYVE_CODE_CACHE_OUT, scripts/bundle-loader.cjs), and the build keeps
// those instead of the top-level caches. Nothing here is timed: the test
// checks that the loader writes a cache this node accepts, that the build
// kept the run's caches where KVM allowed the run, and that they hold more
// than the top level.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { KVM_UNUSABLE } from '../support/probes.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BUNDLE = path.join(ROOT, 'dist/bundle');
const BUILT = fs.existsSync(path.join(BUNDLE, 'code-cache.json')) || fs.existsSync(path.join(BUNDLE, 'bhyve-main.js'));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bhyve-code-cache-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Runs `script` in a fresh node (default flags, as bin/* run) and returns its stdout. */
function node(script: string, env: NodeJS.ProcessEnv = {}): string {
  const e = { ...process.env, ...env };
  delete e.BHYVE_CODE_CACHE;
  delete e.BHYVE_DEBUG;
  const r = spawnSync(process.execPath, ['-e', script], { env: e, encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout;
}

/** The size of the cache V8 makes for NAME.cjs compiled and not run. */
function topLevelCacheSize(name: string): number {
  return Number(node(`
    const { wrap } = require(${JSON.stringify(path.join(BUNDLE, 'loader.cjs'))});
    const file = ${JSON.stringify(path.join(BUNDLE, `${name}.cjs`))};
    const script = new (require('node:vm').Script)(wrap(require('node:fs').readFileSync(file, 'utf8')), { filename: file });
    console.log(script.createCachedData().length);`));
}

describe.skipIf(!BUILT)('code caches from a run (needs npm run build)', () => {
  it('with BHYVE_CODE_CACHE_OUT a thread that loaded a bundle writes its cache as it ends, and V8 accepts it', () => {
    const out = path.join(tmp, 'out');
    fs.mkdirSync(out);
    node(`require(${JSON.stringify(path.join(BUNDLE, 'loader.cjs'))}).load('bhyvectl-main');`, { BHYVE_CODE_CACHE_OUT: out });
    expect(fs.existsSync(path.join(out, 'bhyvectl-main.cache'))).toBe(true);
    // The written cache in place of the build's: a fresh node takes it.
    const copy = path.join(tmp, 'copy');
    fs.mkdirSync(copy);
    fs.copyFileSync(path.join(BUNDLE, 'bhyvectl-main.cjs'), path.join(copy, 'bhyvectl-main.cjs'));
    fs.copyFileSync(path.join(out, 'bhyvectl-main.cache'), path.join(copy, 'bhyvectl-main.cache'));
    expect(node(`console.log(require(${JSON.stringify(path.join(BUNDLE, 'loader.cjs'))}).compile('bhyvectl-main', ${JSON.stringify(copy)}).cached);`).trim())
      .toBe('true');
  });

  it('without BHYVE_CODE_CACHE_OUT nothing is written', () => {
    const before = fs.readdirSync(tmp).length;
    node(`require(${JSON.stringify(path.join(BUNDLE, 'loader.cjs'))}).load('bhyvectl-main');`, { BHYVE_CODE_CACHE_OUT: '' });
    expect(fs.readdirSync(tmp).length).toBe(before);
  });

  it.skipIf(KVM_UNUSABLE !== undefined)(`the build kept bhyve-main's and vcpu-thread's caches from its run, larger than their top level's${KVM_UNUSABLE ? ` (skipped: ${KVM_UNUSABLE})` : ''}`, () => {
    const manifest = JSON.parse(fs.readFileSync(path.join(BUNDLE, 'code-cache.json'), 'utf8')) as Record<string, string>;
    expect(manifest).toMatchObject({ 'bhyve-main': 'run', 'vcpu-thread': 'run' });
    expect(manifest.reason).toBeUndefined();
    for (const name of ['bhyve-main', 'vcpu-thread']) {
      // The start-up's functions are in it: well over the top level alone.
      expect(fs.statSync(path.join(BUNDLE, `${name}.cache`)).size, name).toBeGreaterThan(1.6 * topLevelCacheSize(name));
    }
    const accepted = node(`
      const { compile } = require(${JSON.stringify(path.join(BUNDLE, 'loader.cjs'))});
      console.log(compile('bhyve-main').cached, compile('vcpu-thread').cached);`);
    expect(accepted.trim()).toBe('true true');
  });
});
