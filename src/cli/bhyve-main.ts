// bhyve(8): argv -> config tree -> checks -> run. bin/bhyve calls it.

import { parseBhyveArgs } from '../config/bhyve-args.js';
import { rawArgv } from '../config/raw-argv.js';
import { validateForStart } from '../devices/registry.js';
import type { Worker } from 'node:worker_threads';
import { type EarlySignals, SignalRouter, signalStatus } from '../vmm/startup-signals.js';

import { reportError, writeOut } from './output.js';

/** Runs bhyve with argv (without the program name); resolves to the exit
 * status. `early`: SIGINT/SIGTERM/SIGHUP caught by bin/bhyve since launch. */
export async function bhyveMain(argv: readonly string[], early?: EarlySignals): Promise<number> {
  const signals = new SignalRouter(early);
  let threads: Worker[] = [];
  let retire: ((w: Worker) => Promise<void>) | undefined;
  try {
    const result = parseBhyveArgs(rawArgv(argv));
    if (result.kind === 'help') {
      await writeOut(result.stream === 'stdout' ? process.stdout : process.stderr, result.text);
      return result.exitCode;
    }
    if (result.kind === 'dump') {
      await writeOut(process.stdout, result.text);
      return result.exitCode;
    }
    validateForStart(result.config, { restoreFile: result.restoreFile, fwcfgFiles: result.fwcfgFiles });
    // The vCPU threads boot while the rest of the vmm loads.
    const vcpuThreads = await import('../vmm/vcpu-threads.js');
    retire = vcpuThreads.retireVcpuThread;
    const spawned = vcpuThreads.spawnVcpuThreads(result.config.get('cpus'));
    threads = spawned;
    // Loaded only when a VM is really started: keeps -h and errors fast.
    const { runVm } = await import('../vmm/run-vm.js');
    // Stopped while loading: nothing of the VM exists yet.
    if (signals.first) {
      for (const t of threads) void retire(t);
      return signalStatus(signals.first);
    }
    return await runVm(result.config, { fwcfgFiles: result.fwcfgFiles, threads: spawned, signals });
  } catch (err) {
    for (const t of threads) void retire?.(t); // idle threads would keep the process alive
    return reportError('bhyve', err);
  } finally {
    signals.dispose();
  }
}
