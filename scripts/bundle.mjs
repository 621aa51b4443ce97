#!/usr/bin/env node
// Bundles what bin/* run into dist/bundle/ (npm run build runs it after tsc).
// Per entry point (each launcher, each worker thread) one CommonJS script
// NAME.cjs holding all of its code, the V8 code cache of its compiled top
// level NAME.cache, and NAME.js, a one-line CommonJS module that loads the
// two through loader.cjs (scripts/bundle-loader.cjs). A vCPU or iothread
// worker is started with `new URL('./<name>.js', import.meta.url)`, so the
// stubs keep the names the source uses. Modules the code imports with
// import() still run only when first imported (esbuild's lazy module
// wrappers): `-h` and bhyvectl do not run the VMM's set-up code.
//
// Why: Node's ES module loader resolves, reads, parses and links each of
// ~150 files on its own, on the main thread and again in each worker; one
// script per thread whose compiled form comes from the cache skips nearly
// all of that (BENCHMARKS.md, "Launch"). bin/* run dist/cli/ instead when
// BHYVE_BUNDLE=0, and the bundle without the cache when BHYVE_CODE_CACHE=0
// (both for comparison; tests use the bundle like a user).
import { build } from 'esbuild';
import { copyFileSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { trainCodeCaches } from './train-code-cache.mjs';

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

/** Each `node:` module through one shim module per bundle: esbuild turns
 * every `import x from 'node:fs'` into its own __toESM(require('node:fs')),
 * a copy of all of the module's properties (30 copies of node:fs in
 * bhyve-main); through the shim there is one per module. */
const builtinShims = {
  name: 'builtin-shims',
  setup(b) {
    b.onResolve({ filter: /^node:/ }, (args) => (args.namespace === 'builtin-shim'
      ? { path: args.path, external: true }
      : { path: args.path, namespace: 'builtin-shim' }));
    b.onLoad({ filter: /.*/, namespace: 'builtin-shim' }, (args) => ({
      contents: LAZY_BUILTINS.has(args.path) && process.env.BHYVE_LAZY_BUILTINS !== '0'
        ? lazyBuiltinShim(args.path)
        : `export * from ${JSON.stringify(args.path)};\nexport { default } from ${JSON.stringify(args.path)};\n`,
      loader: 'js',
    }));
  },
};

/** Node modules that Node's own start-up does not load and that a run
 * needs late or not at all (crypto for a disk's serial number or a MAC,
 * net for sockets, zlib for VNC, child_process for a UART's command...):
 * each thread loads one on first use of one of its exports instead of
 * when the bundle starts (~17 internal modules for crypto alone, compiled
 * in every thread). BHYVE_LAZY_BUILTINS=0 at build time loads them at
 * start as before (for comparison). */
export const LAZY_BUILTINS = new Set(['node:child_process', 'node:crypto', 'node:dgram', 'node:net', 'node:os', 'node:tty', 'node:v8', 'node:zlib']);

/** A CommonJS module whose properties are the builtin's own, each a getter
 * that loads the builtin on first use (the names are the building Node's;
 * importers reach them as `import_x.name`, a default import gets the
 * object itself). */
function lazyBuiltinShim(name) {
  const names = Object.getOwnPropertyNames(createRequire(import.meta.url)(name)).filter((k) => k !== 'default' && k !== '__esModule');
  return [
    'let m;',
    `const load = () => (m ??= require(${JSON.stringify(name)}));`,
    `for (const k of ${JSON.stringify(names)}) Object.defineProperty(exports, k, { get: () => load()[k], enumerable: true });`,
    '',
  ].join('\n');
}

/** Entries whose code cache is made after their top level ran (below). */
const RUN_FOR_CACHE = new Set(['bhyve-main', 'vcpu-thread']);

rmSync(OUT, { recursive: true, force: true });
const options = {
  absWorkingDir: ROOT,
  outdir: OUT,
  entryNames: '[name]',
  outExtension: { '.js': '.cjs' },
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  // import.meta.url (worker files, koffi's require, the install root) is
  // the bundle's own URL.
  banner: { js: 'var __bundleUrl = require("node:url").pathToFileURL(__filename).href;' },
  define: { 'import.meta.url': '__bundleUrl' },
  // npm packages load from node_modules as they are (koffi is a native
  // addon; pngjs and friends are CommonJS, used by bhyvectl alone).
  packages: 'external',
  plugins: [builtinShims],
  // Minified: less text to read and hash, a smaller cache. BHYVE_DEBUG
  // maps stack traces back through the source maps (bin/bhyve).
  // BHYVE_BUNDLE_MINIFY=0 at build time leaves it readable, for
  // --cpu-prof's line ticks. No keepNames: its __name() call on every
  // function and class as it is made (each gets an own `name` property,
  // a property array) cost ~1 MiB of peak RSS at -c 1 over the two
  // isolates. So no code reads a function's or class's .name (errors name
  // themselves: test/unit/error-names.test.ts).
  minify: process.env.BHYVE_BUNDLE_MINIFY !== '0',
  keepNames: false,
  sourcemap: true,
  logLevel: 'warning',
};
// (bhyve-main holds the device models too: vCPU 0 runs on the main thread
// by default, src/vmm/main-thread-vcpu.ts.)
await build({ ...options, entryPoints: ENTRY_POINTS });

// The loader, each entry's stub and its code cache. The stubs are CommonJS
// (dist/bundle/package.json says so): no thread needs Node's ES module
// loader. The cache holds what V8 compiles eagerly (the top level);
// functions compile when first called, as without it.
copyFileSync(join(ROOT, 'scripts', 'bundle-loader.cjs'), join(OUT, 'loader.cjs'));
writeFileSync(join(OUT, 'package.json'), '{ "type": "commonjs" }\n');
const loader = createRequire(import.meta.url)(join(OUT, 'loader.cjs'));
for (const name of Object.keys(ENTRY_POINTS)) {
  writeFileSync(join(OUT, `${name}.js`), [
    `// ${name}.cjs with its code cache (scripts/bundle.mjs, loader.cjs).`,
    `module.exports = require('./loader.cjs').load('${name}');`,
    '',
  ].join('\n'));
  writeFileSync(join(OUT, `${name}.cache`), RUN_FOR_CACHE.has(name) && process.env.BHYVE_CACHE_AFTER_TOP_LEVEL !== '0'
    ? await cacheAfterTopLevel(name)
    : loader.compile(name, OUT).script.createCachedData());
}
// The VMM's two threads: caches from a real start-up where KVM allows one.
trainCodeCaches(ROOT, OUT);

/**
 * The VMM's two threads' bundles get a code cache made after their top
 * level ran (in a worker, as bin/bhyve starts them), holding what that run
 * compiled. Why: the device models are loaded on demand (import() in each
 * record, devices/pci-device.ts), and esbuild wraps a module reached that
 * way, and every module it imports, in a function (__esm) that runs when
 * first needed; V8 compiles such a function lazily, so a cache made before
 * running holds none of them, and the modules both a model and the start
 * path import (the config tree, the PCI core, the records...) would be
 * parsed again at every start. The models no configuration names stay out
 * (they do not run): the cache holds those of the chipset, hostbridge and
 * lpc, which vCPU 0's thread loads while it waits when -s names them.
 * Running the top level has no effect outside the worker: modules define
 * things; vCPU 0's entry loads libc and the chipset's models and waits for
 * its data, which never comes. BHYVE_CACHE_AFTER_TOP_LEVEL=0 at build time
 * makes the plain cache (for comparison).
 */
async function cacheAfterTopLevel(name) {
  // The chipset of every configuration: vCPU 0's thread loads its models
  // while it waits (src/vmm/device-host.ts preloadDeviceModels).
  const TRAINING_ARGV = ['-s', '0,hostbridge', '-s', '31,lpc', 'vm'];
  const { Worker } = await import('node:worker_threads');
  const w = new Worker(`
    const { parentPort } = require('node:worker_threads');
    const path = require('node:path');
    const { createRequire } = require('node:module');
    const { compile } = require(${JSON.stringify(join(OUT, 'loader.cjs'))});
    const { file, script } = compile(${JSON.stringify(name)}, ${JSON.stringify(OUT)});
    const module = { exports: {}, id: file, filename: file, loaded: false };
    // (vCPU 0's entry posts 'loaded' to this port: the build ignores it.)
    script.runInThisContext()(module.exports, createRequire(file), module, file, path.dirname(file));
    // After what the top level started (vCPU 0 loads the models -s names).
    setImmediate(() => parentPort.postMessage({ cache: script.createCachedData() }));
  `, { eval: true, argv: TRAINING_ARGV, resourceLimits: { maxYoungGenerationSizeMb: 2 }, stdout: true });
  try {
    return await new Promise((resolve, reject) => {
      w.on('message', (m) => { if (m?.cache) resolve(Buffer.from(m.cache)); });
      w.once('error', reject);
      w.once('exit', (code) => reject(new Error(`bundle: ${name}: top-level run for its code cache ended (${code})`)));
    });
  } finally {
    await w.terminate();
  }
}
