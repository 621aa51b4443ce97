// sys/koffi.ts loads koffi's prebuilt native module straight on glibc Linux
// (koffi's own loader reads node's ELF header and probes paths in every
// thread), with koffi's loader as the fallback; both give a working API.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BUILT = fs.existsSync(path.join(ROOT, 'dist/sys/koffi.js'));
const GLIBC = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime !== undefined;

/** Loads koffi through dist/sys/koffi.js in a fresh node; what it used, and a libc call. */
function probe(env: Record<string, string> = {}): { index: boolean; native: boolean; pid: number } {
  const script = `
    import { createRequire } from 'node:module';
    const { koffi } = await import(${JSON.stringify(path.join(ROOT, 'dist/sys/koffi.js'))});
    const k = koffi();
    const getpid = k.load('libc.so.6').func('int getpid()');
    const cache = Object.keys(createRequire(import.meta.url).cache);
    console.log(JSON.stringify({ index: cache.some((f) => f.endsWith('koffi/index.cjs')), native: cache.some((f) => f.endsWith('koffi.node')), pid: getpid() === process.pid ? 1 : 0 }));
  `;
  return JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, ...env } }));
}

describe.skipIf(!BUILT || process.platform !== 'linux')('koffi loader (needs npm run build)', () => {
  it.skipIf(!GLIBC)('takes the native module straight (glibc), without koffi\'s index.cjs, and it works', () => {
    expect(probe()).toEqual({ index: false, native: true, pid: 1 });
  });

  it('BHYVE_KOFFI_LOADER=1 goes through koffi\'s own loader, which works the same', () => {
    expect(probe({ BHYVE_KOFFI_LOADER: '1' })).toEqual({ index: true, native: true, pid: 1 });
  });
});
