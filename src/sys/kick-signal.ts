// The vCPU kick's signal, SIGUSR2, and the handler that makes it harmless
// on every thread at every moment of the process's life.
//
// A kick is tgkill(pid, tid, SIGUSR2): the signal makes a blocked KVM_RUN
// return EINTR (immediate_exit covers a thread between two KVM_RUN calls).
// It needs a handler, any handler: ignored, the kernel would drop it and
// KVM_RUN would not return; at its default action it kills the process.
// libuv's handler (process.on('SIGUSR2')) is not enough: when Node tears
// down at exit it closes the signal handle and libuv puts SIG_DFL back,
// while a kick sent just before (the AP pool signals every pool thread, and
// on a loaded host an idle one may run only later) is still on its way:
// the process then died of SIGUSR2 instead of exiting with its status.
//
// So bhyve installs its own handler with sigaction, owned by nobody else
// and never reset: libc's abs(), which computes a value in a register and
// touches no memory and no errno, so called as handler(12) it does nothing
// (QEMU's SIG_IPI handler, dummy_signal, is an empty C function; this is
// the same without a native module of our own). KVM's documentation
// describes this use of a signal handler with immediate_exit
// (Documentation/virt/kvm/api.rst, "immediate_exit"). SA_RESTART as
// libuv's handler had: other system calls a kick interrupts restart.
// bin/bhyve listens for SIGUSR2 from its first line (libuv's handler, so
// that the signal is ignored while bhyve starts, as bhyve(8) says); the
// handler here takes over from it, and no listener may come back: libuv
// would take the signal over again and restore SIG_DFL when its handle
// closes.

import { errno, libcFunc, SIGUSR2, SysError, tgkill } from './libc.js';

const SA_RESTART = 0x10000000;
/** glibc's struct sigaction on x86_64: handler, 128-byte mask, flags, restorer. */
const SIGACTION_SIZE = 152;
const SA_FLAGS_OFFSET = 136;

const dlsymFn = libcFunc('uint64_t dlsym(void *handle, const char *symbol)');
const sigactionFn = libcFunc('int sigaction(int sig, const uint8_t *act, _Out_ uint8_t *oldact)');
const sigactionQueryFn = libcFunc('int sigaction(int sig, void *act, _Out_ uint8_t *oldact)');

let handler: bigint | undefined;

/** The no-op handler's address (libc's abs). */
function noOpHandler(): bigint {
  if (handler === undefined) {
    const at = BigInt(dlsymFn(null, 'abs') as number | bigint);
    if (at === 0n) throw new Error('kick signal: libc has no abs() to serve as the no-op handler');
    handler = at;
  }
  return handler;
}

let guarded = false;

/** Gives SIGUSR2 the no-op handler, for the rest of the process's life.
 * Call before any thread can be kicked (runVm does, before the vCPU
 * threads learn their work). Idempotent. */
export function installKickHandler(): void {
  // libuv restores SIG_DFL as its listener goes: only a signal from
  // outside, in the next microseconds, could take that (no thread can be
  // kicked yet).
  process.removeAllListeners('SIGUSR2');
  const act = new Uint8Array(SIGACTION_SIZE);
  const v = new DataView(act.buffer);
  v.setBigUint64(0, noOpHandler(), true);
  v.setUint32(SA_FLAGS_OFFSET, SA_RESTART, true);
  if ((sigactionFn(SIGUSR2, act, new Uint8Array(SIGACTION_SIZE)) as number) < 0) throw new SysError('sigaction(SIGUSR2)', errno());
  if (!guarded) {
    guarded = true;
    // Ahead of Node's own 'newListener' hook, which would start libuv's
    // handler: the new listener is refused before that happens.
    (process as NodeJS.EventEmitter).prependListener('newListener', (event: string | symbol) => {
      if (event === 'SIGUSR2') throw new Error('SIGUSR2 is the vCPU kick: a listener would let libuv restore its default action (sys/kick-signal.ts)');
    });
  }
}

/** True when SIGUSR2's disposition is the no-op handler (for tests). */
export function kickHandlerInstalled(): boolean {
  const old = new Uint8Array(SIGACTION_SIZE);
  if ((sigactionQueryFn(SIGUSR2, null, old) as number) < 0) throw new SysError('sigaction(SIGUSR2)', errno());
  return new DataView(old.buffer).getBigUint64(0, true) === noOpHandler();
}

/** Kicks thread `tid` of this process (see the top of this file). */
export function kickThread(tid: number): void {
  tgkill(process.pid, tid, SIGUSR2);
}
