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
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const OUT = join(ROOT, 'dist', 'bundle');

/** The launchers' entry points; output name -> source. */
const LAUNCHERS = {
  'bhyve-main': 'src/cli/bhyve-main.ts',
  'bhyvectl-main': 'src/cli/bhyvectl-main.ts',
  'bhyveload-main': 'src/cli/bhyveload-main.ts',
  'bhyve-xml-main': 'src/cli/bhyve-xml-main.ts',
  'bhyve-vfio-user-main': 'src/cli/bhyve-vfio-user-main.ts',
};

/** Every worker the code starts by name (`new URL('./NAME.js',
 * import.meta.url)` in src/DIR/FILE.ts means src/DIR/NAME.ts), found in the
 * source so that a new worker thread cannot be left out of the bundle. */
function workerEntryPoints() {
  const entries = {};
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) {
        for (const m of readFileSync(p, 'utf8').matchAll(/new URL\('\.\/([a-z0-9-]+)\.js', import\.meta\.url\)/g)) {
          entries[m[1]] = relative(ROOT, join(dirname(p), `${m[1]}.ts`));
        }
      }
    }
  };
  walk(join(ROOT, 'src'));
  return entries;
}

export const ENTRY_POINTS = { ...LAUNCHERS, ...workerEntryPoints() };

rmSync(OUT, { recursive: true, force: true });
await build({
  absWorkingDir: ROOT,
  entryPoints: ENTRY_POINTS,
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
