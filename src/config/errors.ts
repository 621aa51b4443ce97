// Errors a user can cause on the command line. Each carries the exit status
// bhyve(8) uses for it: usage(1) -> 1, errx(EX_USAGE) -> 64, errx(4) -> 4.

import { ConfigError } from './tree.js';

export { ConfigError };

/** sysexits(3) EX_USAGE, used by bhyve's errx(EX_USAGE, ...) calls. */
export const EX_USAGE = 64;

/** A command-line error with the exit status bhyve gives it. */
export class UsageError extends ConfigError {
  readonly exitCode: number;
  /** True when bhyve would print its usage text (usage(1)). */
  readonly showUsage: boolean;
  constructor(message: string, exitCode = EX_USAGE, showUsage = exitCode === 1) {
    super(message);
    this.name = 'UsageError';
    this.exitCode = exitCode;
    this.showUsage = showUsage;
  }
}

/** The exit status for any error thrown while parsing or validating. */
export function exitCodeOf(err: unknown): number {
  if (err instanceof UsageError) return err.exitCode;
  return 4;
}
