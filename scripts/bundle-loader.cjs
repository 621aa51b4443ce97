'use strict';
// Copied to dist/bundle/loader.cjs by scripts/bundle.mjs. Loads one bundle
// of dist/bundle/ (NAME.cjs, a CommonJS script) with the V8 code cache the
// build made for it (NAME.cache): V8 then deserialises the compiled top
// level instead of parsing ~400 KB of source, on the main thread and again
// in every worker (Node 20 has no module compile cache of its own).
//
// The cache lies beside the code it was made from and is written only by
// the build, so it is as trusted as the bundle. V8 refuses a cache made by
// another V8, with other flags (--cpu-prof, ...) or from other source, and
// then compiles the source as usual. BHYVE_CODE_CACHE=0 (for comparison)
// and BHYVE_DEBUG (source-mapped stack traces) load NAME.cjs through
// Node's own require() instead.
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { createRequire } = require('node:module');

// Node's CommonJS wrapper; the build compiles exactly this text.
const HEAD = '(function (exports, require, module, __filename, __dirname) { ';
const TAIL = '\n})';

/** The text V8 compiles for a bundle's source. */
function wrap(source) {
  return HEAD + source + TAIL;
}

/** wrap(NAME.cjs's text) as one flat string: the file is read into a
 * buffer between HEAD and TAIL and decoded once. (wrap() of the file's
 * string makes a cons string that V8 flattens into a second copy to
 * compile it; the first, ~200-500 KB, would stay in the old generation's
 * large-object space until a full GC, which start-up does not run.) */
function readWrapped(file) {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    const buf = Buffer.allocUnsafe(HEAD.length + size + TAIL.length);
    buf.write(HEAD, 0, 'latin1');
    let off = 0;
    while (off < size) {
      const n = fs.readSync(fd, buf, HEAD.length + off, size - off, off);
      if (n === 0) break;
      off += n;
    }
    buf.write(TAIL, HEAD.length + off, 'latin1');
    return buf.toString('utf8', 0, HEAD.length + off + TAIL.length);
  } finally {
    fs.closeSync(fd);
  }
}

/** Compiles dist/bundle/NAME.cjs, with its code cache when there is one
 * that V8 accepts. */
function compile(name, dir = __dirname) {
  const file = path.join(dir, `${name}.cjs`);
  let cachedData;
  try {
    cachedData = fs.readFileSync(path.join(dir, `${name}.cache`));
  } catch {
    cachedData = undefined;
  }
  const script = new vm.Script(readWrapped(file), {
    filename: file,
    cachedData,
    importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  return { file, script, cached: cachedData !== undefined && !script.cachedDataRejected };
}

/** Runs dist/bundle/NAME.cjs as a CommonJS module; returns its exports.
 * In a worker whose starter asked for it (workerData.loadFailure), a
 * failure to load is also written where the starter looks (see
 * reportLoadFailure), then thrown as before. */
function load(name) {
  try {
    return loadBundle(name);
  } catch (e) {
    reportLoadFailure(name, e);
    throw e;
  }
}

/** A worker's 'error' event reaches its parent only through the parent's
 * event loop, which a thread that runs a guest does not return to. So a
 * starter may pass, in workerData.loadFailure, a self-describing place in
 * a SharedArrayBuffer for the failure: the reason's UTF-8 bytes (at most
 * reasonMax from reasonOffset, their count in Int32 word reasonLenWord),
 * then word stateWord moved from `from` to `to` (only if still `from`),
 * then flagWord (if given) set to 1 and waiters on stateWord woken. Plain
 * Atomics: nothing here may need what failed to load (koffi, ...). */
function reportLoadFailure(name, e) {
  try {
    const d = require('node:worker_threads').workerData?.loadFailure;
    if (!d || !(d.sab instanceof SharedArrayBuffer)) return;
    const words = new Int32Array(d.sab);
    const reason = Buffer.from(`${name}: could not load: ${e instanceof Error ? e.message : String(e)}`, 'utf8')
      .subarray(0, d.reasonMax);
    new Uint8Array(d.sab, d.reasonOffset, d.reasonMax).set(reason);
    Atomics.store(words, d.reasonLenWord, reason.length);
    if (Atomics.compareExchange(words, d.stateWord, d.from, d.to) !== d.from) return;
    if (d.flagWord !== undefined) Atomics.store(words, d.flagWord, 1);
    Atomics.notify(words, d.stateWord);
  } catch {
    // the original error is what matters
  }
}

function loadBundle(name) {
  if (process.env.BHYVE_CODE_CACHE === '0' || process.env.BHYVE_DEBUG) return require(`./${name}.cjs`);
  const tracing = process.env.BHYVE_TRACE_STARTUP === '1';
  if (tracing) traceCpu(`${name}: loading`);
  const { file, script, cached } = compile(name);
  if (tracing) traceCpu(`${name}: compiled, code cache ${cached ? 'used' : 'not used'}`);
  const module = { exports: {}, id: file, filename: file, loaded: false };
  script.runInThisContext()(module.exports, createRequire(file), module, file, path.dirname(file));
  module.loaded = true;
  // The build's training run (scripts/train-code-cache.mjs): the cache of
  // what this thread compiled, written as it ends.
  const out = process.env.BHYVE_CODE_CACHE_OUT;
  if (out) {
    process.once('exit', () => {
      try {
        fs.writeFileSync(path.join(out, `${name}.cache`), script.createCachedData());
      } catch (e) {
        process.stderr.write(`bhyve: ${name}: cannot write its code cache to BHYVE_CODE_CACHE_OUT: ${e.message}\n`);
      }
    });
  }
  if (tracing) traceCpu(`${name}: loaded`);
  return module.exports;
}

/** BHYVE_TRACE_STARTUP=1: a line as src/vmm/startup-trace.ts prints it (ms
 * since the process began, the calling thread's CPU ms from its schedstat). */
function traceCpu(what) {
  const ms = performance.timeOrigin + performance.now() - Number(process.env.BHYVE_TRACE_T0 ?? performance.timeOrigin);
  let cpu = NaN;
  try { cpu = Number(fs.readFileSync('/proc/thread-self/schedstat', 'latin1').split(' ')[0]) / 1e6; } catch { /* sandboxed */ }
  process.stderr.write(`trace ${ms.toFixed(1)} cpu ${cpu.toFixed(1)} ${what}\n`);
}

module.exports = { wrap, compile, load };
