// bin/* run the esbuild bundles of dist/bundle/ (scripts/bundle.mjs), not
// tsc's one-file-per-module output: a copy of each launcher next to stand-in
// bundles says which file it loaded; the real bundle has every worker entry
// the code starts by name and reaches nothing outside dist/bundle/ but
// Node's modules and npm packages; each entry's script comes with a V8 code
// cache that this node accepts (for the VMM's two threads, made after their
// top level ran: the device models' lazily loaded wrappers; the main
// thread's bundle has no model), and is loaded without Node's ES module
// loader.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BUNDLE = path.join(ROOT, 'dist/bundle');
const BUILT = fs.existsSync(path.join(BUNDLE, 'bhyve-main.js'));
const LAUNCHERS = [
  ['bhyve', 'bhyveMain'],
  ['bhyvectl', 'bhyvectlMain'],
  ['bhyveload', 'bhyveloadMain'],
  ['bhyve-xml', 'bhyveXmlMain'],
  ['bhyve-vfio-user', 'bhyveVfioUserMain'],
] as const;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bhyve-bundle-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A copy of bin/ whose dist/ holds stand-ins that print what they are. */
function fakeTree(): string {
  fs.mkdirSync(path.join(tmp, 'bin'), { recursive: true });
  fs.writeFileSync(path.join(tmp, 'package.json'), '{"type":"module"}\n');
  fs.copyFileSync(path.join(ROOT, 'bin/package.json'), path.join(tmp, 'bin/package.json'));
  for (const [name, fn] of LAUNCHERS) {
    fs.copyFileSync(path.join(ROOT, 'bin', name), path.join(tmp, 'bin', name));
    // dist/bundle/ is CommonJS (its package.json), dist/cli/ ES modules.
    fs.mkdirSync(path.join(tmp, 'dist/bundle'), { recursive: true });
    fs.writeFileSync(path.join(tmp, 'dist/bundle/package.json'), '{ "type": "commonjs" }\n');
    fs.mkdirSync(path.join(tmp, 'dist/cli'), { recursive: true });
    // The threads the process has once libuv's pool is up (fs.promises uses
    // it), after a vCPU thread bin/bhyve started has ended; and whether it did.
    const body = (tag: string): string => `{
  const started = early?.vcpuThread !== undefined;
  await early?.vcpuThread?.terminate();
  await fs.promises.readFile('/proc/self/stat');
  console.log('${tag} ' + process.env.UV_THREADPOOL_SIZE + ' ' + fs.readdirSync('/proc/self/task').length + ' ' + (started ? 'vcpu0-early' : 'no-early'));
  console.log('NODE_EXTRA_CA_CERTS=' + (process.env.NODE_EXTRA_CA_CERTS ?? '(unset)'));
  return 7;
}`;
    fs.writeFileSync(path.join(tmp, 'dist/bundle', `${name}-main.js`),
      `const fs = require('node:fs');\nexports.${fn} = async function (argv, early) ${body('bundle')};\n`);
    fs.writeFileSync(path.join(tmp, 'dist/cli', `${name}-main.js`),
      `import fs from 'node:fs';\nexport async function ${fn}(argv, early) ${body('tsc')}\n`);
  }
  // vCPU 0's thread in both trees: says it loaded and ends.
  fs.mkdirSync(path.join(tmp, 'dist/vmm'), { recursive: true });
  fs.writeFileSync(path.join(tmp, 'dist/bundle/vcpu-thread.js'), "require('node:worker_threads').parentPort.postMessage({ type: 'loaded' });\n");
  fs.writeFileSync(path.join(tmp, 'dist/vmm/vcpu-thread.js'), "import { parentPort } from 'node:worker_threads';\nparentPort.postMessage({ type: 'loaded' });\n");
  return tmp;
}

