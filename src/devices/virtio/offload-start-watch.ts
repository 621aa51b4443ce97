// Looks now and then at helper threads that are still loading. A helper
// (an I/O thread) that fails once loaded rings the device thread; one whose
// module cannot load (a native module that cannot be read, a missing file)
// cannot: dist/bundle/loader.cjs only writes FAILED into its control block,
// and the doorbell needs koffi, perhaps the very thing that failed. The
// guest's notifies meanwhile go to an eventfd (KVM_IOEVENTFD, no exit), so
// without a look the device would wait forever. The device thread's timers
// are kept by the main thread, which kicks it: one timer per device
// context, armed only while some helper is starting (~100 ms at DRIVER_OK).

import type { DeviceContext, DeviceTimer } from '../device.js';

/** How often a starting helper is looked at. */
export const START_WATCH_PERIOD_NS = 10_000_000n;

export class OffloadStartWatch {
  private static readonly byContext = new WeakMap<DeviceContext, OffloadStartWatch>();
  /** Each returns true while its helper is still starting. */
  private readonly checks = new Set<() => boolean>();

  private constructor(private readonly timer: DeviceTimer) {}

  /** The context's watch; undefined where it has no timers (unit tests
   * without one) or none is left (then only a kick or an exit is seen). */
  static of(ctx: DeviceContext): OffloadStartWatch | undefined {
    let w = OffloadStartWatch.byContext.get(ctx);
    if (w || typeof ctx.timer !== 'function') return w;
    try {
      let self: OffloadStartWatch | undefined;
      w = self = new OffloadStartWatch(ctx.timer(() => self!.fire()));
    } catch {
      return undefined;
    }
    OffloadStartWatch.byContext.set(ctx, w);
    return w;
  }

  /** Calls `check` every START_WATCH_PERIOD_NS until it returns false. */
  watch(check: () => boolean): void {
    this.checks.add(check);
    if (this.checks.size === 1) this.arm();
  }

  unwatch(check: () => boolean): void {
    this.checks.delete(check);
    if (this.checks.size === 0) this.timer.cancel();
  }

  private arm(): void { this.timer.armAt(this.timer.now() + START_WATCH_PERIOD_NS); }

  private fire(): void {
    for (const c of [...this.checks]) if (!c()) this.checks.delete(c);
    if (this.checks.size > 0) this.arm();
  }
}
