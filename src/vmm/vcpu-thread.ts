// A vCPU's worker thread: loads the vCPU's code while the main thread sets
// the machine up, then runs the vCPU (vcpu-runner.ts) with the data the main
// thread sends.

import { parentPort } from 'node:worker_threads';
import { loadDeviceModels, preloadDeviceModels } from './device-host.js';
import { preloadLibc } from '../sys/libc.js';
import type { DeviceModelsHint, VcpuThreadData, VcpuThreadMessage } from './vcpu-thread-data.js';
import { runVcpu } from './vcpu-runner.js';
import { trace } from './startup-trace.js';

// The thread is started before the VM exists, so that loading this module
// overlaps the main thread's setup; its data arrives in the first message.
// 'loaded' tells the main thread that terminating us is now safe
// (vcpu-threads.ts). (A callback, not a top-level await: the bundle is a
// CommonJS script, scripts/bundle.mjs.)
trace('vcpu: modules in');
preloadLibc();
preloadDeviceModels(process.argv.slice(2));
parentPort!.postMessage({ type: 'loaded' } satisfies VcpuThreadMessage);
// vCPU 0 loads its devices' models first (the devices are built at once),
// from the config the main thread sends ahead of the data when it can
// (DeviceModelsHint): then they load while it creates the VM.
let modelsLoading: Promise<void> | undefined;
const onMessage = (m: VcpuThreadData | DeviceModelsHint): void => {
  if ('type' in m) {
    if (m.type === 'models' && !modelsLoading) {
      modelsLoading = loadDeviceModels(m.config);
      modelsLoading.catch(() => undefined); // loaded (and reported) again with the data
    }
    return;
  }
  parentPort!.off('message', onMessage);
  const d = m;
  if (!d.deviceHost) { runVcpuThread(d); return; }
  // Loaded once: models the hint loaded are not loaded again.
  const host = d.deviceHost;
  void (modelsLoading ?? Promise.resolve()).catch(() => undefined)
    .then(() => loadDeviceModels(host.config)).then(() => runVcpuThread(d));
};
parentPort!.on('message', onMessage);

function runVcpuThread(d: VcpuThreadData): void {
  runVcpu(d, (m: VcpuThreadMessage) => parentPort!.postMessage(m));
}
