// sys/kick-signal.ts in this process: the no-op handler takes over from a
// libuv listener (bin/bhyve's early one), a kick to this very thread is
// then harmless, and a new listener (which would let libuv put SIG_DFL
// back when Node closes its handle) is refused.
import { describe, expect, it } from 'vitest';
import { installKickHandler, kickHandlerInstalled, kickThread } from '../../src/sys/kick-signal.js';
import { gettid } from '../../src/sys/libc.js';

describe('the kick signal handler', () => {
  it('takes over from a listener, refuses new ones, and a kick to this thread does nothing', () => {
    process.on('SIGUSR2', () => {}); // as bin/bhyve does first
    expect(kickHandlerInstalled()).toBe(false);
    installKickHandler();
    installKickHandler(); // idempotent
    expect(process.listenerCount('SIGUSR2')).toBe(0);
    expect(kickHandlerInstalled()).toBe(true);
    expect(() => process.on('SIGUSR2', () => {})).toThrow(/vCPU kick/);
    expect(process.listenerCount('SIGUSR2')).toBe(0);
    expect(kickHandlerInstalled()).toBe(true); // libuv did not take it over
    for (let i = 0; i < 100; i++) kickThread(gettid()); // at SIG_DFL this process would die
    expect(kickHandlerInstalled()).toBe(true);
  });
});
