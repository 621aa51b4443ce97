// How a run ends, and the bhyve(8) exit status each outcome maps to.
// Shell loops written for bhyve depend on these numbers.

export const EXIT_REBOOT = 0;
export const EXIT_POWEROFF = 1;
export const EXIT_HALT = 2;
export const EXIT_TRIPLEFAULT = 3;
export const EXIT_ERROR = 4;

const SIGNAL_NUMBERS = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;

export type ExitRequest =
  | { kind: 'reset'; why: string }
  | { kind: 'poweroff'; why: string }
  | { kind: 'halt'; why: string }
  | { kind: 'triplefault'; vcpu: number; rip?: number }
  | { kind: 'error'; message: string }
  /** pc-testdev / isa-debug-exit: bhyve exits with (value << 1) | 1. */
  | { kind: 'testdev'; value: number }
  /** A signal ended bhyve (SIGTERM before the guest enabled ACPI, as bhyve,
   * whose power-button handler exists only while ACPI is on). */
  | { kind: 'signal'; signal: 'SIGTERM' | 'SIGINT' | 'SIGHUP' };

export function exitStatusOf(req: ExitRequest): number {
  switch (req.kind) {
    case 'reset': return EXIT_REBOOT;
    case 'poweroff': return EXIT_POWEROFF;
    case 'halt': return EXIT_HALT;
    case 'triplefault': return EXIT_TRIPLEFAULT;
    case 'error': return EXIT_ERROR;
    case 'testdev': return ((req.value << 1) | 1) & 0xff;
    case 'signal': return 128 + SIGNAL_NUMBERS[req.signal];
  }
}