describe('bin/* launchers', () => {
  const dir = fakeTree();
  for (const [name] of LAUNCHERS) {
    it(`${name} runs dist/bundle/${name}-main.js, and dist/cli/ only with BHYVE_BUNDLE=0`, () => {
      const env = { ...process.env };
      delete env.BHYVE_BUNDLE;
      const r = spawnSync(process.execPath, [path.join(dir, 'bin', name)], { env, encoding: 'utf8' });
      expect(r.stdout).toMatch(/^bundle /);
      expect(r.status).toBe(7);
      const t = spawnSync(process.execPath, [path.join(dir, 'bin', name)], { env: { ...env, BHYVE_BUNDLE: '0' }, encoding: 'utf8' });
      expect(t.stdout).toMatch(/^tsc /);
    });
  }

  it('run as programs (their #! line), they start Node without NODE_EXTRA_CA_CERTS; run by node, with it', () => {
    const env = { ...process.env, NODE_EXTRA_CA_CERTS: '/nonexistent/ca.pem' };
    for (const [name] of LAUNCHERS) {
      const direct = spawnSync(path.join(dir, 'bin', name), [], { env, encoding: 'utf8' });
      expect(direct.stdout, name).toMatch(/^NODE_EXTRA_CA_CERTS=\(unset\)$/m);
      expect(direct.status, name).toBe(7);
      const byNode = spawnSync(process.execPath, [path.join(dir, 'bin', name)], { env, encoding: 'utf8' });
      expect(byNode.stdout, name).toMatch(/^NODE_EXTRA_CA_CERTS=\/nonexistent\/ca\.pem$/m);
    }
  });

  it('bhyve starts vCPU 0\'s thread before it loads the rest, for a run whose vCPU 0 gets a thread (both trees)', () => {
    const env = { ...process.env };
    const waker = path.join(dir, 'dist/native/loop-waker.so');
    for (const bundle of ['1', '0']) {
      const run = (...args: string[]): string => spawnSync(process.execPath, [path.join(dir, 'bin/bhyve'), ...args],
        { env: { ...env, BHYVE_BUNDLE: bundle }, encoding: 'utf8' }).stdout;
      // With the loop waker built, vCPU 0 runs on the main thread: no
      // thread, unless asked for or pinned (main-thread-vcpu.ts' bspModel).
      fs.mkdirSync(path.dirname(waker), { recursive: true });
      fs.writeFileSync(waker, '');
      expect(run('-c', '1', 'vm')).toMatch(/ no-early$/m);
      expect(run('-c', '1', '-o', 'vcpu.bsp_model=thread', 'vm')).toMatch(/ vcpu0-early$/m);
      expect(run('-c', '2', '-p', '0:1', 'vm')).toMatch(/ vcpu0-early$/m);
      expect(run('-c', '2', '-p0:1', 'vm')).toMatch(/ vcpu0-early$/m);
      expect(run('-c', '2', '-p', '1:1', '-s', '0:0,hostbridge', 'vm')).toMatch(/ no-early$/m); // pins an AP only
      // Without it (no C compiler at build time), vCPU 0 has a thread.
      fs.rmSync(waker);
      expect(run('-c', '1', 'vm')).toMatch(/ vcpu0-early$/m);
      expect(run('-h')).toMatch(/ no-early$/m);
      expect(run('-s', 'help')).toMatch(/ no-early$/m);
      expect(run('-c', '1', '-o', 'config.dump=1', 'vm')).toMatch(/ no-early$/m);
    }
  });

  it('bhyve sizes libuv\'s threadpool for the vCPUs of its command line before anything uses it', () => {
    const env = { ...process.env };
    delete env.UV_THREADPOOL_SIZE;
    const run = (...args: string[]): [string, number] => {
      const out = spawnSync(process.execPath, [path.join(dir, 'bin/bhyve'), ...args], { env, encoding: 'utf8' }).stdout;
      const m = /^bundle (\d+) (\d+)/.exec(out);
      expect(m, out).not.toBeNull();
      return [m![1], Number(m![2])];
    };
    const [one, threadsOne] = run('-c', '1', 'vm');
    expect(one).toBe('8');
    const [sixteen, threadsSixteen] = run('-c', 'cpus=16,sockets=2', 'vm');
    expect(sixteen).toBe('23');
    expect(threadsSixteen - threadsOne).toBe(15); // the pool really has 15 more threads
    expect(run('-o', 'cpus=64', 'vm')[0]).toBe('71');
  });
});

