// sys/kick-signal.ts in this process: the no-op handler goes in, a kick to
// this very thread is then harmless, and a libuv listener (which would put
// SIG_DFL back when Node closes its handle) is refused.
import { describe, expect, it } from 'vitest';
import { installKickHandler, kickHandlerInstalled, kickThread } from '../../src/sys/kick-signal.js';
import { gettid } from '../../src/sys/libc.js';

describe('the kick signal handler', () => {
  it('is refused while a process.on(\'SIGUSR2\') listener exists', () => {
    const listener = (): void => {};
    process.on('SIGUSR2', listener);
    try {
      expect(() => installKickHandler()).toThrow(/libuv restore SIG_DFL/);
    } finally {
      process.off('SIGUSR2', listener); // libuv: SIG_DFL again
    }
    expect(kickHandlerInstalled()).toBe(false);
  });

  it('is installed, stays installed, and a kick to this thread does nothing', () => {
    installKickHandler();
    installKickHandler(); // idempotent
    expect(kickHandlerInstalled()).toBe(true);
    for (let i = 0; i < 100; i++) kickThread(gettid()); // at SIG_DFL this process would die
    expect(kickHandlerInstalled()).toBe(true);
  });
});
