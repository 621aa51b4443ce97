#!/usr/bin/env node
// Bundles what bin/* run into dist/bundle/ (npm run build runs it after tsc).
// One ES module per entry point plus shared chunks, all in one flat
// directory: a vCPU or iothread worker is started with
// `new URL('./<name>.js', import.meta.url)` from whichever chunk holds the
// code, so the worker entry files keep their names beside the chunks.
// Dynamic import() stays lazy (a chunk is read when first needed): `-h`
// and bhyvectl do not load the VMM.
//
// Why: Node's ES module loader resolves, reads and links each of ~150
// files on its own; one bundle per thread cuts that to a handful of files
// (BENCHMARKS.md, "Launch"). bin/* run dist/cli/ instead when
// BHYVE_BUNDLE=0 (for comparison; tests use the bundle like a user).
import { build } from 'esbuild';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const OUT = join(ROOT, 'dist', 'bundle');

/** Output name -> source: the three commands, and every worker the code
 * starts as `new URL('./NAME.js', import.meta.url)` (found in src/, so a new
 * worker needs no change here). */
export function entryPoints() {
  const entries = {
    'bhyve-main': 'src/cli/bhyve-main.ts',
    'bhyvectl-main': 'src/cli/bhyvectl-main.ts',
    'bhyveload-main': 'src/cli/bhyveload-main.ts',
  };
  const src = join(ROOT, 'src');
  for (const file of readdirSync(src, { recursive: true })) {
    if (!file.endsWith('.ts')) continue;
    const text = readFileSync(join(src, file), 'utf8');
    for (const m of text.matchAll(/new URL\('\.\/([\w-]+)\.js', import\.meta\.url\)/g)) {
      const source = join('src', dirname(file), `${m[1]}.ts`);
      if (entries[m[1]] && entries[m[1]] !== source) throw new Error(`bundle: two workers named ${m[1]}`);
      entries[m[1]] = source;
    }
  }
  return entries;
}

rmSync(OUT, { recursive: true, force: true });
await build({
  absWorkingDir: ROOT,
  entryPoints: entryPoints(),
  outdir: OUT,
  entryNames: '[name]',
  chunkNames: 'chunk-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // npm packages load from node_modules as they are (koffi is a native
  // addon; pngjs and friends are CommonJS, used by bhyvectl alone).
  packages: 'external',
  // Minified: V8 compiles each module's whole text when a thread loads it
  // (every function is at least pre-parsed), ~45% less CPU for the vCPU
  // thread's bundle minified than as is. keepNames keeps .name of
  // functions and classes; BHYVE_DEBUG maps stack traces back through the
  // source maps (bin/bhyve).
  minify: true,
  keepNames: true,
  sourcemap: true,
  logLevel: 'warning',
});
