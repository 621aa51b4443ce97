// bhyve(8): argv -> config tree -> checks -> run. bin/bhyve calls it.

import { rawArgv } from '../config/raw-argv.js';
import type { Worker } from 'node:worker_threads';
import { type EarlySignals, SignalRouter, signalStatus } from '../vmm/startup-signals.js';

import { reportError, writeOut } from './output.js';
import { trace } from '../vmm/startup-trace.js';

/** Runs bhyve with argv (without the program name); resolves to the exit
 * status. `early`: SIGINT/SIGTERM/SIGHUP caught by bin/bhyve since launch. */
export async function bhyveMain(argv: readonly string[], early?: EarlySignals): Promise<number> {
  trace('main: bhyveMain');
  const signals = new SignalRouter(early);
  let threads: Worker[] = [];
  let retire: ((w: Worker) => Promise<void>) | undefined;
  try {
    // A vCPU thread needs ~60 ms or more to boot, and the option parser
    // with the device table (every device's record, devices/registry.ts)
    // 60-110 ms to load on a busy host: when argv looks like a run, the
    // threads start first and boot meanwhile.
    const early = likelyVcpus(argv);
    if (early !== undefined) {
      const vcpuThreads = await import('../vmm/vcpu-threads.js');
      retire = vcpuThreads.retireVcpuThread;
      threads = vcpuThreads.spawnVcpuThreads(early);
    }
    const [{ parseBhyveArgs }, { validateForStart }] = await Promise.all([
      import('../config/bhyve-args.js'), import('../devices/registry.js'),
    ]);
    trace('main: parser loaded');
    const result = parseBhyveArgs(rawArgv(argv));
    trace('main: parsed');
    if (result.kind === 'help' || result.kind === 'dump') {
      for (const t of threads) void retire?.(t);
      await writeOut(result.kind === 'help' && result.stream === 'stderr' ? process.stderr : process.stdout, result.text);
      return result.exitCode;
    }
    validateForStart(result.config, {
      restoreFile: result.restoreFile, fwcfgFiles: result.fwcfgFiles, warn: (m) => process.stderr.write(`bhyve: warning: ${m}\n`),
    });
    // The vCPU threads boot while the rest of the vmm loads (runVm spawns
    // or retires threads to match the vCPU count the config asks for).
    if (early === undefined) {
      const vcpuThreads = await import('../vmm/vcpu-threads.js');
      retire = vcpuThreads.retireVcpuThread;
      threads = vcpuThreads.spawnVcpuThreads(result.config.get('cpus'));
    }
    const spawned = threads;
    // Loaded only when a VM is really started: keeps -h and errors fast.
    const { runVm } = await import('../vmm/run-vm.js');
    trace('main: run-vm loaded');
    // Stopped while loading: nothing of the VM exists yet.
    if (signals.first) {
      for (const t of threads) void retire?.(t);
      return signalStatus(signals.first);
    }
    return await runVm(result.config, { fwcfgFiles: result.fwcfgFiles, threads: spawned, signals });
  } catch (err) {
    for (const t of threads) void retire?.(t); // idle threads would keep the process alive
    return reportError('bhyve', err);
  } finally {
    trace('main: bhyveMain done');
    signals.dispose();
  }
}

/** The vCPU threads a run of `argv` most likely needs (1: vCPU 0's; with
 * vcpu.ap_model=thread `-c [cpus=]N`, else 1), or undefined when argv asks for help or a config dump or ends in an
 * option (no VM named): then no thread starts before parsing. */
function likelyVcpus(argv: readonly string[]): string | undefined {
  const last = argv[argv.length - 1];
  if (last === undefined || last.startsWith('-')) return undefined;
  if (argv.some((a) => a === '-h' || a === 'help' || a.includes('config.dump'))) return undefined;
  // Only vCPU 0 has a thread unless the APs are asked to have their own.
  if (!argv.some((a) => a.includes('vcpu.ap_model=thread'))) return '1';
  const c = argv.lastIndexOf('-c');
  const m = c >= 0 ? /^(?:cpus=)?(\d+)/.exec(argv[c + 1] ?? '') : null;
  return m ? m[1] : '1';
}
