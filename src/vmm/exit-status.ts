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

/** The line bhyve prints on stderr when the status alone does not say what
 * ended the run: a triple fault (3), and a pc-testdev exit whose status is
 * also one of bhyve's own (value 1 or 0x81 gives 3, as a triple fault;
 * 0 or 0x80 gives 1, as a power-off). bhyve has the same collision and says
 * nothing; the statuses stay bhyve's. */
export function exitNotice(req: ExitRequest): string | undefined {
  if (req.kind === 'triplefault') {
    return `triple fault on vCPU ${req.vcpu}${req.rip === undefined ? '' : ` at rip 0x${req.rip.toString(16)}`} (exit status 3)`;
  }
  if (req.kind === 'testdev') {
    const status = exitStatusOf(req);
    if (status === EXIT_TRIPLEFAULT || status === EXIT_POWEROFF) {
      return `pc-testdev exit: the guest wrote 0x${req.value.toString(16)} to port 0xf4 (exit status ${status}, not a ${status === EXIT_POWEROFF ? 'power-off' : 'triple fault'})`;
    }
  }
  return undefined;
}
