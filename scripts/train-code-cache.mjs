// The code caches of the VMM's two threads (bhyve-main, vcpu-thread), made
// from a real start-up: scripts/bundle.mjs calls trainCodeCaches() once the
// bundles and their top-level caches are written.
//
// Why: a cache made after the top level ran holds the modules' top levels,
// but not the functions a run calls (parsing, createMachine, runVm, the
// platform and firmware builders...): V8 compiles each of those lazily, at
// every start, on the critical path. A cache V8 writes at the end of a run
// holds everything that run compiled. Measured on this host (loaded, 5
// interleaved runs each, per-thread CPU from BHYVE_TRACE_STARTUP): the main
// thread's work from its bundle loaded to its control socket 50 -> 35 ms,
// vCPU 0's from its bundle loaded to its devices set up 27 -> 14 ms, both
// on the launch's critical path; peak RSS the same.
//
// The run: bin/bhyve as a user runs it (no V8 flags: V8 refuses a cache
// made with other flags), at -c 2 (the application processor on libuv's
// pool, the default: its start-up code too; -c 8 was ~3 ms of main-thread
// CPU faster for it, -c 1 the same), with the chipset every configuration
// has and a 64 KiB boot ROM that writes a byte to COM1 and ends the run through
// pc-testdev, security.sandbox=false (each thread writes its cache when it
// ends: BHYVE_CODE_CACHE_OUT, scripts/bundle-loader.cjs). It needs /dev/kvm;
// without it (or when the run fails) the top-level caches stay, and the
// build says so. BHYVE_TRAIN_CODE_CACHE=0 at build time keeps them too (for
// comparison). dist/bundle/code-cache.json says which each entry has.
import { spawnSync } from 'node:child_process';
import { accessSync, constants, copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The entries a VMM run loads (its main thread, and vCPU 0's thread with
 * vcpu.bsp_model=thread). */
export const TRAINED = ['bhyve-main', 'vcpu-thread'];

/** pc-testdev's exit status for the ROM's write of 0x10: (0x10 << 1) | 1. */
const EXPECTED_STATUS = 33;

/** 64 KiB of ROM whose reset vector (F000:FFF0) writes 'k' to COM1, then
 * 0x10 to the test exit port 0xf4 as a 32-bit write, and halts. */
export function trainingRom() {
  const rom = Buffer.alloc(0x10000, 0xf4); // hlt everywhere else
  Buffer.from([
    0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xb0, 0x6b, // mov al, 'k'
    0xee, // out dx, al
    0x66, 0xb8, 0x10, 0x00, 0x00, 0x00, // mov eax, 0x10
    0x66, 0xe7, 0xf4, // out 0xf4, eax
    0xf4, // hlt
  ]).copy(rom, 0xfff0);
  return rom;
}

/** Replaces OUT's top-level caches of TRAINED by ones a run made; writes
 * OUT/code-cache.json: entry -> 'run' | 'top-level' (and why). */
export function trainCodeCaches(root, out) {
  const manifest = Object.fromEntries(TRAINED.map((n) => [n, 'top-level']));
  const why = skipReason();
  if (why) {
    manifest.reason = why;
  } else {
    // Two runs: the default one (vCPU 0 and the device models on the main
    // thread) makes bhyve-main's cache, one with vcpu.bsp_model=thread
    // vcpu-thread's (a vCPU 0 worker's: the devices and the exit path).
    const runs = [['bhyve-main', []], ['vcpu-thread', ['-o', 'vcpu.bsp_model=thread']]];
    const problems = [];
    for (const [entry, extra] of runs) {
      const dir = mkdtempSync(join(tmpdir(), 'bhyve-code-cache-'));
      try {
        const rom = join(dir, 'training.rom');
        writeFileSync(rom, trainingRom());
        const r = spawnSync(process.execPath, [join(root, 'bin', 'bhyve'),
          '-c', '2', '-m', '64M', '-s', '0,hostbridge', '-s', '31,lpc', '-l', 'com1,stdio', '-l', 'pc-testdev',
          '-l', `bootrom,${rom}`, '-o', 'x86.require_ept_rvi=false', '-o', 'security.sandbox=false', ...extra,
          `code-cache-training-${process.pid}`],
        { env: { ...process.env, BHYVE_CODE_CACHE_OUT: dir }, encoding: 'utf8', timeout: 120_000, stdio: ['ignore', 'pipe', 'pipe'] });
        const made = existsSync(join(dir, `${entry}.cache`));
        if (r.status !== EXPECTED_STATUS || !made) {
          problems.push(`${entry}: training run ended with status ${r.status ?? r.signal} (expected ${EXPECTED_STATUS}), cache ${made ? 'made' : 'not made'}: ${(r.stderr ?? '').trim().split('\n').pop()}`);
        } else {
          copyFileSync(join(dir, `${entry}.cache`), join(out, `${entry}.cache`));
          manifest[entry] = 'run';
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
    if (problems.length) manifest.reason = problems.join('; ');
  }
  writeFileSync(join(out, 'code-cache.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  if (manifest.reason) console.warn(`bundle: ${TRAINED.join(' and ')} keep their top-level code caches (${manifest.reason})`);
}

function skipReason() {
  if (process.env.BHYVE_TRAIN_CODE_CACHE === '0') return 'BHYVE_TRAIN_CODE_CACHE=0';
  if (process.env.BHYVE_CODE_CACHE === '0' || process.env.BHYVE_DEBUG) return 'BHYVE_CODE_CACHE=0 or BHYVE_DEBUG set: the loader would not use a cache';
  try {
    accessSync(process.env.BHYVE_KVM_DEVICE ?? '/dev/kvm', constants.R_OK | constants.W_OK);
  } catch (e) {
    return `no usable /dev/kvm (${e.code ?? e.message})`;
  }
  return undefined;
}