describe.skipIf(!BUILT)('dist/bundle (needs npm run build)', () => {
  const files = BUILT ? fs.readdirSync(BUNDLE).filter((f) => f.endsWith('.js')) : [];

  it('has an entry for every launcher and for every worker the code starts by name', () => {
    for (const [name] of LAUNCHERS) expect(files).toContain(`${name}-main.js`);
    // new Worker(new URL('./NAME.js', import.meta.url)): NAME.js must sit beside the chunks.
    const src = execFileSync('grep', ['-rhoE', "new URL\\('\\./[a-z0-9-]+\\.js', import\\.meta\\.url\\)", path.join(ROOT, 'src')], { encoding: 'utf8' });
    const workers = [...src.matchAll(/\.\/([a-z0-9-]+\.js)/g)].map((m) => m[1]);
    expect(workers).toContain('vcpu-thread.js');
    for (const w of workers) expect(files).toContain(w);
  });

  it('each entry\'s code cache is accepted by this node (a fresh process, default flags)', () => {
    const entries = files.filter((f) => fs.existsSync(path.join(BUNDLE, f.replace(/\.js$/, '.cjs')))).map((f) => f.replace(/\.js$/, ''));
    expect(entries).toContain('vcpu-thread');
    expect(entries).toContain('bhyve-main');
    const out = execFileSync(process.execPath, ['-e', `
      const loader = require(${JSON.stringify(path.join(BUNDLE, 'loader.cjs'))});
      for (const name of ${JSON.stringify(entries)}) console.log(name, loader.compile(name).cached);
    `], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
    for (const name of entries) expect(out).toContain(`${name} true`);
  });

  it('bhyve-main and vcpu-thread hold the device models behind import() wrappers, with a code cache of what their top level ran', () => {
    // esbuild wraps a module reached by import() (each record's model,
    // devices/pci-device.ts), and everything it imports, in a function
    // (__esm) that runs when first loaded and that V8 compiles lazily,
    // outside a code cache made before running. So the build makes the
    // VMM threads' caches after running their top level (scripts/bundle.mjs
    // cacheAfterTopLevel): larger than the plain cache of the same script.
    // Both run device models: the main thread as vCPU 0 (the default,
    // vmm/main-thread-vcpu.ts), vcpu-thread with vcpu.bsp_model=thread.
    const wrappedIn = (name: string): number => (fs.readFileSync(path.join(BUNDLE, `${name}.cjs`), 'utf8').match(/=>\{"use strict";/g) ?? []).length;
    expect(wrappedIn('vcpu-thread')).toBeGreaterThan(50);
    expect(wrappedIn('bhyve-main')).toBeGreaterThan(50);
    const sources = (name: string): string[] => (JSON.parse(fs.readFileSync(path.join(BUNDLE, `${name}.cjs.map`), 'utf8')) as { sources: string[] }).sources;
    for (const model of ['src/devices/nvme/nvme.ts', 'src/devices/virtio/virtio-pci.ts', 'src/devices/pci/hostbridge.ts']) {
      expect(sources('vcpu-thread').some((f) => f.endsWith(model)), model).toBe(true);
      expect(sources('bhyve-main').some((f) => f.endsWith(model)), model).toBe(true);
    }
    expect(sources('bhyve-main').some((f) => f.endsWith('src/devices/nvme/nvme-record.ts'))).toBe(true);
    // vCPU 0's thread carries no command line, control socket or VM set-up.
    for (const f of ['src/cli/bhyve-main.ts', 'src/config/bhyve-args.ts', 'src/vmm/control-socket.ts', 'src/vmm/run-vm.ts', 'src/vmm/vm-object.ts']) {
      expect(sources('vcpu-thread').some((x) => x.endsWith(f)), f).toBe(false);
    }
    for (const name of ['bhyve-main', 'vcpu-thread']) {
      const plain = execFileSync(process.execPath, ['-e', `
        const loader = require(${JSON.stringify(path.join(BUNDLE, 'loader.cjs'))});
        const { cached } = loader.compile(${JSON.stringify(name)}, ${JSON.stringify(BUNDLE)});
        const source = require('node:fs').readFileSync(${JSON.stringify(path.join(BUNDLE, `${name}.cjs`))}, 'utf8');
        const fresh = new (require('node:vm').Script)(loader.wrap(source), { filename: 'x' });
        process.stdout.write(JSON.stringify({ cached, plain: fresh.createCachedData().length }));
      `], { encoding: 'utf8' });
      const r = JSON.parse(plain) as { cached: boolean; plain: number };
      expect(r.cached, name).toBe(true);
      expect(fs.statSync(path.join(BUNDLE, `${name}.cache`)).size, name).toBeGreaterThan(r.plain * 1.1);
    }
  });

  it('its stubs are CommonJS: no thread goes through Node\'s ES module loader to load its bundle', () => {
    // Workers are started on the stubs (new Worker(new URL('./NAME.js', ...))).
    expect(JSON.parse(fs.readFileSync(path.join(BUNDLE, 'package.json'), 'utf8')).type).toBe('commonjs');
    for (const f of files) expect(fs.readFileSync(path.join(BUNDLE, f), 'utf8'), f).not.toMatch(/^\s*(import|export)\b/m);
    const r = spawnSync(process.execPath, [path.join(ROOT, 'bin/bhyve'), '-s', 'help'], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
    expect(r.stdout).toContain('virtio-blk');
  });

  it('bhyve-main and vcpu-thread load Node\'s crypto, net, child_process, zlib, tty, v8 and perf_hooks on first use, not when they start', () => {
    // scripts/bundle.mjs LAZY_BUILTINS; what each thread loads while its
    // bundle starts, the vCPU thread's in a worker as bin/bhyve starts it.
    const out = execFileSync(process.execPath, ['-e', `
      const { Worker } = require('node:worker_threads');
      const before = new Set(process.moduleLoadList);
      require(${JSON.stringify(path.join(BUNDLE, 'bhyve-main.js'))});
      const main = process.moduleLoadList.filter((m) => !before.has(m));
      const w = new Worker(\`
        const before = new Set(process.moduleLoadList);
        require(\${JSON.stringify(${JSON.stringify(path.join(BUNDLE, 'vcpu-thread.js'))})});
        require('node:worker_threads').parentPort.postMessage(process.moduleLoadList.filter((m) => !before.has(m)));
      \`, { eval: true });
      w.on('message', (m) => { if (Array.isArray(m)) { console.log(JSON.stringify({ main, vcpu: m })); process.exit(0); } });
    `], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '', BHYVE_TRACE_STARTUP: '' } });
    const loaded = JSON.parse(out) as { main: string[]; vcpu: string[] };
    expect(loaded.main.length).toBeGreaterThan(0);
    for (const thread of ['main', 'vcpu'] as const) {
      for (const m of ['crypto', 'net', 'child_process', 'zlib', 'tty', 'v8', 'perf_hooks']) {
        expect(loaded[thread], `${thread} thread loads node:${m}`).not.toContain(`NativeModule ${m}`);
      }
    }
  });

  it('imports nothing outside itself but node: modules and npm packages', () => {
    for (const f of files) {
      const text = fs.readFileSync(path.join(BUNDLE, f), 'utf8');
      for (const m of text.matchAll(/(?:from|import)\s*\(?\s*"([^"]+)"/g)) {
        const spec = m[1];
        if (spec.startsWith('node:') || !spec.startsWith('.')) continue;
        expect(spec, `${f} imports ${spec}`).toMatch(/^\.\/[^/]+\.js$/);
        expect(files, `${f} imports ${spec}`).toContain(spec.slice(2));
      }
    }
  });
});
