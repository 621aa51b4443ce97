// How a run ends, and the bhyve(8) exit status each outcome maps to.
// Shell loops written for bhyve depend on these numbers.

export const EXIT_REBOOT = 0;
export const EXIT_POWEROFF = 1;
export const EXIT_HALT = 2;
export const EXIT_TRIPLEFAULT = 3;
export const EXIT_ERROR = 4;

export type ExitRequest =
  | { kind: 'reset'; why: string }
  | { kind: 'poweroff'; why: string }
  | { kind: 'halt'; why: string }
  | { kind: 'triplefault'; vcpu: number; rip?: number }
  | { kind: 'error'; message: string }
  /** pc-testdev / isa-debug-exit: bhyve exits with (value << 1) | 1. */
  | { kind: 'testdev'; value: number };

export function exitStatusOf(req: ExitRequest): number {
  switch (req.kind) {
    case 'reset': return EXIT_REBOOT;
    case 'poweroff': return EXIT_POWEROFF;
    case 'halt': return EXIT_HALT;
    case 'triplefault': return EXIT_TRIPLEFAULT;
    case 'error': return EXIT_ERROR;
    case 'testdev': return ((req.value << 1) | 1) & 0xff;
  }
}
