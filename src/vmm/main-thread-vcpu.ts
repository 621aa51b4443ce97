// vCPU 0 on the main thread (vcpu.bsp_model=main, the default): no worker
// thread and V8 isolate of its own, so a VM costs one isolate fewer (~10 MiB
// and a worker's boot; BENCHMARKS.md, "Launch"). The main thread runs vCPU
// 0's KVM_RUN and every device model between turns of its event loop
// (vcpu-runner.ts); the loop waker (sys/loop-waker.ts) ends KVM_RUN when the
// loop has work: a host event, a timer, a pool completion (an AP's exit, a
// tap waker), a message from another thread.
//
// This object stands where vCPU 0's Worker stood for runVm: postMessage
// takes the thread data; 'message', 'error' and 'exit' come back.

import { EventEmitter } from 'node:events';
import { MessageChannel } from 'node:worker_threads';
import type { ConfigTree } from '../config/tree.js';
import type { DeviceHost } from './device-host.js';
import type { IoBus } from './io-bus.js';
import { runVcpu } from './vcpu-runner.js';
import type { DeviceModelsHint, VcpuThreadData, VcpuThreadMessage } from './vcpu-thread-data.js';
import { loadLoopWaker, loopWakerBuilt, type LoopWaker } from '../sys/loop-waker.js';
import { ioctlRawAsync } from '../sys/libc.js';
import { KVM } from '../sys/kvm-abi.js';

export const BSP_MODELS = ['main', 'thread'] as const;

/** vcpu.bsp_model: where vCPU 0 runs. `main` unless the config asks for a
 * thread, pins vCPU 0 (a cpuset would pin the whole main thread), or the
 * build has no loop waker (no C compiler: scripts/build-native.mjs). */
export function bspModel(config: ConfigTree): (typeof BSP_MODELS)[number] {
  if (config.get('vcpu.bsp_model') === 'thread') return 'thread';
  if (config.get('vcpu.0.cpuset') !== undefined) return 'thread';
  return loopWakerBuilt() ? 'main' : 'thread';
}

/** bspModel's guess from the command line alone (before it is parsed, to
 * start vCPU 0's worker early; bin/bhyve makes the same guess): true when
 * vCPU 0 will most likely get a thread. */
export function argvGivesBspThread(argv: readonly string[]): boolean {
  const pinsVcpu0 = argv.some((a, i) => /^-p0:/.test(a) || (argv[i - 1] === '-p' && /^0:/.test(a)));
  return pinsVcpu0 || argv.some((a) => a.includes('vcpu.bsp_model=thread') || a.includes('vcpu.0.cpuset'))
    || !loopWakerBuilt();
}

export class MainThreadVcpu extends EventEmitter {
  private host: DeviceHost | undefined;
  private waker: LoopWaker | undefined;
  /** One turn of the event loop: a message to ourselves, posted from an
   * immediate, comes back after the loop has polled its fds. (Posted from
   * the message's own callback, Node would deliver it in the same drain of
   * the port, without a poll; and a slice run from an immediate would find
   * libuv's idle handle active, which makes the loop's timeout 0.) */
  private turn: MessageChannel | undefined;
  private resume: (() => void) | undefined;

  /** `modelsLoading`: the device models of the config, which runVm started
   * loading early. */
  constructor(private readonly modelsLoading: Promise<void>) {
    super();
  }

  /** The devices' bus, once vCPU 0 has built them: the APs on libuv's pool
   * reach the devices straight through it (no mailbox: they are on the
   * same thread). */
  readonly bus: IoBus = {
    portRead: (port, size) => this.devices().bus.portRead(port, size),
    portWrite: (port, size, value) => this.devices().bus.portWrite(port, size, value),
    mmioRead: (addr, data) => this.devices().bus.mmioRead(addr, data),
    mmioWrite: (addr, data) => this.devices().bus.mmioWrite(addr, data),
  };

  /** An AP's KVM_RUN on libuv's pool (ap-pool.ts): through the loop waker,
   * which kicks vCPU 0 as it returns, so that the main thread handles the
   * exit without waiting for vCPU 0's next exit. */
  readonly kvmRunAsync = (vcpuFd: number, done: (r: number) => void): void => {
    if (this.waker) this.waker.kvmRunAsync(vcpuFd, done);
    else ioctlRawAsync(vcpuFd, KVM.RUN, 0, done);
  };

  private devices(): DeviceHost {
    if (!this.host) throw new Error('device access before vCPU 0 built the devices');
    return this.host;
  }

  postMessage(m: VcpuThreadData | DeviceModelsHint): void {
    if ('type' in m) return; // models: runVm loads them already
    const d = m;
    // (The models runVm loads are those of this config: a failure to load
    // one ends here, in 'error'.)
    void this.modelsLoading
      .then(() => {
        loadLoopWaker(); // before the sandbox, which forbids opening it
        this.turn = new MessageChannel();
        this.turn.port2.on('message', () => { const r = this.resume; this.resume = undefined; r?.(); });
        runVcpu(d, (msg) => this.fromVcpu(msg), {
          kind: 'main',
          yieldLoop: (resume) => { this.resume = resume; setImmediate(() => this.turn?.port1.postMessage(0)); },
          hostBuilt: (host) => { this.host = host; },
          wakerStarted: (waker) => { this.waker = waker; },
        });
      })
      .catch((e: unknown) => { this.emit('error', e); this.end(); });
  }

  private fromVcpu(msg: VcpuThreadMessage): void {
    this.emit('message', msg);
    if (msg.type === 'stopped') this.end();
  }

  private end(): void {
    this.turn?.port1.close();
    this.turn?.port2.close();
    this.turn = undefined;
    setImmediate(() => this.emit('exit', 0));
  }

  /** (A Worker's terminate: nothing runs here before postMessage.) */
  terminate(): Promise<number> {
    return Promise.resolve(0);
  }
}
