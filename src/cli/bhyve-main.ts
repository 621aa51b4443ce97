// bhyve(8): argv -> config tree -> checks -> run. bin/bhyve calls it.

// Static imports only: in the bundle (scripts/bundle.mjs) every module's
// top level is then part of the script's top level, which V8 compiles
// eagerly and the build's code cache holds; a module loaded by import()
// is wrapped in a function that is compiled, uncached, when first run.
import { rawArgv } from '../config/raw-argv.js';
import type { Worker } from 'node:worker_threads';
import { type EarlySignals, SignalRouter, signalStatus } from '../vmm/startup-signals.js';
import { adoptVcpuThread, retireVcpuThread, spawnVcpuThreads } from '../vmm/vcpu-threads.js';
import { argvGivesBspThread, bspModel } from '../vmm/main-thread-vcpu.js';
import { parseBhyveArgs } from '../config/bhyve-args.js';
import { validateForStart } from '../devices/registry.js';
import { runVm } from '../vmm/run-vm.js';
import type { DeviceModelsHint } from '../vmm/vcpu-thread-data.js';

import { reportError, writeOut } from './output.js';
import { trace } from '../vmm/startup-trace.js';

/** Runs bhyve with argv (without the program name); resolves to the exit
 * status. `early`: SIGINT/SIGTERM/SIGHUP caught by bin/bhyve since launch. */
export async function bhyveMain(argv: readonly string[], early?: EarlySignals): Promise<number> {
  trace('main: bhyveMain');
  const signals = new SignalRouter(early);
  let threads: Worker[] = [];
  const retire = retireVcpuThread;
  try {
    // A vCPU thread needs ~60 ms or more to boot: when argv looks like a
    // run, the threads start first and boot while this thread parses and
    // sets the machine up. bin/bhyve may have started vCPU 0's already.
    if (early?.vcpuThread) threads = [adoptVcpuThread(early.vcpuThread)];
    const likely = likelyVcpus(argv);
    if (likely !== undefined) threads = moreThreads(threads, likely);
    const result = parseBhyveArgs(rawArgv(argv));
    trace('main: parsed');
    if (result.kind === 'help' || result.kind === 'dump') {
      for (const t of threads) void retire(t);
      await writeOut(result.kind === 'help' && result.stream === 'stderr' ? process.stderr : process.stdout, result.text);
      return result.exitCode;
    }
    validateForStart(result.config, {
      restoreFile: result.restoreFile, fwcfgFiles: result.fwcfgFiles, warn: (m) => process.stderr.write(`bhyve: warning: ${m}\n`),
    });
    // The vCPU threads boot while the rest of the vmm loads (runVm spawns
    // or retires threads to match the vCPU count the config asks for).
    if (likely === undefined) threads = moreThreads(threads, result.config.get('cpus'));
    // vCPU 0's thread loads its device models meanwhile (vcpu-thread.ts).
    if (bspModel(result.config) === 'thread') threads[0]?.postMessage({ type: 'models', config: result.config.toJSON() } satisfies DeviceModelsHint);
    const spawned = threads;
    // Stopped meanwhile: nothing of the VM exists yet.
    if (signals.first) {
      for (const t of threads) void retire(t);
      return signalStatus(signals.first);
    }
    return await runVm(result.config, { fwcfgFiles: result.fwcfgFiles, threads: spawned, signals });
  } catch (err) {
    for (const t of threads) void retire(t); // idle threads would keep the process alive
    return reportError('bhyve', err);
  } finally {
    trace('main: bhyveMain done');
    signals.dispose();
  }
}

/** `threads` and new ones up to `cpus` in all (none when it is not a sane
 * count: the setup then reports the problem). */
function moreThreads(threads: Worker[], cpus: string | undefined): Worker[] {
  const n = Number(cpus ?? '1');
  if (!Number.isInteger(n) || n <= threads.length || n > 64) return threads;
  return [...threads, ...spawnVcpuThreads(String(n - threads.length))];
}

/** The vCPU threads a run of `argv` most likely needs, or undefined when
 * argv asks for help or a config dump or ends in an option (no VM named):
 * then no thread starts before parsing. vCPU 0 has one only with
 * vcpu.bsp_model=thread (or pinned: main-thread-vcpu.ts' bspModel), the APs
 * only with vcpu.ap_model=thread (`-c [cpus=]N`). runVm adds or retires
 * threads to match what the config asks for. */
function likelyVcpus(argv: readonly string[]): string | undefined {
  const last = argv[argv.length - 1];
  if (last === undefined || last.startsWith('-')) return undefined;
  if (argv.some((a) => a === '-h' || a === 'help' || a.includes('config.dump'))) return undefined;
  const bspThread = argvGivesBspThread(argv);
  if (!argv.some((a) => a.includes('vcpu.ap_model=thread'))) return bspThread ? '1' : '0';
  const c = argv.lastIndexOf('-c');
  const m = c >= 0 ? /^(?:cpus=)?(\d+)/.exec(argv[c + 1] ?? '') : null;
  const n = m ? Number(m[1]) : 1;
  return String(bspThread ? n : n - 1);
}
