// The slirp backend (bhyve's net_backend_slirp.c): user-mode networking
// through libslirp, so a guest gets DHCP (10.0.2.15), a DNS relay
// (10.0.2.3) and, with `open`, connections to anywhere the host reaches
// (the host itself as 10.0.2.2), without root or a tap. Keys of the NIC's
// node, as bhyve's:
//   backend=slirp
//   hostfwd=RULE[;RULE...]  RULE = proto:[haddr]:hport-[gaddr]:gport, proto
//                           tcp or udp; the host listens on haddr:hport
//                           (all addresses when empty) and forwards to the
//                           guest's gaddr:gport (10.0.2.15 when empty)
//   open                    let the guest connect out; without it libslirp
//                           runs `restricted` (bhyve's default): only the
//                           virtual network's own services and hostfwd.
//
// libslirp runs on a thread of its own (slirp-thread.ts, bhyve's "slirp
// pollfd" thread; bhyve 15 moved it to a helper process so that `open`
// works under Capsicum, here the sandbox allows that thread's socket calls
// instead). Between it and the NIC is a packet socket pair (bhyve's helper
// uses one too), so the NIC's side is exactly a tap's: the device thread
// reads and writes its end; when the NIC has read it dry, slirp's thread
// rings the device thread's doorbell as it sends the next frame (nicWake),
// or else the main thread's waker (net-backend.ts) polls it.

import { Worker } from 'node:worker_threads';
import fs from 'node:fs';
import type { ConfigTree } from '../../config/tree.js';
import { packetPair } from '../../sys/packet-pair.js';
import type { SlirpThreadData, SlirpThreadMessage } from './slirp-thread.js';
import type { DoorbellTransfer } from '../../sys/doorbell.js';
import { slirpOptionsFromConfig, SlirpConfigError } from './slirp-options.js';

export { SlirpConfigError } from './slirp-options.js';

export interface SlirpBackend {
  /** The NIC's end of the packet pair. */
  fd: number;
  close(): Promise<void>;
}

/** How slirp's thread wakes the NIC: the fd waker's flags of the NIC's end
 * (fd-waker.ts) and the device thread's doorbell. */
export interface SlirpNicWake {
  wake: SharedArrayBuffer;
  doorbell: DoorbellTransfer;
}

/** Starts libslirp's thread for NIC `node`; resolves once libslirp is up and
 * every hostfwd listener is bound, rejects with one line otherwise. */
export async function openSlirpBackend(config: ConfigTree, node: string, nicWake?: SlirpNicWake,
  workerUrl = new URL('./slirp-thread.js', import.meta.url)): Promise<SlirpBackend> {
  const opts = slirpOptionsFromConfig(config, node);
  // (imported here: the sandbox module loads koffi, which a bhyve without
  // slirp, or one only parsing its options, should not pay for)
  const { helperThreadPlan, SLIRP_READ_FILES } = await import('../../vmm/sandbox/sandbox.js');
  const sandbox = helperThreadPlan(config, SLIRP_READ_FILES, true);
  const [nicFd, slirpFd] = packetPair();
  const control = new SharedArrayBuffer(4);
  const data: SlirpThreadData = {
    fd: slirpFd, restricted: !opts.open, hostfwd: opts.hostfwd, control,
    sandbox, nicWake,
    debug: process.env.BHYVE_DEBUG !== undefined,
  };
  const worker = new Worker(workerUrl, { workerData: data, stdout: false, stderr: false });
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  const closeFds = (): void => {
    for (const fd of [nicFd, slirpFd]) { try { fs.closeSync(fd); } catch { /* closed */ } }
  };
  try {
    await new Promise<void>((resolve, reject) => {
      worker.once('message', (m: SlirpThreadMessage) => (m.type === 'ready' ? resolve() : reject(new SlirpConfigError(m.message))));
      worker.once('error', (e) => reject(new SlirpConfigError(`slirp thread: ${e.message}`)));
      worker.once('exit', () => reject(new SlirpConfigError('slirp thread exited at start')));
    });
  } catch (e) {
    Atomics.store(new Int32Array(control), 0, 1);
    await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
    closeFds();
    throw e;
  }
  let closed = false;
  return {
    fd: nicFd,
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      Atomics.store(new Int32Array(control), 0, 1);
      await Promise.race([exited, new Promise((r) => setTimeout(r, 2000).unref())]);
      try { fs.closeSync(slirpFd); } catch { /* closed */ }
    },
  };
}
