// The loop waker (native/loop-waker.c): a thread without JavaScript that
// kicks vCPU 0 out of KVM_RUN when the main thread's event loop has work,
// so that vCPU 0 can run on the main thread (vcpu.bsp_model=main,
// vmm/main-thread-vcpu.ts). `npm run build` compiles it into
// dist/native/loop-waker.so (scripts/build-native.mjs).

import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { koffi } from './koffi.js';
import { SIGUSR2 } from './libc.js';
import type { Mapping } from './libc.js';
import { KVM_RUN_OFF } from './kvm-abi.js';
import { UserError } from '../user-error.js';

/** Where the build puts the library (from dist/sys/ and dist/bundle/ alike). */
export const LOOP_WAKER_PATH = fileURLToPath(new URL('../native/loop-waker.so', import.meta.url));

interface Bindings {
  start: (sig: number, immediateExit: bigint) => unknown;
  arm: (w: unknown) => number;
  fired: (w: unknown) => number;
  kicks: (w: unknown) => bigint;
  stop: (w: unknown) => void;
  kvmRun: { async(w: unknown, fd: number, done: (err: unknown, r: number) => void): void };
  errno: () => number;
}

let bindings: Bindings | undefined;

/** True when the build made the library (a host without a C compiler runs
 * vCPU 0 on a thread of its own). */
export function loopWakerBuilt(): boolean {
  return fs.existsSync(LOOP_WAKER_PATH);
}

/** Loads the library (before the sandbox: it forbids opening it later). */
export function loadLoopWaker(): void {
  if (bindings) return;
  const k = koffi();
  let lib: ReturnType<typeof k.load>;
  try {
    lib = k.load(LOOP_WAKER_PATH);
  } catch (e) {
    // A broken or foreign build, not a bug: say how to get on.
    throw new UserError(`cannot load the loop waker ${LOOP_WAKER_PATH}: ${(e as Error).message} `
      + '(npm run build makes it again; -o vcpu.bsp_model=thread runs without it)');
  }
  bindings = {
    start: lib.func('void *lw_start(int sig, uint64_t immediate_exit)') as Bindings['start'],
    arm: lib.func('int lw_arm(void *w)') as Bindings['arm'],
    fired: lib.func('int lw_fired(void *w)') as Bindings['fired'],
    kicks: lib.func('uint64_t lw_kicks(void *w)') as Bindings['kicks'],
    stop: lib.func('void lw_stop(void *w)') as Bindings['stop'],
    kvmRun: lib.func('int lw_kvm_run(void *w, int vcpu_fd)') as unknown as Bindings['kvmRun'],
    errno: () => k.errno(),
  };
}

export class LoopWaker {
  private stopped = false;

  private constructor(private readonly b: Bindings, private readonly handle: unknown) {}

  /** Starts the thread for the calling thread (Node's main thread, whose
   * loop is libuv's default loop); it kicks with SIGUSR2 after setting the
   * immediate_exit byte of `run` (vCPU 0's kvm_run page). */
  static start(run: Mapping): LoopWaker {
    loadLoopWaker();
    const b = bindings!;
    const handle = b.start(SIGUSR2, run.address + BigInt(KVM_RUN_OFF.immediate_exit));
    if (handle === null) throw new Error(`cannot start the loop waker: errno ${b.errno()}`);
    return new LoopWaker(b, handle);
  }

  /** Before KVM_RUN, after a turn of the loop: the thread watches the loop
   * from now on and kicks once it has work. False when the loop has work
   * due now (run it first). */
  arm(): boolean {
    return this.b.arm(this.handle) === 0;
  }

  /** True when the thread kicked since arm(): the loop has work. */
  fired(): boolean {
    return this.b.fired(this.handle) !== 0;
  }

  /** How many times the thread kicked. */
  kicks(): number {
    return Number(this.b.kicks(this.handle));
  }

  /** An application processor's KVM_RUN on libuv's pool that kicks vCPU 0
   * (this thread) as it returns: `done` gets the result or -errno. */
  kvmRunAsync(vcpuFd: number, done: (r: number) => void): void {
    this.b.kvmRun.async(this.handle, vcpuFd, (err: unknown, r: number) => done(err ? -5 /* EIO */ : r));
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.b.stop(this.handle);
  }
}
